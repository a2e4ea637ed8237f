"""The storyboard: "status" also sends a picture of the timeline (a PNG drawn by FFmpeg) where the chat takes
pictures; when it cannot be made, the summary in words still goes out and the log says why."""

from __future__ import annotations

import io
import logging
import struct
from pathlib import Path

import pytest

from adapters.console import CHAT, ConsoleReplies
from bot import flows, storyboard
from bot.ffmpeg import ffmpeg_exe
from bot.nemo.timeline_model import Draft
from localnemo.testing import TestLocalNemo as LocalNemo
from tests.conftest import Bot
from tests.test_console_e2e import said, say


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def the_draft(localnemo: LocalNemo) -> Draft:
    (session,) = localnemo.state.sessions.values()
    return Draft.model_validate(session.draft.to_wire())


async def test_status_in_the_terminal_saves_a_storyboard_next_to_the_videos(
    bot: Bot, sample_video: Path, tmp_path: Path, localnemo: LocalNemo
) -> None:
    assert bot.engine is not None
    replies = ConsoleReplies(io.StringIO(), tmp_path / "videos", edit_interval_seconds=0)
    await say(bot.engine, replies, f"/upload {sample_video} {sample_video}")
    await say(bot.engine, replies, 'add background music, title "Storyboard"')
    await say(bot.engine, replies, "status")
    assert "Timeline" in said(replies)  # the words first
    (picture,) = replies.images
    assert picture.parent == tmp_path / "videos"
    assert picture.suffix == ".png"
    draft = the_draft(localnemo)
    video = next(track for track in draft.t if track.tt == 0)
    plan = storyboard.layout(draft)
    assert plan is not None
    assert len(plan.thumbnails) == len(video.sg) == 2  # one per kept segment
    assert {bar.kind for bar in plan.bars} >= {"Music", "Title"}
    assert png_size(picture) == (2 * storyboard.THUMB_WIDTH, plan.height)
    assert plan.height == storyboard.THUMB_HEIGHT + storyboard.LABEL_HEIGHT + storyboard.BAR_HEIGHT * len(plan.bars)
    assert f"{picture}" in said(replies)


async def test_thumbnails_are_capped_and_keep_the_first_and_last_segment(tmp_path: Path) -> None:
    segments = [{"d": 1000, "m": {"in": 0}} for _ in range(20)]
    draft = Draft.model_validate({"t": [{"tt": 0, "sg": segments}, {"tt": 7, "sg": [{"d": 500, "m": {"text": "x"}}]}]})
    plan = storyboard.layout(draft)
    assert plan is not None
    assert len(plan.thumbnails) == storyboard.MAX_THUMBNAILS
    assert plan.thumbnails[0].start_ms == 0
    assert plan.thumbnails[-1].end_ms == 20_000
    # Segments without a source the backend serves are drawn as grey cells, in order.
    out = tmp_path / "board.png"
    await storyboard.make_storyboard(draft, out, ffmpeg=ffmpeg_exe)
    assert png_size(out) == (storyboard.MAX_THUMBNAILS * storyboard.THUMB_WIDTH, plan.height)


async def test_without_ffmpeg_the_summary_still_goes_out_and_the_log_says_why(
    bot: Bot, sample_video: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert bot.engine is not None
    replies = ConsoleReplies(io.StringIO(), tmp_path / "videos", edit_interval_seconds=0)
    await say(bot.engine, replies, f"/upload {sample_video}")

    def no_ffmpeg() -> str:
        raise FileNotFoundError("ffmpeg is not installed")

    monkeypatch.setattr(flows, "ffmpeg_exe", no_ffmpeg)
    with caplog.at_level(logging.WARNING, logger="bot.flows"):
        await say(bot.engine, replies, "status")
    assert "Timeline" in said(replies)
    assert replies.images == []
    assert any("storyboard.skipped" in r.getMessage() and "ffmpeg is not installed" in r.getMessage()
               for r in caplog.records)


async def test_an_unreachable_source_is_a_logged_skip_not_an_error(tmp_path: Path) -> None:
    draft = Draft.model_validate({"t": [{"tt": 0, "sg": [{"d": 1000, "m": {"src": "http://127.0.0.1:9/gone.mp4"}}]}]})
    with pytest.raises(storyboard.StoryboardError, match="FFmpeg failed"):
        await storyboard.make_storyboard(draft, tmp_path / "x.png", ffmpeg=ffmpeg_exe)


async def test_chats_without_pictures_get_only_words(bot: Bot, sample_video: Path, tmp_path: Path) -> None:
    assert bot.engine is not None
    replies = ConsoleReplies(io.StringIO(), None, edit_interval_seconds=0)  # no folder: links only, no pictures
    assert not replies.capabilities.images
    await say(bot.engine, replies, f"/upload {sample_video}", chat=CHAT)
    await say(bot.engine, replies, "status", chat=CHAT)
    assert "Timeline" in said(replies)
    assert replies.images == []
