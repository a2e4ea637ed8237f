"""localnemo's store on disk: every record that must survive a restart, in one SQLite file of the data folder.

The store in memory (``localnemo.state``) stays the fast path; this file is its copy. A record is marked
when it changes; marks are gathered and written together by one worker thread (one transaction per batch,
WAL with ``synchronous=NORMAL``: a commit survives the process being killed; only a power cut may lose
the last moments), so a record changed ten times while a write is under way is serialised and written
once. ``sync()`` waits until everything marked so far is on disk: the routes that hand something out a
client will come back for (a token, an export job) await it before they answer. A write that fails is not
counted as written: its records are marked again for the next write, and ``sync()`` raises ``StoreError``
(the request answers 503, "try again").

The file and its journal are created owner-only (0600). One table: ``records(kind, key, body)`` with the
record's JSON, so a new field needs no migration.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STATE_FILE = "state.sqlite3"

Snapshot = Callable[[], dict[str, Any]]


class StoreError(Exception):
    """What ``sync()`` raises when the changes it waits for could not be written (they are tried again with
    the next change): the request that needed them answers "try again" rather than losing them silently."""

_Row = tuple[str, str, str | None]  # kind, key, JSON body (None: delete)


def _create_private(path: Path) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


class StateStore:
    """The records of one data folder; ``load()`` once at start, then ``mark``/``forget`` on each change."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / STATE_FILE
        _create_private(self.path)
        # Used by the one worker thread only, after load() (which runs before any write).
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS records (kind TEXT NOT NULL, key TEXT NOT NULL, body TEXT NOT NULL, "
            "PRIMARY KEY (kind, key)) WITHOUT ROWID"
        )
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="localnemo-store")
        self._dirty: dict[tuple[str, str], Snapshot | None] = {}
        self._marked = 0  # marks so far
        self._written = 0  # marks written to disk
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._closed = False

    def load(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Every stored record: kind → key → body (blocking; at start only)."""
        records: dict[str, dict[str, dict[str, Any]]] = {}
        for kind, key, body in self._db.execute("SELECT kind, key, body FROM records"):
            try:
                value = json.loads(body)
            except ValueError:
                log.warning("localnemo.store.unreadable kind=%s", kind)
                continue
            if isinstance(value, dict):
                records.setdefault(kind, {})[key] = value
        return records

    def mark(self, kind: str, key: str, snapshot: Snapshot) -> None:
        """The record changed: ``snapshot()`` (called on the event loop, when the batch is written) gives
        its JSON body."""
        self._change(kind, key, snapshot)

    def forget(self, kind: str, key: str) -> None:
        self._change(kind, key, None)

    def _change(self, kind: str, key: str, snapshot: Snapshot | None) -> None:
        if self._closed:
            return
        self._dirty[(kind, key)] = snapshot
        self._marked += 1
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            # No event loop (a script building a state by hand): write now.
            self._write(self._take())
            return
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._write_all())

    async def sync(self) -> None:
        """Return once every change marked before this call is on disk."""
        target = self._marked
        if self._written >= target or self._closed:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, waiter))
        if self._writer is None or self._writer.done():
            # The last write failed and nothing was marked since: try again now.
            self._writer = asyncio.ensure_future(self._write_all())
        await asyncio.shield(waiter)

    def _take(self) -> tuple[int, list[_Row], dict[tuple[str, str], Snapshot | None], bool]:
        """The marks so far, their rows, the batch they came from (to put back if the write fails), and
        whether every snapshot could be taken."""
        batch, self._dirty = self._dirty, {}
        rows: list[_Row] = []
        complete = True
        for (kind, key), snapshot in batch.items():
            body = None
            if snapshot is not None:
                try:
                    body = json.dumps(snapshot(), separators=(",", ":"), ensure_ascii=False)
                except Exception:
                    # Not put back: the same snapshot would fail again at every write.
                    log.exception("localnemo.store.snapshot_failed kind=%s", kind)
                    complete = False
                    continue
            rows.append((kind, key, body))
        return self._marked, rows, batch, complete

    def _write(self, taken: tuple[int, list[_Row], dict[tuple[str, str], Snapshot | None], bool]) -> bool:
        """Write one batch; whether SQLite took it."""
        upto, rows = taken[0], taken[1]
        try:
            with self._db:
                self._db.execute("BEGIN")
                for kind, key, body in rows:
                    if body is None:
                        self._db.execute("DELETE FROM records WHERE kind = ? AND key = ?", (kind, key))
                    else:
                        self._db.execute(
                            "INSERT INTO records (kind, key, body) VALUES (?, ?, ?) "
                            "ON CONFLICT (kind, key) DO UPDATE SET body = excluded.body",
                            (kind, key, body),
                        )
        except sqlite3.Error:
            log.exception("localnemo.store.write_failed records=%s", len(rows))
            return False
        self._written = max(self._written, upto)
        return True

    async def _write_all(self) -> None:
        loop = asyncio.get_running_loop()
        while self._dirty:
            taken = self._take()
            if not await loop.run_in_executor(self._executor, self._write, taken):
                self._failed(taken[2])
                return
            complete = taken[3]
            still: list[tuple[int, asyncio.Future[None]]] = []
            for target, waiter in self._waiters:
                if target <= self._written:
                    if waiter.done():
                        pass
                    elif complete:
                        waiter.set_result(None)
                    else:
                        # A record of this batch could not be serialised: it is lost, and the waiter hears so.
                        waiter.set_exception(StoreError("the server could not save this change"))
                else:
                    still.append((target, waiter))
            self._waiters = still

    def _failed(self, batch: dict[tuple[str, str], Snapshot | None]) -> None:
        """A batch was not written: its records are marked again (unless changed since, which marked them
        anew), and every waiter is told; the next change or ``sync()`` tries again."""
        for record, snapshot in batch.items():
            self._dirty.setdefault(record, snapshot)
        waiters, self._waiters = self._waiters, []
        for _, waiter in waiters:
            if not waiter.done():
                waiter.set_exception(StoreError("the server could not save this change"))

    async def close(self) -> None:
        """Write what is left, then close the file."""
        if self._closed:
            return
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._writer)
        if self._dirty:
            await self._write_all()
        self._closed = True
        for _, waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._db.close)
        self._executor.shutdown(wait=True)
