"""Scale-out benchmark, in three parts.

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

Receivers part: several bot processes. Two real ``nemobot telegram`` processes in webhook mode (subprocesses,
NEMOBOT_DB the PostgreSQL URL, so each accepts an update once and queues it as a ``nemobot.handle_update`` job
with the chat's lock, and runs a worker for those jobs and for the exports' ``nemobot.follow_export``), behind
the tests' round-robin balancer (tests/fakes/round_robin.py), with the tests' Bot API stand-in
(tests/fakes/telegram_server.py) in this process and localnemo as a subprocess (copy renders). N chats at
once; each sends /start, a 2-second clip captioned "add background music", then "export", each message as
soon as the post of the one before was answered (not its reply), and every update is posted twice at the same
moment, as Telegram retrying it (``--once``: once); the balancer passes each copy to the next receiver in turn,
so about half the updates reach both. At most ``--webhook-connections`` posts are in flight (Telegram's
default webhook max_connections, 40). Waits, with ``--deadline``, until every chat got its greeting, the
reply to its clip with the edit's result and one video (or showed an error) and the job queue is empty, then
prints: posts and duplicates dropped per receiver, updates accepted (table accepted_updates), messages per
second (updates accepted / wall time), when the chats got each answer, CPU seconds and peak RSS (VmHWM) of
each receiver, localnemo, this process and PostgreSQL's backends, errors (error replies such as "went wrong"
or "failed", ERROR lines in the receivers' and localnemo's logs, failed posts) and lost replies (a chat
missing an answer, or with one twice, or a second video). The receivers run with the product's defaults
but for short NemoVideo polls and status edits; ``--receiver-env NAME=VALUE`` (repeatable) sets more, e.g.
NEMOBOT_QUEUE_UPDATE_CONCURRENCY or NEMOBOT_QUEUE_POLL_SECONDS; ``--localnemo-env NAME=VALUE`` sets
localnemo's (it runs with its defaults, disk quota included). ``--keep`` keeps the logs and localnemo's data.

The exit status is non-zero when the bot or the receivers part saw an error or a lost reply (a failed render
stops the renders part); with no part flag, all three run.

    nice -n 19 .venv/bin/python bench/scale.py [--renders-only | --bot-only | --receivers-only] [--renders 6]
        [--seconds 10] [--no-pin] [--chats 1000] [--deadline 1200] [--db URL] [--once]
        [--webhook-connections 40] [--receiver-env NAME=VALUE ...] [--localnemo-env NAME=VALUE ...] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import concurrency
import httpx
import psycopg
from aiohttp import web
from concurrency import (
    ERROR_PREFIXES,
    UPLOADED_PREFIX,
    VIDEO_READY_PREFIX,
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
from bot.texts import t
from localnemo.app import LocalNemo
from localnemo.config import LocalNemoConfig
from localnemo.media import ffmpeg_exe
from storage import open_repository
from tests.fakes.round_robin import RoundRobin
from tests.fakes.telegram_server import FakeTelegram

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

    def report(self, width: int) -> None:
        """The peaks as the benchmark's report lines (``width``: the column of the kinds' names)."""
        if not self.samples:
            print("    PostgreSQL: not on this machine (its processes were not readable)")
            return
        print(f"    PostgreSQL, largest of each kind (counts the shared buffers a process touched; "
              f"up to {self.most_clients} client backends at once):")
        for kind, peak in sorted(self.by_kind.items()):
            print(f"      {kind:<{width}} {peak:6.1f} MB")


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
    peaks.report(width=28)
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



# -- the receivers part ----------------------------------------------------------------------------------------

HOOK_URL = "https://bot.example.test/tg-hook"  # what setWebhook is told; the balancer is posted to instead
HOOK_SECRET = "bench-hook-s3cret"
FIRST_CHAT = 7_000_000
CAPTION = "add background music"
GREETING = t("start", "en").split("\n", 1)[0]  # "👋 Hi! I edit videos for you."
UPLOADED_SHORT = t("uploaded_short", "en", names="\x00").split("\x00")[0]  # "✅ Uploaded "
EXPORT_STATUS = ("🎬 Exporting", "🎬 Queued for export")
FAILURE_WORDS = ("went wrong", "failed")


class NotingRoundRobin(RoundRobin):
    """The tests' round-robin balancer, noting which receivers each update reached (two copies of one update
    posted at once are two turns of the balancer, but other chats' posts may come between them)."""

    def __init__(self, backends: list[str]) -> None:
        super().__init__(backends)
        self.reached: dict[int, set[str]] = collections.defaultdict(set)

    async def _forward(self, request: web.Request) -> web.Response:
        body = await request.read()  # aiohttp keeps it: the balancer reads it again
        answer = await super()._forward(request)
        # RoundRobin notes the receiver that answered and returns without waiting again: it is this request's.
        if answer.status == 200 and self.served:
            self.reached[int(json.loads(body)["update_id"])].add(self.served[-1])
        return answer


@dataclass
class Receiver:
    """One ``nemobot telegram`` process in webhook mode; its log (INFO) goes to a file."""

    port: int
    log: Path
    process: asyncio.subprocess.Process

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


async def start_receiver(number: int, url: str, nemo_base: str, fake: FakeTelegram, work: Path,
                         extra: dict[str, str]) -> Receiver:
    folder = work / f"receiver-{number}"
    (folder / "tmp").mkdir(parents=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEMO_", "NEMOBOT_", "TELEGRAM_", "DISCORD_",
                                                                    "LOCALNEMO_"))}
    env.update({
        "PYTHONPATH": str(ROOT), "PTB_TIMEDELTA": "true", "NEMOBOT_LOG_LEVEL": "INFO",
        "NEMOBOT_DB": url, "NEMOBOT_TEMP_DIR": str(folder / "tmp"),
        "NEMO_API_BASE": nemo_base, "NEMO_SKILL_PLATFORM": "bench", "NEMO_POLL_SECONDS": "0.2",
        "NEMO_RETRY_SECONDS": "0.05", "NEMO_BACKOFF_SECONDS": "0.05",
        "TELEGRAM_BOT_TOKEN": fake.token, "TELEGRAM_API_BASE": fake.api_base, "TELEGRAM_FILE_API_BASE": fake.file_base,
        "TELEGRAM_PRIVATE_EDIT_SECONDS": "0.05", "TELEGRAM_WEBHOOK_URL": HOOK_URL,
        "TELEGRAM_WEBHOOK_LISTEN": "127.0.0.1", "TELEGRAM_WEBHOOK_PORT": str(port),
        "TELEGRAM_WEBHOOK_SECRET": HOOK_SECRET,
    })  # fmt: skip
    env.update(extra)
    log = folder / "log"
    with log.open("wb") as output:
        # cwd: a folder of its own, so no .env of the developer's is read.
        process = await asyncio.create_subprocess_exec(sys.executable, "-m", "nemobot", "telegram", cwd=folder,
                                                       env=env, stdout=output, stderr=output)  # fmt: skip
    return Receiver(port, log, process)


async def stop_receiver(receiver: Receiver) -> None:
    if receiver.process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            receiver.process.terminate()
        try:
            await asyncio.wait_for(receiver.process.wait(), 30)
        except TimeoutError:
            receiver.process.kill()
            await receiver.process.wait()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds of a process itself, and of its children: those it has waited for and the live ones
    (PostgreSQL's backends; localnemo's FFmpeg runs)."""
    def fields_of(one: int | str) -> list[str]:
        return Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()

    tick = os.sysconf("SC_CLK_TCK")
    own = fields_of(pid)
    children = int(own[13]) + int(own[14])
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                child = fields_of(entry.name)
                if int(child[1]) == pid:
                    children += int(child[11]) + int(child[12])
    return (int(own[11]) + int(own[12])) / tick, children / tick


def postmaster_pid(url: str) -> int | None:
    """The PostgreSQL server's main process, when it runs on this machine and /proc shows it."""
    try:
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT pg_backend_pid()").fetchone()
            assert row is not None
            parent = int(Path(f"/proc/{row[0]}/stat").read_text().rsplit(")", 1)[1].split()[1])
        cpu_seconds(parent)
        return parent
    except (OSError, psycopg.Error):
        return None


@dataclass
class ChatTally:
    """What the bot showed in one chat, by kind of answer."""

    greetings: int = 0
    uploads: int = 0  # the reply to the video (its upload, then the caption's edit)
    edited: int = 0  # of which finished with the edit's result
    exports: int = 0  # export status messages
    ready: int = 0  # "Your video is ready" messages
    videos: int = 0
    messages: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return bool(self.greetings and self.edited and self.exports and self.ready and self.videos)

    def problems(self) -> list[str]:
        found = []
        for what, count in (("greeting", self.greetings), ("upload reply", self.uploads),
                            ("export status", self.exports), ("'video is ready'", self.ready),
                            ("video", self.videos)):  # fmt: skip
            if count != 1:
                found.append(f"{count} x {what}")
        if self.uploads and not self.edited:
            found.append("the upload reply never showed the edit's result")
        return found


def tally(fake: FakeTelegram, chat: int) -> ChatTally:
    found = ChatTally()
    for message in fake.chat_messages(chat):
        found.messages += 1
        history = [text or "" for text in message.history]
        first, last = history[0], history[-1]
        if message.kind == "video":
            found.videos += 1
        elif first.startswith(GREETING):
            found.greetings += 1
        elif first.startswith(EXPORT_STATUS):
            found.exports += 1
        elif any(text.startswith((UPLOADED_PREFIX, UPLOADED_SHORT, "📤")) for text in history):
            found.uploads += 1
            # Its last version has the agent's answer after the upload's line (not a "✏️ Editing…" label), and
            # the buttons that come with the answer.
            answer = last.partition("\n\n")[2].strip()
            found.edited += bool(answer) and not answer.endswith("…") and bool(message.reply_markup)
        found.ready += any(text.startswith(VIDEO_READY_PREFIX) for text in history)
        found.errors += [text for text in history
                         if text.startswith(ERROR_PREFIXES) or any(w in text.lower() for w in FAILURE_WORDS)]
    return found


def log_lines(text: str, level: str) -> list[str]:
    """The log's lines of one level, each cut to its logger and message (no time, no numbers' noise)."""
    found = []
    for line in text.splitlines():
        parts = line.split(" ", 4)
        if len(parts) == 5 and parts[2] == level:
            found.append(f"{parts[3]}: {parts[4][:150]}")
    return found


def spread(seconds: list[float]) -> str:
    if not seconds:
        return "-"
    ordered = sorted(seconds)
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    return f"median {statistics.median(ordered):.2f} s, 95th percentile {p95:.2f} s, max {ordered[-1]:.2f} s"


async def accepted_updates(url: str) -> int:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        row = await (await conn.execute("SELECT count(*) FROM accepted_updates")).fetchone()
        return int(row[0]) if row is not None else 0


async def timed_receivers(url: str, work: Path, chats: int, deadline: float, copies: int, connections: int,
                          extra: dict[str, str], nemo_extra: dict[str, str]) -> bool:
    """N chats through two webhook receivers behind a balancer; prints the figures. True when every chat got
    every answer once and nothing went wrong."""
    counter = LogCounter()
    logging.getLogger().addHandler(counter)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    clip = work / "clip.mp4"
    concurrency.make_clip(clip)
    args = argparse.Namespace(in_process=False, render_step_seconds=0.05, heartbeat_seconds=1.0, silent_every=0,
                              renderer="copy")  # fmt: skip
    chat_ids = [FIRST_CHAT + n for n in range(chats)]
    peaks = BackendPeaks()
    sampler = asyncio.create_task(sample_backends(url, peaks))
    postmaster = postmaster_pid(url)
    failed_posts: collections.Counter[str] = collections.Counter()
    timed_out = False
    receivers: list[Receiver] = []
    async with (localnemo(args, work, nemo_extra) as (nemo_base, _, server_pid),
                FakeTelegram(tmp_dir=work / "tg") as fake):
        try:
            for number in (1, 2):
                receivers.append(await start_receiver(number, url, nemo_base, fake, work, extra))
            start_by = time.monotonic() + 120
            while not all("telegram.started" in r.output() for r in receivers):
                ended = [r for r in receivers if r.process.returncode is not None]
                if ended or time.monotonic() > start_by:
                    raise SystemExit("a receiver did not start:\n" + "".join(r.output()[-3000:] for r in receivers))
                await asyncio.sleep(0.2)
            for chat in chat_ids:
                fake.add_chat(chat)
            balancer = NotingRoundRobin([f"http://127.0.0.1:{r.port}" for r in receivers])
            slots = asyncio.Semaphore(connections)
            limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
            async with balancer.running() as balancer_base, httpx.AsyncClient(timeout=60, limits=limits) as http:
                hook = f"{balancer_base}/{HOOK_URL.rsplit('/', 1)[1]}"

                async def post(update: dict[str, Any]) -> None:
                    async with slots:
                        sent = time.perf_counter()
                        try:
                            answer = await http.post(hook, json=update,
                                                     headers={"X-Telegram-Bot-Api-Secret-Token": HOOK_SECRET})
                        except httpx.HTTPError as error:
                            failed_posts[type(error).__name__] += 1
                            return
                        post_seconds.append(time.perf_counter() - sent)
                    if answer.status_code != 200:
                        failed_posts[f"HTTP {answer.status_code}"] += 1

                async def deliver(update: dict[str, Any]) -> None:
                    await asyncio.gather(*(post(update) for _ in range(copies)))

                async def converse(chat: int) -> None:
                    # Each message as soon as the previous one's post was answered, not its reply: the
                    # receivers queue them, and a chat's messages are handled one at a time, in order.
                    fake.user_text(chat, "/start")
                    first_post[chat] = time.perf_counter()
                    await deliver(fake.updates[-1])
                    fake.user_video(chat, content=clip, caption=CAPTION, duration=2, width=160, height=120,
                                    file_name="clip.mp4")
                    await deliver(fake.updates[-1])
                    fake.user_text(chat, "export")
                    await deliver(fake.updates[-1])

                post_seconds: list[float] = []
                first_post: dict[int, float] = {}
                # When each chat was first seen to have each answer (looked at every 0.5 s), from its first post.
                stage_seconds: dict[str, list[float]] = {"greeting": [], "edit reply": [], "video": []}
                seen: dict[int, set[str]] = collections.defaultdict(set)
                pending, failed = set(chat_ids), set()

                async def send_all() -> float:
                    await asyncio.gather(*(converse(chat) for chat in chat_ids))
                    return time.perf_counter() - started

                async def watch() -> float:
                    """Until every chat got its video, or the rest showed an error and the queue is empty."""
                    while True:
                        if any(r.process.returncode is not None for r in receivers):
                            raise SystemExit("a receiver ended:\n" + "".join(r.output()[-3000:] for r in receivers))
                        await asyncio.sleep(0.5)
                        now = time.perf_counter()
                        for chat in [chat for chat in pending if chat in first_post]:
                            found = tally(fake, chat)
                            for stage, there in (("greeting", found.greetings), ("edit reply", found.edited),
                                                 ("video", found.videos)):  # fmt: skip
                                if there and stage not in seen[chat]:
                                    seen[chat].add(stage)
                                    stage_seconds[stage].append(now - first_post[chat])
                            if found.complete:
                                pending.discard(chat)
                            elif found.errors:
                                failed.add(chat)
                        failed.intersection_update(pending)
                        if sending.done() and pending <= failed and not (pending and await jobs_left(url)):
                            return now - started

                cpu = {"bench": (time.process_time(), 0.0), "localnemo": cpu_seconds(server_pid),
                       **{f"receiver {n}": cpu_seconds(r.process.pid) for n, r in enumerate(receivers, 1)},
                       **({"PostgreSQL": cpu_seconds(postmaster)} if postmaster is not None else {})}
                started = time.perf_counter()
                sending = asyncio.create_task(send_all())
                posted_in = answered_in = 0.0
                try:
                    async with asyncio.timeout(deadline):
                        answered_in = await watch()
                        posted_in = await sending
                        while await jobs_left(url):
                            await asyncio.sleep(0.2)
                except TimeoutError:
                    timed_out = True
                    sending.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await sending
                    answered_in = time.perf_counter() - started
                wall = answered_in
                accepted = await accepted_updates(url)
                left = await jobs_left(url)
                now_cpu = {"bench": (time.process_time(), 0.0), "localnemo": cpu_seconds(server_pid),
                           **{f"receiver {n}": cpu_seconds(r.process.pid) for n, r in enumerate(receivers, 1)},
                           **({"PostgreSQL": cpu_seconds(postmaster)} if postmaster is not None else {})}
                used = {name: (now_cpu[name][0] - cpu[name][0], now_cpu[name][1] - cpu[name][1]) for name in cpu}
                rss = {f"receiver {n} (pid {r.process.pid})": status_kb("VmHWM", r.process.pid) / 1024
                       for n, r in enumerate(receivers, 1)}
                rss[f"localnemo (pid {server_pid})"] = status_kb("VmHWM", server_pid) / 1024
                rss["this process (Bot API stand-in, balancer)"] = status_kb("VmHWM") / 1024
        finally:
            for receiver in receivers:
                await stop_receiver(receiver)
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        tallies = {chat: tally(fake, chat) for chat in chat_ids}
        lost_example = next(([m.history for m in fake.chat_messages(chat)] for chat, found in tallies.items()
                             if found.problems()), None)
        api_calls = collections.Counter(call.method for call in fake.calls)
    localnemo_errors = log_lines((work / "localnemo.log").read_text(errors="replace"), "ERROR")

    logs = [r.output() for r in receivers]
    error_lines = [line for text in logs for line in log_lines(text, "ERROR")] + localnemo_errors
    warning_lines = [line for text in logs for line in log_lines(text, "WARNING")]
    error_replies = [text for found in tallies.values() for text in found.errors]
    lost = {chat: found.problems() for chat, found in tallies.items() if found.problems()}
    errors = len(error_replies) + len(error_lines) + counter.errors + sum(failed_posts.values())
    both = sum(len(backends) > 1 for backends in balancer.reached.values())
    served = collections.Counter(balancer.served)
    print(f"receivers: {chats} Telegram chats through two `nemobot telegram` webhook receivers behind a round-robin "
          f"balancer, one PostgreSQL; every update posted {copies} time{'s' if copies > 1 else ''} "
          f"({connections} posts at most at once, as Telegram's webhook max_connections)")
    print("  each chat: /start, a 2 s clip captioned 'add background music', 'export'; localnemo subprocess "
          f"(pid {server_pid}), copy renders")
    if extra:
        print(f"  receivers' settings: {' '.join(f'{k}={v}' for k, v in sorted(extra.items()))}")
    if nemo_extra:
        print(f"  localnemo's settings: {' '.join(f'{k}={v}' for k, v in sorted(nemo_extra.items()))}")
    print(f"  posts answered:     {sum(served.values())} "
          + ", ".join(f"receiver {n}: {served[f'http://127.0.0.1:{r.port}']}" for n, r in enumerate(receivers, 1))
          + f"; updates reaching both receivers {both} of {len(balancer.reached)}")
    print(f"  updates accepted:   {accepted} of {3 * chats} (table accepted_updates); duplicates dropped "
          + ", ".join(f"receiver {n}: {text.count('telegram.duplicate_update')}" for n, text in enumerate(logs, 1)))
    print("  handled by:         " + ", ".join(f"receiver {n}: {text.count('engine.message ')} messages, "
                                              f"{text.count('engine.export.delivered')} exports delivered"
                                              for n, text in enumerate(logs, 1)))
    print(f"  all posted in:      {posted_in:.1f} s" if posted_in else "  all posted in:      (not all)")
    print(f"  post answered in:   {spread(post_seconds)} (balancer and receiver; its handling comes later)")
    for stage, seconds in stage_seconds.items():
        print(f"  {stage + ' in:':<20}{spread(seconds)} (from the chat's first post; {len(seconds)} chats)")
    print(f"  wall time:          {wall:.1f} s (first post to the last chat's video, or its error)"
          + ("  (DEADLINE REACHED)" if timed_out else ""))
    print(f"  messages per second: {accepted / wall:.1f} (updates accepted / wall time)")
    print(f"  jobs left in queue: {left}")
    print("  CPU seconds:        " + ", ".join(
        f"{name} {own + children:.1f}" + (f" (its children {children:.1f})" if name == "localnemo" else "")
        for name, (own, children) in used.items()))
    print("  Bot API calls:      " + ", ".join(f"{method} {n}" for method, n in api_calls.most_common()))
    print("  peak RSS (VmHWM):")
    for name, peak in rss.items():
        print(f"    {name:<44} {peak:6.1f} MB")
    peaks.report(width=42)
    print(f"  errors:             {errors} ({len(error_replies)} error replies, {len(error_lines)} ERROR log lines "
          f"(receivers, localnemo), {counter.errors} logged here, {sum(failed_posts.values())} failed posts)")
    for text, n in collections.Counter(text[:140] for text in error_replies).most_common(5):
        print(f"      {n} x reply {text!r}")
    for line, n in collections.Counter(error_lines).most_common(8):
        print(f"      {n} x {line}")
    for line, n in counter.counts.most_common(5):
        print(f"      {n} x {line}")
    for reason, n in failed_posts.most_common():
        print(f"      {n} x post {reason}")
    if warning_lines:
        print(f"  warnings:           {len(warning_lines)} WARNING lines in the receivers' logs")
        for line, n in collections.Counter(warning_lines).most_common(5):
            print(f"      {n} x {line}")
    print(f"  lost replies:       {len(lost)} chats"
          + (f" (messages per chat: {dict(sorted(collections.Counter(f.messages for f in tallies.values()).items()))})"
             if lost else ""))
    for reason, n in collections.Counter(p for problems in lost.values() for p in problems).most_common():
        print(f"      {n} x {reason}")
    if lost_example is not None:
        print("      the first such chat's messages, each with its edits:")
        for history in lost_example:
            print(f"        {[(text or '')[:70] for text in history]}")
    return errors == 0 and not lost and not timed_out and accepted == 3 * chats and left == 0


def bench_receivers(db: str | None, chats: int, deadline: float, copies: int, connections: int,
                    extra: dict[str, str], nemo_extra: dict[str, str], keep: bool = False) -> bool:
    """N chats through two receivers over PostgreSQL (a schema of its own); prints the figures. ``keep``: leave
    the work folder (the receivers' and localnemo's logs) and say where."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    raise_fd_limit()
    work = Path(tempfile.mkdtemp(prefix="nemobot-bench-scale-receivers-"))
    try:
        with contextlib.ExitStack() as stack:
            url = db if db is not None else stack.enter_context(throwaway_postgres())
            return asyncio.run(timed_receivers(new_schema(url, "bench_scale_receivers"), work, chats, deadline,
                                               copies, connections, extra, nemo_extra))
    finally:
        if keep:
            print(f"  logs kept in:       {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parts = parser.add_mutually_exclusive_group()
    parts.add_argument("--renders-only", action="store_true", help="only the render workers' part")
    parts.add_argument("--bot-only", action="store_true", help="only the bot's part")
    parts.add_argument("--receivers-only", action="store_true", help="only the webhook receivers' part")
    parser.add_argument("--renders", type=int, default=6, help="exports per run (default 6)")
    parser.add_argument("--seconds", type=int, default=10, help="length of the generated clip (default 10)")
    parser.add_argument("--no-pin", action="store_true", help="let every worker use every core")
    parser.add_argument("--chats", type=int, default=1000, help="chats at once (default 1000)")
    parser.add_argument("--deadline", type=float, default=1200.0,
                        help="bot and receivers parts: give up after this many seconds")
    parser.add_argument("--db", help="a postgresql:// URL to use instead of a throwaway server")
    parser.add_argument("--once", action="store_true", help="receivers part: post each update once, not twice")
    parser.add_argument("--webhook-connections", type=int, default=40,
                        help="receivers part: posts at once (Telegram's default webhook max_connections, 40)")
    parser.add_argument("--receiver-env", action="append", default=[], metavar="NAME=VALUE",
                        help="receivers part: a setting for both receivers, e.g. NEMOBOT_QUEUE_CONCURRENCY=32")
    parser.add_argument("--keep", action="store_true", help="receivers part: keep the logs and say where")
    parser.add_argument("--localnemo-env", action="append", default=[], metavar="NAME=VALUE",
                        help="receivers part: a setting for localnemo, e.g. LOCALNEMO_MAX_DISK_MB=0")
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.receiver_env)
    nemo_extra = dict(item.split("=", 1) for item in args.localnemo_env)
    everything = not (args.renders_only or args.bot_only or args.receivers_only)
    ok = True
    if everything or args.renders_only:
        bench_renders(args.db, args.renders, args.seconds, pin=not args.no_pin)
    if everything or args.bot_only:
        ok = bench_bot(args.db, args.chats, args.deadline) and ok
    if everything or args.receivers_only:
        ok = bench_receivers(args.db, args.chats, args.deadline, 1 if args.once else 2, args.webhook_connections,
                             extra, nemo_extra, keep=args.keep) and ok
    if not ok:
        sys.exit(1)

if __name__ == "__main__":
    main()
