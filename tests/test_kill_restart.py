"""SIGKILL, then a new process on the same database: every export is delivered exactly once.

The bot runs as ``nemobot chat`` (piped input, ``--out``), the terminal being the platform: a delivered export
is one file in the output folder and one "Your video is ready" line. The bot (with any child it started) is
killed with SIGKILL, as a crash or an OOM kill would, (a) while the render runs, (b) while it downloads the
result, (c) with ``--local``, where the backend dies with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from bot.nemo.timeline_model import Draft
from localnemo.app import default_renderer
from localnemo.render import Renderer, RenderOutput
from localnemo.testing import TestLocalNemo
from tests.conftest import fast_localnemo_config, ffmpeg_exe, wait_for
from tests.test_cli import cli_environment

READY = "Your video is ready"


@dataclass
class ChatProcess:
    """A running ``nemobot chat`` and every line it printed so far."""

    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None
    killed: bool = False

    def said(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def count(self, text: str) -> int:
        return sum(text in line for line in self.lines)

    def kill(self) -> None:
        # The whole group: the bot and whatever it started (the embedded localnemo's FFmpeg), as a crash.
        assert self.process.returncode is None, f"it had stopped already: {self.lines}"
        self.killed = True
        os.killpg(self.process.pid, signal.SIGKILL)

    async def finished(self, within: float = 120) -> int:
        await asyncio.wait_for(self.process.wait(), within)
        if self.reader is not None:
            await asyncio.wait_for(self.reader, within)
        assert self.process.returncode is not None
        return self.process.returncode


@contextlib.asynccontextmanager
async def chat(cwd: Path, env: Mapping[str, str], *args: str, lines: str = "") -> AsyncIterator[ChatProcess]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nemobot", "chat", *args, cwd=cwd, env=dict(env), start_new_session=True,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    running = ChatProcess(process)
    assert process.stdin is not None
    assert process.stdout is not None
    stdout = process.stdout

    async def read() -> None:
        while line := await stdout.readline():
            running.lines.append(line.decode(errors="replace").rstrip("\n"))

    running.reader = asyncio.create_task(read())
    process.stdin.write(lines.encode())
    await process.stdin.drain()
    process.stdin.close()
    try:
        yield running
    finally:
        if process.returncode is None and not running.killed:
            # A group already gone (killed, not yet reaped) is no error.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        await asyncio.gather(running.reader, return_exceptions=True)


class GatedRenderer:
    """Renders only once the test opens the gate: a render that is still running for as long as needed."""

    def __init__(self, inner: Renderer) -> None:
        self.inner = inner
        self.started = asyncio.Event()
        self.gate = asyncio.Event()

    async def render(
        self, draft: Draft, sources: Mapping[str, Path], out_path: Path, on_progress: Callable[[float], None]
    ) -> RenderOutput:
        self.started.set()
        await self.gate.wait()
        return await self.inner.render(draft, sources, out_path, on_progress)


class SlowResults:
    """Serves half of a render result, then holds the rest back while ``hold`` is set: a download that is
    still running when the bot is killed."""

    def __init__(self) -> None:
        self.hold = True
        self.half_sent = asyncio.Event()
        self.released = asyncio.Event()
        self.base_url = ""

    def release(self) -> None:
        self.hold = False
        self.released.set()

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        is_result = request.match_info.route.name == "result" or "render-result" in request.path
        if not is_result or not self.hold or request.headers.get("X-Test-Passthrough"):
            return await handler(request)
        headers = {"X-Test-Passthrough": "1"}
        if "Authorization" in request.headers:
            headers["Authorization"] = request.headers["Authorization"]
        async with httpx.AsyncClient() as client:
            whole = await client.get(self.base_url + request.path_qs, headers=headers)
        whole.raise_for_status()
        body = whole.content
        response = web.StreamResponse(headers={"Content-Type": "video/mp4", "Content-Length": str(len(body))})
        await response.prepare(request)
        await response.write(body[: len(body) // 2])
        self.half_sent.set()
        await self.released.wait()
        # The client is gone by now (it was killed): the rest has no one to go to.
        with contextlib.suppress(ConnectionError):
            await response.write(body[len(body) // 2:])
        return response


def bot_environment(server: TestLocalNemo, db: Path) -> dict[str, str]:
    return cli_environment(NEMO_API_BASE=server.base_url, NEMOBOT_DB=str(db))


def delivered(out: Path) -> int:
    return len(list(out.glob("*.mp4"))) if out.is_dir() else 0


async def test_killed_during_the_render_then_restarted_delivers_once(tmp_path: Path, sample_video: Path) -> None:
    config = fast_localnemo_config(tmp_path / "localnemo")
    renderer = GatedRenderer(default_renderer(config))
    db, out = tmp_path / "bot.sqlite3", tmp_path / "out"
    async with TestLocalNemo(config, renderer=renderer) as server:
        env = bot_environment(server, db)
        async with chat(tmp_path, env, "--out", str(out), lines=f"/upload {sample_video}\nexport\n") as first:
            await wait_for(lambda: renderer.started.is_set() and first.said("Exporting"), within=60,
                           what="the render to run", details=lambda: "\n".join(first.lines))
            first.kill()
        assert delivered(out) == 0
        assert first.count(READY) == 0

        renderer.gate.set()  # the render goes on without the bot, which comes back
        async with chat(tmp_path, env, "--out", str(out)) as second:
            assert await second.finished() == 0, "\n".join(second.lines)
        assert second.count(READY) == 1, "\n".join(second.lines)
        assert delivered(out) == 1
        async with chat(tmp_path, env, "--out", str(out)) as third:
            assert await third.finished() == 0
        assert third.count(READY) == 0
        assert delivered(out) == 1
        assert server.faults.count("render") == 1


async def test_killed_during_the_download_then_restarted_delivers_once(tmp_path: Path, sample_video: Path) -> None:
    slow = SlowResults()
    server = TestLocalNemo(fast_localnemo_config(tmp_path / "localnemo"))
    server.app.middlewares.append(slow.middleware)
    db, out = tmp_path / "bot.sqlite3", tmp_path / "out"
    async with server:
        slow.base_url = server.base_url
        env = bot_environment(server, db)
        async with chat(tmp_path, env, "--out", str(out), lines=f"/upload {sample_video}\nexport\n") as first:
            await wait_for(slow.half_sent.is_set, within=60, what="the download to start",
                           details=lambda: "\n".join(first.lines))
            first.kill()
        slow.release()
        assert delivered(out) == 0
        assert first.count(READY) == 0

        async with chat(tmp_path, env, "--out", str(out)) as second:
            assert await second.finished() == 0, "\n".join(second.lines)
        assert second.count(READY) == 1, "\n".join(second.lines)
        assert delivered(out) == 1
        async with chat(tmp_path, env, "--out", str(out)) as third:
            assert await third.finished() == 0
        assert third.count(READY) == 0
        assert delivered(out) == 1


@pytest.fixture(scope="module")
def longer_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Long enough that a render of it is still running when the bot is killed a moment after submitting."""
    import subprocess

    out = tmp_path_factory.mktemp("media") / "longer.mp4"
    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30", "-f", "lavfi", "-i", "sine=frequency=440",
         "-t", "20", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest",
         str(out)],
        check=True,
    )
    return out


async def test_local_killed_mid_export_then_restarted_delivers_once(tmp_path: Path, longer_video: Path) -> None:
    db, out = tmp_path / "bot.sqlite3", tmp_path / "out"
    # A render of a few seconds, not a fraction of one: the kill lands while it runs.
    env = cli_environment(NEMOBOT_DB=str(db), LOCALNEMO_RESOLUTION="720p", LOCALNEMO_X264_PRESET="veryfast")
    async with chat(tmp_path, env, "--local", "--out", str(out), lines=f"/upload {longer_video}\nexport\n") as first:
        await wait_for(lambda: first.said("Exporting"), within=60, what="the export to start",
                       details=lambda: "\n".join(first.lines))
        first.kill()
    assert first.count(READY) == 0, "the render finished before the kill: make it longer"
    assert delivered(out) == 0

    async with chat(tmp_path, env, "--local", "--out", str(out)) as second:
        assert await second.finished() == 0, "\n".join(second.lines)
    assert second.count(READY) == 1, "\n".join(second.lines)
    assert delivered(out) == 1
