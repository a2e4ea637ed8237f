"""The backend's answer envelopes: ``{"code": 0, "data": ...}``, error bodies, and reading a JSON request body.

A handler raises ``ApiError`` anywhere; the error middleware of ``localnemo.app`` turns it into the
``{"code", "message"}`` answer with its HTTP status.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web


class ApiError(Exception):
    """An error answer: HTTP status and the backend's ``{"code", "message"}`` body."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def response(self) -> web.Response:
        return error_response(self.status, self.code, self.message)


def error_response(status: int, code: int, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status)


def ok(data: Mapping[str, Any]) -> web.Response:
    return web.json_response({"code": 0, "data": data})


async def json_object(request: web.Request, *, required: bool = True) -> dict[str, Any]:
    """The request's body as a JSON object (``{}`` for an empty optional body), else ApiError 400."""
    raw = await request.read()
    if not raw.strip():
        if required:
            raise ApiError(400, 400, "a JSON body is required")
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        # ValueError covers bytes that are not UTF-8 too; RecursionError is JSON nested too deep to read.
        raise ApiError(400, 400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, 400, "the body must be a JSON object")
    return body
