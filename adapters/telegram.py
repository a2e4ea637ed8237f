"""Telegram: python-telegram-bot 22 ⇄ the engine's normalised messages and replies.

Limits and conventions come from ../shared/docs/platforms.md: 20 MB downloads and 50 MB uploads on the
cloud Bot API (none and 2000 MB with a local ``telegram-bot-api --local`` server), albums arriving as
separate updates with one ``media_group_id``, edits throttled per chat, ``RetryAfter`` obeyed. The figures
themselves are python-telegram-bot's (``telegram.constants``).

python-telegram-bot 22 warns whenever a time period is read (``RetryAfter`` reads its own while being
made) unless ``PTB_TIMEDELTA`` is set; the composition root sets it at start-up, and this module reads
periods whichever type they come as.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from telegram import (
    BotCommand,
    CallbackQuery,
    Chat,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    Update,
    User,
)
from telegram.constants import ChatAction, ChatType, FileSizeLimit, MessageEntityType, MessageLimit
from telegram.error import BadRequest, Conflict, InvalidToken, NetworkError, RetryAfter, TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    ApplicationHandlerStop,
    CallbackQueryHandler,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    filters,
)

from adapters.common import AdapterContext, FatalCallback, PlatformFailure, PlatformRejected, PlatformUnreachable
from bot.config import IdList
from bot.engine import Engine
from bot.intents import Intent, changes_project, route
from bot.lang import detect_language
from bot.messages import (
    Attachment,
    Button,
    Capabilities,
    ChatKey,
    DeliveryTarget,
    IncomingMessage,
    MessageHandle,
    WorkingAction,
)
from bot.nemo.errors import FileTooLarge
from bot.nemo.uploads import UploadSource, attachment_kind, spool_download
from bot.outcome import Operation, Outcome
from bot.texts import t
from bot.textsplit import split_text

log = logging.getLogger(__name__)

MAX_MESSAGE = int(MessageLimit.MAX_TEXT_LENGTH)
MAX_CAPTION = int(MessageLimit.CAPTION_LENGTH)
_T = TypeVar("_T")

COMMANDS = [
    ("start", "What I can do"),
    ("new", "Start a new project"),
    ("export", "Render and send the video"),
    ("status", "Show the timeline"),
    ("credits", "Show your credits"),
    ("cancel", "Stop the current job"),
    ("help", "Help"),
]


class TelegramSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TELEGRAM_", env_file=".env", extra="ignore")

    bot_token: SecretStr | None = Field(None, description="The bot's token from @BotFather.")
    api_base: str = Field("https://api.telegram.org/bot", description="Bot API base ({token} is appended).")
    file_api_base: str = Field("https://api.telegram.org/file/bot", description="Bot API file base.")
    local_mode: bool = Field(False, description="The Bot API server runs with --local: big files, local paths.")
    allowed_ids: IdList = Field(
        default_factory=list, description="Only these user or chat ids may use the bot (comma-separated)."
    )
    webhook_url: str | None = Field(None, description="Public HTTPS URL of the webhook; unset: long polling.")
    webhook_listen: str = Field("0.0.0.0", description="Address the webhook server listens on.")
    webhook_port: int = Field(8443, description="Port the webhook server listens on.")
    webhook_secret: SecretStr | None = Field(None, description="Secret token Telegram sends with each update.")
    album_seconds: float = Field(1.5, gt=0, description="How long to wait for the rest of an album.")
    # platforms.md: about 1 message a second per chat and 20 a minute in a group; edits count as sends.
    private_edit_seconds: float = Field(3.0, ge=0, description="Least time between status edits, private chats.")
    group_edit_seconds: float = Field(10.0, ge=0, description="Least time between status edits, groups.")

    @property
    def download_limit(self) -> int | None:
        return None if self.local_mode else int(FileSizeLimit.FILESIZE_DOWNLOAD)

    @property
    def upload_limit(self) -> int:
        return int(FileSizeLimit.FILESIZE_UPLOAD_LOCAL_MODE if self.local_mode else FileSizeLimit.FILESIZE_UPLOAD)


def _seconds(value: dt.timedelta | float | int) -> float:
    return value.total_seconds() if isinstance(value, dt.timedelta) else float(value)


def _megabytes(n: int) -> str:
    # Telegram states its limits in decimal megabytes ("20 MB" is 20,000,000 bytes in telegram.constants).
    return f"{n / 1e6:.1f} MB"


def _failure(error: TelegramError, settings: TelegramSettings) -> PlatformFailure | None:
    """The operator's plain line for an error of the Bot API at start or while polling (None: not one of
    those; a BadRequest, say, is a bug and keeps its traceback)."""
    if isinstance(error, InvalidToken):
        # PTB raises InvalidToken for 401 and 404 answers (telegram/request/_baserequest.py).
        return PlatformRejected(
            "Telegram rejected the bot token: check TELEGRAM_BOT_TOKEN (and TELEGRAM_API_BASE if it is set)."
        )
    if isinstance(error, Conflict):
        return PlatformRejected(
            "Telegram says another process is polling with this bot token: stop it, or use a webhook "
            "(TELEGRAM_WEBHOOK_URL)."
        )
    if isinstance(error, BadRequest):
        return None
    if isinstance(error, NetworkError | RetryAfter):
        host = urlsplit(settings.api_base).netloc or settings.api_base.split("/", 1)[0]
        return PlatformUnreachable(f"Telegram's Bot API at {host} cannot be reached ({_kind(error)}).")
    return None


def _kind(error: TelegramError) -> str:
    if isinstance(error, RetryAfter):
        return "flood control"
    # PTB words a transport error "httpx.ConnectError: …": the class name says enough, and nothing after
    # it can carry a URL.
    message = error.message
    name = message.split(":", 1)[0].rsplit(".", 1)[-1].strip() if message.startswith("httpx.") else ""
    return name or type(error).__name__


def _split(text: str) -> list[str]:
    return split_text(text, MAX_MESSAGE)


def _keyboard(buttons: Sequence[Button]) -> InlineKeyboardMarkup | None:
    if not buttons:
        return None
    row = [InlineKeyboardButton(b.label, callback_data=b.command) for b in buttons]
    return InlineKeyboardMarkup([row[:2], row[2:]] if len(row) > 2 else [row])


class TelegramReplies:
    """Speaks in one Telegram chat. Flood control is obeyed here so the engine never sees it."""

    def __init__(self, application: Application[Any, Any, Any, Any, Any, Any], chat_id: int, *, group: bool,
                 settings: TelegramSettings, reply_to: int | None = None) -> None:
        self._app = application
        self.chat_id = chat_id
        self._reply_to = reply_to
        self._caps = Capabilities(
            max_upload_bytes=settings.upload_limit,
            max_message_length=MAX_MESSAGE,
            max_caption_length=MAX_CAPTION,
            can_edit=True,
            edit_interval_seconds=settings.group_edit_seconds if group else settings.private_edit_seconds,
            buttons=True,
            images=True,
            documents=True,
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    async def _obeying_flood_control(self, call: Callable[..., Awaitable[_T]], *args: Any, **kwargs: Any) -> _T:
        for _ in range(5):
            try:
                return await call(*args, **kwargs)
            except RetryAfter as exc:
                wait = _seconds(exc.retry_after)
                log.info("telegram.retry_after chat=%s wait=%.1fs", self.chat_id, wait)
                await asyncio.sleep(wait)
        return await call(*args, **kwargs)

    async def send_text(self, text: str, *, buttons: Sequence[Button] = ()) -> MessageHandle:
        parts = _split(text)
        message: Message | None = None
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            message = await self._obeying_flood_control(
                self._app.bot.send_message, self.chat_id, part,
                reply_markup=_keyboard(buttons) if last else None,
                reply_to_message_id=self._reply_to if i == 0 else None,
            )
        self._reply_to = None  # quote the user's message once, not every status line
        assert message is not None
        return MessageHandle(str(message.message_id))

    async def edit_text(self, handle: MessageHandle, text: str, *, buttons: Sequence[Button] = ()) -> None:
        parts = _split(text)
        try:
            await self._obeying_flood_control(
                self._app.bot.edit_message_text, parts[0], chat_id=self.chat_id, message_id=int(handle.id),
                reply_markup=_keyboard(buttons) if len(parts) == 1 else None,
            )
        except BadRequest as exc:
            if "not modified" not in str(exc).lower():
                raise
        for i, part in enumerate(parts[1:], 1):
            await self._obeying_flood_control(
                self._app.bot.send_message, self.chat_id, part,
                reply_markup=_keyboard(buttons) if i == len(parts) - 1 else None,
            )

    async def send_video(self, path: Path, *, caption: str, buttons: Sequence[Button] = ()) -> MessageHandle:
        message = await self._obeying_flood_control(
            self._app.bot.send_video, self.chat_id, path, caption=caption[:MAX_CAPTION], supports_streaming=True,
            reply_markup=_keyboard(buttons), read_timeout=600, write_timeout=600,
        )
        return MessageHandle(str(message.message_id))

    async def send_image(self, path: Path, *, caption: str) -> MessageHandle:
        message = await self._obeying_flood_control(
            self._app.bot.send_photo, self.chat_id, path, caption=caption[:MAX_CAPTION],
        )
        return MessageHandle(str(message.message_id))

    async def send_document(self, path: Path, *, filename: str, caption: str) -> MessageHandle:
        # sendDocument: the file under its own name (https://core.telegram.org/bots/api#senddocument).
        message = await self._obeying_flood_control(
            self._app.bot.send_document, self.chat_id, path, filename=filename, caption=caption[:MAX_CAPTION],
        )
        return MessageHandle(str(message.message_id))

    async def show_working(self, action: WorkingAction) -> None:
        kind = ChatAction.UPLOAD_VIDEO if action == "upload_video" else ChatAction.TYPING
        with contextlib.suppress(TelegramError):
            await self._app.bot.send_chat_action(self.chat_id, kind)


class TelegramFiles:
    """Opens a user's file: local mode reads the server's path; the cloud API streams to a temp file."""

    def __init__(self, application: Application[Any, Any, Any, Any, Any, Any], settings: TelegramSettings,
                 context: AdapterContext) -> None:
        self._app = application
        self._settings = settings
        self._context = context

    async def open(self, attachment: Attachment) -> UploadSource:
        limit = self._settings.download_limit
        if limit is not None and attachment.size is not None and attachment.size > limit:
            raise FileTooLarge("over the Bot API download limit", filename=attachment.filename,
                               size=attachment.size, limit=limit)
        tg_file = await self._app.bot.get_file(str(attachment.ref))
        if self._settings.local_mode and tg_file.file_path and Path(tg_file.file_path).is_absolute():
            return UploadSource.from_path(tg_file.file_path, filename=attachment.filename,
                                          content_type=attachment.mime_type)
        return await spool_download(
            self._context.http, tg_file.file_path or "", filename=attachment.filename,
            content_type=attachment.mime_type, max_bytes=limit or self._context.max_upload_bytes,
            temp_dir=self._context.temp_dir,
        )


def _attachment(message: Message) -> Attachment | None:
    """The file a message carries, if any; photos come in several sizes: take the largest."""
    if message.video:
        v = message.video
        return Attachment("video", v.file_name or f"video_{message.message_id}.mp4", v.mime_type or "video/mp4",
                          v.file_size, v.file_id)
    if message.animation:
        a = message.animation
        return Attachment("video", a.file_name or f"animation_{message.message_id}.mp4",
                          a.mime_type or "video/mp4", a.file_size, a.file_id)
    if message.video_note:
        n = message.video_note
        return Attachment("video", f"video_note_{message.message_id}.mp4", "video/mp4", n.file_size, n.file_id)
    if message.photo:
        p = message.photo[-1]
        return Attachment("image", f"photo_{message.message_id}.jpg", "image/jpeg", p.file_size, p.file_id)
    if message.audio:
        a2 = message.audio
        return Attachment("audio", a2.file_name or f"audio_{message.message_id}.mp3", a2.mime_type or "audio/mpeg",
                          a2.file_size, a2.file_id)
    if message.voice:
        vo = message.voice
        # Voice notes are OGG/Opus, which the backend does not list: named as such so the refusal is honest.
        return Attachment("audio", f"voice_{message.message_id}.ogg", vo.mime_type or "audio/ogg", vo.file_size,
                          vo.file_id)
    if message.document:
        d = message.document
        name = d.file_name or f"file_{message.message_id}"
        return Attachment(attachment_kind(name, d.mime_type), name, d.mime_type, d.file_size, d.file_id)
    return None


@dataclass
class _Album:
    messages: list[Message] = field(default_factory=list)
    flusher: asyncio.Task[None] | None = None


def _builder(settings: TelegramSettings) -> ApplicationBuilder[Any, Any, Any, Any, Any, Any]:
    assert settings.bot_token is not None
    return (
        ApplicationBuilder()
        .token(settings.bot_token.get_secret_value())
        .base_url(settings.api_base)
        .base_file_url(settings.file_api_base)
        .local_mode(settings.local_mode)
        .read_timeout(30)
        .write_timeout(120)
    )


def _capabilities(settings: TelegramSettings) -> Capabilities:
    """What a Telegram chat takes: the same for the bot that receives and for a worker that only sends."""
    return Capabilities(
        max_upload_bytes=settings.upload_limit, max_message_length=MAX_MESSAGE,
        max_caption_length=MAX_CAPTION, can_edit=True, edit_interval_seconds=settings.private_edit_seconds,
        buttons=True,
    )


class TelegramSender:
    """Telegram's sending side alone, for ``nemobot worker``: it delivers the results of the durable job
    queue and receives nothing (one process per token may poll: the bot's)."""

    def __init__(self, settings: TelegramSettings) -> None:
        if settings.bot_token is None:
            raise ValueError("TELEGRAM_BOT_TOKEN is not set")
        self.settings = settings
        self.app: Application[Any, Any, Any, Any, Any, Any] = _builder(settings).updater(None).build()

    @property
    def name(self) -> str:
        return "tg"

    @property
    def capabilities(self) -> Capabilities:
        return _capabilities(self.settings)

    async def start(self) -> None:
        """Check the token (getMe); a refusal or an unreachable Bot API is a ``PlatformFailure``."""
        try:
            await self.app.initialize()
        except TelegramError as exc:
            failure = _failure(exc, self.settings)
            if failure is None:
                raise
            raise failure from None

    async def stop(self) -> None:
        await self.app.shutdown()
        await self.app.bot.shutdown()

    def replies_for(self, target: DeliveryTarget) -> TelegramReplies:
        return TelegramReplies(self.app, int(target.address), group=target.group, settings=self.settings)


class TelegramAdapter:
    """Runs the Application (polling or webhook) and feeds the engine."""

    def __init__(self, engine: Engine, settings: TelegramSettings, context: AdapterContext, *,
                 on_fatal: FatalCallback | None = None) -> None:
        if settings.bot_token is None:
            raise ValueError("TELEGRAM_BOT_TOKEN is not set")
        self.engine = engine
        self.settings = settings
        self._context = context
        self._on_fatal = on_fatal
        self._failed = False
        self._albums: dict[str, _Album] = {}
        self.username: str | None = None
        # Updates are handled one at a time, in order: engine.handle only queues work, so this stays fast,
        # and a chat's messages reach the engine in the order they were sent.
        self.app: Application[Any, Any, Any, Any, Any, Any] = _builder(settings).build()
        # Group -1 runs before the handlers below: an update already accepted stops there.
        self.app.add_handler(TypeHandler(Update, self._accept), group=-1)
        self.app.add_handler(MessageHandler(filters.UpdateType.MESSAGE, self._on_message))
        self.app.add_handler(CallbackQueryHandler(self._on_callback))
        self.app.add_error_handler(self._on_error)
        self._files = TelegramFiles(self.app, settings, context)

    @property
    def name(self) -> str:
        return "tg"

    @property
    def capabilities(self) -> Capabilities:
        return _capabilities(self.settings)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start polling (or the webhook); a refusal or an unreachable Bot API is a ``PlatformFailure``
        whose text names what to do, never the token (PTB's own ``InvalidToken`` text quotes it)."""
        try:
            await self._start()
        except TelegramError as exc:
            failure = _failure(exc, self.settings)
            if failure is None:
                raise
            raise failure from None

    async def _start(self) -> None:
        await self.app.initialize()
        me = self.app.bot.bot
        self.username = me.username
        await self.app.bot.set_my_commands([BotCommand(name, text) for name, text in COMMANDS])
        await self.app.start()
        if self._context.queue is not None:
            # Before the first update comes in: this process handles its share of every receiver's updates.
            self._context.queue.serve_updates(self.name, self._run_queued)
        assert self.app.updater is not None
        if self.settings.webhook_url:
            secret = self.settings.webhook_secret.get_secret_value() if self.settings.webhook_secret else None
            path = self.settings.webhook_url.split("://", 1)[-1].partition("/")[2]
            await self.app.updater.start_webhook(
                listen=self.settings.webhook_listen, port=self.settings.webhook_port, url_path=path,
                webhook_url=self.settings.webhook_url, secret_token=secret,
                allowed_updates=["message", "callback_query"],
            )
        else:
            await self.app.updater.start_polling(allowed_updates=["message", "callback_query"],
                                                 error_callback=self._on_polling_error)
        resumed = await self.engine.resume(self)
        log.info("telegram.started username=%s resumed_exports=%d webhook=%s", me.username, resumed,
                 bool(self.settings.webhook_url))

    async def stop(self) -> None:
        for album in self._albums.values():
            if album.flusher is not None:
                album.flusher.cancel()
        if self.app.updater is not None and self.app.updater.running:
            await self.app.updater.stop()
        if self.app.running:
            await self.app.stop()
        await self.app.shutdown()
        # A start that failed in getMe leaves the Application uninitialised, so its shutdown above skips
        # the bot's HTTP clients: close them here (a no-op when they are closed already).
        await self.app.bot.shutdown()

    def _on_polling_error(self, error: TelegramError) -> None:
        # PTB's polling loop retries every TelegramError (a 409 too, forever) and only logs it
        # (telegram/ext/_updater.py, network_retry_loop): a conflict is fatal here, the rest is logged.
        failure = _failure(error, self.settings)
        if failure is not None and not failure.transient:
            if not self._failed:
                self._failed = True
                if self._on_fatal is not None:
                    self._on_fatal(failure)
            return
        log.warning("telegram.polling_error error=%s", error)

    # -- delivering without a message to answer ---------------------------------------------------

    def replies_for(self, target: DeliveryTarget) -> TelegramReplies:
        return TelegramReplies(self.app, int(target.address), group=target.group, settings=self.settings)

    # -- incoming -------------------------------------------------------------------------------

    def _allowed(self, user_id: int | None, chat_id: int) -> bool:
        allowed = self.settings.allowed_ids
        return not allowed or chat_id in allowed or (user_id is not None and user_id in allowed)

    def _addressed_to_me(self, message: Message) -> bool:
        """In groups the bot answers only commands, mentions and replies to its own messages."""
        if message.chat.type == ChatType.PRIVATE:
            return True
        me = (self.username or "").lower()
        replied = message.reply_to_message
        if replied is not None and replied.from_user is not None and replied.from_user.id == self.app.bot.id:
            return True
        text = message.text or message.caption or ""
        entities = message.entities or message.caption_entities or ()
        for entity in entities:
            chunk = text[entity.offset : entity.offset + entity.length]  # offsets: PTB parses UTF-16 for us
            if entity.type == MessageEntityType.MENTION and chunk.lower() == f"@{me}":
                return True
            if entity.type == MessageEntityType.BOT_COMMAND and entity.offset == 0:
                _, _, target = chunk.partition("@")
                if not target or target.lower() == me:
                    return True
        return False

    def _strip_mention(self, text: str) -> str:
        if self.username:
            text = text.replace(f"@{self.username}", " ")
        return " ".join(text.split()) if text.strip() else ""

    def _for_another_bot(self, text: str) -> bool:
        """``/cmd@otherbot``: a command for another bot in the chat (ours lost its ``@name`` already)."""
        if not text.startswith("/"):
            return False
        mention = text[1:].partition(" ")[0].partition("@")[2]
        return bool(mention) and mention.lower() != (self.username or "").lower()

    async def _accept(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Drop an update that this or another receiver sharing the database already accepted: Telegram
        redelivers an update it saw no answer to, and a load balancer may retry one on another receiver.
        Before any handler, so a duplicate gets no answer at all, not even a refusal or a callback's ack.
        Should the database fail here, the error handler logs it and the update is handled: an answer
        twice is better than none.

        With the durable queue, an accepted update is queued behind the chat's earlier ones instead, and
        whichever receiver's worker runs it answers it (:meth:`_run_queued`)."""
        accept = self._context.accept_update
        if accept is not None and not await accept(str(self.app.bot.id), update.update_id):
            log.info("telegram.duplicate_update update=%d", update.update_id)
            raise ApplicationHandlerStop
        queue = self._context.queue
        chat = self._chat_of(update)
        # Reads and /cancel are not queued: they are answered at once, beside the chat's work, as in one
        # process (/cancel must reach that work now, not after it).
        if queue is None or chat is None or not self._for_me(update) or not self._changes_project(update):
            return
        if update.callback_query is not None:
            # Now, not when the chat's turn comes: Telegram shows the button as busy until it is answered.
            with contextlib.suppress(TelegramError):
                await update.callback_query.answer()
        ahead = await queue.defer_update(chat, update.to_dict())
        if ahead is None:
            return
        if ahead and update.effective_chat is not None and update.effective_user is not None:
            # As one process says it: this message is next, after the one being worked on.
            replies = TelegramReplies(self.app, update.effective_chat.id, settings=self.settings,
                                      group=update.effective_chat.type != ChatType.PRIVATE)
            with contextlib.suppress(TelegramError):
                await replies.send_text(t("queued", detect_language(update.effective_user.language_code,
                                                                    self._text_of(update))))
        raise ApplicationHandlerStop

    def _chat_of(self, update: Update) -> ChatKey | None:
        """The chat (session) an update belongs to, as the engine keys it; None for one it does not handle."""
        if update.message is not None and update.message.from_user is not None:
            user, chat = update.message.from_user, update.message.chat
        elif update.callback_query is not None and update.callback_query.message is not None:
            user, chat = update.callback_query.from_user, update.callback_query.message.chat
        else:
            return None
        return self._key(chat, user)

    def _key(self, chat: Chat, user: User) -> ChatKey:
        return self._context.sessions.chat_key(self.name, str(chat.id), str(user.id),
                                               is_group=chat.type != ChatType.PRIVATE)

    def _for_me(self, update: Update) -> bool:
        """Whether the handlers would take the update (an allowed user's message to the bot, or button): the
        rest is left to them, which drop it, so that nobody is told a message of theirs is queued."""
        if update.callback_query is not None:
            message = update.callback_query.message
            return message is not None and self._allowed(update.callback_query.from_user.id, message.chat.id)
        message = update.message
        if message is None or message.from_user is None or message.from_user.is_bot:
            return False
        if not self._allowed(message.from_user.id, message.chat.id):
            return False
        return bool(message.media_group_id) or self._addressed_to_me(message)

    def _text_of(self, update: Update) -> str:
        if update.callback_query is not None:
            return update.callback_query.data or ""
        if update.message is not None:
            return self._strip_mention(update.message.text or update.message.caption or "")
        return ""

    def _changes_project(self, update: Update) -> bool:
        has_files = update.message is not None and _attachment(update.message) is not None
        return changes_project(route(self._text_of(update), has_files=has_files), has_files=has_files)

    async def _run_queued(self, data: dict[str, Any], again: bool) -> None:
        """The durable queue's job for one update: handle it here, and return once its work has ended (or is
        durably handed on), so that the chat's next update starts after it, in whichever process."""
        update = Update.de_json(data, self.app.bot)
        if update.message is not None:
            operation = await self._take_message(update.message, queued=True, again=again)
        elif update.callback_query is not None:
            operation = await self._take_callback(update.callback_query, answered=True, again=again)
        else:
            return
        if operation is None:
            return
        try:
            outcome = await operation.wait()
        except asyncio.CancelledError:
            # /cancel in another process aborted this job (or this process is stopping): the work stops too.
            self.engine.abandon(operation)
            raise
        if outcome is Outcome.CANCELLED and self.engine.closing:
            # Stopped by this process's shutdown, not by the user: the job fails, so that it is run again, by
            # another receiver or by this one once it is back.
            raise RuntimeError("the bot stopped before this message was handled")

    async def _on_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if update.message is not None:
            await self._take_message(update.message)

    async def _take_message(self, message: Message, *, queued: bool = False, again: bool = False) -> Operation | None:
        if message.from_user is None or message.from_user.is_bot:
            return None
        if not self._allowed(message.from_user.id, message.chat.id):
            log.info("telegram.not_allowed chat=%s", message.chat.id)
            return None
        if message.media_group_id:
            if queued:
                return await self._queued_album(message, again=again)
            self._gather_album(message)
            return None
        if not self._addressed_to_me(message):
            return None
        return await self._dispatch([message], again=again)

    async def _queued_album(self, first: Message, *, again: bool) -> Operation | None:
        """An album's first item from the durable queue: the chat's next updates wait behind this one, so the
        rest of the album is taken out of the queue, from whichever receiver queued it, and made one request."""
        assert self._context.queue is not None
        await asyncio.sleep(self.settings.album_seconds)
        group = first.media_group_id

        def same_album(data: dict[str, Any]) -> bool:
            message = data.get("message")
            return isinstance(message, dict) and message.get("media_group_id") == group

        assert first.from_user is not None
        rest = await self._context.queue.take_queued_updates(self._key(first.chat, first.from_user), same_album)
        messages = [first]
        for data in rest:
            message = Update.de_json(data, self.app.bot).message
            if message is not None and message.from_user is not None and not message.from_user.is_bot:
                messages.append(message)
        messages.sort(key=lambda m: m.message_id)
        if any(self._addressed_to_me(m) for m in messages) or first.chat.type == ChatType.PRIVATE:
            return await self._dispatch(messages, again=again)
        return None

    def _gather_album(self, message: Message) -> None:
        """An album arrives as one update per item: wait briefly for the rest, then make one request."""
        key = f"{message.chat.id}:{message.media_group_id}"
        album = self._albums.setdefault(key, _Album())
        album.messages.append(message)
        if album.flusher is not None:
            album.flusher.cancel()

        async def flush() -> None:
            await asyncio.sleep(self.settings.album_seconds)
            self._albums.pop(key, None)
            messages = sorted(album.messages, key=lambda m: m.message_id)
            if any(self._addressed_to_me(m) for m in messages) or messages[0].chat.type == ChatType.PRIVATE:
                await self._dispatch(messages)

        album.flusher = asyncio.create_task(flush())

    async def _dispatch(self, messages: list[Message], *, again: bool = False) -> Operation | None:
        first = messages[0]
        assert first.from_user is not None
        user = first.from_user
        chat = first.chat
        is_group = chat.type != ChatType.PRIVATE
        text = next((m.text or m.caption for m in messages if m.text or m.caption), "") or ""
        text = self._strip_mention(text)
        if self._for_another_bot(text):
            log.info("telegram.other_bots_command chat=%s", chat.id)
            return None
        lang = detect_language(user.language_code, text)
        replies = TelegramReplies(self.app, chat.id, group=is_group, settings=self.settings,
                                  reply_to=first.message_id if is_group else None)
        attachments: list[Attachment] = []
        refusals: list[str] = []
        limit = self.settings.download_limit
        for m in messages:
            attachment = _attachment(m)
            if attachment is None:
                continue
            if limit is not None and attachment.size is not None and attachment.size > limit:
                # Refused from the size in the update itself: no getFile, no download (platforms.md).
                refusals.append(t("telegram_too_big", lang, name=attachment.filename,
                                  size=_megabytes(attachment.size), limit=_megabytes(limit)))
                continue
            attachments.append(attachment)
        if refusals:
            await replies.send_text("\n\n".join(refusals))
            if not attachments and (not text or route(text).intent is Intent.UPLOAD):
                return None
        incoming = IncomingMessage(
            chat=self._context.sessions.chat_key(self.name, str(chat.id), str(user.id), is_group=is_group),
            user_id=str(user.id),
            message_id=f"{chat.id}:{first.message_id}",
            text=text,
            attachments=tuple(attachments),
            locale=user.language_code,
            user_name=user.username or user.first_name,
            is_group=is_group,
            target=DeliveryTarget(address=str(chat.id), group=is_group),
        )
        return await self.engine.handle(incoming, replies, self._files, again=again)

    async def _on_callback(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if update.callback_query is not None:
            await self._take_callback(update.callback_query)

    async def _take_callback(
        self, query: CallbackQuery, *, answered: bool = False, again: bool = False
    ) -> Operation | None:
        if query.from_user is None:
            return None
        if not answered:
            with contextlib.suppress(TelegramError):
                await query.answer()
        message = query.message
        if message is None or not query.data or not self._allowed(query.from_user.id, message.chat.id):
            return None
        chat = message.chat
        is_group = chat.type != ChatType.PRIVATE
        incoming = IncomingMessage(
            chat=self._context.sessions.chat_key(self.name, str(chat.id), str(query.from_user.id), is_group=is_group),
            user_id=str(query.from_user.id),
            message_id=f"cb:{query.id}",
            text=query.data,
            locale=query.from_user.language_code,
            is_group=is_group,
            target=DeliveryTarget(address=str(chat.id), group=is_group),
        )
        replies = TelegramReplies(self.app, chat.id, group=is_group, settings=self.settings)
        return await self.engine.handle(incoming, replies, self._files, again=again)

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("telegram.handler_error error=%s", type(context.error).__name__, exc_info=context.error)
