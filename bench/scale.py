"""Scale-out benchmark. Renders part: throughput of localnemo's render queue with one ``nemobot render-worker``
and with two, side by side.

A 720p30 test clip with sound is generated, a throwaway PostgreSQL is started (Debian's binaries, as the tests
do; or ``--db URL``), and for each worker count a fresh localnemo (in this process, LOCALNEMO_QUEUE_DB set)
gets N exports of the clip at 720p while that many ``nemobot render-worker`` processes render them. Timed from
the first export request to the last finished job; printed as renders per minute, and the ratio of two
workers to one.

By default each worker is pinned to a core of its own (``os.sched_setaffinity``; FFmpeg's threads follow it,
localnemo.render.usable_cores): two one-core workers against one, which is what adding a machine does. With
``--no-pin`` every worker may use every core, as on one shared machine, where a render already keeps both
cores of a 2-core machine busy and a second worker adds little.

    nice -n 19 .venv/bin/python bench/scale.py --renders-only [--renders 6] [--seconds 10] [--no-pin]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from localnemo.app import LocalNemo
from localnemo.config import LocalNemoConfig
from localnemo.media import ffmpeg_exe

ROOT = Path(__file__).resolve().parents[1]
RENDER = "/api/render/proxy/lambda"
ATTRIBUTION = {"X-Skill-Source": "bench", "X-Skill-Version": "0", "X-Skill-Platform": "bench"}


@dataclass(frozen=True)
class RenderRun:
    workers: int
    renders: int
    seconds: float

    @property
    def per_minute(self) -> float:
        return self.renders / self.seconds * 60


def make_clip(path: Path, seconds: int) -> Path:
    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate=30:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=330:duration={seconds}",
         "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)],
        check=True,
    )  # fmt: skip
    return path


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[str]:
    """A PostgreSQL server of this run's own (as root it runs as the postgres user); its URL."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        raise SystemExit("needs PostgreSQL's server binaries (Debian package postgresql), or --db URL")
    bin_dir = found[-1].parent
    root = Path(tempfile.mkdtemp(prefix="nemobot-bench-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = root / "data"

    def run(*command: str) -> None:
        subprocess.run([*as_user, *command], check=True, capture_output=True)

    run(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
    run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o",
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")  # fmt: skip
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def new_schema(url: str, name: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        conn.execute(f"CREATE SCHEMA {name}")
    return f"{url}?options=-csearch_path%3D{name}"


def registered_workers(url: str) -> int:
    with psycopg.connect(url) as conn:
        found = conn.execute("SELECT to_regclass('procrastinate_workers') IS NOT NULL").fetchone()
        if found is None or not found[0]:
            return 0
        count = conn.execute("SELECT count(*) FROM procrastinate_workers").fetchone()
        return int(count[0]) if count is not None else 0


def start_worker(url: str, shared: Path, data_dir: Path, core: int | None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCALNEMO_", "NEMOBOT_"))}
    env.update({
        "PYTHONPATH": str(ROOT), "LOCALNEMO_QUEUE_DB": url, "LOCALNEMO_SHARED_DIR": str(shared),
        "LOCALNEMO_DATA_DIR": str(data_dir), "LOCALNEMO_RESOLUTION": "720p", "NEMOBOT_LOG_LEVEL": "WARNING",
    })  # fmt: skip

    def pin() -> None:
        if core is not None:
            os.sched_setaffinity(0, {core})

    return subprocess.Popen([sys.executable, "-m", "nemobot", "render-worker"], env=env, preexec_fn=pin)


async def timed_renders(url: str, workdir: Path, clip: Path, workers: int, renders: int, pin: bool) -> RenderRun:
    shared = workdir / "shared"
    config = LocalNemoConfig(data_dir=workdir / "server", queue_db=url, shared_dir=shared,
                             max_renders_per_user=renders, default_resolution="720p")  # fmt: skip
    cores = sorted(os.sched_getaffinity(0))
    processes = [start_worker(url, shared, workdir / f"worker-{n}", cores[n % len(cores)] if pin else None)
                 for n in range(workers)]  # fmt: skip
    try:
        async with LocalNemo(config) as server, httpx.AsyncClient(base_url=server.base_url, timeout=60) as http:
            deadline = time.monotonic() + 60
            while registered_workers(url) < workers:
                if time.monotonic() > deadline:
                    raise SystemExit("the render workers did not start")
                await asyncio.sleep(0.1)
            token = (await http.post("/api/auth/anonymous-token", headers={"X-Client-Id": "bench"})).json()
            headers = {"Authorization": f"Bearer {token['data']['token']}", **ATTRIBUTION}
            sid = (await http.post("/api/tasks/me/with-session/nemo_agent", json={}, headers=headers)).json()
            sid = sid["data"]["session_id"]
            files = {"files": (clip.name, clip.read_bytes(), "video/mp4")}
            upload = await http.post(f"/api/upload-video/nemo_agent/me/{sid}", headers=headers, files=files)
            upload.raise_for_status()
            state = (await http.get(f"/api/state/nemo_agent/me/{sid}/latest", headers=headers)).json()
            draft = state["data"]["state"]["draft"]
            started = time.monotonic()
            for number in range(renders):
                export = {"id": f"r{number}", "sessionId": sid, "draft": draft, "output": {"resolution": "720p"}}
                (await http.post(RENDER, json=export, headers=headers)).raise_for_status()
            for number in range(renders):
                while True:
                    answer = await http.get(f"{RENDER}/r{number}?wait=30", headers=headers)
                    data = answer.json()["data"]
                    if data["status"] == "failed":
                        raise SystemExit(f"render r{number} failed: {data.get('error')}")
                    if data["status"] == "completed":
                        break
            return RenderRun(workers, renders, time.monotonic() - started)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(60)


def bench_renders(db: str | None, renders: int, seconds: int, pin: bool) -> list[RenderRun]:
    """N renders with one worker, then with two; the runs, printed side by side."""
    workdir = Path(tempfile.mkdtemp(prefix="nemobot-bench-scale-"))
    try:
        clip = make_clip(workdir / "clip.mp4", seconds)
        with contextlib.ExitStack() as stack:
            url = db if db is not None else stack.enter_context(throwaway_postgres())
            runs = [
                asyncio.run(timed_renders(new_schema(url, f"bench_scale_{workers}"), workdir / f"run-{workers}",
                                          clip, workers, renders, pin))
                for workers in (1, 2)
            ]  # fmt: skip
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"renders: {renders} exports of a {seconds}s 720p30 clip at 720p, workers "
          f"{'pinned to one core each' if pin else 'sharing every core'} ({len(os.sched_getaffinity(0))} cores)")
    for run in runs:
        print(f"  {run.workers} worker{'s' if run.workers > 1 else ' '}: {run.seconds:6.1f} s  "
              f"{run.per_minute:5.2f} renders/minute")  # fmt: skip
    print(f"  ratio two/one: {runs[1].per_minute / runs[0].per_minute:.2f}x")
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--renders-only", action="store_true", help="only the render workers' part (the only part yet)")
    parser.add_argument("--renders", type=int, default=6, help="exports per run (default 6)")
    parser.add_argument("--seconds", type=int, default=10, help="length of the generated clip (default 10)")
    parser.add_argument("--no-pin", action="store_true", help="let every worker use every core")
    parser.add_argument("--db", help="a postgresql:// URL to use instead of a throwaway server")
    args = parser.parse_args()
    bench_renders(args.db, args.renders, args.seconds, pin=not args.no_pin)


if __name__ == "__main__":
    main()
