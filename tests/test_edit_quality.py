"""An edit as a video editor would judge it, on a recording whose truth is known (tests/media_truth.py).

First the measures themselves are checked on sources whose answer is known without them: the unedited
recording, and a cut and an audio delay made with plain FFmpeg. Then "cut the pauses" runs the way a user runs
it (``nemobot edit --local``) and its output must lose no speech and keep picture and sound within one frame
at every marker, leave no piece without speech and make no cut that saves less than the minimum cut, and its
sound must be at −14 LUFS with the true peak under −1 dBTP.
"""

from __future__ import annotations

import itertools
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from localnemo.media import ffmpeg_exe
from tests.media_truth import Truth, make_recording, measure, plan_recording
from tests.test_cli import cli_environment

log = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def truth() -> Truth:
    return plan_recording(12, width=320, height=180, fps=30)


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory, truth: Truth) -> Path:
    return make_recording(tmp_path_factory.mktemp("quality") / "recording.mp4", truth)


def test_the_unedited_recording_measures_as_its_truth(recording: Path, truth: Truth) -> None:
    measured = measure(recording, truth)
    assert measured.frames == truth.frames == 360
    assert measured.fps == pytest.approx(30, abs=0.01)
    assert (measured.irregular_steps, measured.repeated_frames, measured.unreadable_frames) == (0, 0, 0)
    assert measured.ranges == [(0, truth.frames)]
    assert measured.jump_cuts == 0
    assert measured.speech_lost_ms == 0
    assert measured.pause_left_s == pytest.approx(truth.seconds - truth.speech_seconds, abs=0.001)
    assert measured.pieces_without_speech == 0
    assert [m.source_frame for m in measured.markers] == list(truth.markers)
    assert [m.flash for m in measured.markers] == pytest.approx([k / truth.fps for k in truth.markers], abs=0.001)
    assert all(abs(offset) <= 2 for offset in measured.offsets_ms), measured.offsets_ms
    assert -30 < measured.loudness_lufs < -12
    assert measured.true_peak_dbtp < 0


def test_a_known_cut_and_audio_delay_are_measured(recording: Path, truth: Truth, tmp_path: Path) -> None:
    # Cut from the middle of the second sentence to the middle of the long pause after it, and delay the sound
    # by 100 ms: 1 jump cut, the rest of that sentence lost, that part of the pause gone, and every marker's
    # beep 100 ms after its flash.
    fps = truth.fps
    (_, end), (following, _) = truth.sentences[1], truth.sentences[2]
    cut_from = round((truth.sentences[1][0] + end) / 2 * fps)
    cut_to = round((end + following) / 2 * fps)
    out = tmp_path / "cut.mp4"
    a, b = cut_from / fps, cut_to / fps
    pieces = (
        f"[0:v]trim=end={a},setpts=PTS-STARTPTS[v1];[0:v]trim=start={b},setpts=PTS-STARTPTS[v2];"
        f"[0:a]atrim=end={a},asetpts=PTS-STARTPTS[a1];[0:a]atrim=start={b},asetpts=PTS-STARTPTS[a2];"
        "[v1][a1][v2][a2]concat=n=2:v=1:a=1[v][a0];[a0]adelay=100[a]"
    )
    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(recording), "-filter_complex", pieces,
         "-map", "[v]", "-map", "[a]", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(out)],
        check=True,
    )  # fmt: skip
    measured = measure(out, truth)
    assert measured.ranges == [(0, cut_from), (cut_to, truth.frames)]
    assert measured.jump_cuts == 1
    assert measured.speech_lost_ms == pytest.approx((end - cut_from / fps) * 1000, abs=0.5)
    pauses = truth.seconds - truth.speech_seconds
    assert measured.pause_left_s == pytest.approx(pauses - (cut_to / fps - end), abs=0.001)
    assert measured.pieces_without_speech == 0
    kept_markers = [k for k in truth.markers if not cut_from <= k < cut_to]
    assert measured.markers_expected == len(kept_markers) == len(truth.markers) - 1
    assert [m.source_frame for m in measured.markers] == kept_markers
    assert measured.offsets_ms == pytest.approx([100] * len(kept_markers), abs=3)
    assert measured.worst_offset_frames == pytest.approx(3, abs=0.1)


def test_cut_the_pauses_loses_no_speech_and_keeps_sync(recording: Path, truth: Truth, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    done = subprocess.run(
        [sys.executable, "-m", "nemobot", "edit", "--local", str(recording), "-p", "cut the pauses", "-o", str(out)],
        cwd=tmp_path, env=cli_environment(LOCALNEMO_RESOLUTION="180p"), capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    measured = measure(out, truth)
    assert measured.duration < truth.seconds - 1  # pauses were cut
    assert (measured.irregular_steps, measured.repeated_frames, measured.unreadable_frames) == (0, 0, 0)
    assert measured.speech_lost_ms == 0
    # Every marker is kept (they are all inside speech), each flash has its beep, within one frame.
    assert measured.markers_expected == len(truth.markers)
    assert [m.source_frame for m in measured.markers] == list(truth.markers)
    assert measured.worst_offset_frames is not None
    assert measured.worst_offset_frames <= 1, measured.offsets_ms
    # No needless jump cuts: no kept piece without speech (the click in the long pause is not one), every cut
    # saves at least the minimum cut (0.3 s), and neither end is a scrap shorter than 0.5 s.
    assert measured.pieces_without_speech == 0
    fps = truth.fps
    ranges = measured.ranges
    saved = [(later[0] - earlier[1]) / fps for earlier, later in itertools.pairwise(ranges)]
    assert all(seconds >= 0.3 - 1 / fps for seconds in saved), saved
    assert measured.jump_cuts == len(saved)
    assert (measured.ranges[0][1] - measured.ranges[0][0]) / fps >= 0.5
    assert (measured.ranges[-1][1] - measured.ranges[-1][0]) / fps >= 0.5
    # The sound as the platforms want it.
    assert measured.loudness_lufs == pytest.approx(-14, abs=0.5)
    assert measured.true_peak_dbtp <= -1.0
    log.info(
        "cut the pauses: %d jump cuts, %d pieces without speech, %.2f s of pause left of %.2f s, A/V %s ms",
        measured.jump_cuts, measured.pieces_without_speech, measured.pause_left_s,
        truth.seconds - truth.speech_seconds, [round(o, 1) for o in measured.offsets_ms],
    )  # fmt: skip
