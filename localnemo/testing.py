"""Test controls of localnemo, installed by tests only: fault injection, the call log, credit grants,
token expiry, the ``/_localnemo/*`` admin routes that steer a server running in another process, and the
hosted agent's quirks as agent wrappers: failing when a test asks it to ("simulate an error") and ending
every Nth edit with no text (``SilentEvery``).

The hosted backend fails in ways a client must survive: error envelopes, bare HTTP statuses, HTML
error pages from a proxy, streams that drop, stall or only send heartbeats. ``FaultPlan`` makes each
of them happen on demand, in-process or through the admin API. The product application
(``localnemo.app.create_app``, ``LocalNemo``) has none of this; ``install_test_controls`` adds it to an
application, ``TestLocalNemo`` is a ``LocalNemo`` with it, and ``python -m localnemo.testing --port N``
runs one as its own process (settings from the ``LOCALNEMO_*`` variables).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import signal
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from http import HTTPStatus

from aiohttp import web

from bot.lang import language_of
from bot.texts import t
from localnemo.agent import Agent, AgentError, AgentEvent, AgentText, AgentToolCall
from localnemo.app import RUNTIME_KEY, LocalNemo, default_agent
from localnemo.config import LocalNemoConfig
from localnemo.envelope import ApiError, error_response, json_object, ok
from localnemo.render import Renderer
from localnemo.runtime import Runtime
from localnemo.sse import STREAM_MODES, StreamFault, StreamMode
from localnemo.state import SessionRecord

log = logging.getLogger(__name__)

# The route names of localnemo.app: the endpoints a fault can be injected into.
ENDPOINTS: tuple[str, ...] = (
    "token",
    "session",
    "run_sse",
    "upload",
    "credits",
    "state",
    "render",
    "render_status",
    "render_cancel",
    "claim",
    "file",
    "result",
)


# The call log keeps the last this many calls.
MAX_CALLS = 10_000
# The only request headers the call log keeps: what tests check (the attribution headers) and plain
# transport facts. Anything else may carry a credential (Authorization, a cookie, X-Client-Id, which
# buys a token) and is never stored.
_LOGGED_HEADERS = frozenset({"accept", "content-length", "content-type", "range", "user-agent"})
_TOKEN_RE = re.compile(r"nmv_\w+|bearer\s+\S+", re.IGNORECASE)


def loggable_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers the call log may keep: the attribution headers and a few plain ones, never a token."""
    kept: dict[str, str] = {}
    for name, value in headers.items():
        lowered = name.lower()
        if lowered.startswith("x-skill-") or lowered in _LOGGED_HEADERS:
            kept[name] = _TOKEN_RE.sub("[redacted]", value)
    return kept


# The part of a route's path that is a capability (whoever has the URL may read the file), by route name.
_CAPABILITIES = {"result": "token", "file": "name"}
MASK = "***"


def loggable_path(request: web.Request) -> str:
    """The request's path, with the part that works as a credential (a result's token, a stored file's
    name) masked."""
    key = _CAPABILITIES.get(request.match_info.route.name or "")
    value = request.match_info.get(key, "") if key is not None else ""
    if not value:
        return request.path
    head, found, tail = request.path.rpartition(value)
    return f"{head}{MASK}{tail}" if found else request.path


@dataclass
class Call:
    """One request as received (endpoint is the route name, "" when no route matched); ``path`` is masked
    by ``loggable_path`` and ``headers`` holds only what ``loggable_headers`` keeps."""

    endpoint: str
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class FailFault:
    endpoint: str
    code: int
    status: int
    message: str
    html: bool
    remaining: int  # -1: until cleared


class FaultPlan:
    """Pending faults and the call log (the last ``MAX_CALLS`` calls). Faults are used up in the order they
    were added."""

    def __init__(self, max_calls: int = MAX_CALLS) -> None:
        self._calls: deque[Call] = deque(maxlen=max_calls)
        self._failures: list[FailFault] = []
        self._streams: list[StreamFault] = []

    def fail(
        self,
        endpoint: str,
        code: int,
        *,
        status: int | None = None,
        message: str = "injected failure",
        times: int = 1,
        html: bool = False,
    ) -> None:
        """Answer the next ``times`` calls to ``endpoint`` with an error (``times=-1``: until cleared).

        The body is ``{"code": code, "message": message}`` with HTTP ``status`` (default: ``code`` when
        it is an HTTP status, else 200 as the hosted backend does for its own codes), or with
        ``html=True`` an HTML error page such as a proxy in front of the backend sends.
        """
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; known: {', '.join(ENDPOINTS)}")
        if times == 0 or times < -1:
            raise ValueError("times must be positive, or -1 for until cleared")
        http_status = status if status is not None else (code if code < 600 else 200)
        if not 200 <= http_status < 600:
            raise ValueError(f"status must be an HTTP status, not {http_status}")
        self._failures.append(FailFault(endpoint, code, http_status, message, html, times))

    def stream(
        self,
        mode: StreamMode,
        *,
        after_events: int = 1,
        delay: float = 1.0,
        times: int = 1,
    ) -> None:
        """Misbehave on the next ``times`` message streams (``times=-1``: until cleared).

        drop: after ``after_events`` events the TCP connection is closed mid-body;
        hang: after ``after_events`` events nothing more is sent, the connection stays open;
        heartbeats_only: only heartbeats, until the client goes away (the message is not processed);
        slow: ``delay`` seconds between events.
        """
        if mode not in STREAM_MODES:
            raise ValueError(f"mode must be one of {STREAM_MODES}, not {mode!r}")
        if times == 0 or times < -1:
            raise ValueError("times must be positive, or -1 for until cleared")
        if after_events < 0 or delay < 0:
            raise ValueError("after_events and delay must not be negative")
        self._streams.append(StreamFault(mode, after_events, delay, times))

    def clear(self) -> None:
        """Forget every pending fault (the call log is kept)."""
        self._failures.clear()
        self._streams.clear()

    @property
    def calls(self) -> list[Call]:
        """The logged calls, oldest first."""
        return list(self._calls)

    def count(self, endpoint: str) -> int:
        return sum(1 for call in self._calls if call.endpoint == endpoint)

    def record(self, call: Call) -> None:
        self._calls.append(call)

    def take_failure(self, endpoint: str) -> FailFault | None:
        """The failure that applies to this call to ``endpoint``, if any (uses one of its ``times``)."""
        for fault in self._failures:
            if fault.endpoint != endpoint:
                continue
            if fault.remaining > 0:
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._failures.remove(fault)
            log.info("localnemo.fault.fail endpoint=%s code=%s status=%s", endpoint, fault.code, fault.status)
            return fault
        return None

    def take_stream(self) -> StreamFault | None:
        """The stream fault for this message stream, if any (uses one of its ``times``)."""
        if not self._streams:
            return None
        fault = self._streams[0]
        if fault.remaining > 0:
            fault.remaining -= 1
            if fault.remaining == 0:
                self._streams.pop(0)
        log.info("localnemo.fault.stream mode=%s after_events=%s", fault.mode, fault.after_events)
        return fault


class _TestControls:
    """The faults middleware and the admin routes, over one application's runtime."""

    def __init__(self, runtime: Runtime, faults: FaultPlan) -> None:
        self.runtime = runtime
        self.state = runtime.state
        self.faults = faults

    @web.middleware
    async def faults_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        endpoint = request.match_info.route.name or ""
        if endpoint.startswith("admin_"):
            return await handler(request)
        self.faults.record(Call(endpoint, request.method, loggable_path(request), loggable_headers(request.headers)))
        fault = self.faults.take_failure(endpoint) if endpoint else None
        if fault is not None:
            return fault_response(fault)
        return await handler(request)

    async def admin_faults(self, request: web.Request) -> web.StreamResponse:
        body = await json_object(request)
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
        body = await json_object(request, required=False)
        user_id = body.get("user_id")
        if user_id is not None and not isinstance(user_id, str):
            raise ApiError(400, 400, "user_id must be a string")
        return ok({"expired": self.state.expire_tokens(user_id)})

    async def admin_credits(self, request: web.Request) -> web.StreamResponse:
        body = await json_object(request)
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


def fault_response(fault: FailFault) -> web.Response:
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


def install_test_controls(app: web.Application, faults: FaultPlan | None = None) -> FaultPlan:
    """Add fault injection, the call log and the ``/_localnemo/*`` routes to a localnemo application that
    has not started yet; return its fault plan."""
    plan = faults if faults is not None else FaultPlan()
    runtime = app[RUNTIME_KEY]
    controls = _TestControls(runtime, plan)
    runtime.stream_fault = plan.take_stream
    # After the error middleware, so that an injected failure or an admin error is answered like any other.
    app.middlewares.append(controls.faults_middleware)
    router = app.router
    router.add_post("/_localnemo/faults", controls.admin_faults, name="admin_faults")
    router.add_get("/_localnemo/calls", controls.admin_calls, name="admin_calls")
    router.add_post("/_localnemo/expire-tokens", controls.admin_expire_tokens, name="admin_expire_tokens")
    router.add_post("/_localnemo/credits", controls.admin_credits, name="admin_credits")
    router.add_get("/_localnemo/runs", controls.admin_runs, name="admin_runs")
    return plan


# How a test asks for a failing tool: the hosted agent's errors cannot be triggered on purpose, and the
# product's agent must never fail because a user typed these words.
_ERROR_RE = re.compile(
    r"\b(simulate|force)\s+(an?\s+)?(error|failure)\b|\bfail\s+(this|the)\s+(edit|message|tool)\b|模拟错误",
    re.IGNORECASE,
)


class ErrorsOnRequest:
    """An agent that answers "simulate an error" (and the like) with the two documented in-stream error
    forms, and passes every other message to the agent it wraps."""

    def __init__(self, inner: Agent) -> None:
        self.inner = inner

    async def run(self, session: SessionRecord, message: str) -> AsyncIterator[AgentEvent]:
        if not _ERROR_RE.search(message):
            async for event in self.inner.run(session, message):
                yield event
            return
        lang = language_of(message, session.language)
        # After a normal start, as in the wire examples.
        yield AgentText(t("agent.looking", lang))
        yield AgentError("upstream model timeout")
        yield AgentError("tool edit_multitrack failed", system=True)


class SilentEvery:
    """An agent that drops the closing text of every ``every``-th edit of a session (0: never), as about a
    third of the hosted agent's edits end with no text; a client must then read the change from the state.
    Every other event of the agent it wraps passes through."""

    def __init__(self, inner: Agent, every: int) -> None:
        if every < 0:
            raise ValueError("every must not be negative")
        self.inner = inner
        self.every = every
        self._edits: dict[str, int] = {}

    async def run(self, session: SessionRecord, message: str) -> AsyncIterator[AgentEvent]:
        silent = edited = False
        async for event in self.inner.run(session, message):
            if isinstance(event, AgentToolCall) and not edited:
                edited = True
                count = self._edits[session.session_id] = self._edits.get(session.session_id, 0) + 1
                silent = self.every > 0 and count % self.every == 0
                if silent:
                    log.info("localnemo.agent.silent session_id=%s", session.session_id)
            if silent and isinstance(event, AgentText):
                continue
            yield event


class TestLocalNemo(LocalNemo):
    """A running localnemo with the test controls: ``faults`` (a FaultPlan with the call log),
    ``expire_tokens`` and ``set_credits``, the admin routes, and the hosted agent's quirks (failures on
    request; with ``silent_every``, every Nth edit of a session ends with no text, 0: never)."""

    __test__ = False  # not a test class, whatever its name says to pytest

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
        silent_every: int = 3,
    ) -> None:
        inner = agent if agent is not None else default_agent(config)
        super().__init__(
            config, host=host, port=port, agent=SilentEvery(ErrorsOnRequest(inner), silent_every),
            renderer=renderer, shutdown_timeout=shutdown_timeout,
        )
        self.faults = install_test_controls(self.app, faults)

    def expire_tokens(self, user_id: str | None = None) -> int:
        """Expire every token (or one user's); the next authenticated call answers 1001."""
        return self.state.expire_tokens(user_id)

    def set_credits(self, user_id: str, n: int) -> None:
        self.state.set_credits(user_id, n)


async def _serve(host: str, port: int, silent_every: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    config = LocalNemoConfig.from_env()
    async with TestLocalNemo(config, host=host, port=port, silent_every=silent_every) as server:
        log.info("localnemo.testing.serving base_url=%s", server.base_url)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    """``python -m localnemo.testing [--host H] [--port N]``: localnemo with the test controls, until
    SIGINT or SIGTERM, for tests and benchmarks that run it as its own process."""
    parser = argparse.ArgumentParser(prog="python -m localnemo.testing", description=main.__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--silent-every", type=int, default=3, help="every Nth edit of a session ends with no text (0: never)"
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(_serve(args.host, args.port, args.silent_every))


if __name__ == "__main__":
    main()
