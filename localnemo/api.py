"""The routes of accounts and conversations: anonymous tokens, sessions, credits, session state, claim
links, and ``/run_sse`` (one message: the agent's turn, streamed in the configured dialect)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from bot.lang import detect_language
from bot.nemo.timeline_model import TRACK_TEXT, Draft
from bot.texts import t
from localnemo import fonts, timeline
from localnemo.agent import Agent, AgentError, AgentEvent, AgentText
from localnemo.envelope import ApiError, json_object, ok
from localnemo.runtime import Runtime
from localnemo.sse import ClientGone, SseWriter, WireFormat, stream_turn
from localnemo.state import SessionRecord, UserRecord

log = logging.getLogger(__name__)

_CLAIM_TTL_SECONDS = 3600


class Api:
    """Handlers of the account and message routes over the runtime's store and one agent."""

    def __init__(self, runtime: Runtime, agent: Agent) -> None:
        self.runtime = runtime
        self.config = runtime.config
        self.state = runtime.state
        self.agent = agent

    async def token(self, request: web.Request) -> web.StreamResponse:
        client_id = request.headers.get("X-Client-Id", "").strip()
        if not client_id or len(client_id) > 64:
            raise ApiError(400, 400, "missing X-Client-Id")
        user = self.state.user_for_client(client_id)
        record = self.state.issue_token(user)
        # On disk before the client has it: a restarted server must still know it.
        await self.state.sync()
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
        user = self.runtime.user(request)
        body = await json_object(request, required=False)
        task_name = body.get("task_name") or "project"
        language = body.get("language") or "en"
        if not isinstance(task_name, str) or not isinstance(language, str):
            raise ApiError(400, 400, "task_name and language must be strings")
        session = self.state.new_session(user, task_name, language)
        await self.state.sync()
        return ok({"task_id": session.task_id, "session_id": session.session_id})

    async def credits(self, request: web.Request) -> web.StreamResponse:
        user = self.runtime.user(request)
        return ok({"available": user.credits, "frozen": 0, "total": user.credits})

    async def session_state(self, request: web.Request) -> web.StreamResponse:
        user = self.runtime.user(request)
        session = self.runtime.session(user, request.match_info["sid"])
        return ok(session.state_payload())

    async def claim(self, request: web.Request) -> web.StreamResponse:
        user = self.runtime.user(request)
        body = await json_object(request)
        session = self.runtime.session(user, body.get("session_id"))
        if body.get("task_id") not in (None, session.task_id):
            raise ApiError(404, 1002, "session not found")
        claim = self.state.new_claim(user, session, _CLAIM_TTL_SECONDS)
        return ok({"claim_token": claim.claim_token, "expires_in": _CLAIM_TTL_SECONDS})

    async def run_sse(self, request: web.Request) -> web.StreamResponse:
        user = self.runtime.user(request)
        body = await json_object(request)
        session_id, text = _parse_run_body(body)
        session = self.runtime.session(user, session_id)
        if user.credits < self.config.message_cost:
            raise ApiError(403, 2001, "insufficient credits")
        fault = self.runtime.stream_fault()

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
        writer = SseWriter(
            request,
            response,
            dialect=self.config.dialect,
            heartbeat_seconds=self.config.heartbeat_seconds,
            closing=self.runtime.closing,
        )
        try:
            await response.prepare(request)
            if fault is not None and fault.mode == "heartbeats_only":
                # The backend timed out: the message is never processed, the stream only ticks.
                await writer.idle(None, None, heartbeats=True)
                return response
            queue: asyncio.Queue[AgentEvent | None] = asyncio.Queue()
            turn = self.runtime.spawn(self._turn(user, session, text, queue), f"localnemo-turn-{session.session_id}")
            wire = WireFormat(self.config.dialect, partial_text=self.config.partial_text)
            await stream_turn(writer, queue, wire, event_delay_seconds=self.config.event_delay_seconds, fault=fault)
        except ClientGone:
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

    async def _turn(
        self, user: UserRecord, session: SessionRecord, text: str, queue: asyncio.Queue[AgentEvent | None]
    ) -> None:
        errored = False
        shown_before = _texts_on_screen(session.draft)
        # A credit pays for a change: a turn that leaves the draft as it was (not understood, "help", an
        # edit that was already so, an error) is free.
        before = timeline.effective(session.draft)
        try:
            async for event in self.agent.run(session, text):
                if isinstance(event, AgentError):
                    errored = True
                queue.put_nowait(event)
            new = _texts_on_screen(session.draft) - shown_before
            if any(fonts.needs_cjk_font(line) for line in new) and not await asyncio.to_thread(
                fonts.cjk_font_available, self.config.font_file
            ):
                # Drawn with a Latin font, these would be empty boxes: say what to install instead.
                log.warning("localnemo.font.no_cjk session_id=%s", session.session_id)
                queue.put_nowait(AgentText(t("cjk_font_missing", detect_language(None, text),
                                             packages=" / ".join(fonts.CJK_FONT_PACKAGES))))
        except Exception:
            log.exception("localnemo.agent.failed session_id=%s", session.session_id)
            errored = True
            queue.put_nowait(AgentError("the agent failed on this message"))
        changed = timeline.effective(session.draft) != before
        if changed and not errored:
            user.credits = max(0, user.credits - self.config.message_cost)
            self.state.user_changed(user)
        self.state.session_changed(session)
        log.info(
            "localnemo.run.done session_id=%s errored=%s changed=%s credits=%s",
            session.session_id, errored, changed, user.credits,
        )  # fmt: skip
        queue.put_nowait(None)


def _texts_on_screen(draft: Draft) -> set[str]:
    """The texts drawn on the picture: titles, text overlays and captions with their words in the draft."""
    return {segment.m.text for track in draft.t if track.tt == TRACK_TEXT for segment in track.sg
            if segment.m.text}


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
