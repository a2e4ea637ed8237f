"""What a media file is (duration, size, frame rate, kind), read with the ffmpeg binary.

There is no ffprobe in the imageio-ffmpeg package, so this runs ``ffmpeg -hide_banner -i FILE`` with no
output: ffmpeg then prints the input's description to stderr and exits after reading only the
container headers, never the whole file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shutil
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import imageio_ffmpeg

log = logging.getLogger(__name__)

MediaKind = Literal["video", "image", "audio"]

# Larger files are not probed: uploads are capped at 500 MB, and ffmpeg on a huge odd file can be slow.
MAX_PROBE_BYTES = 1024 * 1024 * 1024
PROBE_TIMEOUT_SECONDS = 30.0

_INPUT_RE = re.compile(r"^Input #0, (?P<format>.+?), from ", re.MULTILINE)
_DURATION_RE = re.compile(r"Duration: (?P<h>\d+):(?P<m>\d{2}):(?P<s>\d{2}(?:\.\d+)?)")
_VIDEO_RE = re.compile(r"Stream #\d+:\d+.*?: Video: (?P<codec>\w+)(?P<rest>.*)$", re.MULTILINE)
_AUDIO_RE = re.compile(r"Stream #\d+:\d+.*?: Audio: ", re.MULTILINE)
_SIZE_RE = re.compile(r"(?:^|[ ,])(?P<w>\d{1,5})x(?P<h>\d{1,5})(?:[ ,\[]|$)")
_FPS_RE = re.compile(r"(?P<fps>\d+(?:\.\d+)?)(?P<k>k?) fps")
_TBR_RE = re.compile(r"(?P<fps>\d+(?:\.\d+)?)(?P<k>k?) tbr")
# ffmpeg's demuxers for still images; animated GIF and WebP count as images too (as the backend's
# accepted-formats list does).
_IMAGE_FORMATS = ("image2", "_pipe", "gif", "webp")


@dataclass(frozen=True)
class MediaInfo:
    duration: float | None
    width: int | None
    height: int | None
    fps: float | None
    kind: MediaKind


@cache
def ffmpeg_exe() -> str:
    """A system ffmpeg when there is one (usually the newest), else the one imageio-ffmpeg ships."""
    return shutil.which("ffmpeg") or str(imageio_ffmpeg.get_ffmpeg_exe())


async def probe(path: Path) -> MediaInfo | None:
    """Describe a media file, or None when ffmpeg cannot read it (or it is too large to bother)."""
    try:
        size = (await asyncio.to_thread(path.stat)).st_size
        # Absolute: a name starting with "-" or "proto:" must not read as an option or a protocol.
        target = str(await asyncio.to_thread(path.resolve))
    except OSError:
        return None
    if size == 0 or size > MAX_PROBE_BYTES:
        return None
    proc = await asyncio.create_subprocess_exec(
        ffmpeg_exe(),
        "-hide_banner",
        "-nostdin",
        "-i",
        target,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, stderr = await asyncio.wait_for(proc.communicate(), PROBE_TIMEOUT_SECONDS)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        log.warning("localnemo.probe.timeout path=%s", path.name)
        return None
    return parse_probe_output(stderr.decode("utf-8", errors="replace"))


def parse_probe_output(text: str) -> MediaInfo | None:
    """Parse what ``ffmpeg -i`` prints about its input (the part before its "no output" complaint)."""
    input_match = _INPUT_RE.search(text)
    if input_match is None:
        return None
    container = input_match.group("format")
    duration: float | None = None
    duration_match = _DURATION_RE.search(text)
    if duration_match is not None:
        duration = (
            int(duration_match.group("h")) * 3600
            + int(duration_match.group("m")) * 60
            + float(duration_match.group("s"))
        )
    video_line: str | None = None
    for match in _VIDEO_RE.finditer(text):
        # Cover art in an audio file is a video stream marked as an attached picture.
        if "attached pic" in match.group("rest"):
            continue
        video_line = match.group(0)
        break
    has_audio = _AUDIO_RE.search(text) is not None
    if video_line is None:
        if not has_audio:
            return None
        return MediaInfo(duration=duration, width=None, height=None, fps=None, kind="audio")
    width = height = None
    size_match = _SIZE_RE.search(video_line)
    if size_match is not None:
        width, height = int(size_match.group("w")), int(size_match.group("h"))
    fps: float | None = None
    rate_match = _FPS_RE.search(video_line) or _TBR_RE.search(video_line)
    if rate_match is not None:
        fps = float(rate_match.group("fps")) * (1000 if rate_match.group("k") else 1)
    if any(marker in container for marker in _IMAGE_FORMATS):
        return MediaInfo(duration=None, width=width, height=height, fps=None, kind="image")
    return MediaInfo(duration=duration, width=width, height=height, fps=fps, kind="video")
