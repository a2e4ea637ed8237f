"""Renders through a PostgreSQL job queue: with ``LOCALNEMO_QUEUE_DB`` set, the server defers each export as a
Procrastinate job and ``nemobot render-worker`` processes (any number, on any machine that mounts the shared
folder) render them. Unset, none of this is loaded and the server renders as before (localnemo.jobs).

The job (task ``localnemo.render``, queue ``renders``) carries the result's token, the draft, its sources as
names in the shared folder (``media/<sha256>.<ext>``: named by content, so that a file shared twice is the
same file and never a different one under the same name) and the result's base name. Its lock is the token:
two jobs of one render (a restarted server defers its unfinished renders again) never run at once.

What the server shows comes from one row per render in ``localnemo_render_results``, which the workers write
(status, progress, the result) and announce with NOTIFY; the server reads it on each announcement and at
least every second, so that status polls and ``?wait=`` work as they do without workers. Jobs are
idempotent: a render whose row says it is finished is not rendered again; each attempt writes its own file
(``<token>-<attempt>.mp4``, through a private partial name, localnemo.render) and only the attempt the row
names as the current one may finish it, so a late or cancelled attempt removes its own file and nothing else.

Speech is recognised there too (task ``localnemo.transcribe``, same queue, ahead of renders: someone is waiting
for the reply to an edit): one row per clip's content and language in ``localnemo_transcripts``, so a clip is
transcribed once whoever asks. A transcription that no worker has taken after ``TRANSCRIBE_WAIT_SECONDS`` (every
worker busy rendering, or none running) is taken back and done by the server itself.

A worker killed with SIGKILL stops sending its heartbeat; the other workers find its job stalled after
``stalled_seconds`` and put it back in the queue (Procrastinate 3's retry of stalled jobs, by heartbeat:
docs/howto/production/retry_stalled_jobs.md). Its FFmpeg dies with it (localnemo.processes). SIGTERM (or
Ctrl-C) stops a worker once its current renders are done.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import psycopg
from procrastinate import App, JobContext, PsycopgConnector
from procrastinate.exceptions import AlreadyEnqueued
from procrastinate.schema import SchemaManager
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from localnemo.config import LocalNemoConfig
from localnemo.jobs import Changes, span_words
from localnemo.render import Renderer, RenderError, RenderOutput
from localnemo.speech import (
    EngineName,
    LanguageNotAvailable,
    Progress,
    Speech,
    SpeechError,
    Word,
    words_from_json,
    words_to_json,
)
from localnemo.timeline import Draft

log = logging.getLogger(__name__)

QUEUE: Final = "renders"
TASK: Final = "localnemo.render"
TRANSCRIBE_TASK: Final = "localnemo.transcribe"
# Workers fetch by priority first: a transcription someone's edit waits for goes before queued renders.
_TRANSCRIBE_PRIORITY: Final = 10
#: How long the server waits for a worker to take a transcription before it does it itself.
TRANSCRIBE_WAIT_SECONDS = 30.0
CHANNEL: Final = "localnemo_renders"
_SCHEMA_LOCK: Final = 0x6C6E7271  # "lnrq": one process at a time creates the tables
_MEDIA_NAME_RE = re.compile(r"^media/[0-9a-f]{64}(\.[a-z0-9]{1,10})?$")
# The server looks at a render's row at least this often, whether or not a change was announced.
_RECHECK_SECONDS = 1.0
# A worker writes its render's progress at most this often.
_PROGRESS_SECONDS = 0.5

_RESULTS_TABLE: Final = """
CREATE TABLE IF NOT EXISTS localnemo_render_results (
    token text PRIMARY KEY,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'processing', 'completed', 'failed')),
    progress integer NOT NULL DEFAULT 0,
    attempts integer NOT NULL DEFAULT 0,
    worker text,
    output text,
    duration double precision,
    size bigint,
    error text,
    updated_at timestamptz NOT NULL DEFAULT now()
)"""


_TRANSCRIPTS_TABLE: Final = """
CREATE TABLE IF NOT EXISTS localnemo_transcripts (
    key text PRIMARY KEY,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'processing', 'completed', 'failed')),
    progress integer NOT NULL DEFAULT 0,
    engine text,
    words jsonb,
    language_missing boolean NOT NULL DEFAULT false,
    error text,
    worker text,
    updated_at timestamptz NOT NULL DEFAULT now()
)"""


@dataclass(frozen=True)
class RenderRow:
    """What the workers say of one render."""

    token: str
    status: str
    progress: int
    attempts: int
    worker: str | None
    output: str | None
    duration: float | None
    size: int | None
    error: str | None

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "failed")


def describe_url(url: str) -> str:
    """The URL without its password, for logs."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://(unparsable URL)"
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{parts.get('host') or ''}{port}/{parts.get('dbname') or ''}"


def _connector(url: str) -> PsycopgConnector:
    # A worker holds one connection for LISTEN and uses a few more (fetch, heartbeat, its rows).
    return PsycopgConnector(conninfo=url, min_size=1, max_size=6)


async def ensure_schema(url: str) -> None:
    """Procrastinate's tables and the results table, created by whichever process comes first."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        found = await (await conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL")).fetchone()
        if found is None or not found[0]:
            await conn.execute(SchemaManager.get_schema())
            log.info("localnemo.queue.schema_created db=%s", describe_url(url))
        await conn.execute(_RESULTS_TABLE)
        await conn.execute(_TRANSCRIPTS_TABLE)


def share_file(path: Path, shared_dir: Path) -> str:
    """The name of ``path``'s content in the shared folder (``media/<sha256><suffix>``), put there if missing:
    a hard link where the folders share a file system, else a copy, renamed into place whole."""
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
    suffix = path.suffix.lower() if re.fullmatch(r"\.[a-z0-9]{1,10}", path.suffix.lower()) else ""
    name = f"media/{digest.hexdigest()}{suffix}"
    target = shared_dir / name
    if target.is_file():
        return name
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = target.parent / f".{digest.hexdigest()}.{secrets.token_hex(4)}.partial"
    try:
        try:
            os.link(path, partial)
        except OSError:
            shutil.copyfile(path, partial)
        # Another server sharing the same content meanwhile wrote the same bytes: either copy will do.
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return name


def _touched(path: Path) -> bool:
    """Give the file the time of now; False when it is not there."""
    try:
        os.utime(path)
    except OSError:
        return False
    return path.is_file()


def _prune_media(shared_dir: Path, needed: set[str], before: float) -> int:
    removed = 0
    try:
        entries = list((shared_dir / "media").iterdir())
    except OSError:
        return 0
    for entry in entries:
        name = f"media/{entry.name}"
        try:
            # A partial file (".…partial") is another server's copy on its way in: never touched here.
            if entry.name.startswith(".") or name in needed or entry.stat().st_mtime >= before:
                continue
            entry.unlink()
            removed += 1
        except OSError:
            continue
    return removed


def _row(record: dict[str, Any] | None) -> RenderRow | None:
    return None if record is None else RenderRow(**record)


class RenderQueue:
    """The server's side: shares sources, defers renders, and reads what the workers wrote."""

    def __init__(self, url: str, shared_dir: Path) -> None:
        self.url = url
        self.shared_dir = shared_dir
        self.app = App(connector=_connector(url))
        self.changes = Changes()
        self._listener: asyncio.Task[None] | None = None
        # (path, size, mtime) → its name in the shared folder: a clip exported again is not hashed again.
        self._shared: dict[tuple[str, int, int], str] = {}

    async def on_startup(self, _app: object) -> None:
        await ensure_schema(self.url)
        await self.app.open_async()
        self._listener = asyncio.create_task(self._listen(), name="localnemo-queue-listen")
        log.info("localnemo.queue.open db=%s shared_dir=%s", describe_url(self.url), self.shared_dir)

    async def on_cleanup(self, _app: object) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        await self.app.close_async()

    async def _listen(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    # Anything announced while nobody listened is read now.
                    self.changes.notify()
                    async for _ in conn.notifies():
                        self.changes.notify()
            except psycopg.Error as exc:
                # Followers still look every second meanwhile.
                log.warning("localnemo.queue.listen_lost error=%s", type(exc).__name__)
                await asyncio.sleep(_RECHECK_SECONDS)

    def ticket(self) -> asyncio.Event:
        """Set by the next announced change; take it *before* reading a row."""
        return self.changes.ticket()

    async def share(self, path: Path) -> str:
        status = await asyncio.to_thread(path.stat)
        key = (str(path), status.st_size, status.st_mtime_ns)
        name = self._shared.get(key)
        # Used now: its time is new, so pruning (which spares what was used lately) leaves it for the render.
        if name is None or not await asyncio.to_thread(_touched, self.shared_dir / name):
            name = self._shared[key] = await asyncio.to_thread(share_file, path, self.shared_dir)
            await asyncio.to_thread(_touched, self.shared_dir / name)
        return name

    async def prune_media(self, unused_for_seconds: float) -> int:
        """Remove the shared sources that no waiting or running render names and that were not shared for
        ``unused_for_seconds``: the shared folder holds every clip ever exported otherwise. How many."""
        async with self.app.connector.pool.connection() as conn:  # type: ignore[attr-defined]
            cursor = await conn.execute(
                "SELECT DISTINCT value FROM procrastinate_jobs, jsonb_each_text(args->'sources') "
                "WHERE task_name = %s AND status IN ('todo', 'doing') "
                "UNION SELECT args->>'source' FROM procrastinate_jobs WHERE task_name = %s "
                "AND status IN ('todo', 'doing')",
                (TASK, TRANSCRIBE_TASK),
            )
            needed = {str(found[0]) for found in await cursor.fetchall()}
        removed = await asyncio.to_thread(_prune_media, self.shared_dir, needed, time.time() - unused_for_seconds)
        if removed:
            log.info("localnemo.queue.pruned_media files=%d", removed)
        return removed

    async def submit(self, token: str, draft: dict[str, Any], sources: dict[str, str]) -> None:
        """Queue the render unless it is queued, running or finished already (a restarted server asks again)."""
        async with self.app.connector.pool.connection() as conn:  # type: ignore[attr-defined]
            await conn.execute(
                "INSERT INTO localnemo_render_results (token) VALUES (%s) ON CONFLICT (token) DO NOTHING", (token,)
            )
            found = await (
                await conn.execute("SELECT status FROM localnemo_render_results WHERE token = %s", (token,))
            ).fetchone()
        if found is not None and found[0] in ("completed", "failed"):
            return
        deferrer = self.app.configure_task(TASK, queue=QUEUE, lock=token, queueing_lock=token)
        try:
            await deferrer.defer_async(token=token, draft=draft, sources=dict[str, Any](sources), output=token)
        except AlreadyEnqueued:
            return
        log.info("localnemo.queue.deferred token_prefix=%s sources=%s", token[:6], len(sources))

    async def row(self, token: str) -> RenderRow | None:
        async with self.app.connector.pool.connection() as conn:  # type: ignore[attr-defined]
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(
                "SELECT token, status, progress, attempts, worker, output, duration, size, error "
                "FROM localnemo_render_results WHERE token = %s",
                (token,),
            )
            return _row(await cursor.fetchone())

    async def position(self, token: str) -> int | None:
        """1 for the next render a worker takes, None when this one is not waiting."""
        async with self.app.connector.pool.connection() as conn:  # type: ignore[attr-defined]
            # The order in which workers fetch jobs: priority, then age (procrastinate_fetch_job).
            found = await (
                await conn.execute(
                    "SELECT position FROM (SELECT queueing_lock, row_number() OVER (ORDER BY priority DESC, id) "
                    "AS position FROM procrastinate_jobs WHERE queue_name = %s AND status = 'todo') waiting "
                    "WHERE queueing_lock = %s",
                    (QUEUE, token),
                )
            ).fetchone()
        if found is None:
            return None
        return int(found[0])

    # -- speech -------------------------------------------------------------------------------------------

    async def ask_transcript(self, key: str, source: str, language: str) -> dict[str, Any]:
        """The transcript row of ``key`` (a shared source and a language), made if missing and asked again if it
        failed before; a job for the workers is queued unless one waits already or it is being done."""
        async with self.app.connector.pool.connection() as conn:  # type: ignore[attr-defined]
            await conn.execute(
                "INSERT INTO localnemo_transcripts (key) VALUES (%s) ON CONFLICT (key) DO UPDATE SET "
                "status = 'pending', progress = 0, error = NULL, language_missing = false, updated_at = now() "
                "WHERE localnemo_transcripts.status = 'failed'",
                (key,),
            )
        row = await self.transcript(key)
        assert row is not None
        if row["status"] == "pending":
            deferrer = self.app.configure_task(
                TRANSCRIBE_TASK, queue=QUEUE, queueing_lock=f"transcribe:{key}", priority=_TRANSCRIBE_PRIORITY
            )
            with contextlib.suppress(AlreadyEnqueued):
                await deferrer.defer_async(key=key, source=source, language=language)
                log.info("localnemo.queue.transcription_deferred language=%s", language)
        return row

    async def transcript(self, key: str) -> dict[str, Any] | None:
        async with self.app.connector.pool.connection() as conn:  # type: ignore[attr-defined]
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(
                "SELECT status, progress, engine, words, language_missing, error FROM localnemo_transcripts "
                "WHERE key = %s",
                (key,),
            )
            found: dict[str, Any] | None = await cursor.fetchone()
            return found

    async def take_back_transcription(self, key: str) -> bool:
        """Take the transcription's waiting job out of the queue, so that the server does it: True when taken
        (no worker has it, and none will)."""
        async with self.app.connector.pool.connection() as conn:  # type: ignore[attr-defined]
            cursor = await conn.execute(
                "SELECT id FROM procrastinate_jobs WHERE queueing_lock = %s AND status = 'todo'",
                (f"transcribe:{key}",),
            )
            ids = [int(found[0]) for found in await cursor.fetchall()]
        taken = False
        for job_id in ids:
            taken = await self.app.job_manager.cancel_job_by_id_async(job_id, delete_job=True) or taken
        return taken

    async def store_transcript(self, key: str, words: list[Word], engine: str, by: str) -> None:
        await _store_transcript(self.app, key, words, engine, by)

    async def cancel(self, token: str) -> None:
        """The render is not wanted any more: its row says so, and a worker rendering it stops."""
        async with self.app.connector.pool.connection() as conn:  # type: ignore[attr-defined]
            await conn.execute(
                "UPDATE localnemo_render_results SET status = 'failed', error = 'cancelled', updated_at = now() "
                "WHERE token = %s AND status IN ('pending', 'processing')",
                (token,),
            )
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(
                "SELECT id FROM procrastinate_jobs WHERE task_name = %s AND args->>'token' = %s "
                "AND status IN ('todo', 'doing')",
                (TASK, token),
            )
            ids = [int(found["id"]) for found in await cursor.fetchall()]
        for job_id in ids:
            await self.app.job_manager.cancel_job_by_id_async(job_id, abort=True)


async def _write_transcript(app: App, key: str, query: str, params: tuple[Any, ...]) -> bool:
    """Run an UPDATE … RETURNING on the transcript's row and announce it; True when a row changed."""
    async with app.connector.pool.connection() as conn, conn.transaction():  # type: ignore[attr-defined]
        found = await (await conn.execute(query, params)).fetchone()
        if found is not None:
            await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, key[:32]))
        return found is not None


async def _store_transcript(app: App, key: str, words: list[Word], engine: str, by: str) -> None:
    heard = json.dumps(words_to_json(words))
    await _write_transcript(
        app, key,
        "UPDATE localnemo_transcripts SET status = 'completed', progress = 100, words = %s::jsonb, engine = %s, "
        "worker = %s, updated_at = now() WHERE key = %s AND status <> 'completed' RETURNING key",
        (heard, engine, by, key),
    )  # fmt: skip


class QueuedSpeech(Speech):
    """The server's speech recogniser when render workers run: a clip's words are recognised by a worker (once
    per content and language, whoever asks), and by the server itself when no worker takes the job within
    ``wait_seconds``. Forced alignment of a script stays here: it is quick."""

    def __init__(self, queue: RenderQueue, preference: EngineName = "auto", whisper_model: str | None = None,
                 *, wait_seconds: float = TRANSCRIBE_WAIT_SECONDS) -> None:  # fmt: skip
        super().__init__(preference, whisper_model)
        self.queue = queue
        self.wait_seconds = wait_seconds

    async def recognise(
        self, audio_path: Path, language: str, progress: Progress | None = None
    ) -> tuple[list[Word], str]:
        source = await self.queue.share(audio_path)
        key = f"{source}:{language}"
        ticket = self.queue.ticket()
        row = await self.queue.ask_transcript(key, source, language)
        deadline = time.monotonic() + self.wait_seconds
        while True:
            if row["status"] == "completed":
                return words_from_json(row["words"]), str(row["engine"])
            if row["status"] == "failed":
                if row["language_missing"]:
                    raise LanguageNotAvailable(language)
                raise SpeechError(row["error"] or "speech recognition failed")
            if progress is not None and row["progress"]:
                progress(min(row["progress"], 100) / 100)
            if row["status"] == "pending" and time.monotonic() >= deadline and await self.queue.take_back_transcription(
                key
            ):
                log.info("localnemo.speech.no_worker_took_it waited_s=%.0f: recognised here", self.wait_seconds)
                words, engine = await super().recognise(audio_path, language, progress)
                await self.queue.store_transcript(key, words, engine, "server")
                return words, engine
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ticket.wait(), _RECHECK_SECONDS)
            # Taken before the row is read: a change announced meanwhile wakes the next wait.
            ticket = self.queue.ticket()
            row = await self.queue.transcript(key) or row


def _remove_leftovers(folder: Path, output: str) -> None:
    """The files of this render's earlier attempts (a killed worker's: its partial files, or a whole file it
    renamed into place but did not live to record): none of them is a result, since a recorded one stops
    every later attempt, and none runs any more, since the job's lock lets one attempt run at a time and a
    killed worker's FFmpeg died with it."""
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            if entry.name.startswith((f".{output}-", f"{output}-")):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)


class RenderWorker:
    """``nemobot render-worker``: takes render jobs from the queue and renders them into the shared folder."""

    def __init__(self, config: LocalNemoConfig, renderer: Renderer) -> None:
        if config.queue_db is None:
            raise ValueError("LOCALNEMO_QUEUE_DB is not set")
        self.url = config.queue_db
        self.config = config
        self.renderer = renderer
        self.shared_dir = config.shared_dir or config.data_dir
        self.name = f"{socket.gethostname()}-{os.getpid()}"
        self.app = App(connector=_connector(self.url))
        self.app.task(name=TASK, queue=QUEUE, pass_context=True)(self._render)
        self.app.task(name=TRANSCRIBE_TASK, queue=QUEUE, pass_context=True)(self._transcribe)
        self.speech = Speech(config.stt_engine, config.whisper_model)

    async def run(self) -> None:
        """Work until SIGTERM or SIGINT (Procrastinate's handlers), then finish the renders under way."""
        await ensure_schema(self.url)
        async with self.app.open_async():
            retrying = asyncio.create_task(self._retry_stalled(), name="localnemo-retry-stalled")
            log.info("localnemo.worker.started name=%s db=%s shared_dir=%s concurrency=%s", self.name,
                     describe_url(self.url), self.shared_dir, self.config.worker_concurrency)  # fmt: skip
            try:
                await self.app.run_worker_async(
                    queues=[QUEUE],
                    name=self.name,
                    concurrency=self.config.worker_concurrency,
                    update_heartbeat_interval=self.config.stalled_seconds / 4,
                    stalled_worker_timeout=self.config.stalled_seconds,
                )
            finally:
                retrying.cancel()
                await asyncio.gather(retrying, return_exceptions=True)
            log.info("localnemo.worker.stopped name=%s", self.name)

    async def _retry_stalled(self) -> None:
        while True:
            await asyncio.sleep(self.config.stalled_seconds / 3)
            try:
                stalled = await self.app.job_manager.get_stalled_jobs(
                    queue=QUEUE, seconds_since_heartbeat=self.config.stalled_seconds
                )
            except psycopg.Error as exc:
                log.warning("localnemo.worker.stalled_check_failed error=%s", type(exc).__name__)
                continue
            for job in stalled:
                try:
                    await self.app.job_manager.retry_job(job)
                except Exception as exc:
                    # Another worker put it back first.
                    log.info("localnemo.worker.retry_skipped job=%s error=%s", job.id, type(exc).__name__)
                    continue
                log.info("localnemo.worker.retried_stalled job=%s attempts=%s", job.id, job.attempts)

    async def _write(self, token: str, query: str, params: tuple[Any, ...]) -> Any:
        """Run an UPDATE … RETURNING on the render's row and announce it in the same transaction; what it
        returned (None: no row changed)."""
        async with self.app.connector.pool.connection() as conn, conn.transaction():  # type: ignore[attr-defined]
            cursor = conn.cursor()
            await cursor.execute(query, params)
            found = await cursor.fetchone()
            if found is not None:
                await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, token))
            return None if found is None else found[0]

    async def _render(
        self, context: JobContext, token: str, draft: dict[str, Any], sources: dict[str, str], output: str
    ) -> None:
        attempt = await self._write(
            token,
            "UPDATE localnemo_render_results SET status = 'processing', attempts = attempts + 1, progress = 0, "
            "worker = %s, updated_at = now() WHERE token = %s AND status IN ('pending', 'processing') "
            "RETURNING attempts",
            (self.name, token),
        )
        if attempt is None:
            # Finished (or cancelled) already: a repeated job does nothing.
            log.info("localnemo.worker.already_done token_prefix=%s job=%s", token[:6], context.job.id)
            return
        log.info("localnemo.worker.render token_prefix=%s job=%s attempt=%s", token[:6], context.job.id, attempt)
        folder = self.shared_dir / "renders"
        await asyncio.to_thread(folder.mkdir, mode=0o700, parents=True, exist_ok=True)
        await asyncio.to_thread(_remove_leftovers, folder, output)
        out_path = folder / f"{output}-{attempt}.mp4"
        try:
            result = await self._run_renderer(token, attempt, draft, sources, out_path)
        except asyncio.CancelledError:
            # Aborted (the export was cancelled) or the worker is stopping: nothing of this attempt is kept.
            await asyncio.to_thread(out_path.unlink, missing_ok=True)
            raise
        except Exception as exc:
            if isinstance(exc, RenderError):
                reason = str(exc)
            elif isinstance(exc, TimeoutError):
                reason = f"the render took longer than {span_words(self.config.render_timeout_seconds)} and was stopped"
            else:
                log.exception("localnemo.worker.crashed token_prefix=%s", token[:6])
                reason = "render failed: internal error"
            await asyncio.to_thread(out_path.unlink, missing_ok=True)
            await self._write(
                token,
                "UPDATE localnemo_render_results SET status = 'failed', error = %s, updated_at = now() "
                "WHERE token = %s AND attempts = %s AND status = 'processing' RETURNING token",
                (reason, token, attempt),
            )
            log.info("localnemo.worker.failed token_prefix=%s reason=%s", token[:6], reason)
            return
        done = await self._write(
            token,
            "UPDATE localnemo_render_results SET status = 'completed', progress = 100, output = %s, duration = %s, "
            "size = %s, updated_at = now() WHERE token = %s AND attempts = %s AND status = 'processing' "
            "RETURNING token",
            (out_path.name, result.duration, result.size, token, attempt),
        )
        if done is None:
            # Cancelled meanwhile, or another attempt owns the render now: this file is nobody's.
            await asyncio.to_thread(out_path.unlink, missing_ok=True)
            log.info("localnemo.worker.superseded token_prefix=%s attempt=%s", token[:6], attempt)
            return
        log.info("localnemo.worker.completed token_prefix=%s attempt=%s size=%s", token[:6], attempt, result.size)

    async def _transcribe(self, context: JobContext, key: str, source: str, language: str) -> None:
        claimed = await _write_transcript(
            self.app, key,
            "UPDATE localnemo_transcripts SET status = 'processing', progress = 0, worker = %s, updated_at = now() "
            "WHERE key = %s AND status IN ('pending', 'processing') RETURNING key",
            (self.name, key),
        )  # fmt: skip
        if not claimed:
            log.info("localnemo.worker.already_transcribed job=%s", context.job.id)
            return
        log.info("localnemo.worker.transcribe job=%s language=%s", context.job.id, language)

        async def write(percent: int) -> None:
            await _write_transcript(
                self.app, key,
                "UPDATE localnemo_transcripts SET progress = %s, updated_at = now() "
                "WHERE key = %s AND status = 'processing' RETURNING key",
                (percent, key),
            )  # fmt: skip

        failed = "UPDATE localnemo_transcripts SET status = 'failed', language_missing = %s, error = %s, " \
            "updated_at = now() WHERE key = %s AND status = 'processing' RETURNING key"
        try:
            if not _MEDIA_NAME_RE.match(source):
                raise SpeechError("the clip is not in the shared folder")
            async with _reporting(write) as on_progress:
                words, engine = await self.speech.recognise(self.shared_dir / source, language, on_progress)
        except LanguageNotAvailable:
            await _write_transcript(self.app, key, failed, (True, None, key))
            log.info("localnemo.worker.transcribe_failed language=%s reason=no_model", language)
            return
        except SpeechError as exc:
            await _write_transcript(self.app, key, failed, (False, str(exc), key))
            log.info("localnemo.worker.transcribe_failed language=%s reason=%s", language, exc)
            return
        except Exception:
            log.exception("localnemo.worker.transcribe_crashed")
            await _write_transcript(self.app, key, failed, (False, "speech recognition failed", key))
            return
        await _store_transcript(self.app, key, words, engine, self.name)
        log.info("localnemo.worker.transcribed job=%s words=%d engine=%s", context.job.id, len(words), engine)

    async def _run_renderer(
        self, token: str, attempt: int, draft: dict[str, Any], sources: dict[str, str], out_path: Path
    ) -> RenderOutput:
        paths: dict[str, Path] = {}
        for url, name in sources.items():
            if not _MEDIA_NAME_RE.match(name):
                raise RenderError("render failed: a source of this export is not in the shared folder")
            paths[url] = self.shared_dir / name

        async def write(percent: int) -> None:
            await self._write(
                token,
                "UPDATE localnemo_render_results SET progress = %s, updated_at = now() "
                "WHERE token = %s AND attempts = %s AND status = 'processing' RETURNING token",
                (percent, token, attempt),
            )

        async with _reporting(write) as on_progress, asyncio.timeout(self.config.render_timeout_seconds):
            result = await self.renderer.render(Draft.model_validate(draft), paths, out_path, on_progress)
        await asyncio.to_thread(os.chmod, out_path, 0o600)
        return result


@contextlib.asynccontextmanager
async def _reporting(write: Callable[[int], Awaitable[None]]) -> AsyncIterator[Callable[[float], None]]:
    """A progress callback (safe to call from a worker thread: it only stores the number) whose value is written
    with ``write`` as a whole percent below 100, at most every ``_PROGRESS_SECONDS`` and only when it grew."""
    reported = [0.0]

    def on_progress(fraction: float) -> None:
        reported[0] = max(reported[0], min(1.0, fraction))

    async def report() -> None:
        written = 0
        while True:
            await asyncio.sleep(_PROGRESS_SECONDS)
            percent = min(99, int(100 * reported[0]))
            if percent > written:
                written = percent
                with contextlib.suppress(psycopg.Error):
                    await write(percent)

    reporter = asyncio.create_task(report())
    try:
        yield on_progress
    finally:
        reporter.cancel()
        await asyncio.gather(reporter, return_exceptions=True)


async def run_render_worker(config: LocalNemoConfig) -> None:
    """``nemobot render-worker``: the FFmpeg renderer of these settings, working the queue until stopped."""
    from localnemo.app import default_renderer

    worker = RenderWorker(config, default_renderer(config))
    await worker.run()
