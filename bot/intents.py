"""What the user wants, from a command or free text, in English and Chinese.

The routing table is the NemoVideo skill's: export / credits / status / upload keywords go to those
actions; everything else is an edit instruction sent to the agent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum


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
    for intent, pattern in _KEYWORDS:
        if pattern.search(stripped) and len(stripped) <= 40:
            if intent is Intent.UPLOAD and not has_files:
                return Routed(Intent.HELP, stripped)
            return Routed(intent, stripped)
    return Routed(Intent.EDIT, stripped)


def links_in(text: str) -> list[str]:
    return [m.rstrip(".,;:!?)]}'\"") for m in URL.findall(text)]
