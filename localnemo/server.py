"""localnemo: a NemoVideo-compatible HTTP server on aiohttp.web, run locally.

It speaks the protocol of docs/nemo-api.md (tokens, sessions, uploads, the ``/run_sse`` event stream in
both documented dialects, state, credits, exports, claim links) over in-memory records and files under
a data directory. It is the backend of the bot's client tests and, with a real renderer, an offline
engine. Tests steer it through ``FaultPlan`` (injected errors, broken streams) and read its call log.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import itertools
import json
import logging
import mimetypes
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Literal
from urllib.parse import unquote

import aiohttp
import aiohttp.abc
from aiohttp import web
from yarl import URL

from localnemo import timeline
from localnemo.agent import (
    Agent,
    AgentError,
    AgentEvent,
    AgentText,
    AgentToolCall,
    AgentToolResult,
    PauseSettings,
    PlannerAgent,
)
from localnemo.config import Dialect, LocalNemoConfig, resolution_lines
from localnemo.faults import Call, FailFault, FaultPlan, StreamFault
from localnemo.media import MediaInfo, probe
from localnemo.render import CopyRenderer, FFmpegRenderer, Renderer, RenderError, RenderSettings
from localnemo.state import LocalNemoState, RenderJob, SessionRecord, UserRecord
from localnemo.subtitles import Cue, SubtitleError, read_cues

log = logging.getLogger(__name__)

FileKind = Literal["video", "image", "audio", "subtitle"]

# Captions files (subtitle) are a localnemo addition: the hosted backend's list has no text formats.
ACCEPTED_EXTENSIONS: dict[str, FileKind] = {
    **dict.fromkeys(("mp4", "mov", "avi", "webm", "mkv"), "video"),
    **dict.fromkeys(("jpg", "jpeg", "png", "gif", "webp"), "image"),
    **dict.fromkeys(("mp3", "wav", "m4a", "aac"), "audio"),
    **dict.fromkeys(("srt", "vtt"), "subtitle"),
}
ACCEPTED_FORMATS_TEXT = (
    "mp4, mov, avi, webm, mkv (video); jpg, jpeg, png, gif, webp (image); mp3, wav, m4a, aac (audio); "
    "srt, vtt (captions)"
)
# Which MIME major types a declared content type may have for each kind of extension: containers
# such as mp4/webm/m4a are labelled audio/* or video/* interchangeably by browsers and platforms;
# captions come as text/vtt, application/x-subrip or text/plain.
_ALLOWED_MAJORS: dict[FileKind, frozenset[str]] = {
    "video": frozenset({"video", "audio"}),
    "audio": frozenset({"audio", "video"}),
    "image": frozenset({"image"}),
    "subtitle": frozenset({"text", "application"}),
}
# Redirects followed when fetching an upload by URL (each hop is checked like the first URL).
_MAX_REDIRECTS = 5
_GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})
_ATTRIBUTION_HEADERS = ("X-Skill-Source", "X-Skill-Version", "X-Skill-Platform")
_RENDER_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_STORED_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,200}$")
_CHUNK = 1 << 20
_CLAIM_TTL_SECONDS = 3600
_MAX_URLS = 20
# How often a waiting stream checks whether its client went away: aiohttp does not cancel handlers
# when a client disconnects (handler_cancellation is off by default).
_POLL_SECONDS = 0.2


class ApiError(Exception):
    """An error answer: HTTP status and the backend's ``{"code", "message"}`` body."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def response(self) -> web.Response:
        return error_response(self.status, self.code, self.message)


def error_response(status: int, code: int, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status)


def ok(data: Mapping[str, Any]) -> web.Response:
    return web.json_response({"code": 0, "data": data})


def _now_ms() -> int:
    return int(time.time() * 1000)


class _ClientGone(Exception):
    """The stream's client disconnected, or the server is shutting down."""


# ---------------------------------------------------------------------------------------------------
# The event stream


class _WireFormat:
    """Renders neutral agent events as the JSON payloads of one dialect, for one turn."""

    def __init__(self, dialect: Dialect, *, partial_text: bool) -> None:
        self.dialect = dialect
        self.partial_text = partial_text
        self.invocation_id = "e-" + secrets.token_hex(4)
        self.spoke = False
        # A result without a call id answers the latest call of the same tool (ADK pairs them by id).
        self._last_call_ids: dict[str, str] = {}

    def render(self, event: AgentEvent) -> list[dict[str, Any]]:
        if isinstance(event, AgentText | AgentError):
            self.spoke = True
        if self.dialect == "simple":
            return [self._simple(event)]
        return self._adk(event)

    def finish(self) -> list[dict[str, Any]]:
        """What ends the turn: in ADK a turn without any text ends with an empty, turn-complete event."""
        if self.dialect == "adk" and not self.spoke:
            return [
                self._adk_event(
                    {"role": "model", "parts": []}, actions=True, extra={"turnComplete": True}, partial=None
                )
            ]
        return []

    def _simple(self, event: AgentEvent) -> dict[str, Any]:
        if isinstance(event, AgentText):
            return {"type": "text", "content": event.text}
        if isinstance(event, AgentToolCall):
            return {"type": "tool_call", "name": event.name, "args": event.args}
        if isinstance(event, AgentToolResult):
            return {"type": "tool_result", "name": event.name, "result": event.result}
        # The simple dialect documents no error event; this is the generic documented error form.
        return {"error": event.message}

    def _adk(self, event: AgentEvent) -> list[dict[str, Any]]:
        if isinstance(event, AgentText):
            events: list[dict[str, Any]] = []
            chunks = _chunks(event.text) if self.partial_text else [event.text]
            if len(chunks) > 1:
                for chunk in chunks:
                    events.append(self._adk_event({"role": "model", "parts": [{"text": chunk}]}, partial=True))
            events.append(
                self._adk_event({"role": "model", "parts": [{"text": event.text}]}, partial=False, actions=True)
            )
            return events
        if isinstance(event, AgentToolCall):
            self._last_call_ids[event.name] = event.call_id
            part = {"functionCall": {"id": event.call_id, "name": event.name, "args": event.args}}
            return [
                self._adk_event(
                    {"role": "model", "parts": [part]}, actions=True, extra={"longRunningToolIds": []}, partial=None
                )
            ]
        if isinstance(event, AgentToolResult):
            call_id = event.call_id or self._last_call_ids.get(event.name, "")
            part = {"functionResponse": {"id": call_id, "name": event.name, "response": event.result}}
            return [self._adk_event({"role": "user", "parts": [part]}, actions=True, partial=None)]
        if event.system:
            return [
                self._adk_event(
                    {"role": "model", "parts": [{"text": f"Error: {event.message}"}]}, partial=None, author="system"
                )
            ]
        return [{"error": event.message}]

    def _adk_event(
        self,
        content: dict[str, Any],
        *,
        partial: bool | None,
        actions: bool = False,
        extra: dict[str, Any] | None = None,
        author: str = "nemo_agent",
    ) -> dict[str, Any]:
        event: dict[str, Any] = {"content": content}
        if partial is not None:
            event["partial"] = partial
        event["invocationId"] = self.invocation_id
        event["author"] = author
        if actions:
            event["actions"] = _empty_actions()
        if extra:
            event.update(extra)
        event["id"] = secrets.token_urlsafe(6)[:8]
        event["timestamp"] = round(time.time(), 3)
        return event


def _empty_actions() -> dict[str, Any]:
    return {"stateDelta": {}, "artifactDelta": {}, "requestedAuthConfigs": {}}


def _chunks(text: str, pieces: int = 3) -> list[str]:
    """Split a text in about ``pieces`` parts at spaces (anywhere for text without spaces)."""
    if len(text) < 12:
        return [text]
    cuts: list[int] = []
    for index in range(1, pieces):
        target = len(text) * index // pieces
        space = text.find(" ", target)
        cut = space + 1 if space != -1 else target
        if (cuts and cut <= cuts[-1]) or cut >= len(text):
            continue
        cuts.append(cut)
    bounds = [0, *cuts, len(text)]
    return [text[start:end] for start, end in itertools.pairwise(bounds) if text[start:end]]


class _SseWriter:
    """Writes events and heartbeats to one response and notices when its client is gone."""

    def __init__(
        self,
        request: web.Request,
        response: web.StreamResponse,
        *,
        dialect: Dialect,
        heartbeat_seconds: float,
        closing: asyncio.Event,
    ) -> None:
        self.request = request
        self.response = response
        self.heartbeat_seconds = heartbeat_seconds
        self.closing = closing
        self.last_write = asyncio.get_running_loop().time()
        # Every documented heartbeat form, in turn; ADK streams use the ones that carry no JSON.
        self.heartbeats = [b": ping\n\n", b"data:\n\n"]
        if dialect == "simple":
            self.heartbeats.append(b'data: {"type":"heartbeat"}\n\n')
        self._heartbeat_index = 0

    def client_gone(self) -> bool:
        transport = self.request.transport
        return transport is None or transport.is_closing() or self.closing.is_set()

    async def send(self, payload: Mapping[str, Any]) -> None:
        data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        await self._write(f"data: {data}\n\n".encode())

    async def heartbeat(self) -> None:
        form = self.heartbeats[self._heartbeat_index % len(self.heartbeats)]
        self._heartbeat_index += 1
        await self._write(form)

    async def _write(self, data: bytes) -> None:
        if self.client_gone():
            raise _ClientGone
        try:
            await self.response.write(data)
        except ConnectionError as exc:
            raise _ClientGone from exc
        self.last_write = asyncio.get_running_loop().time()

    async def idle(
        self, waiter: asyncio.Future[Any] | None = None, seconds: float | None = None, *, heartbeats: bool = True
    ) -> None:
        """Wait until ``waiter`` is done or ``seconds`` have passed (None: only until the client goes
        away), sending heartbeats when the stream has been quiet for ``heartbeat_seconds``."""
        loop = asyncio.get_running_loop()
        end = None if seconds is None else loop.time() + seconds
        while True:
            if waiter is not None and waiter.done():
                return
            now = loop.time()
            if end is not None and now >= end:
                return
            if self.client_gone():
                raise _ClientGone
            timeout = _POLL_SECONDS
            if end is not None:
                timeout = min(timeout, end - now)
            if heartbeats:
                due = self.last_write + self.heartbeat_seconds - now
                if due <= 0:
                    await self.heartbeat()
                    continue
                timeout = min(timeout, due)
            if waiter is not None:
                await asyncio.wait({waiter}, timeout=timeout)
            else:
                await asyncio.sleep(timeout)

    def abort(self) -> None:
        """End the connection without ending the chunked body: the client sees an incomplete read."""
        transport = self.request.transport
        if transport is not None and not transport.is_closing():
            transport.close()


# ---------------------------------------------------------------------------------------------------
# Uploads


@dataclass
class _Received:
    original_name: str
    stored_path: Path
    kind: FileKind
    sha256: str
    size: int
    info: MediaInfo | None = None
    cues: list[Cue] | None = None


def _kind_for(filename: str, content_type: str | None) -> tuple[FileKind, str]:
    """The kind and lower-case extension of an acceptable file, else ApiError 4001."""
    extension = Path(filename).suffix.lower().lstrip(".")
    kind = ACCEPTED_EXTENSIONS.get(extension)
    declared = (content_type or "").split(";", 1)[0].strip().lower()
    if kind is not None and declared not in _GENERIC_TYPES:
        major = declared.split("/", 1)[0]
        if major not in _ALLOWED_MAJORS[kind]:
            kind = None
    if kind is None:
        shown = Path(filename).name or "file"
        raise ApiError(
            400, 4001, f"unsupported file type: {shown} ({declared or 'no type'}). Accepted: {ACCEPTED_FORMATS_TEXT}"
        )
    return kind, extension


def _stored_name(filename: str, extension: str) -> str:
    """A safe, unique file name: no directories, no leading dot, ASCII only."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(filename).stem).strip("._")[:80] or "file"
    return f"{secrets.token_hex(4)}_{stem}.{extension}"


def _write_chunk(writer: BinaryIO, digest: Any, chunk: bytes) -> None:
    writer.write(chunk)
    digest.update(chunk)


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        log.warning("localnemo.cleanup.failed path=%s", path.name)


async def _save_stream(chunks: AsyncIterator[bytes], target: Path, *, limit: int, display_name: str) -> tuple[str, int]:
    """Stream chunks into ``target``, hashing on the way; over ``limit`` bytes: remove it, ApiError 4002."""
    digest = hashlib.sha256()
    size = 0
    writer = await asyncio.to_thread(target.open, "wb")
    try:
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise ApiError(
                    413, 4002, f"file too large: {display_name} is over the {limit // (1024 * 1024)} MB limit"
                )
            await asyncio.to_thread(_write_chunk, writer, digest, chunk)
    except BaseException:
        await asyncio.to_thread(writer.close)
        await asyncio.to_thread(_unlink_quietly, target)
        raise
    await asyncio.to_thread(writer.close)
    return digest.hexdigest(), size


async def _part_chunks(part: aiohttp.BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(_CHUNK):
        yield chunk


def _iter_strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _iter_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _iter_strings(item)


# ---------------------------------------------------------------------------------------------------
# The application


class _Server:
    """The handlers and the runtime they share (background tasks, the outgoing HTTP client)."""

    def __init__(self, config: LocalNemoConfig, agent: Agent, renderer: Renderer, faults: FaultPlan) -> None:
        self.config = config
        self.agent = agent
        self.renderer = renderer
        self.faults = faults
        self.state = LocalNemoState(
            config.data_dir, initial_credits=config.initial_credits, token_ttl_seconds=config.token_ttl_seconds
        )
        self.tasks: set[asyncio.Task[Any]] = set()
        self.closing = asyncio.Event()
        self._http: aiohttp.ClientSession | None = None

    # lifecycle

    def spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        task.set_name(name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def on_shutdown(self, app: web.Application) -> None:
        self.closing.set()
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def on_cleanup(self, app: web.Application) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            # Without permission for private addresses, every name the client resolves is checked again
            # at connect time, so a name that changes its answer after the first check (DNS rebinding)
            # still cannot reach the local network.
            connector = None if self.config.allow_private_urls else aiohttp.TCPConnector(resolver=_PublicResolver())
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, connect=15, sock_read=60),
                trust_env=False,
                connector=connector,
            )
        return self._http

    # disk

    async def make_room(self, needed: int, *, keep: SessionRecord | None = None) -> None:
        """Keep the data folder under ``max_disk_mb``: remove the least recently used idle sessions (their
        uploads and renders) until ``needed`` more bytes fit; ApiError 507 when they cannot."""
        limit = self.config.max_disk_mb * 1024 * 1024
        if limit <= 0:
            return
        used = await asyncio.to_thread(_folder_size, self.config.data_dir)
        if used + needed <= limit:
            return
        for session in sorted(self.state.sessions.values(), key=lambda s: s.last_active):
            if used + needed <= limit:
                break
            if session is keep or not self._idle(session):
                continue
            used -= await self._remove_session(session)
        if used + needed > limit:
            log.warning("localnemo.disk.full used=%s needed=%s limit=%s", used, needed, limit)
            raise ApiError(507, 507, "not enough space on this server: try again later or send a smaller file")

    def _idle(self, session: SessionRecord) -> bool:
        if self.state.active_runs.get(session.session_id, 0) > 0:
            return False
        return all(job.finished for job in self.state.jobs.values() if job.session_id == session.session_id)

    async def _remove_session(self, session: SessionRecord) -> int:
        freed = await asyncio.to_thread(_folder_size, session.folder)
        await asyncio.to_thread(shutil.rmtree, session.folder, True)
        for job in self.state.jobs.values():
            if job.session_id == session.session_id and job.output_path is not None:
                path, job.output_path = job.output_path, None
                freed += await asyncio.to_thread(_file_size, path)
                await asyncio.to_thread(_unlink_quietly, path)
                if job.status == "completed":
                    job.status, job.error = "failed", "the exported video was removed to free space; export again"
        self.state.sessions.pop(session.session_id, None)
        log.info("localnemo.disk.session_removed session_id=%s freed=%s", session.session_id, freed)
        return freed

    # middlewares

    @web.middleware
    async def errors_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return exc.response()
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error_response(exc.status, exc.status, (exc.reason or "error").lower())
        except ConnectionError as exc:
            # The client went away mid-request (e.g. it gave up on an upload): nobody reads the answer.
            log.info(
                "localnemo.client_gone method=%s path=%s error=%s", request.method, request.path, type(exc).__name__
            )
            return error_response(400, 400, "connection lost")
        except Exception:
            # Never a stack trace in an answer; the log has it.
            log.exception("localnemo.internal_error method=%s path=%s", request.method, request.path)
            return error_response(500, 500, "internal error")

    @web.middleware
    async def faults_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        endpoint = request.match_info.route.name or ""
        if endpoint.startswith("admin_"):
            return await handler(request)
        self.faults.record(Call(endpoint, request.method, request.path, dict(request.headers)))
        fault = self.faults.take_failure(endpoint) if endpoint else None
        if fault is not None:
            return _fault_response(fault)
        return await handler(request)

    # helpers

    def base_url(self, request: web.Request) -> str:
        if self.config.public_base_url:
            return self.config.public_base_url
        return f"{request.scheme}://{request.host}"

    def user(self, request: web.Request) -> UserRecord:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        user = self.state.user_for_token(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise ApiError(401, 1001, "token expired")
        return user

    def session(self, user: UserRecord, session_id: Any) -> SessionRecord:
        session = self.state.owned_session(user, session_id) if isinstance(session_id, str) else None
        if session is None:
            raise ApiError(404, 1002, "session not found")
        session.touch()
        return session

    # auth and sessions

    async def token(self, request: web.Request) -> web.StreamResponse:
        client_id = request.headers.get("X-Client-Id", "").strip()
        if not client_id or len(client_id) > 64:
            raise ApiError(400, 400, "missing X-Client-Id")
        user = self.state.user_for_client(client_id)
        record = self.state.issue_token(user)
        expires = datetime.fromtimestamp(record.expires_at, UTC).isoformat(timespec="seconds")
        log.info("localnemo.token.issued user_id=%s", user.user_id)
        return ok(
            {
                "token": record.token,
                "user_id": user.user_id,
                "expires_at": expires.replace("+00:00", "Z"),
                "credits": user.credits,
            }
        )

    async def new_session(self, request: web.Request) -> web.StreamResponse:
        user = self.user(request)
        body = await _json_object(request, required=False)
        task_name = body.get("task_name") or "project"
        language = body.get("language") or "en"
        if not isinstance(task_name, str) or not isinstance(language, str):
            raise ApiError(400, 400, "task_name and language must be strings")
        session = self.state.new_session(user, task_name, language)
        return ok({"task_id": session.task_id, "session_id": session.session_id})

    async def credits(self, request: web.Request) -> web.StreamResponse:
        user = self.user(request)
        return ok({"available": user.credits, "frozen": 0, "total": user.credits})

    async def session_state(self, request: web.Request) -> web.StreamResponse:
        user = self.user(request)
        session = self.session(user, request.match_info["sid"])
        return ok(session.state_payload())

    async def claim(self, request: web.Request) -> web.StreamResponse:
        user = self.user(request)
        body = await _json_object(request)
        session = self.session(user, body.get("session_id"))
        if body.get("task_id") not in (None, session.task_id):
            raise ApiError(404, 1002, "session not found")
        claim = self.state.new_claim(user, session, _CLAIM_TTL_SECONDS)
        return ok({"claim_token": claim.claim_token, "expires_in": _CLAIM_TTL_SECONDS})

    # messages

    async def run_sse(self, request: web.Request) -> web.StreamResponse:
        user = self.user(request)
        body = await _json_object(request)
        session_id, text = _parse_run_body(body)
        session = self.session(user, session_id)
        if user.credits < self.config.message_cost:
            raise ApiError(403, 2001, "insufficient credits")
        fault = self.faults.take_stream()

        response = web.StreamResponse(status=200, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        response.content_type = "text/event-stream"
        response.charset = "utf-8"
        response.enable_chunked_encoding()
        self.state.run_started(session.session_id)
        turn: asyncio.Task[Any] | None = None
        log.info(
            "localnemo.run.start session_id=%s dialect=%s fault=%s",
            session.session_id,
            self.config.dialect,
            fault.mode if fault else None,
        )
        writer = _SseWriter(
            request,
            response,
            dialect=self.config.dialect,
            heartbeat_seconds=self.config.heartbeat_seconds,
            closing=self.closing,
        )
        try:
            await response.prepare(request)
            if fault is not None and fault.mode == "heartbeats_only":
                # The backend timed out: the message is never processed, the stream only ticks.
                await writer.idle(None, None, heartbeats=True)
                return response
            queue: asyncio.Queue[AgentEvent | None] = asyncio.Queue()
            turn = self.spawn(self._turn(user, session, text, queue), f"localnemo-turn-{session.session_id}")
            await self._stream_turn(writer, queue, fault)
        except _ClientGone:
            log.info("localnemo.run.client_gone session_id=%s", session.session_id)
            writer.abort()
        except Exception:
            # Headers are out: an error answer is impossible, so end the body abnormally instead.
            log.exception("localnemo.run.failed session_id=%s", session.session_id)
            transport = request.transport
            if transport is not None:
                transport.close()
        finally:
            if turn is None or turn.done():
                self.state.run_finished(session.session_id)
            else:
                # The turn goes on without the client, as the hosted backend's does.
                turn.add_done_callback(lambda _: self.state.run_finished(session.session_id))
        return response

    async def _stream_turn(
        self, writer: _SseWriter, queue: asyncio.Queue[AgentEvent | None], fault: StreamFault | None
    ) -> None:
        wire = _WireFormat(self.config.dialect, partial_text=self.config.partial_text)
        delay = fault.delay if fault is not None and fault.mode == "slow" else self.config.event_delay_seconds
        broken = fault if fault is not None and fault.mode in ("drop", "hang") else None
        sent = 0

        async def emit(payloads: list[dict[str, Any]]) -> None:
            nonlocal sent
            for payload in payloads:
                if broken is not None and sent >= broken.after_events:
                    await self._break(writer, broken)
                if sent:
                    await writer.idle(None, delay)
                await writer.send(payload)
                sent += 1

        while True:
            getter = asyncio.ensure_future(queue.get())
            try:
                await writer.idle(getter)
            finally:
                if not getter.done():
                    getter.cancel()
            event = getter.result()
            if event is None:
                break
            await emit(wire.render(event))
        await emit(wire.finish())
        if broken is not None:
            # The turn had fewer events than after_events: the fault still happens, at the end.
            await self._break(writer, broken)

    async def _break(self, writer: _SseWriter, fault: StreamFault) -> None:
        if fault.mode == "drop":
            log.info("localnemo.fault.drop")
            writer.abort()
            raise _ClientGone
        log.info("localnemo.fault.hang")
        await writer.idle(None, None, heartbeats=False)
        raise _ClientGone

    async def _turn(
        self, user: UserRecord, session: SessionRecord, text: str, queue: asyncio.Queue[AgentEvent | None]
    ) -> None:
        errored = False
        try:
            async for event in self.agent.run(session, text):
                if isinstance(event, AgentError):
                    errored = True
                queue.put_nowait(event)
        except Exception:
            log.exception("localnemo.agent.failed session_id=%s", session.session_id)
            errored = True
            queue.put_nowait(AgentError("the agent failed on this message"))
        if not errored:
            user.credits = max(0, user.credits - self.config.message_cost)
        log.info("localnemo.run.done session_id=%s errored=%s credits=%s", session.session_id, errored, user.credits)
        queue.put_nowait(None)

    # uploads

    async def upload(self, request: web.Request) -> web.StreamResponse:
        user = self.user(request)
        session = self.session(user, request.match_info["sid"])
        await self.make_room(request.content_length or 0, keep=session)
        await asyncio.to_thread(session.folder.mkdir, parents=True, exist_ok=True)
        received: list[_Received] = []
        try:
            if request.content_type.startswith("multipart/"):
                await self._receive_multipart(request, session, received)
            else:
                await self._receive_urls(request, session, received)
            if not received:
                raise ApiError(400, 400, "no files: send multipart field 'files' or JSON {\"urls\": [...]}")
            for item in received:
                await _check_readable(item)
            await self.make_room(0, keep=session)
        except BaseException:
            for item in received:
                await asyncio.to_thread(_unlink_quietly, item.stored_path)
            raise
        base = self.base_url(request)
        files: list[dict[str, Any]] = []
        for item in received:
            info = item.info
            entry: dict[str, Any] = {
                "filename": item.original_name,
                "file_type": item.kind,
                "cdn_url": f"{base}/files/{session.session_id}/{item.stored_path.name}",
                "duration": _upload_duration(item),
                "width": info.width if info is not None else None,
                "height": info.height if info is not None else None,
            }
            if info is not None and info.fps is not None and item.kind == "video":
                entry["fps"] = info.fps
            entry["hash"] = item.sha256
            entry["size"] = item.size
            timeline.place_upload(session, entry, Path(item.original_name).stem or item.original_name, item.cues)
            files.append(entry)
            log.info("localnemo.upload.stored session_id=%s kind=%s size=%s", session.session_id, item.kind, item.size)
        return ok({"files": files, "session_state_applied": True})

    async def _receive_multipart(self, request: web.Request, session: SessionRecord, received: list[_Received]) -> None:
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                return
            if not isinstance(part, aiohttp.BodyPartReader):
                raise ApiError(400, 400, "nested multipart bodies are not supported")
            if part.name != "files":
                await part.release()
                continue
            filename = Path(part.filename or "").name
            if not filename:
                raise ApiError(
                    400, 4001, f"unsupported file type: a file has no name. Accepted: {ACCEPTED_FORMATS_TEXT}"
                )
            kind, extension = _kind_for(filename, part.headers.get(aiohttp.hdrs.CONTENT_TYPE))
            target = session.folder / _stored_name(filename, extension)
            digest, size = await _save_stream(
                _part_chunks(part), target, limit=self.config.max_upload_bytes, display_name=filename
            )
            received.append(_Received(filename, target, kind, digest, size))

    async def _receive_urls(self, request: web.Request, session: SessionRecord, received: list[_Received]) -> None:
        body = await _json_object(request)
        urls = body.get("urls")
        source_type = body.get("source_type", "url")
        if (
            not isinstance(urls, list)
            or not urls
            or len(urls) > _MAX_URLS
            or not all(isinstance(url, str) for url in urls)
            or source_type != "url"
        ):
            raise ApiError(
                400, 400, f'expected {{"urls": [1 to {_MAX_URLS} URLs], "source_type": "url"}} or a multipart upload'
            )
        for url_text in urls:
            received.append(await self._fetch(url_text, session))

    async def _fetch(self, url_text: str, session: SessionRecord) -> _Received:
        try:
            url = URL(url_text)
        except ValueError:
            raise ApiError(400, 4003, "could not download: not a valid URL") from None
        filename = Path(unquote(url.path)).name or "download"
        try:
            for _ in range(_MAX_REDIRECTS + 1):
                # Every hop is checked as the first URL was: a public page must not redirect the server
                # into its own network.
                if url.scheme not in ("http", "https") or not url.host:
                    raise ApiError(400, 4003, "could not download: only http and https URLs can be fetched")
                if not self.config.allow_private_urls:
                    await _refuse_private(url)
                async with self.http().get(url, allow_redirects=False) as resp:
                    if resp.status in (301, 302, 303, 307, 308) and resp.headers.get(aiohttp.hdrs.LOCATION):
                        try:
                            url = url.join(URL(resp.headers[aiohttp.hdrs.LOCATION]))
                        except ValueError:
                            raise ApiError(400, 4003, f"could not download from {url.host}: bad redirect") from None
                        continue
                    return await self._save_download(resp, url, filename, session)
            raise ApiError(400, 4003, f"could not download from {url.host}: too many redirects")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.info("localnemo.upload.fetch_failed host=%s error=%s", url.host, type(exc).__name__)
            raise ApiError(400, 4003, f"could not download from {url.host}") from None

    async def _save_download(
        self, resp: aiohttp.ClientResponse, url: URL, filename: str, session: SessionRecord
    ) -> _Received:
        if resp.status != 200:
            raise ApiError(400, 4003, f"could not download {url.host}: HTTP {resp.status}")
        declared = resp.headers.get(aiohttp.hdrs.CONTENT_TYPE)
        if Path(filename).suffix.lower().lstrip(".") not in ACCEPTED_EXTENSIONS:
            # The URL has no usable extension: name the file after its declared type instead.
            guessed = mimetypes.guess_extension((declared or "").split(";", 1)[0].strip())
            if guessed and guessed.lstrip(".") in ACCEPTED_EXTENSIONS:
                filename = f"{Path(filename).stem or 'download'}{guessed}"
        kind, extension = _kind_for(filename, declared)
        limit = self.config.max_upload_bytes
        if resp.content_length is not None and resp.content_length > limit:
            raise ApiError(
                413, 4002, f"file too large: {filename} is over the {limit // (1024 * 1024)} MB limit"
            )
        target = session.folder / _stored_name(filename, extension)
        digest, size = await _save_stream(
            resp.content.iter_chunked(_CHUNK), target, limit=limit, display_name=filename
        )
        log.info("localnemo.upload.fetched host=%s size=%s", url.host, size)
        return _Received(filename, target, kind, digest, size)

    # exports

    async def render(self, request: web.Request) -> web.StreamResponse:
        user = self.user(request)
        if self.config.require_attribution and not all(
            request.headers.get(name, "").strip() for name in _ATTRIBUTION_HEADERS
        ):
            raise ApiError(
                402,
                402,
                "export not available: attribution headers X-Skill-Source, X-Skill-Version and "
                "X-Skill-Platform are required",
            )
        body = await _json_object(request)
        render_id, session_id, draft_body = body.get("id"), body.get("sessionId"), body.get("draft")
        output = body.get("output", {})
        if not isinstance(render_id, str) or not _RENDER_ID_RE.match(render_id):
            raise ApiError(400, 400, "id must be 1-128 characters of letters, digits, '_', '-' or '.'")
        if not isinstance(session_id, str) or not isinstance(draft_body, dict) or not isinstance(output, dict):
            raise ApiError(400, 400, "expected {id, sessionId, draft: {...}, output: {...}}")
        draft = timeline.Draft.model_validate(draft_body)
        resolution = output.get("resolution")
        if isinstance(resolution, str) and resolution.strip():
            try:
                resolution_lines(resolution)
            except ValueError:
                raise ApiError(400, 400, "output.resolution must be like 720p, 1080p or 4k") from None
            # An export "at 1080p" overrides what the draft says, for this render only.
            draft.m.resolution = resolution.strip().lower()
        if render_id in self.state.jobs:
            raise ApiError(409, 409, "render id already exists")
        session = self.session(user, session_id)
        await self.make_room(0, keep=session)
        job = RenderJob(job_id=render_id, user_id=user.user_id, session_id=session.session_id, created_at_ms=_now_ms())
        self.state.jobs[render_id] = job
        if not timeline.has_segment(draft):
            job.status = "failed"
            job.error = "invalid draft: the timeline is empty"
            log.info("localnemo.render.refused id=%s reason=empty", render_id)
        else:
            sources = self._sources(user, draft)
            # The answer below is built before this task first runs, so it says "pending".
            job.task = self.spawn(
                self._render_job(job, draft, sources, self.base_url(request)), f"localnemo-render-{render_id}"
            )
            log.info("localnemo.render.created id=%s session_id=%s", render_id, session.session_id)
        return self._job_response(job)

    def _sources(self, user: UserRecord, draft: timeline.Draft) -> dict[str, Path]:
        """Local files behind the URLs in the draft: any ``…/files/<sid>/<name>`` of the user's sessions,
        whatever host the URL names (the client may reach this server under another name)."""
        sources: dict[str, Path] = {}
        # Every string of the wire form, unknown keys included: a URL may sit anywhere in it.
        for text in _iter_strings(draft.to_wire()):
            try:
                parts = URL(text).path.split("/")
            except ValueError:
                continue
            if len(parts) != 4 or parts[1] != "files" or not _STORED_NAME_RE.match(parts[3]):
                continue
            session = self.state.owned_session(user, parts[2])
            if session is None:
                continue
            path = session.folder / parts[3]
            if path.is_file():
                sources[text] = path
        return sources

    async def _render_job(self, job: RenderJob, draft: timeline.Draft, sources: dict[str, Path], base: str) -> None:
        job.status = "processing"
        out_path = self.config.data_dir / "renders" / f"{job.job_id}.mp4"
        await asyncio.to_thread(out_path.parent.mkdir, parents=True, exist_ok=True)
        reported = [0.0]

        def on_progress(fraction: float) -> None:
            # May be called from a worker thread: only store the number.
            reported[0] = max(reported[0], min(1.0, fraction))

        work = asyncio.ensure_future(self.renderer.render(draft, sources, out_path, on_progress))
        steps = max(1, self.config.render_steps)
        try:
            # Progress follows the slower of the clock (render_steps × render_step_seconds, the minimum
            # duration of a render, for realism) and the renderer's own report.
            for step in range(1, steps + 1):
                await asyncio.wait({work}, timeout=self.config.render_step_seconds)
                rendered = 1.0 if work.done() else reported[0]
                job.progress = max(job.progress, int(95 * min(step / steps, rendered)))
            while not work.done():
                await asyncio.wait({work}, timeout=max(self.config.render_step_seconds, 0.1))
                job.progress = max(job.progress, int(95 * reported[0]))
            result = work.result()
        except asyncio.CancelledError:
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
            await asyncio.to_thread(_unlink_quietly, out_path)
            raise
        except RenderError as exc:
            self._fail_job(job, str(exc))
            await asyncio.to_thread(_unlink_quietly, out_path)
            return
        except Exception:
            log.exception("localnemo.render.crashed id=%s", job.job_id)
            self._fail_job(job, "render failed: internal error")
            await asyncio.to_thread(_unlink_quietly, out_path)
            return
        if job.finished:  # cancelled meanwhile
            return
        job.status = "completed"
        job.progress = 100
        job.output_path = out_path
        job.output_url = f"{base}/render-result/{job.job_id}.mp4"
        job.duration = result.duration
        job.size = result.size
        job.completed_at_ms = _now_ms()
        log.info("localnemo.render.completed id=%s size=%s", job.job_id, result.size)

    @staticmethod
    def _fail_job(job: RenderJob, reason: str) -> None:
        if job.finished:
            return
        job.status = "failed"
        job.error = reason
        log.info("localnemo.render.failed id=%s reason=%s", job.job_id, reason)

    def _job_response(self, job: RenderJob) -> web.Response:
        if self.config.job_shape == "top":
            body: dict[str, Any] = {"taskId": job.job_id, "status": job.status, "progress": job.progress}
            if job.status == "completed" and job.output_url:
                body["output"] = {"url": job.output_url, "duration": job.duration, "size": job.size}
            if job.error is not None:
                body["error"] = job.error
            return web.json_response(body)
        data: dict[str, Any] = {"id": job.job_id, "status": job.status, "progress": job.progress}
        if job.status == "completed" and job.output_url:
            data["outputUrl"] = job.output_url
        data["createdAt"] = job.created_at_ms
        if job.completed_at_ms is not None:
            data["completedAt"] = job.completed_at_ms
        if job.error is not None:
            data["error"] = job.error
        return web.json_response({"success": True, "data": data})

    def _owned_job(self, user: UserRecord, job_id: str) -> RenderJob:
        job = self.state.jobs.get(job_id)
        if job is None or job.user_id != user.user_id:
            raise ApiError(404, 404, "render job not found")
        return job

    async def render_status(self, request: web.Request) -> web.StreamResponse:
        user = self.user(request)
        return self._job_response(self._owned_job(user, request.match_info["rid"]))

    async def render_cancel(self, request: web.Request) -> web.StreamResponse:
        user = self.user(request)
        job = self._owned_job(user, request.match_info["rid"])
        if not job.finished:
            self._fail_job(job, "cancelled")
            if job.task is not None:
                job.task.cancel()
        return ok({})

    # files

    async def file(self, request: web.Request) -> web.StreamResponse:
        # Like a CDN: no token needed, the URL is the capability.
        session = self.state.sessions.get(request.match_info["sid"])
        name = request.match_info["name"]
        if session is None or not _STORED_NAME_RE.match(name):
            raise ApiError(404, 404, "file not found")
        path = session.folder / name
        if not await asyncio.to_thread(path.is_file):
            raise ApiError(404, 404, "file not found")
        return web.FileResponse(path)

    async def result(self, request: web.Request) -> web.StreamResponse:
        job = self.state.jobs.get(request.match_info["rid"])
        if job is None or job.status != "completed" or job.output_path is None:
            raise ApiError(404, 404, "file not found")
        if not await asyncio.to_thread(job.output_path.is_file):
            raise ApiError(404, 404, "file not found")
        return web.FileResponse(job.output_path, headers={"Content-Type": "video/mp4"})

    # admin API, for tests that run the server in another process

    async def admin_faults(self, request: web.Request) -> web.StreamResponse:
        body = await _json_object(request)
        kind = body.pop("kind", None)
        try:
            if kind == "fail":
                self.faults.fail(**body)
            elif kind == "stream":
                self.faults.stream(**body)
            elif kind == "clear":
                self.faults.clear()
            else:
                raise ApiError(400, 400, 'kind must be "fail", "stream" or "clear"')
        except (TypeError, ValueError) as exc:
            raise ApiError(400, 400, f"bad fault: {exc}") from None
        return ok({})

    async def admin_calls(self, request: web.Request) -> web.StreamResponse:
        return ok({"calls": [asdict(call) for call in self.faults.calls]})

    async def admin_expire_tokens(self, request: web.Request) -> web.StreamResponse:
        body = await _json_object(request, required=False)
        user_id = body.get("user_id")
        if user_id is not None and not isinstance(user_id, str):
            raise ApiError(400, 400, "user_id must be a string")
        return ok({"expired": self.state.expire_tokens(user_id)})

    async def admin_credits(self, request: web.Request) -> web.StreamResponse:
        body = await _json_object(request)
        user_id, credits = body.get("user_id"), body.get("credits")
        if not isinstance(user_id, str) or not isinstance(credits, int) or isinstance(credits, bool):
            raise ApiError(400, 400, "expected {user_id, credits}")
        try:
            self.state.set_credits(user_id, credits)
        except KeyError:
            raise ApiError(404, 404, "unknown user") from None
        return ok({})

    async def admin_runs(self, request: web.Request) -> web.StreamResponse:
        return ok(
            {"active_runs": dict(self.state.active_runs), "max_concurrent_runs": dict(self.state.max_concurrent_runs)}
        )


def _fault_response(fault: FailFault) -> web.Response:
    if fault.html:
        try:
            reason = HTTPStatus(fault.status).phrase
        except ValueError:
            reason = "Error"
        return web.Response(
            status=fault.status,
            text=f"<html><body><h1>{fault.status} {reason}</h1></body></html>",
            content_type="text/html",
        )
    return error_response(fault.status, fault.code, fault.message)


async def _json_object(request: web.Request, *, required: bool = True) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        if required:
            raise ApiError(400, 400, "a JSON body is required")
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise ApiError(400, 400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, 400, "the body must be a JSON object")
    return body


def _parse_run_body(body: Mapping[str, Any]) -> tuple[str, str]:
    """Validate an ADK ``/run_sse`` body; return the session id and the message text."""
    if body.get("app_name") != "nemo_agent":
        raise ApiError(400, 400, 'app_name must be "nemo_agent"')
    if not isinstance(body.get("user_id"), str):
        raise ApiError(400, 400, "user_id must be a string")
    session_id = body.get("session_id")
    if not isinstance(session_id, str) or not session_id:
        raise ApiError(400, 400, "session_id must be a string")
    message = body.get("new_message")
    parts = message.get("parts") if isinstance(message, dict) else None
    if not isinstance(parts, list) or not parts:
        raise ApiError(400, 400, "new_message.parts must be a non-empty list")
    texts = [part["text"] for part in parts if isinstance(part, dict) and isinstance(part.get("text"), str)]
    text = "".join(texts).strip()
    if not text:
        raise ApiError(400, 400, "new_message has no text part")
    return session_id, text


async def _refuse_private(url: URL) -> None:
    """Refuse URLs whose host is (or resolves to) a private, loopback or otherwise local address."""
    host = url.host or ""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, url.port or 0)
    except OSError:
        raise ApiError(400, 4003, f"could not download from {host}: unknown host") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise ApiError(400, 4003, f"could not download from {host}: not a public address")


class _PublicResolver(aiohttp.abc.AbstractResolver):
    """Resolves names like aiohttp's default resolver, refusing any answer that is not a public address."""

    def __init__(self) -> None:
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        for answer in answers:
            if not ipaddress.ip_address(answer["host"]).is_global:
                raise OSError(f"{host} resolves to a non-public address")
        return answers

    async def close(self) -> None:
        await self._inner.close()


async def _check_readable(item: _Received) -> None:
    """Refuse a damaged or unreadable upload with a plain 400 before it reaches the timeline."""
    if item.kind == "subtitle":
        try:
            item.cues = await asyncio.to_thread(read_cues, item.stored_path)
        except (OSError, SubtitleError) as exc:
            raise ApiError(400, 4001, f"could not read {item.original_name}: {exc}") from None
        return
    info = await probe(item.stored_path)
    if info is None:
        raise ApiError(
            400, 4001, f"could not read {item.original_name}: the file is damaged or not a format FFmpeg can read"
        )
    if item.kind in ("video", "audio") and info.kind == "audio":
        # An .mp4 with only sound is sound: it goes on the audio track.
        item.kind = "audio"
    elif item.kind == "audio" and info.has_audio:
        pass
    elif info.kind != item.kind:
        what = {"video": "a video", "image": "an image", "audio": "a sound file"}[item.kind]
        raise ApiError(400, 4001, f"could not read {item.original_name}: it is not {what}")
    item.info = info


def _upload_duration(item: _Received) -> float | None:
    if item.kind == "subtitle":
        return max((cue.end_ms for cue in item.cues or []), default=0) / 1000 or None
    if item.kind == "image" or item.info is None:
        return None
    return item.info.duration


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _folder_size(folder: Path) -> int:
    """Bytes of every file under ``folder`` (blocking: run it in a thread)."""
    total = 0
    stack = [folder]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
    return total


# ---------------------------------------------------------------------------------------------------
# Public entry points


def default_agent(config: LocalNemoConfig) -> Agent:
    pauses = PauseSettings(
        threshold_db=config.silence_threshold_db,
        min_silence_ms=config.silence_min_ms,
        margin_ms=config.silence_margin_ms,
        min_clip_ms=config.min_clip_ms,
    )
    return PlannerAgent(silent_every=config.silent_every, pauses=pauses, default_resolution=config.default_resolution)


def default_renderer(config: LocalNemoConfig) -> Renderer:
    if config.renderer == "copy":
        return CopyRenderer()
    settings = RenderSettings(
        x264_preset=config.x264_preset,
        x264_crf=config.x264_crf,
        default_resolution=config.default_resolution,
        font_file=config.font_file,
    )
    return FFmpegRenderer(settings, config.data_dir / "assets")

SERVER_KEY = web.AppKey("localnemo_server", _Server)


def create_app(
    config: LocalNemoConfig,
    *,
    agent: Agent | None = None,
    renderer: Renderer | None = None,
    faults: FaultPlan | None = None,
) -> web.Application:
    """The aiohttp application of localnemo (``app[SERVER_KEY].state`` is its store)."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    server = _Server(
        config,
        agent if agent is not None else default_agent(config),
        renderer if renderer is not None else default_renderer(config),
        faults if faults is not None else FaultPlan(),
    )
    app = web.Application(middlewares=[server.errors_middleware, server.faults_middleware])
    app[SERVER_KEY] = server
    app.on_shutdown.append(server.on_shutdown)
    app.on_cleanup.append(server.on_cleanup)
    router = app.router
    router.add_post("/api/auth/anonymous-token", server.token, name="token")
    router.add_post("/api/tasks/me/with-session/nemo_agent", server.new_session, name="session")
    router.add_post("/run_sse", server.run_sse, name="run_sse")
    router.add_post("/api/upload-video/nemo_agent/me/{sid}", server.upload, name="upload")
    router.add_get("/api/credits/balance/simple", server.credits, name="credits")
    router.add_get("/api/state/nemo_agent/me/{sid}/latest", server.session_state, name="state")
    router.add_post("/api/render/proxy/lambda", server.render, name="render")
    router.add_get("/api/render/proxy/lambda/{rid}", server.render_status, name="render_status")
    router.add_post("/api/render/proxy/lambda/{rid}/cancel", server.render_cancel, name="render_cancel")
    router.add_post("/api/auth/claim-token", server.claim, name="claim")
    router.add_get("/files/{sid}/{name}", server.file, name="file")
    router.add_get("/render-result/{rid}.mp4", server.result, name="result")
    router.add_post("/_localnemo/faults", server.admin_faults, name="admin_faults")
    router.add_get("/_localnemo/calls", server.admin_calls, name="admin_calls")
    router.add_post("/_localnemo/expire-tokens", server.admin_expire_tokens, name="admin_expire_tokens")
    router.add_post("/_localnemo/credits", server.admin_credits, name="admin_credits")
    router.add_get("/_localnemo/runs", server.admin_runs, name="admin_runs")
    return app


class LocalNemo:
    """A running localnemo: ``async with LocalNemo(config) as nemo: ... nemo.base_url ...``."""

    def __init__(
        self,
        config: LocalNemoConfig,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        agent: Agent | None = None,
        renderer: Renderer | None = None,
        faults: FaultPlan | None = None,
        shutdown_timeout: float = 5.0,
    ) -> None:
        self.config = config
        self.host = host
        self.port = port
        self.faults = faults if faults is not None else FaultPlan()
        self.app = create_app(config, agent=agent, renderer=renderer, faults=self.faults)
        self._server = self.app[SERVER_KEY]
        self.shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    @property
    def state(self) -> LocalNemoState:
        return self._server.state

    async def start(self) -> None:
        runner = web.AppRunner(self.app, shutdown_timeout=self.shutdown_timeout)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        address = runner.addresses[0]
        self.port = int(address[1])
        shown_host = f"[{self.host}]" if ":" in self.host else self.host
        self.base_url = f"http://{shown_host}:{self.port}"
        log.info("localnemo.started base_url=%s data_dir=%s", self.base_url, self.config.data_dir)

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
            log.info("localnemo.stopped")

    async def __aenter__(self) -> LocalNemo:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def expire_tokens(self, user_id: str | None = None) -> int:
        """Expire every token (or one user's); the next authenticated call answers 1001."""
        return self.state.expire_tokens(user_id)

    def set_credits(self, user_id: str, n: int) -> None:
        self.state.set_credits(user_id, n)


async def serve_forever(host: str, port: int, config: LocalNemoConfig) -> None:
    """Run localnemo until cancelled (``nemobot serve-local``)."""
    async with LocalNemo(config, host=host, port=port) as server:
        log.info("localnemo.serving base_url=%s", server.base_url)
        await asyncio.Event().wait()
