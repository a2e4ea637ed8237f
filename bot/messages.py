"""The contracts between platform adapters and the conversation engine.

An adapter turns what its platform delivers into an :class:`IncomingMessage` and implements
:class:`Replies` for the chat it came from; as an :class:`Adapter` it also starts, stops and can speak in a
chat later (a result after a restart) from a :class:`DeliveryTarget`. The engine decides what to say; the
adapter only speaks. Nothing here knows Telegram or Discord.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from bot.nemo.uploads import AttachmentKind, UploadSource

WorkingAction = Literal["typing", "upload_video"]

__all__ = [
    "Adapter",
    "Attachment",
    "AttachmentKind",
    "Button",
    "Capabilities",
    "ChatKey",
    "DeliveryTarget",
    "FileOpener",
    "IncomingMessage",
    "MessageHandle",
    "Replies",
    "WorkingAction",
]


@dataclass(frozen=True)
class ChatKey:
    """Which conversation a message belongs to: one NemoVideo session per key.

    ``user`` is set where sessions are per user inside a group chat, so two people in one group do not
    edit each other's timeline; ``scope`` separates other parallel sessions (a moderator's reel).
    ``str(key)`` is the storage key; the parts travel as themselves (:meth:`to_json`), never re-read from it.
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

    def to_json(self) -> dict[str, str]:
        parts = {"platform": self.platform, "chat": self.chat}
        if self.user is not None:
            parts["user"] = self.user
        if self.scope is not None:
            parts["scope"] = self.scope
        return parts

    @classmethod
    def from_json(cls, parts: Mapping[str, Any]) -> ChatKey:
        user, scope = parts.get("user"), parts.get("scope")
        return cls(str(parts["platform"]), str(parts["chat"]), None if user is None else str(user),
                   None if scope is None else str(scope))

    @classmethod
    def parse(cls, text: str) -> ChatKey:
        """Only for exports stored before the key's parts were: a key written by ``str``."""
        platform, _, rest = text.partition(":")
        rest, _, scope = rest.partition(":s:")
        chat, _, user = rest.partition(":u:")
        return cls(platform, chat, user or None, scope or None)


@dataclass(frozen=True)
class DeliveryTarget:
    """Where to speak in a chat when no message is being answered (a result after a restart, or after a
    Discord interaction's token died). Platform-neutral: each adapter reads the fields it needs."""

    address: str  # the platform's chat or channel id
    mention: str | None = None  # the user to name in the result, where the platform mentions people
    group: bool = False
    caption: str | None = None  # the adapter's own words to go with the result (a reel credits its authors)

    def to_json(self, chat: ChatKey) -> dict[str, Any]:
        """What storage keeps (``ExportRecord.target``): the target and the chat it belongs to."""
        return {"chat": chat.to_json(), "address": self.address, "mention": self.mention, "group": self.group,
                "caption": self.caption}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None, chat_key: str) -> tuple[ChatKey, DeliveryTarget]:
        """The chat and target of a stored export. Reads the keys stored before this type existed too
        (``chat_id``/``group`` from Telegram, ``channel_id``/``user_id`` from Discord, ``caption``), so an
        export begun before an upgrade is still delivered after it."""
        data = data or {}
        parts = data.get("chat")
        chat = ChatKey.from_json(parts) if isinstance(parts, Mapping) else ChatKey.parse(chat_key)
        address = data.get("address", data.get("chat_id", data.get("channel_id")))
        mention = data.get("mention", data.get("user_id"))
        caption = data.get("caption")
        return chat, cls(
            address=str(address) if address is not None else chat.chat,
            mention=str(mention) if mention else None,
            group=bool(data.get("group", False)),
            caption=str(caption) if caption else None,
        )


@dataclass(frozen=True)
class Attachment:
    """A file a user sent. ``ref`` is the adapter's own handle; :meth:`FileOpener.open` turns it into
    a stream later, once type and size have been checked. Never loaded into memory, never base64."""

    kind: AttachmentKind
    filename: str
    mime_type: str | None = None
    size: int | None = None
    ref: str | None = None
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
    # Where to deliver results later (after a restart, or once an interaction token has expired);
    # None: the chat itself.
    target: DeliveryTarget | None = None

    @property
    def delivery(self) -> DeliveryTarget:
        return self.target or DeliveryTarget(address=self.chat.chat, group=self.is_group)


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
    images: bool = False  # send_image works here (a photo, a file, a saved picture); False: it is never called
    # Where the adapter keeps the videos it is sent (a terminal's output folder): a result is downloaded
    # straight into it, so that ``send_video`` only renames it. None: a temporary folder, removed after.
    download_dir: Path | None = None
    # The platform limits how fast a message may be edited (Telegram, Discord), so the final state waits out
    # edit_interval_seconds too. A terminal has no such limit: its interval only keeps progress lines few,
    # and the final state is printed at once.
    edits_rate_limited: bool = True
    documents: bool = False  # send_document works here (a file, or one saved); False: it is never called


@dataclass(frozen=True)
class MessageHandle:
    """A message an adapter sent, as that adapter can find it again to edit it. ``id`` is the platform's
    message id; ``native`` is the adapter's own object for it, when it keeps one (the core never reads it)."""

    id: str
    native: object = field(default=None, compare=False, repr=False)


class Replies(Protocol):
    """How the engine speaks in one chat. Each verb raises only on a failure worth logging."""

    @property
    def capabilities(self) -> Capabilities: ...

    async def send_text(self, text: str, *, buttons: Sequence[Button] = ()) -> MessageHandle: ...

    async def edit_text(self, handle: MessageHandle, text: str, *, buttons: Sequence[Button] = ()) -> None: ...

    async def send_video(self, path: Path, *, caption: str, buttons: Sequence[Button] = ()) -> MessageHandle: ...

    async def send_image(self, path: Path, *, caption: str) -> MessageHandle:
        """Send a picture (a PNG the engine made, such as the timeline's storyboard) with a short caption.

        Called only when ``capabilities.images`` is true. ``path`` belongs to the engine and is deleted once
        this returns: an adapter that keeps the picture copies it first."""
        ...

    async def send_document(self, path: Path, *, filename: str, caption: str) -> MessageHandle:
        """Send a small file (the captions of a video, as .srt) under ``filename``, with a short caption.

        Called only when ``capabilities.documents`` is true; ``path`` is deleted once this returns."""
        ...

    async def show_working(self, action: WorkingAction) -> None: ...


class FileOpener(Protocol):
    """The adapter side of attachments: refuse early, then stream."""

    async def open(self, attachment: Attachment) -> UploadSource: ...


class Adapter(Protocol):
    """A platform as the composition root and the engine see it: its lifecycle, and speaking in a chat
    without a message to answer (delivering a result after a restart)."""

    @property
    def name(self) -> str:
        """The platform part of its chat keys (``tg``, ``dc``, ``console``)."""
        ...

    @property
    def capabilities(self) -> Capabilities:
        """What its replies can do by default (one chat's replies may narrow it)."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def replies_for(self, target: DeliveryTarget) -> Replies: ...
