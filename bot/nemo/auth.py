"""Identities: who the bot is to NemoVideo, and the small interface through which callers persist them.

Each identity has a stable ``X-Client-Id``; its anonymous token is renewed with that same id, so the
backend sees the same user (and its sessions) after a renewal.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class IdentityRecord:
    client_id: str
    token: str | None = None
    expires_at: datetime | None = None
    user_id: str | None = None

    def __repr__(self) -> str:  # never let a token reach a log line through a repr
        return f"IdentityRecord(client_id={self.client_id!r}, token={'***' if self.token else None})"


class IdentityStore(Protocol):
    """Where identities live between runs (the bot's database; a dict in tests and one-shot runs)."""

    async def load_identity(self, key: str) -> IdentityRecord | None: ...

    async def save_identity(self, key: str, record: IdentityRecord) -> None: ...


class MemoryIdentityStore:
    def __init__(self) -> None:
        self.records: dict[str, IdentityRecord] = {}

    async def load_identity(self, key: str) -> IdentityRecord | None:
        return self.records.get(key)

    async def save_identity(self, key: str, record: IdentityRecord) -> None:
        self.records[key] = record
