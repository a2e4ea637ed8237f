"""The records storage keeps: immutable values the repository reads and writes.

Timestamps are timezone-aware UTC ``datetime`` values everywhere; a naive one is refused rather than
guessed at, because a local-time value stored as UTC silently shifts every "older than" comparison.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, get_args

ExportStatus = Literal["submitted", "pending", "processing", "completed", "failed", "cancelled"]
EXPORT_STATUSES: Final[frozenset[str]] = frozenset(get_args(ExportStatus))
# An export in one of these states owes the chat nothing more than, at most, an error message.
ABANDONED_EXPORT_STATUSES: Final[frozenset[str]] = frozenset({"failed", "cancelled"})


def utc_now() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def _require_aware(name: str, value: datetime | None) -> None:
    if value is not None and value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got naive {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class IdentityRecord:
    """Who the bot is to NemoVideo for one chat (``tg:123``) or for every chat (``shared``).

    ``updated_at`` is stamped by the repository on every save; the value passed in is ignored.
    """

    key: str
    client_id: str
    # A bearer credential: kept out of repr so a logged record never leaks it.
    token: str | None = field(default=None, repr=False)
    expires_at: datetime | None = None
    user_id: str | None = None
    updated_at: datetime = field(default_factory=utc_now)

    def __post_init__(self) -> None:
        _require_aware("expires_at", self.expires_at)
        _require_aware("updated_at", self.updated_at)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatSessionRecord:
    """The NemoVideo session a chat is working in, and the last timeline the bot saw there.

    ``created_at`` is kept across saves while ``session_id`` stays the same; ``updated_at`` is stamped
    by the repository on every write.
    """

    chat_key: str
    identity_key: str
    session_id: str
    task_id: str | None = None
    language: str = "en"
    # hash=False: a dict is unhashable, and the record should stay usable as a dict key or set member.
    last_draft: dict[str, Any] | None = field(default=None, hash=False)
    created_at: datetime = field(default_factory=utc_now)
    updated_at: datetime = field(default_factory=utc_now)

    def __post_init__(self) -> None:
        _require_aware("created_at", self.created_at)
        _require_aware("updated_at", self.updated_at)


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportRecord:
    """A render the bot asked for and still has to, or already did, deliver to a chat.

    ``target`` is the adapter's own note of where to deliver (e.g. the message to reply to); storage
    only keeps it. ``updated_at`` is stamped by the repository on every write.
    """

    render_id: str
    chat_key: str
    session_id: str
    identity_key: str
    status: ExportStatus = "submitted"
    progress: float = 0.0
    url: str | None = None
    error: str | None = None
    delivered: bool = False
    target: dict[str, Any] | None = field(default=None, hash=False)
    language: str = "en"
    created_at: datetime = field(default_factory=utc_now)
    updated_at: datetime = field(default_factory=utc_now)
    # Who is delivering it right now, and since when (set by ``claim_delivery``, not by ``add_export``).
    delivery_owner: str | None = None
    delivery_claimed_at: datetime | None = None

    def __post_init__(self) -> None:
        check_export_status(self.status)
        check_progress(self.progress)
        _require_aware("created_at", self.created_at)
        _require_aware("updated_at", self.updated_at)
        _require_aware("delivery_claimed_at", self.delivery_claimed_at)

    @property
    def finished(self) -> bool:
        """True once the backend will not change this export any more."""
        return self.status in {"completed", "failed", "cancelled"}


def check_export_status(status: str) -> None:
    """Refuse a status outside :data:`ExportStatus` (the type checker cannot see runtime strings)."""
    if status not in EXPORT_STATUSES:
        raise ValueError(f"unknown export status {status!r}; expected one of {sorted(EXPORT_STATUSES)}")


def check_progress(progress: float) -> None:
    """Refuse a progress that is not a percentage; NaN would otherwise pass every comparison."""
    if not (math.isfinite(progress) and 0.0 <= progress <= 100.0):
        raise ValueError(f"export progress must be within 0-100, got {progress!r}")
