"""The draft (timeline) as localnemo writes and reads it: the typed ``bot.nemo.timeline_model.Draft``, in the
backend's short-key form, and the edits every part of localnemo shares.

A draft is ``{"t": [tracks], "m": {...}}``; a track is ``{"tt": type, "sg": [segments]}``; a segment is
``{"d": milliseconds on the timeline, "m": {...}}``. The fields localnemo uses, each a typed attribute of the
model (``in`` is ``in_`` in Python; any other key is kept and written back as it came):

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

import copy
import logging
import math
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from bot.nemo.timeline_model import (
    TRACK_AUDIO,
    TRACK_TEXT,
    TRACK_VIDEO,
    Draft,
    DraftMeta,
    Segment,
    SegmentMeta,
    Track,
    WordTime,
)

if TYPE_CHECKING:
    from localnemo.state import SessionRecord
    from localnemo.subtitles import Cue

log = logging.getLogger(__name__)

__all__ = [
    "TRACK_AUDIO",
    "TRACK_TEXT",
    "TRACK_VIDEO",
    "Draft",
    "DraftMeta",
    "Segment",
    "SegmentMeta",
    "Track",
]

IMAGE_SEGMENT_MS = 3000
DEFAULT_LENGTH_MS = 10_000
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp"})
# A draft from a client is refused past these: a real one is about 8 levels deep, and each of its segments
# a few dozen values. Deeper nesting breaks the serialiser (pydantic's depth limit, recursion) later, in a
# render job or in the store.
MAX_DRAFT_DEPTH = 32
MAX_DRAFT_VALUES = 200_000


# Segment values that are the same as absent: a draft that only writes one of these has not changed.
SEGMENT_DEFAULTS: dict[str, float] = {"speed": 1.0, "volume": 1.0}


def set_or_clear(meta: SegmentMeta, name: str, value: float) -> None:
    """Set a segment value; at its default (speed 1, volume 1) the key is left out of the wire instead."""
    if value == SEGMENT_DEFAULTS.get(name):
        setattr(meta, name, None)
        meta.model_fields_set.discard(name)
    else:
        setattr(meta, name, value)


def effective(draft: Draft) -> dict[str, Any]:
    """The draft's wire form with segment values at their defaults (speed 1, volume 1) left out: what to
    compare to know whether a turn changed anything (the "already so" reply, the credit, the undo step)."""
    return effective_wire(draft.to_wire())


def effective_wire(wire: dict[str, Any]) -> dict[str, Any]:
    """``effective`` of a draft already in wire form (a copy; ``wire`` is left as it is)."""
    wire = copy.deepcopy(wire)
    for track in wire.get("t", []):
        for segment in track.get("sg", []) if isinstance(track, dict) else []:
            meta = segment.get("m") if isinstance(segment, dict) else None
            if not isinstance(meta, dict):
                continue
            for key, default in SEGMENT_DEFAULTS.items():
                value = meta.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool) and value == default:
                    del meta[key]
    return wire


def number(value: Any, default: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return float(value)


def tracks_of(draft: Draft, track_type: int) -> Iterator[Track]:
    for track in draft.t:
        if track.tt == track_type:
            yield track


def video_track(draft: Draft, *, create: bool = False) -> Track | None:
    """The main video track (the first one), made at the front of the draft when asked."""
    track = next(tracks_of(draft, TRACK_VIDEO), None)
    if track is None and create:
        track = Track(tt=TRACK_VIDEO, sg=[])
        draft.t.insert(0, track)
    return track


def video_segments(draft: Draft) -> list[Segment]:
    """Every segment of every video track, in the order they play."""
    return [segment for track in tracks_of(draft, TRACK_VIDEO) for segment in track.sg]


def is_image(segment: Segment) -> bool:
    m = segment.m
    if m.kind in ("image", "video"):
        return m.kind == "image"
    return m.src is not None and any(m.src.lower().endswith(ext) for ext in IMAGE_EXTENSIONS)


def speed_of(segment: Segment) -> float:
    speed = number(segment.m.speed, 1.0)
    return speed if speed > 0 else 1.0


def source_span(segment: Segment) -> tuple[float, float]:
    """The part of a video segment's source it plays (ms): ``in``/``out``, or derived from ``d``."""
    start = max(0.0, number(segment.m.in_))
    end = number(segment.m.out, -1.0)
    if end <= start:
        end = start + number(segment.d) * speed_of(segment)
    return start, end


def snap(ms: float, fps: float | None) -> int:
    """A time (ms) moved to the nearest frame boundary of a ``fps`` source, so that a cut between frames
    keeps the same number of video frames and audio samples."""
    if not fps or fps <= 0:
        return round(ms)
    return round(round(ms * fps / 1000) * 1000 / fps)


def set_span(segment: Segment, start_ms: float, end_ms: float) -> None:
    m = segment.m
    fps = number(m.fps) or None
    m.in_, m.out = snap(start_ms, fps), snap(end_ms, fps)
    segment.d = max(0, round((m.out - m.in_) / speed_of(segment)))


def repack(draft: Draft) -> int:
    """Lay the video segments end to end from 0 (``start`` and, for clips, ``d``); the total length, ms."""
    position = 0
    for segment in video_segments(draft):
        if not is_image(segment):
            start, end = source_span(segment)
            if segment.m.in_ is not None or segment.m.out is not None:
                segment.d = max(0, round((end - start) / speed_of(segment)))
        segment.m.start = position
        position += max(0, int(number(segment.d)))
    return position


def video_length_ms(draft: Draft) -> int:
    """Where the last video segment ends (0 when the timeline has no video)."""
    end = 0
    position = 0
    for segment in video_segments(draft):
        start = number(segment.m.start, position)
        position = int(start + number(segment.d))
        end = max(end, position)
    return end


def timeline_length_ms(draft: Draft) -> int:
    """The video's length, or without video the end of the last audio segment."""
    length = video_length_ms(draft)
    if length:
        return length
    for track in tracks_of(draft, TRACK_AUDIO):
        for segment in track.sg:
            length = max(length, int(number(segment.m.start) + number(segment.d)))
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


def map_original(draft: Draft, offsets: Mapping[str, float], begin: float, end: float) -> tuple[int, int] | None:
    """Where the span [begin, end) of the uncut sequence plays now (timeline ms), or None when cut out."""
    first: float | None = None
    last: float | None = None
    position = 0.0
    for segment in video_segments(draft):
        duration = number(segment.d)
        src = segment.m.src
        if not is_image(segment) and src is not None and src in offsets:
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


def drop_empty_tracks(draft: Draft, track_type: int) -> None:
    """Take tracks of one type that have no segments left off the timeline."""
    kept = [track for track in draft.t if not (track.tt == track_type and not track.sg)]
    if len(kept) != len(draft.t):
        draft.t = kept


def sync(draft: Draft, video_infos: list[dict[str, Any]]) -> None:
    """Bring the derived parts of the draft in line after a change: video segments end to end, captions
    where their words now are, background music as long as the video."""
    length = repack(draft)
    offsets = origins(video_infos)
    has_video = bool(video_segments(draft))
    for track in tracks_of(draft, TRACK_TEXT):
        kept: list[Segment] = []
        for segment in track.sg:
            m = segment.m
            if m.role != "caption" or m.cue_in is None:
                kept.append(segment)
                continue
            cue_in, cue_out = number(m.cue_in), number(m.cue_out)
            if not has_video:
                placed: tuple[int, int] | None = (round(cue_in), round(cue_out))
            else:
                placed = map_original(draft, offsets, cue_in, cue_out)
            if placed is None:
                continue
            m.start = placed[0]
            segment.d = placed[1] - placed[0]
            for word in m.words or []:
                at = (round(number(word.a)), round(number(word.b))) if not has_video else map_original(
                    draft, offsets, number(word.a), number(word.b)
                )
                word.at, word.until = (None, None) if at is None else at
            kept.append(segment)
        kept.sort(key=lambda s: number(s.m.start))
        track.sg = kept
    if length:
        for track in tracks_of(draft, TRACK_AUDIO):
            for segment in track.sg:
                if segment.m.fit:
                    segment.m.start = 0
                    segment.d = length
    drop_empty_tracks(draft, TRACK_TEXT)


def place_captions(
    draft: Draft,
    cues: list[tuple[int, int, str]],
    src: str | None,
    words: list[list[tuple[str, int, int]]] | None = None,
) -> int:
    """Put a captions file's cues (uncut-sequence ms) on the timeline as a captions track, replacing any
    captions there; ``sync`` then moves them to where their words now play. Captions made from speech have
    no file (``src`` None) and carry each cue's timed ``words``. Returns how many cues."""
    remove_captions(draft)
    segments = [
        Segment(
            d=end - start,
            m=SegmentMeta(text=text, start=start, role="caption", src=src, cue_in=start, cue_out=end),
        )
        for start, end, text in cues
    ]
    for segment, timed in zip(segments, words or [], strict=False):
        segment.m.words = [WordTime(w=w, a=a, b=b) for w, a, b in timed]
    draft.t.append(Track(tt=TRACK_TEXT, sg=segments))
    return len(segments)


def remove_captions(draft: Draft) -> int:
    """Take every caption off the timeline; how many there were."""
    removed = 0
    for track in tracks_of(draft, TRACK_TEXT):
        kept = [s for s in track.sg if s.m.role != "caption"]
        removed += len(track.sg) - len(kept)
        track.sg = kept
    drop_empty_tracks(draft, TRACK_TEXT)
    return removed


# -- uploads on the timeline ---------------------------------------------------------------------------

UNKNOWN_DURATION_MS = 5000


def _aspect_ratio(width: int, height: int) -> str:
    divisor = math.gcd(width, height) or 1
    return f"{width // divisor}:{height // divisor}"


def _segment_end(track: Track) -> int:
    if not track.sg:
        return 0
    last = track.sg[-1]
    return int(number(last.m.start)) + int(number(last.d))


def place_upload(session: SessionRecord, info: dict[str, Any], title: str, cues: list[Cue] | None = None) -> None:
    """Put an uploaded file on the timeline, as the backend does when it applies session state."""
    draft = session.draft
    kind = info["file_type"]
    duration = info.get("duration")
    if kind == "subtitle":
        session.video_infos.append(info)
        if cues:  # a script (.txt) has none: it waits for "generate captions"
            place_captions(draft, [(c.start_ms, c.end_ms, c.text) for c in cues], info["cdn_url"])
        sync(draft, session.video_infos)
        return
    if kind == "audio":
        track = next((t for t in tracks_of(draft, TRACK_AUDIO) if any(s.m.src is not None for s in t.sg)), None)
        if track is None:
            track = Track(tt=TRACK_AUDIO, sg=[])
            draft.t.append(track)
        length = round(duration * 1000) if duration else UNKNOWN_DURATION_MS
        meta = SegmentMeta(title=title, src=info["cdn_url"], start=_segment_end(track), volume=1.0)
    else:
        track = video_track(draft, create=True)
        assert track is not None
        meta = SegmentMeta(title=title, src=info["cdn_url"], start=_segment_end(track), kind=kind)
        if kind == "image":
            length = IMAGE_SEGMENT_MS
        else:
            length = round(duration * 1000) if duration else UNKNOWN_DURATION_MS
            # The kept span of the source: cutting pauses or trimming narrows it (see the module docstring).
            meta.in_, meta.out = 0, length
            if info.get("fps"):
                meta.fps = info["fps"]
        width, height = info.get("width"), info.get("height")
        if width and height:
            meta.width, meta.height = width, height
            # The first picture sets the canvas, until the user asks for another aspect ratio.
            if not session.canvas_config:
                session.canvas_config.update(
                    {"width": width, "height": height, "aspect_ratio": _aspect_ratio(width, height)}
                )
                if draft.m.width is None:
                    draft.m.width = width
                if draft.m.height is None:
                    draft.m.height = height
    track.sg.append(Segment(d=length, m=meta))
    session.video_infos.append(info)
    sync(draft, session.video_infos)


def has_segment(draft: Draft) -> bool:
    """Whether the draft can be rendered: some track has a segment."""
    return draft.exportable


def draft_shape_problem(body: Any) -> str | None:
    """Why a draft's JSON is too deep or too large to take (in words), or None; walked without recursion."""
    values = 0
    stack: list[tuple[Any, int]] = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        values += 1
        if values > MAX_DRAFT_VALUES:
            return f"the draft is too large: more than {MAX_DRAFT_VALUES} values"
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > MAX_DRAFT_DEPTH:
                    return f"the draft is nested too deeply: at most {MAX_DRAFT_DEPTH} levels"
                stack.append((child, depth + 1))
            else:
                values += 1
    return None
