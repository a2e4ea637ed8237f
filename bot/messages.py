"""The contracts between platform adapters and the conversation engine.

An adapter turns what its platform delivers into an :class:`IncomingMessage` and implements
:class:`Replies` for the chat it came from. The engine decides what to say; the adapter only speaks.
Nothing here knows Telegram or Discord.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from bot.nemo.uploads import UploadSource

AttachmentKind = Literal["video", "image", "audio", "subtitle", "document"]
WorkingAction = Literal["typing", "upload_video"]


@dataclass(frozen=True)
class ChatKey:
    """Which conversation a message belongs to: one NemoVideo session per key.

    ``user`` is set where sessions are per user inside a group chat, so two people in one group do not
    edit each other's timeline; ``scope`` separates other parallel sessions (a moderator's reel).
    """

    platform: str
    chat: str
    user: str | None = None
    scope: str | None = None

    def __str__(self) -> str:
        key = f"{self.platform}:{self.chat}"
        if self.user is not None:
            key += f":u:{self.user}"
        if self.scope is not None:
            key += f":s:{self.scope}"
        return key

    @classmethod
    def parse(cls, text: str) -> ChatKey:
        platform, _, rest = text.partition(":")
        rest, _, scope = rest.partition(":s:")
        chat, _, user = rest.partition(":u:")
        return cls(platform, chat, user or None, scope or None)


@dataclass(frozen=True)
class Attachment:
    """A file a user sent. ``ref`` is the adapter's own handle; :meth:`FileOpener.open` turns it into
    a stream later, once type and size have been checked. Never loaded into memory, never base64."""

    kind: AttachmentKind
    filename: str
    mime_type: str | None = None
    size: int | None = None
    ref: Any = None
    url: str | None = None  # a public http(s) URL the backend can fetch by itself, when there is one


@dataclass(frozen=True)
class IncomingMessage:
    chat: ChatKey
    user_id: str
    message_id: str
    text: str = ""
    attachments: tuple[Attachment, ...] = ()
    locale: str | None = None
    user_name: str | None = None
    reply_to: str | None = None
    is_group: bool = False
    # Where to deliver results later (after a restart, or once an interaction token has expired).
    target: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Button:
    """An inline button; ``command`` is what pressing it means (``/export``, ``/status``, …)."""

    label: str
    command: str


@dataclass(frozen=True)
class Capabilities:
    max_upload_bytes: int  # the largest video file the adapter can send; above it, a link
    max_message_length: int = 4096
    max_caption_length: int = 1024
    can_edit: bool = True
    edit_interval_seconds: float = 1.0  # at most one edit of a message per this many seconds
    buttons: bool = False


class MessageHandle(Protocol):
    """Whatever an adapter returns for a sent message, so it can edit it later."""


class Replies(Protocol):
    """How the engine speaks in one chat. Each verb raises only on a failure worth logging."""

    @property
    def capabilities(self) -> Capabilities: ...

    async def send_text(self, text: str, *, buttons: Sequence[Button] = ()) -> Any: ...

    async def edit_text(self, handle: Any, text: str, *, buttons: Sequence[Button] = ()) -> None: ...

    async def send_video(self, path: Path, *, caption: str, buttons: Sequence[Button] = ()) -> Any: ...

    async def show_working(self, action: WorkingAction) -> None: ...


class FileOpener(Protocol):
    """The adapter side of attachments: refuse early, then stream."""

    async def open(self, attachment: Attachment) -> UploadSource: ...


class Platform(Protocol):
    """What the engine needs of an adapter beyond one message: delivering to a chat later."""

    name: str

    def replies_for(self, chat: ChatKey, target: dict[str, Any]) -> Replies: ...
