"""The command line: ``nemobot <command>`` (argparse and one handler per command).

The wiring itself (HTTP client, database, engine, adapters) is :mod:`nemobot.compose`; this module reads
the arguments, speaks to the user on stdout/stderr, and exits with a status.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import NoReturn

from bot import __version__
from localnemo.config import ENV_VARIABLES, LocalNemoConfig
from nemobot import logs
from nemobot.compose import Runtime, StartSettings, platform_adapters, runtime, until_stopped

log = logging.getLogger(__name__)


# Every secret a setting may hold: hidden in every log line and in what this module prints.
_SECRET_SETTINGS = ("TELEGRAM_BOT_TOKEN", "DISCORD_BOT_TOKEN", "NEMO_TOKEN", "TELEGRAM_WEBHOOK_SECRET")


def _configured_secrets() -> list[str]:
    """The secret settings' values, from the environment and from ./.env (read as the settings classes
    read them, without importing the platforms' libraries)."""
    from dotenv import dotenv_values

    values = [os.environ.get(name) for name in _SECRET_SETTINGS]
    if Path(".env").is_file():
        from_file = dotenv_values(".env")
        values += [from_file.get(name) for name in _SECRET_SETTINGS]
    return [value.strip() for value in values if value and value.strip()]


def _configure_logging(default: str, *, chat: bool = False) -> None:
    logs.configure(os.environ.get("NEMOBOT_LOG_LEVEL", default), logs.Redactor(_configured_secrets()), sys.stderr,
                   file=os.environ.get("NEMOBOT_LOG_FILE") or None, chat=chat)


_SETTINGS_HELP = (
    "Settings (environment or ./.env): NEMO_API_BASE, NEMO_TOKEN, NEMO_POLL_SECONDS, NEMO_RETRY_SECONDS, "
    "NEMO_STILL_WORKING_SECONDS, NEMO_STREAM_TIMEOUT_SECONDS, NEMO_SKILL_PLATFORM and the other NEMO_* "
    "settings; NEMOBOT_DB (default ./nemobot.sqlite3), NEMOBOT_GROUP_SESSIONS, NEMOBOT_MAX_IN_FLIGHT, "
    "NEMOBOT_TEMP_DIR, NEMOBOT_LOG_LEVEL, NEMOBOT_LOG_FILE, NEMOBOT_CONSOLE_EDIT_SECONDS, NEMOBOT_START_ATTEMPTS, "
    "NEMOBOT_START_BACKOFF_SECONDS, NEMOBOT_START_MAX_BACKOFF_SECONDS. The README lists them all."
)


# serve-local's data folder when LOCALNEMO_DATA_DIR is not set, relative to where it is started.
SERVE_LOCAL_DATA_DIR = "localnemo-data"

_LOCALNEMO_HELP = (
    "Reads " + ", ".join(ENV_VARIABLES.values()) + " (the README says what each does). serve-local keeps its "
    f"data (tokens, sessions, uploads, exports) in LOCALNEMO_DATA_DIR, else ./{SERVE_LOCAL_DATA_DIR} (created "
    "readable by you only), so that a restarted server remembers them."
)


def _add_backend_choice(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--local", action="store_true",
        help="start localnemo (the offline FFmpeg backend) inside this process on a free loopback port and use "
        "it; it keeps its data beside NEMOBOT_DB (./nemobot.localnemo for ./nemobot.sqlite3) unless "
        "LOCALNEMO_DATA_DIR is set, and reads the other LOCALNEMO_* settings (see 'nemobot serve-local --help')",
    )
    group.add_argument(
        "--remote", action="store_true", help="use NEMO_API_BASE (the hosted NemoVideo) even if it looks unreachable"
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nemobot",
        description="Edit and generate videos by chatting, through NemoVideo or the local localnemo server.",
        epilog=_SETTINGS_HELP,
    )
    parser.add_argument("--version", action="version", version=f"nemobot {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    chat = commands.add_parser(
        "chat",
        help="chat with the bot in this terminal",
        description=(
            "A terminal chat with the bot. Each line is a message; '/upload PATH|URL ...' sends files. "
            "Interactive on a terminal; with piped input each line is handled after the previous one "
            "finished, and the command exits once all work is done. Unfinished exports of the terminal "
            "chat are resumed on start. Without --local/--remote the hosted NemoVideo is used when it can "
            "be reached (or NEMO_API_BASE is set), else localnemo."
        ),
        epilog=_SETTINGS_HELP,
    )
    _add_backend_choice(chat)
    chat.add_argument("--out", type=Path, default=Path("videos"),
                      help="save finished videos (and timeline pictures) in this folder (default ./videos)")
    chat.add_argument("--sample", action="store_true", help="start by uploading a generated 10-second sample clip")

    edit = commands.add_parser(
        "edit",
        help="one shot: upload, instruct, export, download",
        description=(
            "Upload INPUT files, send PROMPT, export and download the result. Each step runs only if the one "
            "before succeeded: when the upload or the edit fails nothing is exported, and the command exits 1 "
            "with a plain message (2 for a bad command line). Backend choice as for 'chat'."
        ),
        epilog=_SETTINGS_HELP,
    )
    edit.add_argument("inputs", nargs="+", metavar="INPUT", help="video, image or audio files (or http(s) links)")
    edit.add_argument("-p", "--prompt", required=True, help='what to do, e.g. "cut the pauses, add music"')
    edit.add_argument("-o", "--output", type=Path, default=Path("out.mp4"), help="where to save (default out.mp4)")
    _add_backend_choice(edit)

    telegram = commands.add_parser(
        "telegram",
        help="run the Telegram bot",
        description=(
            "Run the Telegram bot (long polling, or a webhook when TELEGRAM_WEBHOOK_URL is set). Reads "
            "TELEGRAM_BOT_TOKEN, TELEGRAM_API_BASE, TELEGRAM_FILE_API_BASE, TELEGRAM_LOCAL_MODE, "
            "TELEGRAM_ALLOWED_IDS, TELEGRAM_WEBHOOK_URL, TELEGRAM_WEBHOOK_LISTEN, TELEGRAM_WEBHOOK_PORT, "
            "TELEGRAM_WEBHOOK_SECRET, TELEGRAM_ALBUM_SECONDS."
        ),
        epilog=_SETTINGS_HELP,
    )
    _add_backend_choice(telegram)

    discord_cmd = commands.add_parser(
        "discord",
        help="run the Discord bot",
        description=(
            "Run the Discord bot (slash commands /edit /export /status /credits /new /help /reel and the "
            "'Add to reel' message command). Reads DISCORD_BOT_TOKEN, DISCORD_API_BASE, DISCORD_GATEWAY_URL, "
            "DISCORD_GUILD_IDS, DISCORD_MODERATOR_ROLE_IDS, DISCORD_ALLOWED_CHANNEL_IDS, "
            "DISCORD_COOLDOWN_SECONDS, DISCORD_MESSAGE_CONTENT, DISCORD_EDIT_SECONDS, and DISCORD_SHARD_COUNT with "
            "DISCORD_SHARD_IDS (this process runs those shards, e.g. 2 and \"0\")."
        ),
        epilog=_SETTINGS_HELP,
    )
    _add_backend_choice(discord_cmd)

    run = commands.add_parser(
        "run",
        help="run every chat platform whose token is set",
        description=(
            "Run the bot on every platform whose token is set (TELEGRAM_BOT_TOKEN, DISCORD_BOT_TOKEN), "
            "sharing one engine and database."
        ),
        epilog=_SETTINGS_HELP,
    )
    _add_backend_choice(run)

    _add_worker_command(commands)

    serve = commands.add_parser(
        "serve-local",
        help="run localnemo, the NemoVideo-compatible server, on this machine",
        description=(
            "Run localnemo: a NemoVideo-compatible HTTP/SSE server that edits with FFmpeg, the backend of "
            "the tests and of offline use. Point the bot at it with NEMO_API_BASE=http://HOST:PORT. "
            + _LOCALNEMO_HELP
        ),
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8765, help="port to listen on (default 8765; 0 = any free)")

    commands.add_parser(
        "render-worker",
        help="render the exports that serve-local queues in PostgreSQL (LOCALNEMO_QUEUE_DB)",
        description=(
            "Take renders from the queue that 'nemobot serve-local' keeps when LOCALNEMO_QUEUE_DB is set, and "
            "render them with FFmpeg into LOCALNEMO_SHARED_DIR (a folder the server and every worker mount). "
            "Run any number, on any machine. LOCALNEMO_WORKER_CONCURRENCY renders at once (default 1); a worker "
            "silent for LOCALNEMO_STALLED_SECONDS is taken for dead and its renders are done again by another. "
            "SIGTERM or Ctrl-C stops it once its renders under way are done. " + _LOCALNEMO_HELP
        ),
    )
    return parser


def _say(text: str) -> None:
    print(logs.redact(text), file=sys.stderr)


@contextlib.asynccontextmanager
async def _runtime(args: argparse.Namespace) -> AsyncIterator[Runtime]:
    async with runtime(local=getattr(args, "local", False), remote=getattr(args, "remote", False),
                       notify=_say) as run:
        yield run


def make_sample(path: Path, seconds: int = 10) -> Path:
    """A test-pattern clip with a tone and pauses, made with FFmpeg (the imageio-ffmpeg build unless one is
    installed)."""
    from bot.ffmpeg import ffmpeg_exe

    ffmpeg = ffmpeg_exe()
    # -nostdin and no stdin: FFmpeg otherwise reads keystrokes from the terminal and eats the chat's input.
    subprocess.run(
        [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate=30:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=330:duration={seconds}",
         # A second of silence every four seconds, so that "cut the pauses" has something to cut.
         "-af", "volume=enable='between(mod(t,4),2.8,3.8)':volume=0",
         "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)],
        check=True, stdin=subprocess.DEVNULL,
    )
    return path


async def _chat(args: argparse.Namespace) -> int:
    from adapters.console import ConsoleSettings, run_console

    console = ConsoleSettings()
    sample_dir: Path | None = None
    try:
        async with _runtime(args) as run:
            first: list[str] = []
            if args.sample:
                sample_dir = Path(tempfile.mkdtemp(prefix="nemobot-sample-"))
                sample = await asyncio.to_thread(make_sample, sample_dir / "sample.mp4")
                first.append(f"/upload {sample}")
            replies = await run_console(run.engine, out_dir=args.out, first_lines=first,
                                        edit_interval_seconds=console.edit_seconds)
    finally:
        if sample_dir is not None:
            # The sample was only ever a way to start: it does not outlive the chat.
            shutil.rmtree(sample_dir, ignore_errors=True)
    return 130 if replies.interrupted else 0


async def _edit(args: argparse.Namespace) -> int:
    from adapters.console import ConsoleFiles, ConsoleReplies, ConsoleSettings, parse_line
    from bot.messages import ChatKey, IncomingMessage
    from bot.outcome import Outcome

    missing = await asyncio.to_thread(
        lambda: [i for i in args.inputs if not i.startswith(("http://", "https://")) and not Path(i).is_file()]
    )
    if missing:
        print(f"nemobot: file not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    chat = ChatKey("edit", uuid.uuid4().hex[:12])
    upload = parse_line("/upload " + " ".join(_quote(i) for i in args.inputs), chat)
    if isinstance(upload, str):
        print(f"nemobot: {upload}", file=sys.stderr)
        return 2
    steps: list[tuple[str, IncomingMessage | str]] = [
        ("upload", upload), ("edit", parse_line(args.prompt, chat)), ("export", parse_line("export", chat)),
    ]
    # Beside the output: the result is downloaded there and renamed into place, never copied.
    args.output.parent.mkdir(parents=True, exist_ok=True)
    out_dir = Path(tempfile.mkdtemp(prefix=".nemobot-edit-", dir=args.output.parent))
    try:
        replies = ConsoleReplies(sys.stderr, out_dir, edit_interval_seconds=ConsoleSettings().edit_seconds)
        async with _runtime(args) as run:
            files = ConsoleFiles()
            for step, message in steps:
                assert not isinstance(message, str)
                # Each step only after the previous one did what was asked: a failed upload or edit must not
                # be followed by an export of what happens to be on the timeline.
                outcome = await (await run.engine.handle(message, replies, files)).wait()
                if outcome is not Outcome.DONE:
                    what = "changed nothing" if outcome is Outcome.UNCHANGED else "did not succeed"
                    print(f"nemobot: the {step} {what} (see the messages above); nothing was exported.",
                          file=sys.stderr)
                    return 1
        if not replies.videos:
            print("nemobot: no video was produced (see the messages above).", file=sys.stderr)
            return 1
        os.replace(replies.videos[-1], args.output)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    print(str(args.output))
    return 0


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


async def _run(args: argparse.Namespace, only: str | None = None) -> int:
    """Run the platforms whose tokens are set (or just ``only``) until interrupted."""
    from pydantic import ValidationError

    from adapters.common import PlatformFailure, PlatformRejected, PlatformUnreachable
    from adapters.discord import DiscordSettings
    from adapters.telegram import TelegramSettings
    from nemobot.compose import invalid_settings

    try:
        telegram_settings = TelegramSettings()
        discord_settings = DiscordSettings()
    except ValidationError as invalid:
        refused = TelegramSettings if invalid.title == TelegramSettings.__name__ else DiscordSettings
        _say(f"nemobot {only or 'run'}: {invalid_settings(invalid, refused)}")
        return 2
    wanted = {
        "telegram": telegram_settings.bot_token is not None and only in (None, "telegram"),
        "discord": discord_settings.bot_token is not None and only in (None, "discord"),
    }
    if only is not None and not wanted.get(only):
        print(f"nemobot {only}: {only.upper()}_BOT_TOKEN is not set.", file=sys.stderr)
        return 2
    if not any(wanted.values()):
        print(
            "nemobot run: no platform token is set (TELEGRAM_BOT_TOKEN, DISCORD_BOT_TOKEN). "
            "For the terminal chat use 'nemobot chat'.",
            file=sys.stderr,
        )
        return 2
    command = only or "run"
    start_settings = StartSettings()
    stop = asyncio.Event()
    fatal: list[PlatformFailure] = []

    def on_fatal(failure: PlatformFailure) -> None:
        fatal.append(failure)
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        async with _runtime(args) as run:
            makers = platform_adapters(
                run, telegram=telegram_settings if wanted["telegram"] else None,
                discord=discord_settings if wanted["discord"] else None, on_fatal=on_fatal,
            )
            for make in makers:
                # A stop request must not wait for a platform that is slow to answer its first call.
                starting = run.start_retrying(make, start_settings, lambda line: _say(f"nemobot {command}: {line}"))
                if not await until_stopped(starting, stop):
                    break
            await stop.wait()
            log.info("nemobot.stopping")
    except PlatformFailure as failure:
        fatal.append(failure)
    if fatal:
        # One plain line, and a status that says which kind: 2 a setting to fix, 3 out of reach, 1 other.
        first = fatal[0]
        _say(f"nemobot {command}: {first}")
        if isinstance(first, PlatformRejected):
            return 2
        return 3 if isinstance(first, PlatformUnreachable) else 1
    return 0


async def _telegram(args: argparse.Namespace) -> int:
    return await _run(args, only="telegram")


async def _discord(args: argparse.Namespace) -> int:
    return await _run(args, only="discord")


# -- nemobot worker: the durable job queue's workers, without receiving ----------------------------------------

def _add_worker_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    commands.add_parser(
        "worker",
        help="follow and deliver exports from the shared job queue (PostgreSQL), receiving no messages",
        description=(
            "Run export jobs only: follow renders and deliver the results, for bot processes sharing the "
            "PostgreSQL database that NEMOBOT_DB names (postgresql://...). Receives nothing from the platform. "
            "Delivers to Telegram (TELEGRAM_BOT_TOKEN, TELEGRAM_API_BASE, TELEGRAM_FILE_API_BASE, "
            "TELEGRAM_LOCAL_MODE) and to Discord (DISCORD_BOT_TOKEN, DISCORD_API_BASE; over its REST API, "
            "without a gateway connection), to each platform whose token is set. Reads "
            "NEMOBOT_QUEUE_CONCURRENCY, NEMOBOT_QUEUE_CLAIM_LEASE_SECONDS, NEMOBOT_QUEUE_HEARTBEAT_SECONDS, "
            "NEMOBOT_QUEUE_STALLED_SECONDS, NEMOBOT_QUEUE_POLL_SECONDS and NEMO_API_BASE."
        ),
        epilog=_SETTINGS_HELP,
    )


async def _worker(args: argparse.Namespace) -> int:
    from adapters.common import PlatformFailure, PlatformRejected, PlatformUnreachable
    from adapters.discord import DiscordSender, DiscordSettings
    from adapters.telegram import TelegramSender, TelegramSettings
    from bot.config import BotSettings
    from bot.messages import Adapter
    from storage import is_postgres_url

    if not is_postgres_url(BotSettings().db):
        print("nemobot worker: NEMOBOT_DB must be a postgresql:// URL: with SQLite the bot process runs its own "
              "jobs.", file=sys.stderr)
        return 2
    telegram_settings = TelegramSettings()
    discord_settings = DiscordSettings()
    senders: list[Callable[[], Adapter]] = []
    if telegram_settings.bot_token is not None:
        os.environ.setdefault("PTB_TIMEDELTA", "true")  # as compose.platform_adapters, for the same reason
        senders.append(lambda: TelegramSender(telegram_settings))
    if discord_settings.bot_token is not None:
        senders.append(lambda: DiscordSender(discord_settings))
    if not senders:
        print("nemobot worker: set TELEGRAM_BOT_TOKEN or DISCORD_BOT_TOKEN (or both): the platforms whose "
              "results this worker delivers.", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        # The backend is the configured one: an embedded localnemo would be this process's alone.
        async with runtime(remote=True, notify=_say) as run:
            async def start_all() -> None:
                for make in senders:
                    sender = await run.start_retrying(make, StartSettings(),
                                                      lambda line: _say(f"nemobot worker: {line}"))
                    resumed = await run.engine.resume(sender)
                    log.info("nemobot.worker.started platform=%s resumed_exports=%d", sender.name, resumed)

            if await until_stopped(start_all(), stop):
                await stop.wait()
            log.info("nemobot.stopping")
    except PlatformFailure as failure:
        _say(f"nemobot worker: {failure}")
        if isinstance(failure, PlatformRejected):
            return 2
        return 3 if isinstance(failure, PlatformUnreachable) else 1
    return 0


def _serve_local_config() -> LocalNemoConfig:
    # A folder that outlives the process: a community server restarted must not forget every token and job.
    config = LocalNemoConfig.from_env(default_data_dir=Path(os.path.abspath(SERVE_LOCAL_DATA_DIR)))
    source = "LOCALNEMO_DATA_DIR" if os.environ.get("LOCALNEMO_DATA_DIR") else "the default"
    log.info("nemobot.serve_local.data_dir path=%s from=%s", config.data_dir, source)
    return config


async def _serve_local(host: str, port: int, config: LocalNemoConfig) -> None:
    from localnemo.app import serve_forever

    await serve_forever(host, port, config)


async def _render_worker(config: LocalNemoConfig) -> int:
    if config.queue_db is None:
        print("nemobot render-worker: LOCALNEMO_QUEUE_DB is not set: give it the postgresql:// URL that "
              "'nemobot serve-local' queues its renders in.", file=sys.stderr)
        return 2
    from localnemo.renderqueue import run_render_worker

    await run_render_worker(config)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    # In the terminal chat the log shares the screen with the conversation: only problems by default.
    _configure_logging("WARNING" if args.command in ("chat", "edit") else "INFO", chat=args.command == "chat")
    try:
        if args.command == "serve-local":
            asyncio.run(_serve_local(args.host, args.port, _serve_local_config()))
            return 0
        if args.command == "render-worker":
            return asyncio.run(_render_worker(_serve_local_config()))
        handler = {"chat": _chat, "edit": _edit, "run": _run, "telegram": _telegram,
                   "discord": _discord, "worker": _worker}[args.command]
        return asyncio.run(handler(args))
    except KeyboardInterrupt:
        return 130
    except Exception:
        # Through the log handler, so that the traceback is redacted like every other line.
        log.critical("nemobot.crashed", exc_info=True)
        return 1


def entry() -> NoReturn:
    """The ``nemobot`` command: :func:`main`, then out at once. By then everything is closed and written (the
    event loop, its threads, the database, the files); what is flushed here is the log and the terminal. The
    interpreter's own teardown — freeing, one by one, tens of thousands of objects the system frees anyway —
    took 0.3 s to 0.6 s at the end of every command, a wait for nobody (bench/edit.py)."""
    code = main()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
