"""The bot's repository: one SQLite file, one aiosqlite connection, shared by every asyncio task.

The connection runs in autocommit mode, so every write is committed when its statement finishes and
a crash never loses an acknowledged write. Operations that must be atomic are single statements
(upserts, ``UPDATE … WHERE delivered = 0 AND delivery_owner IS NULL``, ``INSERT OR IGNORE``) so they stay
atomic even against another process using the same file; the lock only keeps this process's tasks from
interleaving inside each other's work on the shared connection.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import aiosqlite

from storage.errors import DuplicateExportError, RepositoryClosedError, StorageError
from storage.migrations import MIGRATIONS, migrate
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

log = logging.getLogger(__name__)
# aiosqlite logs every statement *with its parameters* at DEBUG, and those include NemoVideo tokens:
# a debugging session must never write a credential to the log.
logging.getLogger("aiosqlite").setLevel(logging.INFO)

BUSY_TIMEOUT_MS: Final = 5000

Clock = Callable[[], datetime]


class _Unset(enum.Enum):
    """Marks an ``update_export`` argument that was not given (``None`` is a real value there)."""

    UNSET = enum.auto()


_UNSET: Final = _Unset.UNSET


class Repository:
    """Typed reads and writes of what must survive a restart.

    Create it with ``async with Repository.open(path) as repo:`` (or ``await Repository.connect(path)``
    and ``await repo.close()``). Safe to share between any number of tasks of one event loop.
    """

    def __init__(self, conn: aiosqlite.Connection, *, path: Path, clock: Clock = utc_now) -> None:
        """Wrap an already configured and migrated connection; prefer :meth:`open`."""
        self._conn: aiosqlite.Connection | None = conn
        self._path = path
        self._clock = clock
        self._lock = asyncio.Lock()

    # -- lifecycle -------------------------------------------------------------------------------

    @classmethod
    async def connect(cls, path: str | Path, *, clock: Clock = utc_now) -> Repository:
        """Open (creating if needed) the database at ``path`` and bring its schema up to date.

        ``clock`` returns the current UTC time; tests pass a fake one instead of sleeping.
        Raises :class:`storage.SchemaVersionError` if the file comes from a newer nemobot.
        """
        db_path = await asyncio.to_thread(_prepare_file, path)
        conn = await aiosqlite.connect(db_path, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            await _configure(conn, db_path)
            await migrate(conn, MIGRATIONS, name=str(db_path))
        except BaseException:
            # aiosqlite's worker thread is not a daemon: an unclosed connection would hang the exit.
            await conn.close()
            raise
        log.debug("storage.open db=%s", db_path)
        return cls(conn, path=db_path, clock=clock)

    @classmethod
    @asynccontextmanager
    async def open(cls, path: str | Path, *, clock: Clock = utc_now) -> AsyncIterator[Repository]:
        """``async with Repository.open(path) as repo:`` — connect, and close on the way out."""
        repo = await cls.connect(path, clock=clock)
        try:
            yield repo
        finally:
            await repo.close()

    async def close(self) -> None:
        """Close the connection once the operations already running are done; closing twice is fine."""
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                await conn.close()
                log.debug("storage.close db=%s", self._path)

    async def __aenter__(self) -> Repository:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._conn is None

    # -- identities ------------------------------------------------------------------------------

    async def get_identity(self, key: str) -> IdentityRecord | None:
        """The identity stored under ``key`` (``tg:123``, ``shared``), or None."""
        row = await self._fetchone("SELECT * FROM identities WHERE key = ?", (key,))
        return _identity(row) if row is not None else None

    async def save_identity(self, record: IdentityRecord) -> IdentityRecord:
        """Insert or replace the identity under ``record.key``; return it as stored."""
        row = await self._fetch_written(
            """
            INSERT INTO identities (key, client_id, token, expires_at, user_id, updated_at)
            VALUES (?, ?, ?, ?, ?, ?)
            ON CONFLICT (key) DO UPDATE SET
                client_id = excluded.client_id,
                token = excluded.token,
                expires_at = excluded.expires_at,
                user_id = excluded.user_id,
                updated_at = excluded.updated_at
            RETURNING *
            """,
            (record.key, record.client_id, record.token, _opt_ts(record.expires_at), record.user_id, self._now()),
        )
        return _identity(row)

    # -- chat sessions ---------------------------------------------------------------------------

    async def get_chat_session(self, chat_key: str) -> ChatSessionRecord | None:
        """The session stored for ``chat_key``, or None."""
        row = await self._fetchone("SELECT * FROM chat_sessions WHERE chat_key = ?", (chat_key,))
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
            VALUES (?, ?, ?, ?, ?, ?, ?, ?)
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
                _ts(record.created_at),
                self._now(),
            ),
        )
        return _chat_session(row)

    async def update_last_draft(self, chat_key: str, draft: dict[str, Any] | None) -> bool:
        """Remember the last timeline seen in ``chat_key``; False if the chat has no session."""
        changed = await self._write(
            "UPDATE chat_sessions SET last_draft = ?, updated_at = ? WHERE chat_key = ?",
            (_dump_json(draft), self._now(), chat_key),
        )
        return changed > 0

    async def delete_chat_session(self, chat_key: str) -> bool:
        """Forget the session of ``chat_key``; False if there was none. Its exports are kept."""
        changed = await self._write("DELETE FROM chat_sessions WHERE chat_key = ?", (chat_key,))
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
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
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
                int(record.delivered),
                _dump_json(record.target),
                record.language,
                _ts(record.created_at),
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
        assignments = ["updated_at = ?"]
        params: list[object] = [self._now()]
        if status is not _UNSET:
            check_export_status(status)
            assignments.append("status = ?")
            params.append(status)
        if progress is not _UNSET:
            check_progress(progress)
            assignments.append("progress = ?")
            params.append(float(progress))
        if url is not _UNSET:
            assignments.append("url = ?")
            params.append(url)
        if error is not _UNSET:
            assignments.append("error = ?")
            params.append(error)
        params.append(render_id)
        # Only fixed column names from above are joined into the SQL; every value is a parameter.
        rows = await self._fetchall(
            f"UPDATE exports SET {', '.join(assignments)} WHERE render_id = ? RETURNING *", params
        )
        return _export(rows[0]) if rows else None

    async def get_export(self, render_id: str) -> ExportRecord | None:
        """The export ``render_id``, or None."""
        row = await self._fetchone("SELECT * FROM exports WHERE render_id = ?", (render_id,))
        return _export(row) if row is not None else None

    async def unfinished_exports(self, platform_prefix: str | None = None) -> list[ExportRecord]:
        """Everything a restarted bot still owes a chat: not delivered, not failed or cancelled.

        Oldest first. ``platform_prefix`` (e.g. ``"tg:"``) keeps only chats whose key starts with it.
        """
        abandoned = sorted(ABANDONED_EXPORT_STATUSES)
        sql = f"SELECT * FROM exports WHERE delivered = 0 AND status NOT IN ({', '.join('?' for _ in abandoned)})"
        params: list[object] = list(abandoned)
        if platform_prefix is not None:
            # Not LIKE: it is case-insensitive and treats "_" and "%" in the prefix as wildcards.
            sql += " AND substr(chat_key, 1, length(?)) = ?"
            params += [platform_prefix, platform_prefix]
        sql += " ORDER BY created_at, rowid"
        return [_export(row) for row in await self._fetchall(sql, params)]

    async def claim_delivery(self, render_id: str, owner: str, *, lease: timedelta | None = None) -> bool:
        """Claim the export's delivery for ``owner``; True only for the one caller that got it.

        A claim is not a delivery: call :meth:`confirm_delivery` once the platform accepted the result, or
        :meth:`release_delivery` when sending failed. While claimed, nobody else can claim it, so two tasks
        never deliver it at once. A single conditional UPDATE, so this holds even for two processes sharing
        the file. ``lease``: a claim older than this may be taken over (for several processes sharing one
        database, where a dead one's claims are not released by a restart of the same process); without
        it, a claim holds until confirmed or released.
        """
        now = self._clock()
        sql = (
            "UPDATE exports SET delivery_owner = ?, delivery_claimed_at = ?, updated_at = ? "
            "WHERE render_id = ? AND delivered = 0 AND (delivery_owner IS NULL"
        )
        params: list[object] = [owner, _ts(now), _ts(now), render_id]
        if lease is not None:
            sql += " OR delivery_claimed_at < ?"
            params.append(_ts(now - lease))
        changed = await self._write(sql + ")", params)
        if not changed:
            log.debug("storage.claim_delivery.refused render_id=%s", render_id)
        return changed > 0

    async def confirm_delivery(self, render_id: str, owner: str) -> bool:
        """Mark the export delivered for good; only the owner of the claim can. True when it was."""
        changed = await self._write(
            "UPDATE exports SET delivered = 1, updated_at = ? WHERE render_id = ? AND delivered = 0 "
            "AND delivery_owner = ?",
            (self._now(), render_id, owner),
        )
        return changed > 0

    async def renew_delivery(self, render_id: str, owner: str) -> bool:
        """Restart the lease of ``owner``'s claim (a delivery still running); False when it is not the owner's
        any more (taken over after its lease ran out, or delivered)."""
        now = self._now()
        changed = await self._write(
            "UPDATE exports SET delivery_claimed_at = ?, updated_at = ? WHERE render_id = ? AND delivered = 0 "
            "AND delivery_owner = ?",
            (now, now, render_id, owner),
        )
        return changed > 0

    async def release_delivery(self, render_id: str, owner: str) -> bool:
        """Give up ``owner``'s claim after a delivery that failed, so it can be tried again."""
        changed = await self._write(
            "UPDATE exports SET delivery_owner = NULL, delivery_claimed_at = NULL, updated_at = ? "
            "WHERE render_id = ? AND delivered = 0 AND delivery_owner = ?",
            (self._now(), render_id, owner),
        )
        return changed > 0

    async def release_stale_claims(self, owner: str, *, older_than: timedelta | None = None) -> int:
        """Release the claims not held by ``owner`` (by default all of them; with ``older_than``, only
        those claimed longer ago): deliveries a previous run started and never confirmed. Returns how many.

        With SQLite one bot process owns the database, so at start every other claim is a dead run's.
        """
        sql = (
            "UPDATE exports SET delivery_owner = NULL, delivery_claimed_at = NULL, updated_at = ? "
            "WHERE delivered = 0 AND delivery_owner IS NOT NULL AND delivery_owner != ?"
        )
        params: list[object] = [self._now(), owner]
        if older_than is not None:
            sql += " AND delivery_claimed_at < ?"
            params.append(_ts(self._clock() - older_than))
        released = await self._write(sql, params)
        if released:
            log.info("storage.released_claims rows=%d", released)
        return released

    async def exports_for_chat(self, chat_key: str, limit: int = 20) -> list[ExportRecord]:
        """The latest ``limit`` exports of ``chat_key``, newest first."""
        if limit < 0:
            raise ValueError(f"limit must not be negative, got {limit}")
        rows = await self._fetchall(
            "SELECT * FROM exports WHERE chat_key = ? ORDER BY created_at DESC, rowid DESC LIMIT ?",
            (chat_key, limit),
        )
        return [_export(row) for row in rows]

    # -- processed incoming messages -------------------------------------------------------------

    async def mark_processed(self, chat_key: str, message_id: str | int) -> bool:
        """Record that a message was handled; True the first time, False for a redelivery.

        Ids are stored as text, so ``42`` and ``"42"`` are the same message.
        """
        changed = await self._write(
            "INSERT OR IGNORE INTO processed_messages (chat_key, message_id, processed_at) VALUES (?, ?, ?)",
            (chat_key, str(message_id), self._now()),
        )
        return changed > 0

    async def prune_processed(self, older_than: timedelta) -> int:
        """Forget messages processed more than ``older_than`` ago; return how many were forgotten."""
        if older_than < timedelta(0):
            raise ValueError(f"older_than must not be negative, got {older_than}")
        cutoff = _ts(self._clock() - older_than)
        removed = await self._write("DELETE FROM processed_messages WHERE processed_at < ?", (cutoff,))
        if removed:
            log.info("storage.pruned table=processed_messages rows=%d", removed)
        return removed

    # -- accepted platform updates ---------------------------------------------------------------

    async def accept_update(self, bot_id: str | int, update_id: int) -> bool:
        """Accept a platform update (Telegram's ``update_id``) for the bot ``bot_id``; True exactly once per
        update, whichever process sharing the database asks first, and False for a redelivery."""
        changed = await self._write(
            "INSERT INTO accepted_updates (bot_id, update_id, accepted_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (str(bot_id), int(update_id), self._now()),
        )
        return changed > 0

    async def prune_accepted_updates(self, older_than: timedelta) -> int:
        """Forget updates accepted more than ``older_than`` ago; return how many were forgotten."""
        if older_than < timedelta(0):
            raise ValueError(f"older_than must not be negative, got {older_than}")
        cutoff = _ts(self._clock() - older_than)
        removed = await self._write("DELETE FROM accepted_updates WHERE accepted_at < ?", (cutoff,))
        if removed:
            log.info("storage.pruned table=accepted_updates rows=%d", removed)
        return removed

    # -- plumbing --------------------------------------------------------------------------------

    def _now(self) -> str:
        return _ts(self._clock())

    def _db(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise RepositoryClosedError()
        return self._conn

    async def _write(self, sql: str, params: Iterable[object]) -> int:
        """Run one write statement; return how many rows it changed."""
        async with self._lock:
            async with self._db().execute(sql, tuple(params)) as cursor:
                return cursor.rowcount

    async def _fetchone(self, sql: str, params: Iterable[object]) -> sqlite3.Row | None:
        rows = await self._fetchall(sql, params)
        return rows[0] if rows else None

    async def _fetchall(self, sql: str, params: Iterable[object]) -> list[sqlite3.Row]:
        """Run one statement and fetch every row, in one job on aiosqlite's thread.

        Also used for ``… RETURNING`` writes: in autocommit mode such a write commits only when its
        statement has been stepped to the end, which fetching every row guarantees.
        """
        async with self._lock:
            return list(await self._db().execute_fetchall(sql, tuple(params)))

    async def _fetch_written(
        self, sql: str, params: Iterable[object], *, missing: StorageError | None = None
    ) -> sqlite3.Row:
        """Run one ``… RETURNING *`` write that affects one row; return that row."""
        rows = await self._fetchall(sql, params)
        if not rows:
            raise missing if missing is not None else StorageError("write returned no row")
        return rows[0]


# -- opening --------------------------------------------------------------------------------------


def _prepare_file(raw_path: str | Path) -> Path:
    """Create the parent directory and, if new, the database file, readable by its owner only.

    sqlite3 would create the file with the umask's default mode (usually 0644), and it holds bearer
    tokens. SQLite gives the -wal and -shm files the main file's permissions (os_unix.c,
    findCreateFileMode and unixOpenSharedMemory), so they follow without touching the umask, which
    is process-wide and not ours to change under other threads.
    """
    path = Path(raw_path).expanduser()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        # Leave an existing file's mode alone (the owner may have chosen it), but say so.
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            log.warning("storage.file_mode db=%s mode=%o reason=readable-by-others", path, mode)
        return path
    os.close(fd)
    log.info("storage.created db=%s", path)
    return path


async def _configure(conn: aiosqlite.Connection, path: Path) -> None:
    # busy_timeout first: switching to WAL needs a lock another process may be holding.
    await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
    await conn.execute("PRAGMA foreign_keys = ON")
    mode = await _wal(conn)
    if mode != "wal":
        # Some filesystems (network mounts) cannot do WAL; SQLite then keeps its rollback journal.
        log.warning("storage.journal_mode db=%s mode=%s wanted=wal", path, mode)
    # NORMAL is durable across application crashes in WAL mode; only a power loss may drop the
    # last commits, which is an acceptable trade for not fsyncing every progress update.
    await conn.execute("PRAGMA synchronous = NORMAL")


async def _wal(conn: aiosqlite.Connection) -> str:
    """Switch to WAL; the journal mode it ends in. Two processes opening a new file at once may both try the
    switch, and SQLite answers the loser "database is locked" at once, without waiting out busy_timeout (it
    would deadlock otherwise): it is tried again, for as long as busy_timeout allows."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BUSY_TIMEOUT_MS / 1000
    pause = 0.01
    while True:
        try:
            async with conn.execute("PRAGMA journal_mode = WAL") as cursor:
                row = await cursor.fetchone()
            return str(row[0]).lower() if row is not None else "unknown"
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or loop.time() + pause > deadline:
                raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.2)


# -- conversions ----------------------------------------------------------------------------------


def _ts(value: datetime) -> str:
    """ISO 8601 UTC text of one fixed width, so that comparing the text compares the times."""
    if value.utcoffset() is None:
        raise ValueError(f"timestamps must be timezone-aware, got naive {value!r}")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _opt_ts(value: datetime | None) -> str | None:
    return _ts(value) if value is not None else None


def _parse_ts(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    # Rows written by this module are always UTC; a naive value could only come from a hand edit.
    return parsed.astimezone(UTC) if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _opt_parse_ts(text: str | None) -> datetime | None:
    return _parse_ts(text) if text is not None else None


def _dump_json(value: dict[str, Any] | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError(f"expected a dict or None, got {type(value).__name__}")
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _load_json(text: str | None, *, what: str) -> dict[str, Any] | None:
    if text is None:
        return None
    value = json.loads(text)
    if not isinstance(value, dict):
        raise StorageError(f"{what} is not a JSON object")
    return value


def _identity(row: sqlite3.Row) -> IdentityRecord:
    return IdentityRecord(
        key=row["key"],
        client_id=row["client_id"],
        token=row["token"],
        expires_at=_opt_parse_ts(row["expires_at"]),
        user_id=row["user_id"],
        updated_at=_parse_ts(row["updated_at"]),
    )


def _chat_session(row: sqlite3.Row) -> ChatSessionRecord:
    return ChatSessionRecord(
        chat_key=row["chat_key"],
        identity_key=row["identity_key"],
        session_id=row["session_id"],
        task_id=row["task_id"],
        language=row["language"],
        last_draft=_load_json(row["last_draft"], what=f"last_draft of chat {row['chat_key']}"),
        created_at=_parse_ts(row["created_at"]),
        updated_at=_parse_ts(row["updated_at"]),
    )


def _export(row: sqlite3.Row) -> ExportRecord:
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
        target=_load_json(row["target"], what=f"target of export {row['render_id']}"),
        language=row["language"],
        created_at=_parse_ts(row["created_at"]),
        updated_at=_parse_ts(row["updated_at"]),
        delivery_owner=row["delivery_owner"],
        delivery_claimed_at=_opt_parse_ts(row["delivery_claimed_at"]),
    )
