"""The durable job queue: exports of several Telegram chats, submitted by one process, followed and delivered
by two ``nemobot worker`` processes over PostgreSQL, one of them killed with SIGKILL while it follows them.
Every export is delivered, a repeated send is counted (at most one per kill), and each chat's results come
in the order they were asked for. The SQLite path is the rest of the suite, unchanged."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from adapters.console import ConsoleFiles, parse_line
from adapters.discord import DiscordSender, DiscordSettings
from adapters.telegram import TelegramSender, TelegramSettings
from bot.config import BotSettings
from bot.engine import Engine
from bot.messages import ChatKey, DeliveryTarget, IncomingMessage
from bot.nemo.client import NemoClient
from bot.outcome import Outcome
from bot.queue import QueueSettings
from bot.queue.durable import ProcrastinateQueue
from bot.sessions import RepositoryIdentities
from localnemo.app import default_renderer
from localnemo.media import probe
from localnemo.testing import TestLocalNemo
from storage.postgres import PostgresRepository
from tests.conftest import bot_process, fast_localnemo_config, fast_settings, wait_for
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.telegram_server import FakeTelegram
from tests.test_kill_restart import GatedRenderer

pytestmark = pytest.mark.usefixtures("ptb_timedelta")

CHATS = (501, 502, 503)
# Each chat asks for two exports, the second at another size: the order of the delivered videos shows.
ASKED = (("export", 240), ("export 720p", 720))
HEIGHTS = tuple(height for _, height in ASKED)


def queue_environment(url: str, server: TestLocalNemo, fake: FakeTelegram) -> dict[str, str]:
    return {
        "NEMOBOT_DB": url, "NEMO_API_BASE": server.base_url, "NEMO_POLL_SECONDS": "0.1",
        "NEMO_SKILL_PLATFORM": "tests", "TELEGRAM_BOT_TOKEN": fake.token, "TELEGRAM_API_BASE": fake.api_base,
        "TELEGRAM_FILE_API_BASE": fake.file_base, "TELEGRAM_PRIVATE_EDIT_SECONDS": "0.05",
        "NEMOBOT_QUEUE_HEARTBEAT_SECONDS": "0.5", "NEMOBOT_QUEUE_STALLED_SECONDS": "2",
        "NEMOBOT_QUEUE_POLL_SECONDS": "0.5", "NEMOBOT_QUEUE_CLAIM_LEASE_SECONDS": "3",
        "NEMOBOT_QUEUE_CONCURRENCY": "1", "NEMOBOT_LOG_LEVEL": "INFO",
    }


@contextlib.asynccontextmanager
async def receiving_process(url: str, server: TestLocalNemo, fake: FakeTelegram | None) -> AsyncIterator[Engine]:
    """What a bot process that takes messages does, without running jobs itself: its engine over the shared
    database and queue, answering through Telegram's sending side."""
    settings = fast_settings(server.base_url)
    async with httpx.AsyncClient() as http, PostgresRepository.open(url) as repo:
        queue = await ProcrastinateQueue.connect(url, QueueSettings(_env_file=None))
        engine = Engine(NemoClient(http, settings, RepositoryIdentities(repo)), repo,
                        BotSettings(_env_file=None, db=url), queue=queue)
        try:
            yield engine
        finally:
            await engine.close()
            await queue.close()


def heights_sent(fake: FakeTelegram, chat: int) -> list[Path]:
    return [m.upload.path for m in fake.sent_videos(chat) if m.upload is not None]


async def test_two_workers_one_killed_deliver_every_export_in_order(
    tmp_path: Path, sample_video: Path, postgres_url: str
) -> None:
    config = fast_localnemo_config(tmp_path / "localnemo")
    renderer = GatedRenderer(default_renderer(config))
    async with TestLocalNemo(config, renderer=renderer) as server, FakeTelegram(tmp_dir=tmp_path / "tg") as fake:
        tg = TelegramSettings(_env_file=None, bot_token=fake.token, api_base=fake.api_base,
                              file_api_base=fake.file_base, private_edit_seconds=0.05)
        sender = TelegramSender(tg)
        await sender.start()
        try:
            async with receiving_process(postgres_url, server, fake) as engine:
                for chat_id in CHATS:
                    fake.add_chat(chat_id)
                    chat = ChatKey("tg", str(chat_id))
                    replies = sender.replies_for(IncomingMessage(chat=chat, user_id="u", message_id="0").delivery)
                    upload = parse_line(f"/upload {sample_video}", chat)
                    assert not isinstance(upload, str)
                    assert await (await engine.handle(upload, replies, ConsoleFiles())).wait() is Outcome.DONE
                    for n, (text, _) in enumerate(ASKED, 1):
                        message = IncomingMessage(chat=chat, user_id="u", message_id=f"e{n}", text=text)
                        assert await (await engine.handle(message, replies)).wait() is Outcome.QUEUED
        finally:
            await sender.stop()

        env = queue_environment(postgres_url, server, fake)
        async with bot_process("worker", tmp_path, env) as first, bot_process("worker", tmp_path, env) as second:
            # One chat's job each (concurrency 1), following renders that cannot finish yet: the first is killed
            # in the middle of its job.
            await wait_for(lambda: renderer.started.is_set() and "follow_export" in first.output
                           and "follow_export" in second.output, within=60, what="both workers to run jobs",
                           details=lambda: first.output[-3000:] + second.output[-3000:])
            first.process.kill()
            await first.process.wait()
            kills = 1
            renderer.gate.set()
            await wait_for(lambda: all(len(fake.sent_videos(c)) >= len(HEIGHTS) for c in CHATS), within=120,
                           what="every export delivered", details=lambda: second.output[-4000:])
            # The killed worker's job was found stalled and run again by the survivor.
            assert "queue.stalled_job_retried" in second.output
        duplicates = 0
        for chat_id in CHATS:
            videos = heights_sent(fake, chat_id)
            duplicates += len(videos) - len(HEIGHTS)
            heights: list[int] = []
            for path in videos:
                info = await probe(path)
                assert info is not None
                assert info.height is not None
                heights.append(info.height)
            # In order: every 240p result before the 720p one (a repeated send repeats the one it was at).
            assert sorted(heights) == heights, heights
            assert set(heights) == set(HEIGHTS), heights
        assert duplicates <= kills


async def test_a_worker_with_only_the_discord_token_delivers_a_discord_export_in_its_channel(
    tmp_path: Path, sample_video: Path, postgres_url: str
) -> None:
    config = fast_localnemo_config(tmp_path / "localnemo")
    async with (TestLocalNemo(config) as server, FakeDiscord(tmp_dir=tmp_path / "discord") as fake):
        dc = DiscordSettings(_env_file=None, bot_token=fake.token, api_base=fake.api_base, edit_seconds=0.05)
        sender = DiscordSender(dc)
        await sender.start()
        try:
            # A Discord bot process took the messages (its shard received them) and stopped before the export
            # was followed: the export waits in the queue for a process that can speak on Discord.
            async with receiving_process(postgres_url, server, None) as engine:
                chat = ChatKey("dc", str(fake.channel.id), user=str(fake.user.id))
                target = DeliveryTarget(address=str(fake.channel.id), mention=str(fake.user.id), group=True)
                replies = sender.replies_for(target)
                upload = parse_line(f"/upload {sample_video}", chat)
                assert not isinstance(upload, str)
                upload = dataclasses.replace(upload, target=target)
                assert await (await engine.handle(upload, replies, ConsoleFiles())).wait() is Outcome.DONE
                export = IncomingMessage(chat=chat, user_id=str(fake.user.id), message_id="e1", text="export",
                                         target=target, is_group=True)
                assert await (await engine.handle(export, replies)).wait() is Outcome.QUEUED
        finally:
            await sender.stop()
        env = {"NEMOBOT_DB": postgres_url, "NEMO_API_BASE": server.base_url, "NEMO_POLL_SECONDS": "0.1",
               "NEMO_SKILL_PLATFORM": "tests", "DISCORD_BOT_TOKEN": fake.token, "DISCORD_API_BASE": fake.api_base,
               "DISCORD_EDIT_SECONDS": "0.05", "NEMOBOT_QUEUE_POLL_SECONDS": "0.5", "NEMOBOT_LOG_LEVEL": "INFO"}
        async with bot_process("worker", tmp_path, env) as worker:
            posted = await wait_for(
                lambda: next((m for m in fake.channel_messages(fake.channel)
                              if m.author.id == fake.bot_user_id and m.attachments), None),
                within=60, what="the video in the channel", details=lambda: worker.output[-3000:])
            assert f"<@{fake.user.id}>" in posted.content or any(
                f"<@{fake.user.id}>" in m.content for m in fake.channel_messages(fake.channel))
            await wait_for(lambda: "engine.export.delivered" in worker.output, what="the delivery logged")
            assert "platform=dc" in worker.output
        videos = [m for m in fake.channel_messages(fake.channel) if m.author.id == fake.bot_user_id and m.attachments]
        assert len(videos) == 1
        assert fake.token not in worker.output
