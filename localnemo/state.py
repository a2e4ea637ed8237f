"""The store of localnemo: users, tokens, sessions, export jobs and run bookkeeping.

It lives in memory (the fast path); each change that matters is also marked in a ``StateStore``
(``localnemo.persist``, a file in the data folder), from which a restarted server loads it: tokens stay
valid until they expire, sessions keep their drafts, export jobs their state (unfinished ones are rendered
again). A bearer token is kept on disk only as its SHA-256. Uploaded and rendered files live under the data
folder so that they can be streamed back.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bot.nemo.timeline_model import Draft
from localnemo.persist import StateStore

log = logging.getLogger(__name__)

JobStatus = Literal["pending", "processing", "completed", "failed"]

# Tokens one user keeps: each anonymous-token call issues a new one, so older ones past this are dropped.
MAX_TOKENS_PER_USER = 10


@dataclass
class UserRecord:
    user_id: str
    client_id: str
    credits: int


@dataclass
class TokenRecord:
    token: str  # "" once loaded from disk, where only its hash is kept
    user_id: str
    expires_at: float  # epoch seconds


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


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
    # The draft history (``localnemo.history``): states before each change, states undone, and the state
    # the last turn left (a different draft at the next turn was changed in between, by an upload).
    history: list[dict[str, Any]] = field(default_factory=list)
    undone: list[dict[str, Any]] = field(default_factory=list)
    draft_seen: dict[str, Any] | None = None
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
    """An export job. ``job_id`` is the client's id, unique per user only; ``token`` is the random name of
    its result (``/render-result/<token>.mp4``), never chosen by a client."""

    job_id: str
    user_id: str
    session_id: str
    created_at_ms: int
    token: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    status: JobStatus = "pending"
    progress: int = 0
    output_path: Path | None = None
    duration: float | None = None
    size: int | None = None
    error: str | None = None
    completed_at_ms: int | None = None
    # What it renders, kept until it is finished: a restarted server renders it again from this.
    draft: Draft | None = None
    task: asyncio.Task[None] | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.user_id, self.job_id)

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

    def __init__(
        self,
        data_dir: Path,
        *,
        initial_credits: int,
        token_ttl_seconds: float,
        store: StateStore | None = None,
        renders_dir: Path | None = None,
    ) -> None:
        self.data_dir = data_dir
        # Where results are (the shared folder's, when render workers write them).
        self.renders_dir = renders_dir if renders_dir is not None else data_dir / "renders"
        self.initial_credits = initial_credits
        self.token_ttl_seconds = token_ttl_seconds
        self.store = store
        self.users: dict[str, UserRecord] = {}
        self.users_by_client: dict[str, str] = {}
        # By the SHA-256 of the token (what the store keeps).
        self.tokens: dict[str, TokenRecord] = {}
        self.sessions: dict[str, SessionRecord] = {}
        # By (user id, the client's render id): two users may use the same id; by the random result token.
        self.jobs: dict[tuple[str, str], RenderJob] = {}
        self.jobs_by_token: dict[str, RenderJob] = {}
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
        self.user_changed(user)
        log.info("localnemo.user.created user_id=%s", user_id)
        return user

    def issue_token(self, user: UserRecord) -> TokenRecord:
        record = TokenRecord(
            token="nmv_usr_" + secrets.token_urlsafe(24),
            user_id=user.user_id,
            expires_at=time.time() + self.token_ttl_seconds,
        )
        key = token_hash(record.token)
        self.tokens[key] = record
        self._token_changed(key, record)
        own = sorted(
            ((other.expires_at, name) for name, other in self.tokens.items() if other.user_id == user.user_id),
            reverse=True,
        )
        for _, old_key in own[MAX_TOKENS_PER_USER:]:
            self._drop_token(old_key)
        return record

    def _drop_token(self, key: str) -> None:
        self.tokens.pop(key, None)
        if self.store is not None:
            self.store.forget("token", key)

    def prune_tokens(self) -> int:
        """Forget every expired token; return how many."""
        now = time.time()
        expired = [key for key, record in self.tokens.items() if record.expires_at <= now]
        for key in expired:
            self._drop_token(key)
        return len(expired)

    def user_for_token(self, token: str) -> UserRecord | None:
        if not token:
            return None
        record = self.tokens.get(token_hash(token))
        if record is None or record.expires_at <= time.time():
            return None
        return self.users.get(record.user_id)

    def expire_tokens(self, user_id: str | None = None) -> int:
        """Make every token (or every token of one user) expired; return how many were live."""
        now = time.time()
        count = 0
        for key, record in self.tokens.items():
            if user_id is not None and record.user_id != user_id:
                continue
            if record.expires_at > now:
                count += 1
            record.expires_at = now - 1
            self._token_changed(key, record)
        return count

    def set_credits(self, user_id: str, credits: int) -> None:
        user = self.users.get(user_id)
        if user is None:
            raise KeyError(f"unknown user {user_id!r}")
        user.credits = credits
        self.user_changed(user)

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
        self.session_changed(session)
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
        self._mark("claim", claim.claim_token, lambda: {
            "user_id": claim.user_id, "session_id": claim.session_id, "expires_at": claim.expires_at,
        })  # fmt: skip
        return claim

    # jobs

    def add_job(self, job: RenderJob) -> None:
        self.jobs[job.key] = job
        self.jobs_by_token[job.token] = job
        self.job_changed(job)

    def remove_job(self, job: RenderJob) -> None:
        """Forget a job (its result file is the caller's to remove)."""
        self.jobs.pop(job.key, None)
        self.jobs_by_token.pop(job.token, None)
        if self.store is not None:
            self.store.forget("job", job.token)

    def owned_job(self, user: UserRecord, job_id: str) -> RenderJob | None:
        return self.jobs.get((user.user_id, job_id))

    # runs

    def run_started(self, session_id: str) -> None:
        active = self.active_runs.get(session_id, 0) + 1
        self.active_runs[session_id] = active
        self.max_concurrent_runs[session_id] = max(self.max_concurrent_runs.get(session_id, 0), active)

    def run_finished(self, session_id: str) -> None:
        self.active_runs[session_id] = max(0, self.active_runs.get(session_id, 0) - 1)

    # on disk

    def _mark(self, kind: str, key: str, snapshot: Callable[[], dict[str, Any]]) -> None:
        if self.store is not None:
            self.store.mark(kind, key, snapshot)

    def _token_changed(self, key: str, record: TokenRecord) -> None:
        self._mark("token", key, lambda: {"user_id": record.user_id, "expires_at": record.expires_at})

    def user_changed(self, user: UserRecord) -> None:
        self._mark("user", user.user_id, lambda: {"client_id": user.client_id, "credits": user.credits})

    def session_changed(self, session: SessionRecord) -> None:
        """After a turn, an upload, a new session: the session's draft and media, as they are when written."""
        if session.session_id in self.sessions:
            self._mark("session", session.session_id, lambda: _session_body(session))

    def session_removed(self, session_id: str) -> None:
        if self.store is not None:
            self.store.forget("session", session_id)

    def job_changed(self, job: RenderJob) -> None:
        """A job's status changed (progress alone is not worth a write: a re-run starts it again). A job
        already forgotten (an export undone because it could not be saved, a pruned one) is not written
        back: its render stopping late must not bring it back, beside the export that replaced it."""
        if job.finished:
            job.draft = None
        if self.jobs_by_token.get(job.token) is job:
            self._mark("job", job.token, lambda: _job_body(job))

    async def sync(self) -> None:
        """Wait until every change so far is on disk."""
        if self.store is not None:
            await self.store.sync()

    def load(self) -> None:
        """Fill the empty store from its file (blocking: at start only)."""
        if self.store is None:
            return
        records = self.store.load()
        now = time.time()
        for user_id, body in records.get("user", {}).items():
            user = UserRecord(user_id=user_id, client_id=str(body["client_id"]), credits=int(body["credits"]))
            self.users[user_id] = user
            self.users_by_client[user.client_id] = user_id
        for key, body in records.get("token", {}).items():
            if float(body["expires_at"]) <= now or body["user_id"] not in self.users:
                self.store.forget("token", key)
                continue
            self.tokens[key] = TokenRecord(token="", user_id=str(body["user_id"]), expires_at=float(body["expires_at"]))
        for session_id, body in records.get("session", {}).items():
            idle = max(0.0, now - float(body.get("last_active_at", now)))
            self.sessions[session_id] = SessionRecord(
                session_id=session_id,
                task_id=str(body["task_id"]),
                task_name=str(body["task_name"]),
                language=str(body["language"]),
                user_id=str(body["user_id"]),
                folder=self.data_dir / "sessions" / session_id,
                draft=Draft.model_validate(body["draft"]),
                video_infos=list(body.get("video_infos", [])),
                generated_media=list(body.get("generated_media", [])),
                canvas_config=dict(body.get("canvas_config", {})),
                video_analyses=dict(body.get("video_analyses", {})),
                message_count=int(body.get("message_count", 0)),
                edit_count=int(body.get("edit_count", 0)),
                history=list(body.get("history", [])),
                undone=list(body.get("undone", [])),
                draft_seen=body.get("draft_seen"),
                last_active=time.monotonic() - idle,
            )
        for claim_token, body in records.get("claim", {}).items():
            if float(body["expires_at"]) <= now:
                self.store.forget("claim", claim_token)
                continue
            self.claims[claim_token] = ClaimRecord(
                claim_token=claim_token, user_id=str(body["user_id"]), session_id=str(body["session_id"]),
                expires_at=float(body["expires_at"]),
            )  # fmt: skip
        for token, body in records.get("job", {}).items():
            output = body.get("output")
            draft = body.get("draft")
            job = RenderJob(
                job_id=str(body["job_id"]),
                user_id=str(body["user_id"]),
                session_id=str(body["session_id"]),
                created_at_ms=int(body["created_at_ms"]),
                token=token,
                status=body["status"],
                progress=int(body.get("progress", 0)),
                output_path=self.renders_dir / output if isinstance(output, str) else None,
                duration=body.get("duration"),
                size=body.get("size"),
                error=body.get("error"),
                completed_at_ms=body.get("completed_at_ms"),
                draft=Draft.model_validate(draft) if isinstance(draft, dict) else None,
            )
            self.jobs[job.key] = job
            self.jobs_by_token[token] = job
        log.info(
            "localnemo.state.loaded users=%s tokens=%s sessions=%s jobs=%s",
            len(self.users), len(self.tokens), len(self.sessions), len(self.jobs),
        )  # fmt: skip


def _session_body(session: SessionRecord) -> dict[str, Any]:
    return {
        "task_id": session.task_id,
        "task_name": session.task_name,
        "language": session.language,
        "user_id": session.user_id,
        "draft": session.draft.to_wire(),
        "video_infos": session.video_infos,
        "generated_media": session.generated_media,
        "canvas_config": session.canvas_config,
        "video_analyses": session.video_analyses,
        "message_count": session.message_count,
        "edit_count": session.edit_count,
        "history": session.history,
        "undone": session.undone,
        "draft_seen": session.draft_seen,
        "last_active_at": time.time() - (time.monotonic() - session.last_active),
    }


def _job_body(job: RenderJob) -> dict[str, Any]:
    return {
        "job_id": job.job_id,
        "user_id": job.user_id,
        "session_id": job.session_id,
        "created_at_ms": job.created_at_ms,
        "status": job.status,
        "progress": job.progress,
        "output": job.output_path.name if job.output_path is not None else None,
        "duration": job.duration,
        "size": job.size,
        "error": job.error,
        "completed_at_ms": job.completed_at_ms,
        "draft": job.draft.to_wire() if job.draft is not None else None,
    }
