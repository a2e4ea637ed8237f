"""The NemoVideo client: one shared ``httpx.AsyncClient``, many identities.

Retry rules, from the API doc:
- 1001 (token expired or invalid): renew the anonymous token with the same client id, retry once.
- 429: wait ``NEMO_RETRY_SECONDS``, retry once, then raise :class:`RateLimited`.
- network errors and 5xx: retried with backoff only where repeating the call is harmless (reads,
  the token call, cancel). A request that never left (connect failure) is always safe to repeat.
- ``/run_sse`` is never sent twice once the backend may have accepted it: a dropped stream is a
  :class:`StreamInterrupted` for the caller, who polls state instead of resending.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from httpx_sse import aconnect_sse

from bot.config import NemoSettings
from bot.nemo.auth import IdentityRecord, IdentityStore
from bot.nemo.errors import (
    BackendUnavailable,
    BadRequest,
    ExportFailed,
    ExportTimeout,
    MissingClientId,
    NemoError,
    RateLimited,
    RenderIdTaken,
    StreamInterrupted,
    StreamTimeout,
    TokenInvalid,
    error_from_response,
)
from bot.nemo.events import EventDecoder, HeartbeatEvent, SSELineParser, StreamEvent
from bot.nemo.models import Credits, RenderJob, SessionInfo, SessionState, TokenGrant, UploadedFile, UploadResult
from bot.nemo.timeline_model import Draft
from bot.nemo.uploads import MultipartBody, UploadSource, check_file, check_url, upload_batches

log = logging.getLogger(__name__)

APP = "nemo_agent"
# Renew a little before expiry rather than spend a request learning it has expired.
_RENEW_MARGIN = timedelta(minutes=5)

# localnemo's long-poll of a job (localnemo/jobs.py): its answers carry the first header, and the second
# is what to send back as ``since``. The hosted service sends neither, and is polled as documented.
LONG_POLL_HEADER = "X-Localnemo-Wait"
LONG_POLL_STATE_HEADER = "X-Localnemo-State"
LONG_POLL_SECONDS = 25.0

Sleep = Callable[[float], Awaitable[None]]
ProgressCallback = Callable[[RenderJob], Awaitable[None]]


_last_render_ms = 0


def new_render_id() -> str:
    """``render_<ms>_<random>``: the doc's ``render_<ts>`` (its examples also use other names), never the same
    twice in one process, and with a random part so that several bot processes sharing one database never
    make the same id in the same millisecond (the exports table is keyed by it)."""
    global _last_render_ms
    _last_render_ms = max(int(time.time() * 1000), _last_render_ms + 1)
    return f"render_{_last_render_ms}_{secrets.token_hex(4)}"


@dataclass
class _Token:
    value: str
    expires_at: datetime | None
    user_id: str | None

    def fresh(self) -> bool:
        return self.expires_at is None or self.expires_at - _RENEW_MARGIN > datetime.now(UTC)


def _decode_body(response: httpx.Response) -> Any:
    text = response.text
    if not text.strip():
        return {}
    try:
        return json.loads(text)
    except ValueError:
        return text


def _data(body: Any) -> Any:
    if isinstance(body, dict) and isinstance(body.get("data"), dict | list):
        return body["data"]
    return body


class NemoClient:
    """Talks to NemoVideo on behalf of any number of identities (see :meth:`account`)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        settings: NemoSettings,
        identities: IdentityStore,
        *,
        sleep: Sleep = asyncio.sleep,
        local_files_key: str | None = None,
    ) -> None:
        self._http = http
        # Given by the composition root when the backend is a localnemo in this process: local files are then
        # named by their path (X-Localnemo-Local-Key), not sent through HTTP.
        self.local_files_key = local_files_key
        self.settings = settings
        self._identities = identities
        self._sleep = sleep
        self._tokens: dict[str, _Token] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._base = settings.api_base.rstrip("/")

    @property
    def http(self) -> httpx.AsyncClient:
        """The shared HTTP client (adapters reuse it for their own downloads)."""
        return self._http

    @property
    def uses_fixed_token(self) -> bool:
        return self.settings.token is not None

    def account(self, identity_key: str) -> NemoAccount:
        """The API as seen by one identity (its own token, credits and sessions)."""
        return NemoAccount(self, "shared" if self.uses_fixed_token else identity_key)

    # -- plumbing ---------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        s = self.settings
        return {
            "X-Skill-Source": s.skill_source,
            "X-Skill-Version": s.skill_version,
            "X-Skill-Platform": s.skill_platform,
        }

    def _timeout(self, extra_read_seconds: float = 0.0) -> httpx.Timeout:
        s = self.settings
        return httpx.Timeout(s.read_timeout_seconds + extra_read_seconds, connect=s.connect_timeout_seconds)

    async def token(self, identity: str) -> str:
        return (await self._token(identity)).value

    async def user_id(self, identity: str) -> str | None:
        return (await self._token(identity)).user_id

    async def _token(self, identity: str, *, stale: str | None = None) -> _Token:
        if self.settings.token is not None:
            return _Token(self.settings.token.get_secret_value(), None, None)
        cached = self._tokens.get(identity)
        if cached and cached.fresh() and cached.value != stale:
            return cached
        lock = self._locks.setdefault(identity, asyncio.Lock())
        async with lock:
            cached = self._tokens.get(identity)
            if cached and cached.fresh() and cached.value != stale:
                return cached  # another task renewed it while this one waited
            record = await self._identities.load_identity(identity)
            if record and record.token and record.token != stale:
                stored = _Token(record.token, record.expires_at, record.user_id)
                if stored.fresh():
                    self._tokens[identity] = stored
                    return stored
            client_id = record.client_id if record else str(uuid.uuid4())
            grant = await self._issue_token(client_id)
            token = _Token(grant.token, grant.expires_at, grant.user_id)
            await self._identities.save_identity(
                identity, IdentityRecord(client_id, grant.token, grant.expires_at, grant.user_id)
            )
            self._tokens[identity] = token
            log.info("nemo.token.issued identity=%s renewed=%s", identity, stale is not None or record is not None)
            return token

    async def _issue_token(self, client_id: str) -> TokenGrant:
        headers = {**self._headers(), "X-Client-Id": client_id}
        try:
            body, _ = await self._send_with_retries(
                "POST", "/api/auth/anonymous-token", headers=headers, safe=True, endpoint="token"
            )
        except BadRequest as exc:
            if exc.code == 400:
                # The only 400 this call documents: the backend did not see our X-Client-Id.
                raise MissingClientId(exc.message, code=400, http_status=exc.http_status) from exc
            raise
        grant = TokenGrant.model_validate(_data(body))
        if grant.expires_at is not None and grant.expires_at.tzinfo is None:
            grant.expires_at = grant.expires_at.replace(tzinfo=UTC)
        return grant

    async def _send_with_retries(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str],
        safe: bool,
        endpoint: str,
        json_body: Any = None,
        content: Callable[[], AsyncIterator[bytes]] | None = None,
        on_token_invalid: Callable[[], Awaitable[dict[str, str]]] | None = None,
        replayable: bool = True,
        extra_read_seconds: float = 0.0,
    ) -> tuple[Any, httpx.Headers]:
        """One logical call: 429 once, 1001 once (through ``on_token_invalid``), safe retries of network
        errors and 5xx. Returns the decoded body and the headers of a successful answer; a call the backend
        may hold open (a long-poll) allows ``extra_read_seconds`` more for its answer."""
        rate_limited = token_renewed = False
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                response = await self._http.request(
                    method,
                    self._base + path,
                    headers=headers,
                    json=json_body,
                    content=content() if content is not None else None,
                    timeout=self._timeout(extra_read_seconds),
                )
            except httpx.TransportError as exc:
                never_left = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                if (safe or never_left) and replayable and attempt < self.settings.network_retries:
                    await self._backoff(endpoint, attempt, type(exc).__name__)
                    attempt += 1
                    continue
                log.warning("nemo.call.failed endpoint=%s error=%s", endpoint, type(exc).__name__)
                raise BackendUnavailable("NemoVideo could not be reached") from exc
            body = _decode_body(response)
            error = error_from_response(response.status_code, body)
            log.debug(
                "nemo.call endpoint=%s status=%d ms=%.0f",
                endpoint, response.status_code, (time.monotonic() - started) * 1000,
            )
            if error is None:
                return body, response.headers
            log.info("nemo.call.error endpoint=%s status=%d code=%d", endpoint, response.status_code, error.code)
            if isinstance(error, TokenInvalid) and on_token_invalid and not token_renewed and replayable:
                token_renewed = True
                headers = {**headers, **await on_token_invalid()}
                continue
            if isinstance(error, RateLimited) and not rate_limited and replayable:
                rate_limited = True
                await self._sleep(self.settings.retry_seconds)
                continue
            if isinstance(error, BackendUnavailable) and safe and replayable and (
                attempt < self.settings.network_retries
            ):
                await self._backoff(endpoint, attempt, f"HTTP {response.status_code}")
                attempt += 1
                continue
            raise error

    async def _backoff(self, endpoint: str, attempt: int, why: str) -> None:
        delay = self.settings.backoff_seconds * (2**attempt)
        log.info("nemo.call.retry endpoint=%s attempt=%d reason=%s wait=%.1fs", endpoint, attempt + 1, why, delay)
        await self._sleep(delay)

    async def call(
        self,
        identity: str,
        method: str,
        path: str,
        *,
        endpoint: str,
        safe: bool,
        json_body: Any = None,
        content: Callable[[], AsyncIterator[bytes]] | None = None,
        extra_headers: dict[str, str] | None = None,
        replayable: bool = True,
    ) -> Any:
        body, _ = await self.call_with_headers(
            identity, method, path, endpoint=endpoint, safe=safe, json_body=json_body, content=content,
            extra_headers=extra_headers, replayable=replayable,
        )
        return body

    async def call_with_headers(
        self,
        identity: str,
        method: str,
        path: str,
        *,
        endpoint: str,
        safe: bool,
        json_body: Any = None,
        content: Callable[[], AsyncIterator[bytes]] | None = None,
        extra_headers: dict[str, str] | None = None,
        replayable: bool = True,
        extra_read_seconds: float = 0.0,
    ) -> tuple[Any, httpx.Headers]:
        """:meth:`call`, with the answer's headers (what the backend says it supports)."""
        token = await self._token(identity)
        headers = {**self._headers(), **(extra_headers or {}), "Authorization": f"Bearer {token.value}"}

        async def renew() -> dict[str, str]:
            if self.uses_fixed_token:
                raise TokenInvalid("the configured NEMO_TOKEN was refused (expired or invalid)")
            fresh = await self._token(identity, stale=token.value)
            return {"Authorization": f"Bearer {fresh.value}"}

        return await self._send_with_retries(
            method, path, headers=headers, safe=safe, endpoint=endpoint, json_body=json_body,
            content=content, on_token_invalid=renew, replayable=replayable, extra_read_seconds=extra_read_seconds,
        )

    # -- streaming --------------------------------------------------------------------------------

    async def stream_message(self, identity: str, session_id: str, text: str) -> AsyncGenerator[StreamEvent, None]:
        """Send one message and yield what the agent does, until the stream closes.

        Refusals that arrive *before* the stream starts (1001, 429) are retried as for any call, because
        the backend did not take the message. Once the stream is open nothing is ever resent.
        """
        body = {
            "app_name": APP,
            "user_id": "me",
            "session_id": session_id,
            "new_message": {"role": "user", "parts": [{"text": text}]},
        }
        token = await self._token(identity)
        token_renewed = rate_limited = False
        connect_attempt = 0
        s = self.settings
        while True:
            headers = {**self._headers(), "Authorization": f"Bearer {token.value}"}
            timeout = httpx.Timeout(None, connect=s.connect_timeout_seconds)
            try:
                async with aconnect_sse(
                    self._http, "POST", self._base + "/run_sse", json=body, headers=headers, timeout=timeout
                ) as source:
                    response = source.response
                    ctype = response.headers.get("content-type", "")
                    if response.status_code >= 400 or "text/event-stream" not in ctype:
                        await response.aread()
                        error = error_from_response(response.status_code, _decode_body(response))
                        if error is None:
                            error = BadRequest(f"unexpected answer to a message ({ctype or 'no content type'})")
                        log.info("nemo.stream.refused status=%d code=%d", response.status_code, error.code)
                        if isinstance(error, TokenInvalid) and not token_renewed and not self.uses_fixed_token:
                            token_renewed = True
                            token = await self._token(identity, stale=token.value)
                            continue
                        if isinstance(error, RateLimited) and not rate_limited:
                            rate_limited = True
                            await self._sleep(s.retry_seconds)
                            continue
                        raise error
                    async for event in self._read_stream(response):
                        yield event
                    return
            except httpx.ConnectError as exc:
                # Nothing reached the backend, so repeating cannot duplicate the message.
                if connect_attempt < s.network_retries:
                    await self._backoff("run_sse", connect_attempt, "ConnectError")
                    connect_attempt += 1
                    continue
                raise BackendUnavailable("NemoVideo could not be reached") from exc
            except httpx.TransportError as exc:
                log.warning("nemo.stream.interrupted error=%s", type(exc).__name__)
                raise StreamInterrupted(
                    "the connection to NemoVideo broke while it was working on the message"
                ) from exc

    async def _read_stream(self, response: httpx.Response) -> AsyncIterator[StreamEvent]:
        s = self.settings
        started = last_progress = time.monotonic()
        decoder = EventDecoder()
        parser = SSELineParser()
        chunks = response.aiter_text()
        events = 0
        while True:
            now = time.monotonic()
            overall_left = started + s.stream_timeout_seconds - now
            idle_left = last_progress + s.heartbeat_timeout_seconds - now
            if overall_left <= 0 or idle_left <= 0:
                raise self._stream_timeout(overall_left <= 0)
            try:
                async with asyncio.timeout(min(overall_left, idle_left)):
                    chunk = await anext(chunks)
            except TimeoutError:
                raise self._stream_timeout(time.monotonic() >= started + s.stream_timeout_seconds) from None
            except StopAsyncIteration:
                break
            for item in parser.feed(chunk):
                decoded = self._decode_item(decoder, item)
                # Anything but a heartbeat is progress, even an event this client does not understand.
                if not decoded or not all(isinstance(e, HeartbeatEvent) for e in decoded):
                    last_progress = time.monotonic()
                for event in decoded:
                    events += 1
                    yield event
        for item in parser.close():
            for event in self._decode_item(decoder, item):
                yield event
        for event in decoder.finish():
            yield event
        log.info("nemo.stream.closed events=%d seconds=%.1f", events, time.monotonic() - started)

    @staticmethod
    def _decode_item(decoder: EventDecoder, item: str | None) -> list[StreamEvent]:
        return [HeartbeatEvent()] if item is None else decoder.decode(item)

    def _stream_timeout(self, overall: bool) -> StreamTimeout:
        s = self.settings
        if overall:
            log.warning("nemo.stream.timeout kind=overall limit=%.0fs", s.stream_timeout_seconds)
            return StreamTimeout(f"no result within {s.stream_timeout_seconds / 60:.0f} minutes")
        log.warning("nemo.stream.timeout kind=heartbeats-only limit=%.0fs", s.heartbeat_timeout_seconds)
        return StreamTimeout(f"the backend sent only heartbeats for {s.heartbeat_timeout_seconds / 60:.0f} minutes")

    # -- downloads --------------------------------------------------------------------------------

    async def download(self, url: str, dest: Path, *, max_bytes: int | None = None) -> int:
        """Stream a result to ``dest`` (never into memory). No credentials go to the file host."""
        written = 0
        partial = dest.with_name(dest.name + ".part")
        try:
            async with self._http.stream(
                "GET", url, timeout=httpx.Timeout(self.settings.read_timeout_seconds,
                                                  connect=self.settings.connect_timeout_seconds),
                follow_redirects=True,
            ) as response:
                if response.status_code >= 400:
                    raise BackendUnavailable(f"the result could not be downloaded (HTTP {response.status_code})")
                with partial.open("wb") as out:
                    async for chunk in response.aiter_bytes(1 << 20):
                        written += len(chunk)
                        if max_bytes is not None and written > max_bytes:
                            raise BadRequest("the result is larger than allowed here")
                        await asyncio.to_thread(out.write, chunk)
            partial.replace(dest)
        except httpx.TransportError as exc:
            raise BackendUnavailable("the result could not be downloaded") from exc
        finally:
            partial.unlink(missing_ok=True)
        return written


class NemoAccount:
    """Every endpoint, as one identity. Cheap to create: state lives in the :class:`NemoClient`."""

    def __init__(self, client: NemoClient, identity: str) -> None:
        self.client = client
        self.identity = identity

    async def _call(self, method: str, path: str, *, endpoint: str, safe: bool, **kw: Any) -> Any:
        return _data(await self.client.call(self.identity, method, path, endpoint=endpoint, safe=safe, **kw))

    async def ensure_token(self) -> None:
        await self.client.token(self.identity)

    async def user_id(self) -> str | None:
        return await self.client.user_id(self.identity)

    async def create_session(self, task_name: str, language: str = "en") -> SessionInfo:
        # Not repeated on network errors: a lost answer would leave an orphan session, not harm.
        data = await self._call(
            "POST", f"/api/tasks/me/with-session/{APP}", endpoint="session", safe=False,
            json_body={"task_name": task_name, "language": language},
        )
        return SessionInfo.model_validate(data)

    async def credits(self) -> Credits:
        data = await self._call("GET", "/api/credits/balance/simple", endpoint="credits", safe=True)
        credits = Credits.model_validate(data)
        if not credits.total:
            credits.total = credits.available + credits.frozen
        return credits

    async def state(self, session_id: str) -> SessionState:
        data = await self._call(
            "GET", f"/api/state/{APP}/me/{quote(session_id)}/latest", endpoint="state", safe=True
        )
        state = data.get("state", data) if isinstance(data, dict) else {}
        return SessionState.model_validate(state if isinstance(state, dict) else {})

    async def claim_link(self, task_id: str, session_id: str) -> str:
        data = await self._call(
            "POST", "/api/auth/claim-token", endpoint="claim", safe=True,
            json_body={"task_id": task_id, "session_id": session_id},
        )
        claim = data.get("claim_token") if isinstance(data, dict) else None
        if not isinstance(claim, str) or not claim:
            raise BadRequest("the backend gave no claim token")
        return f"{self.client.settings.web_base.rstrip('/')}/workspace/claim?ct={quote(claim)}"

    async def registration_link(self) -> str:
        """Where an anonymous user registers and keeps this identity's work (``?bind=<user id>``)."""
        user = await self.user_id()
        base = self.client.settings.web_base.rstrip("/")
        return f"{base}/?bind={quote(user)}" if user else base

    async def upload_files(self, session_id: str, sources: Sequence[UploadSource]) -> UploadResult:
        """Upload one or several files, streamed, in as few multipart requests as the size limit allows
        and the file count allow (localnemo refuses a request whose declared length is over the limit before
        reading a byte, and more than 20 files in one request). Checked first."""
        if not sources:
            raise ValueError("nothing to upload")
        limit = self.client.settings.max_upload_bytes
        for source in sources:
            check_file(source.filename, source.content_type, source.size, limit)
        files: list[UploadedFile] = []
        applied: bool | None = None
        by_path = self.client.local_files_key is not None and all(s.path is not None for s in sources)
        for batch in upload_batches(sources, limit, self.client.settings.max_files_per_upload):
            result = await (self._upload_paths(session_id, batch) if by_path else self._upload_batch(session_id, batch))
            files.extend(result.files)
            applied = result.session_state_applied if applied is None else applied and result.session_state_applied
        return UploadResult(files=files, session_state_applied=applied)

    async def _upload_batch(self, session_id: str, sources: Sequence[UploadSource]) -> UploadResult:
        body = MultipartBody.build(sources, self.client.settings.max_upload_bytes)
        headers = {"Content-Type": body.content_type}
        if (length := body.content_length) is not None:
            headers["Content-Length"] = str(length)
        data = await self._call(
            "POST", f"/api/upload-video/{APP}/me/{quote(session_id)}", endpoint="upload", safe=False,
            content=body.stream, extra_headers=headers,
            replayable=all(s.reopenable for s in sources),
        )
        return UploadResult.model_validate(data)

    async def _upload_paths(self, session_id: str, sources: Sequence[UploadSource]) -> UploadResult:
        """To a localnemo in this process: the files' paths, which it checks as uploads and takes without
        reading them through HTTP."""
        key = self.client.local_files_key
        assert key is not None
        paths = [str(s.path.absolute()) for s in sources if s.path is not None]
        data = await self._call(
            "POST", f"/api/upload-video/{APP}/me/{quote(session_id)}", endpoint="upload", safe=False,
            json_body={"paths": paths, "source_type": "path"}, extra_headers={"X-Localnemo-Local-Key": key},
        )
        return UploadResult.model_validate(data)

    async def upload_urls(self, session_id: str, urls: Sequence[str]) -> UploadResult:
        for url in urls:
            check_url(url)
        data = await self._call(
            "POST", f"/api/upload-video/{APP}/me/{quote(session_id)}", endpoint="upload", safe=False,
            json_body={"urls": list(urls), "source_type": "url"},
        )
        return UploadResult.model_validate(data)

    def send_message(self, session_id: str, text: str) -> AsyncGenerator[StreamEvent, None]:
        """The agent's answer as typed events. Use with ``contextlib.aclosing``; never resent."""
        return self.client.stream_message(self.identity, session_id, text)

    async def submit_export(
        self, session_id: str, draft: Draft | dict[str, Any], *, output: dict[str, Any] | None = None
    ) -> RenderJob:
        draft_body = draft.to_wire() if isinstance(draft, Draft) else draft
        render_id = new_render_id()
        for _ in range(3):
            try:
                data = await self.client.call(
                    self.identity, "POST", "/api/render/proxy/lambda", endpoint="render", safe=False,
                    json_body={
                        "id": render_id,
                        "sessionId": session_id,
                        "draft": draft_body,
                        "output": output or {"format": "mp4", "quality": "high"},
                    },
                )
            except RenderIdTaken:
                log.info("nemo.render.duplicate-id id=%s", render_id)
                render_id = new_render_id()
                continue
            return RenderJob.parse(data, render_id)
        raise RenderIdTaken("the backend refused three export ids in a row")

    async def export_status(self, render_id: str) -> RenderJob:
        return (await self._export_status(render_id))[0]

    async def _export_status(
        self, render_id: str, *, wait: float | None = None, since: str | None = None
    ) -> tuple[RenderJob, httpx.Headers]:
        path = f"/api/render/proxy/lambda/{quote(render_id)}"
        if wait is not None:
            path += f"?wait={wait:.3f}" + (f"&since={quote(since)}" if since is not None else "")
        data, headers = await self.client.call_with_headers(
            self.identity, "GET", path, endpoint="render_status", safe=True, extra_read_seconds=wait or 0.0,
        )
        return RenderJob.parse(data, render_id), headers

    async def cancel_export(self, render_id: str) -> None:
        await self.client.call(
            self.identity, "POST", f"/api/render/proxy/lambda/{quote(render_id)}/cancel",
            endpoint="render_cancel", safe=True,
        )

    async def wait_for_export(
        self,
        render_id: str,
        on_progress: ProgressCallback | None = None,
        *,
        poll_seconds: float | None = None,
        timeout_seconds: float | None = None,
    ) -> RenderJob:
        """Follow the job until it is done (completed *with* a URL) or failed.

        Against the hosted service: polls start at 2 s and grow ×1.5 up to ``NEMO_POLL_SECONDS``, like
        NemoVideo's own CLI: short renders come back quickly, long ones are not hammered. A backend whose job
        answers carry ``X-Localnemo-Wait: 1`` (localnemo) holds each status request open until the job moves
        (``?wait=``): the end of a render, and each step of its progress, are seen as they happen.
        """
        s = self.client.settings
        ceiling = poll_seconds if poll_seconds is not None else s.poll_seconds
        deadline = time.monotonic() + (timeout_seconds if timeout_seconds is not None else s.export_timeout_seconds)
        delay = min(2.0, ceiling)
        last: tuple[str, float, int | None] | None = None
        wait: float | None = None  # how long the backend may hold the next request; None: it cannot
        since: str | None = None
        while True:
            asked = time.monotonic()
            job, headers = await self._export_status(render_id, wait=wait, since=since)
            state = (job.status, job.progress, job.queue_position)
            changed = state != last
            if on_progress is not None and changed:
                await on_progress(job)
            last = state
            if job.done:
                return job
            if job.failed:
                raise ExportFailed(job.error or "the export failed", code=None)
            if headers.get(LONG_POLL_HEADER) == "1":
                since = headers.get(LONG_POLL_STATE_HEADER)
                # A backend that answered at once with nothing new is not waiting after all: the schedule below.
                if changed or wait is None or time.monotonic() - asked >= wait / 2:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise ExportTimeout("the export did not finish in time")
                    wait = min(LONG_POLL_SECONDS, left)
                    continue
            if time.monotonic() + delay > deadline:
                raise ExportTimeout("the export did not finish in time")
            await self.client._sleep(delay)
            delay = min(delay * 1.5, ceiling)


__all__ = ["NemoAccount", "NemoClient", "NemoError", "new_render_id"]
