"""The bot's repository in PostgreSQL (psycopg 3, async), for several bot processes sharing one database.

The same operations and promises as the SQLite :class:`storage.Repository`, over a small pool of
autocommit connections: every write is committed when its statement finishes. What must be atomic is one
statement, as in SQLite: a claim is ``UPDATE … WHERE delivered = false AND (delivery_owner IS NULL …)``,
and under PostgreSQL's READ COMMITTED a second UPDATE of the same row waits for the first to commit and
then checks its WHERE again against the new row, so exactly one of any number of racing claims wins,
whichever process makes it. Migrations run in one transaction each, under an advisory lock, so two
processes starting at once never run the same script twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Final

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from storage.errors import DuplicateExportError, RepositoryClosedError, SchemaVersionError, StorageError
from storage.migrations import MIGRATIONS, Migration, postgres_script
from storage.records import (
    ABANDONED_EXPORT_STATUSES,
    ChatSessionRecord,
    ExportRecord,
    ExportStatus,
    IdentityRecord,
    check_export_status,
    check_progress,
    utc_now,
)
from storage.repository import _UNSET, Clock, _dump_json, _Unset

log = logging.getLogger(__name__)

# Connections kept by one process. The bot's own concurrency is bounded elsewhere (NEMOBOT_MAX_IN_FLIGHT);
# a statement here is short, so a few connections serve many tasks, and several processes stay well
# under the server's max_connections (100 by default).
POOL_MAX_SIZE: Final = 8
# How long an operation waits for a free connection, and opening waits for the server, before failing.
POOL_TIMEOUT_SECONDS: Final = 30.0
# Any fixed number: the key of the advisory lock that lets one process at a time migrate a database.
_MIGRATION_LOCK: Final = 0x6E656D6F  # "nemo"
_SCHEMA_TABLE: Final = "nemobot_schema"


def describe_url(url: str) -> str:
    """The URL without its password (or any other secret), for logs and error messages."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://(unparsable URL)"
    user = f"{parts['user']}@" if parts.get("user") else ""
    host = str(parts.get("host") or "")
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{host}{port}/{parts.get('dbname') or ''}"


class PostgresRepository:
    """Typed reads and writes of what must survive a restart, in PostgreSQL.

    Create it with ``async with PostgresRepository.open(url) as repo:`` (or ``await …connect(url)`` and
    ``await repo.close()``). Safe to share between any number of tasks of one event loop.
    """

    def __init__(
        self, pool: AsyncConnectionPool[psycopg.AsyncConnection[DictRow]], *, name: str, clock: Clock = utc_now
    ) -> None:
        """Wrap an open pool over a migrated database; prefer :meth:`open`."""
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[DictRow]] | None = pool
        self._name = name
        self._clock = clock

    # -- lifecycle -------------------------------------------------------------------------------

    @classmethod
    async def connect(cls, url: str, *, clock: Clock = utc_now) -> PostgresRepository:
        """Connect to the database at ``url`` and bring its schema up to date.

        Raises :class:`storage.SchemaVersionError` if a newer nemobot migrated it, and psycopg's
        ``OperationalError`` if the server cannot be reached.
        """
        name = describe_url(url)
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await migrate_postgres(conn, MIGRATIONS, name=name)
        pool: AsyncConnectionPool[psycopg.AsyncConnection[DictRow]] = AsyncConnectionPool(
            url,
            connection_class=psycopg.AsyncConnection[DictRow],
            kwargs={"autocommit": True, "row_factory": dict_row},
            min_size=1,
            max_size=POOL_MAX_SIZE,
            timeout=POOL_TIMEOUT_SECONDS,
            open=False,
            name="nemobot",
        )
        try:
            await pool.open(wait=True, timeout=POOL_TIMEOUT_SECONDS)
        except BaseException:
            await pool.close()
            raise
        log.debug("storage.open db=%s", name)
        return cls(pool, name=name, clock=clock)

    @classmethod
    @asynccontextmanager
    async def open(cls, url: str, *, clock: Clock = utc_now) -> AsyncIterator[PostgresRepository]:
        """``async with PostgresRepository.open(url) as repo:`` — connect, and close on the way out."""
        repo = await cls.connect(url, clock=clock)
        try:
            yield repo
        finally:
            await repo.close()

    async def close(self) -> None:
        """Close the pool once the operations already running are done; closing twice is fine."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
            log.debug("storage.close db=%s", self._name)

    async def __aenter__(self) -> PostgresRepository:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def name(self) -> str:
        """The database's URL without its password."""
        return self._name

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._pool is None

    # -- identities ------------------------------------------------------------------------------

    async def get_identity(self, key: str) -> IdentityRecord | None:
        """The identity stored under ``key`` (``tg:123``, ``shared``), or None."""
        row = await self._fetchone("SELECT * FROM identities WHERE key = %s", (key,))
        return _identity(row) if row is not None else None

    async def save_identity(self, record: IdentityRecord) -> IdentityRecord:
        """Insert or replace the identity under ``record.key``; return it as stored."""
        row = await self._fetch_written(
            """
            INSERT INTO identities (key, client_id, token, expires_at, user_id, updated_at)
            VALUES (%s, %s, %s, %s, %s, %s)
            ON CONFLICT (key) DO UPDATE SET
                client_id = excluded.client_id,
                token = excluded.token,
                expires_at = excluded.expires_at,
                user_id = excluded.user_id,
                updated_at = excluded.updated_at
            RETURNING *
            """,
            (record.key, record.client_id, record.token, _opt_utc(record.expires_at), record.user_id, self._now()),
        )
        return _identity(row)

    # -- chat sessions ---------------------------------------------------------------------------

    async def get_chat_session(self, chat_key: str) -> ChatSessionRecord | None:
        """The session stored for ``chat_key``, or None."""
        row = await self._fetchone("SELECT * FROM chat_sessions WHERE chat_key = %s", (chat_key,))
        return _chat_session(row) if row is not None else None

    async def save_chat_session(self, record: ChatSessionRecord) -> ChatSessionRecord:
        """Insert or replace the session of ``record.chat_key``; return it as stored.

        ``created_at`` is kept from the stored row while the session id is unchanged, and taken from
        ``record`` when the chat moved to a new session.
        """
        row = await self._fetch_written(
            """
            INSERT INTO chat_sessions
                (chat_key, identity_key, session_id, task_id, language, last_draft, created_at, updated_at)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (chat_key) DO UPDATE SET
                identity_key = excluded.identity_key,
                created_at = CASE WHEN chat_sessions.session_id = excluded.session_id
                                  THEN chat_sessions.created_at ELSE excluded.created_at END,
                session_id = excluded.session_id,
                task_id = excluded.task_id,
                language = excluded.language,
                last_draft = excluded.last_draft,
                updated_at = excluded.updated_at
            RETURNING *
            """,
            (
                record.chat_key,
                record.identity_key,
                record.session_id,
                record.task_id,
                record.language,
                _dump_json(record.last_draft),
                _utc(record.created_at),
                self._now(),
            ),
        )
        return _chat_session(row)

    async def update_last_draft(self, chat_key: str, draft: dict[str, Any] | None) -> bool:
        """Remember the last timeline seen in ``chat_key``; False if the chat has no session."""
        changed = await self._write(
            "UPDATE chat_sessions SET last_draft = %s, updated_at = %s WHERE chat_key = %s",
            (_dump_json(draft), self._now(), chat_key),
        )
        return changed > 0

    async def delete_chat_session(self, chat_key: str) -> bool:
        """Forget the session of ``chat_key``; False if there was none. Its exports are kept."""
        changed = await self._write("DELETE FROM chat_sessions WHERE chat_key = %s", (chat_key,))
        return changed > 0

    # -- exports ---------------------------------------------------------------------------------

    async def add_export(self, record: ExportRecord) -> ExportRecord:
        """Record a new export; return it as stored.

        Raises :class:`storage.DuplicateExportError` if ``record.render_id`` is already recorded.
        """
        row = await self._fetch_written(
            """
            INSERT INTO exports
                (render_id, chat_key, session_id, identity_key, status, progress, url, error,
                 delivered, target, language, created_at, updated_at)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (render_id) DO NOTHING
            RETURNING *
            """,
            (
                record.render_id,
                record.chat_key,
                record.session_id,
                record.identity_key,
                record.status,
                float(record.progress),
                record.url,
                record.error,
                record.delivered,
                _dump_json(record.target),
                record.language,
                _utc(record.created_at),
                self._now(),
            ),
            missing=DuplicateExportError(record.render_id),
        )
        return _export(row)

    async def update_export(
        self,
        render_id: str,
        *,
        status: ExportStatus | _Unset = _UNSET,
        progress: float | _Unset = _UNSET,
        url: str | _Unset | None = _UNSET,
        error: str | _Unset | None = _UNSET,
    ) -> ExportRecord | None:
        """Change only the given fields of an export; return it as stored, or None if unknown."""
        assignments = ["updated_at = %s"]
        params: list[object] = [self._now()]
        if status is not _UNSET:
            check_export_status(status)
            assignments.append("status = %s")
            params.append(status)
        if progress is not _UNSET:
            check_progress(progress)
            assignments.append("progress = %s")
            params.append(float(progress))
        if url is not _UNSET:
            assignments.append("url = %s")
            params.append(url)
        if error is not _UNSET:
            assignments.append("error = %s")
            params.append(error)
        params.append(render_id)
        # Only fixed column names from above are joined into the SQL; every value is a parameter.
        rows = await self._fetchall(
            f"UPDATE exports SET {', '.join(assignments)} WHERE render_id = %s RETURNING *", params
        )
        return _export(rows[0]) if rows else None

    async def get_export(self, render_id: str) -> ExportRecord | None:
        """The export ``render_id``, or None."""
        row = await self._fetchone("SELECT * FROM exports WHERE render_id = %s", (render_id,))
        return _export(row) if row is not None else None

    async def unfinished_exports(self, platform_prefix: str | None = None) -> list[ExportRecord]:
        """Everything a restarted bot still owes a chat: not delivered, not failed or cancelled.

        Oldest first. ``platform_prefix`` (e.g. ``"tg:"``) keeps only chats whose key starts with it.
        """
        sql = "SELECT * FROM exports WHERE NOT delivered AND status <> ALL(%s)"
        params: list[object] = [sorted(ABANDONED_EXPORT_STATUSES)]
        if platform_prefix is not None:
            # Not LIKE: "_" and "%" in the prefix would be wildcards. starts_with compares literally.
            sql += " AND starts_with(chat_key, %s)"
            params.append(platform_prefix)
        sql += " ORDER BY created_at, seq"
        return [_export(row) for row in await self._fetchall(sql, params)]

    async def claim_delivery(self, render_id: str, owner: str, *, lease: timedelta | None = None) -> bool:
        """Claim the export's delivery for ``owner``; True only for the one caller that got it.

        As :meth:`storage.Repository.claim_delivery`: one conditional UPDATE, which PostgreSQL re-checks
        after waiting for any other transaction updating the row, so it holds across processes.
        """
        now = _utc(self._clock())
        sql = (
            "UPDATE exports SET delivery_owner = %s, delivery_claimed_at = %s, updated_at = %s "
            "WHERE render_id = %s AND NOT delivered AND (delivery_owner IS NULL"
        )
        params: list[object] = [owner, now, now, render_id]
        if lease is not None:
            sql += " OR delivery_claimed_at < %s"
            params.append(now - lease)
        changed = await self._write(sql + ")", params)
        if not changed:
            log.debug("storage.claim_delivery.refused render_id=%s", render_id)
        return changed > 0

    async def confirm_delivery(self, render_id: str, owner: str) -> bool:
        """Mark the export delivered for good; only the owner of the claim can. True when it was."""
        changed = await self._write(
            "UPDATE exports SET delivered = true, updated_at = %s WHERE render_id = %s AND NOT delivered "
            "AND delivery_owner = %s",
            (self._now(), render_id, owner),
        )
        return changed > 0

    async def renew_delivery(self, render_id: str, owner: str) -> bool:
        """Restart the lease of ``owner``'s claim (a delivery still running); False when it is not the owner's
        any more (taken over after its lease ran out, or delivered)."""
        now = self._now()
        changed = await self._write(
            "UPDATE exports SET delivery_claimed_at = %s, updated_at = %s WHERE render_id = %s AND NOT delivered "
            "AND delivery_owner = %s",
            (now, now, render_id, owner),
        )
        return changed > 0

    async def release_delivery(self, render_id: str, owner: str) -> bool:
        """Give up ``owner``'s claim after a delivery that failed, so it can be tried again."""
        changed = await self._write(
            "UPDATE exports SET delivery_owner = NULL, delivery_claimed_at = NULL, updated_at = %s "
            "WHERE render_id = %s AND NOT delivered AND delivery_owner = %s",
            (self._now(), render_id, owner),
        )
        return changed > 0

    async def release_stale_claims(self, owner: str, *, older_than: timedelta | None = None) -> int:
        """Release the claims not held by ``owner`` (by default all of them; with ``older_than``, only
        those claimed longer ago): deliveries a previous run started and never confirmed. Returns how many.

        Where several processes share the database, pass ``older_than``: the others' live claims are theirs.
        """
        sql = (
            "UPDATE exports SET delivery_owner = NULL, delivery_claimed_at = NULL, updated_at = %s "
            "WHERE NOT delivered AND delivery_owner IS NOT NULL AND delivery_owner <> %s"
        )
        params: list[object] = [self._now(), owner]
        if older_than is not None:
            sql += " AND delivery_claimed_at < %s"
            params.append(_utc(self._clock()) - older_than)
        released = await self._write(sql, params)
        if released:
            log.info("storage.released_claims rows=%d", released)
        return released

    async def exports_for_chat(self, chat_key: str, limit: int = 20) -> list[ExportRecord]:
        """The latest ``limit`` exports of ``chat_key``, newest first."""
        if limit < 0:
            raise ValueError(f"limit must not be negative, got {limit}")
        rows = await self._fetchall(
            "SELECT * FROM exports WHERE chat_key = %s ORDER BY created_at DESC, seq DESC LIMIT %s",
            (chat_key, limit),
        )
        return [_export(row) for row in rows]

    # -- processed incoming messages -------------------------------------------------------------

    async def mark_processed(self, chat_key: str, message_id: str | int) -> bool:
        """Record that a message was handled; True the first time, False for a redelivery.

        Ids are stored as text, so ``42`` and ``"42"`` are the same message.
        """
        changed = await self._write(
            "INSERT INTO processed_messages (chat_key, message_id, processed_at) VALUES (%s, %s, %s) "
            "ON CONFLICT DO NOTHING",
            (chat_key, str(message_id), self._now()),
        )
        return changed > 0

    async def prune_processed(self, older_than: timedelta) -> int:
        """Forget messages processed more than ``older_than`` ago; return how many were forgotten."""
        if older_than < timedelta(0):
            raise ValueError(f"older_than must not be negative, got {older_than}")
        cutoff = _utc(self._clock()) - older_than
        removed = await self._write("DELETE FROM processed_messages WHERE processed_at < %s", (cutoff,))
        if removed:
            log.info("storage.pruned table=processed_messages rows=%d", removed)
        return removed

    # -- accepted platform updates ---------------------------------------------------------------

    async def accept_update(self, bot_id: str | int, update_id: int) -> bool:
        """As :meth:`storage.Repository.accept_update`: one INSERT … ON CONFLICT DO NOTHING, so of any number
        of processes accepting the same update at once, exactly one inserts the row and gets True."""
        changed = await self._write(
            "INSERT INTO accepted_updates (bot_id, update_id, accepted_at) VALUES (%s, %s, %s) "
            "ON CONFLICT DO NOTHING",
            (str(bot_id), int(update_id), self._now()),
        )
        return changed > 0

    async def prune_accepted_updates(self, older_than: timedelta) -> int:
        """Forget updates accepted more than ``older_than`` ago; return how many were forgotten."""
        if older_than < timedelta(0):
            raise ValueError(f"older_than must not be negative, got {older_than}")
        cutoff = _utc(self._clock()) - older_than
        removed = await self._write("DELETE FROM accepted_updates WHERE accepted_at < %s", (cutoff,))
        if removed:
            log.info("storage.pruned table=accepted_updates rows=%d", removed)
        return removed

    # -- plumbing --------------------------------------------------------------------------------

    def _now(self) -> datetime:
        return _utc(self._clock())

    def _db(self) -> AsyncConnectionPool[psycopg.AsyncConnection[DictRow]]:
        if self._pool is None:
            raise RepositoryClosedError()
        return self._pool

    async def _write(self, sql: str, params: Iterable[object]) -> int:
        """Run one write statement; return how many rows it changed."""
        async with self._db().connection() as conn:
            cursor = await conn.execute(sql, tuple(params))
            return cursor.rowcount

    async def _fetchone(self, sql: str, params: Iterable[object]) -> DictRow | None:
        rows = await self._fetchall(sql, params)
        return rows[0] if rows else None

    async def _fetchall(self, sql: str, params: Iterable[object]) -> list[DictRow]:
        async with self._db().connection() as conn:
            cursor = await conn.execute(sql, tuple(params))
            return await cursor.fetchall()

    async def _fetch_written(
        self, sql: str, params: Iterable[object], *, missing: StorageError | None = None
    ) -> DictRow:
        """Run one ``… RETURNING *`` write that affects one row; return that row."""
        rows = await self._fetchall(sql, params)
        if not rows:
            raise missing if missing is not None else StorageError("write returned no row")
        return rows[0]


# -- migrations -----------------------------------------------------------------------------------


async def postgres_schema_version(conn: psycopg.AsyncConnection[Any]) -> int:
    """How many migrations this database has run (0 for an empty database)."""
    cursor = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (_SCHEMA_TABLE,))
    exists = await cursor.fetchone()
    if exists is None or not exists[0]:
        return 0
    cursor = await conn.execute(f"SELECT version FROM {_SCHEMA_TABLE}")
    row = await cursor.fetchone()
    return int(row[0]) if row is not None else 0


async def migrate_postgres(
    conn: psycopg.AsyncConnection[Any],
    migrations: Iterable[Migration | str] = MIGRATIONS,
    *,
    name: str = "database",
) -> int:
    """Run the migrations this database has not run yet; return how many ran.

    ``conn`` must be in autocommit mode, so that the transactions here are the only ones. ``name`` only
    labels errors and log lines. Raises :class:`SchemaVersionError` if the database is newer than
    ``migrations``.
    """
    if not conn.autocommit:
        raise ValueError("migrate_postgres() needs a connection in autocommit mode")
    scripts = [postgres_script(migration) for migration in migrations]
    known = len(scripts)
    current = start = await postgres_schema_version(conn)
    if current > known:
        raise SchemaVersionError(name, current, known)
    ran = 0
    while current < known:
        async with conn.transaction():
            # Held until this transaction ends: a second process migrating waits here, then sees our version.
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            await conn.execute(f"CREATE TABLE IF NOT EXISTS {_SCHEMA_TABLE} (version INTEGER NOT NULL)")
            current = await postgres_schema_version(conn)
            if current > known:
                raise SchemaVersionError(name, current, known)
            if current < known:
                # A script without parameters may hold several statements (psycopg sends it as one query).
                await conn.execute(scripts[current])
                current += 1
                ran += 1
                await conn.execute(f"DELETE FROM {_SCHEMA_TABLE}")
                await conn.execute(f"INSERT INTO {_SCHEMA_TABLE} (version) VALUES (%s)", (current,))
    if ran:
        log.info("storage.migrated db=%s from=%d to=%d ran=%d", name, start, current, ran)
    return ran


# -- conversions ----------------------------------------------------------------------------------


def _utc(value: datetime) -> datetime:
    if value.utcoffset() is None:
        raise ValueError(f"timestamps must be timezone-aware, got naive {value!r}")
    return value.astimezone(UTC)


def _opt_utc(value: datetime | None) -> datetime | None:
    return _utc(value) if value is not None else None


def _json_object(value: object, *, what: str) -> dict[str, Any] | None:
    """A json column as psycopg read it (already parsed), or as text from an older psycopg setup."""
    if value is None:
        return None
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, dict):
        raise StorageError(f"{what} is not a JSON object")
    return value


def _identity(row: Mapping[str, Any]) -> IdentityRecord:
    return IdentityRecord(
        key=row["key"],
        client_id=row["client_id"],
        token=row["token"],
        expires_at=_opt_utc(row["expires_at"]),
        user_id=row["user_id"],
        updated_at=_utc(row["updated_at"]),
    )


def _chat_session(row: Mapping[str, Any]) -> ChatSessionRecord:
    return ChatSessionRecord(
        chat_key=row["chat_key"],
        identity_key=row["identity_key"],
        session_id=row["session_id"],
        task_id=row["task_id"],
        language=row["language"],
        last_draft=_json_object(row["last_draft"], what=f"last_draft of chat {row['chat_key']}"),
        created_at=_utc(row["created_at"]),
        updated_at=_utc(row["updated_at"]),
    )


def _export(row: Mapping[str, Any]) -> ExportRecord:
    return ExportRecord(
        render_id=row["render_id"],
        chat_key=row["chat_key"],
        session_id=row["session_id"],
        identity_key=row["identity_key"],
        status=row["status"],
        progress=float(row["progress"]),
        url=row["url"],
        error=row["error"],
        delivered=bool(row["delivered"]),
        target=_json_object(row["target"], what=f"target of export {row['render_id']}"),
        language=row["language"],
        created_at=_utc(row["created_at"]),
        updated_at=_utc(row["updated_at"]),
        delivery_owner=row["delivery_owner"],
        delivery_claimed_at=_opt_utc(row["delivery_claimed_at"]),
    )
