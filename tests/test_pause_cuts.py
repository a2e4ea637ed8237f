""" "Cut the pauses" as a video editor would judge it: no jump cut that saves nothing, no piece that shows
nothing, no speech lost.

The recording is made here with FFmpeg and its truth is known: "speech" (a 150 Hz voice-like harmonic tone,
its loudness moving at a syllable rate of 4 Hz) in four stretches, a 0.5 s pause (cutting it would save 0.1 s
once 0.2 s is kept either side of speech), a 0.8 s pause (saves 0.4 s), a keyboard-like click (30 ms of noise
at speech level) in the middle of a 4 s pause, and another click just before the end of the recording.
"""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path

import pytest

from localnemo.agent import kept_spans
from localnemo.media import AudioAnalysis, analyse_audio, ffmpeg_exe, probe
from localnemo.voice import speech, utterances
from tests.test_localnemo_engine import running_nemo, video_spans

FPS = 30
SECONDS = 18.0
SPEECH = [(0.3, 3.0), (3.5, 6.0), (10.0, 13.0), (13.8, 16.0)]
CLICKS = [(8.0, 8.03), (17.9, 17.93)]
# The settings' defaults: pauses from 0.5 s, 0.2 s kept either side of speech, no cut saving under 0.3 s,
# no piece under 0.5 s at either end.
MIN_CUT_MS, MIN_END_MS = 300, 500
# The pieces an editor would keep: the 0.5 s pause stays, the click and the end scrap go.
WANTED_MS = [(0, 6200), (9800, 13200), (13600, 16200)]


def _between(spans: list[tuple[float, float]]) -> str:
    return "+".join(f"between(t,{a},{b})" for a, b in spans)


def make_recording(out: Path) -> Path:
    voice = "(sin(2*PI*150*t)+0.5*sin(2*PI*300*t)+0.3*sin(2*PI*450*t))*(0.6+0.4*sin(2*PI*4*t))"
    sound = f"0.25*{voice}*({_between(SPEECH)})+0.3*(2*random(0)-1)*({_between(CLICKS)})"
    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=s=96x64:r={FPS}:d={SECONDS}",
         "-f", "lavfi", "-i", f"aevalsrc='{sound}':s=48000:d={SECONDS}",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(out)],
        check=True,
    )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_recording(tmp_path_factory.mktemp("pause-cuts") / "talk.mp4")


def jump_cuts(pieces: list[tuple[int, int]]) -> list[int]:
    """What each cut between two kept pieces saves, ms."""
    return [b[0] - a[1] for a, b in itertools.pairwise(pieces) if b[0] != a[1]]


def without_speech(pieces: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return [(a, b) for a, b in pieces if not any(a < s * 1000 < b or s * 1000 <= a < e * 1000 for s, e in SPEECH)]


def speech_lost_ms(pieces: list[tuple[int, int]]) -> float:
    lost = 0.0
    for start, end in SPEECH:
        kept = sum(max(0, min(b, end * 1000) - max(a, start * 1000)) for a, b in pieces)
        lost += (end - start) * 1000 - kept
    return lost


async def test_the_clicks_are_heard_as_blips_not_as_speech(recording: Path) -> None:
    analysis = await analyse_audio(recording, threshold_db=-35.0)
    assert analysis is not None
    # Between pauses of 0.5 s: the four stretches of speech (the 0.3 s of quiet at the start is shorter than a
    # pause), and the two clicks with the sound they hold, within 5 ms (AAC is not sample-exact).
    found = utterances(analysis, min_silence_ms=500)
    heard = [(0.0, 3.0), *SPEECH[1:]]
    wanted = [pytest.approx((s * 1000, e * 1000), abs=5) for s, e in heard]
    assert [(a, b) for a, b, sound in found if sound > 1000] == wanted
    assert [sound for _, _, sound in found if sound < 1000] == [pytest.approx(30, abs=5)] * 2
    spoken, blips = speech(analysis, min_silence_ms=500)
    assert len(spoken) == 4
    assert [start for start, _ in blips] == [pytest.approx(s * 1000, abs=5) for s, _ in CLICKS]


async def test_cut_pauses_leaves_no_needless_jump_cut(tmp_path: Path, recording: Path) -> None:
    async with running_nemo(tmp_path / "nemo", "pause-cuts") as nemo:
        assert (await nemo.upload(recording)).status_code == 200
        reply = await nemo.say("cut the pauses")
        assert "in 3 pieces" in reply, reply
        pieces = [(a, b) for a, b, _ in video_spans(nemo.draft)]
        # Each piece within a frame of what an editor would keep (cuts land on frame boundaries).
        assert [(round(a / 100) * 100, round(b / 100) * 100) for a, b in pieces] == WANTED_MS
        saved = jump_cuts(pieces)
        assert len(saved) == 2, saved  # the 3.6 s pause (with its click) and the 0.8 s one
        assert min(saved) >= MIN_CUT_MS, saved
        assert without_speech(pieces) == []
        assert speech_lost_ms(pieces) == pytest.approx(0, abs=0.5)
        assert min(pieces[0][1] - pieces[0][0], pieces[-1][1] - pieces[-1][0]) >= MIN_END_MS

        info = await probe(await nemo.exported())
        assert info is not None
        assert info.duration == pytest.approx(sum(b - a for a, b in pieces) / 1000, abs=1 / FPS)


def test_a_word_cut_off_by_the_end_keeps_a_piece_long_enough_to_see() -> None:
    # Speech to 5 s, a 2 s pause, then 0.15 s of speech cut off by the end of the recording at 7.2 s.
    analysis = AudioAnalysis(duration=7.2, silences=((5.0, 7.05),), threshold_db=-35.0, speech_db=-20.0)
    spans = kept_spans(analysis, (0, 7200), min_silence_ms=500, margin_ms=200, min_clip_ms=200)
    assert spans == [(0, 5200), (6700, 7200)]  # grown into the pause to 0.5 s, the word kept whole
    # The same sound at the start, and a span trimmed to a scrap of speech: it grows to 0.5 s too.
    analysis = AudioAnalysis(duration=7.2, silences=((0.15, 2.0),), threshold_db=-35.0, speech_db=-20.0)
    spans = kept_spans(analysis, (0, 7200), min_silence_ms=500, margin_ms=200, min_clip_ms=200)
    assert spans == [(0, 500), (1800, 7200)]


def test_a_cut_that_saves_too_little_is_not_made_and_a_click_keeps_nothing() -> None:
    # Pauses of 0.6 s (saves 0.2 s), 0.7 s (saves 0.3 s), and 3 s with a 40 ms click in the middle.
    analysis = AudioAnalysis(
        duration=12.0, silences=((2.0, 2.6), (4.0, 4.7), (6.0, 7.5), (7.54, 9.0)), threshold_db=-35.0,
        speech_db=-20.0,
    )  # fmt: skip
    spans = kept_spans(analysis, (0, 12_000), min_silence_ms=500, margin_ms=200, min_clip_ms=200)
    assert spans == [(0, 4200), (4500, 6200), (8800, 12_000)]
    # With the old rules (every pause cut, any sound kept) the click was its own 0.44 s piece.
    old = kept_spans(
        analysis, (0, 12_000), min_silence_ms=500, margin_ms=200, min_clip_ms=200, min_cut_ms=0, min_end_ms=0,
        min_speech_ms=0,
    )  # fmt: skip
    assert old == [(0, 2200), (2400, 4200), (4500, 6200), (7300, 7740), (8800, 12_000)]
