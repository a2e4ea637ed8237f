"""The draft (timeline) as localnemo writes and reads it, in the backend's short-key form.

A draft is ``{"t": [tracks], "m": {...}}``; a track is ``{"tt": type, "sg": [segments]}``; a segment is
``{"d": milliseconds on the timeline, "m": {...}}``. The fields localnemo uses (others are kept as they are):

- video track (``tt`` 0), played one segment after another in list order:
  ``src`` (the upload's URL), ``title``, ``start`` (timeline ms), ``kind`` ("video" or "image"),
  ``in``/``out`` (the kept span of the source, ms; one segment per kept span after cutting pauses),
  ``speed`` (1 = normal), ``volume`` (of the clip's own sound, 1 = as recorded, 0 = muted), ``fps``,
  ``width``/``height`` (of the source). ``d`` is ``(out - in) / speed``; an image shows for ``d``.
- audio track (``tt`` 1): ``src`` (absent: the bundled music loop), ``title``, ``start``, ``in`` (offset into
  the source), ``volume``, ``role`` ("music" for background music), ``duck`` (lower it under speech) with
  ``duck_db`` (how much) and ``duck_threshold_db`` (speech level it reacts to), ``loop`` (repeat the source
  to fill ``d``), ``fit`` (follow the video's length).
- text track (``tt`` 7): ``text``, ``start``, ``role`` ("title", "text" or "caption"); a caption also has
  ``src`` (its .srt/.vtt) and ``cue_in``/``cue_out``: its time in the uploaded clips as they were, from
  which ``start`` and ``d`` are recomputed whenever the video is cut.
- draft ``m``: ``width``/``height`` (the canvas's shape), ``aspect_ratio`` ("9:16", ...), ``fit`` ("blur",
  "crop" or "pad": how a clip of another shape fills the canvas), ``resolution`` ("720p", "1080p", "4k"),
  ``fade_in_ms``/``fade_out_ms``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from localnemo.state import SessionRecord
    from localnemo.subtitles import Cue

log = logging.getLogger(__name__)

TRACK_VIDEO = 0
TRACK_AUDIO = 1
TRACK_TEXT = 7

IMAGE_SEGMENT_MS = 3000
# The length given to a clip whose duration could not be read.
UNKNOWN_DURATION_MS = 5000
DEFAULT_LENGTH_MS = 10_000
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp"})

Segment = dict[str, Any]
Track = dict[str, Any]


def tracks(draft: dict[str, Any]) -> list[Track]:
    value = draft.setdefault("t", [])
    if not isinstance(value, list):
        value = draft["t"] = []
    return value


def meta(segment: Segment) -> dict[str, Any]:
    value = segment.get("m")
    if not isinstance(value, dict):
        value = segment["m"] = {}
    return value


def draft_meta(draft: dict[str, Any]) -> dict[str, Any]:
    value = draft.get("m")
    if not isinstance(value, dict):
        value = draft["m"] = {}
    return value


def number(value: Any, default: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return float(value)


def tracks_of(draft: dict[str, Any], track_type: int) -> Iterator[Track]:
    for track in tracks(draft):
        if isinstance(track, dict) and track.get("tt") == track_type and isinstance(track.get("sg"), list):
            yield track


def video_track(draft: dict[str, Any], *, create: bool = False) -> Track | None:
    """The main video track (the first one), made at the front of the draft when asked."""
    track = next(tracks_of(draft, TRACK_VIDEO), None)
    if track is None and create:
        track = {"tt": TRACK_VIDEO, "sg": []}
        tracks(draft).insert(0, track)
    return track


def video_segments(draft: dict[str, Any]) -> list[Segment]:
    """Every segment of every video track, in the order they play."""
    return [segment for track in tracks_of(draft, TRACK_VIDEO) for segment in track["sg"] if isinstance(segment, dict)]


def is_image(segment: Segment) -> bool:
    m = meta(segment)
    if m.get("kind") in ("image", "video"):
        return bool(m.get("kind") == "image")
    src = m.get("src")
    return isinstance(src, str) and any(src.lower().endswith(ext) for ext in IMAGE_EXTENSIONS)


def speed_of(segment: Segment) -> float:
    speed = number(meta(segment).get("speed"), 1.0)
    return speed if speed > 0 else 1.0


def source_span(segment: Segment) -> tuple[float, float]:
    """The part of a video segment's source it plays (ms): ``in``/``out``, or derived from ``d``."""
    m = meta(segment)
    start = max(0.0, number(m.get("in")))
    end = number(m.get("out"), -1.0)
    if end <= start:
        end = start + number(segment.get("d")) * speed_of(segment)
    return start, end


def snap(ms: float, fps: float | None) -> int:
    """A time (ms) moved to the nearest frame boundary of a ``fps`` source, so that a cut between frames
    keeps the same number of video frames and audio samples."""
    if not fps or fps <= 0:
        return round(ms)
    return round(round(ms * fps / 1000) * 1000 / fps)


def set_span(segment: Segment, start_ms: float, end_ms: float) -> None:
    m = meta(segment)
    fps = number(m.get("fps")) or None
    m["in"], m["out"] = snap(start_ms, fps), snap(end_ms, fps)
    segment["d"] = max(0, round((m["out"] - m["in"]) / speed_of(segment)))


def repack(draft: dict[str, Any]) -> int:
    """Lay the video segments end to end from 0 (``start`` and, for clips, ``d``); the total length, ms."""
    position = 0
    for segment in video_segments(draft):
        if not is_image(segment):
            start, end = source_span(segment)
            if "in" in meta(segment) or "out" in meta(segment):
                segment["d"] = max(0, round((end - start) / speed_of(segment)))
        meta(segment)["start"] = position
        position += max(0, int(number(segment.get("d"))))
    return position


def video_length_ms(draft: dict[str, Any]) -> int:
    """Where the last video segment ends (0 when the timeline has no video)."""
    end = 0
    position = 0
    for segment in video_segments(draft):
        start = number(meta(segment).get("start"), position)
        position = int(start + number(segment.get("d")))
        end = max(end, position)
    return end


def timeline_length_ms(draft: dict[str, Any]) -> int:
    """The video's length, or without video the end of the last audio segment."""
    length = video_length_ms(draft)
    if length:
        return length
    for track in tracks_of(draft, TRACK_AUDIO):
        for segment in track["sg"]:
            if isinstance(segment, dict):
                length = max(length, int(number(meta(segment).get("start")) + number(segment.get("d"))))
    return length


def origins(video_infos: list[dict[str, Any]]) -> dict[str, float]:
    """Where each uploaded picture began in the timeline as first uploaded (ms): captions files are timed
    against that uncut sequence."""
    offsets: dict[str, float] = {}
    position = 0.0
    for info in video_infos:
        kind = info.get("file_type")
        url = info.get("cdn_url")
        if kind not in ("video", "image") or not isinstance(url, str):
            continue
        offsets.setdefault(url, position)
        position += IMAGE_SEGMENT_MS if kind == "image" else number(info.get("duration")) * 1000
    return offsets


def map_original(
    draft: dict[str, Any], offsets: Mapping[str, float], begin: float, end: float
) -> tuple[int, int] | None:
    """Where the span [begin, end) of the uncut sequence plays now (timeline ms), or None when cut out."""
    first: float | None = None
    last: float | None = None
    position = 0.0
    for segment in video_segments(draft):
        duration = number(segment.get("d"))
        src = meta(segment).get("src")
        if not is_image(segment) and isinstance(src, str) and src in offsets:
            span_in, span_out = source_span(segment)
            origin = offsets[src]
            lo, hi = max(begin, origin + span_in), min(end, origin + span_out)
            if hi > lo:
                speed = speed_of(segment)
                piece_start = position + (lo - origin - span_in) / speed
                piece_end = position + (hi - origin - span_in) / speed
                first = piece_start if first is None else first
                last = piece_end
        position += duration
    if first is None or last is None or last - first < 1:
        return None
    return round(first), round(last)


def sync(draft: dict[str, Any], video_infos: list[dict[str, Any]]) -> None:
    """Bring the derived parts of the draft in line after a change: video segments end to end, captions
    where their words now are, background music as long as the video."""
    length = repack(draft)
    offsets = origins(video_infos)
    has_video = bool(video_segments(draft))
    for track in tracks_of(draft, TRACK_TEXT):
        kept: list[Segment] = []
        for segment in track["sg"]:
            m = meta(segment)
            if m.get("role") != "caption" or "cue_in" not in m:
                kept.append(segment)
                continue
            cue_in, cue_out = number(m.get("cue_in")), number(m.get("cue_out"))
            if not has_video:
                placed: tuple[int, int] | None = (round(cue_in), round(cue_out))
            else:
                placed = map_original(draft, offsets, cue_in, cue_out)
            if placed is None:
                continue
            m["start"] = placed[0]
            segment["d"] = placed[1] - placed[0]
            kept.append(segment)
        kept.sort(key=lambda s: number(meta(s).get("start")))
        track["sg"] = kept
    if length:
        for track in tracks_of(draft, TRACK_AUDIO):
            for segment in track["sg"]:
                m = meta(segment)
                if m.get("fit"):
                    m["start"] = 0
                    segment["d"] = length
    tracks(draft)[:] = [
        track
        for track in tracks(draft)
        if not (isinstance(track, dict) and track.get("tt") == TRACK_TEXT and track.get("sg") == [])
    ]


def place_captions(draft: dict[str, Any], cues: list[tuple[int, int, str]], src: str) -> int:
    """Put a captions file's cues (uncut-sequence ms) on the timeline as a captions track, replacing any
    captions there; ``sync`` then moves them to where their words now play. Returns how many cues."""
    remove_captions(draft)
    segments = [
        {
            "d": end - start,
            "m": {"text": text, "start": start, "role": "caption", "src": src, "cue_in": start, "cue_out": end},
        }
        for start, end, text in cues
    ]
    tracks(draft).append({"tt": TRACK_TEXT, "sg": segments})
    return len(segments)


def remove_captions(draft: dict[str, Any]) -> int:
    """Take every caption off the timeline; how many there were."""
    removed = 0
    for track in tracks_of(draft, TRACK_TEXT):
        kept = [s for s in track["sg"] if not (isinstance(s, dict) and meta(s).get("role") == "caption")]
        removed += len(track["sg"]) - len(kept)
        track["sg"] = kept
    tracks(draft)[:] = [
        t for t in tracks(draft) if not (isinstance(t, dict) and t.get("tt") == TRACK_TEXT and t.get("sg") == [])
    ]
    return removed


# -- placing an upload (what the backend does when it applies session state) -------------------------


def _aspect_ratio(width: int, height: int) -> str:
    divisor = math.gcd(width, height) or 1
    return f"{width // divisor}:{height // divisor}"


def _segment_end(track: Mapping[str, Any]) -> int:
    segments = track.get("sg") or []
    if not segments:
        return 0
    last = segments[-1]
    meta = last.get("m", {})
    start = meta.get("start", 0) if isinstance(meta, dict) else 0
    return int(start) + int(last.get("d", 0))


def place_upload(session: SessionRecord, info: dict[str, Any], title: str, cues: list[Cue] | None = None) -> None:
    """Put an uploaded file on the timeline, as the backend does when it applies session state."""
    tracks: list[dict[str, Any]] = session.draft.setdefault("t", [])
    kind = info["file_type"]
    duration = info.get("duration")
    if kind == "subtitle":
        session.video_infos.append(info)
        place_captions(session.draft, [(c.start_ms, c.end_ms, c.text) for c in cues or []], info["cdn_url"])
        sync(session.draft, session.video_infos)
        return
    if kind == "audio":
        track = next(
            (t for t in tracks if t.get("tt") == 1 and any("src" in s.get("m", {}) for s in t.get("sg", []))), None
        )
        if track is None:
            track = {"tt": 1, "sg": []}
            tracks.append(track)
        length = round(duration * 1000) if duration else UNKNOWN_DURATION_MS
        meta: dict[str, Any] = {"title": title, "src": info["cdn_url"], "start": _segment_end(track), "volume": 1.0}
    else:
        track = next((t for t in tracks if t.get("tt") == 0), None)
        if track is None:
            track = {"tt": 0, "sg": []}
            tracks.insert(0, track)
        meta = {"title": title, "src": info["cdn_url"], "start": _segment_end(track), "kind": kind}
        if kind == "image":
            length = IMAGE_SEGMENT_MS
        else:
            length = round(duration * 1000) if duration else UNKNOWN_DURATION_MS
            # The kept span of the source: cutting pauses or trimming narrows it (see localnemo.timeline).
            meta.update({"in": 0, "out": length})
            if info.get("fps"):
                meta["fps"] = info["fps"]
        width, height = info.get("width"), info.get("height")
        if width and height:
            meta.update({"width": width, "height": height})
            # The first picture sets the canvas, until the user asks for another aspect ratio.
            if not session.canvas_config:
                session.canvas_config.update(
                    {"width": width, "height": height, "aspect_ratio": _aspect_ratio(width, height)}
                )
                draft_meta = session.draft.setdefault("m", {})
                draft_meta.setdefault("width", width)
                draft_meta.setdefault("height", height)
    track.setdefault("sg", []).append({"d": length, "m": meta})
    session.video_infos.append(info)
    sync(session.draft, session.video_infos)


def has_segment(draft: Mapping[str, Any]) -> bool:
    tracks = draft.get("t")
    if not isinstance(tracks, list):
        return False
    return any(isinstance(track, dict) and isinstance(track.get("sg"), list) and track["sg"] for track in tracks)
