"""Captions made from timed words: how words become caption cues, and the SubRip file that goes out with a video.

A cue is what is on screen at once: at most two lines of about 42 characters (the common broadcast and
streaming guideline), on screen between 1 and 7 seconds, broken where the speaker pauses or a sentence
ends. A cue keeps its words' times, for the word-by-word ("karaoke") style.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from localnemo import timeline
from localnemo.speech import Word

LINE_CHARS = 42
MAX_LINES = 2
MIN_CUE_MS = 1000
MAX_CUE_MS = 7000
# A pause this long between words ends a cue (when the cue is long enough to read).
BREAK_PAUSE_MS = 500
_SENTENCE_END = (".", "?", "!", "。", "？", "！", "…")
_CLAUSE_END = (",", ";", ":", "，", "；", "：")


@dataclass(frozen=True)
class CaptionCue:
    start_ms: int
    end_ms: int
    text: str
    words: tuple[Word, ...] = field(default=())


def _wide(char: str) -> bool:
    return unicodedata.east_asian_width(char) in ("W", "F")


def width(text: str) -> int:
    """How wide ``text`` is on screen, in Latin characters (a CJK character counts two)."""
    return sum(2 if _wide(char) else 1 for char in text)


def join_words(words: Sequence[str]) -> str:
    """Words into text: with spaces, except between CJK characters."""
    text = ""
    for word in words:
        if text and not (_wide(text[-1]) and _wide(word[0])):
            text += " "
        text += word
    return text


def lines_of(words: Sequence[str], line_chars: int = LINE_CHARS) -> list[str]:
    """Words broken into lines: one line when it fits, else two balanced lines."""
    text = join_words(words)
    if width(text) <= line_chars or len(words) < 2:
        return [text]
    best: tuple[int, int] | None = None
    for cut in range(1, len(words)):
        first, second = join_words(words[:cut]), join_words(words[cut:])
        score = max(width(first), width(second))
        if best is None or score < best[0]:
            best = (score, cut)
    assert best is not None
    cut = best[1]
    return [join_words(words[:cut]), join_words(words[cut:])]


def cues_from_words(words: Sequence[Word], *, line_chars: int = LINE_CHARS) -> list[CaptionCue]:
    """Caption cues for timed words (see the module docstring for the rules)."""
    groups: list[list[Word]] = []
    current: list[Word] = []
    limit = line_chars * MAX_LINES
    for word in words:
        if current:
            length = current[-1].end_ms - current[0].start_ms
            gap = word.start_ms - current[-1].end_ms
            text = join_words([w.text for w in [*current, word]])
            last = current[-1].text
            fits = width(text) <= limit and all(
                width(line) <= line_chars for line in lines_of([w.text for w in [*current, word]], line_chars)
            )
            too_long = not fits or word.end_ms - current[0].start_ms > MAX_CUE_MS
            natural = length >= MIN_CUE_MS and (
                gap >= BREAK_PAUSE_MS or last.endswith(_SENTENCE_END)
                or (last.endswith(_CLAUSE_END) and width(text) > line_chars)
            )  # fmt: skip
            if too_long or natural:
                groups.append(current)
                current = []
        current.append(word)
    if current:
        groups.append(current)
    cues: list[CaptionCue] = []
    for index, group in enumerate(groups):
        start, end = group[0].start_ms, group[-1].end_ms
        following = groups[index + 1][0].start_ms if index + 1 < len(groups) else None
        if end - start < MIN_CUE_MS:
            # Long enough to read, without running into the next cue.
            end = start + MIN_CUE_MS if following is None else max(end, min(start + MIN_CUE_MS, following))
        text = "\n".join(lines_of([w.text for w in group], line_chars))
        cues.append(CaptionCue(start, end, text, tuple(group)))
    return cues


def _srt_time(ms: int) -> str:
    ms = max(0, ms)
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d},{millis:03d}"


def srt_text(cues: Sequence[tuple[int, int, str]]) -> str:
    """A SubRip file's text for (start ms, end ms, text) cues."""
    blocks = [
        f"{number}\n{_srt_time(start)} --> {_srt_time(end)}\n{text.strip()}\n"
        for number, (start, end, text) in enumerate(cues, 1)
    ]
    return "\n".join(blocks)


def write_srt(cues: Sequence[tuple[int, int, str]], path: Path) -> None:
    path.write_text(srt_text(cues), encoding="utf-8")


def draft_captions(draft: timeline.Draft, length_ms: int | None = None) -> list[tuple[int, int, str]]:
    """The captions of a draft as (start ms, end ms, text) on its timeline (i.e. in the edited video), in
    order, cut off at ``length_ms`` when given."""
    found: list[tuple[int, int, str]] = []
    for track in timeline.tracks_of(draft, timeline.TRACK_TEXT):
        for segment in track.sg:
            m = segment.m
            if m.role != "caption" or not (m.text or "").strip():
                continue
            start = round(timeline.number(m.start))
            end = start + round(timeline.number(segment.d))
            if length_ms is not None:
                end = min(end, length_ms)
            if end > start:
                found.append((start, end, str(m.text)))
    return sorted(found)
