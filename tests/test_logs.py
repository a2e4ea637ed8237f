"""The process's log as the composition root sets it up (nemobot.logs): what libraries log goes through it."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from localnemo.testing import TestLocalNemo
from nemobot import logs
from tests.conftest import fast_localnemo_config
from tests.waiting import await_within, wait_for


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """The root logger configured by ``logs.configure`` into a string, restored afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    logs.configure("INFO", logs.Redactor(), stream)
    try:
        yield stream
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        logging.captureWarnings(False)


async def test_a_malformed_request_is_one_info_line_not_an_error_traceback(
    tmp_path: Path, log_stream: io.StringIO
) -> None:
    async with TestLocalNemo(fast_localnemo_config(tmp_path / "nemo")) as server:
        host, port = server.base_url.removeprefix("http://").split(":")
        for request in (
            b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nmv_usr_s3cretvalue\x01\r\n\r\n",
        ):
            reader, writer = await asyncio.open_connection(host, int(port))
            try:
                writer.write(request)
                await writer.drain()
                status_line = await await_within(reader.readline(), within=5, what="the answer")
            finally:
                writer.close()
            assert b" 400 " in status_line
        await wait_for(
            lambda: log_stream.getvalue().count("aiohttp.server") >= 2,
            what="the two lines",
            details=log_stream.getvalue,
        )
    text = log_stream.getvalue()
    lines = [line for line in text.splitlines() if "aiohttp.server" in line]
    assert len(lines) == 2, text
    assert all(" INFO aiohttp.server Error handling request" in line for line in lines), text
    assert "InvalidURLError" in lines[0]
    assert "BadHttpMessage" in lines[1]
    assert "s3cretvalue" not in text
    assert "Traceback" not in text
    assert " ERROR " not in text
