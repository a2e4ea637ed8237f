"""Tests of storage/: the repository, its migrations and its restart and concurrency promises.

One suite for both databases: every test that takes ``backend`` (or ``repo``) runs against an SQLite file
and against a PostgreSQL database of its own (on the throwaway server of tests/conftest.py, skipped with
the reason where this machine has no PostgreSQL binaries). The file-level tests are SQLite's alone.
"""

from __future__ import annotations

import ast
import asyncio
import sqlite3
import stat
from collections.abc import AsyncIterator, Sequence
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiosqlite
import psycopg
import pytest

from storage import (
    MIGRATIONS,
    ChatSessionRecord,
    DuplicateExportError,
    ExportRecord,
    IdentityRecord,
    Migration,
    Repository,
    RepositoryClosedError,
    SchemaVersionError,
    Store,
    connect_repository,
    migrate,
    open_repository,
    schema_version,
)
from storage.migrations import split_statements
from storage.postgres import PostgresRepository, migrate_postgres, postgres_schema_version

STORAGE_DIR = Path(__file__).resolve().parent.parent / "storage"
T0 = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


class FakeClock:
    """A clock the test moves by hand, so time-based behaviour needs no sleeping."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    # A parent that does not exist yet: opening must create it.
    return tmp_path / "state" / "nemobot.sqlite3"


class Backend:
    """One database the suite runs against: where it is (NEMOBOT_DB), and a way round the repository to
    look at it or set it up as an older nemobot would have left it."""

    name: str
    target: str

    async def migrate(self, migrations: Sequence[Migration | str]) -> int:
        """Run the migrations on a connection of its own; how many ran."""
        raise NotImplementedError

    async def schema_version(self) -> int:
        raise NotImplementedError

    async def set_schema_version(self, version: int) -> None:
        raise NotImplementedError

    async def execute(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        """One statement with ``?`` placeholders, on a connection of its own; the rows it returned."""
        raise NotImplementedError

    async def table_exists(self, name: str) -> bool:
        raise NotImplementedError


class SqliteBackend(Backend):
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.target = str(path)

    async def migrate(self, migrations: Sequence[Migration | str]) -> int:
        self.path.parent.mkdir(exist_ok=True)  # as an older nemobot left it: the folder is there
        async with aiosqlite.connect(self.path, isolation_level=None) as conn:
            try:
                return await migrate(conn, migrations)
            finally:
                assert not conn.in_transaction

    async def schema_version(self) -> int:
        return int(_raw(self.path, "PRAGMA user_version"))

    async def set_schema_version(self, version: int) -> None:
        _raw(self.path, f"PRAGMA user_version = {version:d}")

    async def execute(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        async with aiosqlite.connect(self.path, isolation_level=None) as conn:
            return [tuple(row) for row in await conn.execute_fetchall(sql, params)]

    async def table_exists(self, name: str) -> bool:
        return bool(_raw(self.path, f"SELECT count(*) FROM sqlite_master WHERE name = '{name}'"))


class PostgresBackend(Backend):
    name = "postgres"

    def __init__(self, url: str) -> None:
        self.target = url

    async def _connect(self) -> psycopg.AsyncConnection[tuple[Any, ...]]:
        return await psycopg.AsyncConnection.connect(self.target, autocommit=True)

    async def migrate(self, migrations: Sequence[Migration | str]) -> int:
        async with await self._connect() as conn:
            try:
                return await migrate_postgres(conn, migrations)
            finally:
                assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE

    async def schema_version(self) -> int:
        async with await self._connect() as conn:
            return await postgres_schema_version(conn)

    async def set_schema_version(self, version: int) -> None:
        await self.execute("UPDATE nemobot_schema SET version = ?", version)

    async def execute(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        async with await self._connect() as conn:
            cursor = await conn.execute(sql.replace("?", "%s"), params)
            return await cursor.fetchall() if cursor.description is not None else []

    async def table_exists(self, name: str) -> bool:
        rows = await self.execute("SELECT to_regclass(?) IS NOT NULL", name)
        return bool(rows[0][0])


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, db_path: Path) -> Backend:
    if request.param == "sqlite":
        return SqliteBackend(db_path)
    # Skips this case, saying why, where the machine has no PostgreSQL to start.
    return PostgresBackend(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def repo(backend: Backend, clock: FakeClock) -> AsyncIterator[Store]:
    async with open_repository(backend.target, clock=clock) as repository:
        yield repository


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _raw(path: Path, sql: str) -> Any:
    """Run one statement through plain sqlite3 (a second, independent connection)."""
    with closing(sqlite3.connect(path)) as conn:
        row = conn.execute(sql).fetchone()
        conn.commit()
        return row[0] if row is not None else None


def _export(render_id: str, chat_key: str = "tg:1", **fields: Any) -> ExportRecord:
    base: dict[str, Any] = {
        "render_id": render_id,
        "chat_key": chat_key,
        "session_id": "s-1",
        "identity_key": chat_key,
        "language": "en",
        "created_at": T0,
    }
    base.update(fields)
    return ExportRecord(**base)


# -- the file ----------------------------------------------------------------------------------------


async def test_new_database_file_and_side_files_are_owner_only(db_path: Path) -> None:
    async with Repository.open(db_path) as repo:
        await repo.mark_processed("tg:1", 1)  # a write, so the -wal and -shm files exist
        side_files = [Path(f"{db_path}-wal"), Path(f"{db_path}-shm")]
        assert all(p.exists() for p in side_files)
        assert _mode(db_path) == 0o600
        for side in side_files:
            assert _mode(side) & 0o077 == 0, side
    assert db_path.parent.is_dir()


def _create_file(path: Path, mode: int) -> None:
    path.parent.mkdir(parents=True)
    path.touch()
    path.chmod(mode)


async def test_existing_file_mode_is_left_alone(db_path: Path) -> None:
    _create_file(db_path, 0o640)
    async with Repository.open(db_path):
        pass
    assert _mode(db_path) == 0o640


async def test_connection_pragmas(db_path: Path) -> None:
    pragmas = {}
    async with Repository.open(db_path) as repo:
        # journal_mode=WAL is stored in the file, so an independent connection sees it.
        assert _raw(db_path, "PRAGMA journal_mode") == "wal"
        # The others are per connection: look at the repository's own.
        conn = repo._db()
        for name in ("foreign_keys", "busy_timeout", "synchronous"):
            async with conn.execute(f"PRAGMA {name}") as cursor:
                row = await cursor.fetchone()
                assert row is not None
                pragmas[name] = row[0]
    assert pragmas == {"foreign_keys": 1, "busy_timeout": 5000, "synchronous": 1}  # 1 = NORMAL


# -- migrations --------------------------------------------------------------------------------------


async def test_migrations_set_the_version_and_run_once(backend: Backend) -> None:
    async with open_repository(backend.target):
        pass
    assert await backend.schema_version() == len(MIGRATIONS)
    assert await backend.migrate(MIGRATIONS) == 0
    # Reopening an up-to-date database changes nothing either.
    async with open_repository(backend.target):
        pass
    assert await backend.schema_version() == len(MIGRATIONS)


async def test_sqlite_schema_version_is_user_version(tmp_path: Path) -> None:
    async with aiosqlite.connect(tmp_path / "m.sqlite3", isolation_level=None) as conn:
        assert await migrate(conn, ["CREATE TABLE a (x TEXT);"]) == 1
        assert await schema_version(conn) == 1
        assert list(await conn.execute_fetchall("PRAGMA user_version")) == [(1,)]


async def test_migrate_runs_only_missing_scripts(backend: Backend) -> None:
    scripts = ["CREATE TABLE a (x TEXT);", "CREATE TABLE b (x TEXT); INSERT INTO b VALUES (';');"]
    assert await backend.migrate(scripts[:1]) == 1
    assert await backend.migrate(scripts) == 1
    assert await backend.migrate(scripts) == 0
    assert await backend.schema_version() == 2
    assert await backend.execute("SELECT x FROM b") == [(";",)]


async def test_failed_migration_rolls_back_with_its_version(backend: Backend) -> None:
    scripts = [
        "CREATE TABLE a (x TEXT);",
        "CREATE TABLE half (x TEXT); INSERT INTO no_such_table VALUES (1);",
    ]
    with pytest.raises((sqlite3.OperationalError, psycopg.errors.UndefinedTable), match="no_such_table"):
        await backend.migrate(scripts)
    assert await backend.schema_version() == 1
    assert await backend.table_exists("a")
    assert not await backend.table_exists("half")


async def test_migrate_needs_autocommit_connection(tmp_path: Path) -> None:
    async with aiosqlite.connect(tmp_path / "m.sqlite3") as conn:
        with pytest.raises(ValueError, match="isolation_level=None"):
            await migrate(conn)


async def test_postgres_migrate_needs_autocommit_connection(postgres_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(postgres_url) as pg:
        with pytest.raises(ValueError, match="autocommit"):
            await migrate_postgres(pg)


async def test_two_processes_migrating_at_once_run_each_script_once(backend: Backend) -> None:
    # Two bot processes starting together on an empty database: one migrates, the other waits and finds
    # the schema up to date (a second run of the first script would fail on its CREATE TABLE).
    first, second = await asyncio.gather(connect_repository(backend.target), connect_repository(backend.target))
    async with first, second:
        await first.add_export(_export("r-1"))
        assert await second.get_export("r-1") is not None
    assert await backend.schema_version() == len(MIGRATIONS)


def test_split_statements_respects_strings_and_trigger_bodies() -> None:
    script = """
    CREATE TABLE t (x TEXT);
    -- a comment; with a semicolon
    INSERT INTO t VALUES ('a;b');
    CREATE TRIGGER tr AFTER INSERT ON t BEGIN
        UPDATE t SET x = x || ';';
    END;
    """
    statements = split_statements(script)
    # The comment runs to the end of its line, so its ";" ends nothing; it rides with the INSERT.
    assert len(statements) == 3
    assert statements[1].endswith("INSERT INTO t VALUES ('a;b');")
    assert statements[2].startswith("CREATE TRIGGER")
    assert statements[2].endswith("END;")
    with pytest.raises(ValueError, match="incomplete"):
        split_statements("CREATE TABLE t (x TEXT); INSERT INTO t VALUES ('open")


async def test_newer_database_refuses_to_open(backend: Backend) -> None:
    async with open_repository(backend.target):
        pass
    newer = len(MIGRATIONS) + 5
    await backend.set_schema_version(newer)
    with pytest.raises(SchemaVersionError, match=rf"schema version {newer}.*upgrade nemobot") as info:
        async with open_repository(backend.target):
            pass
    assert (info.value.found, info.value.known) == (newer, len(MIGRATIONS))
    assert await backend.schema_version() == newer
    # The message names the database, but never with the password of a PostgreSQL URL.
    assert "not-logged" not in str(info.value)


async def test_nemobot_db_picks_the_database(backend: Backend) -> None:
    async with open_repository(backend.target) as repo:
        expected = {"sqlite": Repository, "postgres": PostgresRepository}[backend.name]
        assert type(repo) is expected


# -- lifecycle ---------------------------------------------------------------------------------------


async def test_reopening_keeps_data(backend: Backend) -> None:
    async with open_repository(backend.target) as repo:
        await repo.save_identity(IdentityRecord(key="shared", client_id="c-1", token="secret"))
        await repo.save_chat_session(ChatSessionRecord(chat_key="tg:1", identity_key="shared", session_id="s"))
        await repo.add_export(_export("r-1"))
        await repo.mark_processed("tg:1", 7)
    async with open_repository(backend.target) as repo:
        identity = await repo.get_identity("shared")
        assert identity is not None
        assert identity.token == "secret"
        assert await repo.get_chat_session("tg:1") is not None
        assert await repo.get_export("r-1") is not None
        assert await repo.mark_processed("tg:1", 7) is False


async def test_closed_repository_refuses_work_and_closes_twice(backend: Backend) -> None:
    repo = await connect_repository(backend.target)
    assert not repo.closed
    await repo.close()
    await repo.close()
    assert repo.closed
    with pytest.raises(RepositoryClosedError):
        await repo.get_identity("shared")


async def test_repository_is_its_own_context_manager(backend: Backend) -> None:
    async with await connect_repository(backend.target) as repo:
        await repo.mark_processed("tg:1", 1)
    assert repo.closed


# -- identities --------------------------------------------------------------------------------------


async def test_identity_round_trip_and_upsert(repo: Store, clock: FakeClock) -> None:
    assert await repo.get_identity("tg:1") is None
    expires = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    saved = await repo.save_identity(IdentityRecord(key="tg:1", client_id="c-1", token="tok-1", expires_at=expires))
    assert saved == IdentityRecord(key="tg:1", client_id="c-1", token="tok-1", expires_at=expires, updated_at=T0)
    assert await repo.get_identity("tg:1") == saved

    clock.advance(timedelta(minutes=5))
    updated = await repo.save_identity(replace(saved, token=None, expires_at=None))
    assert updated.token is None
    assert updated.expires_at is None
    assert updated.updated_at == T0 + timedelta(minutes=5)
    assert await repo.get_identity("tg:1") == updated


async def test_identity_repr_hides_the_token() -> None:
    record = IdentityRecord(key="shared", client_id="c", token="very-secret-token")
    assert "very-secret-token" not in repr(record)


async def test_timestamps_in_other_zones_come_back_as_utc(repo: Store) -> None:
    plus8 = datetime(2030, 1, 1, 20, 0, tzinfo=UTC).astimezone(datetime.now(UTC).astimezone().tzinfo)
    saved = await repo.save_identity(IdentityRecord(key="k", client_id="c", expires_at=plus8))
    assert saved.expires_at == plus8
    assert saved.expires_at is not None
    assert saved.expires_at.tzinfo == UTC


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        IdentityRecord(key="k", client_id="c", expires_at=datetime(2030, 1, 1))


# -- chat sessions -----------------------------------------------------------------------------------


async def test_chat_session_round_trip(repo: Store, clock: FakeClock) -> None:
    draft = {"tracks": [{"clip": "a.mp4", "in": 0.5}], "title": "旅行 vlog"}
    record = ChatSessionRecord(
        chat_key="tg:-100:u:42",
        identity_key="shared",
        session_id="s-1",
        task_id="t-1",
        language="zh",
        last_draft=draft,
        created_at=T0 - timedelta(days=1),
    )
    saved = await repo.save_chat_session(record)
    assert saved == replace(record, updated_at=T0)
    assert await repo.get_chat_session("tg:-100:u:42") == saved
    assert await repo.get_chat_session("tg:-100:u:43") is None


async def test_chat_session_upsert_keeps_created_at_of_the_same_session(repo: Store, clock: FakeClock) -> None:
    first = await repo.save_chat_session(
        ChatSessionRecord(chat_key="tg:1", identity_key="tg:1", session_id="s-1", created_at=T0)
    )
    clock.advance(timedelta(hours=1))
    same = await repo.save_chat_session(replace(first, task_id="t-2", created_at=clock.now))
    assert same.created_at == T0
    assert same.task_id == "t-2"
    assert same.updated_at == clock.now

    new = await repo.save_chat_session(replace(same, session_id="s-2", created_at=clock.now))
    assert new.session_id == "s-2"
    assert new.created_at == clock.now


async def test_update_last_draft_and_delete(repo: Store, clock: FakeClock) -> None:
    assert await repo.update_last_draft("tg:1", {"a": 1}) is False
    await repo.save_chat_session(ChatSessionRecord(chat_key="tg:1", identity_key="tg:1", session_id="s"))
    clock.advance(timedelta(seconds=3))
    assert await repo.update_last_draft("tg:1", {"clips": [1, 2, 3]}) is True
    stored = await repo.get_chat_session("tg:1")
    assert stored is not None
    assert stored.last_draft == {"clips": [1, 2, 3]}
    assert stored.updated_at == clock.now
    assert await repo.update_last_draft("tg:1", None) is True
    stored = await repo.get_chat_session("tg:1")
    assert stored is not None
    assert stored.last_draft is None

    assert await repo.delete_chat_session("tg:1") is True
    assert await repo.delete_chat_session("tg:1") is False
    assert await repo.get_chat_session("tg:1") is None


# -- exports -----------------------------------------------------------------------------------------


async def test_export_round_trip(repo: Store) -> None:
    record = _export("r-1", target={"chat_id": -100, "reply_to": 55, "thread": None}, language="zh")
    saved = await repo.add_export(record)
    assert saved == replace(record, updated_at=T0)
    assert saved.status == "submitted"
    assert saved.progress == 0.0
    assert saved.delivered is False
    assert await repo.get_export("r-1") == saved
    assert await repo.get_export("r-2") is None


async def test_add_export_twice_is_an_error(repo: Store) -> None:
    await repo.add_export(_export("r-1"))
    with pytest.raises(DuplicateExportError, match="r-1"):
        await repo.add_export(_export("r-1", chat_key="tg:2"))
    stored = await repo.get_export("r-1")
    assert stored is not None
    assert stored.chat_key == "tg:1"


async def test_update_export_changes_only_given_fields(repo: Store, clock: FakeClock) -> None:
    await repo.add_export(_export("r-1"))
    clock.advance(timedelta(seconds=30))
    updated = await repo.update_export("r-1", status="processing", progress=42.5)
    assert updated is not None
    assert (updated.status, updated.progress, updated.url, updated.error) == ("processing", 42.5, None, None)
    assert updated.updated_at == clock.now
    assert updated.created_at == T0

    updated = await repo.update_export("r-1", status="completed", progress=100, url="https://x/v.mp4")
    assert updated is not None
    assert updated.url == "https://x/v.mp4"
    updated = await repo.update_export("r-1", error="upload to chat failed")
    assert updated is not None
    assert (updated.status, updated.progress, updated.url) == ("completed", 100.0, "https://x/v.mp4")
    assert updated.error == "upload to chat failed"
    # None is a value, not "not given": it clears the field.
    updated = await repo.update_export("r-1", url=None)
    assert updated is not None
    assert updated.url is None
    assert updated.error == "upload to chat failed"
    assert await repo.get_export("r-1") == updated

    assert await repo.update_export("r-unknown", status="failed") is None


async def test_export_values_are_checked(repo: Store) -> None:
    await repo.add_export(_export("r-1"))
    with pytest.raises(ValueError, match="unknown export status"):
        await repo.update_export("r-1", status="done")  # type: ignore[arg-type]
    for bad in (-1.0, 100.5, float("nan")):
        with pytest.raises(ValueError, match="0-100"):
            await repo.update_export("r-1", progress=bad)
    with pytest.raises(ValueError, match="unknown export status"):
        _export("r-2", status="rendering")


async def test_unfinished_exports_survive_a_restart(backend: Backend) -> None:
    minute = timedelta(minutes=1)
    async with open_repository(backend.target) as repo:
        await repo.add_export(_export("tg-late", "tg:1", created_at=T0 + 3 * minute))
        await repo.add_export(_export("tg-early", "tg:2", created_at=T0 + minute))
        await repo.add_export(_export("dc-mid", "dc:9", created_at=T0 + 2 * minute))
        for render_id, status in [("tg-done", "completed"), ("tg-failed", "failed"), ("tg-cancel", "cancelled")]:
            await repo.add_export(_export(render_id, "tg:1"))
            await repo.update_export(render_id, status=status)  # type: ignore[arg-type]
        await repo.add_export(_export("tg-completed-undelivered", "tg:3", created_at=T0 + 4 * minute))
        await repo.update_export("tg-completed-undelivered", status="completed", url="https://x/1.mp4")
        await repo.update_export("tg-early", status="processing", progress=10)
        assert await repo.claim_delivery("tg-done", "run-1")
        assert await repo.confirm_delivery("tg-done", "run-1")

    async with open_repository(backend.target) as repo:
        owed = await repo.unfinished_exports()
        assert [e.render_id for e in owed] == ["tg-early", "dc-mid", "tg-late", "tg-completed-undelivered"]
        assert owed[0].status == "processing"
        assert owed[0].progress == 10.0
        telegram = await repo.unfinished_exports("tg:")
        assert [e.render_id for e in telegram] == ["tg-early", "tg-late", "tg-completed-undelivered"]
        assert [e.render_id for e in await repo.unfinished_exports("dc:")] == ["dc-mid"]


async def test_unfinished_exports_prefix_is_literal(repo: Store) -> None:
    await repo.add_export(_export("a", "tg:1"))
    await repo.add_export(_export("b", "TG:1"))
    await repo.add_export(_export("c", "tgx1"))
    assert [e.render_id for e in await repo.unfinished_exports("tg:")] == ["a"]
    assert [e.render_id for e in await repo.unfinished_exports("t_:")] == []
    assert [e.render_id for e in await repo.unfinished_exports("%")] == []


async def test_claim_delivery_is_true_exactly_once_under_concurrency(repo: Store) -> None:
    await repo.add_export(_export("r-1"))
    results = await asyncio.gather(*(repo.claim_delivery("r-1", f"task-{i}") for i in range(50)))
    assert results.count(True) == 1
    stored = await repo.get_export("r-1")
    assert stored is not None
    assert stored.delivered is False  # claimed, not delivered: still owed until confirmed
    assert stored.delivery_owner == f"task-{results.index(True)}"
    assert stored.delivery_claimed_at == T0
    assert await repo.claim_delivery("r-unknown", "task-0") is False


async def test_claim_delivery_once_across_two_connections(backend: Backend) -> None:
    # Two repositories on one database stand in for two bot processes racing to deliver.
    async with open_repository(backend.target) as first, open_repository(backend.target) as second:
        await first.add_export(_export("r-1"))
        claims = [repo.claim_delivery("r-1", name) for _ in range(20) for repo, name in ((first, "a"), (second, "b"))]
        results = await asyncio.gather(*claims)
        assert results.count(True) == 1


async def test_only_a_confirmed_delivery_is_delivered(repo: Store) -> None:
    await repo.add_export(_export("r-1"))
    assert await repo.confirm_delivery("r-1", "run-1") is False  # nothing claimed yet
    assert await repo.claim_delivery("r-1", "run-1") is True
    assert [e.render_id for e in await repo.unfinished_exports()] == ["r-1"]
    assert await repo.confirm_delivery("r-1", "run-2") is False  # not the owner of the claim
    assert await repo.confirm_delivery("r-1", "run-1") is True
    stored = await repo.get_export("r-1")
    assert stored is not None
    assert stored.delivered is True
    assert await repo.unfinished_exports() == []
    assert await repo.claim_delivery("r-1", "run-2") is False
    assert await repo.confirm_delivery("r-1", "run-1") is False  # once


async def test_release_delivery_allows_another_claim(repo: Store) -> None:
    await repo.add_export(_export("r-1"))
    assert await repo.release_delivery("r-1", "run-1") is False
    assert await repo.claim_delivery("r-1", "run-1") is True
    assert await repo.release_delivery("r-1", "run-2") is False  # only the owner releases
    assert await repo.claim_delivery("r-1", "run-2") is False
    assert await repo.release_delivery("r-1", "run-1") is True
    assert [e.render_id for e in await repo.unfinished_exports()] == ["r-1"]
    assert await repo.claim_delivery("r-1", "run-2") is True


async def test_a_restart_releases_the_claims_of_the_previous_run(backend: Backend, clock: FakeClock) -> None:
    async with open_repository(backend.target, clock=clock) as repo:
        for render_id in ("claimed", "delivered", "free"):
            await repo.add_export(_export(render_id))
        assert await repo.claim_delivery("claimed", "run-1")
        assert await repo.claim_delivery("delivered", "run-1")
        assert await repo.confirm_delivery("delivered", "run-1")
        # The process dies here: "claimed" was being downloaded or sent, never confirmed.
    async with open_repository(backend.target, clock=clock) as repo:
        assert await repo.claim_delivery("claimed", "run-2") is False  # still held by the dead run
        assert [e.render_id for e in await repo.unfinished_exports()] == ["claimed", "free"]
        assert await repo.release_stale_claims("run-2") == 1
        assert await repo.release_stale_claims("run-2") == 0
        stored = await repo.get_export("claimed")
        assert stored is not None
        assert (stored.delivery_owner, stored.delivery_claimed_at, stored.delivered) == (None, None, False)
        assert await repo.claim_delivery("claimed", "run-2") is True
        assert await repo.release_stale_claims("run-2") == 0  # its own claims are kept
        delivered = await repo.get_export("delivered")
        assert delivered is not None
        assert delivered.delivered is True


async def test_claims_can_be_leased_for_several_processes(repo: Store, clock: FakeClock) -> None:
    # The design a multi-process version uses: a claim older than the lease is taken over, and only
    # those are released; the holder of a live claim keeps it.
    await repo.add_export(_export("r-1"))
    await repo.add_export(_export("r-2"))
    assert await repo.claim_delivery("r-1", "a", lease=timedelta(minutes=10))
    assert await repo.claim_delivery("r-2", "a", lease=timedelta(minutes=10))
    clock.advance(timedelta(minutes=5))
    assert await repo.claim_delivery("r-1", "b", lease=timedelta(minutes=10)) is False
    assert await repo.release_stale_claims("b", older_than=timedelta(minutes=10)) == 0
    clock.advance(timedelta(minutes=6))
    assert await repo.claim_delivery("r-1", "b", lease=timedelta(minutes=10)) is True
    assert await repo.confirm_delivery("r-1", "a") is False  # "a" lost it
    assert await repo.release_stale_claims("b", older_than=timedelta(minutes=10)) == 1  # r-2
    assert await repo.confirm_delivery("r-1", "b") is True


async def test_a_renewed_claim_outlives_its_first_lease(repo: Store, clock: FakeClock) -> None:
    # A delivery that takes longer than the lease renews its claim as it goes: nobody takes a live one over.
    lease = timedelta(minutes=10)
    await repo.add_export(_export("r-1"))
    assert await repo.claim_delivery("r-1", "a", lease=lease)
    clock.advance(timedelta(minutes=8))
    assert await repo.renew_delivery("r-1", "a") is True
    assert await repo.renew_delivery("r-1", "b") is False  # only the owner renews
    clock.advance(timedelta(minutes=8))
    assert await repo.claim_delivery("r-1", "b", lease=lease) is False
    clock.advance(timedelta(minutes=3))
    assert await repo.claim_delivery("r-1", "b", lease=lease) is True
    assert await repo.renew_delivery("r-1", "a") is False  # "a" lost it
    assert await repo.confirm_delivery("r-1", "b") is True
    assert await repo.renew_delivery("r-1", "b") is False  # delivered: nothing left to hold


async def test_a_delivered_export_of_an_older_database_stays_delivered(backend: Backend) -> None:
    assert await backend.migrate(MIGRATIONS[:2]) == 2
    for render_id, delivered in (("sent", True), ("owed", False)):
        await backend.execute(
            "INSERT INTO exports (render_id, chat_key, session_id, identity_key, status, delivered, language, "
            "created_at, updated_at) VALUES (?, 'tg:1', 's', 'tg:1', 'completed', ?, 'en', ?, ?)",
            render_id,
            delivered,
            T0.isoformat(),
            T0.isoformat(),
        )
    async with open_repository(backend.target) as repo:
        assert [e.render_id for e in await repo.unfinished_exports()] == ["owed"]
        sent = await repo.get_export("sent")
        assert sent is not None
        assert (sent.delivered, sent.delivery_owner) == (True, None)
        assert await repo.claim_delivery("sent", "run-1") is False
        assert await repo.claim_delivery("owed", "run-1") is True


async def test_exports_for_chat_newest_first(repo: Store) -> None:
    for i in range(5):
        await repo.add_export(_export(f"r-{i}", "tg:1", created_at=T0 + timedelta(minutes=i)))
    await repo.add_export(_export("other", "tg:2"))
    latest = await repo.exports_for_chat("tg:1", limit=3)
    assert [e.render_id for e in latest] == ["r-4", "r-3", "r-2"]
    assert len(await repo.exports_for_chat("tg:1")) == 5
    assert await repo.exports_for_chat("tg:9") == []


# -- processed messages ------------------------------------------------------------------------------


async def test_mark_processed_is_true_only_the_first_time(repo: Store) -> None:
    assert await repo.mark_processed("tg:1", 100) is True
    assert await repo.mark_processed("tg:1", 100) is False
    assert await repo.mark_processed("tg:1", "100") is False  # the same id, as text
    assert await repo.mark_processed("tg:2", 100) is True
    assert await repo.mark_processed("tg:1", 101) is True


async def test_mark_processed_concurrent_redeliveries(repo: Store) -> None:
    results = await asyncio.gather(*(repo.mark_processed("dc:5", 9) for _ in range(30)))
    assert results.count(True) == 1


async def test_prune_processed(repo: Store, clock: FakeClock) -> None:
    await repo.mark_processed("tg:1", 1)
    clock.advance(timedelta(hours=2))
    await repo.mark_processed("tg:1", 2)
    clock.advance(timedelta(hours=2))
    assert await repo.prune_processed(timedelta(hours=3)) == 1
    assert await repo.mark_processed("tg:1", 1) is True  # forgotten, so new again
    assert await repo.mark_processed("tg:1", 2) is False
    assert await repo.prune_processed(timedelta(days=1)) == 0


# -- accepted platform updates ----------------------------------------------------------------------


async def test_accept_update_is_true_only_the_first_time(repo: Store) -> None:
    assert await repo.accept_update("123", 500) is True
    assert await repo.accept_update("123", 500) is False
    assert await repo.accept_update(123, 500) is False  # the same bot, its id as a number
    assert await repo.accept_update("456", 500) is True  # another bot's update 500
    # Update ids of a busy bot grow past 2**31: PostgreSQL keeps them as bigint.
    assert await repo.accept_update("123", 2**40) is True


async def test_accept_update_once_across_two_connections(backend: Backend) -> None:
    # Two repositories on one database stand in for two webhook receivers behind a load balancer, each handed
    # the same update (Telegram's retry, or the balancer's) at once.
    async with open_repository(backend.target) as first, open_repository(backend.target) as second:
        for update_id in range(1, 6):
            accepts = [repo.accept_update("77", update_id) for _ in range(10) for repo in (first, second)]
            results = await asyncio.gather(*accepts)
            assert results.count(True) == 1, (update_id, results)


async def test_prune_accepted_updates(repo: Store, clock: FakeClock) -> None:
    await repo.accept_update("1", 10)
    clock.advance(timedelta(hours=30))
    await repo.accept_update("1", 11)
    clock.advance(timedelta(hours=30))
    assert await repo.prune_accepted_updates(timedelta(hours=48)) == 1
    assert await repo.accept_update("1", 10) is True  # forgotten, so new again
    assert await repo.accept_update("1", 11) is False
    with pytest.raises(ValueError, match="negative"):
        await repo.prune_accepted_updates(timedelta(seconds=-1))


# -- layering ----------------------------------------------------------------------------------------


def test_storage_imports_nothing_above_it() -> None:
    forbidden = {"bot", "adapters", "localnemo"}
    for source in STORAGE_DIR.glob("*.py"):
        tree = ast.parse(source.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{source.name} imports {name}"
