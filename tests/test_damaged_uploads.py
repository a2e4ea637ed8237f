"""Damaged and truncated uploads, told honestly: a file cut short is kept to the part that plays, with a
warning giving both lengths, and every later answer (the draft, /status, the agent's replies, the export)
uses that length; a header over garbage and a file that is no video at all are refused in plain words,
never with a list of formats that includes the file's own."""

from __future__ import annotations

import asyncio
import io
import random
import stat
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from adapters.console import ConsoleReplies
from bot.nemo.auth import MemoryIdentityStore
from bot.nemo.client import NemoClient
from bot.nemo.errors import UnsupportedFileType
from bot.nemo.uploads import UploadSource
from localnemo.media import probe, usable_duration
from localnemo.testing import TestLocalNemo
from tests.conftest import Bot, fast_localnemo_config, fast_settings, ffmpeg_exe
from tests.test_console_e2e import said, say

FPS = 25
SECONDS = 6.0
FRAME = 1 / FPS


def make_clip(out: Path, *, seconds: float = SECONDS, size: str = "160x120") -> Path:
    """A real H.264/AAC clip; MP4 and MOV with their index first (as phones and web downloads have it), so
    that a copy cut short still has its header and says it lasts ``seconds``."""
    faststart = ["-movflags", "+faststart"] if out.suffix in (".mp4", ".mov") else []
    subprocess.run(
        [
            ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", f"testsrc=size={size}:rate={FPS}",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=22050",
            "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-g", str(FPS), "-pix_fmt", "yuv420p",
            "-c:a", "aac", *faststart, str(out),
        ],
        check=True,
    )  # fmt: skip
    return out


def repeated(source: Path, out: Path, times: int) -> Path:
    """``source`` played ``times`` times in a row, copied (not encoded again)."""
    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-stream_loop", str(times - 1),
         "-i", str(source), "-c", "copy", str(out)],
        check=True,
    )  # fmt: skip
    return out


def make_unindexed_mp3(out: Path, *, loud_first: bool = False) -> Path:
    """8 s of VBR MP3 without a Xing header: 3 s of a quiet tone and 5 s of noise (or 5 s of noise, then 3 s of
    the tone): FFmpeg guesses its length from the first frames' bitrate, too long (or too short)."""
    quiet, loud = "sine=frequency=440:duration=3,volume=0.01", "anoisesrc=duration=5"
    first, second = (loud, quiet) if loud_first else (quiet, loud)
    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", first, "-f", "lavfi",
         "-i", second, "-filter_complex", "[0][1]concat=n=2:v=0:a=1", "-c:a", "libmp3lame", "-q:a", "2",
         "-write_xing", "0", str(out)],
        check=True,
    )  # fmt: skip
    return out


def cut_at(source: Path, out: Path, share: float) -> Path:
    data = source.read_bytes()
    out.write_bytes(data[: int(len(data) * share)])
    return out


def decoded_seconds(path: Path) -> float:
    """How much picture FFmpeg really decodes from a file: its decoded frames, counted."""
    result = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-v", "quiet", "-i", str(path), "-map", "0:v:0", "-f", "framecrc", "-"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    frames = [line for line in result.stdout.splitlines() if line.startswith("0,")]
    return len(frames) / FPS


def console(tmp_path: Path) -> ConsoleReplies:
    return ConsoleReplies(io.StringIO(), tmp_path / "out", edit_interval_seconds=0)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("damaged")


@pytest.fixture(scope="module")
def whole_mp4(media: Path) -> Path:
    return make_clip(media / "whole.mp4")


# -- cut short: kept to what plays, and said so -------------------------------------------------------------


async def test_a_clip_cut_at_40_percent_is_kept_to_what_plays_in_every_answer_and_the_export(
    bot: Bot, localnemo: TestLocalNemo, whole_mp4: Path, tmp_path: Path
) -> None:
    assert bot.engine is not None
    cut = cut_at(whole_mp4, tmp_path / "holiday.mp4", 0.4)
    plays = decoded_seconds(cut)
    assert 1.0 < plays < SECONDS - 1  # the test's premise: a good part of the clip is gone
    replies = console(tmp_path)

    await say(bot.engine, replies, f"/upload {cut}")
    upload_reply = said(replies)
    assert "Got holiday.mp4" in upload_reply
    warning = next(line for line in upload_reply.splitlines() if "is damaged" in line)
    assert "⚠️ holiday.mp4 is damaged: only the first " in warning
    usable = float(warning.split("only the first ", 1)[1].split(" s", 1)[0])
    assert f"of {SECONDS:.1f} s can be used" in warning
    assert usable == pytest.approx(plays, abs=2 * FRAME + 0.05)

    # The draft holds that length, /status shows it, and the agent speaks of it.
    session = next(iter(localnemo.state.sessions.values()))
    (segment,) = session.draft.t[0].sg
    assert segment.d == pytest.approx(plays * 1000, abs=2 * FRAME * 1000)
    await say(bot.engine, replies, "/status")
    assert f"(0–{usable:g} s)" in said(replies)
    await say(bot.engine, replies, "keep the first 30 seconds")
    assert f"The video is {usable:g} s long, so that keeps all of it." in said(replies)
    assert f"{SECONDS:g} s long" not in said(replies)

    # The export is as long as what plays.
    await say(bot.engine, replies, "export")
    assert len(replies.videos) == 1
    exported = await probe(replies.videos[0])
    assert exported is not None
    assert exported.duration is not None
    assert exported.duration == pytest.approx(plays, abs=2 * FRAME + 0.05)


@pytest.mark.parametrize("suffix", [".mov", ".mkv"])
async def test_a_mov_or_mkv_cut_short_is_answered_with_the_length_that_plays(
    nemo: NemoClient, localnemo: TestLocalNemo, media: Path, tmp_path: Path, suffix: str
) -> None:
    whole = make_clip(media / f"whole{suffix}")
    cut = cut_at(whole, tmp_path / f"take{suffix}", 0.4)
    plays = decoded_seconds(cut)
    account = nemo.account("tests:damaged")
    session_id = (await account.create_session("project", "en")).session_id
    (uploaded,) = (await account.upload_files(session_id, [UploadSource.from_path(cut)])).files
    assert uploaded.duration == pytest.approx(plays, abs=2 * FRAME + 0.05)
    assert uploaded.warning == (
        f"take{suffix} is damaged: only the first {uploaded.duration:.1f} s of {SECONDS:.1f} s can be used. That "
        "part is on the timeline; send the whole file again to use the rest."
    )
    # What is kept is a whole file: it plays to its end without an error, and says how long it is.
    stored = localnemo.state.sessions[session_id].folder / str(uploaded.cdn_url).rsplit("/", 1)[1]
    info = await probe(stored)
    assert info is not None
    assert info.duration == pytest.approx(uploaded.duration, abs=0.01)
    check = await usable_duration(stored)
    assert check is not None
    assert check.problems == ""


async def test_a_local_file_cut_short_is_kept_in_part_and_the_users_own_file_is_untouched(
    http: httpx.AsyncClient, whole_mp4: Path, tmp_path: Path
) -> None:
    # The embedding bot names files by their path; an owner-only file is hard-linked, not copied. The part
    # that plays goes into a new file: the user's file keeps every byte, and its mode.
    own = cut_at(whole_mp4, tmp_path / "mine.mp4", 0.4)
    own.chmod(0o600)
    before = own.read_bytes()
    config = fast_localnemo_config(tmp_path / "nemo", local_files_key="the-key")
    async with TestLocalNemo(config) as server:
        nemo = NemoClient(http, fast_settings(server.base_url), MemoryIdentityStore(), local_files_key="the-key")
        account = nemo.account("console:local")
        session_id = (await account.create_session("项目", "zh")).session_id
        (uploaded,) = (await account.upload_files(session_id, [UploadSource.from_path(own)])).files
        folder = server.state.sessions[session_id].folder
        (stored,) = folder.iterdir()
    assert uploaded.duration == pytest.approx(decoded_seconds(own), abs=2 * FRAME + 0.05)
    assert uploaded.warning is not None
    said_in_chinese = f"mine.mp4 已损坏：{SECONDS:.1f} 秒中只有前 {uploaded.duration:.1f} 秒可以使用。"
    assert uploaded.warning.startswith(said_in_chinese)
    assert stored.stat().st_ino != own.stat().st_ino
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert own.read_bytes() == before
    assert stat.S_IMODE(own.stat().st_mode) == 0o600


async def test_a_clip_that_breaks_off_before_a_second_is_refused_plainly(
    nemo: NemoClient, whole_mp4: Path, tmp_path: Path
) -> None:
    # The header is kept; the data stops inside the first second.
    data = whole_mp4.read_bytes()
    mdat = data.find(b"mdat")
    short = tmp_path / "short.mp4"
    short.write_bytes(data[: mdat + 4 + (len(data) - mdat) // 20])
    plays = decoded_seconds(short)
    assert 0 < plays < 1.0
    account = nemo.account("tests:damaged")
    session_id = (await account.create_session("project", "en")).session_id
    with pytest.raises(UnsupportedFileType) as refused:
        await account.upload_files(session_id, [UploadSource.from_path(short)])
    message = refused.value.message
    assert message.startswith("could not read short.mp4: the file is damaged: it breaks off after ")
    assert message.endswith(f" s of {SECONDS:.1f} s, too little to use")


@pytest.mark.parametrize("loud_first", [False, True], ids=["guess-too-long", "guess-too-short"])
async def test_a_whole_mp3_whose_header_length_is_a_guess_gets_its_real_length_and_no_warning(
    nemo: NemoClient, tmp_path: Path, loud_first: bool
) -> None:
    # A VBR MP3 without a Xing header: FFmpeg guesses its length from the first frames' bitrate (quiet first,
    # loud later: the guess is far too long; loud first: far too short). Nothing is wrong with the file.
    song = await asyncio.to_thread(make_unindexed_mp3, tmp_path / "song.mp3", loud_first=loud_first)
    guessed = await probe(song)
    assert guessed is not None
    assert guessed.duration is not None
    assert (guessed.duration < 6) if loud_first else (guessed.duration > 10), guessed.duration
    account = nemo.account("tests:damaged")
    session_id = (await account.create_session("project", "en")).session_id
    (uploaded,) = (await account.upload_files(session_id, [UploadSource.from_path(song)])).files
    assert uploaded.duration == pytest.approx(8.0, abs=0.1)
    assert uploaded.warning is None


# -- refused in plain words, never with a list of formats ---------------------------------------------------


async def test_a_header_over_garbage_is_refused_with_a_plain_reason(
    bot: Bot, nemo: NemoClient, whole_mp4: Path, tmp_path: Path
) -> None:
    assert bot.engine is not None
    data = bytearray(whole_mp4.read_bytes())
    body = data.find(b"mdat") + 4
    data[body:] = random.Random(4).randbytes(len(data) - body)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(bytes(data))
    account = nemo.account("tests:damaged")
    session_id = (await account.create_session("project", "en")).session_id
    with pytest.raises(UnsupportedFileType) as refused:
        await account.upload_files(session_id, [UploadSource.from_path(garbage)])
    why = "the file is damaged: not one picture in it can be decoded"
    assert refused.value.message == f"could not read garbage.mp4: {why}"
    replies = console(tmp_path)
    await say(bot.engine, replies, f"/upload {garbage}")
    text = said(replies)
    assert f"❌ Could not read garbage.mp4: {why}." in text
    assert "Accepted formats" not in text
    assert "mp4, mov" not in text


@pytest.mark.parametrize(
    ("name", "content", "what"),
    [
        ("report.mp4", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + b"0" * 2000, "it is a PDF document, not a video"),
        ("notes.mp4", b"Shopping list: milk, eggs, bread\n" * 50, "it is a text file, not a video"),
        ("page.mov", b"<!DOCTYPE html><html><body>" + b"x" * 2000, "it is a web page (HTML), not a video"),
        ("photo.mp4", b"\x89PNG\r\n\x1a\n" + bytes(2000), "it is a PNG image, not a video"),
        ("noise.mp4", bytes(range(256)) * 8, "it is not a video (its content is no format this editor reads)"),
    ],
)
async def test_a_file_that_is_no_video_is_told_what_it_is_without_a_list_of_formats(
    bot: Bot, tmp_path: Path, name: str, content: bytes, what: str
) -> None:
    assert bot.engine is not None
    path = tmp_path / name
    path.write_bytes(content)
    replies = console(tmp_path)
    await say(bot.engine, replies, f"/upload {path}")
    text = said(replies)
    assert f"❌ Could not read {name}: {what}." in text
    assert "Accepted formats" not in text
    assert "mp4, mov" not in text


# -- a healthy upload pays little for the check --------------------------------------------------------------


async def test_a_healthy_upload_is_not_changed_and_its_check_is_quick(
    nemo: NemoClient, localnemo: TestLocalNemo, whole_mp4: Path, tmp_path: Path
) -> None:
    account = nemo.account("tests:damaged")
    session_id = (await account.create_session("project", "en")).session_id
    (uploaded,) = (await account.upload_files(session_id, [UploadSource.from_path(whole_mp4)])).files
    assert uploaded.warning is None
    assert uploaded.duration == pytest.approx(SECONDS, abs=0.05)
    stored = localnemo.state.sessions[session_id].folder / str(uploaded.cdn_url).rsplit("/", 1)[1]
    assert stored.read_bytes() == whole_mp4.read_bytes()  # kept as sent: no copy, no remux
    # The pass reads packets and decodes none: on a 60 s 1080p file (2 s repeated without encoding again) it
    # takes a fraction of a second (0.07 s measured on a quiet machine), a small share of
    # an upload of that size. The bound leaves room for a busy machine.
    two_seconds = await asyncio.to_thread(make_clip, tmp_path / "hd2.mp4", seconds=2, size="1920x1080")
    hd = await asyncio.to_thread(repeated, two_seconds, tmp_path / "hd60.mp4", 30)
    started = time.monotonic()
    usable = await usable_duration(hd)
    took = time.monotonic() - started
    header = await probe(hd)
    assert header is not None
    assert header.duration is not None
    assert header.duration > 59
    assert usable is not None
    assert usable.seconds == pytest.approx(header.duration, abs=0.1)
    assert usable.problems == ""
    assert took < 3.0, f"the usable-length pass took {took:.2f} s on a 60 s 1080p file"
