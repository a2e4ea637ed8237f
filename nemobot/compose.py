"""The composition root: settings → HTTP client → storage → engine → adapters, in one ``AsyncExitStack``.

Every connection is made here and handed to the parts that use them; nothing holds one globally, and
everything is closed in reverse order on the way out. The backend is the configured NemoVideo, or a
localnemo started inside this process (``--local``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from adapters.common import AdapterContext, FatalCallback, PlatformFailure, PlatformUnreachable
from bot.config import DEFAULT_NEMO_API_BASE, BotSettings, NemoSettings
from bot.engine import Engine
from bot.messages import Adapter
from bot.nemo.client import NemoClient
from bot.queue import InProcessQueue, JobQueue, open_job_queue
from bot.sessions import RepositoryIdentities, SessionPolicy
from storage import Store, is_postgres_url, open_repository

if TYPE_CHECKING:
    from adapters.discord import DiscordSettings
    from adapters.telegram import TelegramSettings

log = logging.getLogger(__name__)


class StartSettings(BaseSettings):
    """How long a platform that is out of reach at start-up is retried before the process gives up."""

    model_config = SettingsConfigDict(env_prefix="NEMOBOT_START_", env_file=".env", extra="ignore")

    attempts: int = Field(5, ge=1, description="Tries to reach a chat platform at start-up.")
    backoff_seconds: float = Field(2.0, ge=0, description="Pause after the first failed try; doubled after each.")
    max_backoff_seconds: float = Field(60.0, ge=0, description="The longest pause between tries.")


def invalid_settings(error: ValidationError, settings: type[BaseSettings]) -> str:
    """One plain line naming each setting that ``settings`` refused and why, never the value given (it may
    be a token)."""
    prefix = str(settings.model_config.get("env_prefix") or "").upper()
    problems = []
    for problem in error.errors(include_input=False, include_url=False):
        message = str(problem["msg"]).removeprefix("Value error, ")
        field = problem["loc"][0] if problem["loc"] else None
        problems.append(f"{prefix}{str(field).upper()}: {message}" if field is not None else message)
    return "; ".join(problems) + "."


def _hosted_reachable(base: str, timeout: float = 3.0) -> bool:
    parts = urlsplit(base)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def localnemo_data_dir(db: str | Path) -> Path:
    """Where the embedded localnemo keeps its data unless LOCALNEMO_DATA_DIR says otherwise: beside the
    database (``./nemobot.localnemo/`` for ``./nemobot.sqlite3``), so an export survives a restart of both;
    ``./nemobot.localnemo/`` when the database is PostgreSQL's."""
    path = Path("./nemobot.sqlite3" if is_postgres_url(str(db)) else db).expanduser()
    return path.with_name(path.stem + ".localnemo")


def _private_dir(path: Path) -> None:
    """Create the folder, readable by its owner only (it holds the chats' uploads and results)."""
    try:
        path.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            log.warning("localnemo.data_dir_mode path=%s mode=%o reason=readable-by-others", path, mode)
        return
    # mkdir's mode is masked by the umask, which can only take bits away: 0700 is what it is.
    os.chmod(path, 0o700)


@dataclass(frozen=True)
class Backend:
    """The NemoVideo to talk to; ``local_files_key`` when it is a localnemo in this process, which then
    takes this machine's files by their path."""

    settings: NemoSettings
    local_files_key: str | None = None


@contextlib.asynccontextmanager
async def backend(
    settings: NemoSettings, *, local: bool = False, remote: bool = False, notify: Callable[[str], None] = log.info,
    data_dir: Path,
) -> AsyncIterator[Backend]:
    """The backend to use: as configured, or a localnemo started in this process. Without a choice,
    localnemo is used when the hosted NemoVideo cannot be reached and no base URL was set.

    The embedded localnemo keeps its data in ``data_dir`` (LOCALNEMO_DATA_DIR wins over it), created 0700.
    It alone (never ``serve-local``) takes local files by their path, from whoever shows the random key made
    here for this run: this process's client, and nobody else on the machine."""
    explicit = "NEMO_API_BASE" in os.environ or settings.api_base != DEFAULT_NEMO_API_BASE
    use_local = local
    if not use_local and not remote and not explicit:
        use_local = not await asyncio.to_thread(_hosted_reachable, settings.api_base)
        if use_local:
            notify("NemoVideo is out of reach from here: using localnemo, the offline backend.")
    if not use_local:
        yield Backend(settings)
        return
    from localnemo.app import LocalNemo
    from localnemo.config import LocalNemoConfig

    # The LOCALNEMO_* settings hold for the embedded server too.
    key = secrets.token_urlsafe(32)
    # Its agent's events go out as they come: a pause between them only imitates the hosted service's pace.
    config = LocalNemoConfig.from_env(default_data_dir=data_dir).model_copy(
        update={"local_files_key": key, "event_delay_seconds": 0.0}
    )
    await asyncio.to_thread(_private_dir, config.data_dir)
    async with LocalNemo(config) as server:
        log.info("localnemo.started base=%s data=%s", server.base_url, config.data_dir)
        yield Backend(settings.model_copy(update={"api_base": server.base_url, "token": None}), key)


#: How often a running bot forgets the message and update ids nothing can redeliver any more.
PRUNE_INTERVAL_SECONDS = 6 * 3600.0


async def prune_seen(repo: Store) -> None:
    """Forget the ids kept to drop redeliveries, once no redelivery can come: message ids after 30 days (a
    platform redelivers within minutes), accepted Telegram updates after 2 days (Telegram keeps an
    undelivered update for 24 hours at most)."""
    await repo.prune_processed(timedelta(days=30))
    await repo.prune_accepted_updates(timedelta(days=2))


async def keep_pruning(repo: Store, interval: float) -> None:
    """:func:`prune_seen` every ``interval`` seconds for as long as the bot runs (it runs for months)."""
    while True:
        await asyncio.sleep(interval)
        try:
            await prune_seen(repo)
        except Exception as exc:
            log.warning("nemobot.prune_failed error=%s", type(exc).__name__)


def adapter_context(
    http: httpx.AsyncClient, nemo: NemoSettings, bot: BotSettings, *, store: Store | None = None,
    queue: JobQueue | None = None,
) -> AdapterContext:
    """What every adapter is handed: the HTTP client, the session policy, the download limits and, given the
    store, the way to accept each platform update once across the processes sharing it (and, given the durable
    queue, where accepted updates wait for whichever process handles the chat)."""
    return AdapterContext(http=http, sessions=SessionPolicy.from_settings(bot),
                          max_upload_bytes=nemo.max_upload_bytes, temp_dir=bot.temp_dir,
                          accept_update=store.accept_update if store is not None else None, queue=queue)


@dataclass
class Runtime:
    """A running engine, what adapters need, and the stack that closes them all."""

    engine: Engine
    context: AdapterContext
    stack: contextlib.AsyncExitStack
    adapters: list[Adapter]

    async def start(self, adapter: Adapter) -> None:
        """Start an adapter; it is stopped (before the engine and the database close) on the way out. One
        that fails to start is stopped at once (whatever it opened is closed) and the error raised."""
        try:
            await adapter.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await adapter.stop()
            raise
        self.adapters.append(adapter)
        self.stack.push_async_callback(adapter.stop)

    async def start_retrying(
        self, make: Callable[[], Adapter], settings: StartSettings, notify: Callable[[str], None] = log.info
    ) -> Adapter:
        """Start a new adapter from ``make``; while the platform is out of reach, try again after a growing
        pause, saying so in one line each time. A refusal, or the last failed attempt, raises its
        ``PlatformFailure``."""
        delay = settings.backoff_seconds
        for attempt in range(1, settings.attempts + 1):
            adapter = make()
            try:
                await self.start(adapter)
                return adapter
            except PlatformFailure as failure:
                if not failure.transient:
                    raise
                if attempt == settings.attempts:
                    raise PlatformUnreachable(
                        f"{failure} Gave up after {settings.attempts} attempts."
                    ) from None
                notify(f"{failure} Trying again in {delay:g} s (attempt {attempt} of {settings.attempts}).")
            await asyncio.sleep(delay)
            delay = min(delay * 2, settings.max_backoff_seconds)
        raise AssertionError("unreachable: attempts is at least 1")


@contextlib.asynccontextmanager
async def runtime(
    *, local: bool = False, remote: bool = False, notify: Callable[[str], None] = log.info
) -> AsyncIterator[Runtime]:
    """HTTP client, database and engine (and later the adapters), closed in reverse order."""
    bot_settings = BotSettings()
    configured = NemoSettings()
    async with contextlib.AsyncExitStack() as stack:
        chosen = await stack.enter_async_context(
            backend(configured, local=local, remote=remote, notify=notify,
                    data_dir=localnemo_data_dir(bot_settings.db))
        )
        nemo_settings = chosen.settings
        # backend() points the settings elsewhere only when it embedded localnemo.
        embedded = nemo_settings.api_base != configured.api_base
        http = await stack.enter_async_context(
            httpx.AsyncClient(limits=httpx.Limits(max_connections=200, max_keepalive_connections=50))
        )
        repo = await stack.enter_async_context(open_repository(bot_settings.db))
        await prune_seen(repo)
        pruning = asyncio.create_task(keep_pruning(repo, PRUNE_INTERVAL_SECONDS), name="nemobot-prune")
        stack.callback(pruning.cancel)
        # Where exports are followed: this process (SQLite), or Procrastinate's jobs in the same PostgreSQL.
        queue = await stack.enter_async_context(open_job_queue(bot_settings.db))
        nemo = NemoClient(http, nemo_settings, RepositoryIdentities(repo), local_files_key=chosen.local_files_key)
        engine = Engine(nemo, repo, bot_settings, backend="local" if embedded else "hosted", queue=queue)
        stack.push_async_callback(engine.close)
        durable = None if isinstance(queue, InProcessQueue) else queue
        yield Runtime(engine, adapter_context(http, nemo_settings, bot_settings, store=repo, queue=durable), stack, [])


def platform_adapters(
    run: Runtime, *, telegram: TelegramSettings | None = None, discord: DiscordSettings | None = None,
    on_fatal: FatalCallback | None = None,
) -> list[Callable[[], Adapter]]:
    """How to make each chat platform to run, over the runtime's engine and context (a new adapter per
    start attempt). ``on_fatal`` hears of a failure that ends a running adapter."""
    adapters: list[Callable[[], Adapter]] = []
    if telegram is not None:
        from adapters.telegram import TelegramAdapter

        # python-telegram-bot 22 warns (PTBDeprecationWarning) on every read of a time period, and
        # RetryAfter reads its own while it is being made (telegram/error.py), unless the environment
        # variable PTB_TIMEDELTA opts in to datetime.timedelta values (telegram/_utils/datetime.py,
        # get_timedelta_value). There is no other switch, so it is set here, once, at start-up, before
        # the first request; the adapter reads periods of either type.
        os.environ.setdefault("PTB_TIMEDELTA", "true")
        adapters.append(lambda: TelegramAdapter(run.engine, telegram, run.context, on_fatal=on_fatal))
    if discord is not None:
        from adapters.discord import DiscordAdapter

        adapters.append(lambda: DiscordAdapter(run.engine, discord, run.context, on_fatal=on_fatal))
    return adapters


async def until_stopped(work: Awaitable[object], stop: asyncio.Event) -> bool:
    """Run ``work`` unless ``stop`` is set first; True when it finished."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if task in done:
        task.result()
        return True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    return False
