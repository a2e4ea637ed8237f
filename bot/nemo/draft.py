"""The timeline in words: a one-line summary of a draft, and what changed between two drafts.

Used when the backend finishes an edit without saying anything (about 30 % of edits do): the bot then
reads the state and tells the user what changed.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.nemo.models import TRACK_AUDIO, TRACK_TEXT, TRACK_VIDEO, Draft, Segment, Track


def _seconds(ms: float) -> str:
    s = ms / 1000
    return f"{s:.0f}" if abs(s - round(s)) < 0.05 else f"{s:.1f}"


def span_text(start_ms: float, end_ms: float) -> str:
    return f"{_seconds(start_ms)}–{_seconds(end_ms)} s"


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class TrackView:
    """What a person would call a track: its kind, name and time span."""

    kind: str  # "Video", "Music", "Audio", "Title", "Captions", "Text", or "Track"
    name: str | None
    start_ms: float
    end_ms: float
    segments: int
    volume: float | None

    @property
    def span(self) -> str:
        return span_text(self.start_ms, self.end_ms)


def _segment_spans(segments: list[Segment]) -> list[tuple[float, float]]:
    spans: list[tuple[float, float]] = []
    cursor = 0.0
    for seg in segments:
        start = _number(seg.m.get("start"))
        if start is None:
            start = cursor
        end = start + max(seg.d, 0)
        spans.append((start, end))
        cursor = end
    return spans


def _segment_label(seg: Segment) -> str | None:
    for key in ("text", "title", "name", "filename"):
        value = seg.m.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def view_track(track: Track) -> TrackView:
    spans = _segment_spans(track.sg)
    start = min((s for s, _ in spans), default=0.0)
    end = max((e for _, e in spans), default=0.0)
    first = track.sg[0] if track.sg else None
    name = _segment_label(first) if first else None
    volume = _number(first.m.get("volume")) if first else None
    if track.tt == TRACK_VIDEO:
        kind = "Video"
        if len(track.sg) > 1:
            name = f"{len(track.sg)} clips"
    elif track.tt == TRACK_AUDIO:
        role = str(first.m.get("role", "")) if first else ""
        kind = "Audio" if role in ("voice", "voiceover", "audio") else "Music"
    elif track.tt == TRACK_TEXT:
        role = str(first.m.get("role", "")) if first else ""
        if len(track.sg) > 1 or role in ("caption", "subtitle"):
            kind = "Captions"
            name = f"{len(track.sg)} lines"
        else:
            kind = "Title"
    else:
        kind = "Track"
        name = name or f"type {track.tt}"
    return TrackView(kind, name, start, end, len(track.sg), volume)


def _describe(view: TrackView) -> str:
    details = [view.span]
    if view.kind in ("Music", "Audio") and view.volume is not None:
        details.append(f"{view.volume * 100:.0f}%" if view.volume <= 1 else f"{view.volume:.0f}%")
    name = view.name
    if view.kind == "Title" and name:
        name = f'"{name}"'
    label = f"{view.kind}: {name}" if name else view.kind
    return f"{label} ({', '.join(details)})"


def summarize(draft: Draft | None) -> str:
    """``Timeline (3 tracks): 1. Video: city timelapse (0–10 s) 2. Music: Lo-fi (0–10 s, 35%) …``"""
    tracks = [t for t in (draft.t if draft else []) if t.sg]
    if not tracks:
        return "Timeline: empty"
    parts = [f"{i}. {_describe(view_track(t))}" for i, t in enumerate(tracks, 1)]
    noun = "track" if len(tracks) == 1 else "tracks"
    return f"Timeline ({len(tracks)} {noun}): " + " ".join(parts)


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


def _added(view: TrackView) -> str:
    if view.kind == "Title":
        return f"added the title '{view.name}' ({view.span})" if view.name else f"added a title ({view.span})"
    if view.kind == "Captions":
        return f"added captions ({view.segments} lines, {view.span})"
    return f"added a {view.kind} track {view.span}"


def _changed(old: TrackView, new: TrackView) -> list[str]:
    out: list[str] = []
    noun = new.kind.lower()
    if new.kind == "Title":
        if old.name != new.name:
            out.append(f"title now '{new.name}'")
    elif new.kind == "Captions":
        if old.segments != new.segments:
            out.append(f"captions now {new.segments} lines (were {old.segments})")
    elif new.kind == "Video" and old.segments != new.segments:
        out.append(f"video now has {new.segments} clips (was {old.segments})")
    elif old.name != new.name and new.name:
        out.append(f"{noun} now '{new.name}'")
    if (old.start_ms, old.end_ms) != (new.start_ms, new.end_ms) and new.kind != "Title":
        out.append(f"{noun} now {new.span} (was {old.span})")
    elif (old.start_ms, old.end_ms) != (new.start_ms, new.end_ms):
        out.append(f"title now shown {new.span}")
    if old.volume != new.volume and new.volume is not None:
        percent = new.volume * 100 if new.volume <= 1 else new.volume
        out.append(f"{noun} volume now {percent:.0f}%")
    return out


def describe_changes(before: Draft | None, after: Draft | None) -> list[str]:
    """What changed, in words: ``["added a Music track 0–10 s", "title now 'Urban Dreams'"]``."""
    old, new = _keyed(before), _keyed(after)
    changes: list[str] = []
    for key, view in new.items():
        if key not in old:
            changes.append(_added(view))
        else:
            changes.extend(_changed(old[key], view))
    for key, view in old.items():
        if key not in new:
            suffix = "" if view.kind in ("Title", "Captions") else " track"
            changes.append(f"removed the {view.kind.lower()}{suffix}")
    before_m = before.m if before else {}
    after_m = after.m if after else {}
    size_before = (before_m.get("width"), before_m.get("height"))
    size_after = (after_m.get("width"), after_m.get("height"))
    if size_before != size_after and all(isinstance(v, int) for v in size_after):
        changes.append(f"frame now {size_after[0]}×{size_after[1]}")
    for setting, words in (("resolution", "output"), ("aspect_ratio", "aspect ratio")):
        if before_m.get(setting) != after_m.get(setting) and after_m.get(setting):
            changes.append(f"{words} now {after_m[setting]}")
    if not changes and (before.model_dump() if before else None) != (after.model_dump() if after else None):
        changes.append("the timeline was updated")
    return changes
