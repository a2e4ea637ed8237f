"""A local Discord stand-in for end-to-end tests: REST API v10 and the gateway, on aiohttp.web at 127.0.0.1.

The real discord.py client runs against it unmodified once it is pointed here (``discord_py_pointed_at``).
Tests play users and moderators through the scripting methods (``slash``, ``message_command``,
``user_message``), script trouble (``rate_limit``, ``expire_interaction``, ``request_reconnect``,
``drop_gateway``) and read what the bot did from the recordings (``calls``, ``interaction_responses``,
``channel_messages``), waiting with ``wait_for`` instead of sleeping.

Scope: one application and its bot user; guilds with roles, members and text channels; DMs; chat-input and
message context-menu commands; interaction callbacks, original-response edits and follow-ups; message
history; attachments served from here. The world is meant to be set up before the client connects: later
additions are visible over REST but not pushed over the gateway. Anything not modelled answers a JSON 404,
like an unknown Discord route, so a test notices instead of passing by accident.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import fnmatch
import json
import logging
import math
import mimetypes
import re
import secrets
import shutil
import tempfile
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self, TypeVar

import yarl
from aiohttp import BodyPartReader, WSCloseCode, WSMsgType, web

from tests.fakes.recorded import recorded as recorded_payload
from tests.waiting import Changes, wait_for

log = logging.getLogger(__name__)

T = TypeVar("T")
Payload = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MiB = 1024 * 1024
API_VERSION = 10
# Since January 2025 the default upload limit is 10 MiB; every interaction carries its own limit.
DEFAULT_ATTACHMENT_SIZE_LIMIT = 10 * MiB
DISCORD_EPOCH_MS = 1_420_070_400_000
MAX_MESSAGE_LENGTH = 2000
_CHUNK = 256 * 1024
# Fields of an application command that a bulk overwrite stores as sent; the rest of the recorded shape
# (tests/fixtures/discord/application_command.json) holds Discord's defaults.
_COMMAND_FIELDS = (
    "name_localizations",
    "description",
    "description_localizations",
    "options",
    "default_member_permissions",
    "dm_permission",
    "contexts",
    "integration_types",
    "nsfw",
)


def _discord(fixture: str, /, **values: Any) -> Payload:
    """A recorded Discord payload (tests/fixtures/discord/<name>.json) with ``values`` filled in."""
    return recorded_payload("discord", fixture, **values)


class Perm(enum.IntFlag):
    """Permission bits (https://discord.com/developers/docs/topics/permissions)."""

    CREATE_INSTANT_INVITE = 1 << 0
    KICK_MEMBERS = 1 << 1
    BAN_MEMBERS = 1 << 2
    ADMINISTRATOR = 1 << 3
    MANAGE_CHANNELS = 1 << 4
    MANAGE_GUILD = 1 << 5
    ADD_REACTIONS = 1 << 6
    VIEW_CHANNEL = 1 << 10
    SEND_MESSAGES = 1 << 11
    MANAGE_MESSAGES = 1 << 13
    EMBED_LINKS = 1 << 14
    ATTACH_FILES = 1 << 15
    READ_MESSAGE_HISTORY = 1 << 16
    MENTION_EVERYONE = 1 << 17
    USE_EXTERNAL_EMOJIS = 1 << 18
    CHANGE_NICKNAME = 1 << 26
    USE_APPLICATION_COMMANDS = 1 << 31
    SEND_MESSAGES_IN_THREADS = 1 << 38


EVERYONE_PERMISSIONS = (
    Perm.CREATE_INSTANT_INVITE
    | Perm.ADD_REACTIONS
    | Perm.VIEW_CHANNEL
    | Perm.SEND_MESSAGES
    | Perm.EMBED_LINKS
    | Perm.ATTACH_FILES
    | Perm.READ_MESSAGE_HISTORY
    | Perm.USE_EXTERNAL_EMOJIS
    | Perm.CHANGE_NICKNAME
    | Perm.USE_APPLICATION_COMMANDS
    | Perm.SEND_MESSAGES_IN_THREADS
)
ALL_PERMISSIONS = (1 << 53) - 1


class Intent(enum.IntFlag):
    """Gateway intent bits the fake acts on."""

    GUILDS = 1 << 0
    GUILD_MEMBERS = 1 << 1
    GUILD_PRESENCES = 1 << 8
    GUILD_MESSAGES = 1 << 9
    DIRECT_MESSAGES = 1 << 12
    MESSAGE_CONTENT = 1 << 15


PRIVILEGED_INTENTS = Intent.GUILD_MEMBERS | Intent.GUILD_PRESENCES | Intent.MESSAGE_CONTENT


class Op(enum.IntEnum):
    """Gateway opcodes."""

    DISPATCH = 0
    HEARTBEAT = 1
    IDENTIFY = 2
    PRESENCE_UPDATE = 3
    VOICE_STATE_UPDATE = 4
    RESUME = 6
    RECONNECT = 7
    REQUEST_GUILD_MEMBERS = 8
    INVALID_SESSION = 9
    HELLO = 10
    HEARTBEAT_ACK = 11


class ChannelType(enum.IntEnum):
    GUILD_TEXT = 0
    DM = 1


class CallbackType(enum.IntEnum):
    """Interaction callback types."""

    PONG = 1
    CHANNEL_MESSAGE_WITH_SOURCE = 4
    DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE = 5
    DEFERRED_UPDATE_MESSAGE = 6
    UPDATE_MESSAGE = 7
    APPLICATION_COMMAND_AUTOCOMPLETE_RESULT = 8
    MODAL = 9


class OptionType(enum.IntEnum):
    SUB_COMMAND = 1
    SUB_COMMAND_GROUP = 2
    STRING = 3
    INTEGER = 4
    BOOLEAN = 5
    USER = 6
    CHANNEL = 7
    ROLE = 8
    MENTIONABLE = 9
    NUMBER = 10
    ATTACHMENT = 11


EPHEMERAL = 1 << 6
LOADING = 1 << 7
INTERACTION_APPLICATION_COMMAND = 2
COMMAND_CHAT_INPUT = 1
COMMAND_MESSAGE = 3
MESSAGE_DEFAULT = 0
MESSAGE_REPLY = 19
MESSAGE_CHAT_INPUT_COMMAND = 20
MESSAGE_CONTEXT_MENU_COMMAND = 23


def snowflake_time(snowflake: int) -> datetime:
    return datetime.fromtimestamp(((snowflake >> 22) + DISCORD_EPOCH_MS) / 1000, UTC)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    # discord.py decodes a body only when Content-Type is exactly "application/json" (http.py json_or_text);
    # web.json_response would append "; charset=utf-8" and the library would see a str, so send bytes.
    return web.Response(body=json.dumps(data).encode(), status=status, content_type="application/json", headers=headers)


class ApiError(Exception):
    """A Discord JSON error: ``{"message": ..., "code": ...}`` with an HTTP status."""

    def __init__(self, status: int, code: int, message: str, errors: Payload | None = None) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors

    def response(self) -> web.Response:
        body: Payload = {"message": self.message, "code": self.code}
        if self.errors is not None:
            body["errors"] = self.errors
        return _json_response(body, status=self.status)


def _invalid_form(field_name: str, code: str, message: str) -> ApiError:
    return ApiError(400, 50035, "Invalid Form Body", {field_name: {"_errors": [{"code": code, "message": message}]}})


# --- the world -----------------------------------------------------------------------------------------


@dataclass(eq=False)
class FakeUser:
    id: int
    username: str
    global_name: str | None = None
    bot: bool = False
    # Users can close DMs from server members; Discord then answers 50007 to the bot.
    accepts_dms: bool = True

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"

    def payload(self) -> Payload:
        data = _discord("user", id=str(self.id), username=self.username, global_name=self.global_name)
        if self.bot:
            data["bot"] = True
        return data


@dataclass(eq=False)
class FakeRole:
    id: int
    name: str
    permissions: int
    position: int = 0
    managed: bool = False
    bot_id: int | None = None

    def payload(self) -> Payload:
        data = _discord(
            "role",
            id=str(self.id),
            name=self.name,
            permissions=str(int(self.permissions)),
            position=self.position,
            managed=self.managed,
        )
        if self.bot_id is not None:
            data["tags"] = {"bot_id": str(self.bot_id)}
        return data


@dataclass(eq=False)
class FakeMember:
    user: FakeUser
    roles: list[FakeRole] = field(default_factory=list)
    nick: str | None = None
    joined_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def payload(self, *, with_user: bool = True) -> Payload:
        data = _discord(
            "member", roles=[str(role.id) for role in self.roles], nick=self.nick, joined_at=_iso(self.joined_at)
        )
        if with_user:
            data["user"] = self.user.payload()
        return data


@dataclass(eq=False)
class FakeGuild:
    id: int
    name: str
    owner_id: int
    roles: dict[int, FakeRole] = field(default_factory=dict)
    channels: dict[int, FakeChannel] = field(default_factory=dict)
    members: dict[int, FakeMember] = field(default_factory=dict)
    locale: str = "en-US"
    joined_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def everyone(self) -> FakeRole:
        # The @everyone role shares the guild's id.
        return self.roles[self.id]

    def member(self, user: FakeUser) -> FakeMember:
        try:
            return self.members[user.id]
        except KeyError:
            raise LookupError(f"{user.username} is not a member of {self.name}") from None

    def permissions_of(self, user: FakeUser) -> int:
        """Guild-level permissions; channel overwrites are not modelled, so this is also the channel value."""
        if user.id == self.owner_id:
            return ALL_PERMISSIONS
        member = self.members.get(user.id)
        if member is None:
            return 0
        value = int(self.everyone.permissions)
        for role in member.roles:
            value |= int(role.permissions)
        if value & Perm.ADMINISTRATOR:
            return ALL_PERMISSIONS
        return value

    def payload(self) -> Payload:
        return _discord(
            "guild",
            id=str(self.id),
            name=self.name,
            owner_id=str(self.owner_id),
            preferred_locale=self.locale,
            roles=[role.payload() for role in self.roles.values()],
        )


@dataclass(eq=False)
class FakeChannel:
    id: int
    name: str
    type: ChannelType = ChannelType.GUILD_TEXT
    guild: FakeGuild | None = None
    recipient: FakeUser | None = None
    position: int = 0
    topic: str | None = None
    messages: list[FakeMessage] = field(default_factory=list)

    @property
    def mention(self) -> str:
        return f"<#{self.id}>"

    @property
    def last_message_id(self) -> int | None:
        return self.messages[-1].id if self.messages else None

    def visible_messages(self) -> list[FakeMessage]:
        return [message for message in self.messages if not message.deleted]

    def payload(self) -> Payload:
        last = self.last_message_id
        if self.type is ChannelType.DM:
            assert self.recipient is not None
            return _discord(
                "dm_channel",
                id=str(self.id),
                type=int(self.type),
                last_message_id=None if last is None else str(last),
                recipients=[self.recipient.payload()],
            )
        assert self.guild is not None
        return _discord(
            "text_channel",
            id=str(self.id),
            type=int(self.type),
            guild_id=str(self.guild.id),
            name=self.name,
            position=self.position,
            topic=self.topic,
            last_message_id=None if last is None else str(last),
        )


@dataclass(eq=False)
class FakeAttachment:
    """A file a user attaches or the bot uploads. Content is given, stored on disk, or generated on demand."""

    filename: str
    size: int = 0
    content_type: str | None = None
    content: bytes | None = None
    path: Path | None = None
    description: str | None = None
    ephemeral: bool = False
    id: int = 0
    url: str = ""
    # Wall-clock expiry of the signed URL; Discord's CDN links stop working after about a day.
    expires_at: float = math.inf
    downloads: int = 0

    def __post_init__(self) -> None:
        if self.content is not None:
            if self.size and self.size != len(self.content):
                raise ValueError(f"size {self.size} does not match the {len(self.content)} content bytes")
            self.size = len(self.content)
        if self.content_type is None:
            self.content_type = mimetypes.guess_type(self.filename)[0] or "application/octet-stream"

    def iter_chunks(self) -> Iterator[bytes]:
        if self.content is not None:
            for start in range(0, len(self.content), _CHUNK):
                yield self.content[start : start + _CHUNK]
        elif self.path is not None:
            with self.path.open("rb") as handle:
                while chunk := handle.read(_CHUNK):
                    yield chunk
        else:
            # Deterministic filler, generated chunk by chunk so large fake videos cost no memory.
            seed = f"fake-discord:{self.filename}:".encode()
            block = (seed * (_CHUNK // len(seed) + 1))[:_CHUNK]
            remaining = self.size
            while remaining > 0:
                piece = block[: min(remaining, _CHUNK)]
                remaining -= len(piece)
                yield piece

    def read(self) -> bytes:
        """The whole content, for assertions on small files."""
        return b"".join(self.iter_chunks())

    def payload(self) -> Payload:
        data = _discord(
            "attachment",
            id=str(self.id),
            filename=self.filename,
            size=self.size,
            url=self.url,
            proxy_url=self.url,
            content_type=self.content_type,
        )
        if self.description is not None:
            data["description"] = self.description
        if self.ephemeral:
            data["ephemeral"] = True
        return data


@dataclass(eq=False)
class FakeMessage:
    id: int
    channel: FakeChannel
    author: FakeUser
    content: str = ""
    attachments: list[FakeAttachment] = field(default_factory=list)
    embeds: list[Payload] = field(default_factory=list)
    mentions: list[FakeUser] = field(default_factory=list)
    type: int = MESSAGE_DEFAULT
    flags: int = 0
    edited_at: datetime | None = None
    # The content after creation and after every edit, oldest first.
    content_history: list[str] = field(default_factory=list)
    webhook_id: int | None = None
    interaction: InteractionLog | None = None
    reference_id: int | None = None
    deleted: bool = False

    @property
    def created_at(self) -> datetime:
        return snowflake_time(self.id)

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def loading(self) -> bool:
        return bool(self.flags & LOADING)

    @property
    def guild(self) -> FakeGuild | None:
        return self.channel.guild

    def payload(self) -> Payload:
        data = _discord(
            "message",
            id=str(self.id),
            channel_id=str(self.channel.id),
            author=self.author.payload(),
            content=self.content,
            timestamp=_iso(self.created_at),
            edited_timestamp=_iso(self.edited_at),
            mentions=[user.payload() for user in self.mentions],
            attachments=[attachment.payload() for attachment in self.attachments],
            embeds=list(self.embeds),
            type=self.type,
            flags=self.flags,
        )
        if self.webhook_id is not None:
            data["webhook_id"] = str(self.webhook_id)
            data["application_id"] = str(self.webhook_id)
        if self.interaction is not None:
            data["interaction_metadata"] = self.interaction.metadata()
        if self.reference_id is not None:
            data["message_reference"] = {
                "type": 0,
                "message_id": str(self.reference_id),
                "channel_id": str(self.channel.id),
            }
            if self.channel.guild is not None:
                data["message_reference"]["guild_id"] = str(self.channel.guild.id)
        return data


# --- recordings ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedFile:
    """A file part of a multipart request, streamed to the fake's temporary folder."""

    field: str
    filename: str
    size: int
    content_type: str | None
    # None when the file was larger than the fake keeps (it still counted every byte).
    path: Path | None


@dataclass
class RestCall:
    method: str
    # Relative to the API base ("/channels/1/messages"); other paths ("/attachments/...") as requested.
    path: str
    query: dict[str, str]
    json: Any
    files: list[RecordedFile]
    # Loop time when the request arrived.
    at: float
    status: int = 0

    @property
    def route(self) -> str:
        return f"{self.method} {self.path}"


_CALL_KEY: web.RequestKey[RestCall] = web.RequestKey("fake_discord_call", RestCall)


@dataclass(eq=False)
class InteractionLog:
    """One scripted interaction and everything the bot answered to it."""

    id: int
    token: str
    command_name: str
    command_type: int
    user: FakeUser
    channel: FakeChannel
    attachment_size_limit: int
    created_at: float
    expires_at: float
    payload: Payload
    callback_type: int | None = None
    callback_at: float | None = None
    callback_data: Payload | None = None
    original: FakeMessage | None = None
    followups: list[FakeMessage] = field(default_factory=list)
    expired: bool = False

    @property
    def guild(self) -> FakeGuild | None:
        return self.channel.guild

    @property
    def deferred(self) -> bool:
        return self.callback_type == CallbackType.DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE

    @property
    def original_contents(self) -> list[str]:
        return [] if self.original is None else list(self.original.content_history)

    @property
    def followup_attachments(self) -> list[FakeAttachment]:
        return [attachment for message in self.followups for attachment in message.attachments]

    def metadata(self) -> Payload:
        data = _discord(
            "interaction_metadata",
            id=str(self.id),
            type=INTERACTION_APPLICATION_COMMAND,
            user=self.user.payload(),
            authorizing_integration_owners=self.payload.get("authorizing_integration_owners", {}),
            name=self.command_name,
            command_type=self.command_type,
        )
        if self.original is not None:
            data["original_response_message_id"] = str(self.original.id)
        return data


@dataclass
class RateLimitRule:
    """A scripted 429 for requests whose "METHOD /path" matches ``pattern`` (fnmatch, path after /api/v10)."""

    method: str
    path_glob: str
    retry_after: float
    times: int
    global_: bool
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return (self.method in ("*", method)) and fnmatch.fnmatchcase(path, self.path_glob)

    @property
    def exhausted(self) -> bool:
        return self.hits >= self.times


@dataclass(eq=False)
class _Connection:
    ws: web.WebSocketResponse
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Set when the fake closes the socket: the code the handler sees afterwards is the client's echo.
    server_close_code: int | None = None

    async def send(self, frame: Payload) -> None:
        # The keep-alive thread of discord.py and scripted dispatches write concurrently; one frame at a time.
        async with self.lock:
            if self.ws.closed:
                raise ConnectionResetError("gateway connection closed")
            await self.ws.send_str(json.dumps(frame))


@dataclass(eq=False)
class GatewaySession:
    session_id: str
    intents: int
    shard: list[int] | None
    seq: int = 0
    conn: _Connection | None = None
    backlog: list[Payload] = field(default_factory=list)
    invalidated: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def connected(self) -> bool:
        return self.conn is not None and not self.conn.ws.closed


def _on_shard(session: GatewaySession, guild_id: int | None) -> bool:
    """Whether a session hears a guild's events (None: a DM): a guild lives on shard
    ``(guild_id >> 22) % shard_count``, and DMs come on shard 0 (Discord's docs, "Sharding")."""
    if session.shard is None:
        return True
    shard_id, shard_count = session.shard
    return shard_id == ((guild_id >> 22) % shard_count if guild_id is not None else 0)


# --- the server ----------------------------------------------------------------------------------------


class FakeDiscord:
    """Discord's REST API and gateway for one bot, scriptable from tests. Use as an async context manager."""

    BACKLOG_LIMIT = 1000

    def __init__(
        self,
        *,
        token: str = "fake-bot-token",
        attachment_size_limit: int = DEFAULT_ATTACHMENT_SIZE_LIMIT,
        upload_limit: int = DEFAULT_ATTACHMENT_SIZE_LIMIT,
        interaction_token_lifetime: float = 15 * 60.0,
        ack_deadline: float = 3.0,
        heartbeat_interval: float = 41.25,
        attachment_url_lifetime: float = 24 * 3600.0,
        expired_token_status: int = 401,
        echo_bot_messages: bool = True,
        allowed_privileged_intents: int = PRIVILEGED_INTENTS,
        tmp_dir: Path | None = None,
        default_world: bool = True,
    ) -> None:
        self.token = token
        self.attachment_size_limit = attachment_size_limit
        self.upload_limit = upload_limit
        self.interaction_token_lifetime = interaction_token_lifetime
        self.ack_deadline = ack_deadline
        self.heartbeat_interval = heartbeat_interval
        self.attachment_url_lifetime = attachment_url_lifetime
        self.expired_token_status = expired_token_status
        # Discord delivers MESSAGE_CREATE for the bot's own messages too; adapters must ignore them.
        self.echo_bot_messages = echo_bot_messages
        self.allowed_privileged_intents = allowed_privileged_intents

        self._given_tmp_dir = tmp_dir
        self._tmp_dir: Path | None = None
        self._last_id = 0
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._connections: set[_Connection] = set()
        self._changes = Changes()
        self._sessions: dict[str, GatewaySession] = {}

        self.calls: list[RestCall] = []
        self.users: dict[int, FakeUser] = {}
        self.guilds: dict[int, FakeGuild] = {}
        self.channels: dict[int, FakeChannel] = {}
        self.messages: dict[int, FakeMessage] = {}
        self.attachments: dict[int, FakeAttachment] = {}
        self.interactions: dict[int, InteractionLog] = {}
        self.rate_limits: list[RateLimitRule] = []
        # Current application commands per guild id (None: global), as answered to the bulk overwrite.
        self.synced_commands: dict[int | None, list[Payload]] = {}
        self.sync_history: list[tuple[int | None, list[Payload]]] = []
        self.identify_count = 0
        self.resume_count = 0
        self.heartbeat_count = 0
        self.identify_payloads: list[Payload] = []
        self.server_errors: list[Exception] = []
        # Close code of every ended gateway connection, in order (None: closed without a close frame).
        self.gateway_close_codes: list[int | None] = []

        self.application_id = self._next_id()
        self.bot_user = self.add_user("nemobot", bot=True)
        self.application_owner = self.add_user("app-owner")
        if default_world:
            self.owner = self.add_user("owner")
            self.guild = self.add_guild("Test Guild", owner=self.owner)
            self.moderator_role = self.add_role(self.guild, "Moderator", EVERYONE_PERMISSIONS | Perm.MANAGE_MESSAGES)
            self.channel = self.add_text_channel(self.guild, "general")
            self.user = self.add_user("alice")
            self.add_member(self.guild, self.user)
            self.moderator = self.add_user("mod")
            self.add_member(self.guild, self.moderator, roles=[self.moderator_role])

    # --- lifecycle ---------------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._given_tmp_dir is not None:
            self._tmp_dir = self._given_tmp_dir
            self._tmp_dir.mkdir(parents=True, exist_ok=True)
        else:
            self._tmp_dir = Path(tempfile.mkdtemp(prefix="fake-discord-"))
        self._runner = web.AppRunner(self._build_app(), access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        log.debug("fake discord listening on %s", self.base_url)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for conn in list(self._connections):
            await self._close(conn, WSCloseCode.GOING_AWAY, b"fake discord shutting down")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._signal()  # wakes waiters, which then meet their deadline or a final state
        if self._given_tmp_dir is None and self._tmp_dir is not None:
            shutil.rmtree(self._tmp_dir, ignore_errors=True)
        if self.server_errors and exc_info[0] is None:
            raise RuntimeError(f"the fake Discord failed on {len(self.server_errors)} request(s)") from (
                self.server_errors[0]
            )

    @property
    def base_url(self) -> str:
        if not self._port:
            raise RuntimeError("FakeDiscord is not running; use it as an async context manager")
        return f"http://127.0.0.1:{self._port}"

    @property
    def api_base(self) -> str:
        return f"{self.base_url}/api/v{API_VERSION}"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self._port}/gateway"

    @property
    def bot_user_id(self) -> int:
        return self.bot_user.id

    # --- building the world ------------------------------------------------------------------------------

    def _next_id(self) -> int:
        # Real snowflakes carry their creation time; strictly increasing, so history order follows ids.
        candidate = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        self._last_id = max(candidate, self._last_id + 1)
        return self._last_id

    def add_user(self, username: str, *, bot: bool = False, global_name: str | None = None) -> FakeUser:
        user = FakeUser(self._next_id(), username, global_name=global_name, bot=bot)
        self.users[user.id] = user
        return user

    def add_guild(self, name: str, *, owner: FakeUser, locale: str = "en-US") -> FakeGuild:
        guild = FakeGuild(self._next_id(), name, owner.id, locale=locale)
        guild.roles[guild.id] = FakeRole(guild.id, "@everyone", int(EVERYONE_PERMISSIONS))
        self.guilds[guild.id] = guild
        self.add_member(guild, owner)
        # A bot joins with a managed role carrying the permissions of its invite link.
        bot_role = self.add_role(
            guild,
            self.bot_user.username,
            EVERYONE_PERMISSIONS | Perm.MANAGE_MESSAGES,
            managed=True,
        )
        bot_role.bot_id = self.bot_user.id
        self.add_member(guild, self.bot_user, roles=[bot_role])
        return guild

    def add_role(self, guild: FakeGuild, name: str, permissions: int, *, managed: bool = False) -> FakeRole:
        role = FakeRole(self._next_id(), name, int(permissions), position=len(guild.roles), managed=managed)
        guild.roles[role.id] = role
        return role

    def add_text_channel(self, guild: FakeGuild, name: str, *, topic: str | None = None) -> FakeChannel:
        channel = FakeChannel(self._next_id(), name, ChannelType.GUILD_TEXT, guild, position=len(guild.channels))
        channel.topic = topic
        guild.channels[channel.id] = channel
        self.channels[channel.id] = channel
        return channel

    def add_member(self, guild: FakeGuild, user: FakeUser, *, roles: Sequence[FakeRole] = ()) -> FakeMember:
        member = FakeMember(user, list(roles))
        guild.members[user.id] = member
        return member

    def dm_channel(self, user: FakeUser) -> FakeChannel:
        """The DM channel between ``user`` and the bot, created on first use (as POST /users/@me/channels)."""
        for channel in self.channels.values():
            if channel.type is ChannelType.DM and channel.recipient is user:
                return channel
        channel = FakeChannel(self._next_id(), "", ChannelType.DM, recipient=user)
        self.channels[channel.id] = channel
        return channel

    def _register_attachment(self, attachment: FakeAttachment) -> FakeAttachment:
        attachment.id = self._next_id()
        safe_name = re.sub(r"[^A-Za-z0-9._-]", "_", attachment.filename) or "file"
        now = time.time()
        attachment.expires_at = now + self.attachment_url_lifetime
        # Signed like Discord's CDN links (ex = expiry, is = issued, hm = signature); only ex is checked.
        query = f"ex={int(attachment.expires_at):x}&is={int(now):x}&hm={secrets.token_hex(16)}&"
        attachment.url = f"{self.base_url}/attachments/{attachment.id}/{safe_name}?{query}"
        self.attachments[attachment.id] = attachment
        return attachment

    def expire_attachment(self, attachment: FakeAttachment) -> None:
        """Make the attachment's signed URL answer 404, as Discord's CDN does once ``ex`` has passed."""
        attachment.expires_at = 0.0

    # --- recordings and waiting --------------------------------------------------------------------------

    def _signal(self) -> None:
        self._changes.notify()

    async def wait_for(self, predicate: Callable[[], T | None], within: float = 10.0, *, what: str = "") -> T:
        """Return the predicate's first truthy value, re-checked on every recorded call and gateway event.

        The predicate should look at the fake's state (or anything that changes together with it); for
        client-side state, wait on the client's own events instead.
        """
        return await wait_for(
            predicate, within=within, what=what or "condition", changes=self._changes, details=self._recent_calls
        )

    def _recent_calls(self) -> str:
        return "last calls: " + "; ".join(f"{call.route} -> {call.status}" for call in self.calls[-10:])

    def calls_to(self, method: str, path_glob: str) -> list[RestCall]:
        """Recorded calls whose method and path (after /api/v10, fnmatch pattern) match."""
        return [
            call for call in self.calls if method in ("*", call.method) and fnmatch.fnmatchcase(call.path, path_glob)
        ]

    def channel_messages(self, channel: FakeChannel | int, *, include_deleted: bool = False) -> list[FakeMessage]:
        """The channel's messages, oldest first."""
        found = self._channel(channel.id if isinstance(channel, FakeChannel) else channel)
        return list(found.messages) if include_deleted else found.visible_messages()

    def interaction_responses(self, interaction: InteractionLog | int) -> InteractionLog:
        interaction_id = interaction.id if isinstance(interaction, InteractionLog) else interaction
        return self.interactions[interaction_id]

    def command(self, name: str, *, guild: FakeGuild | None = None, type: int = COMMAND_CHAT_INPUT) -> Payload:
        """A synced command as Discord stores it; LookupError if the bot never synced it."""
        payload, _ = self._find_command(name, type, guild)
        return payload

    # --- scripting: failures -----------------------------------------------------------------------------

    def rate_limit(self, route: str, retry_after: float = 0.2, times: int = 1, global_: bool = False) -> RateLimitRule:
        """Answer the next ``times`` matching requests with 429.

        ``route`` is "METHOD /path-glob" or "/path-glob" (any method), the path after the API base, e.g.
        ``"PATCH /webhooks/*/messages/@original"`` or ``"POST /channels/*/messages"``.
        """
        method, _, path = route.partition(" ") if " " in route else ("*", "", route)
        path = path.removeprefix(f"/api/v{API_VERSION}")
        rule = RateLimitRule(method.upper(), path, retry_after, times, global_)
        self.rate_limits.append(rule)
        return rule

    def expire_interaction(self, interaction: InteractionLog | int | str) -> None:
        """Make the interaction's token invalid now, as after Discord's 15 minutes."""
        self._interaction_log(interaction).expired = True

    async def request_reconnect(self) -> None:
        """Send op 7 RECONNECT on every connection; discord.py closes and RESUMEs."""
        for conn in list(self._connections):
            with contextlib.suppress(ConnectionError):
                await conn.send({"op": Op.RECONNECT, "d": None, "s": None, "t": None})

    async def drop_gateway(self, code: int = 4000) -> None:
        """Close every gateway connection with ``code`` (4000: resumable, like a network blip)."""
        for conn in list(self._connections):
            await self._close(conn, code, b"dropped by test")

    @property
    def sessions(self) -> list[GatewaySession]:
        return [session for session in self._sessions.values() if not session.invalidated]

    # --- scripting: users --------------------------------------------------------------------------------

    async def user_message(
        self,
        channel: FakeChannel,
        content: str = "",
        attachments: Sequence[FakeAttachment] = (),
        author: FakeUser | None = None,
        *,
        reply_to: FakeMessage | None = None,
    ) -> FakeMessage:
        """A user posts in a channel: stored in history and dispatched as MESSAGE_CREATE."""
        author = author or self.user
        if channel.guild is not None:
            channel.guild.member(author)
        message = FakeMessage(
            self._next_id(),
            channel,
            author,
            content,
            attachments=[self._register_attachment(attachment) for attachment in attachments],
            mentions=self._mentions(content),
            type=MESSAGE_DEFAULT if reply_to is None else MESSAGE_REPLY,
            content_history=[content],
            reference_id=None if reply_to is None else reply_to.id,
        )
        self._store(message)
        await self._dispatch_message("MESSAGE_CREATE", message)
        return message

    async def slash(
        self,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        user: FakeUser | None = None,
        channel: FakeChannel | None = None,
        guild: FakeGuild | None = None,
        attachments: Sequence[FakeAttachment] = (),
        locale: str = "en-US",
        attachment_size_limit: int | None = None,
    ) -> InteractionLog:
        """A user runs a synced chat-input command; dispatched as INTERACTION_CREATE.

        ``options`` maps option names to values: str/int/float/bool, FakeUser, FakeChannel, FakeRole or
        FakeAttachment. ``attachments`` fill the command's attachment options not given in ``options``,
        in declaration order.
        """
        channel = channel or (self.channel if guild is None else next(iter(guild.channels.values())))
        guild = guild or channel.guild
        user = user or self.user
        command, command_guild_id = self._find_command(name, COMMAND_CHAT_INPUT, guild)
        resolved: dict[str, dict[str, Payload]] = {}
        encoded = self._encode_options(command, dict(options or {}), list(attachments), resolved, guild)
        data: Payload = {"id": command["id"], "name": name, "type": COMMAND_CHAT_INPUT, "options": encoded}
        if resolved:
            data["resolved"] = resolved
        if command_guild_id is not None:
            data["guild_id"] = str(command_guild_id)
        return await self._interact(name, COMMAND_CHAT_INPUT, data, user, channel, locale, attachment_size_limit)

    async def message_command(
        self,
        name: str,
        target_message: FakeMessage,
        *,
        user: FakeUser | None = None,
        locale: str = "en-US",
        attachment_size_limit: int | None = None,
    ) -> InteractionLog:
        """A user picks "Apps → <name>" on a message; dispatched as INTERACTION_CREATE (command type 3)."""
        channel = target_message.channel
        user = user or self.user
        command, command_guild_id = self._find_command(name, COMMAND_MESSAGE, channel.guild)
        data: Payload = {
            "id": command["id"],
            "name": name,
            "type": COMMAND_MESSAGE,
            "target_id": str(target_message.id),
            "resolved": {"messages": {str(target_message.id): target_message.payload()}},
        }
        if command_guild_id is not None:
            data["guild_id"] = str(command_guild_id)
        return await self._interact(name, COMMAND_MESSAGE, data, user, channel, locale, attachment_size_limit)

    async def dispatch(self, event: str, data: Payload) -> int:
        """Send a raw DISPATCH to every live session that sees it (a guild's events go to its shard only);
        returns how many sessions got it."""
        guild_id = data.get("guild_id")
        sessions = [session for session in self.sessions if _on_shard(session, int(guild_id) if guild_id else None)]
        for session in sessions:
            await self._send_dispatch(session, event, data)
        return len(sessions)

    # --- interactions ------------------------------------------------------------------------------------

    def _find_command(self, name: str, command_type: int, guild: FakeGuild | None) -> tuple[Payload, int | None]:
        scopes: list[int | None] = [guild.id] if guild is not None else []
        scopes.append(None)
        for scope in scopes:
            for command in self.synced_commands.get(scope, []):
                if command["name"] == name and command.get("type", COMMAND_CHAT_INPUT) == command_type:
                    return command, scope
        synced = {scope: [c["name"] for c in commands] for scope, commands in self.synced_commands.items()}
        raise LookupError(f"command {name!r} (type {command_type}) was never synced; synced: {synced}")

    def _encode_options(
        self,
        command: Payload,
        options: dict[str, Any],
        spare_attachments: list[FakeAttachment],
        resolved: dict[str, dict[str, Payload]],
        guild: FakeGuild | None,
    ) -> list[Payload]:
        declared = {option["name"]: option for option in command.get("options", [])}
        if any(
            option["type"] in (OptionType.SUB_COMMAND, OptionType.SUB_COMMAND_GROUP) for option in declared.values()
        ):
            raise NotImplementedError("subcommands are not modelled by the fake")
        for option in declared.values():
            if option["type"] == OptionType.ATTACHMENT and option["name"] not in options and spare_attachments:
                options[option["name"]] = spare_attachments.pop(0)
        if spare_attachments:
            raise ValueError(
                f"{len(spare_attachments)} attachment(s) left over: the command has no free attachment option"
            )
        unknown = set(options) - set(declared)
        if unknown:
            raise ValueError(f"options {sorted(unknown)} are not declared by {command['name']!r}")
        missing = [name for name, option in declared.items() if option.get("required") and name not in options]
        if missing:
            raise ValueError(f"required options {missing} missing for {command['name']!r}")
        encoded = []
        for name, value in options.items():
            option_type = declared[name]["type"]
            encoded.append(
                {"name": name, "type": option_type, "value": self._option_value(option_type, value, resolved, guild)}
            )
        return encoded

    def _option_value(
        self, option_type: int, value: Any, resolved: dict[str, dict[str, Payload]], guild: FakeGuild | None
    ) -> Any:
        if option_type == OptionType.ATTACHMENT:
            if not isinstance(value, FakeAttachment):
                raise TypeError("attachment options take a FakeAttachment")
            # Slash-command uploads are ephemeral attachments until a message uses them.
            value.ephemeral = True
            self._register_attachment(value)
            resolved.setdefault("attachments", {})[str(value.id)] = value.payload()
            return str(value.id)
        if isinstance(value, FakeUser):
            resolved.setdefault("users", {})[str(value.id)] = value.payload()
            if guild is not None and value.id in guild.members:
                member = guild.members[value.id].payload(with_user=False)
                member["permissions"] = str(guild.permissions_of(value))
                resolved.setdefault("members", {})[str(value.id)] = member
            return str(value.id)
        if isinstance(value, FakeRole):
            resolved.setdefault("roles", {})[str(value.id)] = value.payload()
            return str(value.id)
        if isinstance(value, FakeChannel):
            entry = {
                "id": str(value.id),
                "name": value.name,
                "type": int(value.type),
                "permissions": str(ALL_PERMISSIONS),
            }
            resolved.setdefault("channels", {})[str(value.id)] = entry
            return str(value.id)
        return value

    async def _interact(
        self,
        name: str,
        command_type: int,
        data: Payload,
        user: FakeUser,
        channel: FakeChannel,
        locale: str,
        attachment_size_limit: int | None,
    ) -> InteractionLog:
        if not self.sessions:
            raise RuntimeError("no client is connected to the fake gateway")
        limit = self.attachment_size_limit if attachment_size_limit is None else attachment_size_limit
        guild = channel.guild
        interaction_id = self._next_id()
        token = f"fake-interaction.{secrets.token_urlsafe(48)}"
        payload = _discord(
            "interaction",
            id=str(interaction_id),
            application_id=str(self.application_id),
            type=INTERACTION_APPLICATION_COMMAND,
            data=data,
            token=token,
            locale=locale,
            channel_id=str(channel.id),
            channel=channel.payload(),
            attachment_size_limit=limit,
        )
        if guild is not None:
            member = guild.member(user).payload()
            member["permissions"] = str(guild.permissions_of(user))
            payload.update(
                guild_id=str(guild.id),
                guild={"id": str(guild.id), "locale": guild.locale, "features": []},
                guild_locale=guild.locale,
                member=member,
                app_permissions=str(guild.permissions_of(self.bot_user)),
                authorizing_integration_owners={"0": str(guild.id)},
                context=0,
            )
            payload["channel"]["permissions"] = member["permissions"]
        else:
            payload.update(
                user=user.payload(),
                app_permissions=str(int(EVERYONE_PERMISSIONS)),
                authorizing_integration_owners={"0": "0"},
                context=1,
            )
        now = asyncio.get_running_loop().time()
        interaction = InteractionLog(
            interaction_id,
            token,
            name,
            command_type,
            user,
            channel,
            limit,
            created_at=now,
            expires_at=now + self.interaction_token_lifetime,
            payload=payload,
        )
        self.interactions[interaction_id] = interaction
        await self.dispatch("INTERACTION_CREATE", payload)
        self._signal()
        return interaction

    def _interaction_log(self, ref: InteractionLog | int | str) -> InteractionLog:
        if isinstance(ref, InteractionLog):
            return ref
        if isinstance(ref, int):
            return self.interactions[ref]
        for interaction in self.interactions.values():
            if interaction.token == ref:
                return interaction
        raise KeyError("no interaction with that token")

    def _webhook_interaction(self, request: web.Request) -> InteractionLog:
        if request.match_info["application_id"] != str(self.application_id):
            raise ApiError(404, 10015, "Unknown Webhook")
        token = request.match_info["token"]
        interaction = next((i for i in self.interactions.values() if i.token == token), None)
        now = asyncio.get_running_loop().time()
        if interaction is None or interaction.expired or now >= interaction.expires_at:
            raise ApiError(self.expired_token_status, 50027, "Invalid Webhook Token")
        return interaction

    # --- messages ----------------------------------------------------------------------------------------

    def _mentions(self, content: str) -> list[FakeUser]:
        ids = {int(match) for match in re.findall(r"<@!?(\d+)>", content)}
        return [self.users[user_id] for user_id in sorted(ids) if user_id in self.users]

    def _store(self, message: FakeMessage) -> None:
        self.messages[message.id] = message
        message.channel.messages.append(message)
        self._signal()

    def _channel(self, channel_id: int) -> FakeChannel:
        try:
            return self.channels[channel_id]
        except KeyError:
            raise ApiError(404, 10003, "Unknown Channel") from None

    def _message_in(self, channel: FakeChannel, message_id: int) -> FakeMessage:
        message = self.messages.get(message_id)
        if message is None or message.channel is not channel or message.deleted or message.ephemeral:
            raise ApiError(404, 10008, "Unknown Message")
        return message

    def _gateway_message(self, message: FakeMessage, session: GatewaySession) -> Payload | None:
        guild = message.channel.guild
        needed = Intent.GUILD_MESSAGES if guild is not None else Intent.DIRECT_MESSAGES
        if not session.intents & needed:
            return None
        data = message.payload()
        if guild is not None:
            data["guild_id"] = str(guild.id)
            if message.author.id in guild.members:
                data["member"] = guild.members[message.author.id].payload(with_user=False)
        # Without the privileged MESSAGE_CONTENT intent Discord blanks content, except in DMs, in messages
        # that mention the bot and in the bot's own messages (docs: "Message Content Intent").
        exempt = guild is None or message.author is self.bot_user or self.bot_user in message.mentions
        if not session.intents & Intent.MESSAGE_CONTENT and not exempt:
            data.update(content="", embeds=[], attachments=[], components=[])
        return data

    async def _dispatch_message(self, event: str, message: FakeMessage) -> None:
        if message.ephemeral or (message.author is self.bot_user and not self.echo_bot_messages):
            return
        guild = message.channel.guild
        for session in self.sessions:
            if not _on_shard(session, guild.id if guild is not None else None):
                continue
            data = self._gateway_message(message, session)
            if data is not None:
                await self._send_dispatch(session, event, data)

    async def _dispatch_delete(self, message: FakeMessage) -> None:
        if message.ephemeral:
            return
        data: Payload = {"id": str(message.id), "channel_id": str(message.channel.id)}
        guild = message.channel.guild
        if guild is not None:
            data["guild_id"] = str(guild.id)
        needed = Intent.GUILD_MESSAGES if guild is not None else Intent.DIRECT_MESSAGES
        for session in self.sessions:
            if session.intents & needed and _on_shard(session, guild.id if guild is not None else None):
                await self._send_dispatch(session, "MESSAGE_DELETE", data)

    def _new_attachments(
        self, payload: Payload, files: Sequence[RecordedFile], keep: Sequence[FakeAttachment] = ()
    ) -> list[FakeAttachment]:
        """Attachments of a created or edited message: uploaded ``files[n]`` plus kept existing ones."""
        declared = payload.get("attachments")
        by_index: dict[str, RecordedFile] = {}
        for recorded in files:
            match = re.fullmatch(r"files\[(\d+)\]", recorded.field) or re.fullmatch(r"file(\d*)", recorded.field)
            index = int(match.group(1) or 0) if match else len(by_index)
            by_index[str(index)] = recorded
        result: list[FakeAttachment] = []
        existing = {str(attachment.id): attachment for attachment in keep}
        if declared is None:
            # No "attachments" list: edits keep the old ones; new uploads are appended.
            result.extend(keep)
            entries: list[Payload] = [{"id": key} for key in by_index]
        else:
            entries = list(declared)
        for entry in entries:
            key = str(entry.get("id"))
            if key in existing:
                if existing[key] not in result:
                    result.append(existing[key])
            elif key in by_index:
                recorded = by_index.pop(key)
                attachment = FakeAttachment(
                    entry.get("filename") or recorded.filename,
                    recorded.size,
                    path=recorded.path,
                    description=entry.get("description"),
                )
                result.append(self._register_attachment(attachment))
        for recorded in by_index.values():
            result.append(
                self._register_attachment(FakeAttachment(recorded.filename, recorded.size, path=recorded.path))
            )
        return result

    def _check_upload(self, files: Sequence[RecordedFile], limit: int) -> None:
        for recorded in files:
            if recorded.size > limit:
                raise ApiError(413, 40005, "Request entity too large")

    def _check_body(
        self, content: str, embeds: list[Payload], attachments: list[FakeAttachment], *, creating: bool
    ) -> None:
        if len(content) > MAX_MESSAGE_LENGTH:
            raise _invalid_form("content", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_MESSAGE_LENGTH} or fewer in length.")
        if creating and not content and not embeds and not attachments:
            raise ApiError(400, 50006, "Cannot send an empty message")

    def _apply_edit(self, message: FakeMessage, body: Payload, files: Sequence[RecordedFile]) -> None:
        content = body["content"] if body.get("content") is not None else ("" if "content" in body else message.content)
        embeds = body["embeds"] if "embeds" in body else message.embeds
        attachments = self._new_attachments(body, files, keep=message.attachments)
        self._check_body(content, embeds or [], attachments, creating=False)
        message.content = content
        message.embeds = list(embeds or [])
        message.attachments = attachments
        if "flags" in body and body["flags"] is not None:
            # Only SUPPRESS_EMBEDS may be toggled on edit; ephemeral and loading stay as they were.
            message.flags = (message.flags & ~4) | (int(body["flags"]) & 4)
        message.flags &= ~LOADING
        message.edited_at = datetime.now(UTC)
        message.content_history.append(content)
        self._signal()

    def _interaction_message(
        self,
        interaction: InteractionLog,
        body: Payload,
        files: Sequence[RecordedFile],
        *,
        original: bool,
        loading: bool = False,
    ) -> FakeMessage:
        flags = int(body.get("flags") or 0) & EPHEMERAL
        if loading:
            flags |= LOADING
        content = body.get("content") or ""
        embeds = list(body.get("embeds") or [])
        attachments = self._new_attachments(body, files)
        if not loading:
            self._check_body(content, embeds, attachments, creating=True)
        message_type = MESSAGE_DEFAULT
        if original:
            message_type = (
                MESSAGE_CHAT_INPUT_COMMAND
                if interaction.command_type == COMMAND_CHAT_INPUT
                else MESSAGE_CONTEXT_MENU_COMMAND
            )
        message = FakeMessage(
            self._next_id(),
            interaction.channel,
            self.bot_user,
            content,
            attachments=attachments,
            embeds=embeds,
            mentions=self._mentions(content),
            type=message_type,
            flags=flags,
            content_history=[content],
            webhook_id=self.application_id,
            interaction=interaction,
        )
        self.messages[message.id] = message
        if not message.ephemeral:
            interaction.channel.messages.append(message)
        return message

    # --- gateway -----------------------------------------------------------------------------------------

    async def _send_dispatch(self, session: GatewaySession, event: str, data: Payload) -> None:
        async with session.lock:
            session.seq += 1
            frame = {"op": Op.DISPATCH, "t": event, "s": session.seq, "d": data}
            session.backlog.append(frame)
            del session.backlog[: -self.BACKLOG_LIMIT]
            conn = session.conn
            if conn is not None:
                try:
                    await conn.send(frame)
                except ConnectionError:
                    # Kept in the backlog: a RESUME replays it, as Discord does.
                    session.conn = None

    def _ready_payload(self, session: GatewaySession) -> Payload:
        data = _discord(
            "ready",
            v=API_VERSION,
            user=self.bot_user.payload() | {"verified": True, "mfa_enabled": False, "email": None},
            guilds=[{"id": str(guild.id), "unavailable": True} for guild in self._session_guilds(session)],
            session_id=session.session_id,
            resume_gateway_url=self.gateway_url,
        )
        data["application"]["id"] = str(self.application_id)
        if session.shard is not None:
            data["shard"] = session.shard
        return data

    def _session_guilds(self, session: GatewaySession) -> list[FakeGuild]:
        guilds = [guild for guild in self.guilds.values() if self.bot_user.id in guild.members]
        return [guild for guild in guilds if _on_shard(session, guild.id)]

    def _guild_create_payload(self, guild: FakeGuild, session: GatewaySession) -> Payload:
        members = list(guild.members.values())
        if not session.intents & Intent.GUILD_MEMBERS:
            # Without the privileged members intent, GUILD_CREATE lists only the bot itself.
            members = [member for member in members if member.user is self.bot_user]
        # GUILD_CREATE is the guild object plus the fields of tests/fixtures/discord/guild_create.json.
        return guild.payload() | _discord(
            "guild_create",
            joined_at=_iso(guild.joined_at),
            member_count=len(guild.members),
            members=[member.payload() for member in members],
            channels=[channel.payload() for channel in guild.channels.values()],
        )

    async def _gateway_handler(self, request: web.Request) -> web.StreamResponse:
        # No permessage-deflate and plain-text frames: discord.py asks for compress=zlib-stream in the query,
        # but only runs its decompressor on binary frames (gateway.py received_message), so text is fine.
        ws = web.WebSocketResponse(compress=False, max_msg_size=0)
        await ws.prepare(request)
        conn = _Connection(ws)
        self._connections.add(conn)
        session: GatewaySession | None = None
        try:
            if request.query.get("encoding", "json") != "json":
                await self._close(conn, 4002, b"Error while decoding payload.")
                return ws
            await conn.send(
                {"op": Op.HELLO, "d": {"heartbeat_interval": int(self.heartbeat_interval * 1000)}, "s": None, "t": None}
            )
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    await self._close(conn, 4002, b"Error while decoding payload.")
                    break
                try:
                    frame = json.loads(msg.data)
                    op = frame["op"]
                except (ValueError, KeyError, TypeError):
                    await self._close(conn, 4002, b"Error while decoding payload.")
                    break
                data = frame.get("d")
                if op == Op.HEARTBEAT:
                    self.heartbeat_count += 1
                    await conn.send({"op": Op.HEARTBEAT_ACK, "d": None, "s": None, "t": None})
                elif op == Op.IDENTIFY:
                    if session is not None:
                        await self._close(conn, 4005, b"Already authenticated.")
                        break
                    session = await self._identify(conn, data)
                    if session is None:
                        break
                elif op == Op.RESUME:
                    session = await self._resume(conn, data)
                elif op == Op.REQUEST_GUILD_MEMBERS:
                    if session is None:
                        await self._close(conn, 4003, b"Not authenticated.")
                        break
                    await self._request_members(session, data)
                elif op in (Op.PRESENCE_UPDATE, Op.VOICE_STATE_UPDATE):
                    pass
                else:
                    await self._close(conn, 4001, b"Unknown opcode.")
                    break
                self._signal()
        finally:
            self._connections.discard(conn)
            close_code = conn.server_close_code if conn.server_close_code is not None else ws.close_code
            self.gateway_close_codes.append(close_code)
            if session is not None and session.conn is conn:
                session.conn = None
                # A client closing with 1000/1001 ends its session; any other close leaves it resumable.
                if conn.server_close_code is None and close_code in (WSCloseCode.OK, WSCloseCode.GOING_AWAY):
                    session.invalidated = True
                    self._sessions.pop(session.session_id, None)
            self._signal()
        return ws

    @staticmethod
    async def _close(conn: _Connection, code: int, reason: bytes) -> None:
        conn.server_close_code = code
        with contextlib.suppress(ConnectionError):
            await conn.ws.close(code=code, message=reason)

    async def _identify(self, conn: _Connection, data: Any) -> GatewaySession | None:
        if not isinstance(data, dict) or data.get("token") != self.token:
            await self._close(conn, 4004, b"Authentication failed.")
            return None
        intents = data.get("intents")
        if not isinstance(intents, int):
            await self._close(conn, 4013, b"Invalid intent(s).")
            return None
        if intents & PRIVILEGED_INTENTS & ~self.allowed_privileged_intents:
            await self._close(conn, 4014, b"Disallowed intent(s).")
            return None
        self.identify_payloads.append({key: value for key, value in data.items() if key != "token"})
        self.identify_count += 1
        shard = data.get("shard")
        session = GatewaySession(secrets.token_hex(16), intents, list(shard) if shard else None)
        self._sessions[session.session_id] = session
        session.conn = conn
        await self._send_dispatch(session, "READY", self._ready_payload(session))
        for guild in self._session_guilds(session):
            await self._send_dispatch(session, "GUILD_CREATE", self._guild_create_payload(guild, session))
        return session

    async def _resume(self, conn: _Connection, data: Any) -> GatewaySession | None:
        session = self._sessions.get(data.get("session_id", "")) if isinstance(data, dict) else None
        if session is None or session.invalidated or not isinstance(data, dict) or data.get("token") != self.token:
            # d=false: not resumable; the client must IDENTIFY again.
            await conn.send({"op": Op.INVALID_SESSION, "d": False, "s": None, "t": None})
            return None
        last_seen = int(data.get("seq") or 0)
        async with session.lock:
            session.conn = conn
            for frame in session.backlog:
                if frame["s"] > last_seen:
                    await conn.send(frame)
            session.seq += 1
            resumed = {"op": Op.DISPATCH, "t": "RESUMED", "s": session.seq, "d": {"_trace": ["fake-discord"]}}
            session.backlog.append(resumed)
            await conn.send(resumed)
        self.resume_count += 1
        return session

    async def _request_members(self, session: GatewaySession, data: Any) -> None:
        guild_ids = data.get("guild_id")
        for raw_id in guild_ids if isinstance(guild_ids, list) else [guild_ids]:
            guild = self.guilds.get(int(raw_id))
            if guild is None:
                continue
            members = list(guild.members.values())
            user_ids = data.get("user_ids")
            if user_ids:
                wanted = {int(user_id) for user_id in (user_ids if isinstance(user_ids, list) else [user_ids])}
                members = [member for member in members if member.user.id in wanted]
            query = data.get("query")
            if query:
                members = [member for member in members if member.user.username.lower().startswith(query.lower())]
            limit = int(data.get("limit") or 0)
            if limit:
                members = members[:limit]
            chunk = _discord(
                "guild_members_chunk", guild_id=str(guild.id), members=[member.payload() for member in members]
            )
            if data.get("nonce") is not None:
                chunk["nonce"] = data["nonce"]
            if data.get("presences"):
                chunk["presences"] = []
            await self._send_dispatch(session, "GUILD_MEMBERS_CHUNK", chunk)

    # --- HTTP plumbing -----------------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=1024**3)
        api = f"/api/v{API_VERSION}"
        routes: list[tuple[str, str, Handler]] = [
            ("GET", "/users/@me", self._get_me),
            ("GET", "/users/{user_id}", self._get_user),
            ("POST", "/users/@me/channels", self._create_dm),
            ("GET", "/oauth2/applications/@me", self._get_application),
            ("GET", "/applications/@me", self._get_application),
            ("GET", "/gateway", self._get_gateway),
            ("GET", "/gateway/bot", self._get_gateway_bot),
            ("GET", "/guilds/{guild_id}", self._get_guild),
            ("GET", "/guilds/{guild_id}/channels", self._get_guild_channels),
            ("GET", "/guilds/{guild_id}/roles", self._get_guild_roles),
            ("GET", "/guilds/{guild_id}/members/{user_id}", self._get_member),
            ("GET", "/channels/{channel_id}", self._get_channel),
            ("GET", "/channels/{channel_id}/messages", self._get_messages),
            ("POST", "/channels/{channel_id}/messages", self._post_message),
            ("GET", "/channels/{channel_id}/messages/{message_id}", self._get_message),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}", self._patch_message),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}", self._delete_message),
            ("POST", "/channels/{channel_id}/typing", self._typing),
            ("GET", "/applications/{application_id}/commands", self._get_commands),
            ("PUT", "/applications/{application_id}/commands", self._put_commands),
            ("GET", "/applications/{application_id}/guilds/{guild_id}/commands", self._get_commands),
            ("PUT", "/applications/{application_id}/guilds/{guild_id}/commands", self._put_commands),
            ("POST", "/interactions/{interaction_id}/{token}/callback", self._interaction_callback),
            ("GET", "/webhooks/{application_id}/{token}/messages/@original", self._get_original),
            ("PATCH", "/webhooks/{application_id}/{token}/messages/@original", self._patch_original),
            ("DELETE", "/webhooks/{application_id}/{token}/messages/@original", self._delete_original),
            ("POST", "/webhooks/{application_id}/{token}", self._post_followup),
            ("GET", "/webhooks/{application_id}/{token}/messages/{message_id}", self._get_followup),
            ("PATCH", "/webhooks/{application_id}/{token}/messages/{message_id}", self._patch_followup),
            ("DELETE", "/webhooks/{application_id}/{token}/messages/{message_id}", self._delete_followup),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, api + path, handler)
        app.router.add_get("/gateway", self._gateway_handler)
        app.router.add_get("/attachments/{attachment_id}/{filename}", self._get_attachment)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/gateway":
            return await handler(request)
        api = f"/api/v{API_VERSION}"
        is_api = request.path.startswith(api + "/")
        path = request.path.removeprefix(api) if is_api else request.path
        loop = asyncio.get_running_loop()
        call = RestCall(request.method, path, dict(request.query), None, [], at=loop.time())
        request[_CALL_KEY] = call
        response: web.StreamResponse
        try:
            # Read the whole body first, even for a request answered 429 or 413: answering before the
            # client finished sending resets the connection, which discord.py retries only for errno 54/10054.
            await self._read_body(request, call)
            rule = self._take_rate_limit(call)
            if rule is not None:
                response = self._rate_limited(rule)
            else:
                if is_api:
                    self._check_auth(request, path)
                response = await handler(request)
        except ApiError as error:
            response = error.response()
        except web.HTTPException as error:
            # Router misses (404/405) answer in Discord's JSON shape.
            if error.status == 405:
                response = ApiError(405, 0, "405: Method Not Allowed").response()
            else:
                response = ApiError(error.status, 0, f"{error.status}: {error.reason}").response()
        except Exception as error:
            # A bug in the fake, not a Discord answer: discord.py would silently retry a 500 after a
            # second, so record it and fail the test when the fake closes.
            log.exception("fake discord failed on %s %s", call.method, call.path)
            self.server_errors.append(error)
            response = ApiError(500, 0, "500: Internal Server Error").response()
        call.status = response.status
        self.calls.append(call)
        log.debug("fake discord %s %s -> %s", call.method, call.path, call.status)
        self._signal()
        return response

    def _check_auth(self, request: web.Request, path: str) -> None:
        # Interaction callbacks and webhook routes are authorised by their token in the path.
        if path.startswith(("/interactions/", "/webhooks/")):
            return
        if request.headers.get("Authorization") != f"Bot {self.token}":
            raise ApiError(401, 0, "401: Unauthorized")

    async def _read_body(self, request: web.Request, call: RestCall) -> None:
        if not request.body_exists:
            return
        if request.content_type == "application/json":
            raw = await request.read()
            try:
                call.json = json.loads(raw) if raw else None
            except ValueError:
                raise ApiError(400, 50109, "The request body contains invalid JSON.") from None
            return
        if not request.content_type.startswith("multipart/"):
            await request.read()
            return
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                raise ApiError(400, 50035, "Invalid Form Body")
            if part.name == "payload_json":
                try:
                    call.json = json.loads(await part.text())
                except ValueError:
                    raise ApiError(400, 50109, "The request body contains invalid JSON.") from None
            elif part.filename is not None:
                call.files.append(await self._store_part(part))
            else:
                await part.release()

    async def _store_part(self, part: BodyPartReader) -> RecordedFile:
        assert self._tmp_dir is not None
        filename = part.filename or "file"
        path = self._tmp_dir / f"{self._next_id()}-{re.sub(r'[^A-Za-z0-9._-]', '_', filename)}"
        keep_limit = max(self.upload_limit, self.attachment_size_limit) + MiB
        size = 0
        keep = True
        with path.open("wb") as handle:
            while chunk := await part.read_chunk(_CHUNK):
                size += len(chunk)
                if keep and size > keep_limit:
                    # Too big to be accepted anyway: keep counting, stop storing.
                    keep = False
                    handle.truncate(0)
                if keep:
                    handle.write(chunk)
        if not keep:
            path.unlink()
        return RecordedFile(part.name or "", filename, size, part.headers.get("Content-Type"), path if keep else None)

    def _take_rate_limit(self, call: RestCall) -> RateLimitRule | None:
        for rule in self.rate_limits:
            if not rule.exhausted and rule.matches(call.method, call.path):
                rule.hits += 1
                return rule
        return None

    def _rate_limited(self, rule: RateLimitRule) -> web.Response:
        headers = {
            "Retry-After": str(max(1, math.ceil(rule.retry_after))),
            "X-RateLimit-Scope": "global" if rule.global_ else "user",
            # discord.py treats a 429 without a Via header as a Cloudflare ban and raises instead of
            # retrying (http.py HTTPClient.request and webhook/async_.py AsyncWebhookAdapter.request).
            "Via": "1.1 google",
        }
        if rule.global_:
            headers["X-RateLimit-Global"] = "true"
        else:
            headers |= {
                "X-RateLimit-Limit": "5",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": f"{time.time() + rule.retry_after:.3f}",
                "X-RateLimit-Reset-After": f"{rule.retry_after:.3f}",
                "X-RateLimit-Bucket": "fake" + secrets.token_hex(8),
            }
        body = _discord("rate_limited", retry_after=rule.retry_after, **{"global": rule.global_})
        return _json_response(body, status=429, headers=headers)

    @staticmethod
    def _call(request: web.Request) -> RestCall:
        return request[_CALL_KEY]

    @staticmethod
    def _snowflake_param(request: web.Request, name: str) -> int:
        raw = request.match_info[name]
        if not raw.isdigit():
            raise _invalid_form(name, "NUMBER_TYPE_COERCE", f'Value "{raw}" is not snowflake.')
        return int(raw)

    @staticmethod
    def _snowflake_query(request: web.Request, name: str) -> int | None:
        raw = request.query.get(name)
        if raw is None:
            return None
        if not raw.isdigit():
            raise _invalid_form(name, "NUMBER_TYPE_COERCE", f'Value "{raw}" is not snowflake.')
        return int(raw)

    def _body(self, request: web.Request) -> Payload:
        body = self._call(request).json
        if body is None:
            return {}
        if not isinstance(body, dict):
            raise ApiError(400, 50035, "Invalid Form Body")
        return body

    # --- REST: identity ----------------------------------------------------------------------------------

    async def _get_me(self, request: web.Request) -> web.StreamResponse:
        return _json_response(_discord("current_user", **self.bot_user.payload()))

    async def _get_user(self, request: web.Request) -> web.StreamResponse:
        user = self.users.get(self._snowflake_param(request, "user_id"))
        if user is None:
            raise ApiError(404, 10013, "Unknown User")
        return _json_response(user.payload())

    async def _get_application(self, request: web.Request) -> web.StreamResponse:
        return _json_response(
            _discord(
                "application",
                id=str(self.application_id),
                name=self.bot_user.username,
                owner=self.application_owner.payload(),
                bot=self.bot_user.payload(),
                approximate_guild_count=len(self.guilds),
            )
        )

    async def _get_gateway(self, request: web.Request) -> web.StreamResponse:
        return _json_response({"url": self.gateway_url})

    async def _get_gateway_bot(self, request: web.Request) -> web.StreamResponse:
        return _json_response(_discord("gateway_bot", url=self.gateway_url))

    # --- REST: guilds and channels -----------------------------------------------------------------------

    def _guild(self, request: web.Request) -> FakeGuild:
        guild = self.guilds.get(self._snowflake_param(request, "guild_id"))
        if guild is None or self.bot_user.id not in guild.members:
            raise ApiError(404, 10004, "Unknown Guild")
        return guild

    async def _get_guild(self, request: web.Request) -> web.StreamResponse:
        guild = self._guild(request)
        data = guild.payload()
        if request.query.get("with_counts") in ("true", "1"):
            data |= {"approximate_member_count": len(guild.members), "approximate_presence_count": 0}
        return _json_response(data)

    async def _get_guild_channels(self, request: web.Request) -> web.StreamResponse:
        return _json_response([channel.payload() for channel in self._guild(request).channels.values()])

    async def _get_guild_roles(self, request: web.Request) -> web.StreamResponse:
        return _json_response([role.payload() for role in self._guild(request).roles.values()])

    async def _get_member(self, request: web.Request) -> web.StreamResponse:
        member = self._guild(request).members.get(self._snowflake_param(request, "user_id"))
        if member is None:
            raise ApiError(404, 10007, "Unknown Member")
        return _json_response(member.payload())

    async def _get_channel(self, request: web.Request) -> web.StreamResponse:
        return _json_response(self._channel(self._snowflake_param(request, "channel_id")).payload())

    async def _create_dm(self, request: web.Request) -> web.StreamResponse:
        raw = self._body(request).get("recipient_id")
        user = self.users.get(int(raw)) if raw is not None and str(raw).isdigit() else None
        if user is None:
            raise _invalid_form("recipient_id", "NUMBER_TYPE_COERCE", "Value is not snowflake.")
        return _json_response(self.dm_channel(user).payload())

    def _require(self, channel: FakeChannel, needed: int) -> None:
        if channel.guild is None:
            return
        granted = channel.guild.permissions_of(self.bot_user)
        if granted & needed != needed:
            raise ApiError(403, 50013, "Missing Permissions")

    async def _typing(self, request: web.Request) -> web.StreamResponse:
        channel = self._channel(self._snowflake_param(request, "channel_id"))
        self._require(channel, Perm.VIEW_CHANNEL | Perm.SEND_MESSAGES)
        return web.Response(status=204)

    async def _get_messages(self, request: web.Request) -> web.StreamResponse:
        channel = self._channel(self._snowflake_param(request, "channel_id"))
        self._require(channel, Perm.VIEW_CHANNEL | Perm.READ_MESSAGE_HISTORY)
        try:
            limit = int(request.query.get("limit", "50"))
        except ValueError:
            raise _invalid_form("limit", "NUMBER_TYPE_COERCE", "Value is not int.") from None
        if not 1 <= limit <= 100:
            raise _invalid_form("limit", "NUMBER_TYPE_MAX", "int value should be between 1 and 100.")
        messages = channel.visible_messages()
        around, after, before = (self._snowflake_query(request, key) for key in ("around", "after", "before"))
        if around is not None:
            start = max(0, sum(1 for m in messages if m.id < around) - limit // 2)
            selected = messages[start : start + limit]
        elif after is not None:
            # The oldest ``limit`` messages after the cursor, still answered newest first.
            selected = [m for m in messages if m.id > after][:limit]
        else:
            selected = [m for m in messages if before is None or m.id < before][-limit:]
        return _json_response([message.payload() for message in reversed(selected)])

    async def _get_message(self, request: web.Request) -> web.StreamResponse:
        channel = self._channel(self._snowflake_param(request, "channel_id"))
        self._require(channel, Perm.VIEW_CHANNEL | Perm.READ_MESSAGE_HISTORY)
        return _json_response(self._message_in(channel, self._snowflake_param(request, "message_id")).payload())

    async def _post_message(self, request: web.Request) -> web.StreamResponse:
        channel = self._channel(self._snowflake_param(request, "channel_id"))
        call = self._call(request)
        body = self._body(request)
        if channel.type is ChannelType.DM and channel.recipient is not None and not channel.recipient.accepts_dms:
            raise ApiError(403, 50007, "Cannot send messages to this user")
        self._require(channel, Perm.VIEW_CHANNEL | Perm.SEND_MESSAGES | (Perm.ATTACH_FILES if call.files else 0))
        self._check_upload(call.files, self.upload_limit)
        content = body.get("content") or ""
        embeds = list(body.get("embeds") or [])
        attachments = self._new_attachments(body, call.files)
        self._check_body(content, embeds, attachments, creating=True)
        reference = body.get("message_reference") or {}
        reference_id = int(reference["message_id"]) if reference.get("message_id") else None
        if reference_id is not None and reference.get("fail_if_not_exists", True):
            self._message_in(channel, reference_id)
        message = FakeMessage(
            self._next_id(),
            channel,
            self.bot_user,
            content,
            attachments=attachments,
            embeds=embeds,
            mentions=self._mentions(content),
            type=MESSAGE_DEFAULT if reference_id is None else MESSAGE_REPLY,
            flags=int(body.get("flags") or 0) & 4,
            content_history=[content],
            reference_id=reference_id,
        )
        self._store(message)
        await self._dispatch_message("MESSAGE_CREATE", message)
        return _json_response(message.payload())

    async def _patch_message(self, request: web.Request) -> web.StreamResponse:
        channel = self._channel(self._snowflake_param(request, "channel_id"))
        message = self._message_in(channel, self._snowflake_param(request, "message_id"))
        if message.author is not self.bot_user:
            raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        call = self._call(request)
        self._check_upload(call.files, self.upload_limit)
        self._apply_edit(message, self._body(request), call.files)
        await self._dispatch_message("MESSAGE_UPDATE", message)
        return _json_response(message.payload())

    async def _delete_message(self, request: web.Request) -> web.StreamResponse:
        channel = self._channel(self._snowflake_param(request, "channel_id"))
        message = self._message_in(channel, self._snowflake_param(request, "message_id"))
        if message.author is not self.bot_user:
            self._require(channel, Perm.MANAGE_MESSAGES)
        message.deleted = True
        await self._dispatch_delete(message)
        return web.Response(status=204)

    # --- REST: application commands ----------------------------------------------------------------------

    def _command_scope(self, request: web.Request) -> int | None:
        if request.match_info["application_id"] != str(self.application_id):
            raise ApiError(403, 50001, "Missing Access")
        if "guild_id" not in request.match_info:
            return None
        return self._guild(request).id

    async def _get_commands(self, request: web.Request) -> web.StreamResponse:
        return _json_response(self.synced_commands.get(self._command_scope(request), []))

    async def _put_commands(self, request: web.Request) -> web.StreamResponse:
        scope = self._command_scope(request)
        body = self._call(request).json
        if not isinstance(body, list):
            raise ApiError(400, 50035, "Invalid Form Body")
        previous = {(c["name"], c.get("type", COMMAND_CHAT_INPUT)): c for c in self.synced_commands.get(scope, [])}
        stored: list[Payload] = []
        for index, command in enumerate(body):
            command_type = int(command.get("type", COMMAND_CHAT_INPUT))
            name = command.get("name", "")
            if command_type == COMMAND_CHAT_INPUT:
                if not re.fullmatch(r"[-_\w]{1,32}", name) or name != name.lower():
                    raise _invalid_form(f"{index}.name", "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
                if not 1 <= len(command.get("description", "")) <= 100:
                    raise _invalid_form(
                        f"{index}.description", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."
                    )
            if len(command.get("options", [])) > 25:
                raise _invalid_form(f"{index}.options", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
            # A bulk overwrite keeps the id of a command with the same name and type, like Discord.
            old = previous.get((name, command_type))
            entry = _discord(
                "application_command",
                id=old["id"] if old else str(self._next_id()),
                application_id=str(self.application_id),
                version=str(self._next_id()),
                type=command_type,
                name=name,
                **{key: command[key] for key in _COMMAND_FIELDS if key in command},
            )
            if scope is not None:
                entry["guild_id"] = str(scope)
            stored.append(entry)
        self.synced_commands[scope] = stored
        self.sync_history.append((scope, stored))
        return _json_response(stored)

    # --- REST: interaction callbacks and webhooks --------------------------------------------------------

    async def _interaction_callback(self, request: web.Request) -> web.StreamResponse:
        interaction = self.interactions.get(self._snowflake_param(request, "interaction_id"))
        loop = asyncio.get_running_loop()
        if interaction is None or interaction.token != request.match_info["token"]:
            raise ApiError(404, 10062, "Unknown interaction")
        # Discord forgets an interaction that was not acknowledged within 3 seconds.
        if interaction.callback_type is None and loop.time() - interaction.created_at > self.ack_deadline:
            raise ApiError(404, 10062, "Unknown interaction")
        if interaction.callback_type is not None:
            raise ApiError(400, 40060, "Interaction has already been acknowledged.")
        call = self._call(request)
        body = self._body(request)
        callback_type = body.get("type")
        data = body.get("data") or {}
        allowed = {
            CallbackType.CHANNEL_MESSAGE_WITH_SOURCE,
            CallbackType.DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE,
            CallbackType.MODAL,
        }
        if callback_type not in allowed:
            raise _invalid_form("type", "INTERACTION_RESPONSE_TYPE_INVALID", "Invalid interaction response type")
        self._check_upload(call.files, interaction.attachment_size_limit)
        if callback_type == CallbackType.CHANNEL_MESSAGE_WITH_SOURCE:
            message: FakeMessage | None = self._interaction_message(interaction, data, call.files, original=True)
        elif callback_type == CallbackType.DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE:
            message = self._interaction_message(interaction, data, (), original=True, loading=True)
        else:
            message = None
        interaction.callback_type = int(callback_type)
        interaction.callback_at = loop.time()
        interaction.callback_data = data
        interaction.original = message
        if message is not None:
            await self._dispatch_message("MESSAGE_CREATE", message)
        if request.query.get("with_response") not in ("1", "true", "True"):
            return web.Response(status=204)
        answer: Payload = {
            "interaction": {
                "id": str(interaction.id),
                "type": INTERACTION_APPLICATION_COMMAND,
                "response_message_loading": bool(message and message.loading),
                "response_message_ephemeral": bool(message and message.ephemeral),
            },
            "resource": {"type": int(callback_type)},
        }
        if message is not None:
            answer["interaction"]["response_message_id"] = str(message.id)
            answer["resource"]["message"] = message.payload()
        return _json_response(answer)

    def _original(self, interaction: InteractionLog) -> FakeMessage:
        if interaction.original is None or interaction.original.deleted:
            raise ApiError(404, 10008, "Unknown Message")
        return interaction.original

    async def _get_original(self, request: web.Request) -> web.StreamResponse:
        return _json_response(self._original(self._webhook_interaction(request)).payload())

    async def _patch_original(self, request: web.Request) -> web.StreamResponse:
        interaction = self._webhook_interaction(request)
        message = self._original(interaction)
        call = self._call(request)
        self._check_upload(call.files, interaction.attachment_size_limit)
        self._apply_edit(message, self._body(request), call.files)
        await self._dispatch_message("MESSAGE_UPDATE", message)
        return _json_response(message.payload())

    async def _delete_original(self, request: web.Request) -> web.StreamResponse:
        message = self._original(self._webhook_interaction(request))
        message.deleted = True
        await self._dispatch_delete(message)
        self._signal()
        return web.Response(status=204)

    async def _post_followup(self, request: web.Request) -> web.StreamResponse:
        interaction = self._webhook_interaction(request)
        if interaction.callback_type is None:
            raise ApiError(404, 10015, "Unknown Webhook")
        call = self._call(request)
        body = self._body(request)
        self._check_upload(call.files, interaction.attachment_size_limit)
        original = interaction.original
        if original is not None and original.loading and not original.deleted:
            # Discord: a follow-up right after a deferred response edits the "thinking" message instead of
            # creating one ("Create Followup Message" in the interactions docs).
            self._apply_edit(original, body, call.files)
            await self._dispatch_message("MESSAGE_UPDATE", original)
            message = original
        else:
            message = self._interaction_message(interaction, body, call.files, original=False)
            interaction.followups.append(message)
            self._signal()
            await self._dispatch_message("MESSAGE_CREATE", message)
        if request.query.get("wait") in ("0", "false", "False"):
            return web.Response(status=204)
        return _json_response(message.payload())

    def _followup(self, request: web.Request, interaction: InteractionLog) -> FakeMessage:
        message_id = self._snowflake_param(request, "message_id")
        for message in [interaction.original, *interaction.followups]:
            if message is not None and message.id == message_id and not message.deleted:
                return message
        raise ApiError(404, 10008, "Unknown Message")

    async def _get_followup(self, request: web.Request) -> web.StreamResponse:
        interaction = self._webhook_interaction(request)
        return _json_response(self._followup(request, interaction).payload())

    async def _patch_followup(self, request: web.Request) -> web.StreamResponse:
        interaction = self._webhook_interaction(request)
        message = self._followup(request, interaction)
        call = self._call(request)
        self._check_upload(call.files, interaction.attachment_size_limit)
        self._apply_edit(message, self._body(request), call.files)
        await self._dispatch_message("MESSAGE_UPDATE", message)
        return _json_response(message.payload())

    async def _delete_followup(self, request: web.Request) -> web.StreamResponse:
        interaction = self._webhook_interaction(request)
        message = self._followup(request, interaction)
        message.deleted = True
        await self._dispatch_delete(message)
        self._signal()
        return web.Response(status=204)

    # --- attachments (the "CDN") -------------------------------------------------------------------------

    async def _get_attachment(self, request: web.Request) -> web.StreamResponse:
        raw_id = request.match_info["attachment_id"]
        attachment = self.attachments.get(int(raw_id)) if raw_id.isdigit() else None
        if attachment is None or not attachment.url.startswith(f"{self.base_url}{request.path}?"):
            raise ApiError(404, 0, "404: Not Found")
        try:
            expiry = int(request.query.get("ex", ""), 16)
        except ValueError:
            expiry = 0
        if time.time() > min(expiry, attachment.expires_at):
            # Discord's CDN answers expired signed links with 404 "This content is no longer available."
            raise ApiError(404, 0, "This content is no longer available.")
        response = web.StreamResponse(
            headers={
                "Content-Type": attachment.content_type or "application/octet-stream",
                "Content-Length": str(attachment.size),
            }
        )
        await response.prepare(request)
        if request.method != "HEAD":
            for chunk in attachment.iter_chunks():
                await response.write(chunk)
            attachment.downloads += 1
        await response.write_eof()
        return response


@contextlib.contextmanager
def discord_py_pointed_at(fake: FakeDiscord) -> Iterator[None]:
    """Point discord.py at the fake for the duration, then restore.

    discord.py has no constructor option for its hosts. REST URLs are built from the class attribute
    ``discord.http.Route.BASE`` (every Route, including the webhook adapter's). A plain ``Client`` opens its
    first gateway connection to ``DiscordWebSocket.DEFAULT_GATEWAY`` (it does not call GET /gateway), then
    RESUMEs at READY's ``resume_gateway_url``; ``AutoShardedClient`` uses the URL of GET /gateway/bot.
    """
    with warnings.catch_warnings():
        # discord.py imports audioop for voice, deprecated since Python 3.11; tests run filterwarnings=error.
        warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
        from discord.gateway import DiscordWebSocket
        from discord.http import Route

    old_base, old_gateway = Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    Route.BASE = fake.api_base
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    try:
        yield
    finally:
        Route.BASE = old_base
        DiscordWebSocket.DEFAULT_GATEWAY = old_gateway


@contextlib.asynccontextmanager
async def running_fake_discord(**options: Any) -> AsyncIterator[FakeDiscord]:
    """A started FakeDiscord with discord.py pointed at it."""
    async with FakeDiscord(**options) as fake:
        with discord_py_pointed_at(fake):
            yield fake
