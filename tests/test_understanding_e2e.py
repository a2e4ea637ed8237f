"""Issue 11's table, end to end: the real engine, storage and client against localnemo, through the terminal.

Each row of the table is typed as a new user would type it, and the answer must match what happened: a
change said only when the draft changed, an export when one was asked for, and "not understood" with
suggestions and no credit spent otherwise.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from adapters.console import CHAT, ConsoleFiles, ConsoleReplies, parse_line
from bot.engine import Engine
from bot.flows import changes_text
from bot.intents import Intent, route
from bot.messages import IncomingMessage
from bot.nemo.timeline_model import Draft
from localnemo.media import probe
from localnemo.testing import TestLocalNemo as LocalNemo
from tests.conftest import Bot


async def say(engine: Engine, replies: ConsoleReplies, line: str) -> str:
    """What the bot answered to one line (its last status message, or the last line it sent)."""
    before = len(replies.transcript)
    message = parse_line(line, CHAT)
    assert isinstance(message, IncomingMessage), message
    await engine.handle(message, replies, ConsoleFiles())
    await engine.join(CHAT)
    return "\n".join(replies.transcript[before:])


def credits(localnemo: LocalNemo) -> int:
    (user,) = localnemo.state.users.values()
    return user.credits


def titles(localnemo: LocalNemo) -> list[str | None]:
    (session,) = localnemo.state.sessions.values()
    return [s.m.text for t in session.draft.t if t.tt == 7 for s in t.sg if s.m.role == "title"]


@pytest.fixture
async def chat(bot: Bot, sample_video: Path, tmp_path: Path) -> tuple[Engine, ConsoleReplies]:
    assert bot.engine is not None
    replies = ConsoleReplies(io.StringIO(), tmp_path / "out", edit_interval_seconds=0)
    await say(bot.engine, replies, f"/upload {sample_video}")
    return bot.engine, replies


@pytest.mark.parametrize("localnemo_options", [{"silent_every": 0}])
async def test_issue_row_add_a_title_urban_dreams(chat: tuple[Engine, ConsoleReplies], localnemo: LocalNemo) -> None:
    engine, replies = chat
    answer = await say(engine, replies, "add a title Urban Dreams")
    assert 'title "Urban Dreams"' in answer
    assert titles(localnemo) == ["Urban Dreams"]


async def test_issue_row_exprot_exports(chat: tuple[Engine, ConsoleReplies]) -> None:
    engine, replies = chat
    answer = await say(engine, replies, "exprot")
    assert "Your video is ready" in answer
    assert "Done" not in answer
    assert len(replies.videos) == 1


async def test_issue_row_export_1080p_mp4_exports_at_1080p(chat: tuple[Engine, ConsoleReplies]) -> None:
    engine, replies = chat
    answer = await say(engine, replies, "export 1080p MP4")
    assert "Your video is ready" in answer
    info = await probe(replies.videos[0])
    assert info is not None
    assert min(info.width or 0, info.height or 0) == 1080  # the tests' default output is 240p


@pytest.mark.parametrize("localnemo_options", [{"silent_every": 0}])
async def test_issue_row_export_as_mp4_help_undo_make_it_look_better(
    chat: tuple[Engine, ConsoleReplies], localnemo: LocalNemo
) -> None:
    engine, replies = chat
    start = credits(localnemo)
    helped = await say(engine, replies, "help")
    assert "Here is what I can do offline" in helped
    assert '"add a title Urban Dreams"' in helped
    assert "nothing to undo" in await say(engine, replies, "undo")
    better = await say(engine, replies, "make it look better")
    assert 'I didn\'t understand "make it look better", so nothing changed (no credit used)' in better
    assert better.count("• ") in (2, 3)
    assert "Done" not in helped + better
    assert credits(localnemo) == start
    assert "Your video is ready" in await say(engine, replies, "export as mp4")
    # And the same words after an edit: "undo" takes it back.
    await say(engine, replies, "title: Urban Dreams at the start")
    assert titles(localnemo) == ["Urban Dreams"]
    assert "Undone: removed the title" in await say(engine, replies, "undo")
    assert titles(localnemo) == []
    assert "Redone" in await say(engine, replies, "redo")
    assert titles(localnemo) == ["Urban Dreams"]


@pytest.mark.parametrize(
    ("text", "resolution"),
    [("exprot", None), ("export 1080p MP4", "1080p"), ("export as mp4", None), ("send me the video in 720p", "720p"),
     ("download it", None), ("Download the video in 4K", "4k"), ("please export it now", None),
     ("render it at 720p", "720p"), ("dowload", None), ("export in full hd", "1080p"), ("give me the file", None),
     ("导出", None), ("导出 720p", "720p"), ("下载视频", None)],
)  # fmt: skip
def test_exports_the_way_people_ask(text: str, resolution: str | None) -> None:
    routed = route(text)
    assert (routed.intent, routed.resolution) == (Intent.EXPORT, resolution)


@pytest.mark.parametrize(
    "text",
    ["help", "what can you do", "帮助", "undo", "redo", "start over", "撤销", "重做", "重新开始", "make it look better",
     "expert advice please", "export it at 1080p after adding a title and some upbeat music please",
     "export the audio only"],
)  # fmt: skip
def test_help_undo_and_longer_requests_reach_the_agent(text: str) -> None:
    assert route(text).intent is Intent.EDIT


def test_a_silent_edit_that_changed_nothing_says_so() -> None:
    draft = Draft.empty()
    assert changes_text(draft, draft, "en").startswith("Nothing changed")
    assert changes_text(draft, draft, "zh").startswith("没有任何变化")
    assert "Done" not in changes_text(draft, draft, "en")
