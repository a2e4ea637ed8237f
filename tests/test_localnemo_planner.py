"""localnemo's planner and agent: English and Chinese messages to draft changes and replies, deterministically.

Parsing is checked on its own (no files, no FFmpeg); the agent is checked on drafts, and on a real clip where
a step needs to listen to it (pauses are found with FFmpeg's silencedetect).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bot.nemo.timeline_model import Track
from localnemo import agent as agent_module
from localnemo import planner
from localnemo.agent import Agent, AgentText, AgentToolCall, AgentToolResult, PlannerAgent, kept_spans
from localnemo.config import LocalNemoConfig, resolution_lines
from localnemo.media import AudioAnalysis, analyse_audio, parse_silences
from localnemo.state import SessionRecord
from localnemo.subtitles import parse_cues, write_ass
from localnemo.testing import SilentEvery
from localnemo.timeline import snap
from tests.test_localnemo_engine import Nemo, make_sync_clip, running_nemo, video_spans

P = planner

# -- parsing ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "steps"),
    [
        (
            "cut the pauses, add background music, export 1080p",
            [P.CutPauses("normal"), P.Music(), P.Resolution("1080p"), P.ExportLater("1080p")],
        ),
        ("remove the silences, tight", [P.CutPauses("tight")]),
        ("only cut the long pauses", [P.CutPauses("gentle")]),
        ("keep the first 30 seconds", [P.Trim("keep_first", 0, 30_000)]),
        ("cut the first 5 seconds then fade out", [P.Trim("drop_first", 0, 5000), P.Fade(fade_out_ms=1000)]),
        ("the last 10 s only", [P.Trim("keep_last", 0, 10_000)]),
        ("from 0:10 to 0:45", [P.Trim("keep_range", 10_000, 45_000)]),
        ("remove from 1:02 to 1:05.5", [P.Trim("drop_range", 62_000, 65_500)]),
        ("between 10 and 20 seconds", [P.Trim("keep_range", 10_000, 20_000)]),
        ("make it 30 seconds long", [P.Trim("keep_first", 0, 30_000)]),
        ("join the clips in order", [P.Join()]),
        ("slideshow, 4 seconds per image", [P.Slideshow(per_image_ms=4000)]),
        ("1.5x", [P.Speed(1.5)]),
        ("slow motion", [P.Speed(0.5)]),
        ("speed it up to 8x", [P.SpeedOutOfRange(8.0)]),
        ("mute", [P.Volume("clip", level=0.0)]),
        ("voice volume 80%", [P.Volume("clip", level=0.8)]),
        ("make the music quieter", [P.Volume("music", factor=0.6)]),
        ("add background music at 35%, no ducking", [P.Music(volume=0.35, duck=False)]),
        ("remove the music", [P.RemoveMusic()]),
        ('title "Urban Dreams"', [P.Title("Urban Dreams")]),
        ('add the title "Night, City and Rain" for 5 seconds', [P.Title("Night, City and Rain", duration_ms=5000)]),
        ('text "Subscribe!" at 0:05', [P.TextOverlay("Subscribe!", start_ms=5000, end_ms=8000)]),
        ('add text "Thanks" at the end', [P.TextOverlay("Thanks", at_end=True)]),
        ("generate captions", [P.Captions()]),
        ("remove the subtitles", [P.Captions(remove=True)]),
        ("make it 9:16", [P.Aspect("9:16")]),
        ("square, crop it", [P.Aspect("1:1"), P.Aspect(None, "crop")]),
        ("vertical with black bars", [P.Aspect("9:16", "pad")]),
        ("fade in and out over 2 seconds", [P.Fade(2000, 2000)]),
        ("export in 4K", [P.Resolution("4k"), P.ExportLater("4k")]),
        ("what a nice day", []),
    ],
)
def test_english(text: str, steps: list[planner.Step]) -> None:
    assert [_bare(step) for step in planner.plan(text)] == steps


@pytest.mark.parametrize(
    ("text", "steps"),
    [
        ("去掉停顿，加背景音乐，导出1080p",
         [P.CutPauses("normal"), P.Music(), P.Resolution("1080p"), P.ExportLater("1080p")]),
        ("剪掉静音部分，紧凑一点", [P.CutPauses("tight")]),
        ("前30秒", [P.Trim("keep_first", 0, 30_000)]),
        ("去掉前5秒", [P.Trim("drop_first", 0, 5000)]),
        ("从0:10到0:45", [P.Trim("keep_range", 10_000, 45_000)]),
        ("1.5倍速", [P.Speed(1.5)]),
        ("静音", [P.Volume("clip", level=0.0)]),
        ("标题：城市之夜", [P.Title("城市之夜")]),
        ("加字幕", [P.Captions()]),
        ("竖屏，裁剪", [P.Aspect("9:16"), P.Aspect(None, "crop")]),
        ("淡入淡出", [P.Fade(1000, 1000)]),
        ("每张图片3秒的幻灯片", [P.Slideshow(per_image_ms=3000)]),
    ],
)
def test_chinese(text: str, steps: list[planner.Step]) -> None:
    assert [_bare(step) for step in planner.plan(text)] == steps


def _bare(step: planner.Step) -> planner.Step:
    """The step without its position in the message."""
    return replace(step, at=0)


def test_steps_come_in_the_order_asked() -> None:
    steps = planner.plan("keep the first 30 seconds, then cut the pauses")
    assert [type(step).__name__ for step in steps] == ["Trim", "CutPauses"]


@pytest.mark.parametrize(
    ("text", "ms"),
    [("1:30", 90_000), ("0:10.5", 10_500), ("1:02:03", 3_723_000), ("30s", 30_000), ("2 minutes", 120_000),
     ("1 min 30 sec", 90_000), ("90秒", 90_000), ("1分30秒", 90_000), ("1.5 h", 5_400_000)],
)  # fmt: skip
def test_times(text: str, ms: int) -> None:
    assert planner.parse_time(text) == ms


def test_footage_requests() -> None:
    assert planner.wants_footage("generate a video of a city at night")
    assert planner.wants_footage("生成一段城市夜景视频")
    assert not planner.wants_footage("cut the pauses")


def test_resolutions() -> None:
    assert [resolution_lines(r) for r in ("720p", "1080p", "4k", "2160p", "240p")] == [720, 1080, 2160, 2160, 240]
    with pytest.raises(ValueError, match="not a resolution"):
        resolution_lines("huge")


# -- pauses from silencedetect -----------------------------------------------------------------------------


def test_kept_spans_from_silences() -> None:
    analysis = AudioAnalysis(
        duration=10.0, silences=((0.0, 1.0), (3.0, 3.3), (5.0, 7.0), (9.5, 10.0)), threshold_db=-35, speech_db=-20
    )
    spans = kept_spans(analysis, (0, 10_000), min_silence_ms=500, margin_ms=200, min_clip_ms=200)
    assert spans == [(800, 5200), (6800, 9700)]  # the 0.3 s pause is too short to cut
    # A trimmed span keeps only its part; a span with no speech at all is left alone (None).
    assert kept_spans(analysis, (6000, 8000), min_silence_ms=500, margin_ms=200, min_clip_ms=200) == [(6800, 8000)]
    assert kept_spans(analysis, (5200, 6800), min_silence_ms=500, margin_ms=200, min_clip_ms=200) is None


def test_silencedetect_output_is_read() -> None:
    text = (
        "[silencedetect @ 0x1] silence_start: 1.5\n[silencedetect @ 0x1] silence_end: 3 | silence_duration: 1.5\n"
        "[silencedetect @ 0x1] silence_start: 7.25\n[Parsed_volumedetect_1 @ 0x2] mean_volume: -26.0 dB\n"
    )
    analysis = parse_silences(text, 8.0, -35.0)
    assert analysis.silences == ((1.5, 3.0), (7.25, 8.0))
    assert analysis.speech_db == pytest.approx(-26.0 - 10 * math.log10(5.75 / 8), abs=0.01)


@pytest.fixture(scope="module")
def sync_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sync_clip(tmp_path_factory.mktemp("planner-media") / "sync.mp4")


@pytest.fixture
async def nemo(tmp_path: Path) -> AsyncIterator[Nemo]:
    async with running_nemo(tmp_path / "nemo", "planner-tests") as running:
        yield running


def _near(spans: list[tuple[int, int, int]], wanted: list[tuple[int, int]]) -> bool:
    """Spans on 30 fps frame boundaries within a frame of ``wanted`` (silencedetect's edges are not exact to
    the sample), each ``d`` its length."""
    if len(spans) != len(wanted):
        return False
    for (start, end, duration), (a, b) in zip(spans, wanted, strict=True):
        if (snap(start, 30), snap(end, 30)) != (start, end) or duration != end - start:
            return False
        if abs(start - a) > 34 or abs(end - b) > 34:
            return False
    return True


async def test_tight_and_gentle_pause_cutting(nemo: Nemo, sync_clip: Path) -> None:
    await nemo.upload(sync_clip)
    reply = await nemo.say("cut the pauses, tight")
    # tight: pauses from 0.3 s, 0.1 s kept around speech
    assert _near(video_spans(nemo.draft), [(0, 1600), (2900, 4600), (5200, 7100)]), video_spans(nemo.draft)
    assert "in 3 pieces" in reply
    # Cutting again finds nothing more to cut, and says so without an edit.
    again = await nemo.say("cut the pauses, tight")
    assert again == "I found no pauses longer than 0.5 s to cut."  # 0.3 s, but a cut must save 0.3 s past the margins
    session = nemo.server.state.sessions[nemo.session_id]
    assert next(iter(session.video_analyses.values()))["silences"]  # analysed once, kept in the state


async def test_gentle_cut_keeps_short_pauses(nemo: Nemo, sync_clip: Path) -> None:
    await nemo.upload(sync_clip)
    await nemo.say("remove only the long pauses")
    # gentle: pauses from 1 s, 0.35 s kept around speech; the 0.8 s pause stays
    assert _near(video_spans(nemo.draft), [(0, 1850), (2650, 7350)]), video_spans(nemo.draft)


async def test_captions_follow_the_cut(nemo: Nemo, sync_clip: Path, tmp_path: Path) -> None:
    captions = tmp_path / "sync.vtt"
    captions.write_text(
        "WEBVTT\n\n00:00.200 --> 00:01.400 align:center\nHello\n\n00:01.600 --> 00:02.900\nIn the pause\n\n"
        "00:03.100 --> 00:04.400\nSecond part\n\n00:05.500 --> 00:06.500\nThird\n"
    )
    await nemo.upload(sync_clip, captions)
    await nemo.say("cut the pauses")
    lines = [(s["m"]["start"], s["d"], s["m"]["text"]) for t in nemo.draft["t"] if t["tt"] == 7 for s in t["sg"]]
    # Kept: 0–1.7, 2.8–4.7, 5.1–7.2 of the source. A cue in a cut stays only for its kept parts.
    assert lines == [
        (200, 1200, "Hello"),
        (1600, 200, "In the pause"),
        (2000, 1300, "Second part"),
        (4000, 1000, "Third"),
    ]


async def test_chinese_message_gets_a_chinese_reply(nemo: Nemo, sync_clip: Path) -> None:
    await nemo.upload(sync_clip)
    reply = await nemo.say("去掉停顿，加背景音乐，导出1080p")
    assert "已去掉 2.3 秒的停顿" in reply
    assert "背景音乐" in reply
    assert "1080p" in reply
    assert nemo.draft["m"]["resolution"] == "1080p"


async def test_honest_answers_offline(nemo: Nemo, sync_clip: Path) -> None:
    answer = await nemo.say("generate a video of a city at night")
    assert "can't generate footage" in answer
    assert "offline editor" in answer
    assert "NemoVideo" not in answer  # localnemo is the local editor: it speaks of no hosted service
    await nemo.upload(sync_clip)
    assert "can't generate footage" in await nemo.say("create a video about dogs")
    # The clip's "speech" is a tone: captions are made from real speech only, never invented.
    captions = await nemo.say("generate captions")
    assert "heard no speech" in captions
    assert not [t for t in nemo.draft["t"] if t["tt"] == 7]  # nothing fake on the timeline


# -- the agent on drafts, without media --------------------------------------------------------------------


def _session(tmp_path: Path, seconds: int = 10) -> SessionRecord:
    session = SessionRecord("1", "t", "p", "en", "u", tmp_path)
    meta = {"src": "http://x/files/1/a.mp4", "start": 0, "kind": "video", "in": 0, "out": seconds * 1000, "fps": 30}
    session.draft.t.append(Track.model_validate({"tt": 0, "sg": [{"d": seconds * 1000, "m": meta}]}))
    return session


async def _run(agent: Agent, session: SessionRecord, text: str) -> tuple[list[AgentToolCall], str]:
    calls: list[AgentToolCall] = []
    texts: list[str] = []
    async for event in agent.run(session, text):
        if isinstance(event, AgentToolCall):
            calls.append(event)
        elif isinstance(event, AgentText):
            texts.append(event.text)
        else:
            assert isinstance(event, AgentToolResult)
            assert event.call_id == calls[-1].call_id
    return calls, " ".join(texts)


@pytest.mark.parametrize(
    ("text", "spans"),
    [
        ("cut the first 2 seconds", [(2000, 10000)]),
        ("keep the last 5 seconds", [(5000, 10000)]),
        ("remove from 6 to 7 seconds", [(0, 6000), (7000, 10000)]),
        ("keep 0:01 to 0:02", [(1000, 2000)]),
        ("make it 4 seconds long", [(0, 4000)]),
    ],
)
async def test_trims(tmp_path: Path, text: str, spans: list[tuple[int, int]]) -> None:
    session = _session(tmp_path)
    calls, reply = await _run(PlannerAgent(), session, text)
    assert [call.args["operation"] for call in calls] == ["trim"]
    assert [(s.m.in_, s.m.out) for s in session.draft.t[0].sg] == spans
    assert "I kept" in reply


async def test_speed_volume_music_and_text_edits(tmp_path: Path) -> None:
    session = _session(tmp_path)
    agent = PlannerAgent()
    _, reply = await _run(agent, session, "2x speed")
    assert session.draft.t[0].sg[0].d == 5000
    assert "2×" in reply
    _, reply = await _run(agent, session, "play it at 10x")
    assert "outside that range" in reply
    assert session.draft.t[0].sg[0].m.speed == 2.0
    await _run(agent, session, "add music")
    music = session.draft.t[1].sg[0]
    assert (music.d, music.m.volume, music.m.role) == (5000, 0.3, "music")
    await _run(agent, session, "music volume 20%")
    assert music.m.volume == 0.2
    await _run(agent, session, "mute")
    assert session.draft.t[0].sg[0].m.volume == 0.0
    _, reply = await _run(agent, session, 'add text "Hello" from 1s to 2s')
    (text,) = [s for t in session.draft.t if t.tt == 7 for s in t.sg]
    assert (text.m.start, text.d, text.m.role) == (1000, 1000, "text")
    _, reply = await _run(agent, session, "remove the music")
    assert not [t for t in session.draft.t if t.tt == 1]
    assert reply == "I removed the background music."


async def test_silent_turns_and_gui_phrases_are_kept(tmp_path: Path) -> None:
    session = _session(tmp_path)
    agent = SilentEvery(PlannerAgent(), 2)  # the test-only imitation of the hosted agent's quirk
    _, first = await _run(agent, session, "fade in")
    calls, second = await _run(agent, session, 'title "Hi"')
    assert first
    assert calls
    assert second == ""  # every 2nd edit ends with no text, as the hosted agent's often do
    _, music = await _run(agent, session, "add music")
    assert "preview it in the timeline" in music  # the hosted agent's GUI wording, for the bot to rewrite


# -- captions files --------------------------------------------------------------------------------------


def test_srt_and_vtt_cues(tmp_path: Path) -> None:
    srt = (
        "\ufeff1\r\n00:00:01,000 --> 00:00:02,500\r\n<b>Bold</b> line\r\nsecond {\\an8}line\r\n\r\n"
        "2\r\n00:00:03,000 --> 00:00:04,000\r\n\r\n"
    )
    cues = parse_cues(srt)
    assert [(c.start_ms, c.end_ms, c.text) for c in cues] == [(1000, 2500, "Bold line\nsecond line")]
    vtt = "WEBVTT\n\nNOTE hi\n\nintro\n00:01.000 --> 00:02.000 position:10%\nHi {there}\n"
    (cue,) = parse_cues(vtt)
    assert (cue.start_ms, cue.end_ms, cue.text) == (1000, 2000, "Hi {there}")
    path = tmp_path / "c.ass"
    write_ass([cue], path, width=1080, height=1920, font_name="DejaVu Sans")
    text = path.read_text()
    assert "PlayResX: 1080" in text
    assert "Dialogue: 0,0:00:01.00,0:00:02.00,Default,,0,0,0,,Hi (there)" in text  # no ASS override from a file


# -- settings --------------------------------------------------------------------------------------------


def test_new_settings_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LOCALNEMO_DATA_DIR", str(tmp_path))
    values = {
        "LOCALNEMO_ALLOW_PRIVATE_URLS": "true", "LOCALNEMO_RENDERER": "copy", "LOCALNEMO_RESOLUTION": "720p",
        "LOCALNEMO_X264_PRESET": "ultrafast", "LOCALNEMO_X264_CRF": "28", "LOCALNEMO_SILENCE_THRESHOLD_DB": "-40",
        "LOCALNEMO_SILENCE_MIN_MS": "700", "LOCALNEMO_SILENCE_MARGIN_MS": "150", "LOCALNEMO_MIN_CLIP_MS": "300",
        "LOCALNEMO_MAX_DISK_MB": "512", "LOCALNEMO_FONT_FILE": "/fonts/x.ttf",
    }  # fmt: skip
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    config = LocalNemoConfig.from_env()
    got: dict[str, Any] = {
        "allow": config.allow_private_urls, "renderer": config.renderer, "res": config.default_resolution,
        "preset": config.x264_preset, "crf": config.x264_crf, "db": config.silence_threshold_db,
        "min": config.silence_min_ms, "margin": config.silence_margin_ms, "clip": config.min_clip_ms,
        "disk": config.max_disk_mb, "font": config.font_file,
    }  # fmt: skip
    assert got == {
        "allow": True, "renderer": "copy", "res": "720p", "preset": "ultrafast", "crf": 28, "db": -40.0,
        "min": 700, "margin": 150, "clip": 300, "disk": 512, "font": "/fonts/x.ttf",
    }  # fmt: skip
    defaults = LocalNemoConfig(data_dir=tmp_path)
    assert (defaults.allow_private_urls, defaults.renderer, defaults.default_resolution) == (False, "ffmpeg", "1080p")
    assert (defaults.x264_preset, defaults.x264_crf) == ("veryfast", 23)
    for name, bad in (("LOCALNEMO_X264_PRESET", "warp"), ("LOCALNEMO_RESOLUTION", "big"), ("LOCALNEMO_X264_CRF", "99")):
        monkeypatch.setenv(name, bad)
        with pytest.raises(ValueError, match=name):
            LocalNemoConfig.from_env()
        monkeypatch.setenv(name, values[name])


async def test_one_analysis_pass_serves_every_edit_of_an_upload(
    nemo: Nemo, sync_clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    passes: list[Path] = []

    async def counted(path: Path, **kw: Any) -> AudioAnalysis | None:
        passes.append(path)
        return await analyse_audio(path, **kw)

    monkeypatch.setattr(agent_module, "analyse_audio", counted)
    await nemo.upload(sync_clip)
    await nemo.say("cut the pauses, add background music")
    await nemo.say("cut the pauses, gentle")
    await nemo.say("cut the pauses, tight")
    assert len(passes) == 1
