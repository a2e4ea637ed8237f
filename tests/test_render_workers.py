"""Render workers: localnemo with a PostgreSQL render queue (LOCALNEMO_QUEUE_DB) and ``nemobot render-worker``
processes; a worker SIGKILLed mid-render loses no render and makes none twice."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from localnemo.app import LocalNemo
from localnemo.config import LocalNemoConfig
from localnemo.housekeeping import MEDIA_UNUSED_SECONDS
from localnemo.renderqueue import QueuedSpeech, RenderQueue, ensure_schema
from localnemo.speech import LanguageNotAvailable
from tests.conftest import ROOT, assert_video, bot_process, fast_localnemo_config, ffmpeg_exe, wait_for
from tests.test_captions_speech import LIBRIVOX, make_speech_clip
from tests.test_localnemo_engine import running_nemo
from tests.test_localnemo_jobs import RENDER, export, finished, job, user_with_clip
from tests.test_localnemo_server import auth

# Long enough at 160p that a worker is caught mid-render; ultrafast keeps the whole test short.
CLIP_SECONDS = 20


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("workers") / "clip.mp4"
    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", "testsrc=size=160x120:rate=25",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=22050",
         "-t", str(CLIP_SECONDS), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-shortest", str(out)],
        check=True,
    )  # fmt: skip
    return out


def server_config(tmp_path: Path, queue_db: str, **overrides: Any) -> LocalNemoConfig:
    values: dict[str, Any] = {
        "queue_db": queue_db,
        "shared_dir": tmp_path / "shared",
        "default_resolution": "160p",
        "max_renders_per_user": 10,
    }
    values.update(overrides)
    return fast_localnemo_config(tmp_path / "server", **values)


def worker_env(tmp_path: Path, queue_db: str, name: str) -> dict[str, str]:
    return {
        "LOCALNEMO_QUEUE_DB": queue_db,
        "LOCALNEMO_SHARED_DIR": str(tmp_path / "shared"),
        "LOCALNEMO_DATA_DIR": str(tmp_path / name),
        "LOCALNEMO_RESOLUTION": "160p",
        "LOCALNEMO_X264_PRESET": "ultrafast",
        "LOCALNEMO_STALLED_SECONDS": "2",
        "NEMOBOT_LOG_LEVEL": "INFO",
    }


def encoding_children(pid: int) -> list[int]:
    """The FFmpeg processes of ``pid`` that encode a render (the run reporting ``-progress``; a probe or the
    loudness pass may come before it, and the result's probe after it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after its closing parenthesis.
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid and "ffmpeg" in comm:
            try:
                arguments = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"-progress" in arguments:
                found.append(int(entry.name))
    return found


def rows(queue_db: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(queue_db) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cursor:
        cursor.execute("SELECT * FROM localnemo_render_results")
        return {row["token"]: row for row in cursor.fetchall()}


def queue_jobs(queue_db: str) -> list[dict[str, Any]]:
    with psycopg.connect(queue_db) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cursor:
        cursor.execute("SELECT id, status, attempts, args->>'token' AS token FROM procrastinate_jobs")
        return cursor.fetchall()


async def test_two_workers_one_killed_mid_render_every_render_completes_once(
    tmp_path: Path, postgres_url: str, clip: Path
) -> None:
    renders = 4
    async with (
        LocalNemo(server_config(tmp_path, postgres_url)) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=30) as http,
        bot_process("render-worker", ROOT, worker_env(tmp_path, postgres_url, "worker-1")) as first,
        bot_process("render-worker", ROOT, worker_env(tmp_path, postgres_url, "worker-2")) as second,
    ):
        token, sid, draft = await user_with_clip(http, "alice", clip)
        for number in range(renders):
            answer = await export(http, token, sid, draft, f"render_{number}")
            assert answer.status_code == 200, answer.text
        workers = {first.process.pid: first, second.process.pid: second}

        def rendering() -> int | None:
            return next((pid for pid in workers if encoding_children(pid)), None)

        victim_pid = await wait_for(rendering, within=60, what="a worker's FFmpeg encoding",
                                    details=lambda: first.output[-2000:] + second.output[-2000:])
        os.kill(victim_pid, signal.SIGKILL)
        survivor = next(worker for pid, worker in workers.items() if pid != victim_pid)
        victim_name = f"{socket.gethostname()}-{victim_pid}"
        # Read after the kill: what the dead worker still holds is what it was rendering when it died.
        held = [row for row in rows(postgres_url).values() if row["worker"] == victim_name
                and row["status"] == "processing"]
        assert len(held) == 1, rows(postgres_url)

        jobs = [await finished(http, token, f"render_{number}", within=120) for number in range(renders)]
        assert [job["status"] for job in jobs] == ["completed"] * renders, jobs
        for number, job in enumerate(jobs):
            video = tmp_path / f"render_{number}.mp4"
            answer = await http.get(job["outputUrl"])
            assert answer.status_code == 200
            video.write_bytes(answer.content)
            await assert_video(video, seconds=CLIP_SECONDS)
        assert survivor.process.returncode is None, survivor.output[-3000:]

    # One result per render: each render's row names one file, and the shared folder holds exactly those
    # (the killed attempt's partial files were removed when its render was done again).
    results = rows(postgres_url)
    assert len(results) == renders
    assert all(row["status"] == "completed" for row in results.values())
    kept = sorted(path.name for path in (tmp_path / "shared" / "renders").iterdir() if path.suffix != ".srt")
    assert kept == sorted(row["output"] for row in results.values())
    # The killed worker's render was done again, by the other worker, as its second attempt.
    retried = results[held[0]["token"]]
    assert retried["worker"] == f"{socket.gethostname()}-{survivor.process.pid}"
    assert retried["attempts"] == 2
    assert retried["output"].endswith("-2.mp4")
    # Every other render was done once; one queue job per render, each succeeded.
    assert sorted(row["attempts"] for row in results.values()) == [1] * (renders - 1) + [2]
    queued = queue_jobs(postgres_url)
    assert sorted(job["token"] for job in queued) == sorted(results)
    assert {job["status"] for job in queued} == {"succeeded"}
    assert "not-logged" not in first.output + second.output


async def test_render_worker_without_a_queue_says_what_to_set(tmp_path: Path) -> None:
    async with bot_process("render-worker", tmp_path, {"LOCALNEMO_DATA_DIR": str(tmp_path / "w")}) as worker:
        assert await worker.ended() == 2
    assert "LOCALNEMO_QUEUE_DB is not set" in worker.stderr


def test_a_queue_db_that_is_not_postgresql_is_refused_without_repeating_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LOCALNEMO_QUEUE_DB", "mysql://user:secret-pass@db/renders")
    with pytest.raises(ValueError, match="LOCALNEMO_QUEUE_DB: must be a postgresql:// URL") as info:
        LocalNemoConfig.from_env(default_data_dir=tmp_path)
    assert "secret-pass" not in str(info.value)


async def test_queued_renders_wait_in_order_and_a_cancelled_one_leaves_the_queue(
    tmp_path: Path, postgres_url: str, sample_video: Path
) -> None:
    # No worker runs: every export waits in the queue, with its place in it, as without workers.
    async with (
        LocalNemo(server_config(tmp_path, postgres_url)) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=30) as http,
    ):
        token, sid, draft = await user_with_clip(http, "alice", sample_video)
        for number in range(2):
            assert (await export(http, token, sid, draft, f"render_{number}")).status_code == 200

        async def places() -> list[int] | None:
            jobs = [await job(http, token, f"render_{number}") for number in range(2)]
            found = [data.get("queuePosition") for data in jobs]
            return [1, 2] if found == [1, 2] and all(d["status"] == "pending" for d in jobs) else None

        await wait_for(places, within=30, what="both exports to wait in the queue, in order",
                       details=lambda: str(queue_jobs(postgres_url)))
        cancelled = await http.post(f"{RENDER}/render_0/cancel", headers=auth(token))
        assert cancelled.status_code == 200
        assert (await job(http, token, "render_0"))["error"] == "cancelled"

        async def moved_up() -> bool:
            return (await job(http, token, "render_1")).get("queuePosition") == 1

        await wait_for(moved_up, within=30, what="the other export to move up")
    statuses = {row["status"] for row in queue_jobs(postgres_url)}
    assert statuses == {"cancelled", "todo"}


async def test_shared_sources_that_no_render_needs_are_removed_once_unused_for_an_hour(
    tmp_path: Path, postgres_url: str, sample_video: Path
) -> None:
    # No worker runs: the export waits in the queue, naming its source in the shared folder.
    async with (
        LocalNemo(server_config(tmp_path, postgres_url)) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=30) as http,
    ):
        token, sid, draft = await user_with_clip(http, "alice", sample_video)
        assert (await export(http, token, sid, draft, "render_0")).status_code == 200
        await wait_for(lambda: queue_jobs(postgres_url), within=30, what="the render to be queued")
        media = tmp_path / "shared" / "media"
        (needed,) = list(media.iterdir())
        two_hours_ago = time.time() - 7200
        os.utime(needed, (two_hours_ago, two_hours_ago))
        stale = media / f"{'0' * 64}.mp4"  # a source of renders long finished
        stale.write_bytes(b"old clip")
        os.utime(stale, (two_hours_ago, two_hours_ago))
        recent = media / f"{'1' * 64}.mp4"  # shared a moment ago, for an export on its way in
        recent.write_bytes(b"new clip")
        queue = RenderQueue(postgres_url, tmp_path / "shared")
        await queue.on_startup(None)
        try:
            assert await queue.prune_media(MEDIA_UNUSED_SECONDS) == 1
            assert sorted(media.iterdir()) == sorted([needed, recent])
            # Once the render is not wanted, its source goes too.
            assert (await http.post(f"{RENDER}/render_0/cancel", headers=auth(token))).status_code == 200
            await wait_for(lambda: not any(j["status"] in ("todo", "doing") for j in queue_jobs(postgres_url)),
                           within=30, what="the render to leave the queue")
            assert await queue.prune_media(MEDIA_UNUSED_SECONDS) == 1
            assert list(media.iterdir()) == [recent]
        finally:
            await queue.on_cleanup(None)


# -- speech, recognised by the render workers -------------------------------------------------------------

needs_speech = pytest.mark.skipif(
    not (LIBRIVOX / "transcription").is_file(), reason="needs pocketsphinx-testdata (bash .ci/run installs it)"
)


@pytest.fixture(scope="module")
def reading(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_speech_clip(tmp_path_factory.mktemp("reading"))


def transcripts(queue_db: str) -> list[dict[str, Any]]:
    with psycopg.connect(queue_db) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cursor:
        cursor.execute("SELECT key, status, engine, worker FROM localnemo_transcripts")
        return cursor.fetchall()


@needs_speech
async def test_captions_from_speech_are_recognised_by_a_render_worker(
    tmp_path: Path, postgres_url: str, reading: Path
) -> None:
    options = {"queue_db": postgres_url, "shared_dir": tmp_path / "shared"}
    async with (running_nemo(tmp_path / "server", "speech-workers", **options) as nemo,
                bot_process("render-worker", tmp_path, worker_env(tmp_path, postgres_url, "worker")) as worker):
        await wait_for(lambda: "localnemo.worker.started" in worker.output, within=60, what="the worker",
                       details=lambda: worker.output[-2000:])
        assert (await nemo.upload(reading)).status_code == 200
        reply = await nemo.say("generate captions")
        assert "Captions from the speech" in reply, reply
        assert "pocketsphinx" in reply
        # The worker logs it just after it wrote the words.
        await wait_for(lambda: "localnemo.worker.transcribed" in worker.output, what="the worker's log line")
        (row,) = transcripts(postgres_url)
        assert (row["status"], row["engine"]) == ("completed", "pocketsphinx")
        assert row["worker"] not in (None, "server")
        assert worker.output.count("localnemo.worker.transcribe ") == 1


@needs_speech
async def test_a_transcription_no_worker_takes_is_done_by_the_server(
    tmp_path: Path, postgres_url: str, reading: Path
) -> None:
    await ensure_schema(postgres_url)
    queue = RenderQueue(postgres_url, tmp_path / "shared")
    await queue.on_startup(None)
    try:
        speech = QueuedSpeech(queue, "pocketsphinx", wait_seconds=0.3)
        words, engine = await speech.recognise(reading, "en")
        assert engine == "pocketsphinx"
        assert len(words) > 20
        (row,) = transcripts(postgres_url)
        assert (row["status"], row["worker"]) == ("completed", "server")
        # Its job left the queue: no worker will do it again later.
        assert not [j for j in queue_jobs(postgres_url) if j["status"] == "todo"]
        # A language nobody here can recognise says so, as without workers.
        with pytest.raises(LanguageNotAvailable):
            await speech.recognise(reading, "zh")
    finally:
        await queue.on_cleanup(None)
