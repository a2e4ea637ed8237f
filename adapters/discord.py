"""Discord: discord.py 2 slash commands ⇄ the engine, and moderators' highlight reels.

Conventions from ../shared/docs/platforms.md: every interaction is deferred at once (3 s to answer),
progress edits the original response, results go out as a follow-up file within the interaction's
``attachment_size_limit`` (else the link), and after 15 minutes the interaction token is dead, so a late
result is posted in the channel mentioning the user.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import discord
import yarl
from discord import app_commands
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from adapters.common import AdapterContext, FatalCallback, PlatformFailure, PlatformRejected, PlatformUnreachable
from bot.config import IdList
from bot.engine import Engine
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
from bot.nemo.uploads import UploadSource, attachment_kind, spool_download
from bot.reels import ReelPost, ReelRequest, is_clip
from bot.texts import t
from bot.textsplit import split_text

log = logging.getLogger(__name__)

MAX_MESSAGE = 2000
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024  # since January 2025, without boosts (platforms.md)
INTERACTION_LIFETIME = dt.timedelta(minutes=15)
# Stop using the interaction a little before Discord does, rather than lose a reply to a dead token.
_TOKEN_MARGIN = dt.timedelta(seconds=30)
_T = TypeVar("_T")


class DiscordSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DISCORD_", env_file=".env", extra="ignore")

    bot_token: SecretStr | None = Field(None, description="The bot's token (Developer Portal → Bot).")
    api_base: str | None = Field(None, description="REST API base, e.g. a proxy; unset: Discord's.")
    gateway_url: str | None = Field(None, description="Gateway URL, e.g. a proxy; unset: Discord's.")
    guild_ids: IdList = Field(default_factory=list, description="Sync commands to these guilds at once.")
    moderator_role_ids: IdList = Field(
        default_factory=list, description="Roles that may make reels; unset: members with Manage Messages."
    )
    allowed_channel_ids: IdList = Field(default_factory=list, description="Only these channels; unset: all.")
    cooldown_seconds: float = Field(3.0, ge=0, description="Least time between one user's commands.")
    message_content: bool = Field(
        False, description="The Message Content intent is enabled: DMs and mentions with attachments work."
    )
    edit_seconds: float = Field(1.5, ge=0, description="Least time between progress edits of one response.")
    # platforms.md: a guild lives on shard (guild_id >> 22) % shard_count; above 2,500 guilds Discord requires
    # shards, and each process of the bot can run some of them.
    shard_count: int | None = Field(
        None, ge=1, description="How many shards the bot runs in all; unset: one connection, no sharding."
    )
    shard_ids: IdList = Field(
        default_factory=list,
        description="The shards this process runs, e.g. 0,1 (with DISCORD_SHARD_COUNT); unset: all of them.",
    )

    @model_validator(mode="after")
    def _shards_fit(self) -> DiscordSettings:
        if self.shard_ids and self.shard_count is None:
            raise ValueError("DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT, the number of shards in all")
        if self.shard_count is not None:
            outside = [i for i in self.shard_ids if not 0 <= i < self.shard_count]
            if outside:
                raise ValueError(f"DISCORD_SHARD_IDS {','.join(map(str, outside))} is not a shard of "
                                 f"DISCORD_SHARD_COUNT={self.shard_count} (shards are 0 to {self.shard_count - 1})")
        if len(set(self.shard_ids)) != len(self.shard_ids):
            raise ValueError("DISCORD_SHARD_IDS names a shard twice")
        return self


class DiscordHosts:
    """Where discord.py sends its REST calls and opens its gateway, for as long as the adapter runs.

    discord.py has no constructor option for its hosts: large bots set the class attributes
    ``Route.BASE`` and ``DiscordWebSocket.DEFAULT_GATEWAY`` to put a proxy in front of the API
    (platforms.md), and tests use them to reach a local stand-in. They are set on start and put back on
    stop, so nothing outlives the adapter (discord.py reads both when a request or a connection is made).
    """

    def __init__(self, api_base: str | None, gateway_url: str | None) -> None:
        self._api_base = api_base.rstrip("/") if api_base else None
        self._gateway = yarl.URL(gateway_url) if gateway_url else None
        self._saved: tuple[str, yarl.URL] | None = None

    def apply(self) -> None:
        if self._saved is None:
            self._saved = (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
        if self._api_base:
            discord.http.Route.BASE = self._api_base
        if self._gateway is not None:
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = self._gateway

    def restore(self) -> None:
        if self._saved is not None:
            discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = self._saved
            self._saved = None


class Cooldowns:
    """The least time between one user's commands. Only users who might still be refused are kept."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._last: dict[int, float] = {}

    def __len__(self) -> int:
        return len(self._last)

    def wait(self, user_id: int, now: float) -> float:
        """How long the user still has to wait (0: go ahead, and the clock starts again)."""
        for user in [u for u, at in self._last.items() if now - at >= self.seconds]:
            del self._last[user]
        last = self._last.get(user_id)
        if last is not None:
            return self.seconds - (now - last)
        if self.seconds > 0:
            self._last[user_id] = now
        return 0.0


def _split(text: str) -> list[str]:
    return split_text(text, MAX_MESSAGE)


# -- replies ------------------------------------------------------------------------------------------


class ChannelReplies:
    """Ordinary channel messages that mention the user: for results after a restart or a dead token."""

    def __init__(self, client: discord.Client, channel_id: int, user_id: int | None, *, edit_seconds: float,
                 upload_limit: int | None = None) -> None:
        self._client = client
        self.channel_id = channel_id
        self.user_id = user_id
        self._mentioned = False
        self._caps = Capabilities(
            max_upload_bytes=upload_limit or DEFAULT_UPLOAD_LIMIT, max_message_length=MAX_MESSAGE,
            max_caption_length=MAX_MESSAGE, can_edit=True, edit_interval_seconds=edit_seconds, images=True,
            documents=True,
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    async def channel(self) -> discord.abc.Messageable:
        channel = self._client.get_channel(self.channel_id) or await self._client.fetch_channel(self.channel_id)
        assert isinstance(channel, discord.abc.Messageable)
        guild = getattr(channel, "guild", None)
        if guild is not None:
            self._caps = dataclasses.replace(self._caps, max_upload_bytes=guild.filesize_limit)
        return channel

    def _mention(self, text: str) -> str:
        if self.user_id is None or self._mentioned:
            return text
        self._mentioned = True
        return f"<@{self.user_id}> {text}"

    async def send_text(self, text: str, *, buttons: Sequence[Button] = ()) -> MessageHandle:
        channel = await self.channel()
        message: discord.Message | None = None
        for part in _split(self._mention(text)):
            message = await channel.send(part, allowed_mentions=discord.AllowedMentions(users=True))
        assert message is not None
        return MessageHandle(str(message.id), message)

    async def edit_text(self, handle: MessageHandle, text: str, *, buttons: Sequence[Button] = ()) -> None:
        # A follow-up (WebhookMessage) is edited through its interaction's token, which is dead by the time
        # anything lands here: say it anew in the channel, as for any handle of a dead interaction.
        if isinstance(handle.native, discord.Message) and not isinstance(handle.native, discord.WebhookMessage):
            await handle.native.edit(content=_split(text)[0])
        else:
            await self.send_text(text)

    async def send_video(self, path: Path, *, caption: str, buttons: Sequence[Button] = ()) -> MessageHandle:
        channel = await self.channel()
        # The result itself always names the user: that is the notification that matters.
        caption = f"<@{self.user_id}> {caption}" if self.user_id is not None else caption
        message = await channel.send(caption[:MAX_MESSAGE], file=discord.File(path),
                                     allowed_mentions=discord.AllowedMentions(users=True))
        return MessageHandle(str(message.id), message)

    async def send_image(self, path: Path, *, caption: str) -> MessageHandle:
        channel = await self.channel()
        message = await channel.send(self._mention(caption)[:MAX_MESSAGE], file=discord.File(path),
                                     allowed_mentions=discord.AllowedMentions(users=True))
        return MessageHandle(str(message.id), message)

    async def send_document(self, path: Path, *, filename: str, caption: str) -> MessageHandle:
        channel = await self.channel()
        message = await channel.send(caption[:MAX_MESSAGE], file=discord.File(path, filename=filename))
        return MessageHandle(str(message.id), message)

    async def show_working(self, action: WorkingAction) -> None:
        with contextlib.suppress(discord.HTTPException):
            channel = await self.channel()
            if isinstance(channel, discord.abc.Messageable) and hasattr(channel, "typing"):
                await channel.typing()


class InteractionReplies:
    """Speaks through one deferred interaction: the first message edits the original response, later ones
    are follow-ups; once the token is (nearly) dead everything goes to the channel instead."""

    def __init__(self, interaction: discord.Interaction[Any], *, edit_seconds: float,
                 video_channel: ChannelReplies | None = None) -> None:
        self._interaction = interaction
        self._used_original = False
        self._late = ChannelReplies(
            interaction.client, interaction.channel_id or 0, interaction.user.id, edit_seconds=edit_seconds
        )
        self._video_channel = video_channel
        self._caps = Capabilities(
            max_upload_bytes=interaction.filesize_limit, max_message_length=MAX_MESSAGE,
            max_caption_length=MAX_MESSAGE, can_edit=True, edit_interval_seconds=edit_seconds, images=True,
            documents=True,
        )

    @property
    def capabilities(self) -> Capabilities:
        if self._video_channel is not None:
            return self._video_channel.capabilities
        return self._late.capabilities if self._expired() else self._caps

    def _expired(self) -> bool:
        return dt.datetime.now(dt.UTC) >= self._interaction.expires_at - _TOKEN_MARGIN

    async def _call(self, through_interaction: Callable[[], Awaitable[_T]],
                    in_channel: Callable[[], Awaitable[_T]]) -> _T:
        """Every outgoing call of this interaction: through it while its token lives, in the channel once
        the token is (nearly) dead or Discord says it is."""
        if self._expired():
            return await in_channel()
        try:
            return await through_interaction()
        except discord.HTTPException as exc:
            if not _token_dead(exc):
                raise
            log.info("discord.interaction.expired id=%s", self._interaction.id)
            return await in_channel()

    async def send_text(self, text: str, *, buttons: Sequence[Button] = ()) -> MessageHandle:
        async def through_interaction() -> MessageHandle:
            parts = _split(text)
            if not self._used_original:
                self._used_original = True
                await self._interaction.edit_original_response(content=parts[0])
                handle = MessageHandle("@original", self._interaction)
            else:
                sent = await self._interaction.followup.send(parts[0], wait=True)
                handle = MessageHandle(str(sent.id), sent)
            for part in parts[1:]:
                await self._interaction.followup.send(part, wait=True)
            return handle

        return await self._call(through_interaction, lambda: self._late.send_text(text))

    async def edit_text(self, handle: MessageHandle, text: str, *, buttons: Sequence[Button] = ()) -> None:
        native = handle.native
        if native is not self._interaction and not isinstance(native, discord.WebhookMessage):
            await self._late.edit_text(handle, text)
            return

        async def through_interaction() -> None:
            content = _split(text)[0]
            if isinstance(native, discord.WebhookMessage):
                await native.edit(content=content)
            else:
                await self._interaction.edit_original_response(content=content)

        await self._call(through_interaction, lambda: self._late.send_text(text))

    async def send_video(self, path: Path, *, caption: str, buttons: Sequence[Button] = ()) -> MessageHandle:
        if self._video_channel is not None:
            return await self._video_channel.send_video(path, caption=caption)

        async def through_interaction() -> MessageHandle:
            sent = await self._interaction.followup.send(caption[:MAX_MESSAGE], file=discord.File(path), wait=True)
            return MessageHandle(str(sent.id), sent)

        return await self._call(through_interaction, lambda: self._late.send_video(path, caption=caption))

    async def send_image(self, path: Path, *, caption: str) -> MessageHandle:
        async def through_interaction() -> MessageHandle:
            sent = await self._interaction.followup.send(caption[:MAX_MESSAGE], file=discord.File(path), wait=True)
            return MessageHandle(str(sent.id), sent)

        return await self._call(through_interaction, lambda: self._late.send_image(path, caption=caption))

    async def send_document(self, path: Path, *, filename: str, caption: str) -> MessageHandle:
        async def through_interaction() -> MessageHandle:
            sent = await self._interaction.followup.send(
                caption[:MAX_MESSAGE], file=discord.File(path, filename=filename), wait=True
            )
            return MessageHandle(str(sent.id), sent)

        return await self._call(
            through_interaction, lambda: self._late.send_document(path, filename=filename, caption=caption)
        )

    async def show_working(self, action: WorkingAction) -> None:
        return None  # the deferred response already shows "thinking…"


def _token_dead(exc: discord.HTTPException) -> bool:
    # 50027: Invalid Webhook Token (expired interaction); 10015: Unknown Webhook.
    return exc.code in (50027, 10015) or exc.status == 401


# -- files --------------------------------------------------------------------------------------------


class DiscordFiles:
    """Attachment URLs are signed and expire (platforms.md): download promptly, to a temp file."""

    def __init__(self, context: AdapterContext) -> None:
        self._context = context

    async def open(self, attachment: Attachment) -> UploadSource:
        return await spool_download(
            self._context.http, str(attachment.ref), filename=attachment.filename,
            content_type=attachment.mime_type, max_bytes=self._context.max_upload_bytes,
            temp_dir=self._context.temp_dir,
        )


def _attachment(a: discord.Attachment) -> Attachment:
    mime = (a.content_type or "").split(";")[0] or None
    return Attachment(attachment_kind(a.filename, mime), a.filename, mime, a.size, a.url)


def _post(message: discord.Message) -> ReelPost:
    return ReelPost(order=message.id, author=message.author.mention, by_bot=message.author.bot,
                    attachments=tuple(_attachment(a) for a in message.attachments))


# -- the bot ------------------------------------------------------------------------------------------


@dataclass
class Picks:
    """Clips moderators marked with "Add to reel", per channel (kept in memory). A channel's picks are
    forgotten once nobody has added to them for ``ttl_seconds``, and each channel keeps the newest
    ``max_per_channel``: marks left behind by a reel never made must not pile up for months."""

    ttl_seconds: float = 7 * 24 * 3600
    max_per_channel: int = 100
    clock: Callable[[], float] = time.monotonic
    _by_channel: dict[int, dict[int, discord.Message]] = field(default_factory=dict)
    _touched: dict[int, float] = field(default_factory=dict)

    def add(self, channel_id: int, message: discord.Message) -> int:
        """Mark one message; returns how many the channel has now."""
        self._forget_stale()
        picks = self._by_channel.setdefault(channel_id, {})
        picks[message.id] = message
        while len(picks) > self.max_per_channel:
            del picks[min(picks)]  # snowflakes grow with time: the oldest goes first
        self._touched[channel_id] = self.clock()
        return len(picks)

    def take(self, channel_id: int) -> list[discord.Message]:
        """The channel's picks, which are then forgotten (a reel uses them once)."""
        self._forget_stale()
        self._touched.pop(channel_id, None)
        return list(self._by_channel.pop(channel_id, {}).values())

    @property
    def channels(self) -> int:
        return len(self._by_channel)

    def _forget_stale(self) -> None:
        now = self.clock()
        for channel_id in [c for c, at in self._touched.items() if now - at > self.ttl_seconds]:
            self._touched.pop(channel_id, None)
            self._by_channel.pop(channel_id, None)


class NemoDiscordClient(discord.Client):
    def __init__(self, adapter: DiscordAdapter, **options: Any) -> None:
        intents = discord.Intents.default()
        intents.message_content = adapter.settings.message_content
        super().__init__(intents=intents, guild_ready_timeout=adapter.guild_ready_timeout, **options)
        self.adapter = adapter
        self.tree = app_commands.CommandTree(self)

    async def setup_hook(self) -> None:
        # discord.py examples/advanced_startup.py: sync in setup_hook; to listed guilds at once for development.
        if self.adapter.settings.guild_ids:
            for guild_id in self.adapter.settings.guild_ids:
                guild = discord.Object(guild_id)
                self.tree.copy_global_to(guild=guild)
                await self.tree.sync(guild=guild)
        else:
            await self.tree.sync()
        resumed = await self.adapter.engine.resume(self.adapter)
        log.info("discord.ready resumed_exports=%d", resumed)

    async def on_message(self, message: discord.Message) -> None:
        await self.adapter.on_message(message)


class NemoShardedClient(NemoDiscordClient, discord.AutoShardedClient):
    """The same client over several gateway connections, one per shard: ``shard_ids`` of ``shard_count``
    (all of them when ``shard_ids`` is None). discord.py's AutoShardedClient sends each guild's calls through
    its shard's connection (discord/shard.py)."""

    def __init__(self, adapter: DiscordAdapter, *, shard_ids: list[int] | None, shard_count: int) -> None:
        super().__init__(adapter, shard_ids=shard_ids, shard_count=shard_count)


def make_client(adapter: DiscordAdapter) -> NemoDiscordClient:
    """A sharded client when DISCORD_SHARD_COUNT is set, else the plain one."""
    settings = adapter.settings
    if settings.shard_count is None:
        return NemoDiscordClient(adapter)
    return NemoShardedClient(adapter, shard_ids=list(settings.shard_ids) or None, shard_count=settings.shard_count)


class DiscordAdapter:
    def __init__(self, engine: Engine, settings: DiscordSettings, context: AdapterContext, *,
                 guild_ready_timeout: float = 2.0, on_fatal: FatalCallback | None = None) -> None:
        if settings.bot_token is None:
            raise ValueError("DISCORD_BOT_TOKEN is not set")
        self.engine = engine
        self.settings = settings
        self._context = context
        self._on_fatal = on_fatal
        self._stopping = False
        self.guild_ready_timeout = guild_ready_timeout
        self.files = DiscordFiles(context)
        self.picks = Picks()
        self.cooldowns = Cooldowns(settings.cooldown_seconds)
        self._hosts = DiscordHosts(settings.api_base, settings.gateway_url)
        self.client = make_client(self)
        self._runner: asyncio.Task[None] | None = None
        DiscordCommands(self).install(self.client.tree)

    @property
    def name(self) -> str:
        return "dc"

    @property
    def capabilities(self) -> Capabilities:
        return _capabilities(self.settings)

    async def start(self) -> None:
        """Log in and connect to the gateway until READY; a refusal or an unreachable Discord is a
        ``PlatformFailure`` whose text names what to do."""
        try:
            await self._start()
        except Exception as exc:
            failure = _failure(exc)
            if failure is None:
                raise
            raise failure from None
        self._runner_watch()
        log.info("discord.started user=%s", self.client.user)

    async def _start(self) -> None:
        assert self.settings.bot_token is not None
        self._hosts.apply()
        await self.client.login(self.settings.bot_token.get_secret_value())
        self._runner = asyncio.create_task(self.client.connect(reconnect=True))
        ready = asyncio.create_task(self.client.wait_until_ready())
        # discord.py retries a failed gateway connection forever (reconnect=True); before READY, the first
        # disconnect is the answer to this start.
        disconnected = asyncio.create_task(self.client.wait_for("disconnect"))
        try:
            done, _ = await asyncio.wait({ready, self._runner, disconnected}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
            disconnected.cancel()
        if ready in done:
            return
        if self._runner not in done and self.client.is_closed():
            # A refusal (bad token, a wrong intent) closes the client and then raises from the runner
            # (discord/client.py, connect): wait for that error rather than call it a network failure.
            await asyncio.wait({self._runner}, timeout=10)
        if self._runner.done():
            self._runner.result()  # surfaces a login or gateway failure
        raise PlatformUnreachable("Discord's gateway cannot be reached: check the network (and DISCORD_GATEWAY_URL "
                                  "if it is set).")

    def _runner_watch(self) -> None:
        """After start, the gateway task ends only on stop or on a refusal (a revoked token, say): report
        that as fatal, so the process stops with a plain line instead of running deaf."""
        runner = self._runner
        assert runner is not None

        def ended(task: asyncio.Task[None]) -> None:
            if self._stopping or task.cancelled():
                return
            error = task.exception()
            failure = _failure(error) if error is not None else None
            if failure is None:
                log.error("discord.gateway_ended", exc_info=error)
                failure = PlatformFailure("The connection to Discord ended and could not be resumed.")
            if self._on_fatal is not None:
                self._on_fatal(failure)

        runner.add_done_callback(ended)

    async def stop(self) -> None:
        self._stopping = True
        try:
            await self.client.close()
            if self._runner is not None:
                # A connected client ends its runner on close; one still retrying sleeps in its backoff.
                _, pending = await asyncio.wait({self._runner}, timeout=10 if self.client.is_ready() else 0)
                for task in pending:
                    task.cancel()
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await self._runner
        finally:
            self._hosts.restore()

    # -- delivering without a message to answer ---------------------------------------------------

    def replies_for(self, target: DeliveryTarget) -> ChannelReplies:
        return ChannelReplies(self.client, int(target.address), int(target.mention) if target.mention else None,
                              edit_seconds=self.settings.edit_seconds)

    # -- helpers --------------------------------------------------------------------------------------

    def chat_for(self, channel_id: int, user_id: int, *, in_guild: bool) -> ChatKey:
        return self._context.sessions.chat_key(self.name, str(channel_id), str(user_id), is_group=in_guild)

    def is_moderator(self, interaction: discord.Interaction[Any]) -> bool:
        member = interaction.user
        if not isinstance(member, discord.Member):
            return False
        if self.settings.moderator_role_ids:
            return any(role.id in self.settings.moderator_role_ids for role in member.roles)
        return member.guild_permissions.manage_messages

    async def gate(self, interaction: discord.Interaction[Any]) -> bool:
        """Allowed channel and cooldown, answered at once (ephemeral) when refused."""
        lang = detect_language(interaction.locale)
        allowed = self.settings.allowed_channel_ids
        if allowed and interaction.channel_id not in allowed:
            await interaction.response.send_message(t("discord_channel_not_allowed", lang), ephemeral=True)
            return False
        wait = self.cooldowns.wait(interaction.user.id, time.monotonic())
        if wait > 0:
            await interaction.response.send_message(t("discord_cooldown", lang, seconds=f"{wait:.0f}"),
                                                    ephemeral=True)
            return False
        return True

    async def run_command(
        self, interaction: discord.Interaction[Any], text: str, attachments: Sequence[discord.Attachment] = (),
    ) -> None:
        """Defer at once, then hand the request to the engine."""
        if not await self.gate(interaction):
            return
        await interaction.response.defer(thinking=True)
        in_guild = interaction.guild_id is not None
        channel_id = interaction.channel_id or 0
        incoming = IncomingMessage(
            chat=self.chat_for(channel_id, interaction.user.id, in_guild=in_guild),
            user_id=str(interaction.user.id),
            message_id=f"i:{interaction.id}",
            text=text,
            attachments=tuple(_attachment(a) for a in attachments),
            locale=str(interaction.locale),
            user_name=interaction.user.display_name,
            is_group=in_guild,
            target=DeliveryTarget(address=str(channel_id), mention=str(interaction.user.id), group=in_guild),
        )
        await self.engine.handle(
            incoming, InteractionReplies(interaction, edit_seconds=self.settings.edit_seconds), self.files
        )

    async def on_message(self, message: discord.Message) -> None:
        """DMs, and mentions of the bot in guilds: only with the Message Content intent (else slash commands)."""
        user = self.client.user
        if user is None or message.author.bot or not self.settings.message_content:
            return
        in_guild = message.guild is not None
        if in_guild and user not in message.mentions:
            return
        allowed = self.settings.allowed_channel_ids
        if in_guild and allowed and message.channel.id not in allowed:
            return
        text = re.sub(rf"<@!?{user.id}>", " ", message.content).strip()
        incoming = IncomingMessage(
            chat=self.chat_for(message.channel.id, message.author.id, in_guild=in_guild),
            user_id=str(message.author.id),
            message_id=f"m:{message.id}",
            text=" ".join(text.split()),
            attachments=tuple(_attachment(a) for a in message.attachments),
            user_name=message.author.display_name,
            is_group=in_guild,
            target=DeliveryTarget(address=str(message.channel.id), mention=str(message.author.id), group=in_guild),
        )
        replies = ChannelReplies(self.client, message.channel.id, message.author.id if in_guild else None,
                                 edit_seconds=self.settings.edit_seconds)
        await self.engine.handle(incoming, replies, self.files)

    async def make_reel(
        self, interaction: discord.Interaction[Any], channel: discord.TextChannel | None, messages: int,
        since: str | None, prompt: str | None,
    ) -> None:
        """Gather the channel's recent posts and the picked ones; the reel itself is the core's (bot.reels)."""
        lang = detect_language(interaction.locale)
        if not self.is_moderator(interaction):
            await interaction.response.send_message(t("discord_reel_not_moderator", lang), ephemeral=True)
            return
        if not await self.gate(interaction):
            return
        await interaction.response.defer(thinking=True)
        source = channel or interaction.channel
        if not isinstance(source, discord.TextChannel | discord.Thread):
            await interaction.edit_original_response(content=t("discord_reel_no_channel", lang))
            return
        after = _since(since)
        if since and after is None:
            await interaction.edit_original_response(content=t("discord_reel_bad_since", lang, since=since))
            return
        picked = self.picks.take(source.id)
        history = [m async for m in source.history(limit=max(1, min(messages, 500)), after=after)]
        request = ReelRequest(
            chat=ChatKey(self.name, str(source.id), scope=f"reel-{interaction.id}"),
            user_id=str(interaction.user.id), request_id=f"i:{interaction.id}", channel=source.mention,
            looked_at=messages, prompt=prompt, locale=str(interaction.locale),
            target=DeliveryTarget(address=str(source.id), mention=str(interaction.user.id), group=True),
        )
        replies = InteractionReplies(
            interaction, edit_seconds=self.settings.edit_seconds,
            video_channel=ChannelReplies(self.client, source.id, None, edit_seconds=self.settings.edit_seconds),
        )
        log.info("discord.reel channel=%s posts=%d", source.id, len(history) + len(picked))
        await self.engine.make_reel(request, [_post(m) for m in (*history, *picked)], replies, self.files)


def _since(text: str | None) -> discord.abc.Snowflake | dt.datetime | None:
    """``24h``, ``7d``, ``30m`` or an ISO date: where the reel's history starts."""
    if not text:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*([mhdw])\s*", text.lower())
    if match:
        unit = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[match.group(2)]
        return dt.datetime.now(dt.UTC) - dt.timedelta(**{unit: int(match.group(1))})
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _capabilities(settings: DiscordSettings) -> Capabilities:
    return Capabilities(max_upload_bytes=DEFAULT_UPLOAD_LIMIT, max_message_length=MAX_MESSAGE,
                        max_caption_length=MAX_MESSAGE, can_edit=True, edit_interval_seconds=settings.edit_seconds)


def _failure(error: BaseException) -> PlatformFailure | None:
    """The operator's plain line for a login or gateway error (None: not one of those)."""
    if isinstance(error, PlatformFailure):
        return error
    if isinstance(error, discord.LoginFailure) or (
        isinstance(error, discord.ConnectionClosed) and error.code == 4004
    ):
        return PlatformRejected("Discord rejected the bot token: check DISCORD_BOT_TOKEN.")
    if isinstance(error, discord.PrivilegedIntentsRequired):
        return PlatformRejected(
            "Discord refused the Message Content intent: enable it for the bot (Developer Portal → Bot → "
            "Privileged Gateway Intents) or unset DISCORD_MESSAGE_CONTENT."
        )
    if isinstance(error, discord.ConnectionClosed) and error.code >= 4000:
        # 4010-4014: shard, version or intents the gateway will not take (discord.com/developers/docs/topics/
        # opcodes-and-status-codes#gateway-gateway-close-event-codes).
        return PlatformRejected(f"Discord closed the gateway connection (code {error.code}): check the bot's "
                                "settings in the Developer Portal.")
    if isinstance(error, discord.DiscordServerError | discord.GatewayNotFound | discord.ConnectionClosed):
        return PlatformUnreachable(f"Discord is not answering properly ({type(error).__name__}).")
    if isinstance(error, OSError | aiohttp.ClientError | TimeoutError):
        return PlatformUnreachable(f"Discord cannot be reached ({type(error).__name__}): check the network "
                                   "(and DISCORD_API_BASE if it is set).")
    return None


class DiscordCommands:
    """The slash commands and the "Add to reel" message command. discord.py binds each command to this
    object (its callbacks are bound methods), so they share the adapter without closures."""

    def __init__(self, adapter: DiscordAdapter) -> None:
        self.adapter = adapter

    def install(self, tree: app_commands.CommandTree[Any]) -> None:
        commands: list[tuple[str, str, Callable[..., Any]]] = [
            ("edit", "Edit your video: attach clips and say what you want", self.edit),
            ("export", "Render your video and send it", self.export),
            ("status", "Show your timeline", self.status),
            ("credits", "Show your NemoVideo credits", self.credits),
            ("new", "Start a new project", self.new),
            ("help", "What this bot does", self.help),
            ("reel", "Moderators: make a highlight reel from a channel's recent clips", self.reel),
        ]
        for name, description, callback in commands:
            tree.add_command(app_commands.Command(name=name, description=description, callback=callback))
        tree.add_command(app_commands.ContextMenu(name="Add to reel", callback=self.add_to_reel))

    @app_commands.describe(prompt="What to do, e.g. 'cut the pauses, add music, make it 9:16'",
                           url="A link to a clip instead of (or besides) attachments")
    async def edit(
        self, interaction: discord.Interaction[Any], prompt: str, clip1: discord.Attachment | None = None,
        clip2: discord.Attachment | None = None, clip3: discord.Attachment | None = None,
        clip4: discord.Attachment | None = None, clip5: discord.Attachment | None = None, url: str | None = None,
    ) -> None:
        clips = [c for c in (clip1, clip2, clip3, clip4, clip5) if c is not None]
        text = f"{prompt} {url}" if url else prompt
        await self.adapter.run_command(interaction, text, clips)

    async def export(self, interaction: discord.Interaction[Any]) -> None:
        await self.adapter.run_command(interaction, "/export")

    async def status(self, interaction: discord.Interaction[Any]) -> None:
        await self.adapter.run_command(interaction, "/status")

    async def credits(self, interaction: discord.Interaction[Any]) -> None:
        await self.adapter.run_command(interaction, "/credits")

    async def new(self, interaction: discord.Interaction[Any]) -> None:
        await self.adapter.run_command(interaction, "/new")

    async def help(self, interaction: discord.Interaction[Any]) -> None:
        await self.adapter.run_command(interaction, "/help")

    @app_commands.describe(channel="Where the clips are (default: here)", messages="How many recent messages",
                           since="Only clips newer than this: 24h, 7d or a date", prompt="How to cut the reel")
    async def reel(
        self, interaction: discord.Interaction[Any], channel: discord.TextChannel | None = None,
        messages: app_commands.Range[int, 1, 500] = 50, since: str | None = None, prompt: str | None = None,
    ) -> None:
        await self.adapter.make_reel(interaction, channel, messages, since, prompt)

    async def add_to_reel(self, interaction: discord.Interaction[Any], message: discord.Message) -> None:
        lang = detect_language(interaction.locale)
        adapter = self.adapter
        if not adapter.is_moderator(interaction):
            await interaction.response.send_message(t("discord_reel_not_moderator", lang), ephemeral=True)
            return
        if not any(is_clip(_attachment(a)) for a in message.attachments):
            await interaction.response.send_message(t("discord_pick_no_clip", lang), ephemeral=True)
            return
        count = adapter.picks.add(message.channel.id, message)
        await interaction.response.send_message(t("discord_picked", lang, count=count), ephemeral=True)


class DiscordSender:
    """Discord's sending side alone, for ``nemobot worker``: logged in to the REST API, never connected to the
    gateway (the shards are the bot processes'), it delivers the results of the durable job queue in the
    channels where they were asked for, as a restarted bot does (:class:`ChannelReplies`)."""

    def __init__(self, settings: DiscordSettings) -> None:
        if settings.bot_token is None:
            raise ValueError("DISCORD_BOT_TOKEN is not set")
        self.settings = settings
        self._hosts = DiscordHosts(settings.api_base, settings.gateway_url)
        # No gateway, so no intent is used; discord.py warns about state without the guilds one.
        self.client = discord.Client(intents=discord.Intents(guilds=True))

    @property
    def name(self) -> str:
        return "dc"

    @property
    def capabilities(self) -> Capabilities:
        return _capabilities(self.settings)

    async def start(self) -> None:
        """Check the token (a login over REST); a refusal or an unreachable Discord is a ``PlatformFailure``."""
        assert self.settings.bot_token is not None
        self._hosts.apply()
        try:
            await self.client.login(self.settings.bot_token.get_secret_value())
        except Exception as exc:
            failure = _failure(exc)
            if failure is None:
                raise
            raise failure from None
        log.info("discord.sender_started user=%s", self.client.user)

    async def stop(self) -> None:
        try:
            await self.client.close()
        finally:
            self._hosts.restore()

    def replies_for(self, target: DeliveryTarget) -> ChannelReplies:
        return ChannelReplies(self.client, int(target.address), int(target.mention) if target.mention else None,
                              edit_seconds=self.settings.edit_seconds)
