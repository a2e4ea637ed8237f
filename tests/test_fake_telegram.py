"""The Telegram Bot API stand-in, proven against the real python-telegram-bot Application (polling).

If these pass, end-to-end tests of the Telegram adapter can trust the fake: PTB talks to it unmodified,
and what the fake records is what the bot really sent.
"""

from __future__ import annotations

import asyncio
import datetime as dtm
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from telegram import BotCommand, InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.constants import ChatAction
from telegram.error import BadRequest, RetryAfter
from telegram.ext import (
    Application,
    ApplicationBuilder,
    BaseHandler,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from tests.fakes.telegram_server import MB, FakeTelegram

Ctx = ContextTypes.DEFAULT_TYPE


pytestmark = pytest.mark.usefixtures("ptb_timedelta")


@pytest.fixture
async def fake(tmp_path: Path) -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(tmp_dir=tmp_path / "telegram") as server:
        yield server


@asynccontextmanager
async def polling(
    fake: FakeTelegram, *handlers: BaseHandler[Any, Any, Any], local_mode: bool = False
) -> AsyncIterator[Application[Any, Any, Any, Any, Any, Any]]:
    """Run a real PTB Application against the fake, the way the bot's adapter will."""
    app = (
        ApplicationBuilder()
        .token(fake.token)
        .base_url(fake.api_base)
        .base_file_url(fake.file_base)
        .local_mode(local_mode)
        .build()
    )
    app.add_handlers(list(handlers))
    async with app:
        assert app.updater is not None
        await app.start()
        await app.updater.start_polling(poll_interval=0, timeout=1)
        try:
            yield app
        finally:
            await app.updater.stop()
            await app.stop()


def message_of(update: Update) -> Any:
    assert update.effective_message is not None
    return update.effective_message


async def test_start_is_answered_with_send_message(fake: FakeTelegram) -> None:
    async def start(update: Update, context: Ctx) -> None:
        assert update.effective_user is not None
        await message_of(update).reply_text(f"hello {update.effective_user.first_name}")

    async with polling(fake, CommandHandler("start", start)):
        fake.user_text(42, "/start", first_name="Ada")
        shown = await fake.wait_for(lambda: fake.chat_messages(42))

    assert [m.text for m in shown] == ["hello Ada"]
    assert shown[0].message["from"]["username"] == "nemo_test_bot"
    assert shown[0].message_id == 2  # ids are per chat and shared with the user's /start (id 1)
    send = fake.calls_to("sendMessage")[0]
    assert send.params["chat_id"] == 42
    assert "reply_parameters" not in send.params  # PTB does not quote in private chats
    # The polling bootstrap described in docs/platforms.md.
    assert [c.method for c in fake.calls[:3]] == ["getMe", "deleteWebhook", "getUpdates"]


async def test_group_commands_addressed_to_another_bot_are_ignored(fake: FakeTelegram) -> None:
    async def start(update: Update, context: Ctx) -> None:
        await message_of(update).reply_text("hi group")

    async with polling(fake, CommandHandler("start", start)):
        fake.user_text(-1001, "/start@other_bot", chat_type="supergroup", user_id=5)
        mine = fake.user_text(-1001, "/start@nemo_test_bot please", user_id=5)
        shown = await fake.wait_for(lambda: fake.chat_messages(-1001))

    assert mine["entities"] == [{"type": "bot_command", "offset": 0, "length": len("/start@nemo_test_bot")}]
    # Updates are handled in order, so a reply to the first command would have come first.
    assert len(shown) == 1
    assert shown[0].message["reply_to_message"]["message_id"] == mine["message_id"]  # PTB quotes in groups


async def test_video_under_limit_is_downloaded_through_get_file(fake: FakeTelegram, tmp_path: Path) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB, not all zeros
    target = tmp_path / "got.mp4"
    durations: list[Any] = []

    async def on_video(update: Update, context: Ctx) -> None:
        video = message_of(update).video
        durations.append(video.duration)
        tg_file = await context.bot.get_file(video.file_id)
        path = await tg_file.download_to_drive(target)
        await message_of(update).reply_text(f"got {path.stat().st_size} bytes")

    async with polling(fake, MessageHandler(filters.VIDEO, on_video)):
        fake.user_video(7, content=data, duration=3, caption="make a reel")
        await fake.wait_for(lambda: fake.chat_messages(7))

    assert fake.chat_messages(7)[0].text == f"got {len(data)} bytes"
    assert target.read_bytes() == data
    assert durations == [dtm.timedelta(seconds=3)]
    answer = fake.calls_to("getFile")[0].result
    assert answer["file_path"].startswith("videos/file_")
    assert not Path(answer["file_path"]).exists()  # else PTB would treat it as a local-mode path
    assert fake.downloads == [answer["file_path"]]


async def test_get_file_over_20_mb_raises_bad_request(fake: FakeTelegram) -> None:
    errors: list[BadRequest] = []

    async def on_video(update: Update, context: Ctx) -> None:
        try:
            await context.bot.get_file(message_of(update).video.file_id)
        except BadRequest as exc:
            errors.append(exc)
            await message_of(update).reply_text("too big")

    async with polling(fake, MessageHandler(filters.VIDEO, on_video)):
        fake.user_video(7, file_size=25 * MB)
        await fake.wait_for(lambda: fake.chat_messages(7))

    assert [e.message for e in errors] == ["File is too big"]  # PTB strips "Bad Request: " and capitalises
    assert fake.calls_to("getFile")[0].status == 400
    assert fake.downloads == []


async def test_local_mode_get_file_returns_an_absolute_path_without_limit(tmp_path: Path) -> None:
    target = tmp_path / "big.mp4"

    async def on_video(update: Update, context: Ctx) -> None:
        tg_file = await context.bot.get_file(message_of(update).video.file_id)
        await tg_file.download_to_drive(target)
        await message_of(update).reply_text(tg_file.file_path or "")

    async with FakeTelegram(tmp_dir=tmp_path / "telegram", local_mode=True) as fake:
        async with polling(fake, MessageHandler(filters.VIDEO, on_video), local_mode=True):
            fake.user_video(8, file_size=21 * MB)
            [reply] = await fake.wait_for(lambda: fake.chat_messages(8))
        assert reply.text is not None
        assert Path(reply.text).is_absolute()
        assert fake.downloads == []  # PTB copied the file from disk instead of fetching it

    assert target.stat().st_size == 21 * MB


async def test_every_user_media_kind_parses_in_ptb(fake: FakeTelegram) -> None:
    seen: list[tuple[str, int | None, str | None]] = []

    async def note(update: Update, context: Ctx) -> None:
        message = message_of(update)
        attachment = message.effective_attachment
        if isinstance(attachment, tuple):  # a photo arrives as its sizes, largest last
            attachment = attachment[-1]
        seen.append((type(attachment).__name__, getattr(attachment, "file_size", None), message.media_group_id))
        await message.reply_text("noted")

    async with polling(fake, MessageHandler(filters.ATTACHMENT, note)):
        fake.user_video(4, file_size=3 * MB, media_group_id="album1")
        fake.user_video(4, file_size=4 * MB, media_group_id="album1")
        fake.user_photo(4, file_size=200_000)
        fake.user_document(4, file_size=1000, file_name="cut.edl")
        fake.user_audio(4, file_size=5000)
        fake.user_voice(4, file_size=600)
        fake.user_video_note(4, file_size=700)
        fake.user_animation(4, file_size=800)
        await fake.wait_for(lambda: len(fake.chat_messages(4)) == 8)

    assert seen == [
        ("Video", 3 * MB, "album1"),
        ("Video", 4 * MB, "album1"),
        ("PhotoSize", 200_000, None),
        ("Document", 1000, None),
        ("Audio", 5000, None),
        ("Voice", 600, None),
        ("VideoNote", 700, None),
        ("Animation", 800, None),
    ]


async def test_scripted_429_on_edit_raises_retry_after(fake: FakeTelegram) -> None:
    outcome: dict[str, Any] = {}

    async def work(update: Update, context: Ctx) -> None:
        status = await message_of(update).reply_text("working 0%")
        fake.fail("editMessageText", retry_after=7)
        try:
            await status.edit_text("working 50%")
        except RetryAfter as exc:
            outcome["retry_after"] = exc.retry_after
        await status.edit_text("working 50%")
        try:
            await status.edit_text("working 50%")
        except BadRequest as exc:
            outcome["identical"] = exc.message
        await status.edit_text("done")

    async with polling(fake, CommandHandler("work", work)):
        fake.user_text(5, "/work")
        await fake.wait_for(lambda: [m for m in fake.chat_messages(5) if m.text == "done"])

    assert outcome["retry_after"] == dtm.timedelta(seconds=7)
    assert outcome["identical"].lower().startswith("message is not modified")
    edits = fake.calls_to("editMessageText")
    assert [c.status for c in edits] == [429, 200, 400, 200]
    assert edits[0].response == {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 7",
        "parameters": {"retry_after": 7},
    }
    [status] = fake.chat_messages(5)
    assert status.history == ["working 0%", "working 50%", "done"]


async def test_send_video_upload_is_recorded_with_its_size(fake: FakeTelegram, tmp_path: Path) -> None:
    clip = tmp_path / "reel.mp4"
    clip.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 800)
    sent_ids: list[str] = []

    async def send(update: Update, context: Ctx) -> None:
        chat_id = message_of(update).chat_id
        await context.bot.send_chat_action(chat_id, ChatAction.UPLOAD_VIDEO)
        with clip.open("rb") as fh:
            sent = await message_of(update).reply_video(
                fh,
                caption="your <b>reel</b>",
                parse_mode="HTML",
                duration=12,
                width=640,
                height=360,
                thumbnail=b"\xff\xd8\xff\xe0 tiny jpeg",
                supports_streaming=True,
            )
        sent_ids.append(sent.video.file_id)
        await context.bot.send_video(chat_id, sent.video.file_id)  # a resend by file_id uploads nothing

    async with polling(fake, CommandHandler("reel", send)):
        fake.user_text(3, "/reel")
        await fake.wait_for(lambda: len(fake.sent_videos(3)) == 2)

    first, again = fake.sent_videos(3)
    assert first.upload is not None
    assert first.upload.size == clip.stat().st_size
    assert first.upload.read_bytes() == clip.read_bytes()
    assert (first.upload.filename, first.upload.content_type) == ("reel.mp4", "video/mp4")
    assert first.text == "your reel"
    video = first.message["video"]
    assert (video["file_size"], video["duration"], video["width"], video["height"]) == (
        clip.stat().st_size,
        12,
        640,
        360,
    )
    assert video["file_id"] == sent_ids[0]
    assert set(fake.calls_to("sendVideo")[0].files) == {"video", "thumbnail"}  # attach:// resolved
    assert again.upload is None
    assert again.message["video"]["file_id"] == sent_ids[0]
    assert fake.chat_actions(3) == ["upload_video"]


async def test_callback_query_is_delivered_and_answered(fake: FakeTelegram) -> None:
    pressed: list[str | None] = []

    async def menu(update: Update, context: Ctx) -> None:
        keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Reel A", callback_data="pick:a")]])
        await message_of(update).reply_text("pick one", reply_markup=keyboard)

    async def on_press(update: Update, context: Ctx) -> None:
        query = update.callback_query
        assert query is not None
        pressed.append(query.data)
        await query.answer("picked A")
        await query.edit_message_text("you picked A")

    async with polling(fake, CommandHandler("menu", menu), CallbackQueryHandler(on_press)):
        fake.user_text(9, "/menu")
        [shown] = await fake.wait_for(lambda: fake.chat_messages(9))
        assert shown.reply_markup is not None
        assert shown.reply_markup["inline_keyboard"][0][0]["callback_data"] == "pick:a"
        query = fake.callback_query(9, shown.message_id, "pick:a")
        await fake.wait_for(lambda: shown.text == "you picked A")

    assert pressed == ["pick:a"]
    [answer] = fake.calls_to("answerCallbackQuery")
    assert answer.ok
    assert answer.params["callback_query_id"] == query["id"]
    assert answer.params["text"] == "picked A"
    assert shown.reply_markup is None  # an edit without reply_markup drops the keyboard, as on Telegram


async def test_set_my_commands_is_recorded(fake: FakeTelegram) -> None:
    async with polling(fake) as app:
        await app.bot.set_my_commands([BotCommand("start", "Start"), BotCommand("reel", "Make a reel")])
        await app.bot.set_my_commands([BotCommand("start", "开始")], language_code="zh")
        listed = await app.bot.get_my_commands()

    assert [(c.command, c.description) for c in listed] == [("start", "Start"), ("reel", "Make a reel")]
    first = fake.calls_to("setMyCommands")[0]
    assert first.params["commands"][1] == {"command": "reel", "description": "Make a reel"}
    assert fake.commands(language_code="zh") == [{"command": "start", "description": "开始"}]


async def test_offsets_are_confirmed_on_stop_and_nothing_is_delivered_twice(fake: FakeTelegram) -> None:
    handled: list[int] = []

    async def echo(update: Update, context: Ctx) -> None:
        handled.append(update.update_id)
        await message_of(update).reply_text(f"echo {message_of(update).text}")

    async with polling(fake, MessageHandler(filters.TEXT, echo)):
        fake.user_text(11, "one")
        fake.user_text(11, "two")
        await fake.wait_for(lambda: len(fake.chat_messages(11)) == 2)

    last_poll = fake.calls_to("getUpdates")[-1]
    assert last_poll.params["timeout"] == 0
    assert last_poll.params["offset"] == fake.updates[-1]["update_id"] + 1
    assert last_poll.ok
    assert fake.pending_updates() == []

    fake.user_text(11, "three")  # arrives while the bot is down
    async with polling(fake, MessageHandler(filters.TEXT, echo)):
        await fake.wait_for(lambda: len(fake.chat_messages(11)) == 3)

    assert handled == [u["update_id"] for u in fake.updates]
    assert [m.text for m in fake.chat_messages(11)] == ["echo one", "echo two", "echo three"]
    assert sorted(set(fake.delivered_update_ids())) == fake.delivered_update_ids()
    assert (fake.max_concurrent_get_updates, fake.conflicts) == (1, 0)


# ---------------------------------------------------------------- the wire format, without PTB


async def api(session: aiohttp.ClientSession, fake: FakeTelegram, method: str, **kwargs: Any) -> tuple[int, Any]:
    async with session.post(f"{fake.api_base}{fake.token}/{method}", **kwargs) as response:
        return response.status, await response.json()


async def test_unknown_method_and_wrong_token(fake: FakeTelegram) -> None:
    async with aiohttp.ClientSession() as session:
        status, body = await api(session, fake, "sendTelepathy")
        assert (status, body) == (404, {"ok": False, "error_code": 404, "description": "Not Found: method not found"})
        async with session.post(f"{fake.api_base}1:wrong/getMe") as response:
            assert response.status == 401
            assert (await response.json())["description"] == "Unauthorized"
        async with session.get(f"{fake.base_url}/nothing/here") as response:
            assert response.status == 404
        status, body = await api(session, fake, "GETME")  # method names are case-insensitive
        assert (status, body["result"]["username"]) == (200, "nemo_test_bot")


async def test_long_poll_wakes_when_an_update_arrives(fake: FakeTelegram) -> None:
    async with aiohttp.ClientSession() as session:
        poll = asyncio.create_task(api(session, fake, "getUpdates", data={"timeout": "30"}))
        await fake.wait_for(lambda: fake.active_get_updates == 1)
        fake.user_text(1, "hello")
        async with asyncio.timeout(5):
            status, body = await poll
    assert status == 200
    assert [u["message"]["text"] for u in body["result"]] == ["hello"]


async def test_overlapping_get_updates_terminates_the_older_one(fake: FakeTelegram) -> None:
    async with aiohttp.ClientSession() as session:
        older = asyncio.create_task(api(session, fake, "getUpdates", data={"timeout": "30"}))
        await fake.wait_for(lambda: fake.active_get_updates == 1)
        newer = await api(session, fake, "getUpdates", data={"timeout": "0"})
        async with asyncio.timeout(5):
            status, body = await older
    assert newer == (200, {"ok": True, "result": []})
    assert status == 409
    assert body["description"].startswith("Conflict: terminated by other getUpdates request")
    assert (fake.max_concurrent_get_updates, fake.conflicts) == (2, 1)


async def test_json_body_multipart_upload_and_scripted_failures(fake: FakeTelegram, tmp_path: Path) -> None:
    fake.add_chat(77)
    doc = tmp_path / "notes.txt"
    doc.write_bytes(b"x" * 300_000)
    fake.fail(
        "sendMessage",
        error_code=403,
        description="Forbidden: bot was blocked by the user",
        times=1,
        match=lambda params: params.get("chat_id") == 78,
    )
    async with aiohttp.ClientSession() as session:
        status, body = await api(session, fake, "sendMessage", json={"chat_id": 77, "text": "123"})
        assert (status, body["result"]["text"]) == (200, "123")  # a numeric text stays a string
        status, body = await api(session, fake, "sendMessage", data={"chat_id": "12345", "text": "hi"})
        assert (status, body["description"]) == (400, "Bad Request: chat not found")
        status, body = await api(session, fake, "sendMessage", data={"chat_id": "78", "text": "hi"})
        assert (status, body) == (
            403,
            {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked by the user"},
        )

        with doc.open("rb") as fh:
            form = aiohttp.FormData()
            form.add_field("chat_id", "77")
            form.add_field("caption", "your notes")
            form.add_field("document", fh, filename="notes.txt", content_type="text/plain")
            status, body = await api(session, fake, "sendDocument", data=form)
    assert status == 200
    assert body["result"]["document"]["file_size"] == 300_000
    assert body["result"]["document"]["file_name"] == "notes.txt"
    [shown] = fake.sent_documents(77)
    assert shown.upload is not None
    assert (shown.upload.size, shown.upload.content_type) == (300_000, "text/plain")
    assert shown.upload.path.read_bytes() == doc.read_bytes()
    assert [m.text for m in fake.chat_messages(77)] == ["123", "your notes"]
