"""Routing, wording and the status-message throttle, without a backend."""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from bot.config import BotSettings
from bot.intents import Intent, links_in, route
from bot.lang import detect_language
from bot.messages import Button, Capabilities, ChatKey, MessageHandle, WorkingAction
from bot.progress import Progress, StatusMessage
from bot.sessions import SessionPolicy
from bot.texts import clean_backend_text, is_trailing_noise, tool_label
from tests.conftest import wait_for


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("export", Intent.EXPORT), ("Export it please", Intent.EXPORT), ("download", Intent.EXPORT),
        ("send me the video", Intent.EXPORT), ("导出", Intent.EXPORT), ("下载视频", Intent.EXPORT),
        ("credits", Intent.CREDITS), ("balance?", Intent.CREDITS), ("积分", Intent.CREDITS),
        ("余额", Intent.CREDITS), ("status", Intent.STATUS), ("show tracks", Intent.STATUS),
        ("状态", Intent.STATUS), ("/start", Intent.START), ("/help", Intent.HELP), ("/new", Intent.NEW),
        ("/export", Intent.EXPORT), ("/status@nemo_test_bot", Intent.STATUS), ("/credits", Intent.CREDITS),
        ("/cancel", Intent.CANCEL),
        ("cut the pauses, add background music, and generate captions", Intent.EDIT),
        ("make it 9:16", Intent.EDIT), ("加背景音乐", Intent.EDIT),
        ("export it at 1080p after adding a title and some upbeat music please", Intent.EDIT),
    ],
)
def test_routing(text: str, intent: Intent) -> None:
    assert route(text).intent is intent


def test_export_with_a_resolution() -> None:
    assert route("export 1080p").resolution == "1080p"
    assert route("/export 4K").resolution == "4k"
    assert route("导出 720p").resolution == "720p"


def test_files_without_text_are_an_upload_and_upload_word_needs_files() -> None:
    assert route("", has_files=True).intent is Intent.UPLOAD
    assert route("上传", has_files=True).intent is Intent.UPLOAD
    assert route("upload").intent is Intent.HELP


def test_a_command_naming_a_bot_is_still_that_command() -> None:
    # Adapters drop commands for other bots (tests/test_telegram_e2e.py); what reaches the core is ours.
    assert route("/export@nemo_test_bot 720p").resolution == "720p"


def test_language() -> None:
    assert detect_language("zh-hans", "hello") == "zh"
    assert detect_language("en-US", "你好") == "en"
    assert detect_language(None, "把它改成竖屏") == "zh"
    assert detect_language(None, "make it vertical") == "en"


def test_links() -> None:
    assert links_in("use https://x.test/a.mp4, and (https://y.test/b.png)") == [
        "https://x.test/a.mp4", "https://y.test/b.png"
    ]


def test_gui_wording_becomes_chat_commands() -> None:
    text = clean_backend_text(
        "Done! Click the Export button when you're ready. You can preview it in the timeline.", "en"
    )
    assert text == 'Done! Say "export" (or /export) when you\'re ready. You can use /status to see the timeline.'
    assert "/export" in clean_backend_text("完成！点击导出按钮下载。", "zh")
    assert is_trailing_noise("I encountered a temporary issue, please retry.")
    assert not is_trailing_noise("Added music.")


def test_tool_labels_never_show_tool_names() -> None:
    assert tool_label("generate_video_with_seedance", "en") == "🎞️ Generating video…"
    assert tool_label("generate_music", "en") == "🎵 Adding music…"
    assert tool_label("edit_multitrack", "en") == "✂️ Editing the timeline…"
    assert "mystery_tool" not in tool_label("mystery_tool", "en")


def test_chat_keys_round_trip() -> None:
    for key in (ChatKey("tg", "123"), ChatKey("tg", "-100", "42"), ChatKey("dc", "5", "7", "reel")):
        assert ChatKey.parse(str(key)) == key


class Recorder:
    def __init__(self, interval: float, can_edit: bool = True) -> None:
        self.caps = Capabilities(max_upload_bytes=0, can_edit=can_edit, edit_interval_seconds=interval)
        self.sent: list[str] = []
        self.edits: list[tuple[float, str]] = []

    @property
    def capabilities(self) -> Capabilities:
        return self.caps

    async def send_text(self, text: str, *, buttons: Sequence[Button] = ()) -> MessageHandle:
        self.sent.append(text)
        return MessageHandle(str(len(self.sent)))

    async def edit_text(self, handle: MessageHandle, text: str, *, buttons: Sequence[Button] = ()) -> None:
        self.edits.append((time.monotonic(), text))

    async def send_video(self, path: Path, *, caption: str, buttons: Sequence[Button] = ()) -> MessageHandle:
        raise NotImplementedError

    async def send_image(self, path: Path, *, caption: str) -> MessageHandle:
        raise NotImplementedError

    async def send_document(self, path: Path, *, filename: str, caption: str) -> MessageHandle:
        raise NotImplementedError

    async def show_working(self, action: WorkingAction) -> None:
        return None


async def test_status_edits_are_throttled_and_the_final_state_is_never_lost() -> None:
    replies = Recorder(interval=0.2)
    status = StatusMessage(replies)
    await status.show("one")
    for i in range(20):
        await status.show(f"step {i}")
    await status.show("step 19")
    await status.finish("done")
    assert replies.sent == ["one"]
    texts = [text for _, text in replies.edits]
    assert texts[-1] == "done"
    assert len(texts) <= 3  # twenty intermediate states collapsed
    times = [at for at, _ in replies.edits]
    assert all(b - a >= 0.19 for a, b in itertools.pairwise(times))


async def test_without_edits_only_first_and_last_are_sent() -> None:
    replies = Recorder(interval=0, can_edit=False)
    status = StatusMessage(replies)
    await status.show("start")
    await status.show("middle")
    await status.finish("end")
    assert replies.sent == ["start", "end"]


async def test_still_working_note_after_silence() -> None:
    replies = Recorder(interval=0)
    async with Progress(replies, "en", still_working_seconds=0.05) as progress:
        await progress.update("working")
        await wait_for(lambda: progress.still_working_notes >= 2, what="two notes")
    assert any("Still working" in text for _, text in replies.edits)


def test_group_sessions_setting() -> None:
    per_user = SessionPolicy.from_settings(BotSettings(_env_file=None, group_sessions="user"))
    assert per_user.chat_key("tg", "-100", "42", is_group=True) == ChatKey("tg", "-100", "42")
    assert per_user.chat_key("tg", "7", "7", is_group=False) == ChatKey("tg", "7")
    shared = SessionPolicy.from_settings(BotSettings(_env_file=None, group_sessions="shared"))
    assert shared.chat_key("tg", "-100", "42", is_group=True) == ChatKey("tg", "-100")
