"""The Discord adapter end to end: the real discord.py client against the REST + gateway stand-in, the real
engine and storage, and localnemo as the backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import discord
import httpx
import pydantic
import pytest

from adapters.common import AdapterContext
from adapters.discord import DiscordAdapter, DiscordSettings
from bot.config import BotSettings, NemoSettings
from localnemo.testing import TestLocalNemo as LocalNemo
from nemobot.compose import adapter_context
from tests.conftest import Bot, assert_video, bot_process, wait_for
from tests.fakes.discord_server import FakeAttachment, FakeDiscord, InteractionLog, discord_py_pointed_at


@pytest.fixture
async def fake(tmp_path: Path) -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(tmp_dir=tmp_path / "discord") as server:
        # Channels must exist before the bot connects: the gateway announces them in GUILD_CREATE.
        server.add_text_channel(server.guild, "clips")
        with discord_py_pointed_at(server):
            yield server


def context(http: httpx.AsyncClient, settings: NemoSettings) -> AdapterContext:
    return adapter_context(http, settings, BotSettings(_env_file=None))


def dc_settings(fake: FakeDiscord, **overrides: Any) -> DiscordSettings:
    values: dict[str, Any] = {
        "bot_token": fake.token, "api_base": fake.api_base, "gateway_url": fake.gateway_url,
        "guild_ids": [fake.guild.id], "cooldown_seconds": 0, "edit_seconds": 0.05,
    }
    values.update(overrides)
    return DiscordSettings(_env_file=None, **values)


@pytest.fixture
async def adapter(
    http: httpx.AsyncClient, settings: NemoSettings, tmp_path: Path, fake: FakeDiscord
) -> AsyncIterator[DiscordAdapter]:
    bot = Bot(http, settings, tmp_path / "bot.sqlite3")
    engine = await bot.start()
    adapter = DiscordAdapter(engine, dc_settings(fake), context(http, settings), guild_ready_timeout=0.05)
    await adapter.start()
    yield adapter
    await adapter.stop()
    await bot.stop()


def clip(sample_video: Path, name: str = "clip.mp4") -> FakeAttachment:
    data = sample_video.read_bytes()
    return FakeAttachment(name, len(data), "video/mp4", content=data)


def shown(fake: FakeDiscord, log: InteractionLog) -> list[str]:
    """Everything the user sees of an interaction: the original response's versions and the follow-ups."""
    answered = fake.interaction_responses(log)
    return [*answered.original_contents, *(c for m in answered.followups for c in m.content_history)]


async def finished(fake: FakeDiscord, log: InteractionLog, needle: str, within: float = 15) -> InteractionLog:
    return await fake.wait_for(
        lambda: log if any(needle in c for c in shown(fake, log)) else None,
        within=within, what=f"{needle!r} in the response",
    )


def channel_named(fake: FakeDiscord, name: str) -> Any:
    return next(c for c in fake.guild.channels.values() if c.name == name)


async def test_edit_then_export_as_a_follow_up_file_with_the_link(
    adapter: DiscordAdapter, fake: FakeDiscord, sample_video: Path, localnemo: LocalNemo
) -> None:
    edit = await fake.slash("edit", {"prompt": "add background music"}, user=fake.user,
                            attachments=[clip(sample_video)])
    await finished(fake, edit, "music")
    log = fake.interaction_responses(edit)
    assert log.deferred
    shown = [c for c in log.original_contents if c]  # the first is the deferred "thinking…" placeholder
    assert len(shown) >= 2  # progress edits of the original response
    assert shown[0].startswith("📤 Uploading")
    assert localnemo.faults.count("upload") == 1

    export = await fake.slash("export", {}, user=fake.user)
    await finished(fake, export, "Your video is ready: http")
    files = fake.interaction_responses(export).followup_attachments
    assert len(files) == 1
    assert files[0].path is not None
    await assert_video(files[0].path)


async def test_result_above_the_size_limit_is_a_link_only(
    adapter: DiscordAdapter, fake: FakeDiscord, sample_video: Path
) -> None:
    edit = await fake.slash("edit", {"prompt": "add music"}, user=fake.user, attachments=[clip(sample_video)])
    await finished(fake, edit, "music")
    export = await fake.slash("export", {}, user=fake.user, attachment_size_limit=1000)
    await finished(fake, export, "too large to send here")
    assert fake.interaction_responses(export).followup_attachments == []
    assert "http://127.0.0.1" in shown(fake, export)[-1]


async def test_moderator_reel_over_a_channel_with_three_clips(
    adapter: DiscordAdapter, fake: FakeDiscord, sample_video: Path, localnemo: LocalNemo
) -> None:
    clips_channel = channel_named(fake, "clips")
    bob = fake.add_user("bob")
    fake.add_member(fake.guild, bob)
    await fake.user_message(clips_channel, "first!", [clip(sample_video, "a.mp4")], author=fake.user)
    await fake.user_message(clips_channel, "no clip here", author=bob)
    await fake.user_message(clips_channel, "", [clip(sample_video, "b.mp4")], author=bob)
    await fake.user_message(clips_channel, "", [clip(sample_video, "c.mp4")], author=fake.user)

    refused = await fake.slash("reel", {"channel": clips_channel}, user=fake.user)
    await fake.wait_for(lambda: fake.interaction_responses(refused).callback_type is not None, what="refusal")
    assert "Only moderators" in str(fake.interaction_responses(refused).callback_data)
    assert localnemo.faults.count("upload") == 0

    reel = await fake.slash("reel", {"channel": clips_channel}, user=fake.moderator)
    posted = await fake.wait_for(
        lambda: next((m for m in fake.channel_messages(clips_channel) if m.author.id == fake.bot_user_id
                      and m.attachments), None), within=30, what="the reel in the channel",
    )
    assert localnemo.faults.count("upload") == 1
    session = next(s for s in localnemo.state.sessions.values() if len(s.video_infos) == 3)
    assert [v["filename"] for v in session.video_infos] == ["a.mp4", "b.mp4", "c.mp4"]
    assert f"<@{fake.user.id}>" in posted.content
    assert f"<@{bob.id}>" in posted.content
    assert "Highlight reel" in posted.content
    await finished(fake, reel, "Your video is ready")


async def test_reel_of_a_channel_without_clips_says_so(adapter: DiscordAdapter, fake: FakeDiscord) -> None:
    await fake.user_message(fake.channel, "just talk", author=fake.user)
    reel = await fake.slash("reel", {}, user=fake.moderator)
    await finished(fake, reel, "No video or image clips")


async def test_late_result_after_the_token_expired_goes_to_the_channel(
    adapter: DiscordAdapter, fake: FakeDiscord, sample_video: Path, localnemo: LocalNemo
) -> None:
    edit = await fake.slash("edit", {"prompt": "add music"}, user=fake.user, attachments=[clip(sample_video)])
    await finished(fake, edit, "music")
    localnemo.config.render_step_seconds = 0.1
    export = await fake.slash("export", {}, user=fake.user)
    await finished(fake, export, "Exporting")
    fake.expire_interaction(export)
    message = await fake.wait_for(
        lambda: next((m for m in fake.channel_messages(fake.channel)
                      if m.author.id == fake.bot_user_id and m.webhook_id is None and m.attachments), None),
        within=30, what="the video posted in the channel",
    )
    assert f"<@{fake.user.id}>" in message.content
    await fake.wait_for(lambda: any("Your video is ready" in m.content for m in fake.channel_messages(fake.channel)
                                    if m.webhook_id is None), what="the link in the channel")


async def test_rate_limited_edit_is_retried_after_retry_after(
    adapter: DiscordAdapter, fake: FakeDiscord, sample_video: Path
) -> None:
    rule = fake.rate_limit("PATCH /webhooks/*/messages/@original", retry_after=0.5, times=1)
    edit = await fake.slash("edit", {"prompt": "add music"}, user=fake.user, attachments=[clip(sample_video)])
    await finished(fake, edit, "music")
    assert rule.hits == 1
    patches = fake.calls_to("PATCH", "/webhooks/*/messages/@original")
    statuses = [c.status for c in patches]
    first_429 = statuses.index(429)
    assert statuses[first_429 + 1] == 200
    assert patches[first_429 + 1].at - patches[first_429].at >= 0.45


async def test_add_to_reel_marks_a_clip_for_moderators_only(
    adapter: DiscordAdapter, fake: FakeDiscord, sample_video: Path
) -> None:
    message = await fake.user_message(fake.channel, "", [clip(sample_video)], author=fake.user)
    denied = await fake.message_command("Add to reel", message, user=fake.user)
    picked = await fake.message_command("Add to reel", message, user=fake.moderator)
    await fake.wait_for(lambda: fake.interaction_responses(picked).callback_type is not None, what="the answer")
    assert "Added to the reel" in str(fake.interaction_responses(picked).callback_data)
    assert "Only moderators" in str(fake.interaction_responses(denied).callback_data)
    assert [m.id for m in adapter.picks.take(fake.channel.id)] == [message.id]


async def test_nemobot_discord_starts_and_syncs_with_only_token_and_endpoints(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    settings = {"DISCORD_BOT_TOKEN": fake.token, "DISCORD_API_BASE": fake.api_base,
                "DISCORD_GATEWAY_URL": fake.gateway_url, "NEMOBOT_LOG_LEVEL": "DEBUG"}
    async with bot_process("discord", tmp_path, settings) as bot:
        await fake.wait_for(lambda: fake.synced_commands.get(None), within=60, what="a global command sync")
        names = {c["name"] for c in fake.synced_commands[None]}
        assert {"edit", "export", "status", "credits", "new", "help", "reel", "Add to reel"} <= names
        await wait_for(lambda: fake.identify_count >= 1, what="the gateway login")
    assert bot.returncode == 0, bot.stderr
    assert "DEBUG discord." in bot.stderr
    assert fake.token not in bot.output


async def test_restart_mid_export_delivers_once_in_the_channel(
    http: httpx.AsyncClient, settings: NemoSettings, tmp_path: Path, fake: FakeDiscord, sample_video: Path,
    localnemo: LocalNemo,
) -> None:
    bot = Bot(http, settings, tmp_path / "bot.sqlite3")
    adapter = DiscordAdapter(await bot.start(), dc_settings(fake), context(http, settings), guild_ready_timeout=0.05)
    await adapter.start()
    edit = await fake.slash("edit", {"prompt": "add music"}, user=fake.user, attachments=[clip(sample_video)])
    await finished(fake, edit, "music")
    localnemo.config.render_step_seconds = 0.1
    export = await fake.slash("export", {}, user=fake.user)
    await finished(fake, export, "Exporting")
    await adapter.stop()  # the bot goes down mid-export
    await bot.stop()

    bot = Bot(http, settings, tmp_path / "bot.sqlite3")
    adapter = DiscordAdapter(await bot.start(), dc_settings(fake), context(http, settings), guild_ready_timeout=0.05)
    await adapter.start()
    try:
        posted = await fake.wait_for(
            lambda: next((m for m in fake.channel_messages(fake.channel)
                          if m.author.id == fake.bot_user_id and m.attachments), None),
            within=30, what="the video after the restart",
        )
        assert f"<@{fake.user.id}>" in posted.content
        assert bot.engine is not None
        await bot.engine.join()
        videos = [m for m in fake.channel_messages(fake.channel) if m.attachments]
        videos += [m for log in fake.interactions.values() for m in fake.interaction_responses(log).followups
                   if m.attachments]
        assert len([m for m in videos if m.author.id == fake.bot_user_id]) == 1
    finally:
        await adapter.stop()
        await bot.stop()


async def test_mention_with_an_attachment_when_message_content_is_enabled(
    http: httpx.AsyncClient, settings: NemoSettings, tmp_path: Path, fake: FakeDiscord, sample_video: Path,
    localnemo: LocalNemo,
) -> None:
    bot = Bot(http, settings, tmp_path / "bot.sqlite3")
    adapter = DiscordAdapter(await bot.start(), dc_settings(fake, message_content=True), context(http, settings),
                             guild_ready_timeout=0.05)
    await adapter.start()
    try:
        await fake.user_message(fake.channel, "no mention, no answer", [clip(sample_video)], author=fake.user)
        await fake.user_message(fake.channel, f"<@{fake.bot_user_id}> add background music", [clip(sample_video)],
                                author=fake.user)
        await fake.wait_for(lambda: any("music" in m.content for m in fake.channel_messages(fake.channel)
                                        if m.author.id == fake.bot_user_id), within=15, what="the answer")
        assert localnemo.faults.count("upload") == 1
    finally:
        await adapter.stop()
        await bot.stop()


async def test_cooldown_refuses_a_second_command_at_once(
    http: httpx.AsyncClient, settings: NemoSettings, tmp_path: Path, fake: FakeDiscord
) -> None:
    bot = Bot(http, settings, tmp_path / "bot.sqlite3")
    adapter = DiscordAdapter(await bot.start(), dc_settings(fake, cooldown_seconds=60), context(http, settings),
                             guild_ready_timeout=0.05)
    await adapter.start()
    try:
        first = await fake.slash("credits", {}, user=fake.user)
        await finished(fake, first, "Credits")
        second = await fake.slash("credits", {}, user=fake.user)
        await fake.wait_for(lambda: fake.interaction_responses(second).callback_type is not None, what="answer")
        assert "try again in" in str(fake.interaction_responses(second).callback_data)
    finally:
        await adapter.stop()
        await bot.stop()


async def test_status_sends_the_storyboard_as_a_file(
    adapter: DiscordAdapter, fake: FakeDiscord, sample_video: Path
) -> None:
    edit = await fake.slash("edit", {"prompt": "add background music"}, user=fake.user,
                            attachments=[clip(sample_video)])
    await finished(fake, edit, "music")
    status = await fake.slash("status", {}, user=fake.user)
    await fake.wait_for(
        lambda: fake.interaction_responses(status).followup_attachments or None, what="the storyboard file"
    )
    (picture,) = fake.interaction_responses(status).followup_attachments
    assert picture.filename.endswith(".png")
    assert any("Timeline" in c for c in shown(fake, status))


async def test_the_captions_come_back_as_a_file_with_the_video(
    adapter: DiscordAdapter, fake: FakeDiscord, sample_video: Path
) -> None:
    srt = b"1\n00:00:00,200 --> 00:00:01,800\nHello there\n"
    captions = FakeAttachment("words.srt", len(srt), "application/x-subrip", content=srt)
    edit = await fake.slash("edit", {"prompt": "add the captions"}, user=fake.user,
                            attachments=[clip(sample_video), captions])  # fmt: skip
    await finished(fake, edit, "1 caption from words.srt")
    export = await fake.slash("export", {}, user=fake.user)
    await finished(fake, export, "Your video is ready: http")
    await fake.wait_for(
        lambda: len(fake.interaction_responses(export).followup_attachments) == 2 or None, what="the .srt file"
    )
    _, document = fake.interaction_responses(export).followup_attachments
    assert document.filename == "captions.srt"
    assert document.path is not None
    assert document.path.read_bytes() == srt


# -- shards -------------------------------------------------------------------------------------------------


async def test_without_shard_settings_the_client_is_one_connection(adapter: DiscordAdapter, fake: FakeDiscord) -> None:
    assert not isinstance(adapter.client, discord.AutoShardedClient)
    (session,) = fake.sessions
    assert session.shard is None


async def test_two_processes_each_run_one_of_two_shards_and_only_the_guilds_shard_answers(
    http: httpx.AsyncClient, settings: NemoSettings, tmp_path: Path, fake: FakeDiscord
) -> None:
    # Two bot processes sharing one database, started with DISCORD_SHARD_IDS=0 and =1 and DISCORD_SHARD_COUNT=2.
    bots = [Bot(http, settings, tmp_path / "bot.sqlite3") for _ in range(2)]
    adapters: list[DiscordAdapter] = []
    try:
        for shard, bot in enumerate(bots):
            engine = await bot.start()
            adapter = DiscordAdapter(engine, dc_settings(fake, shard_ids=str(shard), shard_count=2),
                                     context(http, settings), guild_ready_timeout=0.05)
            adapters.append(adapter)
            await adapter.start()
        for shard, adapter in enumerate(adapters):
            assert isinstance(adapter.client, discord.AutoShardedClient)
            assert (adapter.client.shard_ids, adapter.client.shard_count) == ([shard], 2)
        assert sorted(session.shard or [] for session in fake.sessions) == [[0, 2], [1, 2]]
        owner = (fake.guild.id >> 22) % 2
        assert [g.id for g in adapters[owner].client.guilds] == [fake.guild.id]
        assert list(adapters[1 - owner].client.guilds) == []
        log = await fake.slash("help", {}, user=fake.user)
        await finished(fake, log, "I edit videos for you")
        answered = fake.interaction_responses(log)
        assert len(answered.original_contents) >= 1
        # Only the guild's shard got the interaction: one acknowledgement, not one per process.
        assert len(fake.calls_to("POST", f"/interactions/{log.id}/*/callback")) == 1
    finally:
        for adapter in reversed(adapters):
            await adapter.stop()
        for bot in bots:
            await bot.stop()


@pytest.mark.parametrize(
    ("values", "said"),
    [
        ({"shard_ids": "0,1"}, "DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT"),
        ({"shard_ids": "2", "shard_count": 2}, "DISCORD_SHARD_IDS 2 is not a shard of DISCORD_SHARD_COUNT=2"),
        ({"shard_ids": "1,1", "shard_count": 2}, "DISCORD_SHARD_IDS names a shard twice"),
    ],
)
def test_shard_settings_that_cannot_work_are_refused(values: dict[str, Any], said: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=said):
        DiscordSettings(_env_file=None, bot_token="t", **values)


def test_shard_count_alone_runs_every_shard_in_this_process() -> None:
    settings = DiscordSettings(_env_file=None, bot_token="t", shard_count=3)
    assert (settings.shard_ids, settings.shard_count) == ([], 3)
