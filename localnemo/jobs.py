"""Render jobs: the export route (checks, a job per render id), running the renderer with progress,
status, cancel, the two documented job answer shapes (docs/nemo-api.md, "Export job") and the result file.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiohttp import web
from yarl import URL

from localnemo import timeline
from localnemo.config import resolution_lines
from localnemo.envelope import ApiError, json_object, ok
from localnemo.quota import DiskQuota, unlink_quietly
from localnemo.render import Renderer, RenderError
from localnemo.runtime import Runtime
from localnemo.state import RenderJob, UserRecord
from localnemo.uploads import STORED_NAME_RE

log = logging.getLogger(__name__)

_ATTRIBUTION_HEADERS = ("X-Skill-Source", "X-Skill-Version", "X-Skill-Platform")
_RENDER_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def _now_ms() -> int:
    return int(time.time() * 1000)


class Renders:
    """The export routes over the store's jobs; each render runs as a background task of the runtime."""

    def __init__(self, runtime: Runtime, renderer: Renderer, quota: DiskQuota) -> None:
        self.runtime = runtime
        self.config = runtime.config
        self.state = runtime.state
        self.renderer = renderer
        self.quota = quota

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
        session = self.runtime.session(user, session_id)
        await self.quota.make_room(0, keep=session)
        job = RenderJob(job_id=render_id, user_id=user.user_id, session_id=session.session_id, created_at_ms=_now_ms())
        self.state.jobs[render_id] = job
        if not timeline.has_segment(draft):
            job.status = "failed"
            job.error = "invalid draft: the timeline is empty"
            log.info("localnemo.render.refused id=%s reason=empty", render_id)
        else:
            sources = self._sources(user, draft)
            # The answer below is built before this task first runs, so it says "pending".
            job.task = self.runtime.spawn(
                self._render_job(job, draft, sources, self.runtime.base_url(request)), f"localnemo-render-{render_id}"
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
            if len(parts) != 4 or parts[1] != "files" or not STORED_NAME_RE.match(parts[3]):
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
            await asyncio.to_thread(unlink_quietly, out_path)
            raise
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
        user = self.runtime.user(request)
        return self._job_response(self._owned_job(user, request.match_info["rid"]))

    async def render_cancel(self, request: web.Request) -> web.StreamResponse:
        user = self.runtime.user(request)
        job = self._owned_job(user, request.match_info["rid"])
        if not job.finished:
            self._fail_job(job, "cancelled")
            if job.task is not None:
                job.task.cancel()
        return ok({})

    async def result(self, request: web.Request) -> web.StreamResponse:
        job = self.state.jobs.get(request.match_info["rid"])
        if job is None or job.status != "completed" or job.output_path is None:
            raise ApiError(404, 404, "file not found")
        if not await asyncio.to_thread(job.output_path.is_file):
            raise ApiError(404, 404, "file not found")
        return web.FileResponse(job.output_path, headers={"Content-Type": "video/mp4"})


def _iter_strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _iter_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _iter_strings(item)
