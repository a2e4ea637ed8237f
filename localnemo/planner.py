"""What a message asks for: English or Chinese text turned into a list of editing steps, deterministically.

The planner only reads words; it neither looks at the draft nor at any file (the agent applies the steps).
A message is split into clauses (at punctuation, "and", "then", "plus", 然后 …, never inside quotes); each
clause is normalised (``localnemo.understand``: numbers in words as digits, mistyped keywords corrected), a
title or text in it is read first, as typed, with or without quotes ("add a title Urban Dreams"), and the
rest of the clause is matched against every other rule; the steps come back in the order they were asked
for, so "cut the pauses, then keep the first 30 seconds" cuts first and trims the result. Whole-message
commands ("undo", "redo", "start over", "help", en and zh) are read by ``command``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

from localnemo.understand import normalise

log = logging.getLogger(__name__)

PauseMode = Literal["normal", "tight", "gentle"]
TrimMode = Literal["keep_first", "keep_last", "drop_first", "drop_last", "keep_range", "drop_range"]
Fit = Literal["blur", "crop", "pad"]
VolumeTarget = Literal["clip", "music"]

ASPECTS: dict[str, tuple[int, int]] = {"9:16": (9, 16), "1:1": (1, 1), "4:5": (4, 5), "16:9": (16, 9)}
MIN_SPEED, MAX_SPEED = 0.25, 4.0


@dataclass(frozen=True)
class Step:
    at: int = field(default=0, kw_only=True)


@dataclass(frozen=True)
class CutPauses(Step):
    mode: PauseMode = "normal"


@dataclass(frozen=True)
class Trim(Step):
    mode: TrimMode
    start_ms: int = 0
    end_ms: int = 0


@dataclass(frozen=True)
class Join(Step):
    pass


@dataclass(frozen=True)
class Slideshow(Step):
    per_image_ms: int | None = None


@dataclass(frozen=True)
class Speed(Step):
    factor: float


@dataclass(frozen=True)
class Volume(Step):
    target: VolumeTarget
    level: float | None = None  # absolute (1 = as recorded)
    factor: float | None = None  # relative


@dataclass(frozen=True)
class Music(Step):
    volume: float | None = None
    duck: bool = True
    explicit_add: bool = True


@dataclass(frozen=True)
class RemoveMusic(Step):
    pass


@dataclass(frozen=True)
class Title(Step):
    text: str
    duration_ms: int | None = None


@dataclass(frozen=True)
class TextOverlay(Step):
    text: str
    start_ms: int | None = None
    end_ms: int | None = None
    at_end: bool = False


@dataclass(frozen=True)
class Captions(Step):
    remove: bool = False
    # Forced alignment of these words instead of recognition ("captions from this script: …").
    script: str | None = None
    position: Literal["bottom", "middle", "top"] | None = None
    size: Literal["small", "medium", "large"] | None = None
    karaoke: bool | None = None

    @property
    def styled(self) -> bool:
        return self.position is not None or self.size is not None or self.karaoke is not None


@dataclass(frozen=True)
class Aspect(Step):
    ratio: str | None = None
    fit: Fit | None = None


@dataclass(frozen=True)
class Fade(Step):
    fade_in_ms: int | None = None
    fade_out_ms: int | None = None


@dataclass(frozen=True)
class Resolution(Step):
    name: str


@dataclass(frozen=True)
class ExportLater(Step):
    """"… then export (720p)": the agent edits and cannot export; the reply says how to ask for it."""

    resolution: str | None = None


@dataclass(frozen=True)
class GenerateFootage(Step):
    pass


@dataclass(frozen=True)
class SpeedOutOfRange(Step):
    factor: float


# -- times ----------------------------------------------------------------------------------------------

_NUM = r"\d+(?:\.\d+)?"
_CLOCK = r"(?:\d{1,2}:)?\d{1,2}:\d{2}(?:\.\d+)?"
_UNIT_SECONDS = r"(?:s|sec|secs|second|seconds|秒钟?)"
_UNIT_MINUTES = r"(?:m|min|mins|minute|minutes|分钟?)"
_UNIT_HOURS = r"(?:h|hr|hrs|hour|hours|小时)"
TIME = (
    rf"(?:{_CLOCK}"
    rf"|{_NUM}\s*{_UNIT_HOURS}(?:\s*(?:and\s+)?{_NUM}\s*{_UNIT_MINUTES})?"
    rf"|{_NUM}\s*{_UNIT_MINUTES}(?:\s*(?:and\s+)?{_NUM}\s*{_UNIT_SECONDS})?(?![a-z])"
    rf"|{_NUM}\s*{_UNIT_SECONDS}(?![a-z]))"
)
_TIME_PART_RE = re.compile(rf"(?P<n>{_NUM})\s*(?P<u>{_UNIT_HOURS}|{_UNIT_MINUTES}|{_UNIT_SECONDS})")


def parse_time(text: str) -> int | None:
    """Milliseconds in "1:30", "0:10.5", "1:02:03", "30s", "2 minutes", "1 min 30 sec", "90秒", "1分30秒"."""
    text = text.strip().lower()
    if re.fullmatch(_CLOCK, text):
        parts = [float(p) for p in text.split(":")]
        seconds = 0.0
        for part in parts:
            seconds = seconds * 60 + part
        return round(seconds * 1000)
    total = 0.0
    found = False
    for match in _TIME_PART_RE.finditer(text):
        value, unit = float(match.group("n")), match.group("u")
        if re.fullmatch(_UNIT_HOURS, unit):
            total += value * 3600
        elif re.fullmatch(_UNIT_MINUTES, unit):
            total += value * 60
        else:
            total += value
        found = True
    if not found:
        try:
            total = float(text)
        except ValueError:
            return None
    return round(total * 1000)


# -- clauses --------------------------------------------------------------------------------------------

_QUOTED_RE = re.compile(r"\"[^\"]*\"|“[^”]*”|「[^」]*」|『[^』]*』|‘[^’]*’")
_SPLIT_RE = re.compile(
    r"[,;!?，；。！？、\n]|\.(?!\d)|\band\s+then\b|\bthen\b|\band\b(?!\s+(?:out\b|\d|a\s+half\b))|\balso\b|\bplus\b"
    r"|\bafter\s+that\b|然后|并且|接着|之后再|再把|还有|同时",
    re.IGNORECASE,
)


# A title or text without quotes runs on over "and" ("add a title Fast and Furious") unless what follows
# starts another request ("add a title Road Trip and make it vertical").
_NAMING_RE = re.compile(r"\b(title|text|words?|label|saying|says|called|named|reading)\b", re.IGNORECASE)
_REQUEST_START_RE = re.compile(
    r"\s*(?:please\s+|also\s+|then\s+)?(?:add|put|insert|make|set|cut|trim|remove|delete|drop|keep|mute|unmute"
    r"|turn|fade|speed|slow|change|crop|export|render|download|lower|raise|increase|decrease|reduce|use|give"
    r"|include|shorten|get|skip|only|just|play|apply|write|show|no|without|music|background|captions?"
    r"|subtitles?|vertical|square|portrait|landscape|half|double|louder|quieter|\d)\b",
    re.IGNORECASE,
)


def clauses(text: str) -> list[tuple[int, str]]:
    """(offset, clause) pieces of a message, never splitting inside quotes."""
    masked = _QUOTED_RE.sub(lambda m: "\0" * len(m.group(0)), text)
    pieces: list[tuple[int, str]] = []
    start = 0
    for match in _SPLIT_RE.finditer(masked):
        if (
            match.group(0).lower() == "and" and _NAMING_RE.search(masked[start : match.start()])
            and not _REQUEST_START_RE.match(masked[match.end() :])
        ):  # fmt: skip
            continue
        if match.start() > start:
            pieces.append((start, text[start : match.start()]))
        start = match.end()
    if start < len(text):
        pieces.append((start, text[start:]))
    return [(offset, piece) for offset, piece in pieces if piece.strip()]


# -- rules ----------------------------------------------------------------------------------------------

_I = re.IGNORECASE
# Footage from words: "generate/create a video …", "make a video of/about/showing …", "text to video".
# "Make a video from my clips" is editing, not generating.
_GENERATE_RE = re.compile(
    r"\b(generate|create|produce)\b.{0,40}?\b(videos?|clips?|footage|movies?|films?|animations?)\b"
    r"|\bmake\b.{0,30}?\b(video|clip|footage|movie|film|animation)\b.{0,10}?\b(of|about|showing)\b"
    r"|\btext[- ]to[- ]video\b|生成.{0,10}?(视频|影片|短片|画面|素材)",
    _I,
)
_PAUSE_RE = re.compile(
    r"\btighten\s+(?:it|this|the video)\s+up\b"
    r"|\b(pauses?|silences?|silent (?:parts?|bits?|gaps?|sections?|moments?)|dead air|jump ?cuts?|ums? and ahs?)\b"
    r"|停顿|空白(?:部分|片段)?|沉默|气口|(?:去掉|去除|删除|删掉|剪掉|剪去|去)\s*静音(?:部分|片段|段)?",
    _I,
)
_TIGHT_RE = re.compile(r"\b(tight(?:er|ly|en)?|aggressive(?:ly)?|snappy|all|every|short)\b|紧凑|干脆|彻底|所有", _I)
_GENTLE_RE = re.compile(
    r"\b(gentle|gently|light(?:ly)?|loose(?:ly)?|natural|subtle|long(?:er)?|only the long)\b|轻微|自然|温和|长", _I
)
_MUSIC_RE = re.compile(r"\b(music|bgm|soundtrack|background track)\b|音乐|配乐|背景乐", _I)
_MUSIC_REMOVE_RE = re.compile(
    r"\b(remove|delete|drop|take out|get rid of|no|without|stop|turn off|switch off|kill|lose)\b.{0,20}?"
    r"\b(music|bgm|soundtrack)\b"
    r"|(去掉|去除|删除|删掉|不要|取消)\s*(背景)?(音乐|配乐)",
    _I,
)
_ADD_RE = re.compile(r"\b(add|put|use|with|include|insert|give|want|need)\b|加|添加|配上|来点|放|使用|用", _I)
_ADD_VERB_RE = re.compile(r"\b(add|put|include|insert)\b|添加|配上|来点|加(?!大|快)", _I)
_SOME_MUSIC_RE = re.compile(r"\b(background music|some (?:\w+ )?music|a soundtrack|bgm)\b|背景音乐", _I)
_MUSIC_QUIETER_RE = re.compile(
    r"\b(quieter|softer|lower|turn\s+(?:it\s+|the\s+\w+\s+)?down|reduce|decrease|too\s+(?:loud|much|noisy))\b"
    r"|小声|调小|降低|轻一点|小一点|小点|低一点|低点|太大|太吵|太响",
    _I,
)
_MUSIC_LOUDER_RE = re.compile(
    r"\b(louder|turn\s+(?:it\s+|the\s+\w+\s+)?up|boost|raise|increase|too\s+(?:quiet|soft|low))\b"
    r"|大声|调大|提高|响一点|大一点|大点|太小|太轻",
    _I,
)
_NO_DUCK_RE = re.compile(r"\b(no|without|don'?t|do not)\s+(duck|ducking|lower(?:ing)?)\b|不要压低|不要闪避", _I)
_PERCENT_RE = re.compile(r"(\d{1,3}(?:\.\d+)?)\s*%")
_MUTE_RE = re.compile(
    r"\bmute\b|\b(remove|turn off|kill|drop|no|cut)\s+(the\s+)?(original\s+)?(sound|audio|voice)\b"
    r"|\bwithout\s+(the\s+)?(sound|audio)\b|(?<!去掉)(?<!去除)(?<!删除)(?<!剪掉)(?<!删掉)(?<!去)静音(?!部分|片段|段)"
    r"|关掉声音|关闭声音|去掉原声|去除原声|不要声音|消音",
    _I,
)
_UNMUTE_RE = re.compile(r"\bunmute\b|\brestore\s+(the\s+)?(sound|audio)\b|取消静音|恢复声音|恢复原声", _I)
_LOUDER_RE = re.compile(
    r"\b(louder|turn\s+(?:it\s+|the\s+\w+\s+)?up|boost|raise|increase)\b|大声|调大|提高音量|响一点", _I
)
_QUIETER_RE = re.compile(
    r"\b(quieter|softer|lower|turn\s+(?:it\s+|the\s+\w+\s+)?down|reduce|decrease)\b|小声|调小|降低音量|轻一点", _I
)
_VOLUME_WORD_RE = re.compile(r"\b(volume|level|loud(?:ness)?|at)\b|音量", _I)
_TITLE_QUOTED_RE = re.compile(
    r"\btitle\b[^\"“「『]{0,20}[\"“「『](?P<text>[^\"”」』]+)[\"”」』]|\btitle\s+['‘](?P<text2>[^'’]+)['’]", _I
)
_TITLE_COLON_RE = re.compile(r"\btitle\s*[:：]\s*(?P<text>.+)$", _I)
_TITLE_ZH_RE = re.compile(r"标题\s*(?:为|是|叫|[:：])?\s*[\"“「『]?(?P<text>[^\"”」』，,。]+)")
_TEXT_RE = re.compile(
    r"\b(text|overlay|label|lower[- ]third|caption text|words?|say|says|saying|write)\b[^\"“「『]{0,25}"
    r"[\"“「『](?P<text>[^\"”」』]+)[\"”」』]"
    r"|(文字|文本|字样)\s*[\"“「『](?P<zh>[^\"”」』]+)[\"”」』]",
    _I,
)
_CAPTIONS_RE = re.compile(r"\b(captions?|subtitles?|subs|srt|vtt|transcri\w*)\b|字幕", _I)
_REMOVE_RE = re.compile(
    r"\b(remove|delete|drop|no|without|take off|turn off|hide)\b|去掉|去除|删除|删掉|不要|关闭|隐藏", _I
)
_ASPECT_RE = re.compile(r"(?<![\d:])(9:16|1:1|4:5|16:9)(?![\d:])|(?<!\d)(9x16|16x9|4x5)(?!\d)")
_ASPECT_WORDS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b(vertical|portrait|tiktok|reels?|shorts|stor(?:y|ies))\b|竖屏|竖版|竖向|抖音", _I), "9:16"),
    (re.compile(r"\b(square)\b|正方形|方形|方屏", _I), "1:1"),
    (re.compile(r"\b(landscape|widescreen|horizontal|youtube)\b|横屏|横版|宽屏", _I), "16:9"),
)
_FIT_WORDS: tuple[tuple[re.Pattern[str], Fit], ...] = (
    (re.compile(r"\bcrop(?:ped|ping)?\b|\bfill\b|\bzoom(?:ed)? in\b|裁剪|裁切|填满|铺满", _I), "crop"),
    (re.compile(r"\bblur(?:red|ry)?\b|模糊", _I), "blur"),
    (re.compile(r"\b(letterbox(?:ed)?|pillarbox(?:ed)?|black bars?|pad(?:ded)?|bars)\b|黑边", _I), "pad"),
)
_FADE_RE = re.compile(r"\bfade[sd]?\b|\bfading\b|淡入|淡出", _I)
_FADE_IN_RE = re.compile(r"\bfade[sd]?\s*[- ]?in\b|\bfading in\b|淡入", _I)
_FADE_OUT_RE = re.compile(r"\bfade[sd]?\s*[- ]?(?:in\s*[- ]?)?(?:and\s+)?out\b|\bfading out\b|淡出|in-out", _I)
_SECONDS_RE = re.compile(rf"(?P<t>{TIME})", _I)
_RESOLUTION_RE = re.compile(r"(?<![A-Za-z0-9])(720p|1080p|1440p|2160p|4k|2k)(?![A-Za-z0-9])", _I)
_SPEED_X_RE = re.compile(r"(?<![\w.])(?P<n>\d+(?:\.\d+)?)\s*(?:x|×)(?![\w])|(?P<zh>\d+(?:\.\d+)?)\s*倍速?", _I)
_SPEED_WORDS: tuple[tuple[re.Pattern[str], float], ...] = (
    (re.compile(
        r"\b(normal|regular|original|usual|real[- ]?time)\s+(speed|playback)\b|\bspeed\b.{0,15}\bnormal\b"
        r"|正常速度|原速|恢复速度|速度恢复", _I), 1.0),
    (re.compile(r"\b(double speed|twice as fast)\b|两倍速|二倍速", _I), 2.0),
    (re.compile(r"\b(half speed|slow[- ]?mo(?:tion)?|slowmo)\b|慢动作|慢放|半速", _I), 0.5),
    (re.compile(r"\b(speed (?:it |this |the video )?up|faster|fast forward)\b|加速|加快|快进|快一点", _I), 1.5),
    (re.compile(r"\b(slow (?:it |this |the video )?down|slower)\b|减速|放慢|慢一点", _I), 0.75),
)
_SPEED_CONTEXT_RE = re.compile(r"\b(speed|faster|slower|fast|slow|play|playback|tempo)\b|速|倍|播放", _I)
_JOIN_RE = re.compile(
    r"\b(join|merge|combine|stitch|concatenate|put (?:them )?together|one after (?:the )?another|back to back)\b"
    r"|合并|拼接|连起来|串起来|按顺序",
    _I,
)
_SLIDESHOW_RE = re.compile(
    r"\bslide ?show\b|\b(?:each|every|per)\s+(?:image|photo|picture|pic|slide)\b|幻灯片|每张(?:图|图片|照片)", _I
)
_DROP_VERB_RE = re.compile(
    r"\b(cut|remove|delete|drop|skip|trim|chop|lose|get rid of|take out)\b(?!\s+(?:it\s+)?(?:down\s+)?to\b)"
    r"|去掉|去除|删除|删掉|剪掉|剪去|砍掉|裁掉|不要",
    _I,
)
# "Cut from 0:10 to 0:45" usually means "make a clip of it"; taking a span out needs a plainer verb.
_RANGE_DROP_RE = re.compile(
    r"\b(remove|delete|drop|skip|cut out|get rid of|take out)\b|去掉|去除|删除|删掉|剪掉|不要", _I
)
_FIRST_LAST_RE = re.compile(
    rf"\b(?P<which>first|opening|last|final|closing)\s+(?P<t>{TIME})"
    rf"|(?P<zwhich>前|最后|后|开头|结尾|末尾)\s*(?P<zt>{TIME})",
    _I,
)
_RANGE_RE = re.compile(
    rf"(?:\bfrom\b|\bbetween\b|从)\s*(?P<a>{TIME}|{_NUM})\s*(?:\bto\b|\buntil\b|\btill\b|\band\b|-|–|~|到|至)\s*(?P<b>{TIME}|{_NUM})"
    rf"|(?P<ca>{_CLOCK})\s*(?:-|–|~|\bto\b|到|至)\s*(?P<cb>{_CLOCK})"
    rf"|(?P<ta>{TIME})\s*(?:-|–|~|\bto\b|\buntil\b|到|至)\s*(?P<tb>{TIME})",
    _I,
)
_LENGTH_RE = re.compile(
    rf"\b(?:shorten|trim|cut)\s+(?:it\s+|the video\s+|this\s+)?(?:down\s+)?to\s+(?:under\s+|at most\s+)?(?P<t>{TIME})"
    rf"|\bmake\s+(?:it|the video|this)\s+(?:under\s+|at most\s+)?(?P<t2>{TIME})"
    rf"|(?:缩短到|剪到|控制在)\s*(?P<zt>{TIME})|剪成\s*(?P<zt2>{TIME})",
    _I,
)
# "trim the beginning by 3 seconds", "cut 3 seconds off the end".
_BY_RE = re.compile(
    rf"\b(?:the\s+)?(?P<which>beginning|start|opening|front|end|ending)\s+by\s+(?P<t>{TIME})"
    rf"|(?P<t2>{TIME})\s+(?:off|from)\s+(?:the\s+)?(?P<which2>beginning|start|opening|front|end|ending)\b",
    _I,
)
_AT_TIME_RE = re.compile(rf"\b(?:at|from)\s+(?P<t>{TIME})|在\s*(?P<zt>{TIME})", _I)
_AT_END_RE = re.compile(r"\b(at the end|at the ending|ending)\b|结尾|最后", _I)
_AT_START_RE = re.compile(r"\b(at the (?:start|beginning)|opening)\b|开头|开始", _I)


def _duration(clause: str) -> int | None:
    match = _SECONDS_RE.search(clause)
    return parse_time(match.group("t")) if match else None


def _pauses(clause: str, message: str) -> list[Step]:
    if not _PAUSE_RE.search(clause):
        return []
    if re.search(r"\b(keep|don'?t cut|do not cut|leave)\b.{0,15}\bpauses?\b|保留停顿", clause, _I):
        return []
    mode: PauseMode = "normal"
    # "cut the pauses, tight": the word that says how may sit in a clause of its own.
    for text in (clause, message):
        if _GENTLE_RE.search(text):
            mode = "gentle"
            break
        if _TIGHT_RE.search(text):
            mode = "tight"
            break
    return [CutPauses(mode)]


def _music(clause: str, message: str) -> list[Step]:
    """Music is added only when asked for ("add music", "some background music"); a clause that complains
    about it ("too loud", "小一点") sets the volume of the music there is, and one that only mentions it
    ("i don't like the music", "change the music") is not understood rather than read as "add music"."""
    if not _MUSIC_RE.search(clause):
        return []
    if _MUSIC_REMOVE_RE.search(clause):
        return [RemoveMusic()]
    percent = _PERCENT_RE.search(clause)
    volume = min(100.0, float(percent.group(1))) / 100 if percent else None
    if re.search(r"\bmute\b|静音", clause, _I):
        return [Volume("music", level=0.0)]
    adding = bool(_ADD_RE.search(clause)) or bool(_SOME_MUSIC_RE.search(clause))
    if not adding or not _ADD_VERB_RE.search(clause):
        # "lower the music to 10%" is the level asked for; "the music is too loud" lowers it by a step.
        if volume is not None and not adding:
            return [Volume("music", level=volume)]
        if _MUSIC_LOUDER_RE.search(clause):
            return [Volume("music", factor=1.5)]
        if _MUSIC_QUIETER_RE.search(clause):
            return [Volume("music", factor=0.6)]
    if not adding:
        return []
    return [Music(volume=volume, duck=not _NO_DUCK_RE.search(message), explicit_add=True)]


_SOUNDISH_RE = re.compile(r"\b(volume|sound|audio|voice|loud\w*|quiet\w*|mute)\b|音量|声音|原声", _I)


def _volume(clause: str) -> list[Step]:
    if _MUSIC_RE.search(clause) or _PAUSE_RE.search(clause):
        return []
    if re.search(r"\b(play(?:back|ing)?|speed|tempo)\b|播放|速度", clause, _I) and not _SOUNDISH_RE.search(clause):
        return []  # "play at 125%" is the speed
    if _UNMUTE_RE.search(clause):
        return [Volume("clip", level=1.0)]
    if _MUTE_RE.search(clause):
        return [Volume("clip", level=0.0)]
    percent = _PERCENT_RE.search(clause)
    if percent and _VOLUME_WORD_RE.search(clause):
        return [Volume("clip", level=min(200.0, float(percent.group(1))) / 100)]
    about_sound = re.search(r"\b(volume|sound|audio|voice)\b|音量|声音|原声", clause, _I) is not None
    if about_sound or re.search(r"\b(louder|turn it up)\b|大声", clause, _I):
        if _LOUDER_RE.search(clause):
            return [Volume("clip", factor=1.5)]
    if about_sound or re.search(r"\b(quieter|softer|turn it down)\b|小声", clause, _I):
        if _QUIETER_RE.search(clause):
            return [Volume("clip", factor=0.6)]
    return []


# Titles and text without quotes: "add a title Urban Dreams", "title: Urban Dreams at the start", "set the
# title to Urban Dreams", "add text Subscribe at 0:05", "text: Hello", "put Subscribe at the end", "标题 城市之夜".
# The words after the keyword are the text, up to where the clause says when ("at the end", "for 5 s").
_LEAD = r"^\s*(?:(?:please|pls|ok|okay|now|can you|could you|i want to|i'd like to|let's)\s+)*"
_ARTICLE = r"(?:(?:a|an|the|my|our|this|some)\s+)?"
_JOINING = (
    r"(?:\s*(?:[:：=\-–]|\bit\b|\bto\b|\bas\b|\bthat\s+says\b|\bwhich\s+says\b|\bsaying\b|\breading\b|\bcalled\b"
    r"|\bnamed\b|\bof\b|\bis\b|\bshould\s+be\b|\bwith\s+the\s+(?:text|words?)\b|\bwith\b))*"
)
_TITLE_BARE_RE = re.compile(
    _LEAD + r"(?:(?:add|put|insert|make|set|use|give it|change|create|show|write|need|want)\s+)?" + _ARTICLE
    + r"(?:(?:opening|main|big|intro|video|new)\s+)?title(?:\s+(?:card|screen|text))?\b" + _JOINING
    + r"\s*(?P<text>\S.*?)\s*$",
    _I,
)
_TEXT_BARE_RE = re.compile(
    _LEAD + r"(?:(?:add|put|insert|write|show|display|place|overlay|type)\s+)?" + _ARTICLE
    + r"(?:text|words?|caption text|label|overlay|lower[- ]third)\b" + _JOINING + r"\s*(?P<text>\S.*?)\s*$",
    _I,
)
_SAYING = r"\b(?:saying|that says|which says|reading|called|named)\s+(?P<text>\S.*?)\s*$"
_TITLE_SAYING_RE = re.compile(r"\btitle\b.*?" + _SAYING, _I)
_TEXT_SAYING_RE = re.compile(r"\b(?:text|words?|label|caption text)\b.*?" + _SAYING, _I)
_TEXT_ZH_RE = re.compile(r"(?:文字|文本|字样)\s*[:：]?\s*(?P<zh>[^\s\"“「『，,。][^，,。]*)")
# Only when nothing else in the clause was understood: "put Subscribe at the end", "show Hi at 10 seconds".
_PLACE_RE = re.compile(
    _LEAD + r"(?:put|write|show|display|place|add|type|insert)\s+(?P<text>\S.*?)\s+"
    rf"(?=(?:at|on|in|from|near|towards?)\s+(?:the\s+)?(?:very\s+)?(?:end|ending|start|beginning|close|{TIME})\b)",
    _I,
)
_WHEN_TAIL_RE = re.compile(
    rf"\s*(?:(?:\b(?:at|in|on|near|towards?)\s+(?:the\s+)?(?:very\s+)?(?:start|beginning|opening|top|intro|end|ending"
    rf"|close|bottom|middle|centre|center)\b|\bat\s+{TIME}|\bfrom\s+(?:{TIME}|{_NUM})|\bfor\s+{TIME}|\bbetween\b"
    rf").*$)|\s+(?:please|pls|thanks)$|[.!。！]+$"
    r"|\s*(?:在)?(?:开头|结尾|最后|末尾|开始)(?:处|的时候)?$",
    _I,
)
# "make the title bigger" is about the look, which is not offered: not a title called "bigger".
_NOT_A_TEXT = frozenset(
    """it this that them everything bigger smaller larger longer shorter bold red white black yellow blue
    centered center disappear last stay go away text words title a title some text the text""".split()
)


def _clean_text(text: str) -> str:
    text = _WHEN_TAIL_RE.sub("", text).strip()
    text = text.strip("\"'“”「」『』‘’").strip()
    if not text or text.lower() in _NOT_A_TEXT or re.fullmatch(rf"{TIME}|{_NUM}", text, _I):
        return ""
    return text


def _as_typed(clause: str, raw: str, start: int, text: str) -> str:
    """``text`` (found at ``start`` of the normalised clause) as it was typed: numbers and words untouched."""
    if text in raw:
        return text
    if start > 0 and clause[start - 1] in "\"“「『‘'":
        return text
    words, typed = clause.split(), raw.split()
    if len(words) != len(typed) or not text:
        return text
    first, count = len(clause[:start].split()), len(text.split())
    original = " ".join(typed[first : first + count]).strip("\"'“”「」『』‘’")
    original = re.sub(r"[.!。！]+$", "", original)
    return original or text


def _find_title(clause: str) -> tuple[str, int, int] | None:
    """(text, start, end) of a title the clause asks for."""
    match = _TITLE_QUOTED_RE.search(clause)
    if match is not None:
        group = "text" if match.group("text") else "text2"
        return match.group(group).strip(), match.start(group), match.end(group)
    for pattern in (_TITLE_SAYING_RE, _TITLE_BARE_RE, _TITLE_COLON_RE, _TITLE_ZH_RE):
        match = pattern.search(clause)
        if match is not None:
            text = _clean_text(match.group("text"))
            if text:
                start = clause.index(text, match.start("text")) if text in clause else match.start("text")
                return text, start, start + len(text)
    return None


def _find_text(clause: str, *, placed: bool = False) -> tuple[str, int, int] | None:
    match = _TEXT_RE.search(clause)
    if match is not None:
        group = "text" if match.group("text") else "zh"
        if match.group(group):
            return match.group(group).strip(), match.start(group), match.end(group)
    for pattern in (_PLACE_RE,) if placed else (_TEXT_SAYING_RE, _TEXT_BARE_RE, _TEXT_ZH_RE):
        match = pattern.search(clause)
        if match is not None:
            group = "zh" if pattern is _TEXT_ZH_RE else "text"
            text = _clean_text(match.group(group))
            if text:
                start = clause.index(text, match.start(group)) if text in clause else match.start(group)
                return text, start, start + len(text)
    return None


def _quoted_title(clause: str) -> str | None:
    found = _find_title(clause)
    return found[0] if found is not None else None


def _title(clause: str, raw: str) -> tuple[list[Step], str]:
    """The title step and the clause without its text (so that "Vertical Life" is not a canvas)."""
    found = _find_title(clause)
    if found is None:
        return [], clause
    text, start, end = found
    rest = clause[:start] + " " * (end - start) + clause[end:]
    match = re.search(rf"\bfor\s+(?P<t>{TIME})|(?P<zt>{TIME})", rest, _I)
    duration = parse_time(match.group("t") or match.group("zt")) if match else None
    title = Title(_as_typed(clause, raw, start, text), duration_ms=duration, at=start)
    return [title], re.sub(r"\btitle\b|标题", lambda m: " " * len(m.group(0)), rest, flags=_I)


def _text(clause: str, raw: str, *, placed: bool = False) -> tuple[list[Step], str]:
    found = _find_text(clause, placed=placed)
    if found is None:
        return [], clause
    text, start, end = found
    text = _as_typed(clause, raw, start, text)
    rest = clause[:start] + " " * (end - start) + clause[end:]
    masked = _mask_aspects(rest)
    step: TextOverlay = TextOverlay(text)
    span = _RANGE_RE.search(masked)
    at = _AT_TIME_RE.search(masked)
    if span is not None:
        start_text, end_text = _with_unit(
            span.group("a") or span.group("ca") or span.group("ta"),
            span.group("b") or span.group("cb") or span.group("tb"),
        )
        begin, finish = parse_time(start_text), parse_time(end_text)
        if begin is not None and finish is not None and finish > begin:
            step = TextOverlay(text, start_ms=begin, end_ms=finish)
    elif at is not None and (begin := parse_time(at.group("t") or at.group("zt"))) is not None:
        step = TextOverlay(text, start_ms=begin, end_ms=begin + 3000)
    elif _AT_END_RE.search(masked):
        step = TextOverlay(text, at_end=True)
    elif _AT_START_RE.search(masked):
        step = TextOverlay(text, start_ms=0, end_ms=3000)
    # Nothing else in the clause is a request: "at 0:05" is the text's time, not a trim.
    return [replace(step, at=start)], ""


_CAPTION_TOP_RE = re.compile(r"\b(top|upper)\b|顶部|上方|上面", _I)
_CAPTION_MIDDLE_RE = re.compile(r"\b(middle|cent(?:er|re)d?)\b|中间|中央|居中", _I)
_CAPTION_BOTTOM_RE = re.compile(r"\b(bottom|lower)\b|底部|下方|下面", _I)
_CAPTION_LARGE_RE = re.compile(r"\b(big|bigger|large|larger|huge)\b|大一?点|大字|放大", _I)
_CAPTION_SMALL_RE = re.compile(r"\b(small|smaller|tiny)\b|小一?点|小字|缩小", _I)
_CAPTION_MEDIUM_RE = re.compile(r"\b(normal|medium|regular) ?(size|sized)?\b", _I)
_KARAOKE_RE = re.compile(r"\bkaraoke\b|\bword[- ]by[- ]word\b|\bhighlight(?:ed|ing)?\b|卡拉OK|逐字", _I)
_PLAIN_RE = re.compile(r"\b(plain|simple|no highlight(?:ing)?)\b", _I)
_SCRIPT_RE = re.compile(
    r"\b(?:captions?|subtitles?|subs)\b[^:：]{0,30}?\b(?:from|using|with|of|for)\b[^:：]{0,20}?"
    r"\b(?:script|transcript|text)\b\s*[:：]\s*(?P<script>\S.*)$"
    r"|(?:稿子|脚本|文稿|台词)[^:：]{0,10}?字幕\s*[:：]\s*(?P<zh>\S.*)$",
    _I | re.DOTALL,
)


def _captions(clause: str) -> list[Step]:
    if not _CAPTIONS_RE.search(clause) or (_TEXT_RE.search(clause) and not _KARAOKE_RE.search(clause)):
        return []
    if _REMOVE_RE.search(clause):
        return [Captions(remove=True)]
    position: Literal["bottom", "middle", "top"] | None = None
    if _CAPTION_TOP_RE.search(clause):
        position = "top"
    elif _CAPTION_MIDDLE_RE.search(clause):
        position = "middle"
    elif _CAPTION_BOTTOM_RE.search(clause):
        position = "bottom"
    size: Literal["small", "medium", "large"] | None = None
    if _CAPTION_LARGE_RE.search(clause):
        size = "large"
    elif _CAPTION_SMALL_RE.search(clause):
        size = "small"
    elif _CAPTION_MEDIUM_RE.search(clause):
        size = "medium"
    karaoke = True if _KARAOKE_RE.search(clause) else False if _PLAIN_RE.search(clause) else None
    return [Captions(position=position, size=size, karaoke=karaoke)]


def script_request(text: str) -> tuple[str, str] | None:
    """("the rest of the message", "the script") for "captions from this script: …", else None."""
    match = _SCRIPT_RE.search(text)
    if match is None:
        return None
    script = (match.group("script") or match.group("zh") or "").strip()
    return (text[: match.start()], script) if script else None


def _aspect(clause: str) -> list[Step]:
    ratio: str | None = None
    match = _ASPECT_RE.search(clause)
    if match is not None:
        ratio = (match.group(1) or match.group(2)).replace("x", ":")
    else:
        for pattern, value in _ASPECT_WORDS:
            if pattern.search(clause):
                ratio = value
                break
    fit: Fit | None = None
    for pattern, value in _FIT_WORDS:
        if pattern.search(clause):
            fit = value
            break
    if ratio is None and fit is not None and (_FIRST_LAST_RE.search(clause) or _RANGE_RE.search(clause)):
        # "crop the first 5 seconds" is about time, not about the framing.
        return []
    if ratio is None and fit is None:
        return []
    return [Aspect(ratio, fit)]


def _fade(clause: str) -> list[Step]:
    if not _FADE_RE.search(clause):
        return []
    wants_in = bool(_FADE_IN_RE.search(clause))
    wants_out = bool(_FADE_OUT_RE.search(clause))
    if not wants_in and not wants_out:
        wants_in = wants_out = True
    duration = _duration(clause) or 1000
    duration = max(100, min(duration, 10_000))
    return [Fade(fade_in_ms=duration if wants_in else None, fade_out_ms=duration if wants_out else None)]


_EXPORT_RE = re.compile(r"\b(export|download|render|save)\b|导出|下载|渲染", _I)


def _resolution(clause: str) -> list[Step]:
    match = _RESOLUTION_RE.search(clause)
    name = None if match is None else match.group(1).lower()
    name = {"2160p": "4k", "2k": "1440p"}.get(name, name) if name is not None else None
    steps: list[Step] = [] if name is None else [Resolution(name)]
    if _EXPORT_RE.search(clause):
        # "… then export 720p": the size is kept for the export, which the user still has to ask for.
        steps.append(ExportLater(name))
    return steps


def _speed(clause: str) -> list[Step]:
    factor: float | None = None
    match = _SPEED_X_RE.search(clause)
    if match is not None and (match.group("n") is not None or _SPEED_CONTEXT_RE.search(clause)):
        factor = float(match.group("n") or match.group("zh"))
        if match.group("zh") is not None and not re.search(r"倍速|速度|播放|加速|放慢|变快|变慢|快|慢", clause):
            factor = None
        elif factor == 1 and re.search(r"(?:加快|快|提速|提高)\s*1倍", clause):
            # "快一倍" is faster by the speed it has: twice as fast.
            factor = 2.0
    if factor is None and _SPEED_CONTEXT_RE.search(clause):
        # "speed it up two times" (numbers are digits by now); "play at 125%", "80% speed" (not "by 50%").
        times = re.search(r"(?<![\w.])(\d+(?:\.\d+)?)\s*times\b", clause, _I)
        percent = re.search(r"(?<!\bby\s)(?<![\w.])(\d{1,3}(?:\.\d+)?)\s*%", clause, _I)
        if times is not None:
            factor = float(times.group(1))
        elif percent is not None and not _SOUNDISH_RE.search(clause):
            factor = float(percent.group(1)) / 100
    if factor is None:
        for pattern, value in _SPEED_WORDS:
            if pattern.search(clause):
                factor = value
                break
    if factor is None:
        return []
    if not MIN_SPEED <= factor <= MAX_SPEED:
        return [SpeedOutOfRange(factor)]
    return [Speed(factor)]


def _mask_aspects(clause: str) -> str:
    # "9:16" reads like a time (9 min 16 s) to the time patterns.
    return _ASPECT_RE.sub(lambda m: " " * len(m.group(0)), clause)


def _with_unit(start_text: str, end_text: str) -> tuple[str, str]:
    """Bare numbers in a range ("from 10 to 45") take the other end's unit, else seconds."""
    units = [re.search(r"[a-z秒分时钟]+$", text.strip(), _I) for text in (start_text, end_text)]
    unit = next((u.group(0) for u in units if u is not None), "s")
    fixed = [text if re.search(r"[:a-z秒分时钟]", text, _I) else text.strip() + unit for text in (start_text, end_text)]
    return fixed[0], fixed[1]


def _trim(clause: str) -> list[Step]:
    if _FADE_RE.search(clause):
        return []
    if _SLIDESHOW_RE.search(clause):
        return []
    clause = _mask_aspects(clause)
    # "seconds 10 to 20", "5 through 8": a range as the other forms read it.
    clause = re.sub(
        rf"\bseconds?\s+({_NUM})\s+(?:to|through|thru|till|until|-)\s+({_NUM})\b(?!\s*[a-z:])",
        lambda m: f"from {m.group(1)}s to {m.group(2)}s".ljust(len(m.group(0))), clause, flags=_I,
    )  # fmt: skip
    clause = re.sub(r"\b(through|thru)\b", lambda m: "to".ljust(len(m.group(0))), clause, flags=_I)
    steps: list[Step] = []
    by = _BY_RE.search(clause)
    if by is not None and (length := parse_time(by.group("t") or by.group("t2") or "")):
        which = (by.group("which") or by.group("which2") or "").lower()
        side: TrimMode = "drop_first" if which in ("beginning", "start", "opening", "front") else "drop_last"
        return [Trim(side, start_ms=0, end_ms=length, at=by.start())]
    drop = bool(_DROP_VERB_RE.search(clause)) and not re.search(r"\b(keep|only|just)\b|保留|只要|只留", clause, _I)
    for match in _FIRST_LAST_RE.finditer(clause):
        which = (match.group("which") or match.group("zwhich") or "").lower()
        length = parse_time(match.group("t") or match.group("zt") or "")
        if length is None or length <= 0:
            continue
        first = which in ("first", "opening", "beginning", "前", "开头")
        mode: TrimMode
        if first:
            mode = "drop_first" if drop else "keep_first"
        else:
            mode = "drop_last" if drop else "keep_last"
        steps.append(Trim(mode, start_ms=0, end_ms=length, at=match.start()))
    if steps:
        return steps
    for match in _RANGE_RE.finditer(clause):
        start_text = match.group("a") or match.group("ca") or match.group("ta")
        end_text = match.group("b") or match.group("cb") or match.group("tb")
        if start_text is None or end_text is None:
            continue
        start_text, end_text = _with_unit(start_text, end_text)
        start, end = parse_time(start_text), parse_time(end_text)
        if start is None or end is None or end <= start:
            continue
        dropping = bool(_RANGE_DROP_RE.search(clause))
        steps.append(Trim("drop_range" if dropping else "keep_range", start_ms=start, end_ms=end, at=match.start()))
    if steps:
        return steps
    wanted = _LENGTH_RE.search(clause)
    if wanted is not None:
        length = parse_time(wanted.group("t") or wanted.group("t2") or wanted.group("zt") or wanted.group("zt2") or "")
        if length:
            return [Trim("keep_first", start_ms=0, end_ms=length, at=wanted.start())]
    return []


def _join(clause: str) -> list[Step]:
    return [Join()] if _JOIN_RE.search(clause) else []


def _slideshow(clause: str, message: str) -> list[Step]:
    if not _SLIDESHOW_RE.search(clause):
        return []
    return [Slideshow(per_image_ms=_duration(clause) or _duration(message))]


_Rule = Callable[[str, str], list[Step]]


def _clause_only(rule: Callable[[str], list[Step]]) -> _Rule:
    return lambda clause, _message: rule(clause)


_RULES: tuple[_Rule, ...] = (
    _pauses,
    _clause_only(_trim),
    _clause_only(_join),
    _slideshow,
    _clause_only(_speed),
    _music,
    _clause_only(_volume),
    _clause_only(_captions),
    _clause_only(_aspect),
    _clause_only(_fade),
    _clause_only(_resolution),
)
# Asked once however many clauses mention them ("slideshow, 4 seconds per image").
_ONCE = (CutPauses, Join, Slideshow, ExportLater)  # fmt: skip


# -- whole-message commands --------------------------------------------------------------------------------

Command = Literal["undo", "redo", "start_over", "help"]
_PLEASE = r"^\s*(?:(?:please|pls|ok|okay|hey|can you|could you|just)\s+)*"
_END = r"\s*(?:please|pls|thanks|thank you)?\s*[.!?。！？]*\s*$"
_COMMANDS: tuple[tuple[re.Pattern[str], Command], ...] = (
    (re.compile(
        _PLEASE + r"(?:undo(?:\s+(?:that|it|this|the last (?:change|edit|step|one)|my last (?:change|edit)))?"
        r"|revert(?:\s+(?:that|it|the last (?:change|edit)))?|go back(?:\s+(?:one step|a step))?|take (?:that|it) back"
        r"|oops|ctrl\s*\+?\s*z|put it back the way it was|that'?s wrong|cancel the last (?:change|edit))" + _END
        + r"|^\s*(?:撤销|撤消|撤回|返回上一步|回到上一步|取消上一步|上一步)(?:一下|上一步|刚才的修改)?"
        r"[。！!]*\s*$", _I), "undo"),
    (re.compile(
        _PLEASE + r"(?:redo(?:\s+(?:that|it|the last (?:change|edit)))?|undo the undo|ctrl\s*\+?\s*y"
        r"|bring (?:it|that) back|put it back again)" + _END
        + r"|^\s*(?:重做|恢复撤销|还原撤销)(?:一下)?[。！!]*\s*$", _I), "redo"),
    (re.compile(
        _PLEASE + r"(?:start (?:over|again|from scratch)|begin again"
        r"|reset(?:\s+(?:it|everything|all|the (?:edits|video)))?"
        r"|undo (?:everything|all(?: the)? (?:edits|changes)?)|remove all (?:the )?(?:edits|changes)"
        r"|(?:go )?back to the original|from scratch)" + _END
        + r"|^\s*(?:重新开始|从头开始|重来|全部撤销|撤销全部|恢复原样|还原|恢复原始视频)[。！!]*\s*$", _I),
     "start_over"),
    (re.compile(
        _PLEASE + r"(?:help(?: me)?|\?+|what can (?:you|i) do(?: here)?|what do you do|what can i (?:say|ask|type)"
        r"|(?:show (?:me )?)?(?:the )?commands|how does (?:this|it) work|what do you understand|options|menu"
        r"|how (?:do i|to) use (?:this|you|it)|what are (?:the|your) (?:options|commands|features)|features)" + _END
        + r"|^\s*(?:帮助|帮忙|你能做什么|你会什么|你可以做什么|能做什么|怎么用|有哪些功能|功能|命令)"
        r"[？?。！!]*\s*$", _I),
     "help"),
)  # fmt: skip


def command(text: str) -> Command | None:
    """A message that is only "undo", "redo", "start over" or "help" (en or zh), else None."""
    fixed = normalise(text)
    for pattern, name in _COMMANDS:
        if pattern.search(fixed):
            return name
    return None


def wants_footage(text: str) -> bool:
    return _GENERATE_RE.search(text) is not None


_SOUND_OF_CLIP_RE = re.compile(r"\b(voice|sound|audio|clip|video|original|speech)\b|原声|声音|人声|视频|说话", _I)


def plan(text: str) -> list[Step]:
    """The steps a message asks for, in the order it asks for them (empty: nothing this planner knows)."""
    scripted = script_request(text)
    if scripted is not None:
        # The script is words to show, not requests: it is never read as one.
        before, script = scripted
        return [*plan(before), Captions(script=script, at=len(before))]
    message = normalise(text)
    steps: list[tuple[int, int, Step]] = []
    for offset, raw in clauses(text):
        clause = normalise(raw)
        found: list[tuple[int, Step]] = []
        # A title or a text first, read as typed; the rest of the clause is then read without it.
        titled, rest = _title(clause, raw)
        found += [(-1, step) for step in titled]
        if not titled and not (_CAPTIONS_RE.search(clause) and _KARAOKE_RE.search(clause)):
            texted, rest = _text(clause, raw)
            found += [(-1, step) for step in texted]
        for order, rule in enumerate(_RULES):
            found += [(order, step) for step in rule(rest, message)] if rest.strip() else []
        if not found:
            found += [(-1, step) for step in _text(clause, raw, placed=True)[0]]
        # "add music, volume 30%": the volume of what the clause before added.
        level = found[0][1] if len(found) == 1 else None
        music = steps[-1][2] if steps else None
        if (
            isinstance(level, Volume) and level.target == "clip" and level.level is not None
            and isinstance(music, Music) and music.volume is None and not _SOUND_OF_CLIP_RE.search(clause)
        ):  # fmt: skip
            steps[-1] = (steps[-1][0], steps[-1][1], replace(music, volume=min(1.0, level.level)))
            continue
        for order, step in found:
            position = offset + step.at
            steps.append((position, order, _at(step, position)))
    steps.sort(key=lambda item: (item[0], item[1]))
    result: list[Step] = []
    for _, _, step in steps:
        if isinstance(step, _ONCE) and any(type(seen) is type(step) for seen in result):
            continue
        result.append(step)
    log.debug("localnemo.plan steps=%s", [type(step).__name__ for step in result])
    return result


def _at(step: Step, position: int) -> Step:
    return replace(step, at=position)
