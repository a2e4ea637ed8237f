"""Concurrency benchmark: N chats at once, each uploading a clip, editing it and exporting it, through the
real conversation engine, the real NemoVideo client and a fresh SQLite database, against localnemo.

By default localnemo runs in a subprocess (``python -m nemobot serve-local``) so that the figures —
CPU per message, peak RSS — are the bot's alone; ``--in-process`` runs it in the same event loop instead.

Each chat is a user who waits for each answer before sending the next message (``--burst``: who sends
all three at once, so that the engine's per-chat queue is exercised):
  1. a message with one small video attachment (a real 2-second mp4, streamed from disk),
  2. "cut the pauses, add background music, and generate captions",
  3. "export" (the render is downloaded and "sent" as a video, with its link).
The simulated platform answers at once, or after a random 0..``--reply-latency`` seconds per call.

Prints chats, messages handled, wall time, messages/s, CPU ms per message, peak RSS, errors and lost
replies, and checks the target: at 500 chats, zero errors, zero lost replies, peak RSS < 300 MB.

    /work/venv/bin/python bench/concurrency.py [--chats 200] [--max-in-flight 32] [--deadline 600]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import logging
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from localserver import local_server

from bot.config import BotSettings, NemoSettings
from bot.engine import Engine
from bot.messages import Attachment, Button, Capabilities, ChatKey, IncomingMessage, MessageHandle, WorkingAction
from bot.nemo.client import NemoClient
from bot.nemo.uploads import UploadSource
from bot.sessions import RepositoryIdentities
from bot.texts import t
from storage import Repository

ROOT = Path(__file__).resolve().parents[1]
EDIT_TEXT = "cut the pauses, add background music, and generate captions"
STEPS = ("upload", "edit", "export")
TARGET_CHATS = 500
TARGET_RSS_MB = 300.0

# The engine's error replies (bot/texts.py): backend_error, internal_error, export_failed and export_timeout
# start with ❌, backend_down/stream_interrupted with 📡, rate_limited 🐢, out_of_credits 💳, session_lost ⚠️,
# token_refused 🔑, export_blocked 🚫, stream_timeout ⌛.
ERROR_PREFIXES = ("❌", "📡", "🐢", "💳", "⚠️", "🔑", "🚫", "⌛")


def _prefix(key: str, **placeholders: str) -> str:
    """The fixed start of one of the engine's texts, up to its first placeholder."""
    marker = "\x00"
    return t(key, "en", **{name: marker for name in placeholders}).split(marker)[0]


UPLOADED_PREFIX = _prefix("uploaded", names="")  # "✅ Got "
VIDEO_READY_PREFIX = _prefix("export_done", url="")  # "✅ Your video is ready: "
QUEUED_TEXT = t("queued", "en")


# -- measuring -----------------------------------------------------------------------------------------


def status_kb(field_name: str, pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise RuntimeError(field_name)


def cpu_seconds_of(pid: int) -> float:
    """utime + stime of another process (its own threads, not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raise_fd_limit() -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


class LogCounter(logging.Handler):
    """Counts warnings and errors of the bot's loggers (an exception in the engine is an ERROR)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: collections.Counter[str] = collections.Counter()
        self.errors = 0

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage().split("\n", 1)[0][:160]
        if record.exc_info and record.exc_info[1] is not None:
            message += f" [{type(record.exc_info[1]).__name__}: {str(record.exc_info[1])[:80]}]"
        self.counts[f"{record.levelname} {record.name}: {message}"] += 1
        if record.levelno >= logging.ERROR:
            self.errors += 1


# -- the simulated platform ----------------------------------------------------------------------------


@dataclass
class Sent:
    """One message the bot sent; ``texts`` is its history (first send, then each edit)."""

    id: int
    texts: list[str]
    buttons: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        return self.texts[-1]


@dataclass
class StepLog:
    messages: list[Sent] = field(default_factory=list)
    videos: list[tuple[str, int]] = field(default_factory=list)  # (caption, size in bytes)
    started: float = 0.0
    finished: float = 0.0

    def all_texts(self) -> Iterator[str]:
        for message in self.messages:
            yield from message.texts

    @property
    def final_texts(self) -> list[str]:
        return [m.text for m in self.messages]


_ids = itertools.count(1)


class MemoryReplies:
    """The Replies of one incoming message: records every text, edit and video, answers instantly."""

    def __init__(self, log: StepLog, capabilities: Capabilities, latency: float = 0.0) -> None:
        self._log = log
        self._caps = capabilities
        self._latency = latency

    async def _platform_delay(self) -> None:
        if self._latency > 0:
            await asyncio.sleep(random.uniform(0, self._latency))

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    async def send_text(self, text: str, *, buttons: Sequence[Button] = ()) -> MessageHandle:
        message_id = next(_ids)  # numbered when the engine asks, so ids follow the engine's order
        await self._platform_delay()
        message = Sent(message_id, [text], tuple(b.command for b in buttons))
        self._log.messages.append(message)
        return MessageHandle(str(message_id), message)

    async def edit_text(self, handle: MessageHandle, text: str, *, buttons: Sequence[Button] = ()) -> None:
        sent = handle.native
        assert isinstance(sent, Sent)
        await self._platform_delay()
        sent.texts.append(text)
        sent.buttons = tuple(b.command for b in buttons)

    async def send_video(self, path: Path, *, caption: str, buttons: Sequence[Button] = ()) -> MessageHandle:
        message_id = next(_ids)
        size = (await asyncio.to_thread(path.stat)).st_size
        await self._platform_delay()
        self._log.videos.append((caption, size))
        return MessageHandle(str(message_id), Sent(message_id, [caption], tuple(b.command for b in buttons)))

    async def send_image(self, path: Path, *, caption: str) -> MessageHandle:
        raise NotImplementedError("the benchmark's chats declare no pictures")

    async def send_document(self, path: Path, *, filename: str, caption: str) -> MessageHandle:
        raise NotImplementedError

    async def show_working(self, action: WorkingAction) -> None:
        return None


class PathOpener:
    """The adapter's FileOpener: an attachment's ``ref`` is a local path."""

    async def open(self, attachment: Attachment) -> UploadSource:
        assert attachment.ref is not None
        return UploadSource.from_path(attachment.ref, filename=attachment.filename, content_type=attachment.mime_type)


@dataclass
class ChatRun:
    index: int
    steps: dict[str, StepLog] = field(default_factory=lambda: {s: StepLog() for s in STEPS})
    handled: int = 0
    exception: str | None = None

    def in_order(self) -> bool:
        """Whether the steps were answered in the order they were sent (the first reply that is not the
        "this one is next" notice of each step; ids grow with time)."""
        firsts = [min((m.id for m in self.steps[s].messages if m.texts[0] != QUEUED_TEXT), default=0) for s in STEPS]
        return 0 not in firsts and firsts == sorted(firsts)

    def error_texts(self) -> list[str]:
        return [text for step in self.steps.values() for text in step.all_texts() if text.startswith(ERROR_PREFIXES)]

    def problems(self) -> list[str]:
        """Why this chat is a lost reply (empty: it got every answer)."""
        found: list[str] = []
        upload, edit, export = (self.steps[s] for s in STEPS)
        if not any(text.startswith(UPLOADED_PREFIX) for text in upload.final_texts):
            found.append("no upload acknowledgement")
        edited = [m for m in edit.messages if "/export" in m.buttons and not m.text.startswith(ERROR_PREFIXES)]
        if not edited:
            found.append("no edit reply")
        if len(export.videos) != 1:
            found.append(f"{len(export.videos)} videos delivered")
        if not any(text.startswith(VIDEO_READY_PREFIX) and "http" in text for text in export.final_texts):
            found.append("no 'Your video is ready' link")
        return found


async def run_chat(engine: Engine, run: ChatRun, clip: Path, caps: Capabilities, args: argparse.Namespace,
                   platform: str = "bench") -> None:
    """``platform``: the chat keys' (bench/scale.py uses "tg", whose exports go to the durable queue)."""
    chat = ChatKey(platform, f"c{run.index}")
    attachment = Attachment("video", "clip.mp4", "video/mp4", clip.stat().st_size, ref=str(clip))
    messages = {
        "upload": IncomingMessage(chat, f"u{run.index}", "1", "", (attachment,), locale=args.locale),
        "edit": IncomingMessage(chat, f"u{run.index}", "2", EDIT_TEXT, locale=args.locale),
        "export": IncomingMessage(chat, f"u{run.index}", "3", "export", locale=args.locale),
    }
    opener = PathOpener()
    if args.burst:
        # The three updates arrive together and the adapter hands each to the engine as it comes, as
        # python-telegram-bot (concurrent_updates) and discord.py do: three concurrent handle() calls.
        started = time.perf_counter()
        outcomes = await asyncio.gather(
            *(engine.handle(messages[s], MemoryReplies(run.steps[s], caps, args.reply_latency), opener) for s in STEPS),
            return_exceptions=True,
        )
        failed = [f"{s}: {type(o).__name__}: {o}" for s, o in zip(STEPS, outcomes, strict=True) if o is not None]
        run.exception = "; ".join(failed) or None
        run.handled += len(STEPS) - len(failed)
        await engine.join(chat)
        for step in STEPS:
            run.steps[step].started, run.steps[step].finished = started, time.perf_counter()
        return
    for step in STEPS:
        log = run.steps[step]
        log.started = time.perf_counter()
        try:
            await engine.handle(messages[step], MemoryReplies(log, caps, args.reply_latency), opener)
            await engine.join(chat)  # the user reads the answer before sending the next message
        except Exception as exc:
            run.exception = f"{step}: {type(exc).__name__}: {exc}"
            return
        log.finished = time.perf_counter()
        run.handled += 1


# -- localnemo -----------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def localnemo(args: argparse.Namespace, work: Path, settings: dict[str, str] | None = None) -> Any:
    """Yields (base URL, description, pid of a subprocess server or None). ``settings``: more LOCALNEMO_*
    variables for a subprocess server."""
    # Silent edits are a quirk of the hosted agent that only the test server imitates (the product's agent
    # always answers): with --silent-every N the server is localnemo.testing's, else the product's.
    if args.in_process:
        from localnemo.app import LocalNemo
        from localnemo.config import LocalNemoConfig
        from localnemo.testing import TestLocalNemo

        config = LocalNemoConfig(
            data_dir=work / "server", render_step_seconds=args.render_step_seconds,
            heartbeat_seconds=args.heartbeat_seconds, initial_credits=1000, renderer=args.renderer,
        )
        nemo = TestLocalNemo(config, silent_every=args.silent_every) if args.silent_every else LocalNemo(config)
        async with nemo:
            yield nemo.base_url, "in-process (same event loop: its CPU and memory are counted)", None
        return
    env = {
        "LOCALNEMO_DATA_DIR": str(work / "server"),
        "LOCALNEMO_RENDER_STEP_SECONDS": str(args.render_step_seconds),
        "LOCALNEMO_HEARTBEAT_SECONDS": str(args.heartbeat_seconds),
        "LOCALNEMO_CREDITS": "1000",
        "LOCALNEMO_RENDERER": args.renderer,
        "NEMOBOT_LOG_LEVEL": "WARNING",
        **(settings or {}),
    }
    command: tuple[str, ...] = ("-m", "nemobot", "serve-local")
    if args.silent_every:
        command = ("-m", "localnemo.testing", "--silent-every", str(args.silent_every), "--log-level", "WARNING")
    log_path = work / "localnemo.log"
    try:
        async with local_server(env, log_path=log_path, command=command) as (base, server):
            yield base, f"subprocess (pid {server.pid}, `python {' '.join(command)}`; not counted)", server.pid
    finally:
        lines = log_path.read_text(errors="replace").splitlines()
        problems = [line for line in lines if " WARNING " in line or " ERROR " in line or "Traceback" in line]
        if problems:
            print(f"localnemo logged {len(problems)} warning/error line(s); first ones:")
            for line in problems[:5]:
                print("   ", line[:200])


def make_clip(path: Path) -> None:
    from localnemo.media import ffmpeg_exe

    subprocess.run(
        [
            ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=22050",
            "-t", "2", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path),
        ],
        check=True,
    )


# -- the run -------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chats", type=int, default=200, help="simulated chats, all at once (default 200)")
    parser.add_argument("--max-in-flight", type=int, default=32, help="NEMOBOT_MAX_IN_FLIGHT (default 32)")
    parser.add_argument("--max-connections", type=int, default=0,
                        help="httpx pool size, all kept alive (default 0: 4 x max-in-flight)")
    parser.add_argument("--deadline", type=float, default=600.0, help="give up after this many seconds (default 600)")
    parser.add_argument("--in-process", action="store_true", help="run localnemo in this process's event loop")
    parser.add_argument("--render-step-seconds", type=float, default=0.05, help="LOCALNEMO_RENDER_STEP_SECONDS")
    parser.add_argument("--heartbeat-seconds", type=float, default=1.0, help="LOCALNEMO_HEARTBEAT_SECONDS")
    parser.add_argument("--silent-every", type=int, default=3,
                        help="every Nth edit ends with no text, as the hosted agent's do: a quirk only the test "
                        "server (python -m localnemo.testing) imitates; 0 = never, with the product server")
    parser.add_argument(
        "--renderer", choices=("copy", "ffmpeg"), default="copy",
        help="LOCALNEMO_RENDERER: 'copy' (default) keeps the backend's render cost out of a measure of the bot; "
        "'ffmpeg' renders every export for real",
    )
    parser.add_argument("--poll-seconds", type=float, default=0.2, help="NEMO_POLL_SECONDS (default 0.2)")
    parser.add_argument("--locale", default="en", help="the users' locale (en or zh)")
    parser.add_argument("--burst", action="store_true", help="send each chat's three messages without waiting")
    parser.add_argument("--reply-latency", type=float, default=0.0,
                        help="the platform answers each send/edit after a random 0..this many seconds (default 0)")
    parser.add_argument("--transcript", action="store_true",
                        help="print one chat's messages, edits and videos (a failed one if there is one)")
    parser.add_argument("--log-level", default="WARNING", help="the bot's log level on stderr (default WARNING)")
    args = parser.parse_args()

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    counter = LogCounter()
    logging.getLogger().addHandler(counter)
    fd_soft, _ = raise_fd_limit()

    work = Path(tempfile.mkdtemp(prefix="nemobot-bench-concurrency-"))
    try:
        return await bench(args, work, counter, fd_soft)
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def bench(args: argparse.Namespace, work: Path, counter: LogCounter, fd_soft: int) -> int:
    clip = work / "clip.mp4"
    make_clip(clip)
    (work / "tmp").mkdir()
    # The pool: at most max_in_flight long requests (uploads, /run_sse streams) hold a socket inside the engine's
    # slots; export polls and result downloads run outside them, hence room for 3 x as many again. Bounded on
    # purpose: httpcore scans every pooled connection on each request, so a pool as large as the number of chats
    # costs CPU (measured at 500 chats: pool 64 -> 7.1 ms/message, 128 -> 7.3, 532 -> 7.9; pool 1000 with
    # max_in_flight 500 -> 30 ms, two thirds of it in httpcore's connection_pool). A request waits for a free
    # socket up to the client's read timeout (NEMO_READ_TIMEOUT_SECONDS, 60 s; the stream has no pool timeout).
    # All kept alive: hundreds of exports polled every 0.2 s would otherwise open (and TIME_WAIT) a socket each.
    max_connections = args.max_connections or 4 * args.max_in_flight
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections,
                          keepalive_expiry=30.0)
    caps = Capabilities(max_upload_bytes=1 << 30, can_edit=True, edit_interval_seconds=0.05)
    runs = [ChatRun(i) for i in range(args.chats)]

    async with localnemo(args, work) as (base, where, server_pid), httpx.AsyncClient(limits=limits) as http:
        async with Repository.open(work / "bot.sqlite3") as repo:
            nemo_settings = NemoSettings(
                _env_file=None, api_base=base, token=None, poll_seconds=args.poll_seconds, retry_seconds=0.05,
                backoff_seconds=0.05, skill_platform="bench",
            )
            bot_settings = BotSettings(
                _env_file=None, db=str(work / "bot.sqlite3"), max_in_flight=args.max_in_flight,
                temp_dir=str(work / "tmp"),
            )
            nemo = NemoClient(http, nemo_settings, RepositoryIdentities(repo))
            engine = Engine(nemo, repo, bot_settings)
            server_cpu_before = cpu_seconds_of(server_pid) if server_pid else 0.0
            rss_before = status_kb("VmRSS") / 1024
            cpu_before = time.process_time()
            started = time.perf_counter()
            timed_out = False
            try:
                async with asyncio.timeout(args.deadline):
                    await asyncio.gather(*(run_chat(engine, r, clip, caps, args) for r in runs))
                    await engine.join()
            except TimeoutError:
                timed_out = True
            finally:
                wall = time.perf_counter() - started
                cpu = time.process_time() - cpu_before
                server_cpu = cpu_seconds_of(server_pid) - server_cpu_before if server_pid else None
                await engine.close()
            peak_rss = status_kb("VmHWM") / 1024

    handled = sum(r.handled for r in runs)
    error_texts = [text for r in runs for text in r.error_texts()]
    exceptions = [r.exception for r in runs if r.exception]
    lost = {r.index: r.problems() for r in runs if r.problems()}
    disordered = [r.index for r in runs if not r.in_order()]
    errors = len(error_texts) + len(exceptions) + counter.errors

    print(f"localnemo: {where}; render step {args.render_step_seconds}s, heartbeat {args.heartbeat_seconds}s, "
          f"silent every {args.silent_every}")
    print(f"bot: max_in_flight {args.max_in_flight}, poll {args.poll_seconds}s, httpx Limits(max_connections="
          f"{max_connections}, max_keepalive_connections={max_connections}), RLIMIT_NOFILE {fd_soft}")
    print(f"chats:                {args.chats}" + (" (burst: 3 messages at once per chat)" if args.burst else "")
          + (f", platform latency 0..{args.reply_latency}s" if args.reply_latency else ""))
    print(f"messages handled:     {handled} of {3 * args.chats}" + ("  (DEADLINE REACHED)" if timed_out else ""))
    print(f"wall time:            {wall:.2f} s")
    print(f"messages per second:  {handled / wall:.1f}")
    print(f"CPU per message:      {1000 * cpu / max(handled, 1):.2f} ms (bot process: {cpu:.2f} s CPU in all)")
    if server_cpu is not None:
        print(f"localnemo CPU:        {server_cpu:.2f} s (not included above)")
    print(f"peak RSS:             {peak_rss:.1f} MB (VmHWM; {rss_before:.1f} MB before the chats started)")
    for step in STEPS:
        times = [r.steps[step].finished - r.steps[step].started for r in runs if r.steps[step].finished]
        if times:
            print(f"  {step:<7} latency p50 {statistics.median(times):6.2f} s  p95 {percentile(times, 0.95):6.2f} s  "
                  f"max {max(times):6.2f} s")
    print(f"errors:               {errors} ({len(error_texts)} error replies, {len(exceptions)} exceptions, "
          f"{counter.errors} logged errors)")
    for text, n in collections.Counter(text[:140] for text in error_texts).most_common(5):
        print(f"    {n} x reply {text!r}")
    for exception in exceptions[:5]:
        print(f"    exception {exception}")
    if counter.counts:
        print(f"logged warnings/errors: {sum(counter.counts.values())}")
        for line, n in counter.counts.most_common(8):
            print(f"    {n} x {line}")
    print(f"lost replies:         {len(lost)}")
    for reason, n in collections.Counter(p for problems in lost.values() for p in problems).most_common():
        print(f"    {n} x {reason}")
    for index, problems in list(lost.items())[:3]:
        finals = {step: runs[index].steps[step].final_texts for step in STEPS}
        print(f"    e.g. chat c{index}: {', '.join(problems)}; final texts {finals}")
    if disordered:
        print(f"answered out of order: {len(disordered)} chats (e.g. c{disordered[0]}: a later message ran first)")

    if args.transcript and runs:
        shown = next(iter(lost), disordered[0] if disordered else 0)
        for step in STEPS:
            log = runs[shown].steps[step]
            for message in log.messages:
                history = " -> ".join(repr(text) for text in message.texts)
                print(f"  c{shown} {step} #{message.id}: {history} {list(message.buttons)}")
            for caption, size in log.videos:
                print(f"  c{shown} {step}: video {caption!r} ({size} bytes)")

    passed = errors == 0 and not lost and not disordered and peak_rss < TARGET_RSS_MB and not timed_out
    print(f"target at {TARGET_CHATS} chats: zero errors, zero lost replies, peak RSS < {TARGET_RSS_MB:.0f} MB")
    verdict = "PASS" if passed else "FAIL"
    if args.chats != TARGET_CHATS:
        verdict += f" (this run: {args.chats} chats; the target is measured at {TARGET_CHATS})"
    print(f"verdict: {verdict}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
