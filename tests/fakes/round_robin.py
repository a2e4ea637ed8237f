"""A small round-robin load balancer for webhook receivers: each update goes to the next receiver in turn, and a
copy of an update it has passed on already (Telegram's retry) to the receiver after the one that had it, so an
update sent twice reaches both of two receivers, whatever else comes between. One that cannot be reached is
skipped for the next (as nginx's ``proxy_next_upstream error``), so a killed receiver loses no update while
another is up."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from aiohttp import web

from tests.conftest import serving

# What a load balancer passes on: the body's type and Telegram's secret header.
_FORWARDED = ("Content-Type", "X-Telegram-Bot-Api-Secret-Token")


class RoundRobin:
    def __init__(self, backends: list[str]) -> None:
        self.backends = backends
        self._turn = itertools.cycle(range(len(backends)))
        # Each body seen: the receiver its first copy went to, and how many copies came.
        self._copies: dict[bytes, tuple[int, int]] = {}
        self.served: list[str] = []  # the backend that answered each request, in order
        self.skipped = 0  # tries that found a backend down
        self.receivers_of: dict[bytes, set[str]] = {}  # each body: the backends that answered a copy of it

    @asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        """Serve on a free loopback port; yields the base URL."""
        app = web.Application()
        app.router.add_route("POST", "/{path:.*}", self._forward)
        async with httpx.AsyncClient(timeout=30) as self._http, serving(app) as base:
            yield base

    async def _forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {name: request.headers[name] for name in _FORWARDED if name in request.headers}
        start, seen = self._copies[body] if body in self._copies else (next(self._turn), 0)
        self._copies[body] = (start, seen + 1)
        first = start + seen
        for step in range(len(self.backends)):
            backend = self.backends[(first + step) % len(self.backends)]
            try:
                answer = await self._http.post(f"{backend}{request.path_qs}", content=body, headers=headers)
            except httpx.TransportError:
                self.skipped += 1
                continue
            self.served.append(backend)
            self.receivers_of.setdefault(body, set()).add(backend)
            return web.Response(status=answer.status_code, body=answer.content,
                                content_type=answer.headers.get("content-type", "text/plain").split(";")[0])
        return web.Response(status=502, text="no receiver is up")
