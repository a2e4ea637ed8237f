"""Turning a draft into a video file for an export job.

``Renderer`` is the seam; ``CopyRenderer`` is a placeholder until the FFmpeg engine lands: it does NOT
apply the timeline (no trims, music, titles or captions) — it copies the first video clip the draft
references, so that the export flow (job, progress, download URL) can be exercised end to end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from localnemo.media import probe

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".avi", ".webm", ".mkv"})
_CHUNK = 1 << 20


class RenderError(Exception):
    """A render that cannot be done; the message is plain language, shown as the job's error."""


@dataclass(frozen=True)
class RenderOutput:
    duration: float
    size: int


class Renderer(Protocol):
    async def render(
        self,
        draft: dict[str, Any],
        sources: Mapping[str, Path],
        out_path: Path,
        on_progress: Callable[[float], None],
    ) -> RenderOutput:
        """Write the draft's video to ``out_path``; ``sources`` maps each cdn_url to its local file;
        ``on_progress`` takes a fraction from 0 to 1."""
        ...


def draft_sources(draft: dict[str, Any]) -> Iterator[tuple[int, str]]:
    """Each (track type, source URL) the draft's segments reference, in timeline order."""
    tracks = draft.get("t")
    if not isinstance(tracks, list):
        return
    for track in tracks:
        if not isinstance(track, dict) or not isinstance(track.get("sg"), list):
            continue
        for segment in track["sg"]:
            meta = segment.get("m") if isinstance(segment, dict) else None
            if isinstance(meta, dict) and isinstance(meta.get("src"), str):
                yield track.get("tt", -1), meta["src"]


class CopyRenderer:
    """Placeholder renderer: the output is a copy of the first video clip on the timeline."""

    async def render(
        self,
        draft: dict[str, Any],
        sources: Mapping[str, Path],
        out_path: Path,
        on_progress: Callable[[float], None],
    ) -> RenderOutput:
        source: Path | None = None
        for track_type, url in draft_sources(draft):
            path = sources.get(url)
            if track_type == 0 and path is not None and path.suffix.lower() in VIDEO_EXTENSIONS:
                source = path
                break
        if source is None:
            raise RenderError("nothing to render: the timeline has no video clips uploaded to this server")
        log.info("localnemo.render.copy source=%s out=%s", source.name, out_path.name)
        await asyncio.to_thread(_copy_with_progress, source, out_path, on_progress)
        info = await probe(out_path)
        size = (await asyncio.to_thread(out_path.stat)).st_size
        return RenderOutput(duration=info.duration if info and info.duration else 0.0, size=size)


def _copy_with_progress(source: Path, target: Path, on_progress: Callable[[float], None]) -> None:
    # Runs in a worker thread; on_progress only stores a number, which is safe from here.
    total = source.stat().st_size or 1
    done = 0
    target.parent.mkdir(parents=True, exist_ok=True)
    with source.open("rb") as reader, target.open("wb") as writer:
        while chunk := reader.read(_CHUNK):
            writer.write(chunk)
            done += len(chunk)
            on_progress(min(1.0, done / total))
    on_progress(1.0)
