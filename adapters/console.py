"""The terminal chat: each line is a message; ``/upload PATH|URL …`` attaches files.

Interactive on a TTY: a visible prompt, and each job's status as one line redrawn in place (``\r`` and an
erase) with its percentage and time left, kept just above the prompt; Ctrl-C stops at once (while an export
renders, the first Ctrl-C waits for it and a second one leaves it to be resumed at the next start). With piped
input every line is handled after the previous one has finished (exports included), each status update is
printed as a plain line, and the chat ends once all work is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import shlex
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.engine import Engine
from bot.messages import (
    Attachment,
    Button,
    Capabilities,
    ChatKey,
    DeliveryTarget,
    IncomingMessage,
    MessageHandle,
    Replies,
    WorkingAction,
)
from bot.nemo.uploads import UploadSource, attachment_kind, mime_for

log = logging.getLogger(__name__)

CHAT = ChatKey("console", "local")
_UNLIMITED = 1 << 62
DEFAULT_EDIT_SECONDS = 0.5


class ConsoleSettings(BaseSettings):
    """The terminal chat's own settings (``nemobot chat`` and ``nemobot edit``)."""

    model_config = SettingsConfigDict(env_prefix="NEMOBOT_CONSOLE_", env_file=".env", extra="ignore")

    edit_seconds: float = Field(
        DEFAULT_EDIT_SECONDS, ge=0, description="Least time between printed updates of one status message."
    )


PROMPT = "you> "
# ANSI: erase the whole line; move the cursor one line up.
_ERASE = "\r\x1b[2K"
_UP = "\x1b[1A"
_PERCENT = re.compile(r"(\d{1,3})%")
_MAX_LIVE = 3


class ConsoleReplies:
    """Prints what the bot says. Piped: every status edit is a new plain line. On a TTY (``live=True``): a
    one-line status is a live line, redrawn in place when edited (with the time left when it shows a
    percentage), drawn above the prompt; it is written for good once its text is final (several lines or
    buttons) or newer jobs push it out."""

    def __init__(
        self, out: TextIO, out_dir: Path | None = None, *, edit_interval_seconds: float = DEFAULT_EDIT_SECONDS,
        live: bool = False,
    ) -> None:
        self._out = out
        self.out_dir = out_dir
        self.live = live
        self.prompting = False
        self.interrupted = False  # the chat was stopped with Ctrl-C
        self._lines: dict[str, str] = {}  # live lines on screen, oldest first
        self._drawn = 0  # live lines currently drawn above the prompt
        self._started: dict[str, tuple[float, int]] = {}  # per live line: when its percentage was first seen
        self._ids = itertools.count(1)
        self._texts: dict[str, str] = {}
        self.transcript: list[str] = []
        self.videos: list[Path] = []
        self.images: list[Path] = []
        self.documents: list[Path] = []
        self.last_video: Path | None = None
        self._caps = Capabilities(
            max_upload_bytes=_UNLIMITED if out_dir is not None else 0,
            max_message_length=100_000,
            max_caption_length=100_000,
            can_edit=True,
            edit_interval_seconds=edit_interval_seconds,
            images=out_dir is not None,
            download_dir=out_dir,
            edits_rate_limited=False,
            documents=out_dir is not None,
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    def _print(self, text: str) -> None:
        self.transcript.append(text)
        if not self.live:
            self._out.write(text + "\n")
            self._out.flush()
            return
        self._redraw(text)

    def _redraw(self, permanent: str | None = None) -> None:
        """Erase the live lines and the prompt, write ``permanent`` for good, then draw them again."""
        parts = [_ERASE] if self.prompting else []
        parts += [_UP + _ERASE] * self._drawn
        if permanent is not None:
            parts.append(permanent + "\n")
        width = max(20, shutil.get_terminal_size().columns - 1)
        # Cut to the width: a wrapped line would take two rows and the redraw would erase the wrong ones.
        parts += [line[:width] + "\n" for line in self._lines.values()]
        self._drawn = len(self._lines)
        if self.prompting:
            parts.append(PROMPT)
        self._out.write("".join(parts))
        self._out.flush()

    def _with_time_left(self, key: str, text: str) -> str:
        match = _PERCENT.search(text)
        if match is None:
            return text
        percent, now = int(match.group(1)), time.monotonic()
        first = self._started.setdefault(key, (now, percent))
        done = percent - first[1]
        if done <= 0 or percent >= 100:
            return text
        left = (now - first[0]) * (100 - percent) / done
        return f"{text} · ⏱ ~{_duration(left)}"

    def _show(self, key: str, text: str, buttons: Sequence[Button]) -> None:
        if not self.live:
            self._print(f"nemobot> {text}{self._hint(buttons)}")
            return
        line = f"nemobot> {text}"
        if "\n" in text or buttons:
            # Final: written once for good, and the job's live line goes.
            self._lines.pop(key, None)
            self._started.pop(key, None)
            self._print(f"{line}{self._hint(buttons)}")
            return
        self.transcript.append(line)
        self._lines[key] = self._with_time_left(key, line)
        retired: list[str] = []
        while len(self._lines) > _MAX_LIVE:
            oldest = next(iter(self._lines))
            retired.append(self._lines.pop(oldest))
        self._redraw("\n".join(retired) if retired else None)

    def prompt(self, on: bool) -> None:
        """Show (or stop showing) the input prompt below everything else."""
        if not self.live or on == self.prompting:
            return
        self.prompting = on
        if on:
            self._out.write(PROMPT)
            self._out.flush()

    def answered(self) -> None:
        """The user pressed Enter: the prompt line and what was typed stay; what is drawn above is history."""
        if self.prompting:
            self.prompting = False
            self._drawn = 0

    def notice(self, text: str) -> None:
        """A line of the terminal's own (not the bot's), written for good (the live lines too, as they are)."""
        retired = list(self._lines.values())
        self._lines.clear()
        self._started.clear()
        if self.live:
            self._redraw("\n".join([*retired, text]))
        else:
            self._out.write(text + "\n")
            self._out.flush()

    def close(self) -> None:
        """Leave the screen clean: the live lines written for good, no prompt."""
        if self.live:
            if self.prompting:
                self._out.write(_ERASE)
                self.prompting = False
            self._lines.clear()
            self._drawn = 0
            self._out.flush()

    @staticmethod
    def _hint(buttons: Sequence[Button]) -> str:
        return f"\n   [{'  '.join(b.command for b in buttons)}]" if buttons else ""

    async def send_text(self, text: str, *, buttons: Sequence[Button] = ()) -> MessageHandle:
        handle = MessageHandle(str(next(self._ids)))
        self._texts[handle.id] = text
        self._show(handle.id, text, buttons)
        return handle

    async def edit_text(self, handle: MessageHandle, text: str, *, buttons: Sequence[Button] = ()) -> None:
        if self._texts.get(handle.id) == text:
            return
        self._texts[handle.id] = text
        self._show(handle.id, text, buttons)

    async def send_video(self, path: Path, *, caption: str, buttons: Sequence[Button] = ()) -> MessageHandle:
        assert self.out_dir is not None, "capabilities say no files without --out"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        target = self.out_dir / f"nemobot-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}.mp4"
        # Downloaded into out_dir (capabilities.download_dir): a rename. A copy only if it came from elsewhere.
        await asyncio.to_thread(_move, path, target)
        self.videos.append(target)
        self.last_video = target
        return await self.send_text(f"🎞️ {caption} saved to {target}", buttons=buttons)

    async def send_image(self, path: Path, *, caption: str) -> MessageHandle:
        assert self.out_dir is not None, "capabilities say no pictures without a folder"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        target = self.out_dir / f"nemobot-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}{path.suffix}"
        await asyncio.to_thread(shutil.copyfile, path, target)
        self.images.append(target)
        return await self.send_text(f"{caption}: {target}")

    async def send_document(self, path: Path, *, filename: str, caption: str) -> MessageHandle:
        """Saved beside the video it belongs to (same name, its own extension), else in the folder."""
        assert self.out_dir is not None, "capabilities say no files without a folder"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        video = self.last_video
        target = video.with_suffix(Path(filename).suffix) if video is not None else self.out_dir / filename
        await asyncio.to_thread(shutil.copyfile, path, target)
        self.documents.append(target)
        return await self.send_text(f"{caption}: {target}")

    async def show_working(self, action: WorkingAction) -> None:
        return None


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds} s" if seconds < 60 else f"{seconds // 60} min {seconds % 60:02d} s"


def _move(source: Path, target: Path) -> None:
    try:
        os.replace(source, target)
    except OSError:
        shutil.copyfile(source, target)


class ConsoleFiles:
    """Local files are streamed from disk; nothing is copied first."""

    async def open(self, attachment: Attachment) -> UploadSource:
        if attachment.ref is None:
            raise ValueError(f"{attachment.filename} has no path")
        path = Path(attachment.ref)
        return UploadSource.from_path(path, content_type=attachment.mime_type)


class ConsoleAdapter:
    """The terminal as an adapter: one chat, answered on the terminal whatever the target."""

    def __init__(self, replies: ConsoleReplies) -> None:
        self._replies = replies

    @property
    def name(self) -> str:
        return CHAT.platform

    @property
    def capabilities(self) -> Capabilities:
        return self._replies.capabilities

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def replies_for(self, target: DeliveryTarget) -> Replies:
        return self._replies


def parse_line(line: str, chat: ChatKey = CHAT) -> IncomingMessage | str:
    """A message, or a plain-language complaint about the line (a missing file, say)."""
    text = line.strip()
    message_id = uuid.uuid4().hex
    if not text.lower().startswith("/upload"):
        return IncomingMessage(chat=chat, user_id="local", message_id=message_id, text=text)
    try:
        tokens = shlex.split(text[len("/upload"):])
    except ValueError as exc:
        return f"I couldn't read that line ({exc})."
    if not tokens:
        return "Usage: /upload PATH|URL … (then tell me what to do with them)"
    attachments: list[Attachment] = []
    for token in tokens:
        if token.lower().startswith(("http://", "https://")):
            name = token.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or "link"
            attachments.append(Attachment(kind=attachment_kind(name), filename=name, url=token))
            continue
        path = Path(token).expanduser()
        if not path.is_file():
            return f"File not found: {token}"
        attachments.append(Attachment(
            kind=attachment_kind(path.name), filename=path.name, mime_type=mime_for(path.name),
            size=path.stat().st_size, ref=str(path.resolve()),
        ))
    return IncomingMessage(chat=chat, user_id="local", message_id=message_id, attachments=tuple(attachments))


class _TerminalLines:
    """Lines typed on a terminal, read by the event loop itself (``add_reader``) rather than by a thread
    blocked in ``readline``, which would hold the process up after Ctrl-C until the next Enter."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = b""
        self._lines: asyncio.Queue[str] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(fd, self._ready)

    def _ready(self) -> None:
        try:
            data = os.read(self._fd, 4096)
        except OSError:
            data = b""
        if not data:  # Ctrl-D on an empty line, or the terminal went away
            self.close()
            self._lines.put_nowait("")
            return
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            self._lines.put_nowait(line.decode(errors="replace") + "\n")

    async def readline(self) -> str:
        return await self._lines.get()

    def close(self) -> None:
        self._loop.remove_reader(self._fd)


def _terminal_fd(stream: TextIO) -> int | None:
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    return fd if os.isatty(fd) else None


async def run_console(
    engine: Engine,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    out_dir: Path | None = None,
    interactive: bool | None = None,
    first_lines: Sequence[str] = (),
    edit_interval_seconds: float = DEFAULT_EDIT_SECONDS,
) -> ConsoleReplies:
    """Chat until Ctrl-D (or the end of piped input) and all work is done, or until Ctrl-C on a terminal
    (then ``replies.interrupted`` is set)."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    if interactive is None:
        interactive = stdin.isatty()
    live = interactive and stdout.isatty()
    replies = ConsoleReplies(stdout, out_dir, edit_interval_seconds=edit_interval_seconds, live=live)
    files = ConsoleFiles()
    resumed = await engine.resume(ConsoleAdapter(replies))
    if resumed:
        log.info("console.resumed exports=%d", resumed)
    if interactive:
        stdout.write(
            "nemobot — type what you want; /upload PATH|URL … to send clips, /export, /status, /help. "
            "Ctrl-D to quit, Ctrl-C to stop.\n"
        )
        stdout.flush()

    async def submit(line: str) -> None:
        parsed = parse_line(line)
        if isinstance(parsed, str):
            await replies.send_text(parsed)
            return
        await engine.handle(parsed, replies, files)
        if not interactive:
            await engine.join(CHAT)

    fd = _terminal_fd(stdin) if interactive else None
    reader = _TerminalLines(fd) if fd is not None else None
    interrupts: asyncio.Queue[None] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    handling_sigint = False
    if interactive:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGINT, interrupts.put_nowait, None)
            handling_sigint = True

    async def until_interrupted(work: asyncio.Future[Any] | asyncio.Task[Any]) -> bool:
        """Wait for ``work``; False (and ``work`` cancelled) when Ctrl-C came first."""
        stop = asyncio.ensure_future(interrupts.get())
        done, _ = await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        if work in done:
            stop.cancel()
            return True
        work.cancel()
        return False

    try:
        for line in first_lines:
            if not await until_interrupted(asyncio.ensure_future(submit(line))):
                await _stop(engine, replies, until_interrupted)
                return replies
        while True:
            replies.prompt(True)
            reading = asyncio.ensure_future(reader.readline() if reader else asyncio.to_thread(stdin.readline))
            if not await until_interrupted(reading):
                await _stop(engine, replies, until_interrupted)
                return replies
            replies.answered()
            line = reading.result()
            if not line:
                break
            if line.strip():
                await submit(line)
        if not await until_interrupted(asyncio.ensure_future(engine.join())):
            await _stop(engine, replies, until_interrupted)
        return replies
    finally:
        if reader is not None:
            reader.close()
        if handling_sigint:
            loop.remove_signal_handler(signal.SIGINT)
        replies.close()


async def _stop(
    engine: Engine, replies: ConsoleReplies,
    until_interrupted: Callable[[asyncio.Future[Any] | asyncio.Task[Any]], Awaitable[bool]],
) -> None:
    """After Ctrl-C: stop at once, unless an export is rendering; then wait for it, and a second Ctrl-C
    leaves it stored, to be resumed at the next start."""
    replies.interrupted = True
    if engine.exporting():
        replies.notice("⏳ Your export is still rendering: waiting for it. Press Ctrl-C again to leave it; it will "
                       "be resumed the next time you start nemobot chat.")
        if not await until_interrupted(asyncio.ensure_future(engine.join())):
            replies.notice("🛑 Stopped. Your export was left unfinished: it will be resumed the next time you "
                           "start nemobot chat.")
            return
    replies.notice("🛑 Stopped.")
