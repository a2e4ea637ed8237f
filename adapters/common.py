"""What the composition root hands every platform adapter, so that none reaches through the engine."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from bot.sessions import SessionPolicy


@dataclass(frozen=True)
class AdapterContext:
    http: httpx.AsyncClient  # the process's one HTTP client, for downloading users' files
    sessions: SessionPolicy  # which session a message belongs to (per user or shared in groups)
    max_upload_bytes: int  # the largest file the backend accepts: larger downloads stop early
    temp_dir: str | None = None  # where downloads are staged (None: the system's temp dir)
