"""Reading a message the way people type it, before the planner's grammar sees it, and what to say when
the grammar finds nothing.

``normalise`` writes numbers in words as digits ("thirty seconds" → "30 seconds", "half a minute" →
"30 seconds", "三十秒" → "30秒", "fifty percent" → "50%") and corrects the planner's keywords when they are
mistyped ("exprot", "backgroud musci": an optimal-string-alignment distance of 1, or 2 for long words,
computed with rapidfuzz, same first letter, never for a common English word that happens to be near one).

``suggestions`` ranks what the agent can do by how close a message it did not understand comes to each
capability's words (rapidfuzz), so that "not understood" comes with the two or three nearest things to try.
It only ranks: nothing here ever makes an edit happen.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rapidfuzz import fuzz
from rapidfuzz.distance import OSA

# -- numbers in words ---------------------------------------------------------------------------------------

_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
_NUMBER_WORD = "|".join(sorted([*_UNITS, *_TENS, "hundred"], key=len, reverse=True))
_NUMBER_RE = re.compile(
    rf"\b(?:(?:{_NUMBER_WORD})(?:[\s-]+(?:and\s+)?(?:{_NUMBER_WORD}))*)(?:\s+and\s+a\s+half)?\b", re.IGNORECASE
)
_PHRASES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\ba minute and a half\b|\bone and a half minutes?\b", re.I), "90 seconds"),
    (re.compile(r"\bhalf (?:an? )?minute\b", re.I), "30 seconds"),
    (re.compile(r"\ba (?:minute|min)\b", re.I), "1 minute"),
    (re.compile(r"\ba (?:second|sec)\b", re.I), "1 second"),
    (re.compile(r"\ba couple (?:of )?seconds\b", re.I), "2 seconds"),
    (re.compile(r"\ba few seconds\b", re.I), "3 seconds"),
    (re.compile(r"\bquarter speed\b", re.I), "0.25x speed"),
    (re.compile(r"\b(first|last|opening|final)\s+(minute|second)\b", re.I), r"\1 1 \2"),
    (re.compile(r"\b(?:one and a half|1\.5) times\b", re.I), "1.5x"),
    (re.compile(r"\b(\d+(?:\.\d+)?)\s*(?:times|x)\s+(?:faster|the speed|as fast|speed)\b", re.I), r"\1x speed"),
    (re.compile(r"\b(\d+(?:\.\d+)?)\s*(?:per ?cent|pct)\b", re.I), r"\1%"),
    (re.compile(r"\bhalf (?:the )?volume\b", re.I), "volume 50%"),
)


def _words_to_number(words: str) -> float | None:
    total = 0.0
    current = 0.0
    half = bool(re.search(r"and\s+a\s+half$", words, re.I))
    words = re.sub(r"\s+and\s+a\s+half$", "", words, flags=re.I)
    for word in re.split(r"[\s-]+", words.lower()):
        if word == "and":
            continue
        if word in _UNITS:
            current += _UNITS[word]
        elif word in _TENS:
            current += _TENS[word]
        elif word == "hundred":
            current = max(current, 1) * 100
        else:
            return None
    total += current
    return total + (0.5 if half else 0)


def _number_text(value: float) -> str:
    return f"{value:g}"


_ZH_DIGITS = {"零": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_ZH_NUMBER_RE = re.compile(r"(?P<n>[零一二两三四五六七八九十百]+)(?P<unit>秒钟?|分钟|分|倍|小时)(?P<half>半)?")
_ZH_PERCENT_RE = re.compile(r"百分之(?P<n>[零一二两三四五六七八九十百]+|\d+)")


def _zh_number(text: str) -> int | None:
    total = 0
    current = 0
    for char in text:
        if char in _ZH_DIGITS:
            current = _ZH_DIGITS[char]
        elif char == "十":
            total += (current or 1) * 10
            current = 0
        elif char == "百":
            total += (current or 1) * 100
            current = 0
        else:
            return None
    return total + current


def _zh_replace(match: re.Match[str]) -> str:
    value = _zh_number(match.group("n"))
    if value is None:
        return match.group(0)
    unit = match.group("unit")
    if match.group("half"):
        # 一分半 = 90 s; 一倍半 = 1.5x
        return f"{value * 60 + 30}秒" if unit in ("分", "分钟") else f"{value + 0.5:g}{unit}"
    return f"{value}{unit}"


def numbers_as_digits(text: str) -> str:
    """ "thirty seconds" → "30 seconds", "三十秒" → "30秒", "百分之五十" → "50%" (other words untouched)."""
    for pattern, replacement in _PHRASES[:6]:
        text = pattern.sub(replacement, text)

    def english(match: re.Match[str]) -> str:
        value = _words_to_number(match.group(0))
        return match.group(0) if value is None else _number_text(value)

    text = _NUMBER_RE.sub(english, text)
    for pattern, replacement in _PHRASES[6:]:
        text = pattern.sub(replacement, text)
    text = _ZH_PERCENT_RE.sub(
        lambda m: f"{m.group('n') if m.group('n').isdigit() else _zh_number(m.group('n'))}%", text
    )
    return _ZH_NUMBER_RE.sub(_zh_replace, text)


# -- typos -----------------------------------------------------------------------------------------------

# The words the grammar keys on (English only: Chinese input methods do not make these typos).
KEYWORDS: tuple[str, ...] = (
    "export", "download", "render", "background", "music", "soundtrack", "title", "subtitle", "subtitles",
    "caption", "captions", "pauses", "pause", "silences", "silence", "vertical", "horizontal", "square",
    "portrait", "landscape", "speed", "slower", "faster", "volume", "mute", "unmute", "quieter", "louder",
    "remove", "delete", "fade", "trim", "first", "last", "seconds", "minutes", "slideshow", "merge",
    "combine", "join", "letterbox", "crop", "blur", "blurred", "motion", "text", "overlay", "undo", "redo",
    "help", "add", "insert", "beginning", "ending", "percent", "slow", "clips", "video", "sound", "audio",
)  # fmt: skip
# Ordinary words one or two letters from a keyword: never "corrected".
COMMON_WORDS: frozenset[str] = frozenset(
    """
    expert expect except exports expo report resort spend speedy spread seed speak spent steed title's
    tittle little missed moist mosaic magic musical musician musk must mist mask pause's causes clauses
    caution cation captain capture textile texts tent tests taxed next fame face fake fate fades fared
    fire firm fist fast past vast list lost lust cast least lease trip trap tram tries trims trial brim
    merger marge verge merit jolt joint joins coin blue blurb blurt burr crap crow crops drop cross square's
    sounds round pound wound bound found hound mound video's vivid audit audio's remote remover removal
    delight deletes deleted relate delegate select slow's snow show slot stow flow glow blow slew sold
    motion's notion lotion potion emotion mention motions ending's bending lending mending pending sending
    tending vending beginning's volumes column solemn undo's under redo's red rode help's held hello hell
    helm whelp add's and odd aid ads adds insert's invert insect inserts slides slider slice slim slip
    porter portal poetry slower's lower power slowly flower blower faster's master plaster father later
    louder's lauder loader louse mute's mate mule mutt muted cute minute mutes secondly seconded sends
    minus minded minuses percents present perfect persist hours ours yours your sour hour four pour
    silent silently license sentence since science
    """.split()
)


def _max_distance(word: str) -> int:
    if len(word) < 5:
        return 0
    return 1 if len(word) < 8 else 2


def correct_word(word: str) -> str:
    """The keyword a mistyped word stands for, or the word itself."""
    lower = word.lower()
    limit = _max_distance(lower)
    if not limit or lower in KEYWORDS or lower in COMMON_WORDS or not lower.isascii() or not lower.isalpha():
        return word
    best: tuple[int, str] | None = None
    for keyword in KEYWORDS:
        if keyword[0] != lower[0] or abs(len(keyword) - len(lower)) > limit:
            continue
        distance = OSA.distance(lower, keyword, score_cutoff=limit)
        if distance <= limit and (best is None or distance < best[0]):
            best = (distance, keyword)
    return best[1] if best is not None else word


_WORD_RE = re.compile(r"[A-Za-z]+")


def correct_typos(text: str) -> str:
    return _WORD_RE.sub(lambda m: correct_word(m.group(0)), text)


_QUOTED_RE = re.compile(r"(\"[^\"]*\"|“[^”]*”|「[^」]*」|『[^』]*』)")


def normalise(text: str) -> str:
    """The message as the grammar reads it: numbers as digits, keywords spelt right (never inside quotes)."""
    parts = _QUOTED_RE.split(text)
    return "".join(part if index % 2 else correct_typos(numbers_as_digits(part)) for index, part in enumerate(parts))


# -- what the agent can do, for "help" and for "not understood" --------------------------------------------


@dataclass(frozen=True)
class Capability:
    """One thing the offline agent does: the catalogue key of its line in "help" (``agent.can_<key>``)
    and the words people use for it, by which a message that was not understood is matched."""

    key: str
    words: str  # separated by spaces


CAPABILITIES: tuple[Capability, ...] = (
    Capability("pauses", "cut pauses silence silent gaps quiet tighten 停顿 静音"),
    Capability("trim", "trim shorten shorter first last seconds keep part length long 前 秒 剪 裁剪 缩短"),
    Capability("join", "join merge combine together order clips 合并 拼接"),
    Capability("slideshow", "slideshow images photos pictures slides 幻灯片 图片 照片"),
    Capability("speed", "speed faster slower slow fast quick motion 速度 倍速 慢动作 加速"),
    Capability("sound", "mute sound audio volume louder quieter voice noise 静音 音量 声音"),
    Capability("music", "music song soundtrack background bgm tune track 音乐 配乐 歌"),
    Capability("title", "title heading name text words overlay label write 标题 文字"),
    Capability("captions", "captions subtitles subs srt transcript 字幕"),
    Capability("canvas", "vertical square portrait landscape aspect ratio crop tiktok reels shape 竖屏 横屏 比例"),
    Capability("fade", "fade transition smooth 淡入 淡出 渐变"),
    Capability("export", "export download render save resolution quality mp4 send file 导出 下载 分辨率"),
    Capability("history", "undo redo revert back reset mistake 撤销 重做 重新"),
)  # fmt: skip
_BY_KEY = {capability.key: capability for capability in CAPABILITIES}
# What to offer when nothing in the message comes near anything the agent does.
DEFAULT_SUGGESTIONS = ("pauses", "music", "canvas")
SUGGESTION_THRESHOLD = 80.0
_TOKEN_RE = re.compile(r"[a-z0-9]+|[\u4e00-\u9fff]+", re.IGNORECASE)


def _score(text: str, tokens: list[str], capability: Capability) -> float:
    best = 0.0
    for word in capability.words.split():
        if not word.isascii():
            best = max(best, 100.0 if word in text else 0.0)
            continue
        for token in tokens:
            if len(token) < 3 or not token.isascii():
                continue
            best = max(best, fuzz.ratio(token, word))
    return best


def suggestions(text: str, count: int = 3) -> list[str]:
    """The keys of the capabilities nearest to ``text`` (at least two, at most ``count``), nearest first;
    deterministic (ties keep the catalogue's order)."""
    lowered = text.lower()
    tokens = [correct_word(token) for token in _TOKEN_RE.findall(lowered)]
    scored = [(_score(lowered, tokens, capability), index, capability.key)
              for index, capability in enumerate(CAPABILITIES)]  # fmt: skip
    close = [key for score, _, key in sorted(scored, key=lambda item: (-item[0], item[1]))
             if score >= SUGGESTION_THRESHOLD]  # fmt: skip
    chosen = close[:count]
    if len(chosen) < 2:
        for key in DEFAULT_SUGGESTIONS:
            if len(chosen) < count and key not in chosen:
                chosen.append(key)
    return chosen[:count]


def capability(key: str) -> Capability:
    return _BY_KEY[key]
