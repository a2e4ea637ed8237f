"""Captions files: reading SubRip (.srt) and WebVTT (.vtt) cues, and writing the ASS file the renderer burns in.

Cues are read leniently (BOM, CRLF, missing numbers, VTT settings after the times, simple markup), because
these files come from many tools; a file with no cue at all is refused. Burning in goes through libass
(FFmpeg's ``ass`` filter), which takes styling from the file's own ``[V4+ Styles]`` section.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MAX_SUBTITLE_BYTES = 5 * 1024 * 1024
MAX_CUES = 20_000

_TIME = r"(?:(?P<{p}h>\d{{1,3}}):)?(?P<{p}m>\d{{1,2}}):(?P<{p}s>\d{{1,2}})(?:[.,](?P<{p}f>\d{{1,3}}))?"
_CUE_TIME_RE = re.compile(rf"^\s*{_TIME.format(p='a')}\s*-->\s*{_TIME.format(p='b')}")
_TAG_RE = re.compile(r"</?[a-zA-Z][^>]*>|\{\\[^}]*\}")


class SubtitleError(ValueError):
    """The file is not a captions file this server can read; the message is plain language."""


@dataclass(frozen=True)
class Cue:
    start_ms: int
    end_ms: int
    text: str
    # For the word-by-word style: each word and when it is said (ms, same clock as the cue).
    words: tuple[tuple[str, int, int], ...] = ()


@dataclass(frozen=True)
class CaptionStyle:
    """How burned-in captions look: ``position`` bottom/middle/top, ``size`` small/medium/large, and
    ``karaoke`` (each word lights up as it is said, where the cue has word times)."""

    position: str = "bottom"
    size: str = "medium"
    karaoke: bool = False


_ALIGNMENT = {"bottom": 2, "middle": 5, "top": 8}  # ASS numpad layout
_SCALE = {"small": 0.75, "medium": 1.0, "large": 1.35}


def _ms(match: re.Match[str], prefix: str) -> int:
    hours = int(match.group(f"{prefix}h") or 0)
    minutes = int(match.group(f"{prefix}m"))
    seconds = int(match.group(f"{prefix}s"))
    fraction = (match.group(f"{prefix}f") or "0").ljust(3, "0")
    return ((hours * 60 + minutes) * 60 + seconds) * 1000 + int(fraction)


def parse_cues(text: str) -> list[Cue]:
    """The cues of an SRT or WebVTT text, sorted by start; markup removed, lines kept."""
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    cues: list[Cue] = []
    for block in re.split(r"\n\s*\n", text):
        lines = [line for line in block.split("\n") if line.strip()]
        for index, line in enumerate(lines):
            match = _CUE_TIME_RE.match(line)
            if match is None:
                continue
            start, end = _ms(match, "a"), _ms(match, "b")
            body = [_TAG_RE.sub("", part).strip() for part in lines[index + 1 :]]
            words = "\n".join(part for part in body if part)
            if end > start and words:
                cues.append(Cue(start, end, words))
            break
        if len(cues) > MAX_CUES:
            raise SubtitleError("too many captions in one file")
    cues.sort(key=lambda cue: (cue.start_ms, cue.end_ms))
    return cues


def read_cues(path: Path) -> list[Cue]:
    """Read a captions file (blocking: call it in a thread); SubtitleError when it has no cue."""
    size = path.stat().st_size
    if size > MAX_SUBTITLE_BYTES:
        raise SubtitleError(f"the captions file is over {MAX_SUBTITLE_BYTES // (1024 * 1024)} MB")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        # Older subtitle tools write Windows code pages; Latin-1 at least keeps the timings readable.
        text = raw.decode("latin-1")
    cues = parse_cues(text)
    if not cues:
        raise SubtitleError("no captions found in it (expected SubRip .srt or WebVTT .vtt cues)")
    return cues


def read_script(path: Path) -> str:
    """The words of a script (.txt) to align to speech (blocking); SubtitleError when it has none."""
    if path.stat().st_size > MAX_SUBTITLE_BYTES:
        raise SubtitleError(f"the script is over {MAX_SUBTITLE_BYTES // (1024 * 1024)} MB")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    text = text.lstrip("\ufeff").strip()
    if not re.search(r"\w", text):
        raise SubtitleError("the script has no words")
    return text


def _ass_time(ms: int) -> str:
    centis = max(0, round(ms / 10))
    hours, rest = divmod(centis, 360_000)
    minutes, rest = divmod(rest, 6000)
    seconds, centis = divmod(rest, 100)
    return f"{hours}:{minutes:02d}:{seconds:02d}.{centis:02d}"


def _ass_text(text: str) -> str:
    # "{" opens an override block and "\" starts a tag in ASS; neither may reach libass from a user's file.
    cleaned = text.replace("\\", "\u29f5").replace("{", "(").replace("}", ")")
    return r"\N".join(line.strip() for line in cleaned.split("\n"))


def _karaoke_text(cue: Cue) -> str:
    """The cue's words with ``\\kf`` timings (centiseconds from the cue's start), on the cue's own lines."""
    lines = cue.text.split("\n")
    first_line = lines[0].replace(" ", "") if len(lines) > 1 else None
    parts: list[str] = []
    cursor = cue.start_ms
    seen = ""
    line_start = True
    for index, (word, start, end) in enumerate(cue.words):
        start, end = max(start, cursor), max(end, start)
        if start > cursor:
            parts.append(f"{{\\k{round((start - cursor) / 10)}}}")
        wide = unicodedata.east_asian_width(word[:1]) in ("W", "F")
        separator = " " if index and not wide and not line_start else ""
        parts.append(f"{separator}{{\\kf{max(1, round((end - start) / 10))}}}{_ass_text(word)}")
        line_start = False
        cursor = end
        seen += word.replace(" ", "")
        if first_line is not None and seen == first_line:
            parts.append(r"\N")
            first_line = None
            line_start = True
    return "".join(parts)


def write_ass(
    cues: list[Cue], path: Path, *, width: int, height: int, font_name: str, style: CaptionStyle | None = None
) -> None:
    """An ASS file that shows ``cues`` (timeline ms), white on a dark outline, placed and sized by ``style``
    (bottom-centred by default) for ``width``×``height`` (PlayRes equals the frame, so sizes are in output
    pixels). The karaoke style fills each word in yellow as it is said (``\\kf``, from SecondaryColour to
    PrimaryColour)."""
    style = style or CaptionStyle()
    font_size = max(12, round(min(width, height) / 16 * _SCALE.get(style.size, 1.0)))
    outline = max(1, round(font_size / 14))
    margin_v = max(8, round(height / 14))
    margin_h = max(8, round(width / 20))
    alignment = _ALIGNMENT.get(style.position, 2)
    primary = "&H0000FFFF" if style.karaoke else "&H00FFFFFF"  # yellow: the words already said
    header = [
        "[Script Info]",
        "ScriptType: v4.00+",
        f"PlayResX: {width}",
        f"PlayResY: {height}",
        "WrapStyle: 0",
        "ScaledBorderAndShadow: yes",
        "",
        "[V4+ Styles]",
        "Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, Italic, "
        "Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, Alignment, MarginL, "
        "MarginR, MarginV, Encoding",
        # Colours are &HAABBGGRR; bottom-centre is alignment 2 (numpad layout).
        f"Style: Default,{font_name},{font_size},{primary},&H00FFFFFF,&H00000000,&H80000000,1,0,0,0,100,100,0,0,"
        f"1,{outline},{max(1, outline // 2)},{alignment},{margin_h},{margin_h},{margin_v},1",
        "",
        "[Events]",
        "Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text",
    ]
    events = [
        f"Dialogue: 0,{_ass_time(cue.start_ms)},{_ass_time(cue.end_ms)},Default,,0,0,0,,"
        + (_karaoke_text(cue) if style.karaoke and cue.words else _ass_text(cue.text))
        for cue in cues
    ]
    path.write_text("\n".join([*header, *events]) + "\n", encoding="utf-8")
