"""The moderators' highlight reel, as a use case of the core.

Given a channel's recent posts (and the ones moderators picked), the reel takes their video and image
clips in the order they were posted, credits their authors, uploads and cuts them in a session of its
own, then exports. The platform adapter only gathers the posts and turns them into these neutral values.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from bot.lang import detect_language
from bot.messages import Attachment, ChatKey, DeliveryTarget, FileOpener, IncomingMessage, Replies
from bot.texts import t

log = logging.getLogger(__name__)

DEFAULT_REEL_PROMPT = (
    "Make a highlight reel of about 60 seconds from these clips: keep the best moments, cut the pauses, "
    "and add background music."
)


@dataclass(frozen=True)
class ReelPost:
    """One post of the channel: ``order`` sorts posts by time (Discord's snowflakes grow with it)."""

    order: int
    author: str  # how to credit the author (a mention)
    by_bot: bool
    attachments: tuple[Attachment, ...]


@dataclass(frozen=True)
class ReelRequest:
    chat: ChatKey  # the reel's own session
    user_id: str  # the moderator who asked
    request_id: str  # for idempotency: the reel's messages are this id and this id + ":export"
    channel: str  # how to name the channel in words (a mention)
    looked_at: int  # how many recent posts were asked for (said when there is nothing to cut)
    target: DeliveryTarget  # where the result goes; the credits become its caption
    prompt: str | None = None
    locale: str | None = None


class Core(Protocol):
    async def handle(self, message: IncomingMessage, replies: Replies, files: FileOpener | None = None) -> object: ...

    async def join(self, chat: ChatKey | None = None) -> None: ...


def is_clip(attachment: Attachment) -> bool:
    return attachment.kind in ("video", "image")


async def make_reel(core: Core, request: ReelRequest, posts: Iterable[ReelPost], replies: Replies,
                    files: FileOpener) -> None:
    lang = detect_language(request.locale)
    clips: list[Attachment] = []
    authors: list[str] = []
    seen: set[int] = set()
    for post in sorted(posts, key=lambda p: p.order):
        if post.order in seen or post.by_bot:
            continue
        seen.add(post.order)
        for attachment in post.attachments:
            if is_clip(attachment):
                clips.append(attachment)
                if post.author not in authors:
                    authors.append(post.author)
    if not clips:
        await replies.send_text(t("reel_empty", lang, channel=request.channel, count=request.looked_at))
        return
    credits = t("reel_credits", lang, channel=request.channel, authors=", ".join(authors))
    target = DeliveryTarget(address=request.target.address, mention=request.target.mention,
                            group=request.target.group, caption=credits)
    base = IncomingMessage(
        chat=request.chat, user_id=request.user_id, message_id=request.request_id,
        text=request.prompt or DEFAULT_REEL_PROMPT, attachments=tuple(clips), locale=request.locale,
        is_group=True, target=target,
    )
    log.info("reel.start chat=%s clips=%d", request.chat, len(clips))
    await core.handle(base, replies, files)
    # The export follows once the clips are in and cut (not queued beside them: nothing to announce).
    await core.join(request.chat)
    export = IncomingMessage(
        chat=request.chat, user_id=request.user_id, message_id=f"{request.request_id}:export", text="/export",
        locale=request.locale, is_group=True, target=target,
    )
    await core.handle(export, replies, files)
