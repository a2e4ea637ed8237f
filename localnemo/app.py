"""localnemo: a NemoVideo-compatible HTTP server on aiohttp.web, run locally.

It speaks the protocol of docs/nemo-api.md (tokens, sessions, uploads, the ``/run_sse`` event stream in
both documented dialects, state, credits, exports, claim links) over in-memory records and files under
a data directory. It is the backend of the bot's client tests and, with the FFmpeg renderer, an offline
editor. This module builds the application (routes, the error middleware) and runs it (``LocalNemo``,
``serve_forever``); the test controls (faults, call log, ``/_localnemo/*``) are only in
``localnemo.testing``, which tests install.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self

from aiohttp import web
from aiohttp.typedefs import Middleware

from localnemo.agent import Agent, PauseSettings, PlannerAgent
from localnemo.api import Api
from localnemo.config import LocalNemoConfig
from localnemo.envelope import ApiError, error_response
from localnemo.housekeeping import Housekeeping
from localnemo.jobs import Renders
from localnemo.music import machine_cache
from localnemo.persist import StoreError
from localnemo.quota import DiskQuota
from localnemo.render import CopyRenderer, FFmpegRenderer, Renderer, RenderSettings
from localnemo.runtime import Runtime
from localnemo.speech import Speech
from localnemo.state import LocalNemoState
from localnemo.uploads import Uploads

log = logging.getLogger(__name__)

RUNTIME_KEY = web.AppKey("localnemo_runtime", Runtime)


def default_agent(config: LocalNemoConfig, speech: Speech | None = None) -> Agent:
    """The planner agent with the configured pause rules and speech recogniser (``speech``: another one, such
    as the render workers' :class:`localnemo.renderqueue.QueuedSpeech`)."""
    pauses = PauseSettings(
        threshold_db=config.silence_threshold_db,
        min_silence_ms=config.silence_min_ms,
        margin_ms=config.silence_margin_ms,
        min_clip_ms=config.min_clip_ms,
        min_cut_ms=config.min_cut_ms,
        min_end_ms=config.min_end_ms,
        min_speech_ms=config.min_speech_ms,
    )
    speech = speech or Speech(config.stt_engine, config.whisper_model)
    return PlannerAgent(pauses=pauses, default_resolution=config.default_resolution, speech=speech)


def default_renderer(config: LocalNemoConfig) -> Renderer:
    if config.renderer == "copy":
        return CopyRenderer()
    settings = RenderSettings(
        x264_preset=config.x264_preset,
        x264_crf=config.x264_crf,
        default_resolution=config.default_resolution,
        font_file=config.font_file,
    )
    return FFmpegRenderer(settings, config.data_dir / "assets", machine_cache())


@web.middleware
async def errors_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every failure as the backend's ``{"code", "message"}`` answer; never a stack trace."""
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except StoreError:
        # What this request changed is not on disk (it is tried again): the client must not count on it.
        return error_response(503, 503, "could not save the change: try again")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.status, (exc.reason or "error").lower())
    except ConnectionError as exc:
        # The client went away mid-request (e.g. it gave up on an upload): nobody reads the answer.
        log.info("localnemo.client_gone method=%s path=%s error=%s", request.method, request.path, type(exc).__name__)
        return error_response(400, 400, "connection lost")
    except Exception:
        # Never a stack trace in an answer; the log has it.
        log.exception("localnemo.internal_error method=%s path=%s", request.method, request.path)
        return error_response(500, 500, "internal error")


def session_saver(state: LocalNemoState) -> Middleware:
    """After an upload, the session (its draft and media) is written to the store: uploads are handled in
    ``localnemo.uploads``, which does not know about the store."""

    @web.middleware
    async def save_session(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        finally:
            if request.match_info.route.name == "upload":
                session = state.sessions.get(request.match_info.get("sid", ""))
                if session is not None:
                    state.session_changed(session)

    return save_session


def create_app(
    config: LocalNemoConfig, *, agent: Agent | None = None, renderer: Renderer | None = None
) -> web.Application:
    """The aiohttp application of localnemo (``app[RUNTIME_KEY].state`` is its store)."""
    config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Uploads and results are the users' own: nobody else on the machine reads them.
    config.data_dir.chmod(0o700)
    runtime = Runtime(config)
    quota = DiskQuota(config, runtime.state)
    renderer = renderer if renderer is not None else default_renderer(config)
    queue = None
    speech = None
    if config.queue_db is not None:
        # Imported only here: a server without render workers never loads the queue's libraries.
        from localnemo.renderqueue import QueuedSpeech, RenderQueue

        queue = RenderQueue(config.queue_db, config.shared_dir or config.data_dir)
        # The render workers recognise speech too: it is as heavy as a render.
        speech = QueuedSpeech(queue, config.stt_engine, config.whisper_model)
    api = Api(runtime, agent if agent is not None else default_agent(config, speech))
    uploads = Uploads(runtime, quota)
    renders = Renders(runtime, renderer, quota, queue)
    app = web.Application(middlewares=[errors_middleware, session_saver(runtime.state)])
    app[RUNTIME_KEY] = runtime
    app.on_shutdown.append(runtime.on_shutdown)
    # First: it removes the partial files a killed run left, before any render starts again.
    app.on_startup.append(Housekeeping(runtime, queue).on_startup)
    if queue is not None:
        app.on_startup.append(queue.on_startup)
        app.on_cleanup.append(queue.on_cleanup)
    app.on_startup.append(renders.on_startup)
    if isinstance(renderer, FFmpegRenderer):
        app.on_startup.append(renderer.on_startup)
        app.on_cleanup.append(renderer.on_cleanup)
    app.on_cleanup.append(uploads.on_cleanup)
    app.on_cleanup.append(runtime.on_cleanup)
    # Route names are the endpoint names of the call log and of the faults tests inject (localnemo.testing).
    router = app.router
    router.add_post("/api/auth/anonymous-token", api.token, name="token")
    router.add_post("/api/tasks/me/with-session/nemo_agent", api.new_session, name="session")
    router.add_post("/run_sse", api.run_sse, name="run_sse")
    router.add_post("/api/upload-video/nemo_agent/me/{sid}", uploads.upload, name="upload")
    router.add_get("/api/credits/balance/simple", api.credits, name="credits")
    router.add_get("/api/state/nemo_agent/me/{sid}/latest", api.session_state, name="state")
    router.add_post("/api/render/proxy/lambda", renders.render, name="render")
    router.add_get("/api/render/proxy/lambda/{rid}", renders.render_status, name="render_status")
    router.add_post("/api/render/proxy/lambda/{rid}/cancel", renders.render_cancel, name="render_cancel")
    router.add_post("/api/auth/claim-token", api.claim, name="claim")
    router.add_get("/files/{sid}/{name}", uploads.file, name="file")
    router.add_get("/render-result/{token}.mp4", renders.result, name="result")
    router.add_get("/render-result/{token}.srt", renders.captions, name="captions")
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
        shutdown_timeout: float = 5.0,
    ) -> None:
        self.config = config
        self.host = host
        self.port = port
        self.app = create_app(config, agent=agent, renderer=renderer)
        self.runtime = self.app[RUNTIME_KEY]
        self.shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    @property
    def state(self) -> LocalNemoState:
        return self.runtime.state

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

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


async def serve_forever(host: str, port: int, config: LocalNemoConfig) -> None:
    """Run localnemo until SIGINT or SIGTERM (``nemobot serve-local``), then stop as a restart expects: the
    store written, the renders under way left for the next start. SIGTERM is how a service manager or
    ``docker compose stop`` asks; without a handler it would end the process on the spot."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # not on Windows' event loop
            loop.add_signal_handler(signum, stop.set)
    async with LocalNemo(config, host=host, port=port) as server:
        log.info("localnemo.serving base_url=%s", server.base_url)
        await stop.wait()
        log.info("localnemo.stopping")
