"""Faults a test can inject into localnemo, and the log of every call it received.

The hosted backend fails in ways a client must survive: error envelopes, bare HTTP statuses, HTML
error pages from a proxy, streams that drop, stall or only send heartbeats. ``FaultPlan`` makes each
of them happen on demand, in-process or through the admin API (``/_localnemo/...``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger(__name__)

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

StreamMode = Literal["drop", "hang", "heartbeats_only", "slow"]
_STREAM_MODES: tuple[StreamMode, ...] = ("drop", "hang", "heartbeats_only", "slow")


@dataclass
class Call:
    """One request as received (endpoint is the route name, "" when no route matched)."""

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


@dataclass
class StreamFault:
    mode: StreamMode
    after_events: int
    delay: float
    remaining: int  # -1: until cleared


class FaultPlan:
    """Pending faults and the call log. Faults are used up in the order they were added."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
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
        if mode not in _STREAM_MODES:
            raise ValueError(f"mode must be one of {_STREAM_MODES}, not {mode!r}")
        if times == 0 or times < -1:
            raise ValueError("times must be positive, or -1 for until cleared")
        if after_events < 0 or delay < 0:
            raise ValueError("after_events and delay must not be negative")
        self._streams.append(StreamFault(mode, after_events, delay, times))

    def clear(self) -> None:
        """Forget every pending fault (the call log is kept)."""
        self._failures.clear()
        self._streams.clear()

    def count(self, endpoint: str) -> int:
        return sum(1 for call in self.calls if call.endpoint == endpoint)

    def record(self, call: Call) -> None:
        self.calls.append(call)

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
