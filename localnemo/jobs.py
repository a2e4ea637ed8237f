"""Render jobs: the export route (checks, a job per user and render id), a bounded queue of renders, running
the renderer with progress and a time limit, status, cancel, the two documented job answer shapes
(docs/nemo-api.md, "Export job") and the result file.

A job is its owner's: another user may use the same render id, and nobody else sees it. Its result is
served at ``/render-result/<random token>.mp4`` to the owner's bearer token, or to anyone holding the
signed, expiring link the job answers as its output URL (``?e=<expiry>&s=<HMAC-SHA256>``, keyed by a
secret kept in the data folder so that links survive a restart). Anything else is a 404, so that a
guess learns nothing. At most ``max_renders`` renders run at once; the others answer ``pending`` with a
``queuePosition`` (1 = next). Unfinished jobs are rendered again when the server starts.

The status route is also a long-poll: ``GET …/lambda/<id>?wait=<seconds>`` answers as soon as the job's
status, progress or queue position differs from what the client last saw (``since``, the value of the
``X-Localnemo-State`` header of its last answer; without it, from what it is when the request arrives), or
when the wait (at most ``MAX_WAIT_SECONDS``) ends. Every job answer says so with ``X-Localnemo-Wait: 1``,
which the hosted service does not send: a client long-polls only where it sees that header.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import hmac
import logging
import math
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from yarl import URL

from localnemo import timeline
from localnemo.captioning import draft_captions, srt_text
from localnemo.config import resolution_lines
from localnemo.envelope import ApiError, json_object, ok
from localnemo.persist import StoreError
from localnemo.quota import DiskQuota, unlink_quietly
from localnemo.render import Renderer, RenderError, RenderOutput
from localnemo.runtime import Runtime
from localnemo.state import RenderJob, UserRecord
from localnemo.uploads import STORED_NAME_RE

if TYPE_CHECKING:
    from localnemo.renderqueue import RenderQueue, RenderRow

log = logging.getLogger(__name__)

_ATTRIBUTION_HEADERS = ("X-Skill-Source", "X-Skill-Version", "X-Skill-Platform")
_RENDER_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
LINK_KEY_FILE = "result-links.key"
# The longest one status request may wait for a change; a client asks again after it.
MAX_WAIT_SECONDS = 30.0
WAIT_HEADER = "X-Localnemo-Wait"
STATE_HEADER = "X-Localnemo-State"
# A waiting request looks at its job again at least this often, whether or not a change was announced.
_RECHECK_SECONDS = 1.0


def _now_ms() -> int:
    return int(time.time() * 1000)


def span_words(seconds: float) -> str:
    if seconds >= 60:
        minutes = max(1, round(seconds / 60))
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    whole = max(1, round(seconds))
    return f"{whole} second{'s' if whole != 1 else ''}"


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


class ResultLinks:
    """Signed, expiring links to results: HMAC-SHA256 over the path and the expiry."""

    def __init__(self, data_dir: Path, hours: float) -> None:
        self.secret = self._secret(data_dir / LINK_KEY_FILE)
        self.seconds = hours * 3600

    @staticmethod
    def _secret(path: Path) -> bytes:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            text = path.read_text(encoding="ascii").strip()
            if len(text) >= 64:
                return bytes.fromhex(text)
            raise RuntimeError(f"{path} is not a key localnemo wrote: remove it to make a new one") from None
        key = secrets.token_bytes(32)
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(key.hex())
            out.flush()
            os.fsync(out.fileno())
        return key

    def _signature(self, path: str, expires: int) -> str:
        return hmac.new(self.secret, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def sign(self, base: str, path: str) -> str:
        # Rounded up to the minute, so that polls close together hand out the same link.
        expires = math.ceil((time.time() + self.seconds) / 60) * 60
        return f"{base}{path}?e={expires}&s={self._signature(path, expires)}"

    def valid(self, path: str, expires: str, signature: str) -> bool:
        if not expires.isdigit() or int(expires) <= time.time():
            return False
        return hmac.compare_digest(self._signature(path, int(expires)), signature)


class Changes:
    """Wakes every waiting status request when any job moves (status, progress, queue); each re-checks its own."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        # A fresh Event per change: waiters hold the old one, so that no change between looks is missed.
        self._event.set()
        self._event = asyncio.Event()

    def ticket(self) -> asyncio.Event:
        """Set by the next ``notify``; take it *before* looking at the job."""
        return self._event


class RenderSlots:
    """At most ``limit`` renders at once; the others wait first come, first served."""

    def __init__(self, limit: int, on_change: Callable[[], None] = lambda: None) -> None:
        self.limit = limit
        self.running = 0
        self._on_change = on_change
        self._waiting: collections.deque[tuple[RenderJob, asyncio.Future[None]]] = collections.deque()

    def next_position(self) -> int | None:
        """The queue position a job asking now gets; None when it starts at once."""
        if self.running < self.limit and not self._waiting:
            return None
        return len(self._waiting) + 1

    def position(self, job: RenderJob) -> int | None:
        """1 for the next job to start, None when the job is not waiting."""
        for index, (waiting, _) in enumerate(self._waiting, start=1):
            if waiting is job:
                return index
        return None

    @contextlib.asynccontextmanager
    async def slot(self, job: RenderJob) -> AsyncIterator[None]:
        if self.running < self.limit and not self._waiting:
            self.running += 1
        else:
            entry = (job, asyncio.get_running_loop().create_future())
            self._waiting.append(entry)
            try:
                await entry[1]
            except asyncio.CancelledError:
                if entry in self._waiting:
                    self._waiting.remove(entry)
                    self._on_change()
                elif entry[1].done() and not entry[1].cancelled():
                    self._release()  # granted, then cancelled before it started: pass the slot on
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        # Every waiting job moves up a place.
        self._on_change()
        while self._waiting:
            _, granted = self._waiting.popleft()
            if not granted.done():
                granted.set_result(None)  # the slot goes to it: running stays the same
                return
        self.running -= 1


class Renders:
    """The export routes over the store's jobs; each render runs as a background task of the runtime, or, with
    a render queue (``queue``, localnemo.renderqueue), in a render worker that a background task follows."""

    def __init__(
        self, runtime: Runtime, renderer: Renderer, quota: DiskQuota, queue: RenderQueue | None = None
    ) -> None:
        self.runtime = runtime
        self.config = runtime.config
        self.state = runtime.state
        self.renderer = renderer
        self.quota = quota
        self.links = ResultLinks(self.config.data_dir, self.config.result_link_hours)
        self.changes = Changes()
        self.slots = RenderSlots(self.config.max_renders, self.changes.notify)
        self.folder = self.config.renders_dir
        self.queue = queue
        # Place in the render queue of each queued job waiting for a worker, by token.
        self.queue_positions: dict[str, int] = {}
        # Renders go into the queue in the order they were asked for: one submission at a time, taken in the
        # order the jobs' tasks start (an asyncio lock is first come, first served).
        self._submitting = asyncio.Lock()

    async def on_startup(self, app: web.Application) -> None:
        """Render again every job the last run left pending or processing, in the order they were asked."""
        unfinished = [job for job in self.state.jobs.values() if not job.finished]
        for job in sorted(unfinished, key=lambda j: j.created_at_ms):
            user = self.state.users.get(job.user_id)
            if job.draft is None or user is None or job.session_id not in self.state.sessions:
                self._fail_job(job, "the render was interrupted and cannot be resumed: export again")
                continue
            job.status, job.progress = "pending", 0
            self._start(job, job.draft, self._sources(user, job.draft))
            log.info("localnemo.render.resumed id=%s user_id=%s", job.job_id, job.user_id)

    async def render(self, request: web.Request) -> web.StreamResponse:
        user = self.runtime.user(request)
        if self.config.require_attribution and not all(
            request.headers.get(name, "").strip() for name in _ATTRIBUTION_HEADERS
        ):
            raise ApiError(
                402,
                402,
                "export not available: attribution headers X-Skill-Source, X-Skill-Version and "
                "X-Skill-Platform are required",
            )
        body = await json_object(request)
        render_id, session_id, draft_body = body.get("id"), body.get("sessionId"), body.get("draft")
        output = body.get("output", {})
        if not isinstance(render_id, str) or not _RENDER_ID_RE.match(render_id):
            raise ApiError(400, 400, "id must be 1-128 characters of letters, digits, '_', '-' or '.'")
        if not isinstance(session_id, str) or not isinstance(draft_body, dict) or not isinstance(output, dict):
            raise ApiError(400, 400, "expected {id, sessionId, draft: {...}, output: {...}}")
        if (problem := timeline.draft_shape_problem(draft_body)) is not None:
            raise ApiError(400, 400, problem)
        draft = timeline.Draft.model_validate(draft_body)
        resolution = output.get("resolution")
        if isinstance(resolution, str) and resolution.strip():
            try:
                resolution_lines(resolution)
            except ValueError:
                raise ApiError(400, 400, "output.resolution must be like 720p, 1080p or 4k") from None
            # An export "at 1080p" overrides what the draft says, for this render only.
            draft.m.resolution = resolution.strip().lower()
        if self.state.owned_job(user, render_id) is not None:
            raise ApiError(409, 409, "render id already exists")
        unfinished = sum(not other.finished for other in self.state.jobs.values() if other.user_id == user.user_id)
        if unfinished >= self.config.max_renders_per_user:
            # One user must not fill the queue that everyone shares.
            raise ApiError(429, 429, "too many exports waiting; try again when one is done")
        session = self.runtime.session(user, session_id)
        await self.quota.make_room(0, keep=session)
        job = RenderJob(job_id=render_id, user_id=user.user_id, session_id=session.session_id, created_at_ms=_now_ms())
        refusal = self._refusal(draft)
        if refusal is not None:
            job.status, job.error = "failed", refusal
            log.info("localnemo.render.refused id=%s reason=%s", render_id, refusal)
        else:
            job.draft = draft
        self.state.add_job(job)
        # Built before the render's task first runs, so it says "pending".
        queued = self.slots.next_position() if job.draft is not None and self.queue is None else None
        answer = self._job_response(job, self.runtime.base_url(request), queued)
        if job.draft is not None:
            self._start(job, draft, self._sources(user, draft))
            log.info("localnemo.render.created id=%s session_id=%s", render_id, session.session_id)
        # On disk before the client has the id: a restarted server renders it and knows it.
        try:
            await self.state.sync()
        except StoreError:
            # Not saved: undone, so that the client's "try again" with the same id is a new export.
            if job.task is not None:
                job.task.cancel()
            self.state.remove_job(job)
            raise
        return answer

    def _refusal(self, draft: timeline.Draft) -> str | None:
        """Why this draft is not rendered, in words a user can act on; None when it may be.

        A failed job rather than an HTTP 400: a client shows a failed export's reason as it is, the way it
        shows an empty timeline's."""
        if not timeline.has_segment(draft):
            return "invalid draft: the timeline is empty"
        segments = sum(len(track.sg) for track in draft.t)
        if segments > self.config.max_segments:
            return (
                f"the timeline has {segments} pieces, more than the {self.config.max_segments} one export "
                "can have here: join or remove some and export again"
            )
        length = timeline.timeline_length_ms(draft) / 1000
        if length > self.config.max_output_seconds:
            limit = span_words(self.config.max_output_seconds)
            return (
                f"the video would be {span_words(length)} long, more than the {limit} one export can be here: "
                "trim it and export again"
            )
        return None

    def _start(self, job: RenderJob, draft: timeline.Draft, sources: dict[str, Path]) -> None:
        work = self._render_job(job, draft, sources) if self.queue is None else self._queued_job(job, draft, sources)
        job.task = self.runtime.spawn(work, f"localnemo-render-{job.token}")

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
            if len(parts) != 4 or parts[1] != "files" or not STORED_NAME_RE.match(parts[3]):
                continue
            session = self.state.owned_session(user, parts[2])
            if session is None:
                continue
            path = session.folder / parts[3]
            if path.is_file():
                sources[text] = path
        return sources

    async def _run_renderer(
        self, job: RenderJob, draft: timeline.Draft, sources: dict[str, Path], out_path: Path, reported: list[float]
    ) -> RenderOutput:
        def on_progress(fraction: float) -> None:
            # May be called from a worker thread: only store the number.
            reported[0] = max(reported[0], min(1.0, fraction))

        async with self.slots.slot(job):
            if job.finished:  # cancelled while it waited
                raise asyncio.CancelledError
            job.status = "processing"
            self._changed(job)
            log.info("localnemo.render.start id=%s running=%s", job.job_id, self.slots.running)
            await asyncio.to_thread(_private_dir, self.folder)
            # Cancelling the renderer kills its FFmpeg and waits for it (localnemo.render).
            async with asyncio.timeout(self.config.render_timeout_seconds):
                result = await self.renderer.render(draft, sources, out_path, on_progress)
        await asyncio.to_thread(os.chmod, out_path, 0o600)
        return result

    async def _render_job(self, job: RenderJob, draft: timeline.Draft, sources: dict[str, Path]) -> None:
        out_path = self.folder / f"{job.token}.mp4"
        reported = [0.0]
        # No wait before the render takes its place among the waiting ones: they wait in the order asked.
        work = asyncio.ensure_future(self._run_renderer(job, draft, sources, out_path, reported))
        steps = max(1, self.config.render_steps)
        try:
            # Progress follows the slower of the clock (render_steps × render_step_seconds, the minimum
            # duration of a render, for realism) and the renderer's own report.
            for step in range(1, steps + 1):
                await asyncio.wait({work}, timeout=self.config.render_step_seconds)
                rendered = 1.0 if work.done() else reported[0]
                self._progress(job, int(95 * min(step / steps, rendered)))
            while not work.done():
                await asyncio.wait({work}, timeout=max(self.config.render_step_seconds, 0.1))
                self._progress(job, int(95 * reported[0]))
            result = work.result()
        except asyncio.CancelledError:
            # Cancelled, or the server is stopping: a stopping server leaves the job unfinished on disk,
            # and the next start renders it again.
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
            await asyncio.to_thread(unlink_quietly, out_path)
            raise
        except TimeoutError:
            minutes = span_words(self.config.render_timeout_seconds)
            self._fail_job(job, f"the render took longer than {minutes} and was stopped")
            await asyncio.to_thread(unlink_quietly, out_path)
            return
        except RenderError as exc:
            self._fail_job(job, str(exc))
            await asyncio.to_thread(unlink_quietly, out_path)
            return
        except Exception:
            log.exception("localnemo.render.crashed id=%s", job.job_id)
            self._fail_job(job, "render failed: internal error")
            await asyncio.to_thread(unlink_quietly, out_path)
            return
        if job.finished:  # cancelled meanwhile
            await asyncio.to_thread(unlink_quietly, out_path)
            return
        await self._complete(job, draft, out_path, result.duration, result.size)

    async def _queued_job(self, job: RenderJob, draft: timeline.Draft, sources: dict[str, Path]) -> None:
        """Queue the render for the render workers and follow its row until it is finished."""
        queue = self.queue
        assert queue is not None
        try:
            try:
                async with self._submitting:
                    shared = {url: await queue.share(path) for url, path in sources.items()}
                    await queue.submit(job.token, draft.to_wire(), shared)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("localnemo.render.not_queued id=%s", job.job_id)
                self._fail_job(job, "render failed: internal error")
                return
            while not job.finished:
                ticket = queue.ticket()
                try:
                    row = await queue.row(job.token)
                    position = await queue.position(job.token) if row is None or row.status == "pending" else None
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # The queue's database is out of reach for a moment: the workers go on, and so does this.
                    log.warning("localnemo.render.queue_unreachable id=%s error=%s", job.job_id, type(exc).__name__)
                else:
                    await self._follow(job, draft, row, position)
                if not job.finished:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(ticket.wait(), _RECHECK_SECONDS)
        except asyncio.CancelledError:
            if job.finished:  # cancelled by its owner: a worker rendering it stops (not so for a stopping server)
                with contextlib.suppress(Exception):
                    await asyncio.shield(queue.cancel(job.token))
            raise
        finally:
            self.queue_positions.pop(job.token, None)

    async def _follow(self, job: RenderJob, draft: timeline.Draft, row: RenderRow | None, position: int | None) -> None:
        """Take what the workers wrote of the job into the job."""
        if position is not None and self.queue_positions.get(job.token) != position:
            self.queue_positions[job.token] = position
            self.changes.notify()
        elif position is None and self.queue_positions.pop(job.token, None) is not None:
            self.changes.notify()
        if row is None or job.finished:
            return
        if row.status == "processing":
            if job.status == "pending":
                job.status = "processing"
                self._changed(job)
                log.info("localnemo.render.start id=%s worker=%s", job.job_id, row.worker)
            self._progress(job, int(95 * min(row.progress, 100) / 100))
        elif row.status == "failed":
            self._fail_job(job, row.error or "render failed")
        elif row.status == "completed" and row.output is not None:
            await self._complete(job, draft, self.folder / row.output, row.duration, row.size, row.worker)

    async def _complete(
        self, job: RenderJob, draft: timeline.Draft, out_path: Path, duration: float | None, size: int | None,
        worker: str | None = None,
    ) -> None:
        """The result is in place: its captions beside it, and the job completed."""
        try:
            await self._write_captions(draft, out_path, duration)
        except OSError:
            # The video is done; captions that could not be written (a full disk) must not leave it unfinished.
            log.warning("localnemo.render.captions_not_written id=%s", job.job_id, exc_info=True)
        job.status = "completed"
        job.progress = 100
        job.output_path = out_path
        job.duration = duration
        job.size = size
        job.completed_at_ms = _now_ms()
        self._changed(job)
        log.info("localnemo.render.completed id=%s size=%s worker=%s", job.job_id, size, worker or "this server")

    @staticmethod
    async def _write_captions(draft: timeline.Draft, out_path: Path, duration: float | None) -> None:
        """The draft's captions as a SubRip file beside the result (``<token>.srt``), timed to it."""
        length = round(duration * 1000) if duration else None
        cues = draft_captions(draft, length)
        if cues:
            await asyncio.to_thread(out_path.with_suffix(".srt").write_text, srt_text(cues), encoding="utf-8")

    def _fail_job(self, job: RenderJob, reason: str) -> None:
        if job.finished:
            return
        job.status = "failed"
        job.error = reason
        self._changed(job)
        log.info("localnemo.render.failed id=%s reason=%s", job.job_id, reason)

    def _changed(self, job: RenderJob) -> None:
        """A job's status changed: stored, and every waiting status request looks again."""
        self.state.job_changed(job)
        self.changes.notify()

    def _progress(self, job: RenderJob, progress: int) -> None:
        if progress > job.progress:
            job.progress = progress
            self.changes.notify()

    def _position(self, job: RenderJob) -> int | None:
        if job.status != "pending":
            return None
        return self.slots.position(job) if self.queue is None else self.queue_positions.get(job.token)

    def _seen(self, job: RenderJob, position: int | None) -> str:
        """What a client has seen of a job, as the ``since`` it sends back with its next wait."""
        return f"{job.status}.{job.progress}.{position or 0}"

    def _job_response(self, job: RenderJob, base: str, queued: int | None = None) -> web.Response:
        url = captions = None
        if job.status == "completed" and job.output_path is not None:
            url = self.links.sign(base, f"/render-result/{job.token}.mp4")
            if job.output_path.with_suffix(".srt").is_file():
                captions = self.links.sign(base, f"/render-result/{job.token}.srt")
        position = queued if queued is not None else self._position(job)
        headers = {WAIT_HEADER: "1", STATE_HEADER: self._seen(job, position)}
        if self.config.job_shape == "top":
            body: dict[str, Any] = {"taskId": job.job_id, "status": job.status, "progress": job.progress}
            if position is not None:
                body["queuePosition"] = position
            if url is not None:
                body["output"] = {"url": url, "duration": job.duration, "size": job.size}
                if captions is not None:
                    body["output"]["captionsUrl"] = captions
            if job.error is not None:
                body["error"] = job.error
            return web.json_response(body, headers=headers)
        data: dict[str, Any] = {"id": job.job_id, "status": job.status, "progress": job.progress}
        if position is not None:
            data["queuePosition"] = position
        if url is not None:
            data["outputUrl"] = url
        if captions is not None:
            data["captionsUrl"] = captions
        data["createdAt"] = job.created_at_ms
        if job.completed_at_ms is not None:
            data["completedAt"] = job.completed_at_ms
        if job.error is not None:
            data["error"] = job.error
        return web.json_response({"success": True, "data": data}, headers=headers)

    def _owned_job(self, user: UserRecord, job_id: str) -> RenderJob:
        job = self.state.owned_job(user, job_id)
        if job is None:
            raise ApiError(404, 404, "render job not found")
        return job

    async def render_status(self, request: web.Request) -> web.StreamResponse:
        user = self.runtime.user(request)
        job = self._owned_job(user, request.match_info["rid"])
        wait = _wait_seconds(request.query.get("wait"))
        if wait > 0:
            await self._until_changed(job, request.query.get("since"), wait)
        return self._job_response(job, self.runtime.base_url(request))

    async def _until_changed(self, job: RenderJob, since: str | None, seconds: float) -> None:
        """Return once the job differs from ``since`` (or from now), is finished, or ``seconds`` pass."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        seen = since if since is not None else self._seen(job, self._position(job))
        while True:
            ticket = self.changes.ticket()
            if job.finished or self._seen(job, self._position(job)) != seen:
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ticket.wait(), min(remaining, _RECHECK_SECONDS))

    async def render_cancel(self, request: web.Request) -> web.StreamResponse:
        user = self.runtime.user(request)
        job = self._owned_job(user, request.match_info["rid"])
        if not job.finished:
            self._fail_job(job, "cancelled")
            if job.task is not None:
                job.task.cancel()
        return ok({})

    async def result(self, request: web.Request) -> web.StreamResponse:
        """The result to its owner's token or through its signed link; a 404 otherwise, whatever the reason,
        so that nobody learns that a result exists."""
        job = self.state.jobs_by_token.get(request.match_info["token"])
        if job is None or job.status != "completed" or job.output_path is None or not self._may_read(request, job):
            raise ApiError(404, 404, "file not found")
        if not await asyncio.to_thread(job.output_path.is_file):
            raise ApiError(404, 404, "file not found")
        return web.FileResponse(job.output_path, headers={"Content-Type": "video/mp4", "Cache-Control": "private"})

    async def captions(self, request: web.Request) -> web.StreamResponse:
        """The result's captions (.srt), to whoever may read the result."""
        job = self.state.jobs_by_token.get(request.match_info["token"])
        if job is None or job.status != "completed" or job.output_path is None or not self._may_read(request, job):
            raise ApiError(404, 404, "file not found")
        path = job.output_path.with_suffix(".srt")
        if not await asyncio.to_thread(path.is_file):
            raise ApiError(404, 404, "file not found")
        return web.FileResponse(path, headers={"Content-Type": "application/x-subrip", "Cache-Control": "private"})

    def _may_read(self, request: web.Request, job: RenderJob) -> bool:
        expires, signature = request.query.get("e"), request.query.get("s")
        if expires is not None and signature is not None and self.links.valid(request.path, expires, signature):
            return True
        if "Authorization" not in request.headers:
            return False
        try:
            return self.runtime.user(request).user_id == job.user_id
        except ApiError:
            return False


def _wait_seconds(text: str | None) -> float:
    """The ``wait`` of a status request: 0 when absent, capped at MAX_WAIT_SECONDS; else ApiError 400."""
    if text is None:
        return 0.0
    try:
        seconds = float(text)
    except ValueError:
        raise ApiError(400, 400, "wait must be a number of seconds") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ApiError(400, 400, "wait must be a number of seconds")
    return min(seconds, MAX_WAIT_SECONDS)


def _iter_strings(value: Any) -> Iterator[str]:
    # Without recursion: a draft's depth is capped (timeline.draft_shape_problem), but this walk must not
    # depend on it.
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list):
            stack.extend(reversed(item))
