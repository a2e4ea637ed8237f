"""What a media file is (duration, size, frame rate, kind), and where its pauses are, read with ffmpeg.

There is no ffprobe in the imageio-ffmpeg package, so ``probe`` runs ``ffmpeg -hide_banner -i FILE`` with no
output: ffmpeg then prints the input's description to stderr and exits after reading only the
container headers, never the whole file. ``analyse_audio`` decodes only the audio (``-vn``) through
``silencedetect`` and ``volumedetect`` and reads what they print. ``usable_duration`` reads every packet
without decoding any, to find where the data of a file that was cut short really ends (the header says how
long it was meant to be), and ``keep_usable`` copies that part into a file of its own.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

from bot.ffmpeg import ffmpeg_exe as ffmpeg_exe  # the one lookup, shared with the bot
from bot.ffmpeg import finished_within
from localnemo.processes import spawn

log = logging.getLogger(__name__)

MediaKind = Literal["video", "image", "audio"]

# Larger files are not probed: uploads are capped at 500 MB, and ffmpeg on a huge odd file can be slow.
MAX_PROBE_BYTES = 1024 * 1024 * 1024
PROBE_TIMEOUT_SECONDS = 30.0
# Decoding the first frame of an upload; a real picture takes a fraction of a second.
DECODE_CHECK_SECONDS = 15.0

_INPUT_RE = re.compile(r"^Input #0, (?P<format>.+?), from ", re.MULTILINE)
_DURATION_RE = re.compile(r"Duration: (?P<h>\d+):(?P<m>\d{2}):(?P<s>\d{2}(?:\.\d+)?)")
_VIDEO_RE = re.compile(r"Stream #\d+:\d+.*?: Video: (?P<codec>\w+)(?P<rest>.*)$", re.MULTILINE)
_AUDIO_RE = re.compile(r"Stream #\d+:\d+.*?: Audio: (?P<rest>.*)$", re.MULTILINE)
_SIZE_RE = re.compile(r"(?:^|[ ,])(?P<w>\d{1,5})x(?P<h>\d{1,5})(?:[ ,\[]|$)")
_FPS_RE = re.compile(r"(?P<fps>\d+(?:\.\d+)?)(?P<k>k?) fps")
_ROTATION_RE = re.compile(r"rotation of (?P<deg>-?\d+(?:\.\d+)?) degrees|rotate\s*:\s*(?P<deg2>-?\d+)")
_TBR_RE = re.compile(r"(?P<fps>\d+(?:\.\d+)?)(?P<k>k?) tbr")
# Interlaced video: its "tbr" may be the field rate, twice the frame rate.
_INTERLACED_RE = re.compile(r"\b(?:top|bottom)(?: coded)? first\b")
# Above this a stated rate is a time base rather than a frame rate ("1k tbr" in WebM, "90k tbr" in MPEG-TS).
MAX_PLAUSIBLE_FPS = 240.0
# ffmpeg's demuxers for still images; animated GIF and WebP count as images too (as the backend's
# accepted-formats list does).
_IMAGE_FORMATS = ("image2", "_pipe", "gif", "webp")


@dataclass(frozen=True)
class MediaInfo:
    duration: float | None
    width: int | None
    height: int | None
    # The rate every frame's time is a whole number of frames at (FFmpeg's "tbr", r_frame_rate): a phone's
    # or screen recorder's variable-rate video's highest common rate, and the rate cuts snap to.
    fps: float | None
    kind: MediaKind
    has_audio: bool = False
    # ffmpeg's name of the input format ("mov,mp4,m4a,3gp,3g2,mj2", "png_pipe", "gif", ...).
    container: str = ""
    # The first audio stream has one channel (a phone's or a screen recorder's microphone, often).
    mono: bool = False
    # Frames per second on average (FFmpeg's "fps", avg_frame_rate): below ``fps`` when the rate varies.
    average_fps: float | None = None

    @property
    def variable_rate(self) -> bool:
        """Whether the frames come at a varying rate (known only when the container says both rates)."""
        return self.fps is not None and self.average_fps is not None and self.average_fps < self.fps * 0.99


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
    proc = await spawn(
        ffmpeg_exe(),
        "-hide_banner",
        "-nostdin",
        "-i",
        target,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    # Cancelled too (a render cancelled while it probes its inputs), FFmpeg is killed: finished_within.
    stderr = await finished_within(proc, PROBE_TIMEOUT_SECONDS)
    if stderr is None:
        log.warning("localnemo.probe.timeout path=%s", path.name)
        return None
    return parse_probe_output(stderr.decode("utf-8", errors="replace"))


async def decodes_a_frame(path: Path, *, seconds: float = DECODE_CHECK_SECONDS) -> bool:
    """Whether FFmpeg decodes the first picture of a file within ``seconds`` (killed past them).

    A file that only starts like an image or a video (a PNG signature and junk) probes as one, then makes
    FFmpeg spin at full speed with gigabytes of memory when a render reads it; one decoded frame is the
    proof that it is a picture."""
    target = str(await asyncio.to_thread(path.resolve))
    proc = await spawn(
        ffmpeg_exe(), "-v", "error", "-nostdin", "-i", target, "-frames:v", "1", "-f", "null", "-",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    if await finished_within(proc, seconds) is None:
        log.warning("localnemo.decode_check.timeout path=%s", path.name)
        return False
    return proc.returncode == 0


# Reading every packet of an upload, not decoding it: disk speed (a 10-minute 1080p file takes about a second).
USABLE_PASS_SECONDS = 120.0
_OUT_TIME_RE = re.compile(r"^out_time_us=(?P<us>\d+)\s*$", re.MULTILINE)
_PROGRESS_LINE_RE = re.compile(r"^\w+=")
# FFmpeg's complaints kept with the result (a header over garbage makes one per packet).
_MAX_PROBLEM_LINES = 5
# The demuxer's reading a packet cut off by the end of the file (or failing a checksum) marks it corrupt:
# it is left out, so that what is kept decodes to its last packet.
_DEMUX_ONLY = ("-hide_banner", "-nostdin", "-nostats", "-v", "error", "-fflags", "+discardcorrupt")


@dataclass(frozen=True)
class Usable:
    """Where the readable data of a file ends, from a pass over its packets (``usable_duration``)."""

    # The end of the last whole packet, in seconds from the start; None when no packet could be read.
    seconds: float | None
    # Whether the demuxer met damage on the way (a packet cut off, a read error): FFmpeg's own words.
    problems: str


async def usable_duration(path: Path, *, seconds: float = USABLE_PASS_SECONDS) -> Usable | None:
    """How much of a video or sound file can be read: every packet of its pictures and sound is read and
    none decoded (``-c copy`` into the null muxer), and FFmpeg reports where the last one ends. None when the
    pass did not finish within ``seconds`` (then nothing is known)."""
    target = str(await asyncio.to_thread(path.resolve))
    proc = await spawn(
        # The progress report goes to stderr with the errors (one pipe, read by finished_within).
        ffmpeg_exe(), *_DEMUX_ONLY, "-i", target, "-map", "0:v?", "-map", "0:a?", "-c", "copy",
        "-f", "null", "-progress", "pipe:2", "-",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stderr = await finished_within(proc, seconds)
    if stderr is None:
        log.warning("localnemo.usable.timeout path=%s", path.name)
        return None
    text = stderr.decode("utf-8", "replace")
    complaints = [line for line in text.splitlines() if line.strip() and not _PROGRESS_LINE_RE.match(line)]
    problems = "\n".join(complaints[:_MAX_PROBLEM_LINES])
    ends = [int(match.group("us")) for match in _OUT_TIME_RE.finditer(text)]
    end = ends[-1] / 1_000_000 if ends and ends[-1] > 0 else None
    return Usable(seconds=end, problems=problems)


async def keep_usable(source: Path, target: Path, *, seconds: float = USABLE_PASS_SECONDS) -> bool:
    """Copy the readable packets of a damaged ``source`` into ``target`` (its container from its extension),
    without re-encoding: a file whose header tells its real length. False when FFmpeg could not."""
    proc = await spawn(
        ffmpeg_exe(), *_DEMUX_ONLY, "-i", str(await asyncio.to_thread(source.resolve)),
        "-map", "0:v?", "-map", "0:a?", "-c", "copy", "-y", str(await asyncio.to_thread(target.resolve)),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    if await finished_within(proc, seconds) is None:
        log.warning("localnemo.keep_usable.timeout path=%s", source.name)
        return False
    return proc.returncode == 0


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
    video_block = ""
    for match in _VIDEO_RE.finditer(text):
        # Cover art in an audio file is a video stream marked as an attached picture.
        if "attached pic" in match.group("rest"):
            continue
        video_line = match.group(0)
        following = text[match.end() :]
        next_stream = following.find("Stream #")
        video_block = following if next_stream < 0 else following[:next_stream]
        break
    audio_match = _AUDIO_RE.search(text)
    has_audio = audio_match is not None
    # ffmpeg names a one-channel layout "mono"; a stream without a standard layout it calls "1 channels".
    mono = audio_match is not None and re.search(r"\bmono\b|\b1 channels\b", audio_match.group("rest")) is not None
    if video_line is None:
        if not has_audio:
            return None
        return MediaInfo(
            duration=duration, width=None, height=None, fps=None, kind="audio", has_audio=True, container=container,
            mono=mono,
        )  # fmt: skip
    width = height = None
    size_match = _SIZE_RE.search(video_line)
    if size_match is not None:
        width, height = int(size_match.group("w")), int(size_match.group("h"))
        rotation = _ROTATION_RE.search(video_block)
        if rotation is not None and round(abs(float(rotation.group("deg") or rotation.group("deg2")))) % 180 == 90:
            # Phones record sideways and say so in the display matrix; ffmpeg turns the frames upright
            # when it decodes them, so the picture's shape is the other way round.
            width, height = height, width
    average, common = _rate(_FPS_RE, video_line), _rate(_TBR_RE, video_line)
    if common is not None and average is not None and _INTERLACED_RE.search(video_line):
        common = average if abs(common - 2 * average) < 0.01 * common else common
    # A variable-rate source averages below its real rate (17.7 fps for one with parts at 30): the common
    # rate is the one that keeps each frame at its time, unless the container does not know it.
    fps = common if common is not None and (average is None or common >= average) else average
    if any(marker in container for marker in _IMAGE_FORMATS):
        return MediaInfo(duration=None, width=width, height=height, fps=None, kind="image", container=container)
    return MediaInfo(
        duration=duration, width=width, height=height, fps=fps, kind="video", has_audio=has_audio, container=container,
        mono=mono, average_fps=average,
    )  # fmt: skip


def _rate(pattern: re.Pattern[str], line: str) -> float | None:
    match = pattern.search(line)
    if match is None:
        return None
    value = float(match.group("fps")) * (1000 if match.group("k") else 1)
    return value if 0 < value <= MAX_PLAUSIBLE_FPS else None


# -- pauses -------------------------------------------------------------------------------------------------

# Silences at least this long are reported; callers keep the ones long enough for their purpose, so
# that one decode serves every "tight" or "gentle" setting. Short, so that a click measures as the few
# tens of milliseconds it lasts (localnemo.voice), not as a click and the quiet around it.
ANALYSIS_MIN_SILENCE_SECONDS = 0.05
_SILENCE_START_RE = re.compile(r"silence_start: (?P<t>-?\d+(?:\.\d+)?)")
_SILENCE_END_RE = re.compile(r"silence_end: (?P<t>-?\d+(?:\.\d+)?)")
_MEAN_VOLUME_RE = re.compile(r"mean_volume: (?P<db>-?(?:\d+(?:\.\d+)?|inf)) dB")


@dataclass(frozen=True)
class AudioAnalysis:
    """Where a file's audio is silent (seconds, sorted, not overlapping), and how loud it is elsewhere."""

    duration: float
    silences: tuple[tuple[float, float], ...]
    threshold_db: float
    # The mean power of the non-silent parts, dBFS; None when the audio is all silence.
    speech_db: float | None

    @property
    def speech_seconds(self) -> float:
        return max(0.0, self.duration - sum(end - start for start, end in self.silences))


async def analyse_audio(path: Path, *, threshold_db: float, limit_seconds: float = 600.0) -> AudioAnalysis | None:
    """Find the silences of a file's first audio stream with ``silencedetect``; None without audio."""
    info = await probe(path)
    if info is None or not info.has_audio:
        return None
    target = str(await asyncio.to_thread(path.resolve))
    audio_filter = f"silencedetect=n={threshold_db:.1f}dB:d={ANALYSIS_MIN_SILENCE_SECONDS},volumedetect"
    proc = await spawn(
        # One thread, chosen: only the sound is decoded (-vn), and an audio decoder and these two filters
        # are serial. The pass takes about 0.1 s per minute of sound, a few per cent of an edit.
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-filter_threads", "1",
        "-threads", "1", "-vn", "-sn", "-dn", "-i", target,
        "-map", "0:a:0", "-af", audio_filter, "-f", "null", "-",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stderr = await finished_within(proc, limit_seconds)
    if stderr is None:
        raise TimeoutError(f"the pause analysis took longer than {limit_seconds:g} s")
    if proc.returncode != 0:
        log.warning("localnemo.analyse.failed path=%s rc=%s", path.name, proc.returncode)
        return None
    return parse_silences(stderr.decode("utf-8", errors="replace"), info.duration, threshold_db)


def parse_silences(text: str, duration: float | None, threshold_db: float) -> AudioAnalysis:
    """Read ``silencedetect``/``volumedetect`` output; an unterminated silence runs to the end."""
    total = duration or 0.0
    silences: list[tuple[float, float]] = []
    start: float | None = None
    for line in text.splitlines():
        if (match := _SILENCE_START_RE.search(line)) is not None:
            start = max(0.0, float(match.group("t")))
        elif (match := _SILENCE_END_RE.search(line)) is not None and start is not None:
            end = float(match.group("t"))
            total = max(total, end)
            if end > start:
                silences.append((start, end))
            start = None
    if start is not None and total > start:
        silences.append((start, total))
    mean_db: float | None = None
    if (match := _MEAN_VOLUME_RE.search(text)) is not None and match.group("db") != "inf":
        mean_db = float(match.group("db"))
    silent = sum(end - begin for begin, end in silences)
    speech_db: float | None = None
    if mean_db is not None and total > silent + 0.05:
        # volumedetect averages the power over the whole file; the silences add (next to) nothing to it.
        speech_db = mean_db - 10 * math.log10((total - silent) / total)
    return AudioAnalysis(
        duration=total, silences=tuple(silences), threshold_db=threshold_db, speech_db=speech_db
    )


@cache
def ffmpeg_major() -> int:
    """The ffmpeg binary's major version (0 when it does not say, as git builds may not)."""
    import subprocess

    try:
        result = subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-version"], capture_output=True, text=True, timeout=30, check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return 0
    match = re.search(r"ffmpeg version n?(\d+)\.", result.stdout)
    return int(match.group(1)) if match else 0
