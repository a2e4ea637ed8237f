"""Where the FFmpeg program is: the one lookup that the bot (storyboards) and localnemo (renders) share.

It lives in ``bot`` because localnemo may import the bot but the bot never imports localnemo.
"""

from __future__ import annotations

import shutil
from functools import cache

import imageio_ffmpeg


@cache
def ffmpeg_exe() -> str:
    """A system ffmpeg when there is one (usually the newest), else the one imageio-ffmpeg ships."""
    return shutil.which("ffmpeg") or str(imageio_ffmpeg.get_ffmpeg_exe())


__all__ = ["ffmpeg_exe"]
