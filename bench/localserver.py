"""A localnemo of its own for a benchmark: started as another process (so its CPU and memory are not the
measured side's), waited for until it answers, and stopped afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_until_up(base: str, server: subprocess.Popen[bytes], within: float = 30.0) -> None:
    """Until the server answers HTTP; a server that exits first is an error, not a wait."""
    deadline = time.monotonic() + within
    async with httpx.AsyncClient() as http:
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"localnemo exited with {server.returncode}")
            try:
                await http.get(base + "/api/credits/balance/simple")
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def local_server(
    env: Mapping[str, str], *, log_path: Path | None = None,
    command: Sequence[str] = ("-m", "nemobot", "serve-local"),
) -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    """Yields (base URL, process) of ``python -m nemobot serve-local`` (or ``command``) on a free port, with
    ``env`` added to this process's environment; its output goes to ``log_path`` when given."""
    port = free_port()
    output = log_path.open("wb") if log_path is not None else None
    try:
        server = subprocess.Popen(
            [sys.executable, *command, "--port", str(port)], env={**os.environ, **env}, cwd=ROOT,
            stdout=output, stderr=subprocess.STDOUT if output is not None else None,
        )
    finally:
        if output is not None:
            output.close()
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_until_up(base, server)
        yield base, server
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
