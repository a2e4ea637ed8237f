"""The in-memory store of localnemo: users, tokens, sessions, export jobs and run bookkeeping.

Nothing here survives a restart, like a fresh hosted account; uploaded and rendered files live under
the configured data directory so that they can be streamed back.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bot.nemo.timeline_model import Draft

log = logging.getLogger(__name__)

JobStatus = Literal["pending", "processing", "completed", "failed"]


@dataclass
class UserRecord:
    user_id: str
    client_id: str
    credits: int


@dataclass
class TokenRecord:
    token: str
    user_id: str
    expires_at: float  # epoch seconds


@dataclass
class SessionRecord:
    """One NemoVideo session (a chat's project): its timeline and what was uploaded into it."""

    session_id: str
    task_id: str
    task_name: str
    language: str
    user_id: str
    folder: Path
    draft: Draft = field(default_factory=Draft.empty)
    video_infos: list[dict[str, Any]] = field(default_factory=list)
    generated_media: list[dict[str, Any]] = field(default_factory=list)
    canvas_config: dict[str, Any] = field(default_factory=dict)
    video_analyses: dict[str, Any] = field(default_factory=dict)
    message_count: int = 0
    edit_count: int = 0
    # When the session was last used (monotonic seconds): the least recently used idle sessions are the
    # first removed when the data folder is over its size limit.
    last_active: float = field(default_factory=time.monotonic)

    def touch(self) -> None:
        self.last_active = time.monotonic()

    def state_payload(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "task_id": self.task_id,
            "task_name": self.task_name,
            "state": {
                "draft": self.draft.to_wire(),
                "video_infos": self.video_infos,
                "generated_media": self.generated_media,
                "canvas_config": self.canvas_config,
                "video_analyses": self.video_analyses,
            },
        }


@dataclass
class RenderJob:
    job_id: str
    user_id: str
    session_id: str
    created_at_ms: int
    status: JobStatus = "pending"
    progress: int = 0
    output_path: Path | None = None
    output_url: str | None = None
    duration: float | None = None
    size: int | None = None
    error: str | None = None
    completed_at_ms: int | None = None
    task: asyncio.Task[None] | None = None

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "failed")


@dataclass
class ClaimRecord:
    claim_token: str
    user_id: str
    session_id: str
    expires_at: float


class LocalNemoState:
    """Every record the server keeps, with the few operations that keep them consistent."""

    def __init__(self, data_dir: Path, *, initial_credits: int, token_ttl_seconds: float) -> None:
        self.data_dir = data_dir
        self.initial_credits = initial_credits
        self.token_ttl_seconds = token_ttl_seconds
        self.users: dict[str, UserRecord] = {}
        self.users_by_client: dict[str, str] = {}
        self.tokens: dict[str, TokenRecord] = {}
        self.sessions: dict[str, SessionRecord] = {}
        self.jobs: dict[str, RenderJob] = {}
        self.claims: dict[str, ClaimRecord] = {}
        # Runs of /run_sse in progress per session, and the most ever seen at once: a well-behaved
        # client never sends a second message while one is being processed.
        self.active_runs: dict[str, int] = {}
        self.max_concurrent_runs: dict[str, int] = {}

    # users and tokens

    def user_for_client(self, client_id: str) -> UserRecord:
        user_id = self.users_by_client.get(client_id)
        if user_id is not None:
            return self.users[user_id]
        # Derived from the client id so that the same identity keeps its user id across restarts.
        user_id = "u_" + hashlib.sha256(client_id.encode()).hexdigest()[:16]
        user = UserRecord(user_id=user_id, client_id=client_id, credits=self.initial_credits)
        self.users[user_id] = user
        self.users_by_client[client_id] = user_id
        log.info("localnemo.user.created user_id=%s", user_id)
        return user

    def issue_token(self, user: UserRecord) -> TokenRecord:
        record = TokenRecord(
            token="nmv_usr_" + secrets.token_urlsafe(24),
            user_id=user.user_id,
            expires_at=time.time() + self.token_ttl_seconds,
        )
        self.tokens[record.token] = record
        return record

    def user_for_token(self, token: str) -> UserRecord | None:
        record = self.tokens.get(token)
        if record is None or record.expires_at <= time.time():
            return None
        return self.users.get(record.user_id)

    def expire_tokens(self, user_id: str | None = None) -> int:
        """Make every token (or every token of one user) expired; return how many were live."""
        now = time.time()
        count = 0
        for record in self.tokens.values():
            if user_id is not None and record.user_id != user_id:
                continue
            if record.expires_at > now:
                count += 1
            record.expires_at = now - 1
        return count

    def set_credits(self, user_id: str, credits: int) -> None:
        user = self.users.get(user_id)
        if user is None:
            raise KeyError(f"unknown user {user_id!r}")
        user.credits = credits

    # sessions

    def new_session(self, user: UserRecord, task_name: str, language: str) -> SessionRecord:
        while True:
            # A 19-digit decimal string, like the hosted backend's snowflake-style ids.
            session_id = str(10**18 + secrets.randbelow(9 * 10**18))
            if session_id not in self.sessions:
                break
        session = SessionRecord(
            session_id=session_id,
            task_id="task_" + secrets.token_hex(4),
            task_name=task_name,
            language=language,
            user_id=user.user_id,
            folder=self.data_dir / "sessions" / session_id,
        )
        self.sessions[session_id] = session
        log.info("localnemo.session.created user_id=%s session_id=%s", user.user_id, session_id)
        return session

    def owned_session(self, user: UserRecord, session_id: str) -> SessionRecord | None:
        session = self.sessions.get(session_id)
        if session is None or session.user_id != user.user_id:
            return None
        return session

    def new_claim(self, user: UserRecord, session: SessionRecord, ttl_seconds: float) -> ClaimRecord:
        claim = ClaimRecord(
            claim_token="ct_" + secrets.token_urlsafe(18),
            user_id=user.user_id,
            session_id=session.session_id,
            expires_at=time.time() + ttl_seconds,
        )
        self.claims[claim.claim_token] = claim
        return claim

    # runs

    def run_started(self, session_id: str) -> None:
        active = self.active_runs.get(session_id, 0) + 1
        self.active_runs[session_id] = active
        self.max_concurrent_runs[session_id] = max(self.max_concurrent_runs.get(session_id, 0), active)

    def run_finished(self, session_id: str) -> None:
        self.active_runs[session_id] = max(0, self.active_runs.get(session_id, 0) - 1)
