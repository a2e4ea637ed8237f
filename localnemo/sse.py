"""The ``/run_sse`` event stream on the wire: the two documented dialects and the stream's behaviour.

``WireFormat`` renders the agent's neutral events as ADK events or the simple ``{"type": ...}`` form
(docs/nemo-api.md, "The event stream"); ``SseWriter`` writes them and the heartbeats and notices a client
that went away; ``stream_turn`` paces one turn's events onto the wire. A ``StreamFault`` makes a stream
misbehave as the hosted one can (drop, hang, slow); only the test controls of ``localnemo.testing`` hand
one out.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from localnemo.agent import AgentError, AgentEvent, AgentText, AgentToolCall, AgentToolResult
from localnemo.config import Dialect

log = logging.getLogger(__name__)

# How often a waiting stream checks whether its client went away: aiohttp does not cancel handlers
# when a client disconnects (handler_cancellation is off by default).
_POLL_SECONDS = 0.2

StreamMode = Literal["drop", "hang", "heartbeats_only", "slow"]
STREAM_MODES: tuple[StreamMode, ...] = ("drop", "hang", "heartbeats_only", "slow")


@dataclass
class StreamFault:
    mode: StreamMode
    after_events: int
    delay: float
    remaining: int  # -1: until cleared


class ClientGone(Exception):
    """The stream's client disconnected, or the server is shutting down."""


class WireFormat:
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


class SseWriter:
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
            raise ClientGone
        try:
            await self.response.write(data)
        except ConnectionError as exc:
            raise ClientGone from exc
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
                raise ClientGone
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


async def stream_turn(
    writer: SseWriter,
    queue: asyncio.Queue[AgentEvent | None],
    wire: WireFormat,
    *,
    event_delay_seconds: float,
    fault: StreamFault | None,
) -> None:
    """Send the turn's events as they come from ``queue`` (None ends the turn), ``event_delay_seconds``
    apart, heartbeats in the silences; a ``drop`` or ``hang`` fault breaks the stream after its events."""
    delay = fault.delay if fault is not None and fault.mode == "slow" else event_delay_seconds
    broken = fault if fault is not None and fault.mode in ("drop", "hang") else None
    sent = 0

    async def emit(payloads: list[dict[str, Any]]) -> None:
        nonlocal sent
        for payload in payloads:
            if broken is not None and sent >= broken.after_events:
                await _break(writer, broken)
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
        await _break(writer, broken)


async def _break(writer: SseWriter, fault: StreamFault) -> None:
    if fault.mode == "drop":
        log.info("localnemo.fault.drop")
        writer.abort()
        raise ClientGone
    log.info("localnemo.fault.hang")
    await writer.idle(None, None, heartbeats=False)
    raise ClientGone
