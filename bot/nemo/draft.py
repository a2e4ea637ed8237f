"""The timeline in words: a one-line summary of a draft, and what changed between two drafts.

Used when the backend finishes an edit without saying anything (about 30 % of edits do): the bot then
reads the state and tells the user what changed.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.nemo.timeline_model import TRACK_AUDIO, TRACK_TEXT, TRACK_VIDEO, Draft, DraftMeta, Segment, Track
from bot.texts import t


def _w(key: str, lang: str, **values: object) -> str:
    """A phrase from the catalogue's draft block (``draft.*`` in bot/texts.py)."""
    return t(f"draft.{key}", lang, **values)


def _seconds(ms: float) -> str:
    s = ms / 1000
    return f"{s:.0f}" if abs(s - round(s)) < 0.05 else f"{s:.1f}"


def span_text(start_ms: float, end_ms: float, lang: str = "en") -> str:
    return _w("span", lang, a=_seconds(start_ms), b=_seconds(end_ms))


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class TrackView:
    """What a person would call a track: its kind, name and time span."""

    kind: str  # "Video", "Music", "Audio", "Title", "Captions", or "Track"
    name: str | None  # a title or clip name, as the backend gave it
    start_ms: float
    end_ms: float
    segments: int
    volume: float | None
    counted: str | None = None  # instead of a name: "clips", "lines" or "type", with ``count``
    count: int = 0

    def display_name(self, lang: str) -> str | None:
        return _w(self.counted, lang, n=self.count) if self.counted else self.name

    @property
    def span(self) -> str:
        return span_text(self.start_ms, self.end_ms)

    def span_in(self, lang: str) -> str:
        return span_text(self.start_ms, self.end_ms, lang)

    def noun(self, lang: str) -> str:
        word = _w(self.kind, lang)
        return word if lang == "zh" else word.lower()


def _segment_spans(segments: list[Segment]) -> list[tuple[float, float]]:
    spans: list[tuple[float, float]] = []
    cursor = 0.0
    for seg in segments:
        start = _number(seg.m.start)
        if start is None:
            start = cursor
        end = start + max(seg.d, 0)
        spans.append((start, end))
        cursor = end
    return spans


def _segment_label(seg: Segment) -> str | None:
    for value in (seg.m.text, seg.m.title, seg.m.name, seg.m.filename):
        if value is not None and value.strip():
            return value.strip()
    return None


def view_track(track: Track) -> TrackView:
    spans = _segment_spans(track.sg)
    start = min((s for s, _ in spans), default=0.0)
    end = max((e for _, e in spans), default=0.0)
    first = track.sg[0] if track.sg else None
    name = _segment_label(first) if first else None
    volume = _number(first.m.volume) if first else None
    role = (first.m.role or "") if first else ""
    counted: str | None = None
    count = len(track.sg)
    if track.tt == TRACK_VIDEO:
        kind = "Video"
        counted = "clips" if len(track.sg) > 1 else None
    elif track.tt == TRACK_AUDIO:
        kind = "Audio" if role in ("voice", "voiceover", "audio") else "Music"
    elif track.tt == TRACK_TEXT:
        is_captions = len(track.sg) > 1 or role in ("caption", "subtitle")
        kind = "Captions" if is_captions else "Title"
        counted = "lines" if is_captions else None
    else:
        kind = "Track"
        if name is None:
            counted, count = "type", track.tt
    return TrackView(kind, name, start, end, len(track.sg), volume, counted, count)


def _percent(volume: float) -> str:
    return f"{volume * 100:.0f}%" if volume <= 1 else f"{volume:.0f}%"


def _describe(view: TrackView, lang: str) -> str:
    details = [view.span_in(lang)]
    if view.kind in ("Music", "Audio") and view.volume is not None:
        details.append(_percent(view.volume))
    name = view.display_name(lang)
    if view.kind == "Title" and name:
        name = _w("quoted", lang, name=name)
    joined = _w("details_joiner", lang).join(details)
    kind = _w(view.kind, lang)
    if name:
        return _w("track_named", lang, kind=kind, name=name, details=joined)
    return _w("track_unnamed", lang, kind=kind, details=joined)


def summarize(draft: Draft | None, lang: str = "en") -> str:
    """``Timeline (3 tracks): 1. Video: city timelapse (0–10 s) 2. Music: Lo-fi (0–10 s, 35%) …``"""
    tracks = [track for track in (draft.t if draft else []) if track.sg]
    if not tracks:
        return _w("empty", lang)
    parts = [f"{i}. {_describe(view_track(track), lang)}" for i, track in enumerate(tracks, 1)]
    return _w("timeline_one" if len(tracks) == 1 else "timeline", lang, n=len(tracks)) + " ".join(parts)


def _keyed(draft: Draft | None) -> dict[tuple[int, int], TrackView]:
    """Tracks keyed by (type, n-th of that type), so reordering other types does not look like a change."""
    seen: dict[int, int] = {}
    out: dict[tuple[int, int], TrackView] = {}
    for track in draft.t if draft else []:
        if not track.sg:
            continue
        n = seen.get(track.tt, 0)
        seen[track.tt] = n + 1
        out[(track.tt, n)] = view_track(track)
    return out


def _added(view: TrackView, lang: str) -> str:
    span = view.span_in(lang)
    if view.kind == "Title":
        return _w("added_title", lang, name=view.name, span=span) if view.name else _w(
            "added_untitled", lang, span=span)
    if view.kind == "Captions":
        return _w("added_captions", lang, n=view.segments, span=span)
    return _w("added_track", lang, kind=_w(view.kind, lang), span=span)


def _changed(old: TrackView, new: TrackView, lang: str) -> list[str]:
    out: list[str] = []
    noun = new.noun(lang)
    if new.kind == "Title":
        if old.name != new.name:
            out.append(_w("title_now", lang, name=new.name))
    elif new.kind == "Captions":
        if old.segments != new.segments:
            out.append(_w("captions_now", lang, n=new.segments, m=old.segments))
    elif new.kind == "Video" and old.segments != new.segments:
        out.append(_w("clips_now", lang, n=new.segments, m=old.segments))
    elif old.name != new.name and new.name:
        out.append(_w("named_now", lang, noun=noun, name=new.name))
    if (old.start_ms, old.end_ms) != (new.start_ms, new.end_ms):
        if new.kind == "Title":
            out.append(_w("title_shown", lang, span=new.span_in(lang)))
        else:
            out.append(_w("span_now", lang, noun=noun, span=new.span_in(lang), old=old.span_in(lang)))
    if old.volume != new.volume and new.volume is not None:
        out.append(_w("volume_now", lang, noun=noun, p=_percent(new.volume).rstrip("%")))
    return out


def describe_changes(before: Draft | None, after: Draft | None, lang: str = "en") -> list[str]:
    """What changed, in words: ``["added a Music track 0–10 s", "title now 'Urban Dreams'"]``."""
    old, new = _keyed(before), _keyed(after)
    changes: list[str] = []
    for key, view in new.items():
        if key not in old:
            changes.append(_added(view, lang))
        else:
            changes.extend(_changed(old[key], view, lang))
    for key, view in old.items():
        if key not in new:
            track = view.kind not in ("Title", "Captions")
            changes.append(_w("removed_track" if track else "removed", lang, noun=view.noun(lang)))
    before_m = before.m if before else DraftMeta()
    after_m = after.m if after else DraftMeta()
    size_before = (before_m.width, before_m.height)
    size_after = (after_m.width, after_m.height)
    if size_before != size_after and all(isinstance(v, int) for v in size_after):
        changes.append(_w("frame_now", lang, w=size_after[0], h=size_after[1]))
    for old_value, new_value, phrase in (
        (before_m.resolution, after_m.resolution, "output_now"),
        (before_m.aspect_ratio, after_m.aspect_ratio, "aspect_now"),
    ):
        if old_value != new_value and new_value:
            changes.append(_w(phrase, lang, v=new_value))
    if not changes and (before.model_dump() if before else None) != (after.model_dump() if after else None):
        changes.append(_w("updated", lang))
    return changes
