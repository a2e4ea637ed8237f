"""The ``/run_sse`` event stream, decoded from either documented dialect into one typed stream.

ADK events (``{"content": {"parts": [...]}, "partial": ..., ...}``) and the simple form
(``{"type": "text", ...}``) both become :data:`StreamEvent` values. Partial text chunks are held back and
surface once, as the whole text; comment lines and empty ``data:`` lines are heartbeats; anything
unknown is logged and skipped, never fatal.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextEvent:
    """Text meant for the user."""

    text: str


@dataclass(frozen=True)
class ToolCallEvent:
    """The agent started a tool (internal: drives a progress label, never shown raw)."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)
    call_id: str | None = None


@dataclass(frozen=True)
class ToolResultEvent:
    name: str
    result: Any = None
    call_id: str | None = None


@dataclass(frozen=True)
class HeartbeatEvent:
    """The backend is alive but has nothing to say."""


@dataclass(frozen=True)
class ErrorEvent:
    """The backend reported an error inside the stream."""

    message: str


StreamEvent = TextEvent | ToolCallEvent | ToolResultEvent | HeartbeatEvent | ErrorEvent

HEARTBEAT = HeartbeatEvent()
_NEWLINE = re.compile(r"\r\n|\r|\n")


class EventDecoder:
    """Stateful decoder for one stream: it remembers partial text until the whole text arrives."""

    def __init__(self) -> None:
        self._partial: list[str] = []

    def decode(self, data: str) -> list[StreamEvent]:
        """Events carried by one SSE ``data`` payload (several ``data:`` lines already joined)."""
        if not data.strip():
            return [HEARTBEAT]
        try:
            payload = json.loads(data)
        except ValueError:
            log.warning("nemo.stream.skip reason=not-json length=%d", len(data))
            return []
        if not isinstance(payload, dict):
            log.warning("nemo.stream.skip reason=not-an-object")
            return []
        if ("type" in payload and "content" not in payload) or payload.get("type") in (
            "text", "tool_call", "tool_result", "heartbeat", "error",
        ):
            return self._simple(payload)
        return self._adk(payload)

    def finish(self) -> list[StreamEvent]:
        """At the end of the stream: partial text whose whole never came is still the user's."""
        if not self._partial:
            return []
        text = "".join(self._partial)
        self._partial.clear()
        return [TextEvent(text)] if text.strip() else []

    def _simple(self, payload: dict[str, Any]) -> list[StreamEvent]:
        kind = payload.get("type")
        if kind == "heartbeat":
            return [HEARTBEAT]
        if kind == "text":
            content = payload.get("content")
            if payload.get("partial") is True and isinstance(content, str):
                self._partial.append(content)
                return []
            if isinstance(content, str) and content:
                self._partial.clear()
                return [TextEvent(content)]
            return []
        if kind == "tool_call":
            args = payload.get("args")
            return [ToolCallEvent(str(payload.get("name", "")), args if isinstance(args, dict) else {})]
        if kind == "tool_result":
            return [ToolResultEvent(str(payload.get("name", "")), payload.get("result"))]
        if kind == "error":
            return [ErrorEvent(_error_text(payload.get("message") or payload.get("content") or payload))]
        log.info("nemo.stream.skip reason=unknown-type type=%s", str(kind)[:40])
        return []

    def _adk(self, payload: dict[str, Any]) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        if payload.get("error") is not None:
            events.append(ErrorEvent(_error_text(payload["error"])))
        if payload.get("errorMessage") or payload.get("error_message"):
            events.append(ErrorEvent(_error_text(payload.get("errorMessage") or payload.get("error_message"))))
        content = payload.get("content")
        if not isinstance(content, dict):
            if not events and "content" not in payload:
                log.info("nemo.stream.skip reason=unknown-event keys=%s", ",".join(sorted(payload)[:8]))
            return events
        parts = content.get("parts")
        partial = payload.get("partial") is True
        system = payload.get("author") == "system"
        texts: list[str] = []
        for part in parts if isinstance(parts, list) else []:
            if not isinstance(part, dict):
                continue
            if isinstance(part.get("text"), str):
                if part.get("thought") is True:
                    continue  # the model's private reasoning, not a reply
                texts.append(part["text"])
            elif isinstance(part.get("functionCall"), dict):
                call = part["functionCall"]
                args = call.get("args")
                events.append(
                    ToolCallEvent(str(call.get("name", "")), args if isinstance(args, dict) else {}, call.get("id"))
                )
            elif isinstance(part.get("functionResponse"), dict):
                resp = part["functionResponse"]
                events.append(ToolResultEvent(str(resp.get("name", "")), resp.get("response"), resp.get("id")))
        text = "".join(texts)
        if partial:
            if text:
                self._partial.append(text)
            return events
        if text:
            # The whole text after its partial chunks: show it once, as the whole.
            self._partial.clear()
            if system and text.lstrip().lower().startswith("error"):
                events.append(ErrorEvent(text.split(":", 1)[1].strip() if ":" in text else text))
            else:
                events.append(TextEvent(text))
        return events


def _error_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for key in ("message", "error", "detail"):
            if isinstance(value.get(key), str):
                return str(value[key])
    return "the backend reported an error"


class SSELineParser:
    """Splits the response text into SSE lines (``\\r\\n``, ``\\r`` or ``\\n`` only, as the spec says) and
    groups them into events. Comment lines become heartbeats here, because httpx-sse's own iterator
    follows the spec and drops them, and a backend that only sends ``: ping`` is still alive."""

    def __init__(self) -> None:
        self._buffer = ""
        self._data: list[str] | None = None

    def feed(self, text: str) -> list[str | None]:
        """Complete items: a data payload (``str``) or ``None`` for a comment line (a heartbeat)."""
        self._buffer += text
        out: list[str | None] = []
        while True:
            match = _NEWLINE.search(self._buffer)
            if match is None:
                break
            if match.group() == "\r" and match.end() == len(self._buffer):
                break  # a lone CR at the end may be the first half of CRLF
            line = self._buffer[: match.start()]
            self._buffer = self._buffer[match.end() :]
            out.extend(self._line(line))
        return out

    def close(self) -> list[str | None]:
        out: list[str | None] = []
        if self._buffer:
            out.extend(self._line(self._buffer))
            self._buffer = ""
        out.extend(self._line(""))
        return out

    def _line(self, line: str) -> list[str | None]:
        if line == "":
            if self._data is None:
                return []
            data, self._data = "\n".join(self._data), None
            return [data]
        if line.startswith(":"):
            return [None]
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            if self._data is None:
                self._data = []
            self._data.append(value)
        # "event", "id" and "retry" carry nothing this protocol uses.
        return []
