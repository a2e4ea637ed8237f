"""The Telegram adapter end to end: the real python-telegram-bot Application against the Bot API stand-in,
the real engine and storage, and localnemo as the backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.telegram import TelegramAdapter, TelegramSettings
from bot.config import BotSettings, NemoSettings
from bot.textsplit import split_text
from localnemo.testing import TestLocalNemo as LocalNemo
from nemobot.compose import adapter_context
from tests.conftest import Bot, assert_video, bot_process, wait_for
from tests.fakes.telegram_server import MB, FakeTelegram

CHAT = 4242


pytestmark = pytest.mark.usefixtures("ptb_timedelta")


@pytest.fixture
async def fake(tmp_path: Path) -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(tmp_dir=tmp_path / "telegram") as server:
        yield server


def tg_settings(fake: FakeTelegram, **overrides: Any) -> TelegramSettings:
    values: dict[str, Any] = {
        "bot_token": fake.token, "api_base": fake.api_base, "file_api_base": fake.file_base,
        "album_seconds": 0.3, "private_edit_seconds": 0.05, "group_edit_seconds": 0.05,
    }
    values.update(overrides)
    return TelegramSettings(_env_file=None, **values)


class Running:
    """The bot process: engine + adapter over one database; ``restart`` is a new process on the same file."""

    def __init__(self, http: httpx.AsyncClient, settings: NemoSettings, db: Path, fake: FakeTelegram) -> None:
        self.bot = Bot(http, settings, db)
        self.http, self.settings, self.db, self.fake = http, settings, db, fake
        self.adapter: TelegramAdapter | None = None

    async def start(self, **overrides: Any) -> TelegramAdapter:
        engine = await self.bot.start()
        context = adapter_context(self.http, self.settings, BotSettings(_env_file=None), store=self.bot.repo)
        self.adapter = TelegramAdapter(engine, tg_settings(self.fake, **overrides), context)
        await self.adapter.start()
        return self.adapter

    async def stop(self) -> None:
        if self.adapter is not None:
            await self.adapter.stop()
        await self.bot.stop()


@pytest.fixture
async def running(
    http: httpx.AsyncClient, settings: NemoSettings, tmp_path: Path, fake: FakeTelegram
) -> AsyncIterator[Running]:
    r = Running(http, settings, tmp_path / "bot.sqlite3", fake)
    await r.start()
    yield r
    await r.stop()


def texts(fake: FakeTelegram, chat: int = CHAT) -> list[str]:
    return [m.text or "" for m in fake.chat_messages(chat)]


async def test_private_chat_edit_then_export_by_send_video(
    running: Running, fake: FakeTelegram, sample_video: Path, localnemo: LocalNemo
) -> None:
    fake.user_video(CHAT, content=sample_video, caption="cut the pauses, add background music")
    # The final state of the status message: an intermediate one ("Adding music…") has no buttons yet.
    status = await fake.wait_for(
        lambda: next((m for m in fake.chat_messages(CHAT) if "music" in (m.text or "") and m.reply_markup), None),
        what="the edit's reply with its buttons",
    )
    assert status.edit_count >= 1  # one status message, edited in place
    assert status.history[0] is not None
    assert "Uploading" in status.history[0]
    assert "Click" not in (status.text or "")
    assert status.reply_markup is not None  # Export / Status / Credits / New buttons
    fake.user_text(CHAT, "export")
    await fake.wait_for(lambda: fake.sent_videos(CHAT), what="the video")
    await fake.wait_for(lambda: any("Your video is ready: http" in t for t in texts(fake)), what="the link")
    video = fake.sent_videos(CHAT)[0]
    assert video.upload is not None
    await assert_video(video.upload.path)
    assert "upload_video" in fake.chat_actions(CHAT)
    assert localnemo.faults.count("upload") == 1


async def test_over_the_download_limit_is_refused_without_get_file(running: Running, fake: FakeTelegram) -> None:
    fake.user_video(CHAT, file_size=25 * MB, caption="add music")
    await fake.wait_for(lambda: any("Telegram lets bots download at most 20.0 MB" in t for t in texts(fake)),
                        what="the refusal")
    assert fake.calls_to("getFile") == []
    text = next(t for t in texts(fake) if "20.0 MB" in t)
    assert "link" in text
    assert "local Bot API server" in text


async def test_album_of_three_clips_is_one_upload(
    running: Running, fake: FakeTelegram, sample_video: Path, localnemo: LocalNemo
) -> None:
    for i in range(3):
        fake.user_video(CHAT, content=sample_video, media_group_id="album-1", file_name=f"clip{i}.mp4",
                        caption="make a reel" if i == 0 else None)
    await fake.wait_for(lambda: any("Got clip0.mp4, clip1.mp4, clip2.mp4" in t or "Uploaded clip0.mp4" in t
                                    for t in texts(fake)), what="the album's upload")
    await wait_for(lambda: localnemo.faults.count("run_sse") == 1, what="the album's caption as one edit")
    assert localnemo.faults.count("upload") == 1
    (session,) = localnemo.state.sessions.values()
    assert len(session.video_infos) == 3


async def test_in_a_group_only_mentions_commands_and_replies_are_answered(
    running: Running, fake: FakeTelegram, localnemo: LocalNemo
) -> None:
    group = -100777
    fake.add_chat(group, chat_type="supergroup", title="Clips")
    fake.user_text(group, "what a nice day", user_id=11)
    fake.user_text(group, "@nemo_test_bot add background music", user_id=11)
    await fake.wait_for(lambda: any("music" in t for t in texts(fake, group)), what="the answer to the mention")
    assert localnemo.faults.count("run_sse") == 1  # the plain message was not sent anywhere
    fake.user_text(group, "/credits@nemo_test_bot", user_id=12)
    await fake.wait_for(lambda: any("Credits" in t for t in texts(fake, group)), what="the command's answer")
    # Sessions are per user in a group: user 12's credits answer did not create user 11's session twice.
    assert len(localnemo.state.sessions) == 1


async def test_a_command_for_another_bot_is_ignored_even_in_a_private_chat(
    running: Running, fake: FakeTelegram, localnemo: LocalNemo
) -> None:
    fake.user_text(CHAT, "/credits@other_bot")
    fake.user_text(CHAT, "/status@nemo_test_bot")
    await fake.wait_for(lambda: any("timeline is empty" in t for t in texts(fake)), what="our command's answer")
    assert not any("Credits" in t for t in texts(fake))
    assert localnemo.faults.count("credits") == 0


async def test_flood_control_on_edits_is_obeyed_and_the_final_state_shown(
    running: Running, fake: FakeTelegram, localnemo: LocalNemo
) -> None:
    fake.fail("editMessageText", error_code=429, retry_after=1, times=1)
    fake.user_text(CHAT, "add background music")
    final = await fake.wait_for(
        lambda: next((m for m in fake.chat_messages(CHAT) if "music" in (m.text or "")), None), within=15,
        what="the final status",
    )
    edits = fake.calls_to("editMessageText")
    assert [c.status for c in edits][:2] == [429, 200]
    assert edits[1].at - edits[0].at >= 0.95
    assert final.text is not None


async def test_export_button_and_restart_mid_export_delivers_once(
    http: httpx.AsyncClient, settings: NemoSettings, tmp_path: Path, fake: FakeTelegram, sample_video: Path,
    localnemo: LocalNemo,
) -> None:
    first = Running(http, settings, tmp_path / "bot.sqlite3", fake)
    await first.start()
    fake.user_video(CHAT, content=sample_video)
    got = await fake.wait_for(
        lambda: next((m for m in fake.chat_messages(CHAT) if "Got" in (m.text or "")), None), what="upload"
    )
    assert got.reply_markup is not None
    localnemo.config.render_step_seconds = 0.4
    fake.callback_query(CHAT, got.message_id, "/export")
    await fake.wait_for(lambda: any("Exporting" in t for t in texts(fake)), what="the export to start")
    assert fake.calls_to("answerCallbackQuery")
    await first.stop()  # the bot process goes down mid-export
    assert not fake.sent_videos(CHAT)

    second = Running(http, settings, tmp_path / "bot.sqlite3", fake)
    await second.start()
    try:
        await fake.wait_for(lambda: fake.sent_videos(CHAT), within=20, what="the video after the restart")
        assert second.bot.engine is not None
        await second.bot.engine.join()
        assert len(fake.sent_videos(CHAT)) == 1
        assert sum("Your video is ready" in t for t in texts(fake)) == 1
    finally:
        await second.stop()


def test_long_text_is_split_at_4096() -> None:
    parts = split_text(("word " * 2000).strip(), 4096)
    assert all(len(p) <= 4096 for p in parts)
    assert " ".join(parts) == ("word " * 2000).strip()


async def test_nemobot_telegram_starts_with_only_token_and_base_urls(fake: FakeTelegram, tmp_path: Path) -> None:
    # At DEBUG: python-telegram-bot logs its base URL, and httpx every request URL, each with the token in it.
    settings = {
        "TELEGRAM_BOT_TOKEN": fake.token, "TELEGRAM_API_BASE": fake.api_base, "TELEGRAM_FILE_API_BASE": fake.file_base,
        "NEMOBOT_LOG_LEVEL": "DEBUG",
    }
    async with bot_process("telegram", tmp_path, settings) as bot:
        await fake.wait_for(lambda: fake.calls_to("setMyCommands"), within=30, what="the bot to start")
        fake.user_text(CHAT, "/start")
        await fake.wait_for(lambda: any("I edit videos for you" in t for t in texts(fake)), within=30,
                            what="the answer to /start")
    assert bot.returncode == 0, bot.stderr
    assert "/bot***/getMe" in bot.stderr  # the URLs were logged, with the token hidden
    assert fake.token not in bot.output


async def test_webhook_mode_checks_the_secret_and_answers(
    http: httpx.AsyncClient, settings: NemoSettings, tmp_path: Path, fake: FakeTelegram
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = Running(http, settings, tmp_path / "bot.sqlite3", fake)
    await r.start(webhook_url="https://bot.example.test/tg-hook", webhook_listen="127.0.0.1",
                  webhook_port=port, webhook_secret="s3cret")
    try:
        (set_webhook,) = fake.calls_to("setWebhook")
        assert set_webhook.params["url"] == "https://bot.example.test/tg-hook"
        assert set_webhook.params["secret_token"] == "s3cret"
        update = {"update_id": 1, "message": {
            "message_id": 7, "date": 1_700_000_000, "text": "/start", "chat": {"id": CHAT, "type": "private"},
            "from": {"id": CHAT, "is_bot": False, "first_name": "T", "language_code": "en"},
            "entities": [{"type": "bot_command", "offset": 0, "length": 6}],
        }}
        fake.add_chat(CHAT)
        hook = f"http://127.0.0.1:{port}/tg-hook"
        refused = await http.post(hook, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"})
        assert refused.status_code == 403
        accepted = await http.post(hook, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret"})
        assert accepted.status_code == 200
        await fake.wait_for(lambda: any("I edit videos for you" in t for t in texts(fake)), what="the answer")
        assert sum("I edit videos for you" in t for t in texts(fake)) == 1
    finally:
        await r.stop()


async def test_an_update_delivered_twice_to_two_webhook_receivers_is_answered_once(
    http: httpx.AsyncClient, settings: NemoSettings, tmp_path: Path, fake: FakeTelegram
) -> None:
    # Two receivers behind a load balancer, sharing one database: Telegram retries an update on the first,
    # and the balancer hands the same update to the second as well.
    import socket

    ports: list[int] = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    db = tmp_path / "bot.sqlite3"
    receivers = [Running(http, settings, db, fake) for _ in ports]
    try:
        for receiver, port in zip(receivers, ports, strict=True):
            await receiver.start(webhook_url="https://bot.example.test/tg-hook", webhook_listen="127.0.0.1",
                                 webhook_port=port, webhook_secret="s3cret")
        hooks = [f"http://127.0.0.1:{port}/tg-hook" for port in ports]

        async def deliver(update: dict[str, Any], *to: str) -> None:
            for hook in to:
                answer = await http.post(hook, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret"})
                assert answer.status_code == 200

        # The stand-in keeps every update it made (a webhook receiver is handed them here, by the test).
        fake.user_video(CHAT, file_size=25 * MB, caption="add music")
        await deliver(fake.updates[-1], hooks[0], hooks[0], hooks[1])
        fake.callback_query(CHAT, 1, "/help")
        await deliver(fake.updates[-1], hooks[1], hooks[0])
        # A receiver handles its updates one at a time, in order: once each has answered a later /start, it
        # has handled (or dropped) everything it was handed before. /help's answer greets the same way as
        # /start's, so the greeting is there three times: once for the button, once per receiver's /start.
        for hook in hooks:
            fake.user_text(CHAT, "/start")
            await deliver(fake.updates[-1], hook)
        await fake.wait_for(lambda: sum("I edit videos for you" in t for t in texts(fake)) == 3,
                            what="the answer to the button and both receivers' answers to /start")
        assert sum("Telegram lets bots download at most 20.0 MB" in t for t in texts(fake)) == 1
        assert len(fake.calls_to("answerCallbackQuery")) == 1
    finally:
        for receiver in receivers:
            await receiver.stop()


async def test_status_sends_the_storyboard_as_a_photo(running: Running, fake: FakeTelegram, sample_video: Path) -> None:
    fake.user_video(CHAT, content=sample_video, caption="add background music")
    await fake.wait_for(
        lambda: next((m for m in fake.chat_messages(CHAT) if "music" in (m.text or "") and m.reply_markup), None),
        what="the edit's reply",
    )
    fake.user_text(CHAT, "/status")
    photo = await fake.wait_for(
        lambda: next((m for m in fake.chat_messages(CHAT) if m.kind == "photo"), None), what="the storyboard photo"
    )
    assert photo.upload is not None
    assert photo.upload.path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "timeline" in (photo.text or "").lower()  # its caption
    assert any(t.startswith("Timeline") for t in texts(fake))  # the words go out too


async def test_the_captions_come_back_as_a_document_with_the_video(
    running: Running, fake: FakeTelegram, sample_video: Path
) -> None:
    fake.user_video(CHAT, content=sample_video)
    await fake.wait_for(lambda: any("Got " in t for t in texts(fake)), what="the upload")
    srt = b"1\n00:00:00,200 --> 00:00:01,800\nHello there\n"
    fake.user_document(CHAT, file_name="words.srt", mime_type="application/x-subrip", content=srt,
                       caption="add the captions")  # fmt: skip
    await fake.wait_for(lambda: any("1 caption from words.srt" in t for t in texts(fake)), what="the captions")
    fake.user_text(CHAT, "export")
    await fake.wait_for(lambda: fake.sent_videos(CHAT), what="the video")
    document = await fake.wait_for(
        lambda: next((m for m in fake.chat_messages(CHAT) if m.kind == "document"), None), what="the .srt"
    )
    assert document.upload is not None
    assert document.upload.filename == "captions.srt"
    assert document.upload.read_bytes() == srt
    assert ".srt" in (document.text or "")
