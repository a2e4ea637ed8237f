"""Shared fixtures: a real localnemo on 127.0.0.1 (port 0) and the real client pointed at it, and a throwaway
PostgreSQL server for the tests that run against PostgreSQL too."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from aiohttp import web

from bot.config import BotSettings, NemoSettings
from bot.engine import Engine
from bot.nemo.auth import MemoryIdentityStore
from bot.nemo.client import NemoClient
from bot.sessions import RepositoryIdentities
from localnemo.config import LocalNemoConfig
from localnemo.testing import TestLocalNemo
from storage import Repository
from tests.waiting import wait_for

__all__ = ["wait_for"]  # re-exported: tests import it from here

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tests' own cache folder (localnemo keeps its music loop there): never the developer's, so a stale
    file there cannot change a result, and the loop is made once per run, by the first test that needs it."""
    folder = tmp_path_factory.mktemp("cache")
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = before


def fast_localnemo_config(data_dir: Path, **overrides: Any) -> LocalNemoConfig:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "heartbeat_seconds": 0.05,
        "event_delay_seconds": 0.0,
        "render_steps": 3,
        "render_step_seconds": 0.02,
        # The tests serve files to upload by URL from 127.0.0.1.
        "allow_private_urls": True,
        # The real FFmpeg engine, rendering small and fast: the tests check what users get, not speed.
        "default_resolution": "240p",
        "x264_preset": "ultrafast",
    }
    values.update(overrides)
    return LocalNemoConfig(**values)


def fast_settings(api_base: str, **overrides: Any) -> NemoSettings:
    values: dict[str, Any] = {
        "api_base": api_base,
        "token": None,
        "poll_seconds": 0.05,
        "retry_seconds": 0.01,
        "backoff_seconds": 0.01,
        "skill_platform": "tests",
    }
    values.update(overrides)
    return NemoSettings(_env_file=None, **values)


@pytest.fixture
def localnemo_options() -> dict[str, Any]:
    """Override per test (or per parametrised test) to configure the server."""
    return {}


@pytest.fixture
async def localnemo(tmp_path: Path, localnemo_options: dict[str, Any]) -> AsyncIterator[TestLocalNemo]:
    """localnemo with the test controls (faults, call log, the hosted agent's quirks) of localnemo.testing;
    ``silent_every`` among the options is the quirk's, the rest are settings."""
    options = dict(localnemo_options)
    silent_every = options.pop("silent_every", 3)
    config = fast_localnemo_config(tmp_path / "localnemo", **options)
    async with TestLocalNemo(config, silent_every=silent_every) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def settings(localnemo: TestLocalNemo) -> NemoSettings:
    return fast_settings(localnemo.base_url)


@pytest.fixture
def identities() -> MemoryIdentityStore:
    return MemoryIdentityStore()


@pytest.fixture
def nemo(http: httpx.AsyncClient, settings: NemoSettings, identities: MemoryIdentityStore) -> NemoClient:
    return NemoClient(http, settings, identities)


def ffmpeg_exe() -> str:
    from localnemo.media import ffmpeg_exe

    return ffmpeg_exe()


@pytest.fixture(scope="session")
def sample_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 2-second H.264/AAC clip, made once per test run."""
    import subprocess

    out = tmp_path_factory.mktemp("media") / "clip.mp4"
    subprocess.run(
        [
            ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=22050",
            "-t", "2", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(out),
        ],
        check=True,
    )
    return out


class Bot:
    """One engine over one database, as a process would run it; ``restart`` makes a new one."""

    def __init__(self, http: httpx.AsyncClient, settings: NemoSettings, db: Path) -> None:
        self.http, self.settings, self.db = http, settings, db
        self.repo: Repository | None = None
        self.engine: Engine | None = None

    async def start(self) -> Engine:
        self.repo = await Repository.connect(self.db)
        nemo = NemoClient(self.http, self.settings, RepositoryIdentities(self.repo))
        self.engine = Engine(nemo, self.repo, BotSettings(_env_file=None, db=str(self.db)))
        return self.engine

    async def stop(self) -> None:
        if self.engine is not None:
            await self.engine.close()
        if self.repo is not None:
            await self.repo.close()


@contextlib.asynccontextmanager
async def serving(app: web.Application, *, shutdown_timeout: float = 60.0) -> AsyncIterator[str]:
    """Serve an aiohttp application on a free loopback port for a test; yields its base URL."""
    runner = web.AppRunner(app, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def bot(http: httpx.AsyncClient, settings: NemoSettings, tmp_path: Path) -> AsyncIterator[Bot]:
    """A started engine over a database of the test's own, stopped afterwards."""
    running = Bot(http, settings, tmp_path / "bot.sqlite3")
    await running.start()
    yield running
    await running.stop()


async def assert_video(path: Path, *, seconds: float | None = None) -> None:
    """A real H.264/AAC MP4 a player can open, of about ``seconds`` when given."""
    from localnemo.media import probe

    info = await probe(path)
    assert info is not None, f"{path} is not a video"
    assert info.kind == "video"
    assert info.has_audio
    assert "mp4" in info.container
    if seconds is not None:
        assert info.duration == pytest.approx(seconds, abs=0.15)


@dataclass
class BotProcess:
    """A ``nemobot`` command running as its own process. Its output is read as it comes (a chatty DEBUG log
    must not fill the pipe and block the bot); ``returncode``, ``stdout`` and ``stderr`` are final once it
    has stopped, by itself (``ended``) or by SIGTERM on leaving ``bot_process``."""

    process: asyncio.subprocess.Process
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""

    def __post_init__(self) -> None:
        self._chunks: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
        self._readers = [asyncio.ensure_future(self._drain(name)) for name in self._chunks]

    async def _drain(self, name: str) -> None:
        stream = getattr(self.process, name)
        assert stream is not None
        while chunk := await stream.read(65536):
            self._chunks[name].append(chunk)

    @property
    def output(self) -> str:
        """Everything written so far, stdout then stderr."""
        return "".join(b"".join(self._chunks[name]).decode(errors="replace") for name in ("stdout", "stderr"))

    async def ended(self, within: float = 30) -> int:
        """Wait for the process to exit by itself; its status."""
        await asyncio.wait_for(self._collect(), within)
        assert self.returncode is not None
        return self.returncode

    async def _collect(self) -> None:
        await asyncio.gather(*self._readers)
        self.returncode = await self.process.wait()
        self.stdout, self.stderr = (b"".join(self._chunks[name]).decode(errors="replace")
                                    for name in ("stdout", "stderr"))


@contextlib.asynccontextmanager
async def bot_process(command: str, cwd: Path, environment: dict[str, str]) -> AsyncIterator[BotProcess]:
    """Run ``python -m nemobot COMMAND`` with only the given settings (none inherited; the log level is
    WARNING unless given), stop it with SIGTERM on leaving, and collect how it ended."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEMO_", "NEMOBOT_", "TELEGRAM_", "DISCORD_"))}
    env.update({"PYTHONPATH": str(ROOT), "NEMOBOT_LOG_LEVEL": "WARNING"})
    env.update(environment)
    # An asyncio subprocess: the platform stand-in runs on this event loop and must keep answering while the
    # bot shuts down (PTB makes a last getUpdates call, and a blocked loop makes it wait out its read timeout).
    running = BotProcess(await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nemobot", command, cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    ))
    try:
        yield running
    finally:
        if running.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                running.process.terminate()
        await asyncio.wait_for(running._collect(), 30)


@pytest.fixture
def ptb_timedelta(monkeypatch: pytest.MonkeyPatch) -> None:
    # PTB 22.2+ warns (PTBDeprecationWarning) on every read of a time-period attribute such as
    # RetryAfter.retry_after or Video.duration unless this opt-in is set (telegram/_utils/datetime.py,
    # get_timedelta_value); the bot runs with it too (set in nemobot/compose.py), so the values are timedelta.
    monkeypatch.setenv("PTB_TIMEDELTA", "true")


# -- a throwaway PostgreSQL ------------------------------------------------------------------------------

POSTGRES_BINARIES = Path("/usr/lib/postgresql")


def postgres_bin_dir() -> Path | None:
    """The newest Debian PostgreSQL server binaries on this machine (package ``postgresql``), or None."""
    found = [initdb.parent for initdb in POSTGRES_BINARIES.glob("*/bin/initdb") if (initdb.parent / "pg_ctl").exists()]
    return max(found, key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0, default=None)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class PostgresServer:
    """A PostgreSQL server of this test run's own, on a private port and socket folder."""

    port: int
    root: Path
    _numbers: Iterator[int] = field(default_factory=itertools.count)

    def url(self, schema: str | None = None) -> str:
        # A password, though the server trusts every local connection: every test then shows it never leaks.
        url = f"postgresql://postgres:not-logged@127.0.0.1:{self.port}/postgres"
        return f"{url}?options=-csearch_path%3D{schema}" if schema is not None else url

    def new_database(self) -> str:
        """The URL of a new, empty schema, which every connection made with it sees as the whole database.
        A schema, not a database: CREATE DATABASE copies a template and takes about a second on a busy
        machine, CREATE SCHEMA under a millisecond."""
        name = f"test_{next(self._numbers)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        return self.url(name)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """Start PostgreSQL from Debian's binaries for this test run and stop it at the end. initdb refuses to run
    as root, so as root the server runs as the ``postgres`` user. Skips, saying why, where it cannot start."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.skip(f"needs the PostgreSQL server binaries ({POSTGRES_BINARIES}/*/bin from Debian's postgresql "
                    "package), and there are none on this machine")
    as_user: list[str] = []
    # A short path of its own under /tmp: the socket's path must stay under 108 bytes, and the postgres user
    # must be able to reach it (pytest's own temporary folders are private to the user running the tests).
    root = Path(tempfile.mkdtemp(prefix="nemobot-pg-"))
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.skip("runs as root, so PostgreSQL must run as the postgres user, and runuser is missing")
        try:
            shutil.chown(root, "postgres", "postgres")
        except LookupError:
            pytest.skip("runs as root, so PostgreSQL must run as the postgres user, and there is no such user")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()

    def run(*command: str) -> None:
        subprocess.run([*as_user, *command], check=True, capture_output=True, timeout=120)

    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
            "--locale=C", "--no-sync")
        # Durability settings off: the server lives for one test run, and nothing survives it anyway.
        options = (f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off")
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o", options, "start")
    except subprocess.CalledProcessError as failed:
        log = root / "log"
        detail = log.read_text(errors="replace") if log.exists() else failed.stderr.decode(errors="replace")
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"PostgreSQL from {bin_dir} did not start: {detail.strip()[-2000:]}")
    try:
        yield PostgresServer(port, root)
    finally:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a new, empty PostgreSQL database of the test's own (its own schema on the run's server)."""
    return postgres_server.new_database()
