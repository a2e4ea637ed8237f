"""Messages during an export (issue 11, point 7): the export's wait runs in the background, so an edit sent
while it renders is applied to the draft at once, is not in the video being rendered, goes into the next
export, and the reply says so."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from adapters.console import ConsoleReplies
from bot.nemo.timeline_model import TRACK_AUDIO, Draft
from localnemo.testing import TestLocalNemo as LocalNemo
from tests.conftest import Bot, wait_for
from tests.test_console_e2e import said, say


def has_music(draft: Draft | None) -> bool:
    return draft is not None and any(track.tt == TRACK_AUDIO and track.sg for track in draft.t)


@pytest.mark.parametrize(("lang", "note"), [("en", "it will be in your next export"), ("zh", "下一次导出")])
async def test_an_edit_while_an_export_renders_goes_into_the_next_export(
    bot: Bot, sample_video: Path, tmp_path: Path, localnemo: LocalNemo, lang: str, note: str
) -> None:
    assert bot.engine is not None
    replies = ConsoleReplies(io.StringIO(), tmp_path / "videos", edit_interval_seconds=0)
    locale = "zh-CN" if lang == "zh" else "en"
    await say(bot.engine, replies, f"/upload {sample_video}", locale=locale)
    # The render's status is out of reach until the edit is answered: the export stays in progress meanwhile
    # however long the edit takes (the bot waits an outage out).
    localnemo.faults.fail("render_status", 503, times=-1)
    await say(bot.engine, replies, "导出" if lang == "zh" else "export", wait=False, locale=locale)
    first = await wait_for(lambda: next(iter(localnemo.state.jobs.values()), None), what="the first render")
    rendered = first.draft.model_copy(deep=True) if first.draft is not None else None  # what it renders
    assert rendered is not None
    await say(bot.engine, replies, "加背景音乐" if lang == "zh" else "add background music", wait=False,
              locale=locale)
    await wait_for(lambda: note in said(replies), what="the reply to the edit", details=lambda: said(replies))
    assert not has_music(rendered)  # the video being rendered has no music
    localnemo.faults.clear()
    await bot.engine.join()
    assert len(replies.videos) == 1
    await say(bot.engine, replies, "导出" if lang == "zh" else "export", wait=False, locale=locale)
    second = await wait_for(lambda: next((j for j in localnemo.state.jobs.values() if j is not first), None),
                            what="the second render")
    assert has_music(second.draft)  # read as it was submitted: the music is in the next export
    await bot.engine.join()
    assert len(replies.videos) == 2
