"""A picture of the timeline: the kept segments as a strip of thumbnails with their times, and a bar per
music, title and caption track below it, drawn by FFmpeg into one PNG.

One FFmpeg run: each thumbnail is the first frame of its segment's source at the segment's ``in`` time
(sources are URLs the backend serves; FFmpeg reads http), scaled into a cell; the cells are stacked side by
side (``hstack``), padded for the bars, and the bars drawn with ``drawbox`` at their share of the timeline.
At most :data:`MAX_THUMBNAILS` thumbnails (evenly picked when there are more segments) and a time limit, so a
long timeline or a slow source never holds the answer up for long. No imaging library: FFmpeg only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bot.ffmpeg import finished_within
from bot.nemo.draft import view_track
from bot.nemo.timeline_model import TRACK_AUDIO, TRACK_TEXT, TRACK_VIDEO, Draft, Segment

log = logging.getLogger(__name__)

MAX_THUMBNAILS = 12
TIMEOUT_SECONDS = 20.0
THUMB_WIDTH = 192
THUMB_HEIGHT = 108
BAR_HEIGHT = 20
LABEL_HEIGHT = 18
# How long one network read of a source may stall (FFmpeg's -rw_timeout is in microseconds).
_READ_TIMEOUT_US = 10_000_000

_BAR_COLOURS = {"Music": "0x2e9e5b", "Audio": "0x2e9e5b", "Title": "0xe08a1e", "Captions": "0x3a7bd5",
                "Track": "0x888888"}


class StoryboardError(Exception):
    """The picture could not be made (no FFmpeg, a source out of reach, too slow): the reason is logged."""


@dataclass(frozen=True)
class Bar:
    kind: str  # "Music", "Audio", "Title", "Captions" or "Track"
    spans: tuple[tuple[float, float], ...]  # timeline ms


@dataclass(frozen=True)
class Thumbnail:
    src: str | None
    in_ms: float
    start_ms: float
    end_ms: float
    image: bool


@dataclass(frozen=True)
class Layout:
    """What the picture shows, and its size in pixels."""

    thumbnails: tuple[Thumbnail, ...]
    bars: tuple[Bar, ...]
    total_ms: float

    @property
    def width(self) -> int:
        return THUMB_WIDTH * len(self.thumbnails)

    @property
    def height(self) -> int:
        return THUMB_HEIGHT + LABEL_HEIGHT + BAR_HEIGHT * len(self.bars)


def _spans(segments: list[Segment]) -> list[tuple[float, float]]:
    spans: list[tuple[float, float]] = []
    cursor = 0.0
    for seg in segments:
        start = float(seg.m.start) if isinstance(seg.m.start, int | float) else cursor
        end = start + max(float(seg.d), 0.0)
        spans.append((start, end))
        cursor = end
    return spans


def _pick(count: int, cap: int) -> list[int]:
    if count <= cap:
        return list(range(count))
    return sorted({round(i * (count - 1) / (cap - 1)) for i in range(cap)})


def layout(draft: Draft, *, max_thumbnails: int = MAX_THUMBNAILS) -> Layout | None:
    """What to draw, or None when the timeline has no picture to show (no video segment)."""
    video = next((track for track in draft.t if track.tt == TRACK_VIDEO and track.sg), None)
    if video is None:
        return None
    spans = _spans(video.sg)
    thumbs = tuple(
        Thumbnail(video.sg[i].m.src, float(video.sg[i].m.in_ or 0), spans[i][0], spans[i][1],
                  video.sg[i].m.kind == "image")
        for i in _pick(len(video.sg), max_thumbnails)
    )
    bars: list[Bar] = []
    total = max((end for _, end in spans), default=0.0)
    for track in draft.t:
        if track.tt in (TRACK_AUDIO, TRACK_TEXT) and track.sg:
            track_spans = _spans(track.sg)
            total = max(total, *(end for _, end in track_spans))
            bars.append(Bar(view_track(track).kind, tuple(track_spans)))
    return Layout(thumbs, tuple(bars), total)


def _clock(ms: float) -> str:
    seconds = ms / 1000
    return f"{seconds:.0f}s" if abs(seconds - round(seconds)) < 0.05 else f"{seconds:.1f}s"


def command(ffmpeg: str, plan: Layout, out: Path) -> list[str]:
    """The one FFmpeg command that draws ``plan`` into ``out`` (a PNG)."""
    args = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    chains: list[str] = []
    cell = (f"scale={THUMB_WIDTH}:{THUMB_HEIGHT}:force_original_aspect_ratio=decrease,"
            f"pad={THUMB_WIDTH}:{THUMB_HEIGHT}:(ow-iw)/2:(oh-ih)/2:color=black,setsar=1,format=rgb24")
    for index, thumb in enumerate(plan.thumbnails):
        if thumb.src is None or not thumb.src.startswith(("http://", "https://")):
            # Nothing to read (or not a URL the backend serves): a grey cell keeps the strip in order.
            args += ["-f", "lavfi", "-i", f"color=c=0x444444:s={THUMB_WIDTH}x{THUMB_HEIGHT}:d=1"]
        else:
            if not thumb.image and thumb.in_ms > 0:
                args += ["-ss", f"{thumb.in_ms / 1000:.3f}"]
            args += ["-rw_timeout", str(_READ_TIMEOUT_US), "-i", thumb.src]
        label = f"{_clock(thumb.start_ms)}-{_clock(thumb.end_ms)}"
        chains.append(
            f"[{index}:v:0]trim=end_frame=1,{cell},"
            f"pad=iw:ih+{LABEL_HEIGHT}:0:0:color=0x202020,"
            f"drawtext=text='{index + 1}  {label}':fontcolor=white:fontsize=12:x=4:y=h-{LABEL_HEIGHT - 3},"
            f"drawbox=x=iw-2:y=0:w=2:h=ih:color=black@1:t=fill[c{index}]"
        )
    cells = "".join(f"[c{i}]" for i in range(len(plan.thumbnails)))
    strip = f"{cells}hstack=inputs={len(plan.thumbnails)}" if len(plan.thumbnails) > 1 else f"{cells}null"
    draw = [f"pad=iw:ih+{BAR_HEIGHT * len(plan.bars)}:0:0:color=0x111111"] if plan.bars else []
    total = plan.total_ms or 1.0
    for row, bar in enumerate(plan.bars):
        y = THUMB_HEIGHT + LABEL_HEIGHT + BAR_HEIGHT * row + 3
        colour = _BAR_COLOURS.get(bar.kind, _BAR_COLOURS["Track"])
        for start, end in bar.spans:
            x = round(plan.width * start / total)
            w = max(2, round(plan.width * (end - start) / total))
            draw.append(f"drawbox=x={x}:y={y}:w={w}:h={BAR_HEIGHT - 6}:color={colour}@1:t=fill")
        draw.append(f"drawtext=text='{bar.kind.lower()}':fontcolor=white:fontsize=11:x=4:y={y + 1}")
    graph = ";".join([*chains, strip + ("," + ",".join(draw) if draw else "") + "[out]"])
    return [*args, "-filter_complex", graph, "-map", "[out]", "-frames:v", "1", "-f", "image2",
            "-c:v", "png", str(out)]


async def make_storyboard(
    draft: Draft, out: Path, *, ffmpeg: Callable[[], str], time_limit: float = TIMEOUT_SECONDS,
    max_thumbnails: int = MAX_THUMBNAILS,
) -> Layout:
    """Draw the draft into ``out``. Raises :class:`StoryboardError` (with the reason) when it cannot."""
    plan = layout(draft, max_thumbnails=max_thumbnails)
    if plan is None:
        raise StoryboardError("no video segment to show")
    try:
        exe = await asyncio.to_thread(ffmpeg)
    except Exception as exc:
        raise StoryboardError(f"no FFmpeg ({exc})") from exc
    try:
        proc = await asyncio.create_subprocess_exec(
            *command(exe, plan, out), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise StoryboardError(f"FFmpeg could not start ({exc})") from exc
    err = await finished_within(proc, time_limit)
    if err is None:
        raise StoryboardError(f"took longer than {time_limit:g} s")
    if proc.returncode != 0 or not await asyncio.to_thread(out.is_file):
        last = err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        raise StoryboardError(f"FFmpeg failed ({proc.returncode}): {last[0][:200]}")
    return plan


__all__ = ["MAX_THUMBNAILS", "Layout", "StoryboardError", "command", "layout", "make_storyboard"]
