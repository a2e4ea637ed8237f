"""The small parts of the core, one by one: errors in words, delivery targets (old and new), the
scheduler's and Discord's bookkeeping, discord.py's hosts, the one text splitter, id lists, file kinds."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import discord
import httpx
import pytest

from adapters.console import ConsoleFiles, ConsoleReplies, parse_line
from adapters.discord import Cooldowns, DiscordHosts, Picks
from adapters.telegram import TelegramSettings
from bot.config import NemoSettings
from bot.explain import explain, plain_reason
from bot.exports import progress_text
from bot.messages import Capabilities, ChatKey, DeliveryTarget, IncomingMessage
from bot.nemo import errors
from bot.nemo.auth import MemoryIdentityStore
from bot.nemo.client import NemoClient
from bot.nemo.models import RenderJob
from bot.nemo.uploads import attachment_kind
from bot.outcome import Outcome
from bot.scheduler import Scheduler
from bot.textsplit import split_text
from localnemo.app import default_renderer
from localnemo.testing import TestLocalNemo as LocalNemo
from tests.conftest import Bot, fast_localnemo_config, fast_settings, wait_for
from tests.test_kill_restart import GatedRenderer

MB = 1024 * 1024

# -- errors in words (pure) ------------------------------------------------------------------------------


def test_out_of_credits_names_the_link_or_says_the_credits_are_shared() -> None:
    exc = errors.OutOfCredits("no credits")
    with_link = explain(exc, "en", registration_link="https://nemovideo.com/?bind=u_1", upload_limit=MB)
    assert "https://nemovideo.com/?bind=u_1" in with_link
    shared = explain(exc, "en", registration_link=None, upload_limit=MB)
    assert "http" not in shared
    assert shared != with_link


def test_a_refused_file_is_named_with_its_size_and_the_limit() -> None:
    exc = errors.FileTooLarge("too big", filename="big.mp4", size=600 * MB, limit=None)
    text = explain(exc, "en", registration_link=None, upload_limit=500 * MB)
    assert "big.mp4 is 600.0 MB; the limit is 500.0 MB" in text


def test_raw_backend_reasons_never_reach_the_user() -> None:
    for raw in ('{"code": 500}', "Traceback (most recent call last)", "Bearer nmv_secret", ""):
        assert plain_reason(raw, "en") == "an unexpected error on NemoVideo's side"
        assert "nmv_" not in explain(errors.NemoError(raw), "en", registration_link=None, upload_limit=MB)
    assert plain_reason("x" * 500, "en").endswith("…")
    assert explain(errors.RateLimited("slow down"), "zh", registration_link=None, upload_limit=MB) != explain(
        errors.RateLimited("slow down"), "en", registration_link=None, upload_limit=MB)


# -- delivery targets ------------------------------------------------------------------------------------


def test_a_delivery_target_round_trips_with_its_chat() -> None:
    chat = ChatKey("dc", "5", "7", "reel-1")
    target = DeliveryTarget(address="5", mention="7", group=True, caption="Highlight reel")
    stored = json.loads(json.dumps(target.to_json(chat)))
    assert DeliveryTarget.from_json(stored, "ignored: the parts are stored") == (chat, target)


@pytest.mark.parametrize(
    ("old", "key", "expected"),
    [
        ({"chat_id": -100, "group": True}, "tg:-100:u:42", DeliveryTarget(address="-100", group=True)),
        ({"channel_id": 5, "user_id": 7}, "dc:5:u:7", DeliveryTarget(address="5", mention="7")),
        ({"channel_id": 5, "user_id": 7, "caption": "Reel by <@7>"}, "dc:5:s:reel-9",
         DeliveryTarget(address="5", mention="7", caption="Reel by <@7>")),
        ({}, "console:local", DeliveryTarget(address="local")),
        (None, "console:local", DeliveryTarget(address="local")),
    ],
)
def test_targets_stored_before_the_upgrade_are_still_read(
    old: dict[str, object] | None, key: str, expected: DeliveryTarget
) -> None:
    chat, target = DeliveryTarget.from_json(old, key)
    assert str(chat) == key
    assert target == expected


async def test_an_export_stored_before_the_upgrade_is_resumed_and_delivered_once(
    http: httpx.AsyncClient, settings: NemoSettings, tmp_path: Path, localnemo: LocalNemo, sample_video: Path
) -> None:
    db = tmp_path / "bot.sqlite3"
    chat = ChatKey("tg", "4242")
    first = Bot(http, settings, db)
    engine = await first.start()
    replies = ConsoleReplies(io.StringIO(), tmp_path / "out", edit_interval_seconds=0)
    for line in (f"/upload {sample_video}", "export"):
        message = parse_line(line, chat)
        assert isinstance(message, IncomingMessage)
        await engine.handle(message, replies, ConsoleFiles())
        if line != "export":
            await engine.join(chat)
    localnemo.config.render_step_seconds = 0.3
    await wait_for(lambda: any("Exporting" in text for text in replies.transcript), what="the export to start")
    await first.stop()
    # As the previous version stored it: Telegram's own keys, and the chat only in the storage key.
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("UPDATE exports SET target = ?", (json.dumps({"chat_id": 4242, "group": False}),)
                            ).rowcount == 1
        conn.commit()

    class Recorder:
        name = "tg"
        capabilities = Capabilities(max_upload_bytes=1 << 40)

        def __init__(self) -> None:
            self.targets: list[DeliveryTarget] = []

        async def start(self) -> None: ...

        async def stop(self) -> None: ...

        def replies_for(self, target: DeliveryTarget) -> ConsoleReplies:
            self.targets.append(target)
            return after

    after = ConsoleReplies(io.StringIO(), tmp_path / "after", edit_interval_seconds=0)
    second = Bot(http, settings, db)
    engine = await second.start()
    try:
        recorder = Recorder()
        assert await engine.resume(recorder) == 1
        await engine.join()
        assert recorder.targets == [DeliveryTarget(address="4242", group=False)]
        assert sum("Your video is ready" in text for text in after.transcript) == 1
        assert len(after.videos) == 1
        assert await engine.resume(recorder) == 0
    finally:
        await second.stop()


# -- bookkeeping that must not grow ----------------------------------------------------------------------


async def test_the_scheduler_forgets_a_chat_once_nothing_of_it_is_left() -> None:
    scheduler = Scheduler(max_in_flight=2)
    go = asyncio.Event()
    notices: list[str] = []

    async def job() -> None:
        await go.wait()

    async def notice() -> None:
        notices.append("next")

    await scheduler.submit("tg:1", job, notice=notice)
    await scheduler.submit("tg:1", job, notice=notice)
    scheduler.read("tg:2", job())
    scheduler.track_export("tg:3", job())
    assert scheduler.active_chats == 3
    assert notices == ["next"]
    go.set()
    await scheduler.join()
    await wait_for(lambda: scheduler.active_chats == 0, what="every chat forgotten")
    # A cancelled chat is forgotten too.
    forever = asyncio.Event()

    async def stuck() -> None:
        await forever.wait()

    await scheduler.submit("tg:4", stuck, notice=notice)
    assert scheduler.cancel("tg:4")
    await scheduler.join("tg:4")
    await wait_for(lambda: scheduler.active_chats == 0, what="the cancelled chat forgotten")
    await scheduler.close()


def test_discord_cooldowns_keep_only_users_who_may_still_be_refused() -> None:
    cooldowns = Cooldowns(3.0)
    assert cooldowns.wait(1, now=100.0) == 0
    assert cooldowns.wait(1, now=101.0) == pytest.approx(2.0)
    assert cooldowns.wait(2, now=102.0) == 0
    assert len(cooldowns) == 2
    assert cooldowns.wait(3, now=110.0) == 0  # users 1 and 2 are long past their cooldown
    assert len(cooldowns) == 1
    assert len(Cooldowns(0)) == 0
    assert Cooldowns(0).wait(1, now=1.0) == 0


def test_reel_picks_are_capped_and_forgotten_when_left_alone() -> None:
    now = [0.0]
    picks = Picks(ttl_seconds=60, max_per_channel=2, clock=lambda: now[0])

    def message(message_id: int) -> discord.Message:
        return cast(discord.Message, SimpleNamespace(id=message_id))

    assert picks.add(1, message(10)) == 1
    assert picks.add(1, message(11)) == 2
    assert picks.add(1, message(12)) == 2  # the oldest mark makes room
    now[0] = 30.0
    assert picks.add(2, message(20)) == 1
    now[0] = 70.0  # channel 1 untouched for 70 s, channel 2 for 40 s
    assert [m.id for m in picks.take(2)] == [20]
    assert picks.channels == 0  # channel 1 was forgotten, channel 2 taken
    assert picks.take(1) == []


def test_discord_hosts_are_put_back_on_stop() -> None:
    base, gateway = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    hosts = DiscordHosts("http://127.0.0.1:9/api/v10/", "ws://127.0.0.1:9/gateway")
    hosts.apply()
    assert discord.http.Route.BASE == "http://127.0.0.1:9/api/v10"
    assert str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == "ws://127.0.0.1:9/gateway"
    hosts.restore()
    assert discord.http.Route.BASE == base
    assert discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY == gateway


# -- one place each --------------------------------------------------------------------------------------


def test_one_splitter_for_messages_and_status_lines() -> None:
    text = "para one\n\npara two is longer " + "word " * 30
    parts = split_text(text, 40)
    assert all(len(p) <= 40 for p in parts)
    assert " ".join(" ".join(parts).split()) == " ".join(text.split())
    assert split_text("x" * 100, 40) == ["x" * 40, "x" * 40, "x" * 20]
    assert split_text("short", 40) == ["short"]
    (status,) = split_text("y" * 100, 40, max_parts=1)
    assert status == "y" * 39 + "…"


def test_id_lists_are_read_in_every_written_form(monkeypatch: pytest.MonkeyPatch) -> None:
    for written in ("1,2", "1; 2", "1 2", "[1, 2]"):
        monkeypatch.setenv("TELEGRAM_ALLOWED_IDS", written)
        assert TelegramSettings(_env_file=None).allowed_ids == [1, 2]
    monkeypatch.setenv("TELEGRAM_ALLOWED_IDS", "7")
    assert TelegramSettings(_env_file=None).allowed_ids == [7]


def test_one_mapping_from_a_file_to_its_kind() -> None:
    assert attachment_kind("clip.MP4") == "video"
    assert attachment_kind("notes.srt", "application/x-subrip") == "subtitle"
    assert attachment_kind("file_12", "video/quicktime") == "video"
    assert attachment_kind("voice.ogg", "audio/ogg") == "audio"
    assert attachment_kind("notes.docx", "application/msword") == "document"
    assert attachment_kind("link") == "document"


# -- exports: queued progress, giving up --------------------------------------------------------------------


def test_a_queued_render_is_read_and_shown_with_its_place() -> None:
    queued = RenderJob.parse({"data": {"id": "r", "status": "pending", "progress": 0, "queuePosition": 3}}, "r")
    assert queued.queue_position == 3
    assert progress_text(queued, "en") == "🎬 Queued for export (2 ahead)…"
    assert progress_text(queued, "zh") == "🎬 排队等待导出（前面还有 2 个）…"
    nxt = RenderJob.parse({"status": "pending", "queuePosition": 1}, "r")
    assert progress_text(nxt, "en") == "🎬 Queued for export (next in line)…"
    running = RenderJob.parse({"status": "processing", "progress": 40, "queuePosition": 1}, "r")
    assert progress_text(running, "en") == "🎬 Exporting… 40%"
    for odd in (None, 0, -1, "2", True):
        job = RenderJob.parse({"status": "pending", "progress": 5, "queuePosition": odd}, "r")
        assert job.queue_position is None
        assert progress_text(job, "en") == "🎬 Exporting… 5%"


async def test_waiting_reports_each_change_of_place_in_the_queue() -> None:
    answers = iter([
        {"status": "pending", "queuePosition": 2}, {"status": "pending", "queuePosition": 2},
        {"status": "pending", "queuePosition": 1}, {"status": "processing", "progress": 50},
        {"status": "completed", "progress": 100, "output": {"url": "http://x/r.mp4"}},
    ])

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/render/proxy/lambda/r-1"
        return httpx.Response(200, json={"code": 0, "data": {"id": "r-1", **next(answers)}})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        settings = NemoSettings(_env_file=None, api_base="http://stub", token="t", poll_seconds=0.001)
        seen: list[str] = []

        async def on_progress(job: RenderJob) -> None:
            seen.append(progress_text(job, "en"))

        job = await NemoClient(client, settings, MemoryIdentityStore()).account("shared").wait_for_export(
            "r-1", on_progress)
    assert job.done
    assert seen[:3] == ["🎬 Queued for export (1 ahead)…", "🎬 Queued for export (next in line)…",
                        "🎬 Exporting… 50%"]


async def test_an_export_given_up_on_is_cancelled_on_the_backend(
    http: httpx.AsyncClient, tmp_path: Path, sample_video: Path
) -> None:
    config = fast_localnemo_config(tmp_path / "localnemo")
    renderer = GatedRenderer(default_renderer(config))  # never opened: the render outlasts the wait
    async with LocalNemo(config, renderer=renderer) as server:
        bot = Bot(http, fast_settings(server.base_url, export_timeout_seconds=0.3), tmp_path / "bot.sqlite3")
        engine = await bot.start()
        try:
            replies = ConsoleReplies(io.StringIO(), tmp_path / "out", edit_interval_seconds=0)
            chat = ChatKey("console", "timeout")
            outcomes = []
            for line in (f"/upload {sample_video}", "export"):
                message = parse_line(line, chat)
                assert isinstance(message, IncomingMessage)
                outcomes.append(await (await engine.handle(message, replies, ConsoleFiles())).wait())
            assert outcomes == [Outcome.DONE, Outcome.FAILED]
            assert server.faults.count("render_cancel") == 1
            assert "I stopped waiting and cancelled it" in "\n".join(replies.transcript)
            (job,) = server.state.jobs.values()
            assert job.status in ("cancelled", "failed")
            assert bot.repo is not None
            assert await bot.repo.unfinished_exports() == []
        finally:
            await bot.stop()


def test_a_damaged_upload_warning_keeps_a_bracketed_long_file_name_and_its_advice() -> None:
    from bot.explain import plain_warning

    name = "[2024] Screen Recording 2024-05-12 at 13.45.01 (final).mov"
    warning = (f"{name} is damaged: only the first 28.7 s of 84.6 s can be used. That part is on the timeline; "
               "send the whole file again to use the rest.")
    assert plain_warning(warning, "en") == warning
    assert plain_warning("Traceback (most recent call last): …", "en") != "Traceback (most recent call last): …"
    assert plain_warning("a\x00b\x1b[31m c", "en") == "ab[31m c"
