"""Numbered schema migrations, one list for SQLite and PostgreSQL: how many of :data:`MIGRATIONS` ran is
recorded in the database (``PRAGMA user_version`` in SQLite, the ``nemobot_schema`` table in PostgreSQL).

Append a new :class:`Migration` to :data:`MIGRATIONS` to change the schema, with PostgreSQL's own SQL only
where the two must differ; never edit one that has shipped, since databases in the field already ran it.
Each script runs in its own transaction together with its version bump, so a failure leaves the database
at the previous version rather than half-migrated. PostgreSQL's runner lives in :mod:`storage.postgres`.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import aiosqlite

from storage.errors import SchemaVersionError

log = logging.getLogger(__name__)

# Deliberately no foreign keys between tables: rows are written by independent flows (an identity may be
# re-keyed, and an export is still owed to a chat after /new replaced or deleted its session).
# Timestamps are ISO 8601 UTC text with microseconds, one fixed width, so text order is time order.
_V1_INITIAL: Final = """
CREATE TABLE identities (
    key         TEXT PRIMARY KEY NOT NULL,
    client_id   TEXT NOT NULL,
    token       TEXT,
    expires_at  TEXT,
    updated_at  TEXT NOT NULL
);

CREATE TABLE chat_sessions (
    chat_key      TEXT PRIMARY KEY NOT NULL,
    identity_key  TEXT NOT NULL,
    session_id    TEXT NOT NULL,
    task_id       TEXT,
    language      TEXT NOT NULL,
    last_draft    TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);

CREATE TABLE exports (
    render_id     TEXT PRIMARY KEY NOT NULL,
    chat_key      TEXT NOT NULL,
    session_id    TEXT NOT NULL,
    identity_key  TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN
                      ('submitted', 'pending', 'processing', 'completed', 'failed', 'cancelled')),
    progress      REAL NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    url           TEXT,
    error         TEXT,
    delivered     INTEGER NOT NULL DEFAULT 0 CHECK (delivered IN (0, 1)),
    target        TEXT,
    language      TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);

-- What a restarted bot still owes: a small partial index, since delivered rows pile up over time.
CREATE INDEX exports_owed ON exports (created_at) WHERE delivered = 0;
CREATE INDEX exports_by_chat ON exports (chat_key, created_at);

CREATE TABLE processed_messages (
    chat_key      TEXT NOT NULL,
    message_id    TEXT NOT NULL,
    processed_at  TEXT NOT NULL,
    PRIMARY KEY (chat_key, message_id)
) WITHOUT ROWID;

CREATE INDEX processed_messages_by_age ON processed_messages (processed_at);
"""

# The backend's user id of an anonymous identity: its registration link binds to it (``?bind=<id>``).
_V2_IDENTITY_USER_ID: Final = """
ALTER TABLE identities ADD COLUMN user_id TEXT;
"""

# Delivery in two steps: a *claim* (who is delivering, since when) and, once the platform accepted the result,
# ``delivered = 1``. A claim without ``delivered`` is a delivery that may have been cut short: a restart
# releases it and delivers again. Rows delivered before this version keep ``delivered = 1``.
_V3_DELIVERY_CLAIMS: Final = """
ALTER TABLE exports ADD COLUMN delivery_owner TEXT;
ALTER TABLE exports ADD COLUMN delivery_claimed_at TEXT;
"""

# Telegram updates accepted by one of several webhook receivers sharing the database: an update Telegram (or a
# load balancer retrying on another receiver) delivers again is dropped before it is handled. Kept by age;
# Telegram keeps an undelivered update for at most 24 hours.
_V4_ACCEPTED_UPDATES: Final = """
CREATE TABLE accepted_updates (
    bot_id       TEXT NOT NULL,
    update_id    INTEGER NOT NULL,
    accepted_at  TEXT NOT NULL,
    PRIMARY KEY (bot_id, update_id)
) WITHOUT ROWID;

CREATE INDEX accepted_updates_by_age ON accepted_updates (accepted_at);
"""

# PostgreSQL's version of the same schema, in its native types: timestamps are timestamptz, flags boolean,
# JSON json (not jsonb, which refuses some strings json.dumps writes, such as "\u0000"). ``seq`` stands for
# SQLite's rowid: the order rows were added in, which breaks ties between equal ``created_at``.
_V1_INITIAL_POSTGRES: Final = """
CREATE TABLE identities (
    key         TEXT PRIMARY KEY NOT NULL,
    client_id   TEXT NOT NULL,
    token       TEXT,
    expires_at  TIMESTAMPTZ,
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE chat_sessions (
    chat_key      TEXT PRIMARY KEY NOT NULL,
    identity_key  TEXT NOT NULL,
    session_id    TEXT NOT NULL,
    task_id       TEXT,
    language      TEXT NOT NULL,
    last_draft    JSON,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL
);

CREATE TABLE exports (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY,
    render_id     TEXT PRIMARY KEY NOT NULL,
    chat_key      TEXT NOT NULL,
    session_id    TEXT NOT NULL,
    identity_key  TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN
                      ('submitted', 'pending', 'processing', 'completed', 'failed', 'cancelled')),
    progress      DOUBLE PRECISION NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    url           TEXT,
    error         TEXT,
    delivered     BOOLEAN NOT NULL DEFAULT FALSE,
    target        JSON,
    language      TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL
);

CREATE INDEX exports_owed ON exports (created_at) WHERE NOT delivered;
CREATE INDEX exports_by_chat ON exports (chat_key, created_at);

CREATE TABLE processed_messages (
    chat_key      TEXT NOT NULL,
    message_id    TEXT NOT NULL,
    processed_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (chat_key, message_id)
);

CREATE INDEX processed_messages_by_age ON processed_messages (processed_at);
"""

_V3_DELIVERY_CLAIMS_POSTGRES: Final = """
ALTER TABLE exports ADD COLUMN delivery_owner TEXT;
ALTER TABLE exports ADD COLUMN delivery_claimed_at TIMESTAMPTZ;
"""

_V4_ACCEPTED_UPDATES_POSTGRES: Final = """
CREATE TABLE accepted_updates (
    bot_id       TEXT NOT NULL,
    update_id    BIGINT NOT NULL,
    accepted_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (bot_id, update_id)
);

CREATE INDEX accepted_updates_by_age ON accepted_updates (accepted_at);
"""


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered schema change: its SQLite script, and PostgreSQL's where that must differ."""

    sqlite: str
    postgres_only: str | None = None

    @property
    def postgres(self) -> str:
        """The script PostgreSQL runs."""
        return self.postgres_only if self.postgres_only is not None else self.sqlite


MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(_V1_INITIAL, _V1_INITIAL_POSTGRES),
    Migration(_V2_IDENTITY_USER_ID),
    Migration(_V3_DELIVERY_CLAIMS, _V3_DELIVERY_CLAIMS_POSTGRES),
    Migration(_V4_ACCEPTED_UPDATES, _V4_ACCEPTED_UPDATES_POSTGRES),
)


def sqlite_script(migration: Migration | str) -> str:
    """The SQLite script of a migration (a plain string is one already)."""
    return migration.sqlite if isinstance(migration, Migration) else migration


def postgres_script(migration: Migration | str) -> str:
    """The PostgreSQL script of a migration (a plain string is one already)."""
    return migration.postgres if isinstance(migration, Migration) else migration


def split_statements(script: str) -> list[str]:
    """Split an SQL script into statements, leaving ``;`` inside strings and trigger bodies alone.

    ``executescript`` would be simpler, but it commits any open transaction first, which would break
    the one-transaction-per-migration rule.
    """
    statements: list[str] = []
    pending = ""
    for chunk in script.split(";"):
        pending += chunk + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\r\n;"):
                statements.append(pending.strip())
            pending = ""
    if pending.strip(" \t\r\n;"):
        raise ValueError(f"incomplete SQL statement at the end of a migration: {pending.strip()[:80]!r}")
    return statements


async def schema_version(conn: aiosqlite.Connection) -> int:
    """How many migrations this database has run."""
    async with conn.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row is not None else 0


async def migrate(
    conn: aiosqlite.Connection, migrations: Sequence[Migration | str] = MIGRATIONS, *, name: str = "database"
) -> int:
    """Run the migrations this database has not run yet; return how many ran.

    ``conn`` must be in autocommit mode (``isolation_level=None``) so that the explicit transactions
    here are the only ones. ``name`` only labels errors and log lines.
    Raises :class:`SchemaVersionError` if the database is newer than ``migrations``.
    """
    if conn.isolation_level is not None:
        raise ValueError("migrate() needs a connection opened with isolation_level=None")
    known = len(migrations)
    current = await schema_version(conn)
    if current > known:
        raise SchemaVersionError(name, current, known)
    start, ran = current, 0
    while current < known:
        # IMMEDIATE takes the write lock now, so another process migrating the same file waits for us
        # (busy_timeout) instead of both reading the same version and running the same script twice.
        await conn.execute("BEGIN IMMEDIATE")
        try:
            current = await schema_version(conn)
            if current > known:
                raise SchemaVersionError(name, current, known)
            if current < known:
                for statement in split_statements(sqlite_script(migrations[current])):
                    await conn.execute(statement)
                current += 1
                ran += 1
                # PRAGMA takes no bound parameters; ``current`` is an int we computed.
                await conn.execute(f"PRAGMA user_version = {current:d}")
            await conn.execute("COMMIT")
        except BaseException:
            await conn.rollback()
            raise
    if ran:
        log.info("storage.migrated db=%s from=%d to=%d ran=%d", name, start, current, ran)
    return ran
