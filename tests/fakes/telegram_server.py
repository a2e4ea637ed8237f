"""A local stand-in for the Telegram Bot API, for end-to-end tests of the real python-telegram-bot.

`FakeTelegram` is an aiohttp server on 127.0.0.1 (port 0) that speaks the Bot API wire format closely
enough that an unmodified `telegram.ext.Application` can poll it, and that a test can play the user:
enqueue messages, media and button presses, then inspect what the bot sent, edited and uploaded.

    async with FakeTelegram(tmp_dir=tmp_path / "tg") as fake:
        app = ApplicationBuilder().token(fake.token).base_url(fake.api_base).base_file_url(fake.file_base).build()
        ...
        fake.user_text(1, "/start")
        await fake.wait_for(lambda: fake.chat_messages(1))

Behaviour follows https://core.telegram.org/bots/api ("Making requests", "getUpdates", "getFile") and
what api.telegram.org answers in practice (error descriptions are copied from real responses).
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import re
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypedDict, TypeVar, Unpack
from urllib.parse import unquote, urlsplit

import aiohttp
from aiohttp import web
from aiohttp.multipart import BodyPartReader
from telegram.constants import FileSizeLimit, MessageLimit

from tests.fakes.recorded import recorded
from tests.waiting import Changes, wait_for

log = logging.getLogger(__name__)

T = TypeVar("T")
ChatId = int | str
ChatType = Literal["private", "group", "supergroup", "channel"]
JSON = dict[str, Any]

MB = 1024 * 1024  # a size unit for scripting files, not a Telegram limit
# Cloud Bot API limits (https://core.telegram.org/bots/api#getfile, #sending-files), as python-telegram-bot
# states them; a local `telegram-bot-api --local` server lifts the download limit and raises uploads.
CLOUD_DOWNLOAD_LIMIT = int(FileSizeLimit.FILESIZE_DOWNLOAD)
CLOUD_UPLOAD_LIMIT = int(FileSizeLimit.FILESIZE_UPLOAD)
LOCAL_UPLOAD_LIMIT = int(FileSizeLimit.FILESIZE_UPLOAD_LOCAL_MODE)
# Files sent by URL: "20 MB for other types of content" (#sending-files), the same figure as downloads.
URL_FETCH_LIMIT = int(FileSizeLimit.FILESIZE_DOWNLOAD)
MESSAGE_LIMIT = int(MessageLimit.MAX_TEXT_LENGTH)
CAPTION_LIMIT = int(MessageLimit.CAPTION_LENGTH)

CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)

# Form values arrive as strings; PTB JSON-encodes everything except str values
# (telegram/request/_requestparameter.py, RequestParameter.json_value). Parameters that are strings
# in the Bot API must therefore never be JSON-decoded ("123" as a text stays "123").
_STRING_PARAMS = frozenset(
    {
        "text",
        "caption",
        "parse_mode",
        "callback_query_id",
        "file_id",
        "url",
        "language_code",
        "action",
        "inline_message_id",
        "secret_token",
        "business_connection_id",
        "message_effect_id",
        "title",
        "performer",
        "file_name",
        "emoji",
        "description",
        "short_description",
        "name",
        "ip_address",
        "video",
        "document",
        "photo",
        "audio",
        "animation",
        "voice",
        "video_note",
        "thumbnail",
    }
)

_COMMAND_RE = re.compile(r"(?<!\S)/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,32})?(?![A-Za-z0-9_@])")
_MENTION_RE = re.compile(r"(?<![A-Za-z0-9_@/])@[A-Za-z0-9_]{5,32}(?![A-Za-z0-9_])")
_COMMAND_NAME_RE = re.compile(r"^[a-z0-9_]{1,32}$")
_HTML_TAG_RE = re.compile(r"</?[A-Za-z][^>]*>")


class ApiError(Exception):
    """An error answer of the Bot API: HTTP status == error_code, as api.telegram.org does."""

    def __init__(self, code: int, description: str, parameters: JSON | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters

    def body(self) -> JSON:
        body: JSON = {"ok": False, "error_code": self.code, "description": self.description}
        if self.parameters:
            body["parameters"] = self.parameters
        return body


@dataclass(frozen=True)
class UploadedFile:
    """One multipart file part the bot uploaded, streamed to disk."""

    name: str  # the API parameter it fills ("video", "thumbnail"), after resolving attach:// references
    filename: str | None
    size: int
    content_type: str | None
    path: Path

    def read_bytes(self) -> bytes:
        return self.path.read_bytes()


@dataclass
class ApiCall:
    """One Bot API request as the fake received it; `status`/`response` are filled when it is answered."""

    method: str
    params: dict[str, Any]
    files: dict[str, UploadedFile]
    at: float  # time.monotonic() at arrival, to measure the bot's pacing
    status: int | None = None
    response: JSON | None = None
    aborted: bool = False  # the client went away before the answer (e.g. a long poll cancelled on stop)

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def result(self) -> Any:
        return None if self.response is None else self.response.get("result")


@dataclass(frozen=True)
class FileRecord:
    """A file known to the fake: sent by a user, or uploaded by the bot. `path` holds its bytes."""

    file_id: str
    file_unique_id: str
    file_path: str  # relative, as getFile answers in cloud mode ("videos/file_3.mp4")
    path: Path
    size: int
    mime_type: str | None


@dataclass
class ShownMessage:
    """A message the bot sent to a chat, as the user currently sees it."""

    chat_id: ChatId
    message_id: int
    kind: str  # "text", "video", "document", "photo", "audio", "animation", "voice"
    text: str | None  # current text (or caption for media), HTML tags rendered away
    history: list[str | None]  # every version, oldest first; history[-1] == text
    reply_markup: JSON | None
    message: JSON  # the current Telegram Message object
    upload: UploadedFile | None = None
    deleted: bool = False

    @property
    def edit_count(self) -> int:
        return len(self.history) - 1


@dataclass
class _Failure:
    method: str
    error_code: int
    description: str
    retry_after: int | None
    remaining: int | None  # None: every call until cleared
    match: Callable[[dict[str, Any]], bool] | None


@dataclass
class _MediaSpec:
    kind: str  # message field, e.g. "video"
    folder: str  # Bot API storage folder, e.g. "videos"
    default_ext: str
    default_mime: str | None


_MEDIA: dict[str, _MediaSpec] = {
    "sendVideo": _MediaSpec("video", "videos", ".mp4", "video/mp4"),
    "sendDocument": _MediaSpec("document", "documents", ".bin", None),
    "sendPhoto": _MediaSpec("photo", "photos", ".jpg", "image/jpeg"),
    "sendAudio": _MediaSpec("audio", "music", ".mp3", "audio/mpeg"),
    "sendAnimation": _MediaSpec("animation", "animations", ".mp4", "video/mp4"),
    "sendVoice": _MediaSpec("voice", "voice", ".oga", "audio/ogg"),
}


class Sender(TypedDict, total=False):
    """Who plays the user in `FakeTelegram.user_*` helpers (all optional)."""

    user_id: int  # default: the chat id in private chats, 1001 elsewhere
    chat_type: ChatType  # default: the chat's known type, else "private"
    language_code: str | None  # default "en"
    first_name: str
    username: str | None
    chat_title: str
    reply_to_message_id: int | None


def utf16_len(text: str) -> int:
    """Entity offsets and lengths count UTF-16 code units (https://core.telegram.org/api/entities)."""
    return len(text.encode("utf-16-le")) // 2


def compute_entities(text: str) -> list[JSON]:
    """bot_command and mention entities, as Telegram's servers add them to incoming messages."""
    found: list[tuple[int, int, str]] = []
    for match in _COMMAND_RE.finditer(text):
        found.append((match.start(), match.end(), "bot_command"))
    for match in _MENTION_RE.finditer(text):
        found.append((match.start(), match.end(), "mention"))
    found.sort()
    return [
        {"type": kind, "offset": utf16_len(text[:start]), "length": utf16_len(text[start:end])}
        for start, end, kind in found
    ]


def render_text(text: str, parse_mode: str | None) -> str:
    """What the user reads: HTML markup removed. MarkdownV2 is left as sent (not rendered here)."""
    if parse_mode and parse_mode.lower() == "html":
        return html.unescape(_HTML_TAG_RE.sub("", text))
    return text


def _decode_param(name: str, raw: str) -> Any:
    if name in _STRING_PARAMS or raw.startswith("attach://"):
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _telegram(fixture: str, /, **values: Any) -> JSON:
    """A recorded Bot API object (tests/fixtures/telegram/<fixture>.json) with ``values`` filled in."""
    return recorded("telegram", fixture, **values)


def _user(user_id: int, first_name: str, username: str | None, language_code: str | None, *, is_bot: bool) -> JSON:
    # Telegram leaves out optional fields a user has not set, rather than sending null.
    user = _telegram(
        "user", id=user_id, is_bot=is_bot, first_name=first_name, username=username, language_code=language_code
    )
    for optional in ("username", "language_code"):
        if not user[optional]:
            del user[optional]
    return user


def _safe_name(name: str | None) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name or "upload").name)
    return cleaned[:80] or "upload"


class FakeTelegram:
    """The Bot API stand-in. Use as `async with FakeTelegram() as fake:`; see the module docstring."""

    METHODS = (
        "getMe",
        "logOut",
        "close",
        "getUpdates",
        "setWebhook",
        "deleteWebhook",
        "getWebhookInfo",
        "sendMessage",
        "editMessageText",
        "editMessageCaption",
        "editMessageReplyMarkup",
        "deleteMessage",
        "sendChatAction",
        "getFile",
        "answerCallbackQuery",
        "setMyCommands",
        "getMyCommands",
        "deleteMyCommands",
        *_MEDIA,
    )

    def __init__(
        self,
        *,
        token: str | None = None,
        bot_id: int = 999,
        username: str = "nemo_test_bot",
        first_name: str = "Nemo",
        local_mode: bool = False,
        tmp_dir: Path | None = None,
        strict_chats: bool = True,
        first_update_id: int = 1000,
    ) -> None:
        self.bot_id = bot_id
        self.username = username
        self.first_name = first_name
        self.token = token or f"{bot_id}:AAFakeTokenForTests_0123456789abcdef"
        self.local_mode = local_mode
        # Real Telegram answers "chat not found" for chats the bot never saw; tests can add_chat() first.
        self.strict_chats = strict_chats

        self.calls: list[ApiCall] = []
        self.updates: list[JSON] = []  # every update ever enqueued, in order
        self.downloads: list[str] = []  # file_path of every file served from /file/bot<token>/
        self.files: dict[str, FileRecord] = {}  # by file_id
        self.callback_answers: dict[str, JSON] = {}
        self.webhook_url: str = ""
        self.max_concurrent_get_updates = 0
        self.conflicts = 0
        self.confirmed_offset = 0

        self._tmp_dir_arg = tmp_dir
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._root: Path | None = None
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None
        self._closing = False

        self._changes = Changes()
        self._pending: list[JSON] = []
        self._next_update_id = first_update_id
        self._allowed_updates: list[str] = []
        self._active_polls = 0
        self._poll_generation = 0
        self._failures: list[_Failure] = []
        self._chats: dict[ChatId, JSON] = {}
        self._last_message_id: dict[ChatId, int] = {}
        self._messages: dict[tuple[ChatId, int], JSON] = {}
        self._shown: dict[ChatId, dict[int, ShownMessage]] = {}
        self._files_by_path: dict[str, FileRecord] = {}
        self._file_counter = 0
        self._upload_counter = 0
        self._callback_counter = 0
        self._callback_queries: dict[str, JSON] = {}
        self._commands: dict[tuple[str, str], list[JSON]] = {}
        self._canonical = {name.lower(): name for name in self.METHODS}
        self._handlers: dict[str, Callable[[ApiCall], Awaitable[Any]]] = {
            "getMe": self._get_me,
            "logOut": self._true,
            "close": self._true,
            "getUpdates": self._get_updates,
            "setWebhook": self._set_webhook,
            "deleteWebhook": self._delete_webhook,
            "getWebhookInfo": self._get_webhook_info,
            "sendMessage": self._send_message,
            "editMessageText": self._edit_message_text,
            "editMessageCaption": self._edit_message_caption,
            "editMessageReplyMarkup": self._edit_message_reply_markup,
            "deleteMessage": self._delete_message,
            "sendChatAction": self._send_chat_action,
            "getFile": self._get_file,
            "answerCallbackQuery": self._answer_callback_query,
            "setMyCommands": self._set_my_commands,
            "getMyCommands": self._get_my_commands,
            "deleteMyCommands": self._delete_my_commands,
        }
        for method in _MEDIA:
            self._handlers[method] = self._send_media

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> FakeTelegram:
        if self._tmp_dir_arg is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="fake-telegram-")
            self._root = Path(self._tmp.name)
        else:
            self._root = self._tmp_dir_arg
            self._root.mkdir(parents=True, exist_ok=True)
        (self._root / "uploads").mkdir(exist_ok=True)
        (self._root / "files").mkdir(exist_ok=True)

        app = web.Application(client_max_size=8 * MB)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_api)
        app.router.add_get("/file/bot{token}/{file_path:.+}", self._handle_file)
        # handler_cancellation: when PTB stops polling it cancels the in-flight getUpdates (closing the
        # connection) and at once sends a last getUpdates(timeout=0); the abandoned long poll must end
        # with its connection, or it would count as a second poller.
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        site = web.SockSite(self._runner, sock)
        await site.start()
        port = sock.getsockname()[1]
        self._base_url = f"http://127.0.0.1:{port}"
        log.debug("fake telegram listening on %s", self._base_url)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closing = True
        self._bump()  # lets long polls answer at once instead of holding the shutdown
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("FakeTelegram is not started; use `async with FakeTelegram() as fake`")
        return self._base_url

    @property
    def api_base(self) -> str:
        """For `ApplicationBuilder.base_url`: PTB appends the token (telegram/_bot.py, _parse_base_url)."""
        return f"{self.base_url}/bot"

    @property
    def file_base(self) -> str:
        """For `ApplicationBuilder.base_file_url`."""
        return f"{self.base_url}/file/bot"

    @property
    def root(self) -> Path:
        if self._root is None:
            raise RuntimeError("FakeTelegram is not started")
        return self._root

    @property
    def bot_user(self) -> JSON:
        return _user(self.bot_id, self.first_name, self.username, None, is_bot=True)

    # ------------------------------------------------------------------ scripting

    def fail(
        self,
        method: str,
        *,
        error_code: int = 429,
        description: str | None = None,
        retry_after: int | None = 1,
        times: int | None = 1,
        match: Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        """Answer the next `times` calls of `method` (None: all of them) with an error.

        `retry_after` becomes `parameters.retry_after` (only for 429, as Telegram sends it); `match`
        narrows the failure to calls whose params satisfy it (e.g. one chat).
        """
        if description is None:
            description = {
                429: f"Too Many Requests: retry after {retry_after}",
                400: "Bad Request",
                403: "Forbidden: bot was blocked by the user",
                500: "Internal Server Error",
                502: "Bad Gateway",
            }.get(error_code, "Error")
        canonical = self._canonical.get(method.lower(), method)
        retry = retry_after if error_code == 429 else None
        self._failures.append(_Failure(canonical, error_code, description, retry, times, match))

    def clear_failures(self) -> None:
        self._failures.clear()

    def add_chat(
        self,
        chat_id: ChatId,
        *,
        chat_type: ChatType = "private",
        title: str | None = None,
        first_name: str = "Tester",
        username: str | None = "tester",
    ) -> JSON:
        """Make a chat known (as if the user had written first), so the bot may send to it."""
        if chat_type == "private":
            chat = _telegram("private_chat", id=chat_id, first_name=first_name, username=username)
            if not username:
                del chat["username"]
        else:
            chat = _telegram("group_chat", id=chat_id, type=chat_type, title=title or f"Test {chat_type} {chat_id}")
        self._chats[chat_id] = chat
        return chat

    def register_file(
        self,
        folder: str,
        *,
        ext: str,
        size: int | None = None,
        content: bytes | Path | None = None,
        mime_type: str | None = None,
    ) -> FileRecord:
        """Register a file so getFile and /file/bot<token>/ serve it.

        Without content, a sparse file of `size` zeros is created (instant, no disk use). With content,
        `size` may still be given to claim a different size in updates than the bytes served.
        """
        self._file_counter += 1
        n = self._file_counter
        file_path = f"{folder}/file_{n}{ext}"
        if isinstance(content, Path):
            backing = content
            real_size = content.stat().st_size
        else:
            backing = self.root / "files" / file_path
            backing.parent.mkdir(parents=True, exist_ok=True)
            if content is not None:
                backing.write_bytes(content)
                real_size = len(content)
            else:
                if size is None:
                    raise ValueError("give the file's size or its content")
                with backing.open("wb") as fh:
                    fh.truncate(size)
                real_size = size
        record = FileRecord(
            file_id=f"FAKE{folder.upper()}{n:06d}",
            file_unique_id=f"AQAD{n:06d}",
            file_path=file_path,
            path=backing,
            size=real_size if size is None else size,
            mime_type=mime_type,
        )
        self.files[record.file_id] = record
        self._files_by_path[file_path] = record
        return record

    # ------------------------------------------------------------------ playing the user

    def user_text(self, chat_id: ChatId, text: str, **who: Unpack[Sender]) -> JSON:
        """The user sends `text`; bot_command and mention entities are added as Telegram does."""
        body: JSON = {"text": text}
        entities = compute_entities(text)
        if entities:
            body["entities"] = entities
        return self._user_message(chat_id, body, who)

    def user_video(
        self,
        chat_id: ChatId,
        *,
        file_size: int | None = None,
        caption: str | None = None,
        media_group_id: str | None = None,
        duration: int = 5,
        width: int = 1280,
        height: int = 720,
        mime_type: str = "video/mp4",
        file_name: str | None = None,
        content: bytes | Path | None = None,
        **who: Unpack[Sender],
    ) -> JSON:
        record = self.register_file("videos", ext=".mp4", size=file_size, content=content, mime_type=mime_type)
        video = _telegram(
            "video", **self._file_fields(record), width=width, height=height, duration=duration, mime_type=mime_type
        )
        if file_name:
            video["file_name"] = file_name
        return self._user_message(chat_id, self._media_body("video", video, caption, media_group_id), who)

    def user_photo(
        self,
        chat_id: ChatId,
        *,
        width: int = 1280,
        height: int = 720,
        file_size: int | None = None,
        caption: str | None = None,
        media_group_id: str | None = None,
        content: bytes | Path | None = None,
        **who: Unpack[Sender],
    ) -> JSON:
        """A photo arrives as several sizes, smallest first; `content` is the largest one."""
        largest = self.register_file("photos", ext=".jpg", size=file_size, content=content, mime_type="image/jpeg")
        sizes: list[JSON] = []
        longest = max(width, height)
        for side in (90, 320, 800):
            if side >= longest:
                break
            scale = side / longest
            w, h = max(1, round(width * scale)), max(1, round(height * scale))
            small = self.register_file("photos", ext=".jpg", size=max(1, round(largest.size * scale * scale)))
            sizes.append(_telegram("photo_size", **self._file_fields(small), width=w, height=h))
        sizes.append(_telegram("photo_size", **self._file_fields(largest), width=width, height=height))
        return self._user_message(chat_id, self._media_body("photo", sizes, caption, media_group_id), who)

    def user_document(
        self,
        chat_id: ChatId,
        *,
        file_name: str = "file.bin",
        mime_type: str = "application/octet-stream",
        file_size: int | None = None,
        caption: str | None = None,
        media_group_id: str | None = None,
        content: bytes | Path | None = None,
        **who: Unpack[Sender],
    ) -> JSON:
        ext = Path(file_name).suffix or ".bin"
        record = self.register_file("documents", ext=ext, size=file_size, content=content, mime_type=mime_type)
        doc = _telegram("document", **self._file_fields(record), file_name=file_name, mime_type=mime_type)
        return self._user_message(chat_id, self._media_body("document", doc, caption, media_group_id), who)

    def user_audio(
        self,
        chat_id: ChatId,
        *,
        duration: int = 30,
        file_size: int | None = None,
        file_name: str = "audio.mp3",
        mime_type: str = "audio/mpeg",
        title: str | None = None,
        performer: str | None = None,
        caption: str | None = None,
        content: bytes | Path | None = None,
        **who: Unpack[Sender],
    ) -> JSON:
        record = self.register_file("music", ext=".mp3", size=file_size, content=content, mime_type=mime_type)
        audio = _telegram(
            "audio", **self._file_fields(record), duration=duration, file_name=file_name, mime_type=mime_type
        )
        if title:
            audio["title"] = title
        if performer:
            audio["performer"] = performer
        return self._user_message(chat_id, self._media_body("audio", audio, caption, None), who)

    def user_voice(
        self,
        chat_id: ChatId,
        *,
        duration: int = 3,
        file_size: int | None = None,
        mime_type: str = "audio/ogg",
        caption: str | None = None,
        content: bytes | Path | None = None,
        **who: Unpack[Sender],
    ) -> JSON:
        record = self.register_file("voice", ext=".oga", size=file_size, content=content, mime_type=mime_type)
        voice = _telegram("voice", **self._file_fields(record), duration=duration, mime_type=mime_type)
        return self._user_message(chat_id, self._media_body("voice", voice, caption, None), who)

    def user_video_note(
        self,
        chat_id: ChatId,
        *,
        duration: int = 5,
        length: int = 240,
        file_size: int | None = None,
        content: bytes | Path | None = None,
        **who: Unpack[Sender],
    ) -> JSON:
        record = self.register_file("video_notes", ext=".mp4", size=file_size, content=content, mime_type="video/mp4")
        note = _telegram("video_note", **self._file_fields(record), duration=duration, length=length)
        return self._user_message(chat_id, {"video_note": note}, who)

    def user_animation(
        self,
        chat_id: ChatId,
        *,
        duration: int = 3,
        width: int = 320,
        height: int = 240,
        file_size: int | None = None,
        file_name: str = "animation.mp4",
        mime_type: str = "video/mp4",
        caption: str | None = None,
        content: bytes | Path | None = None,
        **who: Unpack[Sender],
    ) -> JSON:
        """A GIF; Telegram fills both `animation` and `document` for backward compatibility."""
        record = self.register_file("animations", ext=".mp4", size=file_size, content=content, mime_type=mime_type)
        animation = _telegram(
            "animation",
            **self._file_fields(record),
            width=width,
            height=height,
            duration=duration,
            file_name=file_name,
            mime_type=mime_type,
        )
        document = _telegram("document", **self._file_fields(record), file_name=file_name, mime_type=mime_type)
        body = self._media_body("animation", animation, caption, None)
        body["document"] = document
        return self._user_message(chat_id, body, who)

    def callback_query(
        self,
        chat_id: ChatId,
        message_id: int,
        data: str,
        *,
        user_id: int | None = None,
        first_name: str = "Tester",
        username: str | None = "tester",
        language_code: str | None = "en",
    ) -> JSON:
        """The user presses an inline button with `data` under the bot's message `message_id`."""
        self._callback_counter += 1
        query_id = str(4_000_000_000_000_000_000 + self._callback_counter)
        chat = self._chats.get(chat_id) or self.add_chat(chat_id)
        uid = user_id if user_id is not None else self._default_user_id(chat_id, chat["type"])
        message = self._messages.get((chat_id, message_id))
        if message is None:
            # What Telegram sends for a message the bot can no longer see (date 0).
            message = {"chat": chat, "message_id": message_id, "date": 0}
        query = _telegram(
            "callback_query",
            id=query_id,
            message=message,
            chat_instance=str(7_000_000_000 + abs(hash(chat_id)) % 1_000_000_000),
            data=data,
            **{"from": self._user_obj(uid, first_name, username, language_code)},
        )
        self._callback_queries[query_id] = query
        self._enqueue({"callback_query": query})
        return query

    # ------------------------------------------------------------------ inspecting

    def calls_to(self, method: str) -> list[ApiCall]:
        canonical = self._canonical.get(method.lower(), method)
        return [call for call in self.calls if call.method == canonical]

    def chat_messages(self, chat_id: ChatId, *, include_deleted: bool = False) -> list[ShownMessage]:
        shown = self._shown.get(chat_id, {})
        return [shown[mid] for mid in sorted(shown) if include_deleted or not shown[mid].deleted]

    def sent_videos(self, chat_id: ChatId) -> list[ShownMessage]:
        return [m for m in self.chat_messages(chat_id) if m.kind == "video"]

    def sent_documents(self, chat_id: ChatId) -> list[ShownMessage]:
        return [m for m in self.chat_messages(chat_id) if m.kind == "document"]

    def chat_actions(self, chat_id: ChatId) -> list[str]:
        return [
            str(c.params.get("action"))
            for c in self.calls_to("sendChatAction")
            if c.ok and c.params.get("chat_id") == chat_id
        ]

    def pending_updates(self) -> list[JSON]:
        """Updates not yet confirmed by a getUpdates offset."""
        return list(self._pending)

    def delivered_update_ids(self) -> list[int]:
        """update_id of every update in every answered getUpdates (a re-delivery appears twice)."""
        ids: list[int] = []
        for call in self.calls_to("getUpdates"):
            if call.ok and isinstance(call.result, list):
                ids.extend(int(u["update_id"]) for u in call.result)
        return ids

    def commands(self, *, scope: JSON | None = None, language_code: str = "") -> list[JSON]:
        return list(self._commands.get(self._commands_key(scope, language_code), []))

    @property
    def active_get_updates(self) -> int:
        return self._active_polls

    def notify(self) -> None:
        """Wake `wait_for` waiters; for predicates over state the fake does not see (a handler's list)."""
        self._bump()

    async def wait_for(
        self, predicate: Callable[[], T | None], *, within: float = 10.0, what: str | None = None
    ) -> T:
        """Wait until `predicate()` is truthy and return its value.

        Re-checked whenever the fake records or answers a call, serves a file, or enqueues an update
        (or on `notify()`): no polling interval, and a WaitTimeout naming the last calls on the deadline.
        """
        return await wait_for(
            predicate, within=within, what=what or "condition", changes=self._changes, details=self._recent_calls
        )

    def _recent_calls(self) -> str:
        return "last calls: " + ", ".join(f"{c.method}->{c.status}" for c in self.calls[-8:])

    # ------------------------------------------------------------------ HTTP layer

    def _bump(self) -> None:
        self._changes.notify()

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return web.json_response(ApiError(401, "Unauthorized").body(), status=401)
        raw_method = request.match_info["method"]
        # Bot API method names are case-insensitive.
        method = self._canonical.get(raw_method.lower(), raw_method)
        call = ApiCall(method=method, params={}, files={}, at=time.monotonic())
        try:
            try:
                call.params, call.files = await self._read_params(request)
            finally:
                self.calls.append(call)
                self._bump()
            failure = self._take_failure(method, call.params)
            if failure is not None:
                parameters = {"retry_after": failure.retry_after} if failure.retry_after is not None else None
                raise ApiError(failure.error_code, failure.description, parameters)
            handler = self._handlers.get(method)
            if handler is None:
                raise ApiError(404, "Not Found: method not found")
            body: JSON = {"ok": True, "result": await handler(call)}
            status = 200
        except ApiError as exc:
            body, status = exc.body(), exc.code
        except asyncio.CancelledError:
            call.aborted = True
            self._bump()
            raise
        call.status, call.response = status, body
        self._bump()
        log.debug("bot api call method=%s status=%s", method, status)
        return web.json_response(body, status=status)

    async def _handle_file(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return web.json_response(ApiError(401, "Unauthorized").body(), status=401)
        file_path = unquote(request.match_info["file_path"])
        record = self._files_by_path.get(file_path)
        if record is None or not record.path.is_file():
            return web.json_response(ApiError(404, "Not Found").body(), status=404)
        self.downloads.append(file_path)
        self._bump()
        # FileResponse streams from disk (sendfile), so big files never sit in memory here.
        return web.FileResponse(record.path, headers={"Content-Type": record.mime_type or "application/octet-stream"})

    async def _read_params(self, request: web.Request) -> tuple[dict[str, Any], dict[str, UploadedFile]]:
        params: dict[str, Any] = {key: _decode_param(key, value) for key, value in request.query.items()}
        parts: dict[str, UploadedFile] = {}
        if request.can_read_body:
            content_type = request.content_type
            if content_type == "application/json":
                try:
                    body = await request.json()
                except ValueError as exc:
                    raise ApiError(400, "Bad Request: can't parse JSON object") from exc
                if not isinstance(body, dict):
                    raise ApiError(400, "Bad Request: JSON object expected")
                params.update(body)
            elif content_type.startswith("multipart/"):
                reader = await request.multipart()
                while (part := await reader.next()) is not None:
                    if not isinstance(part, BodyPartReader):
                        await part.release()
                        continue
                    name = part.name or ""
                    if part.filename is None:
                        params[name] = _decode_param(name, await part.text())
                    else:
                        parts[name] = await self._stream_part(part, name)
            else:
                form = await request.post()
                params.update({key: _decode_param(key, value) for key, value in form.items() if isinstance(value, str)})
        files: dict[str, UploadedFile] = {}
        for part_name, upload in parts.items():
            # PTB uploads thumbnails and InputMedia as attach://<random name> (RequestParameter
            # ._value_and_input_files_from_input): key them by the parameter that references them.
            key = next((k for k, v in params.items() if v == f"attach://{part_name}"), part_name)
            files[key] = replace(upload, name=key)
        limit = LOCAL_UPLOAD_LIMIT if self.local_mode else CLOUD_UPLOAD_LIMIT
        if sum(upload.size for upload in files.values()) > limit:
            raise ApiError(413, "Request Entity Too Large")
        return params, files

    async def _stream_part(self, part: BodyPartReader, name: str) -> UploadedFile:
        self._upload_counter += 1
        dest = self.root / "uploads" / f"{self._upload_counter:04d}-{_safe_name(part.filename)}"
        size = 0
        limit = LOCAL_UPLOAD_LIMIT if self.local_mode else CLOUD_UPLOAD_LIMIT
        with dest.open("wb") as fh:
            while chunk := await part.read_chunk(256 * 1024):
                size += len(chunk)
                if size <= limit:  # past the limit the body is drained, not stored: the answer will be 413
                    fh.write(chunk)
        return UploadedFile(
            name=name,
            filename=part.filename,
            size=size,
            content_type=part.headers.get(aiohttp.hdrs.CONTENT_TYPE),
            path=dest,
        )

    def _take_failure(self, method: str, params: dict[str, Any]) -> _Failure | None:
        for failure in self._failures:
            if failure.method != method or (failure.match is not None and not failure.match(params)):
                continue
            if failure.remaining is not None:
                failure.remaining -= 1
                if failure.remaining <= 0:
                    self._failures.remove(failure)
            return failure
        return None

    # ------------------------------------------------------------------ updates

    def _enqueue(self, payload: JSON) -> JSON:
        update = {"update_id": self._next_update_id, **payload}
        self._next_update_id += 1
        self.updates.append(update)
        self._pending.append(update)
        self._bump()
        return update

    def _confirm(self, offset: int) -> None:
        # https://core.telegram.org/bots/api#getupdates: an update is confirmed by an offset higher
        # than its id; a negative offset keeps only the last -offset updates.
        if offset > 0:
            self._pending = [u for u in self._pending if u["update_id"] >= offset]
            self.confirmed_offset = max(self.confirmed_offset, offset)
        elif offset < 0:
            self._pending = self._pending[offset:]

    def _deliverable(self, limit: int) -> list[JSON]:
        allowed = set(self._allowed_updates)
        out = [u for u in self._pending if not allowed or (set(u) - {"update_id"}) & allowed]
        return out[:limit]

    async def _get_updates(self, call: ApiCall) -> list[JSON]:
        if self.webhook_url:
            raise ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        params = call.params
        offset = int(params.get("offset") or 0)
        limit = min(100, max(1, int(params.get("limit") or 100)))
        timeout = max(0.0, float(params.get("timeout") or 0))
        if isinstance(params.get("allowed_updates"), list):
            self._allowed_updates = [str(kind) for kind in params["allowed_updates"]]
        self._confirm(offset)

        self._poll_generation += 1
        generation = self._poll_generation
        self._active_polls += 1
        self.max_concurrent_get_updates = max(self.max_concurrent_get_updates, self._active_polls)
        if self._active_polls > 1:
            # Telegram ends the older request: it answers 409 "terminated by other getUpdates request".
            self.conflicts += 1
            self._bump()
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while True:
                if generation != self._poll_generation:
                    raise ApiError(
                        409,
                        "Conflict: terminated by other getUpdates request; "
                        "make sure that only one bot instance is running",
                    )
                changed = self._changes.ticket()
                ready = self._deliverable(limit)
                remaining = deadline - loop.time()
                if ready or remaining <= 0 or self._closing:
                    return ready
                await Changes.wait(changed, remaining)
        finally:
            self._active_polls -= 1

    async def _set_webhook(self, call: ApiCall) -> bool:
        url = str(call.params.get("url") or "")
        if url and not url.startswith("https://"):
            raise ApiError(400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook")
        self.webhook_url = url
        if call.params.get("drop_pending_updates") is True:
            self._pending.clear()
        return True

    async def _delete_webhook(self, call: ApiCall) -> bool:
        self.webhook_url = ""
        if call.params.get("drop_pending_updates") is True:
            self._pending.clear()
        return True

    async def _get_webhook_info(self, call: ApiCall) -> JSON:
        return _telegram("webhook_info", url=self.webhook_url, pending_update_count=len(self._pending))

    # ------------------------------------------------------------------ bot identity, misc

    async def _get_me(self, call: ApiCall) -> JSON:
        return _telegram("get_me", **self.bot_user)

    async def _true(self, call: ApiCall) -> bool:
        return True

    @staticmethod
    def _commands_key(scope: Any, language_code: Any) -> tuple[str, str]:
        scope = scope if isinstance(scope, dict) else {"type": "default"}
        return json.dumps(scope, sort_keys=True), str(language_code or "")

    async def _set_my_commands(self, call: ApiCall) -> bool:
        commands = call.params.get("commands")
        if not isinstance(commands, list) or len(commands) > 100:
            raise ApiError(400, "Bad Request: can't parse commands JSON object")
        for command in commands:
            if not isinstance(command, dict) or not _COMMAND_NAME_RE.match(str(command.get("command", ""))):
                raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", ""))) <= 256:
                raise ApiError(400, "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID")
        key = self._commands_key(call.params.get("scope"), call.params.get("language_code"))
        self._commands[key] = [{"command": c["command"], "description": c["description"]} for c in commands]
        return True

    async def _get_my_commands(self, call: ApiCall) -> list[JSON]:
        return self.commands(scope=call.params.get("scope"), language_code=str(call.params.get("language_code") or ""))

    async def _delete_my_commands(self, call: ApiCall) -> bool:
        self._commands.pop(self._commands_key(call.params.get("scope"), call.params.get("language_code")), None)
        return True

    async def _answer_callback_query(self, call: ApiCall) -> bool:
        query_id = str(call.params.get("callback_query_id") or "")
        if query_id not in self._callback_queries or query_id in self.callback_answers:
            raise ApiError(400, "Bad Request: query is too old and response timeout expired or query ID is invalid")
        self.callback_answers[query_id] = dict(call.params)
        return True

    async def _send_chat_action(self, call: ApiCall) -> bool:
        self._chat(call.params)
        if call.params.get("action") not in CHAT_ACTIONS:
            raise ApiError(400, "Bad Request: wrong parameter action in request")
        return True

    async def _get_file(self, call: ApiCall) -> JSON:
        record = self.files.get(str(call.params.get("file_id") or ""))
        if record is None:
            raise ApiError(400, "Bad Request: invalid file_id")
        result = self._file_fields(record)
        if self.local_mode:
            # telegram-bot-api --local answers absolute paths on its own disk and has no size limit.
            result["file_path"] = str(record.path.resolve())
            return result
        if record.size > CLOUD_DOWNLOAD_LIMIT:
            raise ApiError(400, "Bad Request: file is too big")
        if Path(record.file_path).is_file():
            # PTB would take this for a local-mode path (telegram/_bot.py get_file, is_local_file).
            log.warning("file_path %s exists in the working directory; PTB will read it locally", record.file_path)
        result["file_path"] = record.file_path
        return result

    # ------------------------------------------------------------------ messages

    def _chat(self, params: Mapping[str, Any]) -> JSON:
        chat_id = params.get("chat_id")
        if chat_id is None or chat_id == "":
            raise ApiError(400, "Bad Request: chat_id is empty")
        if isinstance(chat_id, str) and chat_id.lstrip("-").isdigit():
            chat_id = int(chat_id)
        chat = self._chats.get(chat_id)
        if chat is None:
            if self.strict_chats or not isinstance(chat_id, int):
                raise ApiError(400, "Bad Request: chat not found")
            chat = self.add_chat(chat_id)
        return chat

    def _next_message_id(self, chat_id: ChatId) -> int:
        # Ids are sequential per chat and shared by both sides, as in private chats and supergroups.
        self._last_message_id[chat_id] = self._last_message_id.get(chat_id, 0) + 1
        return self._last_message_id[chat_id]

    def _reply_to(self, chat: JSON, params: Mapping[str, Any]) -> JSON | None:
        reply = params.get("reply_parameters")
        if isinstance(reply, dict):
            message_id, allow_missing = reply.get("message_id"), bool(reply.get("allow_sending_without_reply"))
        else:
            message_id, allow_missing = (
                params.get("reply_to_message_id"),
                bool(params.get("allow_sending_without_reply")),
            )
        if message_id is None:
            return None
        original = self._messages.get((chat["id"], int(message_id)))
        if original is None:
            if allow_missing:
                return None
            raise ApiError(400, "Bad Request: message to be replied not found")
        return {k: v for k, v in original.items() if k != "reply_to_message"}

    def _bot_message(self, chat: JSON, params: Mapping[str, Any], body: JSON) -> JSON:
        message = _telegram(
            "message",
            message_id=self._next_message_id(chat["id"]),
            chat=chat,
            date=int(time.time()),
            **{"from": self.bot_user},
        )
        message.update(body)
        reply_to = self._reply_to(chat, params)
        if reply_to is not None:
            message["reply_to_message"] = reply_to
        markup = params.get("reply_markup")
        # Only inline keyboards are echoed back in the sent Message.
        if isinstance(markup, dict) and "inline_keyboard" in markup:
            message["reply_markup"] = markup
        self._messages[(chat["id"], message["message_id"])] = message
        return message

    def _show(self, message: JSON, kind: str, text: str | None, upload: UploadedFile | None = None) -> None:
        chat_id = message["chat"]["id"]
        self._shown.setdefault(chat_id, {})[message["message_id"]] = ShownMessage(
            chat_id=chat_id,
            message_id=message["message_id"],
            kind=kind,
            text=text,
            history=[text],
            reply_markup=message.get("reply_markup"),
            message=message,
            upload=upload,
        )

    async def _send_message(self, call: ApiCall) -> JSON:
        params = call.params
        chat = self._chat(params)
        raw = params.get("text")
        if not isinstance(raw, str) or not raw.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        text = render_text(raw, params.get("parse_mode"))
        if utf16_len(text) > MESSAGE_LIMIT:
            raise ApiError(400, "Bad Request: message is too long")
        body: JSON = {"text": text}
        if isinstance(params.get("entities"), list):
            body["entities"] = params["entities"]
        message = self._bot_message(chat, params, body)
        self._show(message, "text", text)
        return message

    def _editable(self, params: Mapping[str, Any]) -> tuple[JSON, ShownMessage]:
        if params.get("inline_message_id"):
            raise ApiError(400, "Bad Request: MESSAGE_ID_INVALID")
        chat = self._chat(params)
        message_id = params.get("message_id")
        if message_id is None:
            raise ApiError(400, "Bad Request: message identifier is not specified")
        message = self._messages.get((chat["id"], int(message_id)))
        if message is None:
            raise ApiError(400, "Bad Request: message to edit not found")
        shown = self._shown.get(chat["id"], {}).get(int(message_id))
        if shown is None:
            raise ApiError(400, "Bad Request: message can't be edited")
        if shown.deleted:
            raise ApiError(400, "Bad Request: message to edit not found")
        return message, shown

    @staticmethod
    def _inline_markup(params: Mapping[str, Any]) -> JSON | None:
        markup = params.get("reply_markup")
        return markup if isinstance(markup, dict) and "inline_keyboard" in markup else None

    def _apply_edit(
        self, shown: ShownMessage, message: JSON, field_name: str, text: str | None, markup: JSON | None
    ) -> JSON:
        # An edit without reply_markup removes the inline keyboard, as Telegram does.
        current = message.get(field_name)
        if current == text and message.get("reply_markup") == markup:
            raise ApiError(
                400,
                "Bad Request: message is not modified: specified new message content and reply markup are "
                "exactly the same as a current content and reply markup of the message",
            )
        updated = {k: v for k, v in message.items() if k not in ("reply_markup", field_name, "edit_date")}
        if text is not None:
            updated[field_name] = text
        if markup is not None:
            updated["reply_markup"] = markup
        updated["edit_date"] = int(time.time())
        self._messages[(message["chat"]["id"], message["message_id"])] = updated
        if shown.text != text:
            shown.history.append(text)
        shown.text = text
        shown.reply_markup = markup
        shown.message = updated
        return updated

    async def _edit_message_text(self, call: ApiCall) -> JSON:
        params = call.params
        message, shown = self._editable(params)
        if "text" not in message:
            raise ApiError(400, "Bad Request: there is no text in the message to edit")
        raw = params.get("text")
        if not isinstance(raw, str) or not raw.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        text = render_text(raw, params.get("parse_mode"))
        if utf16_len(text) > MESSAGE_LIMIT:
            raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
        return self._apply_edit(shown, message, "text", text, self._inline_markup(params))

    async def _edit_message_caption(self, call: ApiCall) -> JSON:
        params = call.params
        message, shown = self._editable(params)
        if "text" in message:
            raise ApiError(400, "Bad Request: there is no caption in the message to edit")
        raw = params.get("caption")
        caption = render_text(raw, params.get("parse_mode")) if isinstance(raw, str) and raw else None
        if caption is not None and utf16_len(caption) > CAPTION_LIMIT:
            raise ApiError(400, "Bad Request: message caption is too long")
        return self._apply_edit(shown, message, "caption", caption, self._inline_markup(params))

    async def _edit_message_reply_markup(self, call: ApiCall) -> JSON:
        message, shown = self._editable(call.params)
        field_name = "text" if "text" in message else "caption"
        return self._apply_edit(shown, message, field_name, message.get(field_name), self._inline_markup(call.params))

    async def _delete_message(self, call: ApiCall) -> bool:
        chat = self._chat(call.params)
        key = (chat["id"], int(call.params.get("message_id") or 0))
        if key not in self._messages:
            raise ApiError(400, "Bad Request: message to delete not found")
        del self._messages[key]
        shown = self._shown.get(chat["id"], {}).get(key[1])
        if shown is not None:
            shown.deleted = True
        return True

    async def _send_media(self, call: ApiCall) -> JSON:
        spec = _MEDIA[call.method]
        params = call.params
        chat = self._chat(params)
        raw_caption = params.get("caption")
        caption = (
            render_text(raw_caption, params.get("parse_mode")) if isinstance(raw_caption, str) and raw_caption else None
        )
        if caption is not None and utf16_len(caption) > CAPTION_LIMIT:
            raise ApiError(400, "Bad Request: message caption is too long")
        upload = call.files.get(spec.kind)
        record = await self._media_record(spec, params.get(spec.kind), upload)
        fields = self._file_fields(record)
        media: JSON | list[JSON]
        if spec.kind == "photo":
            media = [{**fields, "width": int(params.get("width") or 1280), "height": int(params.get("height") or 720)}]
        else:
            media = dict(fields)
            if record.mime_type and spec.kind != "voice":
                media["mime_type"] = record.mime_type
            if spec.kind in ("video", "animation"):
                media.update(
                    width=int(params.get("width") or 0),
                    height=int(params.get("height") or 0),
                    duration=int(params.get("duration") or 0),
                )
            elif spec.kind in ("audio", "voice"):
                media["duration"] = int(params.get("duration") or 0)
            if upload is not None and upload.filename and spec.kind in ("document", "video", "audio", "animation"):
                media["file_name"] = upload.filename
            thumb = call.files.get("thumbnail")
            if thumb is not None:
                thumb_record = self.register_file("thumbnails", ext=".jpg", content=thumb.path, mime_type="image/jpeg")
                media["thumbnail"] = {**self._file_fields(thumb_record), "width": 320, "height": 180}
        body = self._media_body(spec.kind, media, caption, None)
        if spec.kind == "animation" and isinstance(media, dict):
            body["document"] = {k: v for k, v in media.items() if k not in ("width", "height", "duration")}
        message = self._bot_message(chat, params, body)
        self._show(message, spec.kind, caption, upload)
        return message

    async def _media_record(self, spec: _MediaSpec, value: Any, upload: UploadedFile | None) -> FileRecord:
        if upload is not None:
            ext = Path(upload.filename or "").suffix or spec.default_ext
            mime = upload.content_type if upload.content_type not in (None, "application/octet-stream") else None
            return self.register_file(spec.folder, ext=ext, content=upload.path, mime_type=mime or spec.default_mime)
        if not isinstance(value, str) or not value:
            raise ApiError(400, f"Bad Request: there is no {spec.kind} in the request")
        if value.startswith("file://"):
            # PTB in local mode sends file:// URIs instead of uploading (telegram/_utils/files.py parse_file_input).
            path = Path(unquote(urlsplit(value).path))
            if not self.local_mode or not path.is_file():
                raise ApiError(400, "Bad Request: wrong file identifier/HTTP URL specified")
            return self.register_file(
                spec.folder, ext=path.suffix or spec.default_ext, content=path, mime_type=spec.default_mime
            )
        if value.startswith(("http://", "https://")):
            return await self._fetch_url(spec, value)
        record = self.files.get(value)
        if record is None:
            raise ApiError(400, "Bad Request: wrong file identifier/HTTP URL specified")
        return record

    async def _fetch_url(self, spec: _MediaSpec, url: str) -> FileRecord:
        # Telegram downloads files sent by URL itself (up to 20 MB); this fake can only reach local servers.
        self._upload_counter += 1
        dest = self.root / "uploads" / f"{self._upload_counter:04d}-url{spec.default_ext}"
        size = 0
        try:
            async with aiohttp.ClientSession() as session, session.get(url) as response:
                if response.status != 200:
                    raise ApiError(400, "Bad Request: failed to get HTTP URL content")
                with dest.open("wb") as fh:
                    async for chunk in response.content.iter_chunked(256 * 1024):
                        size += len(chunk)
                        if size > URL_FETCH_LIMIT:
                            raise ApiError(400, "Bad Request: failed to get HTTP URL content")
                        fh.write(chunk)
        except aiohttp.ClientError as exc:
            raise ApiError(400, "Bad Request: failed to get HTTP URL content") from exc
        return self.register_file(spec.folder, ext=spec.default_ext, content=dest, mime_type=spec.default_mime)

    # ------------------------------------------------------------------ building user updates

    @staticmethod
    def _file_fields(record: FileRecord) -> JSON:
        return {"file_id": record.file_id, "file_unique_id": record.file_unique_id, "file_size": record.size}

    @staticmethod
    def _media_body(kind: str, media: JSON | list[JSON], caption: str | None, media_group_id: str | None) -> JSON:
        body: JSON = {kind: media}
        if caption:
            body["caption"] = caption
            entities = compute_entities(caption)
            if entities:
                body["caption_entities"] = entities
        if media_group_id:
            body["media_group_id"] = media_group_id
        return body

    @staticmethod
    def _default_user_id(chat_id: ChatId, chat_type: str) -> int:
        return chat_id if chat_type == "private" and isinstance(chat_id, int) else 1001

    @staticmethod
    def _user_obj(user_id: int, first_name: str, username: str | None, language_code: str | None) -> JSON:
        return _user(user_id, first_name, username, language_code, is_bot=False)

    def _user_message(self, chat_id: ChatId, body: JSON, who: Sender) -> JSON:
        known = self._chats.get(chat_id)
        chat_type: ChatType = who.get("chat_type") or (known["type"] if known else "private")
        first_name = who.get("first_name", "Tester")
        username = who.get("username", "tester")
        if (
            known is None
            or known["type"] != chat_type
            or ("chat_title" in who and known.get("title") != who["chat_title"])
        ):
            known = self.add_chat(
                chat_id, chat_type=chat_type, title=who.get("chat_title"), first_name=first_name, username=username
            )
        user_id = who.get("user_id")
        if user_id is None:
            user_id = self._default_user_id(chat_id, chat_type)
        message = _telegram(
            "message",
            message_id=self._next_message_id(chat_id),
            chat=known,
            date=int(time.time()),
            **{"from": self._user_obj(user_id, first_name, username, who.get("language_code", "en"))},
        )
        reply_id = who.get("reply_to_message_id")
        if reply_id is not None:
            original = self._messages.get((chat_id, reply_id))
            if original is None:
                raise LookupError(f"no message {reply_id} in chat {chat_id} to reply to")
            message["reply_to_message"] = {k: v for k, v in original.items() if k != "reply_to_message"}
        message.update(body)
        self._messages[(chat_id, message["message_id"])] = message
        self._enqueue({"message": message})
        return message
