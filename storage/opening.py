"""Open the repository NEMOBOT_DB names: an SQLite file (the default, for one machine) or, given a
``postgresql://`` URL, a PostgreSQL database that several bot processes can share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from storage.protocol import Store
from storage.records import utc_now
from storage.repository import Clock, Repository


def is_postgres_url(target: str | Path) -> bool:
    """True when ``target`` names a PostgreSQL database rather than an SQLite file."""
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


async def connect_repository(target: str | Path, *, clock: Clock = utc_now) -> Store:
    """Connect to ``target`` (a file path or a ``postgresql://`` URL) and bring its schema up to date."""
    if is_postgres_url(target):
        # Imported here: psycopg is not loaded by a bot that keeps its data in SQLite.
        from storage.postgres import PostgresRepository

        return await PostgresRepository.connect(str(target), clock=clock)
    return await Repository.connect(target, clock=clock)


@asynccontextmanager
async def open_repository(target: str | Path, *, clock: Clock = utc_now) -> AsyncIterator[Store]:
    """``async with open_repository(settings.db) as repo:`` — connect, and close on the way out."""
    repo = await connect_repository(target, clock=clock)
    try:
        yield repo
    finally:
        await repo.close()
