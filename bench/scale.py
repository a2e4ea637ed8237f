"""Scale-out benchmark, in two parts.

Renders part: throughput of localnemo's render queue with one ``nemobot render-worker``
and with two, side by side.

A 720p30 test clip with sound is generated, a throwaway PostgreSQL is started (Debian's binaries, as the tests
do; or ``--db URL``), and for each worker count a fresh localnemo (in this process, LOCALNEMO_QUEUE_DB set)
gets N exports of the clip at 720p while that many ``nemobot render-worker`` processes render them. Timed from
the first export request to the last finished job; printed as renders per minute, and the ratio of two
workers to one.

By default each worker is pinned to a core of its own (``os.sched_setaffinity``; FFmpeg's threads follow it,
localnemo.render.usable_cores): two one-core workers against one, which is what adding a machine does. With
``--no-pin`` every worker may use every core, as on one shared machine, where a render already keeps both
cores of a 2-core machine busy and a second worker adds little.

Bot part: N chats at once (bench/concurrency.py's simulated users: upload, edit, export; its pieces are
reused) with the bot's storage in PostgreSQL (NEMOBOT_DB is the throwaway server's URL, or ``--db``), so
every export is a Procrastinate job in the same database, run by this process's queue worker as a Telegram
bot's would be (the chats are ``tg`` chats; the platform is simulated and answers at once). localnemo is a
subprocess (``nemobot serve-local``, instant "copy" renders: the renders part measures rendering). Waits
until every chat's message was handled and the job queue is empty, then prints messages per second, errors,
lost replies and peak RSS per process: this one (the bot), localnemo, PostgreSQL's backends (sampled).

    nice -n 19 .venv/bin/python bench/scale.py [--renders-only | --bot-only] [--renders 6] [--seconds 10]
        [--no-pin] [--chats 1000] [--deadline 1200] [--db URL]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import concurrency
import httpx
import psycopg
from concurrency import (
    ChatRun,
    LogCounter,
    MemoryReplies,
    cpu_seconds_of,
    localnemo,
    raise_fd_limit,
    run_chat,
    status_kb,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.config import BotSettings, NemoSettings
from bot.engine import Engine
from bot.messages import Button, Capabilities, DeliveryTarget, MessageHandle, Replies
from bot.nemo.client import NemoClient
from bot.queue import QueueSettings, open_job_queue
from bot.sessions import RepositoryIdentities
from localnemo.app import LocalNemo
from localnemo.config import LocalNemoConfig
from localnemo.media import ffmpeg_exe
from storage import open_repository

ROOT = Path(__file__).resolve().parents[1]
RENDER = "/api/render/proxy/lambda"
ATTRIBUTION = {"X-Skill-Source": "bench", "X-Skill-Version": "0", "X-Skill-Platform": "bench"}


@dataclass(frozen=True)
class RenderRun:
    workers: int
    renders: int
    seconds: float

    @property
    def per_minute(self) -> float:
        return self.renders / self.seconds * 60


def make_clip(path: Path, seconds: int) -> Path:
    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate=30:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=330:duration={seconds}",
         "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)],
        check=True,
    )  # fmt: skip
    return path


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[str]:
    """A PostgreSQL server of this run's own (as root it runs as the postgres user); its URL."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        raise SystemExit("needs PostgreSQL's server binaries (Debian package postgresql), or --db URL")
    bin_dir = found[-1].parent
    root = Path(tempfile.mkdtemp(prefix="nemobot-bench-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = root / "data"

    def run(*command: str) -> None:
        subprocess.run([*as_user, *command], check=True, capture_output=True)

    run(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
    run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o",
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")  # fmt: skip
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def new_schema(url: str, name: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        conn.execute(f"CREATE SCHEMA {name}")
    return f"{url}?options=-csearch_path%3D{name}"


def registered_workers(url: str) -> int:
    with psycopg.connect(url) as conn:
        found = conn.execute("SELECT to_regclass('procrastinate_workers') IS NOT NULL").fetchone()
        if found is None or not found[0]:
            return 0
        count = conn.execute("SELECT count(*) FROM procrastinate_workers").fetchone()
        return int(count[0]) if count is not None else 0


def start_worker(url: str, shared: Path, data_dir: Path, core: int | None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCALNEMO_", "NEMOBOT_"))}
    env.update({
        "PYTHONPATH": str(ROOT), "LOCALNEMO_QUEUE_DB": url, "LOCALNEMO_SHARED_DIR": str(shared),
        "LOCALNEMO_DATA_DIR": str(data_dir), "LOCALNEMO_RESOLUTION": "720p", "NEMOBOT_LOG_LEVEL": "WARNING",
    })  # fmt: skip

    def pin() -> None:
        if core is not None:
            os.sched_setaffinity(0, {core})

    return subprocess.Popen([sys.executable, "-m", "nemobot", "render-worker"], env=env, preexec_fn=pin)


async def timed_renders(url: str, workdir: Path, clip: Path, workers: int, renders: int, pin: bool) -> RenderRun:
    shared = workdir / "shared"
    config = LocalNemoConfig(data_dir=workdir / "server", queue_db=url, shared_dir=shared,
                             max_renders_per_user=renders, default_resolution="720p")  # fmt: skip
    cores = sorted(os.sched_getaffinity(0))
    processes = [start_worker(url, shared, workdir / f"worker-{n}", cores[n % len(cores)] if pin else None)
                 for n in range(workers)]  # fmt: skip
    try:
        async with LocalNemo(config) as server, httpx.AsyncClient(base_url=server.base_url, timeout=60) as http:
            deadline = time.monotonic() + 60
            while registered_workers(url) < workers:
                if time.monotonic() > deadline:
                    raise SystemExit("the render workers did not start")
                await asyncio.sleep(0.1)
            token = (await http.post("/api/auth/anonymous-token", headers={"X-Client-Id": "bench"})).json()
            headers = {"Authorization": f"Bearer {token['data']['token']}", **ATTRIBUTION}
            sid = (await http.post("/api/tasks/me/with-session/nemo_agent", json={}, headers=headers)).json()
            sid = sid["data"]["session_id"]
            files = {"files": (clip.name, clip.read_bytes(), "video/mp4")}
            upload = await http.post(f"/api/upload-video/nemo_agent/me/{sid}", headers=headers, files=files)
            upload.raise_for_status()
            state = (await http.get(f"/api/state/nemo_agent/me/{sid}/latest", headers=headers)).json()
            draft = state["data"]["state"]["draft"]
            started = time.monotonic()
            for number in range(renders):
                export = {"id": f"r{number}", "sessionId": sid, "draft": draft, "output": {"resolution": "720p"}}
                (await http.post(RENDER, json=export, headers=headers)).raise_for_status()
            for number in range(renders):
                while True:
                    answer = await http.get(f"{RENDER}/r{number}?wait=30", headers=headers)
                    data = answer.json()["data"]
                    if data["status"] == "failed":
                        raise SystemExit(f"render r{number} failed: {data.get('error')}")
                    if data["status"] == "completed":
                        break
            return RenderRun(workers, renders, time.monotonic() - started)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(60)


def bench_renders(db: str | None, renders: int, seconds: int, pin: bool) -> list[RenderRun]:
    """N renders with one worker, then with two; the runs, printed side by side."""
    workdir = Path(tempfile.mkdtemp(prefix="nemobot-bench-scale-"))
    try:
        clip = make_clip(workdir / "clip.mp4", seconds)
        with contextlib.ExitStack() as stack:
            url = db if db is not None else stack.enter_context(throwaway_postgres())
            runs = [
                asyncio.run(timed_renders(new_schema(url, f"bench_scale_{workers}"), workdir / f"run-{workers}",
                                          clip, workers, renders, pin))
                for workers in (1, 2)
            ]  # fmt: skip
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"renders: {renders} exports of a {seconds}s 720p30 clip at 720p, workers "
          f"{'pinned to one core each' if pin else 'sharing every core'} ({len(os.sched_getaffinity(0))} cores)")
    for run in runs:
        print(f"  {run.workers} worker{'s' if run.workers > 1 else ' '}: {run.seconds:6.1f} s  "
              f"{run.per_minute:5.2f} renders/minute")  # fmt: skip
    print(f"  ratio two/one: {runs[1].per_minute / runs[0].per_minute:.2f}x")
    return runs


# -- the bot part ----------------------------------------------------------------------------------------------


class JobReplies(MemoryReplies):
    """The replies a durable export job speaks through: the status message it was handed by id only (another
    call's, maybe another process's) is found again in the chat's log."""

    async def edit_text(self, handle: MessageHandle, text: str, *, buttons: Sequence[Button] = ()) -> None:
        if handle.native is None:
            sent = next((m for m in self._log.messages if str(m.id) == handle.id), None)
            if sent is None:
                raise RuntimeError(f"no message {handle.id} in this chat")
            handle = MessageHandle(handle.id, sent)
        await super().edit_text(handle, text, buttons=buttons)


class SimulatedTelegram:
    """The Adapter the export jobs deliver through: chat ``c<n>``'s results go to its export step's log."""

    def __init__(self, chats: list[ChatRun], capabilities: Capabilities) -> None:
        self._chats = chats
        self._caps = capabilities
        self.jobs = 0  # export jobs that spoke through it

    @property
    def name(self) -> str:
        return "tg"

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def replies_for(self, target: DeliveryTarget) -> Replies:
        self.jobs += 1
        return JobReplies(self._chats[int(target.address.removeprefix("c"))].steps["export"], self._caps)


@dataclass
class BackendPeaks:
    """PostgreSQL's backends, sampled from /proc (a server on this machine only): peak VmHWM per kind."""

    by_kind: dict[str, float] = field(default_factory=dict)  # MB, the largest one process of the kind reached
    most_clients: int = 0
    samples: int = 0


async def sample_backends(url: str, peaks: BackendPeaks) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        while True:
            query = "SELECT pid, coalesce(backend_type, '?') FROM pg_stat_activity"
            rows = await (await conn.execute(query)).fetchall()
            clients = 0
            for pid, kind in rows:
                with contextlib.suppress(OSError, RuntimeError):
                    peak = status_kb("VmHWM", pid) / 1024
                    peaks.by_kind[kind] = max(peaks.by_kind.get(kind, 0.0), peak)
                    peaks.samples += 1
                clients += kind == "client backend"
            peaks.most_clients = max(peaks.most_clients, clients)
            await asyncio.sleep(0.5)


async def jobs_left(url: str) -> int:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        row = await (await conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')")).fetchone()
        return int(row[0]) if row is not None else 0


async def timed_chats(url: str, work: Path, chats: int, deadline: float) -> bool:
    """Run the chats against a fresh localnemo with the bot's data at ``url``; prints the figures. True when
    every chat got every answer and nothing went wrong."""
    counter = LogCounter()
    logging.getLogger().addHandler(counter)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    clip = work / "clip.mp4"
    concurrency.make_clip(clip)
    (work / "tmp").mkdir()
    args = argparse.Namespace(  # what bench/concurrency.py's pieces read: its defaults, the product server
        in_process=False, render_step_seconds=0.05, heartbeat_seconds=1.0, silent_every=0, renderer="copy",
        locale="en", burst=False, reply_latency=0.0,
    )  # fmt: skip
    caps = Capabilities(max_upload_bytes=1 << 30, can_edit=True, edit_interval_seconds=0.05)
    runs = [ChatRun(i) for i in range(chats)]
    queue_settings = QueueSettings(_env_file=None)
    bot_settings = BotSettings(_env_file=None, db=url, temp_dir=str(work / "tmp"))
    limits = httpx.Limits(max_connections=4 * bot_settings.max_in_flight,
                          max_keepalive_connections=4 * bot_settings.max_in_flight, keepalive_expiry=30.0)
    peaks = BackendPeaks()
    sampler = asyncio.create_task(sample_backends(url, peaks))
    timed_out = False
    async with localnemo(args, work) as (base, _, server_pid), httpx.AsyncClient(limits=limits) as http:
        async with open_repository(url) as repo, open_job_queue(url, queue_settings) as queue:
            nemo_settings = NemoSettings(
                _env_file=None, api_base=base, token=None, poll_seconds=0.2, retry_seconds=0.05,
                backoff_seconds=0.05, skill_platform="bench",
            )  # fmt: skip
            engine = Engine(NemoClient(http, nemo_settings, RepositoryIdentities(repo)), repo, bot_settings,
                            queue=queue)  # fmt: skip
            telegram = SimulatedTelegram(runs, caps)
            await engine.resume(telegram)  # serves the "tg" export jobs in this process
            server_cpu_before = cpu_seconds_of(server_pid)
            cpu_before = time.process_time()
            started = time.perf_counter()
            try:
                async with asyncio.timeout(deadline):
                    await asyncio.gather(*(run_chat(engine, r, clip, caps, args, platform="tg") for r in runs))
                    await engine.join()
                    while await jobs_left(url):
                        await asyncio.sleep(0.2)
            except TimeoutError:
                timed_out = True
            finally:
                wall = time.perf_counter() - started
                cpu = time.process_time() - cpu_before
                server_cpu = cpu_seconds_of(server_pid) - server_cpu_before
                server_peak = status_kb("VmHWM", server_pid) / 1024
                await engine.close()
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    bot_peak = status_kb("VmHWM") / 1024

    handled = sum(r.handled for r in runs)
    delivered = sum(len(r.steps["export"].videos) == 1 for r in runs)
    error_texts = [text for r in runs for text in r.error_texts()]
    exceptions = [r.exception for r in runs if r.exception]
    lost = {r.index: r.problems() for r in runs if r.problems()}
    errors = len(error_texts) + len(exceptions) + counter.errors
    print(f"bot: {chats} chats over PostgreSQL (tg chats: exports are Procrastinate jobs, this process's worker "
          f"runs them with concurrency {queue_settings.concurrency}); max_in_flight {bot_settings.max_in_flight}")
    print(f"  localnemo:          subprocess `python -m nemobot serve-local` (pid {server_pid}), copy renders")
    print(f"  messages handled:   {handled} of {3 * chats}; videos delivered {delivered} of {chats}"
          + ("  (DEADLINE REACHED)" if timed_out else ""))
    print(f"  export jobs run:    {telegram.jobs} (Procrastinate jobs that delivered through the queue's worker)")
    print(f"  wall time:          {wall:.1f} s (to the last delivery and an empty job queue)")
    print(f"  messages per second: {handled / wall:.1f}")
    print(f"  CPU per message:    bot {1000 * cpu / max(handled, 1):.2f} ms, localnemo "
          f"{1000 * server_cpu / max(handled, 1):.2f} ms")
    print("  peak RSS (VmHWM):")
    print(f"    bot process (engine, PostgreSQL pools, export worker): {bot_peak:6.1f} MB")
    print(f"    localnemo subprocess:                                  {server_peak:6.1f} MB")
    if peaks.samples:
        print(f"    PostgreSQL, largest of each kind (counts the shared buffers a process touched; "
              f"up to {peaks.most_clients} client backends at once):")
        for kind, peak in sorted(peaks.by_kind.items()):
            print(f"      {kind:<28} {peak:6.1f} MB")
    else:
        print("    PostgreSQL: not on this machine (its processes were not readable)")
    print(f"  errors:             {errors} ({len(error_texts)} error replies, {len(exceptions)} exceptions, "
          f"{counter.errors} logged errors)")
    for text, n in collections.Counter(text[:140] for text in error_texts).most_common(5):
        print(f"      {n} x reply {text!r}")
    for exception in exceptions[:5]:
        print(f"      exception {exception}")
    for line, n in counter.counts.most_common(8):
        print(f"      {n} x {line}")
    print(f"  lost replies:       {len(lost)}")
    for reason, n in collections.Counter(p for problems in lost.values() for p in problems).most_common():
        print(f"      {n} x {reason}")
    return errors == 0 and not lost and not timed_out


def bench_bot(db: str | None, chats: int, deadline: float) -> bool:
    """N chats at once, the bot's data in PostgreSQL (a schema of its own); prints the figures."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    raise_fd_limit()
    work = Path(tempfile.mkdtemp(prefix="nemobot-bench-scale-bot-"))
    try:
        with contextlib.ExitStack() as stack:
            url = db if db is not None else stack.enter_context(throwaway_postgres())
            return asyncio.run(timed_chats(new_schema(url, "bench_scale_bot"), work, chats, deadline))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parts = parser.add_mutually_exclusive_group()
    parts.add_argument("--renders-only", action="store_true", help="only the render workers' part")
    parts.add_argument("--bot-only", action="store_true", help="only the bot's part")
    parser.add_argument("--renders", type=int, default=6, help="exports per run (default 6)")
    parser.add_argument("--seconds", type=int, default=10, help="length of the generated clip (default 10)")
    parser.add_argument("--no-pin", action="store_true", help="let every worker use every core")
    parser.add_argument("--chats", type=int, default=1000, help="simulated chats at once (default 1000)")
    parser.add_argument("--deadline", type=float, default=1200.0, help="bot part: give up after this many seconds")
    parser.add_argument("--db", help="a postgresql:// URL to use instead of a throwaway server")
    args = parser.parse_args()
    if not args.bot_only:
        bench_renders(args.db, args.renders, args.seconds, pin=not args.no_pin)
    if not args.renders_only and not bench_bot(args.db, args.chats, args.deadline):
        sys.exit(1)


if __name__ == "__main__":
    main()
