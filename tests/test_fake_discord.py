"""The Discord stand-in against the real discord.py client: login, gateway, command sync, interactions.

These tests keep tests/fakes/discord_server.py honest: if discord.py cannot log in, sync, answer an
interaction or retry a 429 against it, end-to-end tests of the Discord adapter would prove nothing.
"""

from __future__ import annotations

import asyncio
import io
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from tests.fakes.discord_server import (
    FakeAttachment,
    FakeDiscord,
    InteractionLog,
    discord_py_pointed_at,
)
from tests.waiting import await_within

with warnings.catch_warnings():
    # discord.py imports audioop for voice (deprecated since 3.11); under filterwarnings=error that import
    # would fail collection when this module is the first to import discord.
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    import discord
    from discord import app_commands

# Small, so the over-the-limit follow-up stays quick; the default (10 MiB) is checked separately.
SIZE_LIMIT = 256 * 1024


@dataclass
class Outcome:
    """What a command handler did, handed to the test through the bot's queue."""

    interaction: discord.Interaction[Any]
    error: Exception | None = None
    details: dict[str, Any] = field(default_factory=dict)


class ReelBot(discord.Client):
    """A minimal bot shaped like the adapter: a command tree synced to one guild in setup_hook."""

    def __init__(self, guild_id: int) -> None:
        intents = discord.Intents.default()
        intents.message_content = True
        intents.members = True
        # READY waits guild_ready_timeout after the last GUILD_CREATE; the default is 2 s.
        super().__init__(intents=intents, guild_ready_timeout=0.05)
        self.tree = app_commands.CommandTree(self)
        self.guild_object = discord.Object(guild_id)
        self.synced: list[app_commands.AppCommand] = []
        self.outcomes: asyncio.Queue[Outcome] = asyncio.Queue()
        self.inbox: asyncio.Queue[discord.Message] = asyncio.Queue()
        self.available_guilds: list[int] = []
        _install_commands(self)

    async def setup_hook(self) -> None:
        self.tree.copy_global_to(guild=self.guild_object)
        self.synced = await self.tree.sync(guild=self.guild_object)

    async def on_guild_available(self, guild: discord.Guild) -> None:
        self.available_guilds.append(guild.id)

    async def on_message(self, message: discord.Message) -> None:
        # Discord echoes the bot's own messages; a bot must not answer itself.
        if message.author != self.user:
            self.inbox.put_nowait(message)


def _install_commands(bot: ReelBot) -> None:
    @bot.tree.command(name="render", description="Render a reel from a clip")
    async def render(interaction: discord.Interaction, clip: discord.Attachment, size: int = 2048) -> None:
        outcome = Outcome(interaction)
        try:
            await interaction.response.defer(thinking=True)
            outcome.details["clip_size"] = clip.size
            outcome.details["clip_bytes"] = len(await clip.read())
            outcome.details["filesize_limit"] = interaction.filesize_limit
            await interaction.edit_original_response(content="Rendering… 50%")
            await interaction.edit_original_response(content="Rendering… 100%")
            sent = await interaction.followup.send(
                "Here is your reel", file=discord.File(io.BytesIO(bytes(size)), filename="reel.mp4"), wait=True
            )
            outcome.details["followup_id"] = sent.id
        except discord.HTTPException as error:
            outcome.error = error
        finally:
            bot.outcomes.put_nowait(outcome)

    @bot.tree.command(name="whoami", description="Show what you may do here")
    async def whoami(interaction: discord.Interaction) -> None:
        assert isinstance(interaction.user, discord.Member)
        assert interaction.guild is not None
        cached = interaction.guild.get_member(interaction.user.id)
        outcome = Outcome(interaction)
        outcome.details = {
            "interaction": interaction.permissions.manage_messages,
            "member": interaction.user.guild_permissions.manage_messages,
            "cached": cached is not None and cached.guild_permissions.manage_messages,
            "app": interaction.app_permissions.attach_files,
        }
        await interaction.response.send_message("noted", ephemeral=True)
        bot.outcomes.put_nowait(outcome)

    @bot.tree.command(name="hold", description="Defer and let the test drive the response")
    async def hold(interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True)
        bot.outcomes.put_nowait(Outcome(interaction))

    @app_commands.context_menu(name="Add to reel")
    async def add_to_reel(interaction: discord.Interaction, message: discord.Message) -> None:
        await interaction.response.send_message(f"Added {message.id} to the reel", ephemeral=True)
        bot.outcomes.put_nowait(
            Outcome(interaction, details={"target": message.id, "attachments": [a.size for a in message.attachments]})
        )

    bot.tree.add_command(add_to_reel)


@dataclass
class Running:
    bot: ReelBot
    runner: asyncio.Task[None]

    async def outcome(self) -> Outcome:
        return await await_within(self.bot.outcomes.get(), what="a command outcome", watch=[self.runner])

    async def message(self) -> discord.Message:
        return await await_within(self.bot.inbox.get(), what="a message", watch=[self.runner])


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(attachment_size_limit=SIZE_LIMIT) as server:
        with discord_py_pointed_at(server):
            yield server


@pytest.fixture
async def running(fake: FakeDiscord) -> AsyncIterator[Running]:
    bot = ReelBot(fake.guild.id)
    await bot.login(fake.token)
    runner = asyncio.create_task(bot.connect(reconnect=True))
    try:
        await await_within(bot.wait_until_ready(), what="READY", watch=[runner])
        yield Running(bot, runner)
    finally:
        await bot.close()
        await asyncio.wait_for(runner, 10)


async def test_login_ready_and_guild_available(fake: FakeDiscord, running: Running) -> None:
    bot = running.bot
    assert bot.user is not None
    assert bot.user.id == fake.bot_user_id
    assert bot.application_id == fake.application_id
    guild = bot.get_guild(fake.guild.id)
    assert guild is not None
    assert bot.available_guilds == [fake.guild.id]
    assert guild.me is not None
    channel = guild.get_channel(fake.channel.id)
    assert isinstance(channel, discord.TextChannel)
    assert channel.name == "general"
    assert {member.id for member in guild.members} >= {fake.user.id, fake.moderator.id, fake.bot_user_id}
    assert [call.route for call in fake.calls[:2]] == ["GET /users/@me", "GET /oauth2/applications/@me"]
    assert fake.identify_count == 1
    assert fake.identify_payloads[0]["intents"] == bot.intents.value
    await fake.wait_for(lambda: fake.heartbeat_count >= 1, what="first heartbeat")


async def test_json_content_type_and_unknown_routes(fake: FakeDiscord) -> None:
    headers = {"Authorization": f"Bot {fake.token}"}
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{fake.api_base}/users/@me", headers=headers) as response:
            assert response.headers["Content-Type"] == "application/json"
            assert (await response.json())["id"] == str(fake.bot_user_id)
        async with session.get(f"{fake.api_base}/no/such/route", headers=headers) as response:
            assert response.status == 404
            assert response.headers["Content-Type"] == "application/json"
            assert await response.json() == {"message": "404: Not Found", "code": 0}
        async with session.get(f"{fake.api_base}/users/@me") as response:
            assert response.status == 401


async def test_command_sync_is_recorded(fake: FakeDiscord, running: Running) -> None:
    synced = fake.synced_commands[fake.guild.id]
    assert {(command["name"], command["type"]) for command in synced} == {
        ("render", 1),
        ("whoami", 1),
        ("hold", 1),
        ("Add to reel", 3),
    }
    render = fake.command("render", guild=fake.guild)
    assert [(option["name"], option["type"]) for option in render["options"]] == [("clip", 11), ("size", 4)]
    puts = fake.calls_to("PUT", f"/applications/{fake.application_id}/guilds/{fake.guild.id}/commands")
    assert len(puts) == 1
    assert puts[0].status == 200
    assert {command.id for command in running.bot.synced} == {int(command["id"]) for command in synced}


async def test_slash_defers_edits_then_follows_up_with_a_file(fake: FakeDiscord, running: Running) -> None:
    clip = FakeAttachment("clip.mp4", 5000, "video/mp4")
    interaction = await fake.slash("render", {"size": 4096}, user=fake.user, attachments=[clip])

    outcome = await running.outcome()
    assert outcome.error is None
    assert outcome.details == {
        "clip_size": 5000,
        "clip_bytes": 5000,
        "filesize_limit": SIZE_LIMIT,
        "followup_id": interaction.followups[0].id,
    }
    assert clip.downloads == 1
    log = fake.interaction_responses(interaction.id)
    assert log.callback_type == 5
    assert log.original_contents == ["", "Rendering… 50%", "Rendering… 100%"]
    assert [(a.filename, a.size) for a in log.followup_attachments] == [("reel.mp4", 4096)]
    stored = log.followup_attachments[0].path
    assert stored is not None
    assert stored.stat().st_size == 4096
    webhook = f"/webhooks/{fake.application_id}/{interaction.token}"
    routes = [call.route for call in fake.calls if interaction.token in call.path]
    assert routes == [
        f"POST /interactions/{interaction.id}/{interaction.token}/callback",
        f"PATCH {webhook}/messages/@original",
        f"PATCH {webhook}/messages/@original",
        f"POST {webhook}",
    ]
    followup_call = fake.calls_to("POST", webhook)[0]
    assert [(f.filename, f.size) for f in followup_call.files] == [("reel.mp4", 4096)]
    # Non-ephemeral responses land in the channel like any message.
    assert log.original is not None
    assert [m.id for m in fake.channel_messages(fake.channel)][-2:] == [log.original.id, log.followups[0].id]


async def test_followup_over_the_size_limit_gets_413(fake: FakeDiscord, running: Running) -> None:
    interaction = await fake.slash("render", {"size": SIZE_LIMIT + 1}, attachments=[FakeAttachment("c.mp4", 10)])

    outcome = await running.outcome()
    assert isinstance(outcome.error, discord.HTTPException)
    assert outcome.error.status == 413
    assert outcome.error.code == 40005
    assert interaction.followups == []
    rejected = fake.calls_to("POST", f"/webhooks/*/{interaction.token}")
    assert [(call.status, call.files[0].size) for call in rejected] == [(413, SIZE_LIMIT + 1)]


async def test_rate_limited_edit_is_retried_after_retry_after(fake: FakeDiscord, running: Running) -> None:
    rule = fake.rate_limit("PATCH /webhooks/*/messages/@original", retry_after=0.2)
    interaction = await fake.slash("hold")
    held = (await running.outcome()).interaction

    message = await held.edit_original_response(content="after the limit")

    assert message.content == "after the limit"
    assert rule.hits == 1
    edits = fake.calls_to("PATCH", f"/webhooks/*/{interaction.token}/messages/@original")
    assert [call.status for call in edits] == [429, 200]
    assert edits[1].at - edits[0].at >= 0.2
    assert interaction.original_contents == ["", "after the limit"]


async def test_channel_history_returns_scripted_messages(fake: FakeDiscord, running: Running) -> None:
    first = await fake.user_message(fake.channel, "first", author=fake.user)
    clip = FakeAttachment("clip.mp4", 3000, "video/mp4")
    second = await fake.user_message(fake.channel, "with a clip", [clip], author=fake.moderator)
    third = await fake.user_message(fake.channel, "third")
    seen = [await running.message() for _ in range(3)]
    assert [m.id for m in seen] == [first.id, second.id, third.id]
    assert seen[1].attachments[0].size == 3000

    channel = running.bot.get_channel(fake.channel.id)
    assert isinstance(channel, discord.TextChannel)
    history = [m async for m in channel.history(limit=50)]
    assert [m.id for m in history] == [third.id, second.id, first.id]
    assert [m.content for m in history] == ["third", "with a clip", "first"]
    assert history[1].author.id == fake.moderator.id
    attachment = history[1].attachments[0]
    assert (attachment.filename, attachment.size, attachment.content_type) == ("clip.mp4", 3000, "video/mp4")
    assert await attachment.read() == clip.read()
    later = [m async for m in channel.history(limit=50, after=discord.Object(first.id))]
    assert [m.id for m in later] == [second.id, third.id]


async def test_permissions_for_moderator_and_plain_user(fake: FakeDiscord, running: Running) -> None:
    await fake.slash("whoami", user=fake.moderator)
    moderator = await running.outcome()
    await fake.slash("whoami", user=fake.user)
    plain = await running.outcome()

    assert moderator.details == {"interaction": True, "member": True, "cached": True, "app": True}
    assert plain.details == {"interaction": False, "member": False, "cached": False, "app": True}


async def test_message_context_menu_resolves_the_target(fake: FakeDiscord, running: Running) -> None:
    target = await fake.user_message(fake.channel, "pick me", [FakeAttachment("x.mp4", 100)])
    await running.message()

    interaction = await fake.message_command("Add to reel", target, user=fake.moderator)
    outcome = await running.outcome()

    assert outcome.details == {"target": target.id, "attachments": [100]}
    assert interaction.callback_type == 4
    assert interaction.original is not None
    assert interaction.original.ephemeral
    assert interaction.original_contents == [f"Added {target.id} to the reel"]
    assert interaction.original not in fake.channel_messages(fake.channel)


async def test_expired_token_rejects_webhook_edits(fake: FakeDiscord, running: Running) -> None:
    interaction = await fake.slash("hold")
    held = (await running.outcome()).interaction
    fake.expire_interaction(interaction)

    with pytest.raises(discord.HTTPException) as caught:
        await held.edit_original_response(content="too late")

    assert caught.value.code == 50027
    assert caught.value.status == 401
    assert interaction.original_contents == [""]


async def test_bot_messages_and_dms_are_stored(fake: FakeDiscord, running: Running) -> None:
    channel = running.bot.get_channel(fake.channel.id)
    assert isinstance(channel, discord.TextChannel)
    sent = await channel.send("status: 10%", file=discord.File(io.BytesIO(b"x" * 1234), filename="preview.jpg"))
    await sent.edit(content="status: 100%")
    async with channel.typing():
        scratch = await channel.send("scratch")
    await scratch.delete()
    user = await running.bot.fetch_user(fake.user.id)
    await user.send("your reel is ready")

    stored = fake.channel_messages(fake.channel)[-1]
    assert stored.id == sent.id
    assert fake.messages[scratch.id].deleted
    assert len(fake.calls_to("POST", f"/channels/{fake.channel.id}/typing")) == 1
    assert stored.content_history == ["status: 10%", "status: 100%"]
    assert [(a.filename, a.size) for a in stored.attachments] == [("preview.jpg", 1234)]
    assert [m.content for m in fake.channel_messages(fake.dm_channel(fake.user))] == ["your reel is ready"]


async def test_first_followup_after_defer_replaces_the_thinking_message(fake: FakeDiscord, running: Running) -> None:
    interaction = await fake.slash("hold")
    held = (await running.outcome()).interaction

    first = await held.followup.send("done", wait=True)
    second = await held.followup.send("and one more", wait=True)

    assert interaction.original is not None
    assert first.id == interaction.original.id
    assert interaction.original_contents == ["", "done"]
    assert [m.id for m in interaction.followups] == [second.id]


async def test_global_rate_limit_is_waited_out(fake: FakeDiscord, running: Running) -> None:
    fake.rate_limit("POST /channels/*/messages", retry_after=0.1, global_=True)
    channel = running.bot.get_channel(fake.channel.id)
    assert isinstance(channel, discord.TextChannel)

    await channel.send("after a global limit")

    assert [call.status for call in fake.calls_to("POST", "/channels/*/messages")] == [429, 200]


async def test_reconnect_resumes_and_interactions_still_arrive(fake: FakeDiscord, running: Running) -> None:
    await fake.request_reconnect()
    await fake.wait_for(lambda: fake.resume_count == 1, what="RESUME after op 7")
    await fake.drop_gateway(code=4000)
    await fake.wait_for(lambda: fake.resume_count == 2, what="RESUME after a dropped connection")

    interaction: InteractionLog = await fake.slash("hold")
    held = (await running.outcome()).interaction

    assert held.id == interaction.id
    assert fake.identify_count == 1


async def test_default_attachment_limit_is_ten_mib_and_close_is_clean() -> None:
    async with FakeDiscord() as fake:
        with discord_py_pointed_at(fake):
            bot = ReelBot(fake.guild.id)
            await bot.login(fake.token)
            runner = asyncio.create_task(bot.connect())
            await await_within(bot.wait_until_ready(), what="READY", watch=[runner])
            await fake.slash("render", {"size": 10}, attachments=[FakeAttachment("a.mp4", 1)])
            outcome = await await_within(bot.outcomes.get(), what="a command outcome", watch=[runner])
            assert outcome.details["filesize_limit"] == 10 * 1024 * 1024

            await bot.close()
            await asyncio.wait_for(runner, 10)
            await fake.wait_for(lambda: not any(s.connected for s in fake.sessions), what="gateway closed")
            assert runner.exception() is None
            # Client.close() asks for 1000, but its own poll loop closes the socket first with 4000
            # (gateway.py poll_event), so on Discord too the session stays resumable.
            assert fake.gateway_close_codes == [4000]
