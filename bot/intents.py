"""What the user wants, from a command or free text, in English and Chinese.

The routing table is the NemoVideo skill's: export / credits / status / upload keywords go to those
actions; everything else is an edit instruction sent to the agent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from rapidfuzz.distance import OSA


class Intent(Enum):
    START = "start"
    HELP = "help"
    NEW = "new"
    EXPORT = "export"
    STATUS = "status"
    CREDITS = "credits"
    CANCEL = "cancel"
    UPLOAD = "upload"  # files (or links) with no instruction
    EDIT = "edit"  # anything else: sent to the agent


COMMANDS: dict[str, Intent] = {
    "start": Intent.START,
    "help": Intent.HELP,
    "new": Intent.NEW,
    "export": Intent.EXPORT,
    "status": Intent.STATUS,
    "credits": Intent.CREDITS,
    "cancel": Intent.CANCEL,
}

# Short messages that are only a request for one action. Longer sentences that merely mention a word
# ("export it at 1080p after adding music") are edits: the agent should see them whole.
_KEYWORDS: list[tuple[Intent, re.Pattern[str]]] = [
    (Intent.EXPORT, re.compile(
        r"^(please\s+)?(export|download|render)(\s+(it|the video|now|please|video))*[.!]*$"
        r"|send me the (video|file|result)|give me the (video|file)|^导出|^下载|^渲染|把视频发给我|发我视频",
        re.IGNORECASE,
    )),
    (Intent.CREDITS, re.compile(
        r"^(my\s+)?(credits?|balance)(\s+left)?[?.!]*$|how many credits|积分|余额", re.IGNORECASE
    )),
    (Intent.STATUS, re.compile(
        r"^(status|state|progress)[?.!]*$|show (me )?(the )?(tracks|timeline)|what('s| is) on the timeline"
        r"|^状态|时间线|显示轨道",
        re.IGNORECASE,
    )),
    (Intent.UPLOAD, re.compile(r"^(upload|上传)[.!]*$", re.IGNORECASE)),
]

# An explicit output request ("export 1080p", "导出 4K") is an export with a resolution.
_EXPORT_WITH_OPTIONS = re.compile(
    r"^(please\s+)?(export|render|导出)\s*(in\s+|at\s+|as\s+)?(?P<res>720p|1080p|4k|2160p)[.!]*$", re.IGNORECASE
)
# A short request to export in the user's own words ("exprot", "export 1080p MP4", "export as mp4",
# "download it", "send me the video in 720p"): a verb, mistyped or not, and only words that say how.
_RESOLUTION = re.compile(
    r"(?<![a-z0-9])(?P<res>720p|1080p|1440p|2160p|4k|full ?hd|fhd|hd|uhd|超高清|全高清|高清|标清)(?![a-z0-9])", re.I
)
_RESOLUTION_NAMES = {
    "fullhd": "1080p", "full hd": "1080p", "fhd": "1080p", "hd": "720p", "uhd": "4k",
    "超高清": "4k", "全高清": "1080p", "高清": "1080p", "标清": "720p",
}  # fmt: skip
_EXPORT_VERBS = ("export", "download", "render", "save")
_EXPORT_POLITE = frozenset("please pls ok okay now can could you just go ahead and".split())
_EXPORT_OPTIONS = frozenset(
    """it the video my a an this that now please pls as in at to into with of for format file mp4 h264 h.264
    resolution quality version final result clip movie one thanks thank you me send give""".split()
)
_SEND_ME = re.compile(
    r"^(?:please\s+|can you\s+|could you\s+)*(?:send|give|get)\s+(?:me\s+|it\s+to\s+me\s*)?(?:the\s+|my\s+)?"
    r"(?:final\s+)?(?:video|file|result|clip|mp4|movie|export|it)\b",
    re.I,
)


def _export_verb(word: str) -> bool:
    word = word.lower()
    if word in _EXPORT_VERBS:
        return True
    # A keyword mistyped by one or two letters ("exprot", "dowload"), never a real word of another meaning.
    limit = 1 if len(word) < 7 else 2
    return len(word) >= 5 and word not in ("expert", "expect", "report", "tender", "reader") and any(
        verb[0] == word[0] and OSA.distance(word, verb, score_cutoff=limit) <= limit for verb in _EXPORT_VERBS
    )


def _export_request(text: str) -> Routed | None:
    """An export asked for in a few words, with the resolution it names; None for anything else."""
    resolution = _RESOLUTION.search(text)
    res = None
    if resolution is not None:
        name = resolution.group("res").lower()
        res = _RESOLUTION_NAMES.get(name, name)
    rest = _RESOLUTION.sub(" ", text) if resolution is not None else text
    words = re.findall(r"\w+(?:\.\w+)*", rest.lower())
    while words and words[0] in _EXPORT_POLITE:
        words.pop(0)
    if words and _export_verb(words[0]) and all(word in _EXPORT_OPTIONS for word in words[1:]):
        return Routed(Intent.EXPORT, text, res)
    if _SEND_ME.match(rest.strip()) and all(word in _EXPORT_OPTIONS for word in words):
        return Routed(Intent.EXPORT, text, res)
    if re.match(r"^(导出|下载|渲染)", text) and len(text) <= 20:
        return Routed(Intent.EXPORT, text, res)
    return None


URL = re.compile(r"https?://[^\s<>\"']+", re.IGNORECASE)


@dataclass(frozen=True)
class Routed:
    intent: Intent
    text: str  # the instruction to send (for EDIT), or the command's argument
    resolution: str | None = None


def route(text: str, *, has_files: bool = False) -> Routed:
    """Decide what one message asks for. ``/cmd@botname args`` commands win over keywords. Which bot a
    command names is the adapter's business: it knows its own name and drops commands for other bots
    before the engine sees them."""
    stripped = text.strip()
    if stripped.startswith("/"):
        head, _, rest = stripped[1:].partition(" ")
        name = head.partition("@")[0]
        intent = COMMANDS.get(name.lower())
        if intent is not None:
            match = _EXPORT_WITH_OPTIONS.match("export " + rest.strip()) if intent is Intent.EXPORT else None
            return Routed(intent, rest.strip(), match.group("res").lower() if match else None)
    if not stripped:
        return Routed(Intent.UPLOAD if has_files else Intent.HELP, "")
    match = _EXPORT_WITH_OPTIONS.match(stripped)
    if match:
        return Routed(Intent.EXPORT, stripped, match.group("res").lower())
    export = _export_request(stripped)
    if export is not None:
        return export
    for intent, pattern in _KEYWORDS:
        if pattern.search(stripped) and len(stripped) <= 40:
            if intent is Intent.UPLOAD and not has_files:
                return Routed(Intent.HELP, stripped)
            return Routed(intent, stripped)
    return Routed(Intent.EDIT, stripped)


#: What changes the chat's project: run one after another per chat, in arrival order.
MUTATING = frozenset({Intent.UPLOAD, Intent.EDIT, Intent.EXPORT, Intent.NEW})


def changes_project(routed: Routed, *, has_files: bool) -> bool:
    """True for a message that changes the project (files with a question change it too: they are uploaded);
    False for reads (/status, /credits, /help) and /cancel, which are answered at once, beside the queue."""
    return routed.intent in MUTATING or (routed.intent is Intent.HELP and has_files)


def links_in(text: str) -> list[str]:
    return [m.rstrip(".,;:!?)]}'\"") for m in URL.findall(text)]
