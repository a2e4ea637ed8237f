"""End to end through the terminal adapter: the real engine, storage and client against localnemo."""

from __future__ import annotations

import io
import logging
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.console import CHAT, ConsoleFiles, ConsoleReplies, parse_line, run_console
from bot.config import NemoSettings
from bot.engine import Engine
from bot.messages import Attachment, ChatKey, IncomingMessage
from localnemo.media import probe
from localnemo.speech import word_error_rate
from localnemo.subtitles import parse_cues
from localnemo.testing import TestLocalNemo as LocalNemo
from tests.conftest import Bot, assert_video, fast_settings, wait_for
from tests.test_captions_speech import CLIP_SECONDS, LIBRIVOX, PARTS, PAUSE_S, make_speech_clip, transcripts


def console(tmp_path: Path) -> ConsoleReplies:
    # No throttle between status updates: a terminal has no flood control, and the tests read every line.
    return ConsoleReplies(io.StringIO(), tmp_path / "out", edit_interval_seconds=0)


async def say(engine: Engine, replies: ConsoleReplies, line: str, *, chat: ChatKey = CHAT, wait: bool = True,
              message_id: str | None = None, locale: str | None = None) -> None:
    message = parse_line(line, chat)
    assert isinstance(message, IncomingMessage), message
    if message_id is not None or locale is not None:
        message = IncomingMessage(
            chat=chat, user_id="local", message_id=message_id or message.message_id, text=message.text,
            attachments=message.attachments, locale=locale,
        )
    await engine.handle(message, replies, ConsoleFiles())
    if wait:
        await engine.join(chat)


def said(replies: ConsoleReplies) -> str:
    return "\n".join(replies.transcript)


# -- the quick-edit workflow ---------------------------------------------------------------------------


async def test_quick_edit_workflow_through_the_terminal(
    bot: Bot, sample_video: Path, tmp_path: Path, localnemo: LocalNemo
) -> None:
    lines = "\n".join([
        f"/upload {sample_video}",
        "cut the pauses, add background music, and generate captions",
        "export",
    ]) + "\n"
    stdout = io.StringIO()
    assert bot.engine is not None
    replies = await run_console(
        bot.engine, stdin=io.StringIO(lines), stdout=stdout, out_dir=tmp_path / "out", interactive=False,
        edit_interval_seconds=0,
    )
    text = stdout.getvalue()
    assert "Got clip.mp4" in text
    assert "background music" in text
    assert "Click" not in text  # the backend's GUI wording was rewritten
    assert "Your video is ready: http://127.0.0.1" in text
    assert len(replies.videos) == 1
    await assert_video(replies.videos[0], seconds=2.0)  # the test clip is a steady tone: no pauses to cut
    # Everything happened in order, one backend operation at a time.
    assert max(localnemo.state.max_concurrent_runs.values()) == 1


async def test_without_out_dir_results_are_links(bot: Bot, sample_video: Path) -> None:
    assert bot.engine is not None
    replies = ConsoleReplies(io.StringIO(), None, edit_interval_seconds=0)
    await say(bot.engine, replies, f"/upload {sample_video}")
    await say(bot.engine, replies, "/export")
    assert "Your video is ready: http://127.0.0.1" in said(replies)
    assert replies.videos == []


async def test_export_of_an_empty_timeline_is_refused_helpfully(bot: Bot, tmp_path: Path) -> None:
    assert bot.engine is not None
    replies = console(tmp_path)
    await say(bot.engine, replies, "export")
    assert "send a clip first" in said(replies)


@pytest.mark.parametrize("localnemo_options", [{"silent_every": 1}])
async def test_silent_completion_is_answered_with_the_change(bot: Bot, sample_video: Path, tmp_path: Path) -> None:
    assert bot.engine is not None
    replies = console(tmp_path)
    await say(bot.engine, replies, f"/upload {sample_video}")
    await say(bot.engine, replies, 'add the title "Urban Dreams"')
    assert "✅ Done: added the title 'Urban Dreams' (0–3 s)." in said(replies)


async def test_still_working_after_silence(
    http: httpx.AsyncClient, localnemo: LocalNemo, tmp_path: Path, sample_video: Path
) -> None:
    bot = Bot(http, fast_settings(localnemo.base_url, still_working_seconds=0.2), tmp_path / "db.sqlite3")
    engine = await bot.start()
    try:
        replies = console(tmp_path)
        localnemo.faults.stream("hang", after_events=1)
        await say(engine, replies, "add background music", wait=False)
        await wait_for(lambda: "Still working" in said(replies), what="a still-working note")
        assert "so far" in said(replies)
    finally:
        await bot.stop()


async def test_second_message_is_queued_not_sent_concurrently(
    bot: Bot, localnemo: LocalNemo, tmp_path: Path
) -> None:
    assert bot.engine is not None
    replies = console(tmp_path)
    localnemo.faults.stream("slow", delay=0.05)
    await say(bot.engine, replies, "add background music", wait=False)
    await wait_for(lambda: localnemo.faults.count("run_sse") == 1, what="the first message to be sent")
    await say(bot.engine, replies, 'add the title "Second"', wait=False)
    assert "working on your last request; this one is next" in said(replies).lower()
    await bot.engine.join(CHAT)
    runs = [c for c in localnemo.faults.calls if c.endpoint == "run_sse"]
    assert len(runs) == 2
    session_id = next(iter(localnemo.state.max_concurrent_runs))
    assert localnemo.state.max_concurrent_runs[session_id] == 1
    text = said(replies)
    assert text.index("music") < text.index("Second")


async def test_chinese_keywords_are_routed_and_answered_in_chinese(
    bot: Bot, sample_video: Path, tmp_path: Path, localnemo: LocalNemo
) -> None:
    assert bot.engine is not None
    replies = console(tmp_path)
    await say(bot.engine, replies, "积分")
    assert "积分：可用 100" in said(replies)
    await say(bot.engine, replies, "状态")
    assert "时间线是空的" in said(replies)
    await say(bot.engine, replies, f"/upload {sample_video}")
    await say(bot.engine, replies, "导出")
    assert "视频已完成" in said(replies)
    assert localnemo.faults.count("run_sse") == 0  # none of them was sent to the agent as an edit
    await say(bot.engine, replies, "加背景音乐")
    assert localnemo.faults.count("run_sse") == 1


async def test_session_language_comes_from_the_locale_then_the_text(
    bot: Bot, tmp_path: Path, localnemo: LocalNemo
) -> None:
    assert bot.engine is not None
    replies = console(tmp_path)
    await say(bot.engine, replies, "add music", locale="zh-CN", chat=ChatKey("console", "zh-user"))
    await say(bot.engine, replies, "加音乐", chat=ChatKey("console", "zh-text"))
    await say(bot.engine, replies, "add music", chat=ChatKey("console", "en-text"))
    languages = sorted(s.language for s in localnemo.state.sessions.values())
    assert languages == ["en", "zh", "zh"]


async def test_repeated_message_id_is_handled_once(bot: Bot, tmp_path: Path, localnemo: LocalNemo) -> None:
    assert bot.engine is not None
    replies = console(tmp_path)
    await say(bot.engine, replies, "add background music", message_id="m-1")
    await say(bot.engine, replies, "add background music", message_id="m-1")
    assert localnemo.faults.count("run_sse") == 1


async def test_export_interrupted_by_a_restart_is_delivered_once(
    http: httpx.AsyncClient, localnemo: LocalNemo, settings: NemoSettings, tmp_path: Path, sample_video: Path
) -> None:
    db = tmp_path / "bot.sqlite3"
    first = Bot(http, settings, db)
    engine = await first.start()
    replies = console(tmp_path)
    await say(engine, replies, f"/upload {sample_video}")
    localnemo.config.render_step_seconds = 0.3
    await say(engine, replies, "export", wait=False)
    await wait_for(lambda: "Exporting" in said(replies), what="the export to start")
    await first.stop()  # the process dies mid-export
    assert "Your video is ready" not in said(replies)

    second = Bot(http, settings, db)
    engine = await second.start()
    try:
        replies_after = console(tmp_path)
        from adapters.console import ConsoleAdapter

        assert await engine.resume(ConsoleAdapter(replies_after)) == 1
        await engine.join()
        assert said(replies_after).count("Your video is ready") == 1
        assert len(replies_after.videos) == 1
        # A third start owes nothing.
        assert await engine.resume(ConsoleAdapter(replies_after)) == 0
    finally:
        await second.stop()


# -- every backend error in plain words ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "code", "line", "expected"),
    [
        ("run_sse", 1002, "add music", "previous project expired"),
        ("run_sse", 2001, "add music", "out of credits. Register to get more and keep your work: "
                                        "https://nemovideo.com/?bind=u_"),
        ("render", 402, "export", "Export isn't available on this NemoVideo plan"),
        ("run_sse", 429, "add music", "NemoVideo is busy right now"),
        # An .mp4 refused is told the backend's reason: a list of formats would name its own.
        ("upload", 4001, "UPLOAD", "I can't use clip.mp4: injected failure."),
        ("upload", 4002, "UPLOAD", "the limit is 500.0 MB. Trim or compress it"),
        ("state", 503, "status", "I can't reach NemoVideo right now"),
        ("run_sse", 500, "add music", "I can't reach NemoVideo right now"),
        ("credits", 418, "credits", "NemoVideo could not do that: injected failure"),
    ],
)
async def test_backend_errors_in_plain_words(
    bot: Bot, localnemo: LocalNemo, sample_video: Path, tmp_path: Path, endpoint: str, code: int, line: str,
    expected: str,
) -> None:
    assert bot.engine is not None
    replies = console(tmp_path)
    if endpoint != "upload":
        await say(bot.engine, replies, f"/upload {sample_video}")
    localnemo.faults.fail(endpoint, code, times=-1, html=code == 429)
    await say(bot.engine, replies, f"/upload {sample_video}" if line == "UPLOAD" else line)
    text = said(replies)
    assert expected in text
    for raw in ("{", "Traceback", "nmv_usr_", "Bearer", "<html"):
        assert raw not in text


async def test_session_lost_starts_a_new_session(bot: Bot, localnemo: LocalNemo, tmp_path: Path) -> None:
    assert bot.engine is not None
    replies = console(tmp_path)
    await say(bot.engine, replies, "add music")
    assert len(localnemo.state.sessions) == 1
    localnemo.faults.fail("run_sse", 1002)
    await say(bot.engine, replies, "add a title")
    assert "previous project expired" in said(replies)
    assert len(localnemo.state.sessions) == 2
    await say(bot.engine, replies, "add music")  # works again, on the new session
    assert said(replies).count("music") >= 2


async def test_dropped_stream_is_not_resent_and_the_result_is_found(
    http: httpx.AsyncClient, localnemo: LocalNemo, tmp_path: Path, sample_video: Path
) -> None:
    bot = Bot(http, fast_settings(localnemo.base_url, poll_seconds=0.05), tmp_path / "db.sqlite3")
    engine = await bot.start()
    try:
        replies = console(tmp_path)
        await say(engine, replies, f"/upload {sample_video}")
        localnemo.faults.stream("drop", after_events=1)
        await say(engine, replies, "add background music")
        # The edit's own reply was lost with the connection; the change is found in the state instead.
        assert "added a Music track" in said(replies)
        assert localnemo.faults.count("run_sse") == 1
    finally:
        await bot.stop()


async def test_too_large_attachment_is_refused_before_it_is_opened(
    bot: Bot, localnemo: LocalNemo, tmp_path: Path
) -> None:
    assert bot.engine is not None

    class NeverOpen:
        async def open(self, attachment: Attachment) -> Any:
            raise AssertionError("a refused file must not be opened")

    replies = console(tmp_path)
    huge = Attachment(kind="video", filename="huge.mp4", mime_type="video/mp4", size=600 * 1024 * 1024, ref="x")
    odd = Attachment(kind="document", filename="notes.docx", size=10, ref="y")
    message = IncomingMessage(chat=CHAT, user_id="u", message_id=uuid.uuid4().hex, attachments=(huge, odd))
    await bot.engine.handle(message, replies, NeverOpen())
    await bot.engine.join(CHAT)
    text = said(replies)
    assert "huge.mp4 is 600.0 MB; the limit is 500.0 MB" in text
    assert "I can't use notes.docx" in text
    assert localnemo.faults.count("upload") == 0


async def test_the_token_never_reaches_a_reply_or_a_log_line(
    bot: Bot, localnemo: LocalNemo, sample_video: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert bot.engine is not None
    caplog.set_level(logging.DEBUG)
    replies = console(tmp_path)
    for line in (f"/upload {sample_video}", "add background music", "/status", "/credits", "export"):
        await say(bot.engine, replies, line)
    localnemo.expire_tokens()
    await say(bot.engine, replies, "add a title")
    localnemo.faults.fail("run_sse", 2001)
    await say(bot.engine, replies, "add music")
    tokens = {t.token for t in localnemo.state.tokens.values()}
    assert len(tokens) == 2
    everything = said(replies) + "\n" + "\n".join(r.getMessage() for r in caplog.records)
    for token in tokens:
        assert token not in everything
    assert "Bearer" not in everything


async def test_cancel_stops_a_running_export(
    bot: Bot, localnemo: LocalNemo, sample_video: Path, tmp_path: Path
) -> None:
    assert bot.engine is not None
    replies = console(tmp_path)
    await say(bot.engine, replies, f"/upload {sample_video}")
    localnemo.config.render_step_seconds = 5
    await say(bot.engine, replies, "export", wait=False)
    await wait_for(lambda: "Exporting" in said(replies), what="the export to start")
    await say(bot.engine, replies, "/cancel", wait=False)
    await bot.engine.join(CHAT)
    assert "Cancelled" in said(replies)
    assert localnemo.faults.count("render_cancel") == 1
    assert bot.repo is not None
    assert await bot.repo.unfinished_exports() == []


async def test_captions_file_is_uploaded_and_burned_in(bot: Bot, sample_video: Path, tmp_path: Path) -> None:
    assert bot.engine is not None
    captions = tmp_path / "words.srt"
    captions.write_text("1\n00:00:00,200 --> 00:00:01,800\nHello there\n")
    replies = console(tmp_path)
    await say(bot.engine, replies, f"/upload {sample_video} {captions}")
    await say(bot.engine, replies, "add the captions")
    assert "1 caption from words.srt" in said(replies)
    await say(bot.engine, replies, "export")
    assert len(replies.videos) == 1
    await assert_video(replies.videos[0], seconds=2.0)
    # The captions come back too, saved beside the video, timed to it.
    assert replies.documents == [replies.videos[0].with_suffix(".srt")]
    assert replies.documents[0].read_text() == "1\n00:00:00,200 --> 00:00:01,800\nHello there\n"


@pytest.mark.skipif(not LIBRIVOX.is_dir(), reason="needs pocketsphinx-testdata (bash .ci/run installs it)")
async def test_the_headline_request_offline_with_captions_from_speech(bot: Bot, tmp_path: Path) -> None:
    """"cut the pauses, add background music, and generate captions" on real speech, then "export": the video
    and its .srt, whose words are what is said."""
    assert bot.engine is not None
    clip = make_speech_clip(tmp_path)
    replies = console(tmp_path)
    await say(bot.engine, replies, f"/upload {clip}")
    await say(bot.engine, replies, "cut the pauses, add background music, and generate captions")
    text = said(replies)
    assert "Captions from the speech" in text
    assert "pauses" in text
    await say(bot.engine, replies, "export")
    assert len(replies.videos) == 1
    await assert_video(replies.videos[0])
    info = await probe(replies.videos[0])
    assert info is not None
    assert info.duration is not None
    assert CLIP_SECONDS - 2 * PAUSE_S - 1.0 < info.duration < CLIP_SECONDS - 2.0  # both pauses cut
    (srt,) = replies.documents
    cues = parse_cues(srt.read_text())
    reference = " ".join(transcripts()[name] for name in PARTS).split()
    assert word_error_rate(reference, " ".join(c.text for c in cues).split()) <= 0.35
    assert cues[-1].end_ms <= info.duration * 1000


# -- delivery through outages and failures ---------------------------------------------------------------


async def test_an_outage_while_an_export_renders_is_waited_out(
    bot: Bot, localnemo: LocalNemo, sample_video: Path, tmp_path: Path
) -> None:
    assert bot.engine is not None
    replies = console(tmp_path)
    await say(bot.engine, replies, f"/upload {sample_video}")
    # More failed status polls than the client's own quick retries: the export is asked about again later
    # instead of being left owed until the next start.
    localnemo.faults.fail("render_status", 503, times=10)
    await say(bot.engine, replies, "export")
    assert said(replies).count("Your video is ready") == 1
    assert len(replies.videos) == 1
    assert localnemo.faults.count("render_status") > 10


class ClosingWordsFail(ConsoleReplies):
    """A chat that takes the video but then refuses every message (a platform hiccup right after the file)."""

    took_video = False

    async def send_video(self, path: Path, *, caption: str, buttons: Any = ()) -> Any:
        handle = await super().send_video(path, caption=caption, buttons=buttons)
        self.took_video = True
        return handle

    async def send_text(self, text: str, *, buttons: Any = ()) -> Any:
        if self.took_video:
            raise RuntimeError("the platform refused the message")
        return await super().send_text(text, buttons=buttons)

    async def edit_text(self, handle: Any, text: str, *, buttons: Any = ()) -> None:
        if self.took_video:
            raise RuntimeError("the platform refused the edit")
        await super().edit_text(handle, text, buttons=buttons)


async def test_a_video_the_platform_took_is_never_sent_again(
    http: httpx.AsyncClient, localnemo: LocalNemo, settings: NemoSettings, tmp_path: Path, sample_video: Path
) -> None:
    db = tmp_path / "bot.sqlite3"
    first = Bot(http, settings, db)
    engine = await first.start()
    replies = ClosingWordsFail(io.StringIO(), tmp_path / "out", edit_interval_seconds=0)
    await say(engine, replies, f"/upload {sample_video}")
    await say(engine, replies, "export")
    assert len(replies.videos) == 1
    await first.stop()

    second = Bot(http, settings, db)
    engine = await second.start()
    try:
        from adapters.console import ConsoleAdapter

        assert await engine.resume(ConsoleAdapter(console(tmp_path))) == 0  # nothing owed: it was delivered
    finally:
        await second.stop()
