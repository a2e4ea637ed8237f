"""Captions from speech, offline, measured on real recorded speech (LibriVox readings shipped in Debian's
pocketsphinx-testdata, with their transcripts): how many words are right, when they are shown, alignment of a
script, captions that stay on their words after pauses are cut, styles, and the Whisper path through its loader.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.nemo.timeline_model import Track
from localnemo import planner, timeline
from localnemo.agent import AgentText, AgentToolCall, PlannerAgent, kept_spans, respect_words
from localnemo.captioning import LINE_CHARS, MAX_CUE_MS, MIN_CUE_MS, cues_from_words, width
from localnemo.media import AudioAnalysis, ffmpeg_exe
from localnemo.speech import (
    PocketsphinxEngine,
    Speech,
    SpeechError,
    WhisperEngine,
    Word,
    choose_engine,
    load_pcm,
    matched_pairs,
    word_error_rate,
)
from localnemo.state import SessionRecord
from localnemo.subtitles import CaptionStyle, Cue, parse_cues, write_ass
from tests.test_localnemo_engine import Nemo, running_nemo

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
pytestmark = pytest.mark.skipif(
    not (LIBRIVOX / "transcription").is_file(), reason="needs pocketsphinx-testdata (bash .ci/run installs it)"
)
# Recognition and alignment differ by a frame or two; a caption is "on time" within this.
TIMING_MS = 300


def transcripts() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in (LIBRIVOX / "transcription").read_text().splitlines():
        words, _, name = line.rpartition("(")
        found[name.strip(" )")] = words.replace("<s>", "").replace("</s>", "").strip()
    return found


# The clip the end-to-end tests use: three readings with pauses between them.
PARTS = ["sense_and_sensibility_01_austen_64kb-0880", "sense_and_sensibility_01_austen_64kb-0930",
         "sense_and_sensibility_01_austen_64kb-0890"]  # fmt: skip
PAUSE_S = 1.5
CLIP_SECONDS = (
    sum((LIBRIVOX / f"{name}.wav").stat().st_size - 44 for name in PARTS) / 32_000 + 2 * PAUSE_S
    if (LIBRIVOX.is_dir())
    else 0.0
)


@pytest.fixture(scope="module")
def speech_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_speech_clip(tmp_path_factory.mktemp("speech"))


def make_speech_clip(folder: Path) -> Path:
    """A small video (black picture) whose sound is three readings with 1.5 s pauses between them."""
    out = folder / "reading.mp4"
    inputs: list[str] = []
    for name in PARTS:
        inputs += ["-i", str(LIBRIVOX / f"{name}.wav")]
    pad = f"apad=pad_dur={PAUSE_S}"
    graph = f"[0:a]{pad}[a0];[1:a]{pad}[a1];[2:a]anull[a2];[a0][a1][a2]concat=n=3:v=0:a=1[a]"
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-y", *inputs, "-f", "lavfi", "-i", "color=black:s=160x120:r=15",
         "-filter_complex", graph, "-map", "3:v", "-map", "[a]", "-shortest", "-c:v", "libx264", "-preset",
         "ultrafast", "-c:a", "aac", "-b:a", "128k", str(out)],
        check=True,
    )  # fmt: skip
    return out


@dataclass
class Recognised:
    reference: list[str]
    words: list[Word]
    aligned: list[Word]


@pytest.fixture(scope="module")
def recognised() -> list[Recognised]:
    """Every LibriVox reading, recognised and (from its transcript) force-aligned."""
    import asyncio

    engine = PocketsphinxEngine()
    found: list[Recognised] = []
    for name, text in sorted(transcripts().items()):
        pcm = asyncio.run(load_pcm(LIBRIVOX / f"{name}.wav"))
        found.append(Recognised(text.split(), engine.transcribe(pcm, "en"), engine.align(pcm, text)))
    return found


def test_caption_text_matches_what_is_said(recognised: list[Recognised]) -> None:
    reference = [w for r in recognised for w in r.reference]
    captions = [w for r in recognised for cue in cues_from_words(r.words) for w in cue.text.split()]
    rate = word_error_rate(reference, captions)
    assert len(reference) > 60
    assert rate <= 0.35, f"WER {rate:.3f}"


def test_captions_are_shown_when_their_words_are_said(recognised: list[Recognised]) -> None:
    errors: list[int] = []
    for r in recognised:
        cues = cues_from_words(r.words)
        for cue in cues:
            lines = cue.text.split("\n")
            assert len(lines) <= 2, cue.text
            assert all(width(line) <= LINE_CHARS for line in lines), cue.text
            assert MIN_CUE_MS <= cue.end_ms - cue.start_ms <= MAX_CUE_MS, cue
        shown = {id(w): cue for cue in cues for w in cue.words}
        _, pairs = matched_pairs([w.text for w in r.aligned], [w.text for w in r.words])
        assert len(pairs) >= 0.6 * len(r.aligned)
        for ref_index, hyp_index in pairs:
            truth, heard = r.aligned[ref_index], r.words[hyp_index]
            cue = shown[id(heard)]
            errors.append(abs(heard.start_ms - truth.start_ms))
            # On screen from before the word starts (within TIMING_MS) until it has been said.
            assert cue.start_ms - TIMING_MS <= truth.start_ms
            assert truth.end_ms <= cue.end_ms + TIMING_MS
    assert max(errors) <= TIMING_MS, f"largest start error {max(errors)} ms"


def test_forced_alignment_places_every_word_of_a_script(recognised: list[Recognised]) -> None:
    for r in recognised:
        assert [w.text for w in r.aligned] == r.reference
        starts = [w.start_ms for w in r.aligned]
        assert starts == sorted(starts)
        _, pairs = matched_pairs(r.reference, [w.text for w in r.words])
        # Where recognition heard the same word, both put it at the same moment.
        assert all(abs(r.aligned[i].start_ms - r.words[j].start_ms) <= TIMING_MS for i, j in pairs)


def test_a_script_as_written_keeps_its_spelling_and_unknown_words_are_timed_between(
    recognised: list[Recognised],
) -> None:
    import asyncio

    name = "sense_and_sensibility_01_austen_64kb-0870"
    pcm = asyncio.run(load_pcm(LIBRIVOX / f"{name}.wav"))
    script = "And Mr. John Dashwood had then leisure to consider how much there might be prudently in his " \
             "power to do for them. Zqxwv!"  # fmt: skip
    words = PocketsphinxEngine().align(pcm, script)
    assert words[1].text == "Mr."
    assert words[-2].text == "them."
    assert words[-1].text == "Zqxwv!"
    assert words[-1].start_ms >= words[-2].end_ms


# -- the agent and the server -----------------------------------------------------------------------------


async def turn(agent: PlannerAgent, session: SessionRecord, text: str) -> tuple[list[AgentToolCall], str]:
    calls: list[AgentToolCall] = []
    said: list[str] = []
    async for event in agent.run(session, text):
        if isinstance(event, AgentToolCall):
            calls.append(event)
        elif isinstance(event, AgentText):
            said.append(event.text)
    return calls, " ".join(said)


def clip_session(folder: Path, clip: Path, seconds: float) -> SessionRecord:
    session = SessionRecord("1", "t", "p", "en", "u", folder)
    (folder / clip.name).write_bytes(clip.read_bytes())
    src = f"http://x/files/1/{clip.name}"
    meta = {"title": "a", "src": src, "start": 0, "kind": "video", "in": 0, "out": round(seconds * 1000), "fps": 15}
    session.draft.t.append(Track.model_validate({"tt": 0, "sg": [{"d": round(seconds * 1000), "m": meta}]}))
    session.video_infos.append({"cdn_url": src, "file_type": "video", "filename": clip.name, "duration": seconds})
    return session


def caption_segments(session: SessionRecord) -> list[Any]:
    return [s for t in timeline.tracks_of(session.draft, timeline.TRACK_TEXT) for s in t.sg if s.m.role == "caption"]


async def test_generate_captions_reports_progress_and_styles_apply(tmp_path: Path, speech_clip: Path) -> None:
    session = clip_session(tmp_path, speech_clip, CLIP_SECONDS)
    agent = PlannerAgent()
    calls, reply = await turn(agent, session, "generate captions")
    progress = [c.args["progress"] for c in calls if c.name == "transcribe_captions"]
    assert progress
    assert progress[-1] == 100
    assert progress == sorted(progress)
    assert "Transcribing… 100%" in calls[len(progress) - 1].args["message"]
    assert "Captions from the speech" in reply
    assert "pocketsphinx" in reply
    assert caption_segments(session)
    calls, reply = await turn(agent, session, "big karaoke captions at the top")
    meta = session.draft.m
    assert (meta.caption_position, meta.caption_size, meta.caption_style) == ("top", "large", "karaoke")
    assert "at the top" in reply
    assert [c.name for c in calls] == ["edit_multitrack"]


async def test_chinese_speech_without_whisper_says_what_to_install(tmp_path: Path, speech_clip: Path) -> None:
    session = clip_session(tmp_path, speech_clip, CLIP_SECONDS)
    before = session.draft.to_wire()
    calls, reply = await turn(PlannerAgent(), session, "加字幕")
    assert "nemobot[whisper]" in reply
    assert "LOCALNEMO_WHISPER_MODEL" in reply
    assert session.draft.to_wire() == before
    assert not [c for c in calls if c.name == "edit_multitrack"]


@pytest.fixture
async def nemo(tmp_path: Path) -> AsyncIterator[Nemo]:
    async with running_nemo(tmp_path / "nemo", "caption-tests") as running:
        yield running


def credits(nemo: Nemo) -> int:
    session = nemo.server.state.sessions[nemo.session_id]
    return nemo.server.state.users[session.user_id].credits


async def test_chinese_request_costs_no_credit(nemo: Nemo, speech_clip: Path) -> None:
    assert (await nemo.upload(speech_clip)).status_code == 200
    left = credits(nemo)
    assert "nemobot[whisper]" in await nemo.say("加字幕")
    assert credits(nemo) == left


async def test_headline_request_end_to_end_captions_stay_on_their_words(nemo: Nemo, speech_clip: Path) -> None:
    """ "cut the pauses, add background music, and generate captions", then export: every caption word that was
    heard right is on screen while the output says it (found by aligning the transcript to the output's sound)."""
    assert (await nemo.upload(speech_clip)).status_code == 200
    reply = await nemo.say("cut the pauses, add background music, and generate captions")
    assert "Captions from the speech" in reply, reply
    session = nemo.server.state.sessions[nemo.session_id]
    spans = [s for s in timeline.video_segments(session.draft)]
    assert len(spans) == 3  # the two pauses cut
    assert any(s.m.role == "music" for t in timeline.tracks_of(session.draft, timeline.TRACK_AUDIO) for s in t.sg)
    output = await nemo.exported()
    job = (await nemo.http.get(f"/api/render/proxy/lambda/render_{nemo.renders}", headers=nemo.headers)).json()
    srt = await nemo.http.get(job["data"]["captionsUrl"])  # signed like the result link: no token needed
    assert srt.status_code == 200
    assert parse_cues(srt.text)[0].text == caption_segments(session)[0].m.text
    unsigned = job["data"]["captionsUrl"].split("?")[0]
    assert (await nemo.http.get(unsigned)).status_code == 404
    assert (await nemo.http.get(unsigned, headers=nemo.headers)).status_code == 200  # its owner's token
    other = await nemo.http.post("/api/auth/anonymous-token", headers={"X-Client-Id": "someone-else"})
    stranger = {"Authorization": f"Bearer {other.json()['data']['token']}"}
    assert (await nemo.http.get(unsigned, headers=stranger)).status_code == 404  # another user's token
    texts = transcripts()
    reference = " ".join(texts[name] for name in PARTS)
    heard = await Speech("pocketsphinx").align(output, reference)
    shown = [(w, seg) for seg in caption_segments(session) for w in seg.m.words or []]
    _, pairs = matched_pairs([w.text for w in heard], [w.w for w, _ in shown])
    assert len(pairs) >= 0.6 * len(heard)
    for ref_index, hyp_index in pairs:
        truth = heard[ref_index]
        word, segment = shown[hyp_index]
        start = timeline.number(segment.m.start)
        assert start - TIMING_MS <= truth.start_ms <= start + timeline.number(segment.d), (word.w, truth)
        assert word.at is not None
        assert abs(timeline.number(word.at) - truth.start_ms) <= TIMING_MS, (word, truth)


# -- the Whisper path -------------------------------------------------------------------------------------


@dataclass
class FakeWord:
    word: str
    start: float
    end: float


@dataclass
class FakeSegment:
    end: float
    words: list[FakeWord]


class FakeWhisperModel:
    """faster-whisper's ``WhisperModel`` as far as the engine uses it."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def transcribe(self, audio: Any, **options: Any) -> tuple[Iterator[FakeSegment], object]:
        self.calls.append({"samples": len(audio), **options})
        words = [FakeWord("你好", 0.5, 0.9), FakeWord("世界", 0.9, 1.4), FakeWord("。", 1.4, 1.5)]
        return iter([FakeSegment(1.5, words), FakeSegment(3.0, [FakeWord("再见", 2.0, 2.6)])]), object()


async def test_whisper_is_chosen_when_its_model_loads_and_transcribes_chinese(
    tmp_path: Path, speech_clip: Path
) -> None:
    model_dir = tmp_path / "whisper-small"
    model_dir.mkdir()
    loaded: list[str] = []
    model = FakeWhisperModel()

    def loader(path: str) -> FakeWhisperModel:
        loaded.append(path)
        return model

    engine = choose_engine("auto", str(model_dir), loader=loader)
    assert isinstance(engine, WhisperEngine)
    assert loaded == [str(model_dir)]
    (tmp_path / "s").mkdir()
    session = clip_session(tmp_path / "s", speech_clip, CLIP_SECONDS)
    agent = PlannerAgent(speech=Speech("auto", str(model_dir), loader=loader))
    _, reply = await turn(agent, session, "加字幕")
    assert "whisper" in reply
    assert [s.m.text for s in caption_segments(session)] == ["你好世界。", "再见"]
    assert model.calls[-1]["language"] == "zh"
    assert model.calls[-1]["word_timestamps"] is True
    assert model.calls[-1]["samples"] == pytest.approx(CLIP_SECONDS * 16_000, rel=0.02)


def test_a_whisper_model_that_fails_to_load_falls_back_or_is_refused_when_forced(tmp_path: Path) -> None:
    def broken(path: str) -> object:
        raise OSError(f"no model.bin in {path}")

    assert isinstance(choose_engine("auto", str(tmp_path), loader=broken), PocketsphinxEngine)
    assert isinstance(choose_engine("pocketsphinx", str(tmp_path), loader=broken), PocketsphinxEngine)
    assert isinstance(choose_engine("auto", None), PocketsphinxEngine)
    with pytest.raises(SpeechError, match="could not be loaded"):
        choose_engine("whisper", str(tmp_path), loader=broken)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("generate captions", planner.Captions()),
        ("add subtitles", planner.Captions()),
        ("加字幕", planner.Captions()),
        ("put the captions at the top", planner.Captions(position="top")),
        ("make the captions bigger", planner.Captions(size="large")),
        ("karaoke captions", planner.Captions(karaoke=True)),
        ("word-by-word captions in the middle", planner.Captions(position="middle", karaoke=True)),
        ("字幕放在顶部", planner.Captions(position="top")),
        ("captions from this script: Hello there, and welcome.", planner.Captions(script="Hello there, and welcome.")),
    ],
)
def test_caption_phrasings(text: str, expected: planner.Captions) -> None:
    assert planner.plan(text) == [expected]


# -- styles, burned in ------------------------------------------------------------------------------------


def frame_rgb(video: Path, seconds: float, width: int = 320, height: int = 240) -> bytes:
    return subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-ss", f"{seconds:.3f}", "-i", str(video), "-frames:v", "1", "-vf",
         f"scale={width}:{height}", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip


def colours(frame: bytes, rows: tuple[float, float], width: int = 320, height: int = 240) -> tuple[int, int]:
    """(white pixels, yellow pixels) in a band of rows (fractions of the height)."""
    white = yellow = 0
    for row in range(int(rows[0] * height), int(rows[1] * height)):
        for column in range(width):
            r, g, b = frame[(row * width + column) * 3 : (row * width + column) * 3 + 3]
            if r > 180 and g > 180:
                if b > 180:
                    white += 1
                elif b < 90:
                    yellow += 1
    return white, yellow


async def test_caption_position_and_karaoke_are_burned_in(nemo: Nemo, speech_clip: Path) -> None:
    assert (await nemo.upload(speech_clip)).status_code == 200
    await nemo.say("generate captions")
    session = nemo.server.state.sessions[nemo.session_id]
    first = caption_segments(session)[0]
    words = [w for w in first.m.words or [] if w.at is not None and w.until is not None]
    middle = timeline.number(words[len(words) // 2].at) / 1000 + 0.05
    top, bottom = (0.0, 0.4), (0.6, 1.0)
    plain = frame_rgb(await nemo.exported(), middle)
    assert colours(plain, bottom)[0] > 20
    assert colours(plain, top) == (0, 0)
    reply = await nemo.say("karaoke captions at the top")
    assert "each word lit up" in reply
    lit = frame_rgb(await nemo.exported(), middle)
    white, yellow = colours(lit, top)
    assert white > 10  # the words still to come
    assert yellow > 10  # the words already said
    assert colours(lit, bottom) == (0, 0)


def test_caption_size_and_position_are_the_ass_style(tmp_path: Path) -> None:
    cue = Cue(0, 2000, "he was\nnot", (("he", 0, 300), ("was", 300, 700), ("not", 900, 1500)))
    sizes = {}
    for size in ("small", "medium", "large"):
        path = tmp_path / f"{size}.ass"
        write_ass([cue], path, width=1080, height=1920, font_name="DejaVu Sans", style=CaptionStyle("top", size, True))
        style = next(line for line in path.read_text().splitlines() if line.startswith("Style:")).split(",")
        sizes[size] = int(style[2])
        assert style[18] == "8"  # top centre
    assert sizes["small"] < sizes["medium"] < sizes["large"]
    events = path.read_text().splitlines()[-1]
    assert events.endswith(r"{\kf30}he {\kf40}was\N{\k20}{\kf60}not")


# -- cuts that respect words ------------------------------------------------------------------------------


def test_respect_words_moves_edges_out_of_words_to_frame_boundaries() -> None:
    words = [Word("hello", 1000, 1400), Word("there", 1500, 1900)]
    assert respect_words([(0, 1200), (1700, 3000)], words, (0, 3000)) == [(0, 1400), (1500, 3000)]
    assert respect_words([(0, 1200), (1300, 3000)], words, (0, 3000)) == [(0, 3000)]
    spans = respect_words([(0, 1450)], words, (0, 3000), fps=15)
    assert spans[0][1] == pytest.approx(1466.67, abs=0.01)


async def test_cutting_pauses_never_cuts_inside_a_recognised_word(tmp_path: Path, speech_clip: Path) -> None:
    session = clip_session(tmp_path, speech_clip, CLIP_SECONDS)
    src = session.video_infos[0]["cdn_url"]
    agent = PlannerAgent()
    await turn(agent, session, "generate captions")
    words = [Word(str(w), int(a), int(b)) for w, a, b in session.video_analyses["speech:" + src]["words"]]
    long_words = [w for w in words if w.end_ms - w.start_ms >= 450]
    # A "pause" found inside long words (a quiet vowel, a stop): the margins alone would cut into them.
    silences = [[(w.start_ms + 50) / 1000, (w.end_ms + 600) / 1000] for w in long_words[:3]]
    session.video_analyses[src] = {
        "threshold_db": -35.0, "has_audio": True, "duration": CLIP_SECONDS, "silences": silences, "speech_db": -20.0,
    }  # fmt: skip
    naive = kept_spans(
        AudioAnalysis(CLIP_SECONDS, tuple((a, b) for a, b in silences), -35.0, -20.0), (0, CLIP_SECONDS * 1000),
        min_silence_ms=500, margin_ms=200, min_clip_ms=200,
    )  # fmt: skip
    assert naive is not None
    assert any(w.start_ms < edge < w.end_ms for a, b in naive for edge in (a, b) for w in words)
    calls, reply = await turn(agent, session, "cut the pauses")
    assert calls, reply
    edges = [timeline.number(e) for s in timeline.video_segments(session.draft) for e in (s.m.in_, s.m.out)]
    assert len(edges) > 2
    assert not [(edge, w) for edge in edges for w in words if w.start_ms < edge < w.end_ms]


# -- captions from a script -------------------------------------------------------------------------------

SCRIPT = (
    "He was not an ill-disposed young man. He might even have been made amiable himself. "
    "Unless to be rather cold-hearted, and rather selfish, is to be ill-disposed."
)


async def test_captions_from_a_script_are_aligned_and_keep_its_words(tmp_path: Path, speech_clip: Path) -> None:
    session = clip_session(tmp_path, speech_clip, CLIP_SECONDS)
    agent = PlannerAgent()
    _, reply = await turn(agent, session, "Captions from this script: " + SCRIPT)
    assert "Captions from your script" in reply, reply
    segments = caption_segments(session)
    assert " ".join(s.m.text.replace("\n", " ") for s in segments if s.m.text) == SCRIPT
    # The script's words land where recognition hears the same words.
    shown = [w for s in segments for w in s.m.words or []]
    heard = await Speech("pocketsphinx").transcribe(speech_clip, "en")
    _, pairs = matched_pairs([w.w for w in shown], [w.text for w in heard])
    assert len(pairs) >= 0.6 * len(heard)
    assert all(abs(timeline.number(shown[i].a) - heard[j].start_ms) <= TIMING_MS for i, j in pairs)
    # Each sentence starts a caption.
    assert [s.m.text.split()[0] for s in segments if s.m.text][:1] == ["He"]
    assert any(s.m.text.startswith("Unless") for s in segments if s.m.text)


async def test_an_uploaded_script_is_aligned_when_captions_are_asked_for(
    nemo: Nemo, speech_clip: Path, tmp_path: Path
) -> None:
    script = tmp_path / "script.txt"
    script.write_text("\ufeff" + SCRIPT + "\n")
    answer = await nemo.upload(speech_clip, script)
    assert answer.status_code == 200, answer.text
    assert [f["file_type"] for f in answer.json()["data"]["files"]] == ["video", "subtitle"]
    session = nemo.server.state.sessions[nemo.session_id]
    assert not caption_segments(session)  # a script waits to be asked for
    reply = await nemo.say("add subtitles")
    assert "Captions from your script" in reply, reply
    assert " ".join((s.m.text or "").replace("\n", " ") for s in caption_segments(session)) == SCRIPT
    empty = tmp_path / "empty.txt"
    empty.write_text(" \n ... \n")
    refused = await nemo.upload(empty)
    assert refused.status_code == 400
    assert "no words" in refused.text


async def test_a_steady_tone_gives_no_words(tmp_path: Path) -> None:
    # The quick start's sample clip is a sine tone with pauses: pocketsphinx "hears" a word of 2-3 s in each
    # stretch of tone. Nobody says a word for seconds, so none of that becomes a caption.
    from nemobot.cli import make_sample

    sample = make_sample(tmp_path / "sample.mp4")
    assert await Speech("pocketsphinx").transcribe(sample, "en") == []
