"""localnemo's offline editor end to end: real uploads, real edits, real FFmpeg renders, measured by decoding.

The clips are made here with FFmpeg: a black picture with white flashes at the instants of loud beeps, on a
quiet tone ("speech") with silent gaps. After an edit the output is decoded (grey frames and PCM through
pipes) and checked: where the flashes are, where the beeps start, how long it lasts, how loud the music is
under speech and between it, whether a title or caption is in its place.
"""

from __future__ import annotations

import array
import ipaddress
import json
import math
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from bot.nemo.timeline_model import Draft
from localnemo import render as render_module
from localnemo.app import LocalNemo
from localnemo.config import LocalNemoConfig
from localnemo.graph import RenderGraph, build_graph
from localnemo.media import ffmpeg_exe, ffmpeg_major, probe
from localnemo.render import FFmpegRenderer, RenderError, RenderSettings
from localnemo.uploads import PublicResolver, is_public_address
from tests.conftest import serving
from tests.media_truth import loudness
from tests.waiting import wait_for

ATTRIBUTION = {"X-Skill-Source": "tests", "X-Skill-Version": "0", "X-Skill-Platform": "tests"}
FPS = 30
FRAME = 1 / FPS
# The sync clip: "speech" (a quiet 300 Hz tone) in three parts with pauses between them, and beeps
# (loud 2 kHz, 0.1 s) at the same instants as three-frame white flashes.
SPEECH = [(0.0, 1.5), (3.0, 4.5), (5.3, 7.0)]
BEEPS = [0.5, 3.5, 4.0, 6.0]
SYNC_SECONDS = 8
# With the defaults (pauses ≥ 0.5 s cut, 0.2 s kept either side of speech) these source spans stay.
KEPT_MS = [(0, 1700), (2800, 4700), (5100, 7200)]


# -- media made by the tests ------------------------------------------------------------------------------


def _run_ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def _between(spans: list[tuple[float, float]]) -> str:
    return "+".join(f"between(t,{a},{b})" for a, b in spans)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("engine-media")


def make_sync_clip(out: Path) -> Path:
    flashes = _between([(t, t + 0.09) for t in BEEPS])
    sound = f"0.1*sin(2*PI*300*t)*({_between(SPEECH)})+0.8*sin(2*PI*2000*t)*({_between([(t, t + 0.1) for t in BEEPS])})"
    _run_ffmpeg(
        "-f", "lavfi", "-i",
        f"color=c=black:s=320x240:r={FPS}:d={SYNC_SECONDS},drawbox=x=0:y=0:w=iw:h=ih:color=white:t=fill:enable='{flashes}'",
        "-f", "lavfi", "-i", f"aevalsrc='{sound}':s=48000:d={SYNC_SECONDS}",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(out),
    )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def sync_clip(media: Path) -> Path:
    return make_sync_clip(media / "sync.mp4")


@pytest.fixture(scope="module")
def speech_clip(media: Path) -> Path:
    """9 s of a moving test pattern; "speech" is a 3 kHz tone in 1–3 s and 5–7 s, silence elsewhere (the
    bundled music stays under 800 Hz, so a low-pass filter hears only the music)."""
    out = media / "talk.mp4"
    _run_ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=s=320x240:r={FPS}:d=9",
        "-f", "lavfi", "-i", "aevalsrc='0.1*sin(2*PI*3000*t)*(between(t,1,3)+between(t,5,7))':s=48000:d=9",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(out),
    )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def dark_clip(media: Path) -> Path:
    """5 s of black with a steady tone: anything bright in a render of it was drawn by the renderer."""
    out = media / "dark.mp4"
    _run_ffmpeg(
        "-f", "lavfi", "-i", f"color=c=black:s=320x240:r={FPS}:d=5",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=5",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(out),
    )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def still(media: Path) -> Path:
    out = media / "photo.png"
    _run_ffmpeg("-f", "lavfi", "-i", "testsrc2=s=200x300", "-frames:v", "1", str(out))
    return out


# -- decoding -----------------------------------------------------------------------------------------------


@dataclass
class Frames:
    width: int
    height: int
    data: list[bytes]

    def bright(self, index: int, rows: tuple[float, float] = (0.0, 1.0), level: int = 200) -> int:
        """Pixels brighter than ``level`` in the band of rows (fractions of the height) of one frame."""
        frame = self.data[index]
        top, bottom = int(rows[0] * self.height), int(rows[1] * self.height)
        return sum(1 for value in frame[top * self.width : bottom * self.width] if value > level)

    def mean(self, index: int) -> float:
        frame = self.data[index]
        return sum(frame) / len(frame)


def decode_frames(path: Path, width: int = 80, height: int = 60) -> Frames:
    raw = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:v:0", "-vf", f"scale={width}:{height}",
         "-f", "rawvideo", "-pix_fmt", "gray", "-"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    size = width * height
    return Frames(width, height, [raw[i : i + size] for i in range(0, len(raw) - size + 1, size)])


def decode_pcm(path: Path, rate: int = 48000, filters: str | None = None) -> array.array[int]:
    command = [ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:a:0"]
    if filters:
        command += ["-af", filters]
    command += ["-ac", "1", "-ar", str(rate), "-f", "s16le", "-"]
    samples = array.array("h")
    samples.frombytes(subprocess.run(command, capture_output=True, check=True).stdout)
    return samples


def rms_db(samples: array.array[int], start: float, end: float, rate: int) -> float:
    window = samples[int(start * rate) : int(end * rate)]
    power = sum(x * x for x in window) / max(1, len(window))
    return 20 * math.log10(max(math.sqrt(power) / 32768, 1e-9))


def integrated_loudness(path: Path) -> float:
    """EBU R128 integrated loudness (LUFS) as the platforms measure it (``tests/media_truth.py``)."""
    return loudness(path)[0]


def flash_times(frames: Frames) -> list[float]:
    means = [frames.mean(i) for i in range(len(frames.data))]
    return [i * FRAME for i in range(len(means)) if means[i] > 128 and (i == 0 or means[i - 1] <= 128)]


def beep_onsets(path: Path) -> list[float]:
    rate, window = 48000, 48  # 1 ms windows
    samples = decode_pcm(path, rate)
    levels = [
        math.sqrt(sum(x * x for x in samples[start : start + window]) / window) / 32768
        for start in range(0, len(samples) - window, window)
    ]
    # Relative to the loudest moment: every export is set to the platforms' loudness, whatever the source's.
    on, off = 0.5 * max(levels, default=0), 0.25 * max(levels, default=0)
    onsets: list[float] = []
    loud = False
    for index, level in enumerate(levels):
        if level > on and not loud:
            onsets.append(index * window / rate)
        loud = level > on if not loud else level > off
    return onsets


# -- the server, over HTTP --------------------------------------------------------------------------------


class Nemo:
    """One user and one session on a running localnemo."""

    def __init__(self, server: LocalNemo, http: httpx.AsyncClient, token: str, session_id: str) -> None:
        self.server, self.http, self.token, self.session_id = server, http, token, session_id
        self.renders = 0

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **ATTRIBUTION}

    @property
    def draft(self) -> dict[str, Any]:
        """The session's draft as the wire carries it."""
        return self.server.state.sessions[self.session_id].draft.to_wire()

    async def upload(self, *files: Path, content_type: str = "application/octet-stream") -> httpx.Response:
        payload = [("files", (path.name, path.read_bytes(), content_type)) for path in files]
        return await self.http.post(
            f"/api/upload-video/nemo_agent/me/{self.session_id}", files=payload, headers=self.headers
        )

    async def say(self, text: str) -> str:
        body = {
            "app_name": "nemo_agent", "user_id": "me", "session_id": self.session_id,
            "new_message": {"parts": [{"text": text}]},
        }  # fmt: skip
        answer = await self.http.post("/run_sse", json=body, headers=self.headers)
        assert answer.status_code == 200, answer.text
        texts = []
        for line in answer.text.splitlines():
            if line.startswith("data: {"):
                event = json.loads(line[6:])
                if event.get("type") == "text":
                    texts.append(event["content"])
        return " ".join(texts)

    async def export(self, draft: dict[str, Any] | None = None, output: dict[str, Any] | None = None) -> dict[str, Any]:
        self.renders += 1
        render_id = f"render_{self.renders}"
        body = {"id": render_id, "sessionId": self.session_id, "draft": draft or self.draft, "output": output or {}}
        created = await self.http.post("/api/render/proxy/lambda", json=body, headers=self.headers)
        assert created.status_code == 200, created.text
        job: dict[str, Any] = {}

        async def finished() -> bool:
            nonlocal job
            answer = await self.http.get(f"/api/render/proxy/lambda/{render_id}", headers=self.headers)
            job = answer.json()["data"]
            return job["status"] in ("completed", "failed")

        await wait_for(finished, within=60, what=f"{render_id} to finish")
        return job

    async def exported(self, **kwargs: Any) -> Path:
        job = await self.export(**kwargs)
        assert job["status"] == "completed", job
        result = await self.http.get(job["outputUrl"])
        assert result.status_code == 200
        path = self.server.config.data_dir / f"download_{self.renders}.mp4"
        path.write_bytes(result.content)
        return path


def engine_config(data_dir: Path, **overrides: Any) -> LocalNemoConfig:
    values: dict[str, Any] = {
        "data_dir": data_dir, "dialect": "simple", "event_delay_seconds": 0.0,
        "render_steps": 1, "render_step_seconds": 0.01, "default_resolution": "240p", "x264_preset": "ultrafast",
    }  # fmt: skip
    values.update(overrides)
    return LocalNemoConfig(**values)


@pytest.fixture
def options() -> dict[str, Any]:
    return {}


@asynccontextmanager
async def running_nemo(data_dir: Path, client_id: str, **options: Any) -> AsyncIterator[Nemo]:
    """localnemo with one identity's token and a fresh session, spoken to over raw HTTP."""
    async with LocalNemo(engine_config(data_dir, **options)) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as http:
            grant = await http.post("/api/auth/anonymous-token", headers={"X-Client-Id": client_id})
            token = grant.json()["data"]["token"]
            session = await http.post(
                "/api/tasks/me/with-session/nemo_agent", json={"task_name": "p", "language": "en"},
                headers={"Authorization": f"Bearer {token}"},
            )  # fmt: skip
            yield Nemo(server, http, token, session.json()["data"]["session_id"])


@pytest.fixture
async def nemo(tmp_path: Path, options: dict[str, Any]) -> AsyncIterator[Nemo]:
    async with running_nemo(tmp_path / "nemo", "engine-tests", **options) as running:
        yield running


def video_spans(draft: dict[str, Any]) -> list[tuple[int, int, int]]:
    (track,) = [t for t in draft["t"] if t["tt"] == 0]
    return [(s["m"]["in"], s["m"]["out"], s["d"]) for s in track["sg"]]


# -- cutting pauses keeps picture and sound together ------------------------------------------------------


async def test_cut_pauses_keeps_the_spoken_spans_in_sync(nemo: Nemo, sync_clip: Path) -> None:
    assert (await nemo.upload(sync_clip)).status_code == 200
    reply = await nemo.say("cut the pauses")
    assert "removed 2.3 s of pauses" in reply
    # One video segment per kept span, with its source times and its duration.
    assert video_spans(nemo.draft) == [(a, b, b - a) for a, b in KEPT_MS]
    assert [s["m"]["start"] for s in nemo.draft["t"][0]["sg"]] == [0, 1700, 3600]

    out = await nemo.exported()
    info = await probe(out)
    assert info is not None
    kept = sum(b - a for a, b in KEPT_MS) / 1000
    assert info.duration == pytest.approx(kept, abs=FRAME)
    frames = decode_frames(out)
    assert len(frames.data) * FRAME == pytest.approx(kept, abs=FRAME)
    assert len(decode_pcm(out)) / 48000 == pytest.approx(kept, abs=FRAME)

    # Where each beep should be now: its source time moved back by what was cut before it.
    expected = []
    position = 0.0
    for a, b in KEPT_MS:
        expected += [position + beep - a / 1000 for beep in BEEPS if a / 1000 <= beep < b / 1000]
        position += (b - a) / 1000
    flashes, onsets = flash_times(frames), beep_onsets(out)
    assert len(flashes) == len(onsets) == len(expected) == 4
    for flash, onset, wanted in zip(flashes, onsets, expected, strict=True):
        assert flash == pytest.approx(wanted, abs=FRAME)
        assert onset == pytest.approx(wanted, abs=FRAME)
        assert onset == pytest.approx(flash, abs=FRAME)  # no drift, however many pieces


async def test_trim_and_speed_keep_sync(nemo: Nemo, sync_clip: Path) -> None:
    await nemo.upload(sync_clip)
    reply = await nemo.say("keep from 0:03 to 0:06, then play it at 1.5x")
    assert "3 s" in reply
    assert "1.5×" in reply
    assert video_spans(nemo.draft) == [(3000, 6000, 2000)]
    out = await nemo.exported()
    info = await probe(out)
    assert info is not None
    assert info.duration == pytest.approx(2.0, abs=FRAME)
    wanted = [(beep - 3.0) / 1.5 for beep in BEEPS if 3.0 <= beep < 6.0]
    for flash, onset, expected in zip(flash_times(decode_frames(out)), beep_onsets(out), wanted, strict=True):
        assert flash == pytest.approx(expected, abs=FRAME)
        assert onset == pytest.approx(expected, abs=FRAME)


# -- music ----------------------------------------------------------------------------------------------------


async def test_background_music_ducks_under_speech_and_is_loudness_normalised(nemo: Nemo, speech_clip: Path) -> None:
    await nemo.upload(speech_clip)
    reply = await nemo.say("add background music")
    assert "background music" in reply
    assert "12 dB" in reply
    (music,) = [s for t in nemo.draft["t"] if t["tt"] == 1 for s in t["sg"]]
    assert music["d"] == 9000
    assert music["m"]["role"] == "music"
    assert music["m"]["duck"] is True
    assert "src" not in music["m"]  # the bundled loop
    out = await nemo.exported()
    # The speech is a 3 kHz tone and the bundled music stays under 800 Hz: low-passed, only music is left.
    rate = 8000
    music_only = decode_pcm(out, rate, "lowpass=f=1000,lowpass=f=1000,lowpass=f=1000")
    under_speech = [rms_db(music_only, a, b, rate) for a, b in ((1.5, 2.7), (5.5, 6.7))]
    between = [rms_db(music_only, a, b, rate) for a, b in ((3.6, 4.6), (7.6, 8.4))]
    assert min(between) > -45  # the music plays
    assert max(under_speech) <= min(between) - 8, (under_speech, between)  # and is audibly lower under speech
    # The mix is set to -14 LUFS (one measured gain: tests/test_export_sound.py measures it closely).
    assert integrated_loudness(out) == pytest.approx(-14, abs=2.5)


async def test_uploaded_music_is_used_instead_of_the_bundled_track(nemo: Nemo, dark_clip: Path, media: Path) -> None:
    song = media / "song.wav"
    _run_ffmpeg("-f", "lavfi", "-i", "sine=frequency=220:sample_rate=44100:duration=2", str(song))
    await nemo.upload(dark_clip)
    await nemo.upload(song)
    reply = await nemo.say("add background music at 50%")
    assert '"song"' in reply
    assert "50%" in reply
    audio = [s for t in nemo.draft["t"] if t["tt"] == 1 for s in t["sg"]]
    assert len(audio) == 1  # the song became the music; it is not also played once as a plain track
    assert audio[0]["m"]["src"].endswith("_song.wav")
    assert (audio[0]["d"], audio[0]["m"]["loop"], audio[0]["m"]["volume"]) == (5000, True, 0.5)
    out = await nemo.exported()
    info = await probe(out)
    assert info is not None
    assert info.duration == pytest.approx(5.0, abs=FRAME)


# -- picture: canvas, text, captions -----------------------------------------------------------------------


@pytest.mark.parametrize("options", [{"default_resolution": "1080p"}])  # the real default
async def test_vertical_export_is_1080_by_1920_on_a_blurred_background(nemo: Nemo, speech_clip: Path) -> None:
    await nemo.upload(speech_clip)
    trimmed = await nemo.say("keep the first 1 second")
    assert "1 s long" in trimmed
    assert "1080×1920" in await nemo.say("make it 9:16")
    out = await nemo.exported()
    info = await probe(out)
    assert info is not None
    assert (info.width, info.height) == (1080, 1920)
    frames = decode_frames(out, 54, 96)
    # The 4:3 picture fills the middle; above and below it is its blurred copy, not black bars.
    assert frames.mean(0) > 40
    top_band = frames.data[0][: 10 * 54]
    assert sum(top_band) / len(top_band) > 30


async def test_a_phone_clip_recorded_sideways_stays_upright(nemo: Nemo, speech_clip: Path, media: Path) -> None:
    if 0 < ffmpeg_major() < 6:
        pytest.skip("-display_rotation (to make the test clip) needs FFmpeg 6")
    sideways = media / "phone.mp4"
    _run_ffmpeg("-display_rotation", "90", "-i", str(speech_clip), "-t", "1", "-c", "copy", str(sideways))
    answer = await nemo.upload(sideways)
    (info,) = answer.json()["data"]["files"]
    assert (info["width"], info["height"]) == (240, 320)  # as it is shown, not as it is stored
    out = await nemo.exported()
    shown = await probe(out)
    assert shown is not None
    assert (shown.width, shown.height) == (240, 320)
    frames = decode_frames(out, 24, 32)
    assert min(frames.mean(i) for i in range(len(frames.data))) > 40  # the picture fills it: no bars


async def test_title_is_on_the_frames_it_should_be_on(nemo: Nemo, dark_clip: Path) -> None:
    await nemo.upload(dark_clip)
    assert "Urban Dreams" in await nemo.say('add the title "Urban Dreams"')
    frames = decode_frames(await nemo.exported())
    middle = (0.35, 0.65)
    for second in (0.5, 1.5, 2.5):
        assert frames.bright(round(second * FPS), middle) > 20, second
    for second in (3.3, 4.5):
        assert frames.bright(round(second * FPS)) == 0, second


async def test_srt_captions_are_burned_in_and_follow_the_cuts(nemo: Nemo, dark_clip: Path, media: Path) -> None:
    captions = media / "dark.srt"
    captions.write_text(
        "1\n00:00:01,000 --> 00:00:03,000\nHello captions\n\n2\n00:00:03,500 --> 00:00:04,500\n<i>Bye</i>\n"
    )
    answer = await nemo.upload(dark_clip, captions)
    assert answer.status_code == 200, answer.text
    kinds = [f["file_type"] for f in answer.json()["data"]["files"]]
    assert kinds == ["video", "subtitle"]
    lines = [s for t in nemo.draft["t"] if t["tt"] == 7 for s in t["sg"]]
    assert [(s["m"]["start"], s["d"], s["m"]["text"]) for s in lines] == [
        (1000, 2000, "Hello captions"),
        (3500, 1000, "Bye"),
    ]
    with_captions = decode_frames(await nemo.exported(), 320, 240)  # full size: caption strokes are thin
    assert "2 lines" in await nemo.say("remove the captions")
    without = decode_frames(await nemo.exported(), 320, 240)
    bottom = (0.75, 1.0)
    at = round(2.0 * FPS)
    assert with_captions.bright(at, bottom) > 20
    assert without.bright(at, bottom) == 0
    assert with_captions.bright(round(0.5 * FPS)) == 0  # not before its time
    assert "2 captions" in await nemo.say("add the captions back")


async def test_images_become_a_slideshow_joined_with_the_clip(nemo: Nemo, still: Path, dark_clip: Path) -> None:
    await nemo.upload(still, still, dark_clip)
    assert "2 s each" in await nemo.say("slideshow with 2 seconds per image")
    assert "3 clips play one after another" in await nemo.say("join the clips in order")
    out = await nemo.exported()
    info = await probe(out)
    assert info is not None
    assert info.duration == pytest.approx(2 + 2 + 5, abs=FRAME)
    assert info.has_audio
    frames = decode_frames(out)
    assert frames.mean(round(1.0 * FPS)) > 40  # the pattern image
    assert frames.mean(round(6.0 * FPS)) < 5  # the black clip


async def test_fades_mute_and_resolution(nemo: Nemo, speech_clip: Path) -> None:
    await nemo.upload(speech_clip)
    await nemo.say("fade in and out, mute the sound")
    out = await nemo.exported(output={"resolution": "360p"})
    info = await probe(out)
    assert info is not None
    assert (info.width, info.height) == (480, 360)
    frames = decode_frames(out)
    assert frames.mean(0) < 10 < frames.mean(round(4.5 * FPS))
    assert frames.mean(len(frames.data) - 1) < 10
    assert rms_db(decode_pcm(out), 1.5, 2.5, 48000) < -60


# -- refusals, in plain words -------------------------------------------------------------------------------


async def test_a_corrupt_upload_gets_a_clear_error(nemo: Nemo, media: Path) -> None:
    broken = media / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    answer = await nemo.upload(broken)
    assert answer.status_code == 400
    assert answer.json() == {
        "code": 4001,
        "message": "could not read broken.mp4: the file is damaged or not a format FFmpeg can read",
    }
    junk = media / "notes.srt"
    junk.write_text("this is not a captions file")
    answer = await nemo.upload(junk)
    assert answer.status_code == 400
    assert "no captions found" in answer.json()["message"]
    assert nemo.draft == {"t": [], "m": {}}
    assert list(nemo.server.state.sessions[nemo.session_id].folder.iterdir()) == []


async def test_a_render_that_cannot_read_its_input_fails_plainly(nemo: Nemo, dark_clip: Path) -> None:
    await nemo.upload(dark_clip)
    stored = next(nemo.server.state.sessions[nemo.session_id].folder.iterdir())
    stored.write_bytes(b"garbage" * 100)  # damaged after the upload
    job = await nemo.export()
    assert (job["status"], job["error"]) == (
        "failed",
        'could not read "dark": the file is damaged or not a format FFmpeg can read',
    )
    elsewhere = json.loads(json.dumps(nemo.draft).replace(nemo.session_id, "1234"))
    job = await nemo.export(draft=elsewhere)
    assert job["error"] == '"dark" is not on this server: upload it here before exporting'


async def test_ffmpeg_failures_are_reported_without_ffmpegs_words(
    tmp_path: Path, dark_clip: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_build = build_graph

    def broken_build(*args: Any, **kwargs: Any) -> RenderGraph:
        graph = real_build(*args, **kwargs)
        graph.graph = graph.graph.replace("format=yuv420p[vout]", "no_such_filter[vout]")
        return graph

    monkeypatch.setattr(render_module, "build_graph", broken_build)
    renderer = FFmpegRenderer(RenderSettings(default_resolution="240p", x264_preset="ultrafast"), tmp_path)
    draft = Draft.model_validate({"t": [{"tt": 0, "sg": [{"d": 1000, "m": {"src": "u", "in": 0, "out": 1000}}]}]})
    with pytest.raises(RenderError) as caught:
        await renderer.render(draft, {"u": dark_clip}, tmp_path / "out.mp4", lambda _: None)
    assert str(caught.value) == "render failed: FFmpeg could not make the video from this timeline"
    assert "no_such_filter" in caplog.text  # FFmpeg's own words go to the log only
    assert list(tmp_path.iterdir()) == []  # no partial output or work files left


async def test_progress_comes_from_ffmpeg_and_ends_at_one(tmp_path: Path, dark_clip: Path) -> None:
    renderer = FFmpegRenderer(RenderSettings(default_resolution="240p", x264_preset="ultrafast"), tmp_path)
    draft = Draft.model_validate(
        {"t": [{"tt": 0, "sg": [{"d": 5000, "m": {"src": "u", "in": 0, "out": 5000, "kind": "video"}}]}], "m": {}}
    )
    seen: list[float] = []
    result = await renderer.render(draft, {"u": dark_clip}, tmp_path / "out.mp4", seen.append)
    assert result.duration == pytest.approx(5.0, abs=FRAME)
    assert seen == sorted(seen)
    assert seen[-1] == 1.0
    assert any(0 < value < 1 for value in seen)  # at least one report read from -progress


# -- uploads by URL -------------------------------------------------------------------------------------------


@pytest.fixture
async def file_host(dark_clip: Path) -> AsyncIterator[str]:
    async def clip(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(dark_clip)

    async def hop(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/clip.mp4")

    app = web.Application()
    app.router.add_get("/clip.mp4", clip)
    app.router.add_get("/hop", hop)
    async with serving(app) as base:
        yield base


async def upload_urls(nemo: Nemo, *urls: str) -> httpx.Response:
    return await nemo.http.post(
        f"/api/upload-video/nemo_agent/me/{nemo.session_id}",
        json={"urls": list(urls), "source_type": "url"}, headers=nemo.headers,
    )  # fmt: skip


async def test_private_addresses_are_refused_by_default(nemo: Nemo, file_host: str) -> None:
    assert nemo.server.config.allow_private_urls is False
    port = file_host.rsplit(":", 1)[1]
    for url in (
        f"{file_host}/clip.mp4", f"http://localhost:{port}/clip.mp4", "http://10.1.2.3/a.mp4",
        "http://[::1]/a.mp4", "http://169.254.169.254/latest/meta-data.mp4", "http://192.168.0.1/a.mp4",
        # Multicast, and the IPv6 forms that wrap an IPv4 address: NAT64 (well-known and local-use), 6to4,
        # IPv4-mapped and -compatible, Teredo; deprecated site-local; a public IPv4 behind NAT64 or 6to4 too.
        "http://224.0.0.1/a.mp4", "http://239.255.255.250/a.mp4", "http://[ff02::1]/a.mp4", "http://[ff0e::1]/a.mp4",
        "http://[64:ff9b::7f00:1]/a.mp4", "http://[64:ff9b::a9fe:a9fe]/a.mp4", "http://[64:ff9b::808:808]/a.mp4",
        "http://[64:ff9b:1::a00:1]/a.mp4", "http://[2002:7f00:1::]/a.mp4", "http://[2002:c0a8:1::1]/a.mp4",
        "http://[2002:808:808::1]/a.mp4", "http://[::ffff:127.0.0.1]/a.mp4", "http://[::ffff:10.0.0.1]/a.mp4",
        "http://[::127.0.0.1]/a.mp4", "http://[::a00:1]/a.mp4", "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/a.mp4",
        "http://[2001::1]/a.mp4", "http://[fec0::1]/a.mp4", "http://[fe80::1%25lo]/a.mp4", "http://0.0.0.0/a.mp4",
        "http://[::]/a.mp4", "http://100.64.0.1/a.mp4", "http://240.0.0.1/a.mp4", "http://2130706433/a.mp4",
    ):  # fmt: skip
        answer = await upload_urls(nemo, url)
        assert answer.status_code == 400, url
        assert answer.json()["code"] == 4003
        assert "not a public address" in answer.json()["message"], url
    for url in ("file:///etc/passwd", "ftp://example.com/a.mp4"):
        answer = await upload_urls(nemo, url)
        assert answer.json() == {"code": 4003, "message": "could not download: only http and https URLs can be fetched"}
    assert nemo.draft == {"t": [], "m": {}}
    with pytest.raises(OSError, match="non-public"):
        await PublicResolver().resolve("localhost", 80)
    for text in ("8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"):
        assert is_public_address(ipaddress.ip_address(text)), text


@pytest.mark.parametrize("options", [{"allow_private_urls": True}])
async def test_private_addresses_when_allowed_and_redirects_followed(nemo: Nemo, file_host: str) -> None:
    answer = await upload_urls(nemo, f"{file_host}/hop")
    assert answer.status_code == 200, answer.text
    (info,) = answer.json()["data"]["files"]
    assert (info["file_type"], info["duration"]) == ("video", pytest.approx(5.0, abs=0.1))


# -- disk ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [{"max_disk_mb": 1}])
async def test_disk_use_is_bounded_oldest_idle_session_first(nemo: Nemo, media: Path) -> None:
    sound = media / "tone.wav"  # 3 s of 48 kHz 16-bit stereo: 576 kB
    _run_ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:sample_rate=48000:duration=3", "-ac", "2", str(sound))
    first = nemo.session_id
    assert (await nemo.upload(sound)).status_code == 200
    second_session = await nemo.http.post(
        "/api/tasks/me/with-session/nemo_agent", json={"task_name": "q"}, headers=nemo.headers
    )
    nemo.session_id = second_session.json()["data"]["session_id"]
    assert (await nemo.upload(sound)).status_code == 200
    # The first session was the least recently used and idle: it made room for the second.
    assert first not in nemo.server.state.sessions
    gone = await nemo.http.get(f"/api/state/nemo_agent/me/{first}/latest", headers=nemo.headers)
    assert (gone.status_code, gone.json()["code"]) == (404, 1002)
    assert not (nemo.server.config.data_dir / "sessions" / first).exists()
    # A file that cannot fit even then is refused plainly.
    big = media / "long.wav"
    _run_ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:sample_rate=48000:duration=7", "-ac", "2", str(big))
    answer = await nemo.upload(big)
    assert (answer.status_code, answer.json()["code"]) == (507, 507)
    assert "not enough space" in answer.json()["message"]
