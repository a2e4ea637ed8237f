"""The sound of every export, as the platforms want it: −14 LUFS integrated, true peak at or below −1 dBTP,
music ducked under speech by the amount the reply states, and nothing said of ducking where nobody speaks.

Every figure is measured on the exported file with FFmpeg's ``ebur128`` filter (``peak=true``), the way the
platforms measure it.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.nemo.timeline_model import Draft
from localnemo.graph import Source, build_graph
from localnemo.loudness import (
    CEILING_DBTP,
    Leveling,
    Loudness,
    corrected,
    leveling_for,
    needs_recheck,
)
from localnemo.media import ffmpeg_exe, probe
from localnemo.music import MUSIC_FILE, bundled_music, is_whole
from tests.media_truth import loudness
from tests.test_localnemo_engine import FPS, Nemo, decode_pcm, rms_db, running_nemo
from tests.waiting import wait_for

TARGET = -14.0
TRUE_PEAK_LIMIT = -1.0


def _run_ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def measured(path: Path) -> Loudness:
    """As the platforms measure it (``tests/media_truth.py``): the true peak, a mono sound on two speakers."""
    integrated, peak = loudness(path)
    return Loudness(integrated, peak)


def clip(out: Path, sound: str, seconds: float = 8, *, stereo: bool = False) -> Path:
    """A small moving picture with ``sound`` (an aevalsrc expression of t)."""
    _run_ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=s=320x240:r={FPS}:d={seconds}",
        "-f", "lavfi", "-i", f"aevalsrc='{sound}':s=48000:d={seconds}",
        "-ac", "2" if stereo else "1",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "192k",
        "-shortest", str(out),
    )  # fmt: skip
    return out


# "Speech": a 3 kHz tone in syllables (four a second, silent between them, as a voice is), in 1–3 s and
# 5–7 s; the bundled music stays under 800 Hz, so a low-pass filter hears only the music.
SPEECH_SPANS = "(between(t,1,3)+between(t,5,7))"


def speech(level: float) -> str:
    return f"{level}*sin(2*PI*3000*t)*pow(max(0,sin(2*PI*4*t)),0.5)*{SPEECH_SPANS}"


@pytest.fixture
async def nemo(tmp_path: Path) -> AsyncIterator[Nemo]:
    async with running_nemo(tmp_path / "nemo", "sound-tests") as running:
        yield running


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("export-sound")


@pytest.fixture(scope="module")
def quiet_film(media: Path) -> Path:
    """Speech far below the platforms' level (about −31 LUFS), with pauses to cut."""
    return clip(media / "quiet.mp4", speech(0.04))


@pytest.fixture(scope="module")
def loud_film(media: Path) -> Path:
    """A square-ish wave at full scale in stereo: its true peak is over 0 dBTP before the export."""
    return clip(media / "loud.mp4", f"0.99*sgn(sin(2*PI*220*t))*{SPEECH_SPANS}", stereo=True)


def assert_platform_level(out: Path) -> Loudness:
    result = measured(out)
    assert result.integrated is not None
    assert result.true_peak is not None
    assert result.integrated == pytest.approx(TARGET, abs=0.5), result
    assert result.true_peak <= TRUE_PEAK_LIMIT, result
    return result


async def test_a_cut_only_export_of_a_quiet_film_is_at_minus_14_lufs(nemo: Nemo, quiet_film: Path) -> None:
    before = measured(quiet_film)
    assert before.integrated is not None
    assert before.integrated < -28
    await nemo.upload(quiet_film)
    assert "removed" in await nemo.say("cut the pauses")
    out = await nemo.exported()
    assert_platform_level(out)
    info = await probe(out)
    assert info is not None
    assert info.mono


async def test_an_export_with_music_is_at_minus_14_lufs_with_its_true_peak_under_minus_1(
    nemo: Nemo, quiet_film: Path
) -> None:
    await nemo.upload(quiet_film)
    await nemo.say("add background music")
    assert_platform_level(await nemo.exported())


async def test_a_loud_stereo_film_is_brought_down_and_its_true_peak_held(nemo: Nemo, loud_film: Path) -> None:
    before = measured(loud_film)
    assert before.true_peak is not None
    assert before.true_peak > 0
    await nemo.upload(loud_film)
    out = await nemo.exported()
    assert_platform_level(out)
    info = await probe(out)
    assert info is not None
    assert info.has_audio
    assert not info.mono


async def test_a_silent_film_stays_silent(nemo: Nemo, media: Path) -> None:
    silent = media / "silent.mp4"
    _run_ffmpeg("-f", "lavfi", "-i", f"testsrc2=s=320x240:r={FPS}:d=3", "-c:v", "libx264", "-preset", "ultrafast",
                "-pix_fmt", "yuv420p", str(silent))  # fmt: skip
    await nemo.upload(silent)
    out = await nemo.exported()
    result = measured(out)
    assert result.integrated is None or result.integrated <= -69  # nothing was amplified into noise


@pytest.mark.parametrize("song", [None, "stereo"], ids=["bundled-loop-mono-export", "own-stereo-song"])
async def test_music_dips_under_speech_by_the_amount_the_reply_states(
    nemo: Nemo, media: Path, song: str | None
) -> None:
    film = clip(media / "talk.mp4", speech(0.1), seconds=9)
    await nemo.upload(film)
    if song is not None:
        # A stereo song (under 800 Hz, like the loop) makes the export stereo; the mono voice keeps its level.
        path = media / "song.wav"
        _run_ffmpeg("-f", "lavfi", "-i", "sine=frequency=330:sample_rate=44100:duration=12", "-ac", "2", str(path))
        await nemo.upload(path)
    reply = await nemo.say("add background music")
    stated = re.search(r"about (\d+) dB", reply)
    assert stated is not None, reply
    out = await nemo.exported()
    rate = 8000
    music_only = decode_pcm(out, rate, "lowpass=f=1000,lowpass=f=1000,lowpass=f=1000")
    # Inside each spoken part and each pause, clear of the attack, the release and the music's fade-out.
    under_speech = [rms_db(music_only, a, b, rate) for a, b in ((1.5, 2.8), (5.5, 6.8))]
    between = [rms_db(music_only, a, b, rate) for a, b in ((3.6, 4.8), (7.5, 7.95))]
    dip = sum(between) / 2 - sum(under_speech) / 2
    assert dip == pytest.approx(int(stated.group(1)), abs=2), (under_speech, between, reply)


async def test_a_slideshow_without_speech_is_not_told_the_music_dips(nemo: Nemo, media: Path) -> None:
    photos = []
    for index, colour in enumerate(("red", "blue")):
        photo = media / f"photo{index}.png"
        _run_ffmpeg("-f", "lavfi", "-i", f"color=c={colour}:s=320x240", "-frames:v", "1", str(photo))
        photos.append(photo)
    await nemo.upload(*photos)
    reply = await nemo.say("add background music")
    assert "background music" in reply
    assert "dB" not in reply, reply
    assert "speaks" not in reply, reply
    assert_platform_level(await nemo.exported())


# -- the measuring run and the gain, without rendering ---------------------------------------------------------


def test_the_measuring_run_reads_only_the_sound(tmp_path: Path, media: Path, quiet_film: Path) -> None:
    """An image and a picture's video stream are not opened to measure the sound."""
    photo = media / "measure-photo.png"
    _run_ffmpeg("-f", "lavfi", "-i", "color=c=green:s=320x240", "-frames:v", "1", str(photo))
    photo_info = asyncio.run(probe(photo))
    film_info = asyncio.run(probe(quiet_film))
    assert photo_info is not None
    assert film_info is not None
    sources = {"photo": Source(photo, photo_info, "photo"), "film": Source(quiet_film, film_info, "film")}
    draft = Draft.model_validate(
        {
            "t": [
                {"tt": 0, "sg": [
                    {"d": 2000, "m": {"src": "photo", "in": 0, "out": 2000}},
                    {"d": 2000, "m": {"src": "film", "in": 1000, "out": 3000}},
                    {"d": 2000, "m": {"src": "film", "in": 5000, "out": 7000}},
                ]},
            ]
        }
    )  # fmt: skip
    graph = build_graph(draft, sources, default_resolution="240p", workdir=tmp_path, music=None, font=None)
    assert [options[-1] for options in graph.measuring_inputs] == [str(quiet_film)]
    measuring = graph.measuring()
    assert re.search(r"\[\d+:v", measuring) is None
    assert "[0:a" in measuring
    # The film is mono, so the export is: measured as it plays on two speakers.
    assert graph.mono
    assert measuring.endswith("[amix]ebur128=peak=true:dualmono=true:framelog=quiet[measured]")
    leveled = graph.measuring("volume=3dB")
    assert leveled.endswith("[amix]volume=3dB,ebur128=peak=true:dualmono=true:framelog=quiet[measured]")


@pytest.mark.parametrize(
    ("integrated", "true_peak", "expected"),
    [
        (-34.0, -25.0, Leveling(gain_db=20.0, limit=False)),  # quiet: brought up, no peak near the ceiling
        (-20.0, -3.0, Leveling(gain_db=6.0, limit=True)),  # the gain would lift a peak over the ceiling
        (-8.0, 6.0, Leveling(gain_db=-6.0, limit=True)),  # loud: brought down, still over the ceiling
        (-8.0, 1.0, Leveling(gain_db=-6.0, limit=False)),  # loud: brought down, and so under the ceiling
        (-70.0, None, Leveling(gain_db=0.0, limit=False)),  # silence is left silent
        (-95.0, -80.0, Leveling(gain_db=0.0, limit=False)),
    ],
)
def test_one_gain_to_minus_14_and_the_limiter_only_when_needed(
    integrated: float, true_peak: float | None, expected: Leveling
) -> None:
    assert leveling_for(Loudness(integrated, true_peak)) == expected


def test_without_a_measurement_the_limiter_still_holds_the_peaks() -> None:
    assert leveling_for(None) == Leveling(gain_db=0.0, limit=True)
    limiter = Leveling(0.0, True).filters(48000)
    assert "aresample=192000,alimiter=" in limiter
    assert limiter.endswith("aresample=48000")
    assert CEILING_DBTP < -1.0


# -- the bundled music loop --------------------------------------------------------------------------------------


async def test_the_music_loop_is_made_at_start_up_once_per_machine_outside_the_data_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    loop = tmp_path / "cache" / "localnemo" / MUSIC_FILE
    async with running_nemo(tmp_path / "nemo", "music-cache"):
        # Before anyone asks for music: the first export with music does not wait for it.
        await wait_for(loop.is_file, within=30, what="the music loop made at start-up")
    made = loop.stat().st_mtime_ns
    async with running_nemo(tmp_path / "other", "music-cache"):
        pass
    assert loop.stat().st_mtime_ns == made  # a second data folder uses the same file
    assert not list((tmp_path / "nemo").rglob("*.wav"))  # not in the data folder (nor its disk quota)
    assert not list((tmp_path / "other").rglob("*.wav"))


async def test_without_a_usable_cache_the_loop_is_made_in_the_data_folder(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder would be")
    path = await bundled_music(tmp_path / "assets", blocked / "localnemo")
    assert path == tmp_path / "assets" / MUSIC_FILE
    info = await probe(path)
    assert info is not None
    assert info.kind == "audio"
    assert info.mono


def test_where_the_limiter_holds_much_the_mix_is_measured_again_and_the_gain_corrected() -> None:
    quiet_speech = Loudness(integrated=-20.5, true_peak=-6.2)  # the quality recording: +6.5 dB lifts it 2.3 dB over
    level = leveling_for(quiet_speech)
    assert level.limit
    assert needs_recheck(quiet_speech, level)
    # Measured through the gain and the limiter it came out at -14.7: 0.7 dB more gain makes up for it.
    again = corrected(level, Loudness(integrated=-14.7, true_peak=-2.0))
    assert again.gain_db == pytest.approx(7.2)
    assert again.limit
    # Just over the ceiling: nothing measurable to make up, no second run.
    barely = Loudness(integrated=-31.8, true_peak=-19.2)
    assert not needs_recheck(barely, leveling_for(barely))
    assert not needs_recheck(None, leveling_for(None))


async def test_a_loop_removed_or_cut_short_is_made_again(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    loop = await bundled_music(tmp_path / "assets", cache)
    assert is_whole(loop)
    loop.write_bytes(loop.read_bytes()[:1000])  # cut short (a full disk, a killed copy)
    assert not is_whole(loop)
    assert is_whole(await bundled_music(tmp_path / "assets", cache))
    loop.unlink()  # a cache cleared
    assert is_whole(await bundled_music(tmp_path / "assets", cache))
