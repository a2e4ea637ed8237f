"""Where the FFmpeg program is, and how to wait for one run of it: shared by the bot (storyboards) and
localnemo (probes, analysis, renders).

It lives in ``bot`` because localnemo may import the bot but the bot never imports localnemo.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from functools import cache

import imageio_ffmpeg


@cache
def ffmpeg_exe() -> str:
    """A system ffmpeg when there is one (usually the newest), else the one imageio-ffmpeg ships."""
    return shutil.which("ffmpeg") or str(imageio_ffmpeg.get_ffmpeg_exe())


async def finished_within(proc: asyncio.subprocess.Process, seconds: float) -> bytes | None:
    """Wait for ``proc`` to end and return its stderr (empty when not piped), or None when it took longer
    than ``seconds``. Past the limit, and when the caller is cancelled, the process is killed and reaped:
    FFmpeg must never outlive the call that started it (nor the event loop that watches it)."""
    try:
        _, stderr = await asyncio.wait_for(proc.communicate(), seconds)
    except BaseException as exc:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        if isinstance(exc, TimeoutError):
            return None
        raise
    return stderr or b""


__all__ = ["ffmpeg_exe", "finished_within"]
