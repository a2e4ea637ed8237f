"""The terminal chat: each line is a message; ``/upload PATH|URL …`` attaches files.

Interactive on a TTY. With piped input every line is handled after the previous one has finished
(exports included), and the chat ends once all work is done.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import shlex
import shutil
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

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


class ConsoleReplies:
    """Prints what the bot says. Status edits are printed as new lines (a terminal has no message to edit)."""

    def __init__(
        self, out: TextIO, out_dir: Path | None = None, *, edit_interval_seconds: float = DEFAULT_EDIT_SECONDS
    ) -> None:
        self._out = out
        self.out_dir = out_dir
        self._ids = itertools.count(1)
        self._texts: dict[str, str] = {}
        self.transcript: list[str] = []
        self.videos: list[Path] = []
        self._caps = Capabilities(
            max_upload_bytes=_UNLIMITED if out_dir is not None else 0,
            max_message_length=100_000,
            max_caption_length=100_000,
            can_edit=True,
            edit_interval_seconds=edit_interval_seconds,
            download_dir=out_dir,
            edits_rate_limited=False,
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    def _print(self, text: str) -> None:
        self.transcript.append(text)
        self._out.write(text + "\n")
        self._out.flush()

    @staticmethod
    def _hint(buttons: Sequence[Button]) -> str:
        return f"\n   [{'  '.join(b.command for b in buttons)}]" if buttons else ""

    async def send_text(self, text: str, *, buttons: Sequence[Button] = ()) -> MessageHandle:
        handle = MessageHandle(str(next(self._ids)))
        self._texts[handle.id] = text
        self._print(f"nemobot> {text}{self._hint(buttons)}")
        return handle

    async def edit_text(self, handle: MessageHandle, text: str, *, buttons: Sequence[Button] = ()) -> None:
        if self._texts.get(handle.id) == text:
            return
        self._texts[handle.id] = text
        self._print(f"nemobot> {text}{self._hint(buttons)}")

    async def send_video(self, path: Path, *, caption: str, buttons: Sequence[Button] = ()) -> MessageHandle:
        assert self.out_dir is not None, "capabilities say no files without --out"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        target = self.out_dir / f"nemobot-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}.mp4"
        # Downloaded into out_dir (capabilities.download_dir): a rename. A copy only if it came from elsewhere.
        await asyncio.to_thread(_move, path, target)
        self.videos.append(target)
        return await self.send_text(f"🎞️ {caption} saved to {target}", buttons=buttons)

    async def show_working(self, action: WorkingAction) -> None:
        return None


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
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    if interactive is None:
        interactive = stdin.isatty()
    replies = ConsoleReplies(stdout, out_dir, edit_interval_seconds=edit_interval_seconds)
    files = ConsoleFiles()
    resumed = await engine.resume(ConsoleAdapter(replies))
    if resumed:
        log.info("console.resumed exports=%d", resumed)
    if interactive:
        stdout.write(
            "nemobot — type what you want; /upload PATH|URL … to send clips, /export, /status, /help. "
            "Ctrl-D to quit.\n"
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

    for line in first_lines:
        await submit(line)
    while True:
        line = await asyncio.to_thread(stdin.readline)
        if not line:
            break
        if line.strip():
            await submit(line)
    await engine.join()
    return replies
