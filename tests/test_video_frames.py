"""Frames and sizes of localnemo's exports as a video editor would judge them.

A phone or a screen recorder records at a variable rate: its smooth parts must stay smooth (each source
frame shown at its own time, sound with it), not be resampled to the average rate. And an odd-sized
recording must come out at a standard size (1920×1080, 1080×1920, 1080×1080 …), never 1924×1080.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bot.nemo.timeline_model import Draft
from localnemo.graph import canvas_size
from localnemo.media import ffmpeg_exe, probe
from localnemo.render import FFmpegRenderer, RenderSettings
from tests.test_localnemo_engine import Nemo, beep_onsets, running_nemo

FRAME = 1 / 30
# The variable-rate recording: 30 fps for 0–2 s, 10 fps for 2–4 s, 30 fps again for 4–6 s (so 23.3 fps on
# average); a white square in the top-left corner flashes, and a beep sounds, at each of MARKS.
MARKS = (1.0, 3.0, 5.5)
VFR_SECONDS = 6


def _run_ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args], check=True)


def _between(spans: list[tuple[float, float]]) -> str:
    return "+".join(f"between(t,{a},{b})" for a, b in spans)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("frames-media")


@pytest.fixture(scope="module")
def vfr_clip(media: Path) -> Path:
    out = media / "screen.mp4"
    flash = _between([(t, t + 0.09) for t in MARKS])
    beep = _between([(t, t + 0.1) for t in MARKS])
    _run_ffmpeg(
        "-f", "lavfi", "-i",
        f"testsrc2=s=320x180:r=30:d={VFR_SECONDS},"
        f"drawbox=x=0:y=0:w=iw/4:h=ih/4:color=white:t=fill:enable='{flash}',"
        "select='lt(t,2)+gte(t,4)+not(mod(n,3))'",
        "-f", "lavfi", "-i", f"aevalsrc='0.8*sin(2*PI*2000*t)*({beep})':s=48000:d={VFR_SECONDS}",
        "-fps_mode", "vfr", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
        str(out),
    )  # fmt: skip
    return out


def odd_clip(media: Path, width: int, height: int) -> Path:
    out = media / f"odd{width}x{height}.mp4"
    if not out.exists():
        _run_ffmpeg(
            "-f", "lavfi", "-i", f"testsrc2=s={width}x{height}:r=30:d=1",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=1",
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv444p", "-c:a", "aac", "-shortest", str(out),
        )  # fmt: skip
    return out


# -- what a viewer sees and hears ---------------------------------------------------------------------------


@dataclass
class Pictures:
    times: list[float]  # each decoded frame's presentation time, seconds
    data: list[bytes] = field(repr=False)  # each frame, grey, WIDTH×HEIGHT
    WIDTH = 64
    HEIGHT = 36

    def changes(self) -> list[float]:
        """The times at which the picture changes: each new source frame (testsrc2 moves every frame)."""
        found = []
        for i in range(1, len(self.data)):
            diff = sum(abs(a - b) for a, b in zip(self.data[i], self.data[i - 1], strict=True)) / len(self.data[i])
            if diff > 1.0:
                found.append(self.times[i])
        return found

    def flashes(self) -> list[float]:
        """When the top-left corner turns white."""
        corner = [
            sum(frame[row * self.WIDTH + col] for row in range(self.HEIGHT // 5) for col in range(self.WIDTH // 5))
            / ((self.HEIGHT // 5) * (self.WIDTH // 5))
            for frame in self.data
        ]
        return [self.times[i] for i in range(len(corner)) if corner[i] > 220 and (i == 0 or corner[i - 1] <= 220)]


def pictures(path: Path) -> Pictures:
    """Every frame as the file stores it (no frame added or dropped by the decode), with its time."""
    run = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path), "-map", "0:v:0",
         "-vf", f"showinfo,scale={Pictures.WIDTH}:{Pictures.HEIGHT}", "-fps_mode", "passthrough",
         "-f", "rawvideo", "-pix_fmt", "gray", "-"],
        capture_output=True, check=True,
    )  # fmt: skip
    times = [float(t) for t in re.findall(r"pts_time:\s*(-?[\d.]+)", run.stderr.decode("utf-8", "replace"))]
    size = Pictures.WIDTH * Pictures.HEIGHT
    data = [run.stdout[i : i + size] for i in range(0, len(run.stdout) - size + 1, size)]
    assert len(times) == len(data)
    return Pictures(times, data)


async def render(tmp_path: Path, clip: Path, start_ms: int, end_ms: int, resolution: str = "360p") -> Path:
    renderer = FFmpegRenderer(RenderSettings(default_resolution=resolution, x264_preset="ultrafast"), tmp_path)
    draft = Draft.model_validate(
        {"t": [{"tt": 0, "sg": [{"d": end_ms - start_ms, "m": {"src": "u", "in": start_ms, "out": end_ms,
                                                             "kind": "video"}}]}], "m": {}}
    )  # fmt: skip
    out = tmp_path / f"cut{start_ms}-{end_ms}.mp4"
    await renderer.render(draft, {"u": clip}, out, lambda _: None)
    return out


# -- a variable frame rate stays smooth --------------------------------------------------------------------


async def test_a_variable_rate_recording_is_known_by_its_real_rate(vfr_clip: Path) -> None:
    info = await probe(vfr_clip)
    assert info is not None
    # Cuts snap to 1/30 s, the rate every frame's time is on; the average is what the file holds per second.
    assert info.fps == 30
    assert info.average_fps == pytest.approx(23.33, abs=0.01)
    assert info.variable_rate


# The whole clip; a cut starting between two frames of the 10 fps part; one far enough in to seek.
@pytest.mark.parametrize(("start_ms", "end_ms"), [(0, 6000), (2533, 5500), (5100, 6000)])
async def test_every_source_frame_keeps_its_time_and_the_sound_stays_with_it(
    tmp_path: Path, vfr_clip: Path, start_ms: int, end_ms: int
) -> None:
    source = pictures(vfr_clip)
    out = await render(tmp_path, vfr_clip, start_ms, end_ms)
    shown = pictures(out)
    info = await probe(out)
    assert info is not None
    assert (info.fps, info.average_fps) == (30, 30)  # constant, at the source's highest rate
    start, end = start_ms / 1000, end_ms / 1000
    assert len(shown.data) == round((end - start) * 30)
    expected = [t - start for t in source.changes() if start < t < end - FRAME / 2]
    got = shown.changes()
    # Each new picture of the source appears in the export at its own time: 30 a second where the source
    # had 30 (the smooth parts stay smooth), 10 a second where it had 10.
    assert len(got) == len(expected)
    assert max(abs(a - b) for a, b in zip(got, expected, strict=True)) < FRAME / 2
    if start_ms == 0:
        smooth = [t for t in got if 0.0 < t < 1.0]
        assert len(smooth) == 29  # every frame of the first second changes the picture
    # Picture and sound together: each flash comes with its beep, at the source's time, within a frame.
    marks = [t - start for t in MARKS if start <= t < end]
    flashes, heard = shown.flashes(), beep_onsets(out)
    assert len(flashes) == len(heard) == len(marks)
    for flash, beep, mark in zip(flashes, heard, marks, strict=True):
        assert abs(flash - mark) < FRAME / 2
        assert abs(beep - mark) < FRAME


# -- standard output sizes ---------------------------------------------------------------------------------


async def exported_size(nemo: Nemo, clip: Path, resolution: str, ask: str | None = None) -> tuple[Path, int, int]:
    answer = await nemo.upload(clip)
    assert answer.status_code == 200, answer.text
    if ask is not None:
        await nemo.say(ask)
    out = await nemo.exported(output={"resolution": resolution})
    info = await probe(out)
    assert info is not None
    assert info.width is not None
    assert info.height is not None
    return out, info.width, info.height


async def test_a_1081_by_607_recording_comes_out_1920_by_1080_filled(tmp_path: Path, media: Path) -> None:
    clip = odd_clip(media, 1081, 607)
    async with running_nemo(tmp_path / "nemo", "frames-tests") as nemo:
        out, width, height = await exported_size(nemo, clip, "1080p")
    assert (width, height) == (1920, 1080)
    # The picture fills it, edge to edge: testsrc2's colours reach the first and last columns and rows.
    frame = pictures(out).data[0]
    columns = [[frame[row * Pictures.WIDTH + col] for row in range(Pictures.HEIGHT)] for col in (0, -1)]
    rows = [frame[r * Pictures.WIDTH : (r + 1) * Pictures.WIDTH] for r in (0, Pictures.HEIGHT - 1)]
    for line in [*columns, *rows]:
        assert max(line) - min(line) > 30  # colours, not one flat band of black or blur


@pytest.mark.parametrize(
    ("source", "ask", "size"),
    [
        ((607, 1081), None, (360, 640)),  # an odd-sized phone recording: 9:16
        ((1081, 607), "make it 9:16", (360, 640)),
        ((1081, 607), "make it 1:1", (360, 360)),
        ((1081, 607), "make it 4:5", (360, 450)),
        ((1366, 770), None, (640, 360)),  # a laptop's screen, a few pixels off 16:9
    ],
)
async def test_outputs_are_exactly_the_asked_size(
    tmp_path: Path, media: Path, source: tuple[int, int], ask: str | None, size: tuple[int, int]
) -> None:
    clip = odd_clip(media, *source)
    async with running_nemo(tmp_path / "nemo", "frames-tests") as nemo:
        _, width, height = await exported_size(nemo, clip, "360p", ask)
    assert (width, height) == size


@pytest.mark.parametrize(
    ("ratio", "resolution", "size"),
    [
        ("16:9", "1080p", (1920, 1080)), ("9:16", "1080p", (1080, 1920)), ("1:1", "1080p", (1080, 1080)),
        ("4:5", "1080p", (1080, 1350)), ("16:9", "720p", (1280, 720)), ("16:9", "480p", (854, 480)),
        ("16:9", "4k", (3840, 2160)), ("9:16", "4k", (2160, 3840)),
    ],
)  # fmt: skip
def test_the_sizes_of_each_shape_and_resolution_are_the_standard_ones(
    ratio: str, resolution: str, size: tuple[int, int]
) -> None:
    draft = Draft.model_validate({"t": [], "m": {"aspect_ratio": ratio, "resolution": resolution}})
    assert canvas_size(draft, None, "1080p") == size


def test_a_shape_far_from_every_standard_one_keeps_its_own_with_even_sides() -> None:
    # 2:1 is none of the standard shapes: it keeps its shape, at the asked height, with even sides.
    draft = Draft.model_validate({"t": [], "m": {"width": 1001, "height": 500}})
    width, height = canvas_size(draft, None, "1080p")
    assert (width % 2, height % 2) == (0, 0)
    assert (width, height) == (2162, 1080)
