"""localnemo's render jobs over HTTP: results private to their owner or a signed link, render ids per owner,
a bounded render queue, the render time limit, draft caps, and a restart that finishes unfinished renders."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import signal
import socket
import sqlite3
import stat
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from bot.nemo.timeline_model import Draft
from localnemo.config import LocalNemoConfig
from localnemo.media import ffmpeg_exe, probe
from localnemo.render import RenderOutput
from localnemo.testing import TestLocalNemo
from tests.conftest import wait_for
from tests.test_localnemo_server import auth, grant, new_session, upload
from tests.waiting import await_within

ROOT = Path(__file__).resolve().parents[1]
RENDER = "/api/render/proxy/lambda"


def config(data_dir: Path, **overrides: Any) -> LocalNemoConfig:
    values: dict[str, Any] = {
        "heartbeat_seconds": 5.0,
        "event_delay_seconds": 0.0,
        "render_steps": 2,
        "render_step_seconds": 0.01,
        "renderer": "copy",
        "default_resolution": "240p",
        "x264_preset": "ultrafast",
    }
    values.update(overrides)
    return LocalNemoConfig(data_dir=data_dir, **values)


@contextlib.asynccontextmanager
async def running(server: TestLocalNemo) -> AsyncIterator[httpx.AsyncClient]:
    async with server, httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        yield http


async def user_with_clip(http: httpx.AsyncClient, client_id: str, clip: Path) -> tuple[str, str, dict[str, Any]]:
    """A token, a session holding the clip, and the session's draft."""
    token = (await grant(http, client_id))["token"]
    sid = await new_session(http, token)
    await upload(http, token, sid, clip)
    state = (await http.get(f"/api/state/nemo_agent/me/{sid}/latest", headers=auth(token))).json()
    draft: dict[str, Any] = state["data"]["state"]["draft"]
    return token, sid, draft


async def export(http: httpx.AsyncClient, token: str, sid: str, draft: Mapping[str, Any], rid: str) -> httpx.Response:
    body = {"id": rid, "sessionId": sid, "draft": draft, "output": {}}
    return await http.post(RENDER, json=body, headers=auth(token))


async def job(http: httpx.AsyncClient, token: str, rid: str) -> dict[str, Any]:
    answer = await http.get(f"{RENDER}/{rid}", headers=auth(token))
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()["data"]
    return data


async def finished(http: httpx.AsyncClient, token: str, rid: str, within: float = 20) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        data = await job(http, token, rid)
        return data if data["status"] in ("completed", "failed") else None

    return await wait_for(done, within=within, what=f"{rid} to finish")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- private results, ids per owner --------------------------------------------------------------------------


async def test_results_are_private_and_render_ids_belong_to_their_owner(tmp_path: Path, sample_video: Path) -> None:
    data_dir = tmp_path / "nemo"
    async with running(TestLocalNemo(config(data_dir))) as http:
        alice, alice_sid, alice_draft = await user_with_clip(http, "alice", sample_video)
        bob, bob_sid, bob_draft = await user_with_clip(http, "bob", sample_video)
        assert (await export(http, alice, alice_sid, alice_draft, "render_1")).status_code == 200
        # Bob cannot see Alice's job, and the same id is his own to use: both render.
        assert (await http.get(f"{RENDER}/render_1", headers=auth(bob))).status_code == 404
        assert (await http.post(f"{RENDER}/render_1/cancel", headers=auth(bob))).status_code == 404
        assert (await export(http, bob, bob_sid, bob_draft, "render_1")).status_code == 200
        alice_job = await finished(http, alice, "render_1")
        bob_job = await finished(http, bob, "render_1")
        assert (alice_job["status"], bob_job["status"]) == ("completed", "completed")
        # Reusing one's own id is refused, and leaves the finished job as it was.
        again = await export(http, alice, alice_sid, alice_draft, "render_1")
        assert (again.status_code, again.json()["code"]) == (409, 409)
        assert (await job(http, alice, "render_1"))["status"] == "completed"

        link = alice_job["outputUrl"]
        assert link != bob_job["outputUrl"]
        parts = urlsplit(link)
        query = parse_qs(parts.query)
        assert "render_1" not in parts.path
        assert set(query) == {"e", "s"}
        expires = int(query["e"][0])
        assert 167 * 3600 < expires - time.time() <= 168 * 3600 + 60
        # The signed link needs no credentials (the bot downloads it and hands it to people).
        fetched = await http.get(link)
        assert fetched.status_code == 200
        assert fetched.content == sample_video.read_bytes()  # the copy renderer's result
        # Without the signature: the owner's token only.
        bare = parts.path
        assert (await http.get(bare, headers={"Authorization": f"Bearer {alice}"})).status_code == 200
        for headers in ({}, {"Authorization": f"Bearer {bob}"}, {"Authorization": "Bearer nmv_usr_guess"}):
            refused = await http.get(bare, headers=headers)
            assert refused.status_code == 404  # never a 403 that confirms the result exists
        signature = query["s"][0]
        tampered_signature = signature[:-1] + ("0" if signature[-1] != "0" else "1")
        secret = bytes.fromhex((data_dir / "result-links.key").read_text())
        past = int(time.time()) - 60
        expired_signature = hmac.new(secret, f"{bare}\n{past}".encode(), hashlib.sha256).hexdigest()
        bob_path = urlsplit(bob_job["outputUrl"]).path
        for url in (
            f"{bare}?e={expires}&s={tampered_signature}",
            f"{bare}?e={expires + 3600}&s={signature}",  # a later expiry with the old signature
            f"{bare}?e={past}&s={expired_signature}",  # correctly signed, but expired
            f"{bob_path}?e={expires}&s={signature}",  # Alice's signature on Bob's result
            f"/render-result/{'A' * 24}.mp4?e={expires}&s={signature}",  # a guessed token
        ):
            refused = await http.get(url)
            assert refused.status_code == 404, url

        # Results and the state are the server owner's only.
        results = data_dir / "renders"
        assert mode(results) == 0o700
        outputs = list(results.glob("*.mp4"))
        assert len(outputs) == 2
        assert {mode(path) for path in outputs} == {0o600}
    stored = list(data_dir.glob("state.sqlite3*"))
    assert stored
    assert {mode(path) for path in stored} == {0o600}
    assert mode(data_dir / "result-links.key") == 0o600
    # The state file keeps tokens only as their hash.
    raw = b"".join(path.read_bytes() for path in stored)
    assert alice.encode() not in raw
    assert hashlib.sha256(alice.encode()).hexdigest().encode() in raw


# -- bounded renders ------------------------------------------------------------------------------------


class GatedRenderer:
    """Renders only when the test lets it, counting how many renders run at once."""

    def __init__(self) -> None:
        self.active = 0
        self.most = 0
        self.started = 0
        self.gate = asyncio.Event()

    async def render(
        self, draft: Draft, sources: Mapping[str, Path], out_path: Path, on_progress: Callable[[float], None]
    ) -> RenderOutput:
        self.active += 1
        self.started += 1
        self.most = max(self.most, self.active)
        try:
            await self.gate.wait()
            await asyncio.to_thread(out_path.write_bytes, b"video")
            return RenderOutput(duration=1.0, size=5)
        finally:
            self.active -= 1


async def test_renders_over_the_cap_wait_in_order_and_say_their_place(tmp_path: Path, sample_video: Path) -> None:
    renderer = GatedRenderer()
    options = {"max_renders": 2, "max_renders_per_user": 4}
    async with running(TestLocalNemo(config(tmp_path / "nemo", **options), renderer=renderer)) as http:
        token, sid, draft = await user_with_clip(http, "alice", sample_video)
        created = [(await export(http, token, sid, draft, f"render_{n}")).json()["data"] for n in range(4)]
        await wait_for(lambda: renderer.started == 2, what="two renders to start")
        assert [answer.get("queuePosition") for answer in created] == [None, None, 1, 2]
        for rid, position in (("render_2", 1), ("render_3", 2)):
            waiting = await job(http, token, rid)
            assert (waiting["status"], waiting["queuePosition"]) == ("pending", position)
        running_job = await job(http, token, "render_0")
        assert running_job["status"] == "processing"
        assert "queuePosition" not in running_job
        # A waiting render cancelled gives up its place.
        assert (await http.post(f"{RENDER}/render_2/cancel", headers=auth(token))).status_code == 200
        assert (await job(http, token, "render_3"))["queuePosition"] == 1
        renderer.gate.set()
        states = [(await finished(http, token, f"render_{n}"))["status"] for n in range(4)]
        assert states == ["completed", "completed", "failed", "completed"]
        assert renderer.most == 2
        assert renderer.started == 3


async def test_one_user_cannot_fill_the_render_queue(tmp_path: Path, sample_video: Path) -> None:
    renderer = GatedRenderer()
    options = {"max_renders": 1, "max_renders_per_user": 2}
    async with running(TestLocalNemo(config(tmp_path / "nemo", **options), renderer=renderer)) as http:
        alice, alice_sid, alice_draft = await user_with_clip(http, "alice", sample_video)
        bob, bob_sid, bob_draft = await user_with_clip(http, "bob", sample_video)
        for rid in ("render_0", "render_1"):
            assert (await export(http, alice, alice_sid, alice_draft, rid)).status_code == 200
        over = await export(http, alice, alice_sid, alice_draft, "render_2")
        assert (over.status_code, over.json()) == (
            429, {"code": 429, "message": "too many exports waiting; try again when one is done"}
        )
        assert (await http.get(f"{RENDER}/render_2", headers=auth(alice))).status_code == 404
        # Another user still gets a place in the queue.
        assert (await export(http, bob, bob_sid, bob_draft, "render_0")).status_code == 200
        # A cancelled render frees its place.
        assert (await http.post(f"{RENDER}/render_1/cancel", headers=auth(alice))).status_code == 200
        assert (await export(http, alice, alice_sid, alice_draft, "render_2")).status_code == 200
        renderer.gate.set()
        assert (await finished(http, alice, "render_2"))["status"] == "completed"


async def test_old_finished_jobs_and_expired_tokens_are_forgotten(tmp_path: Path, sample_video: Path) -> None:
    data_dir = tmp_path / "nemo"
    async with running(TestLocalNemo(config(data_dir))) as http:
        token, sid, draft = await user_with_clip(http, "alice", sample_video)
        assert (await export(http, token, sid, draft, "render_1")).status_code == 200
        assert (await finished(http, token, "render_1"))["status"] == "completed"
        # A user keeps their newest 10 tokens.
        tokens = [(await grant(http, "bob"))["token"] for _ in range(12)]
        statuses = [(await http.get("/api/credits/balance/simple", headers=auth(t))).status_code for t in tokens]
        assert statuses == [401, 401] + [200] * 10
    assert len(list((data_dir / "renders").glob("*.mp4"))) == 1
    # At start: a result older than its link's lifetime is forgotten with its file.
    server = TestLocalNemo(config(data_dir, result_link_hours=1e-6, prune_interval_seconds=0.05))
    async with running(server) as http:
        assert (await http.get(f"{RENDER}/render_1", headers=auth(token))).status_code == 404
        assert list((data_dir / "renders").glob("*.mp4")) == []
        # Periodically: a new job once it is old, and expired tokens.
        assert (await export(http, token, sid, draft, "render_2")).status_code == 200
        rendered = next(iter(server.state.jobs.values()))
        server.expire_tokens()
        await wait_for(
            lambda: not server.state.jobs and not server.state.tokens and rendered.finished,
            what="the finished job and the expired tokens to be forgotten",
        )
        assert rendered.status == "completed", (rendered.status, rendered.error)
        assert list((data_dir / "renders").glob("*.mp4")) == []


def ffmpeg_processes(marker: str) -> list[int]:
    """Live FFmpeg processes whose command line mentions ``marker`` (a test's own data folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and argv and b"ffmpeg" in Path(argv[0].decode(errors="replace")).name.encode():
            if any(marker.encode() in arg for arg in argv):
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="counts processes through /proc")
async def test_a_render_over_the_time_limit_is_stopped_and_fails_plainly(tmp_path: Path) -> None:
    image = tmp_path / "still.png"
    made = await asyncio.create_subprocess_exec(
        ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=320x240",
        "-frames:v", "1", str(image),
    )  # fmt: skip
    assert await made.wait() == 0
    data_dir = tmp_path / "nemo"
    options = {"renderer": "ffmpeg", "render_timeout_seconds": 2.0}
    async with running(TestLocalNemo(config(data_dir, **options))) as http:
        token = (await grant(http, "alice"))["token"]
        sid = await new_session(http, token)
        files = [("files", (image.name, image.read_bytes(), "image/png"))]
        uploaded = await http.post(f"/api/upload-video/nemo_agent/me/{sid}", files=files, headers=auth(token))
        assert uploaded.status_code == 200, uploaded.text
        state = (await http.get(f"/api/state/nemo_agent/me/{sid}/latest", headers=auth(token))).json()
        draft = state["data"]["state"]["draft"]
        draft["t"][0]["sg"][0]["d"] = 3_600_000  # an hour of a still image: FFmpeg works far longer than 2 s
        assert (await export(http, token, sid, draft, "render_long")).status_code == 200
        await wait_for(lambda: ffmpeg_processes(str(data_dir / "renders")), what="FFmpeg to render")
        failed = await finished(http, token, "render_long")
        reason = "the render took longer than 2 seconds and was stopped"
        assert (failed["status"], failed["error"]) == ("failed", reason)
        assert ffmpeg_processes(str(data_dir)) == []
        assert not list((data_dir / "renders").glob("*.mp4"))


async def test_a_draft_over_the_caps_is_refused_plainly(tmp_path: Path, sample_video: Path) -> None:
    renderer = GatedRenderer()
    renderer.gate.set()
    options = {"max_segments": 3, "max_output_seconds": 10}
    async with running(TestLocalNemo(config(tmp_path / "nemo", **options), renderer=renderer)) as http:
        token, sid, draft = await user_with_clip(http, "alice", sample_video)
        segment = draft["t"][0]["sg"][0]
        many = {**draft, "t": [{**draft["t"][0], "sg": [dict(segment, d=1000) for _ in range(4)]}]}
        long = {**draft, "t": [{**draft["t"][0], "sg": [dict(segment, d=11_000)]}]}
        for rid, body, reason in (
            ("render_many", many, "the timeline has 4 pieces, more than the 3 one export can have here"),
            ("render_long", long, "the video would be 11 seconds long, more than the 10 seconds one export can be"),
        ):
            answer = await export(http, token, sid, body, rid)
            assert answer.status_code == 200
            data = answer.json()["data"]
            assert data["status"] == "failed"
            assert data["error"].startswith(reason)
        assert renderer.started == 0
        # Within the caps it renders.
        assert (await export(http, token, sid, draft, "render_ok")).status_code == 200
        assert (await finished(http, token, "render_ok"))["status"] == "completed"


# -- a restart ----------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def server_process(port: int, environment: Mapping[str, str]) -> AsyncIterator[asyncio.subprocess.Process]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALNEMO_")}
    env.update({**environment, "PYTHONPATH": str(ROOT)})
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "localnemo.testing", "--port", str(port),
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

            async def up() -> bool:
                assert process.returncode is None, "python -m localnemo.testing exited"
                try:
                    await http.get("/api/credits/balance/simple")
                except httpx.TransportError:
                    return False
                return True

            await wait_for(up, within=30, what="localnemo to answer")
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        await asyncio.wait_for(process.wait(), timeout=30)


async def test_a_render_killed_mid_way_finishes_after_a_restart(tmp_path: Path, sample_video: Path) -> None:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
    base = {"LOCALNEMO_DATA_DIR": str(tmp_path / "nemo"), "LOCALNEMO_RENDERER": "copy"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        # A render paced to take minutes, killed (SIGKILL: no goodbye) while it runs.
        async with server_process(port, {**base, "LOCALNEMO_RENDER_STEP_SECONDS": "60"}) as process:
            token, sid, draft = await user_with_clip(http, "alice", sample_video)
            assert (await export(http, token, sid, draft, "render_1")).status_code == 200

            async def processing() -> bool:
                return bool((await job(http, token, "render_1"))["status"] == "processing")

            await wait_for(processing, within=30, what="the render to start")
            process.send_signal(signal.SIGKILL)
            await asyncio.wait_for(process.wait(), timeout=30)
        async with server_process(port, {**base, "LOCALNEMO_RENDER_STEP_SECONDS": "0.01"}):
            # The same token, the same session, and the render done from its stored draft.
            state = await http.get(f"/api/state/nemo_agent/me/{sid}/latest", headers=auth(token))
            assert state.status_code == 200
            assert state.json()["data"]["state"]["draft"] == draft
            done = await finished(http, token, "render_1")
            assert done["status"] == "completed"
            result = await http.get(done["outputUrl"])
            assert result.status_code == 200
            video = tmp_path / "result.mp4"
            video.write_bytes(result.content)
            info = await probe(video)
            assert info is not None
            assert info.kind == "video"
            # The id is still taken after the restart.
            assert (await export(http, token, sid, draft, "render_1")).status_code == 409


def free_port() -> int:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        return int(probe_socket.getsockname()[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="children die with their parent on Linux")
async def test_ffmpeg_dies_with_a_killed_server(tmp_path: Path) -> None:
    image = tmp_path / "still.png"
    made = await asyncio.create_subprocess_exec(
        ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=320x240",
        "-frames:v", "1", str(image),
    )  # fmt: skip
    assert await made.wait() == 0
    data_dir = tmp_path / "nemo"
    port = free_port()
    environment = {
        "LOCALNEMO_DATA_DIR": str(data_dir), "LOCALNEMO_RENDERER": "ffmpeg", "LOCALNEMO_RESOLUTION": "240p",
        "LOCALNEMO_X264_PRESET": "ultrafast",
    }  # fmt: skip
    orphans: list[int] = []
    try:
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http,
            server_process(port, environment) as process,
        ):
            token = (await grant(http, "alice"))["token"]
            sid = await new_session(http, token)
            files = [("files", (image.name, image.read_bytes(), "image/png"))]
            uploaded = await http.post(f"/api/upload-video/nemo_agent/me/{sid}", files=files, headers=auth(token))
            assert uploaded.status_code == 200, uploaded.text
            state = (await http.get(f"/api/state/nemo_agent/me/{sid}/latest", headers=auth(token))).json()
            draft = state["data"]["state"]["draft"]
            draft["t"][0]["sg"][0]["d"] = 3_600_000  # an hour of a still image: FFmpeg is busy for a long while
            assert (await export(http, token, sid, draft, "render_long")).status_code == 200
            await wait_for(lambda: ffmpeg_processes(str(data_dir / "renders")), within=30, what="FFmpeg to render")
            process.send_signal(signal.SIGKILL)
            await asyncio.wait_for(process.wait(), timeout=30)

        def gone() -> bool:
            orphans[:] = ffmpeg_processes(str(data_dir))
            return not orphans

        await wait_for(gone, within=10, what="the killed server's FFmpeg to die with it")
    finally:
        for pid in orphans:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def test_a_draft_nested_too_deeply_or_too_large_is_a_400_and_adds_no_job(
    tmp_path: Path, sample_video: Path
) -> None:
    async with running(TestLocalNemo(config(tmp_path / "nemo"))) as http:
        token, sid, draft = await user_with_clip(http, "alice", sample_video)
        deep = json.dumps({**draft, "zz": "DEEP"}).replace('"DEEP"', "[" * 500 + "]" * 500)
        wide = {**draft, "zz": [0] * 250_000}
        for body, message in (
            (deep, "the draft is nested too deeply: at most 32 levels"),
            (json.dumps(wide), "the draft is too large: more than 200000 values"),
        ):
            answer = await http.post(
                RENDER, content=f'{{"id": "render_1", "sessionId": "{sid}", "draft": {body}}}',
                headers={**auth(token), "Content-Type": "application/json"},
            )  # fmt: skip
            assert (answer.status_code, answer.json()) == (400, {"code": 400, "message": message})
            assert (await http.get(f"{RENDER}/render_1", headers=auth(token))).status_code == 404
        # The id is still free, and a draft with a modest extra key renders.
        nested: Any = "x"
        for _ in range(20):
            nested = [nested]
        assert (await export(http, token, sid, {**draft, "zz": nested}, "render_1")).status_code == 200
        assert (await finished(http, token, "render_1"))["status"] == "completed"


class FlakyDatabase:
    """The store's SQLite connection, failing every statement while ``failing`` is set (a full or broken disk)."""

    def __init__(self, inner: sqlite3.Connection) -> None:
        self.inner = inner
        self.failing = False

    def execute(self, sql: str, parameters: Any = ()) -> sqlite3.Cursor:
        if self.failing:
            raise sqlite3.OperationalError("disk I/O error")
        return self.inner.execute(sql, parameters)

    def close(self) -> None:
        self.inner.close()

    def __enter__(self) -> FlakyDatabase:
        self.inner.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.inner.__exit__(*exc)


async def test_a_change_the_store_could_not_write_is_a_503_not_a_silent_loss(
    tmp_path: Path, sample_video: Path
) -> None:
    data_dir = tmp_path / "nemo"
    server = TestLocalNemo(config(data_dir))
    async with running(server) as http:
        token, sid, draft = await user_with_clip(http, "alice", sample_video)
        database = FlakyDatabase(server.runtime.store._db)
        server.runtime.store._db = database  # type: ignore[assignment]
        database.failing = True
        try_again = {"code": 503, "message": "could not save the change: try again"}
        answer = await http.post("/api/auth/anonymous-token", headers={"X-Client-Id": "bob"})
        assert (answer.status_code, answer.json()) == (503, try_again)
        answer = await export(http, token, sid, draft, "render_1")
        assert (answer.status_code, answer.json()) == (503, try_again)
        assert (await http.get(f"{RENDER}/render_1", headers=auth(token))).status_code == 404
        database.failing = False
        # Tried again: the same id is a new export, and everything marked meanwhile is written.
        assert (await export(http, token, sid, draft, "render_1")).status_code == 200
        bob = (await grant(http, "bob"))["token"]
        assert (await finished(http, token, "render_1"))["status"] == "completed"
    async with running(TestLocalNemo(config(data_dir))) as http:
        assert (await http.get("/api/credits/balance/simple", headers=auth(bob))).status_code == 200
        assert (await job(http, token, "render_1"))["status"] == "completed"


# -- the long-poll of a job's status --------------------------------------------------------------------


async def test_a_status_request_may_wait_for_the_job_to_move(tmp_path: Path, sample_video: Path) -> None:
    renderer = GatedRenderer()
    async with running(TestLocalNemo(config(tmp_path / "nemo", max_renders=1), renderer=renderer)) as http:
        token, sid, draft = await user_with_clip(http, "alice", sample_video)
        created = await export(http, token, sid, draft, "render_1")
        assert created.headers["X-Localnemo-Wait"] == "1"
        await export(http, token, sid, draft, "render_2")
        await wait_for(lambda: renderer.started == 1, what="the first render to start")
        status = await http.get(f"{RENDER}/render_1", headers=auth(token))
        assert status.headers["X-Localnemo-Wait"] == "1"
        seen = status.headers["X-Localnemo-State"]
        for bad in ("soon", "-1", "nan"):
            refused = await http.get(f"{RENDER}/render_1", params={"wait": bad}, headers=auth(token))
            assert refused.status_code == 400
        # Nothing moves: the answer comes when the wait ends, saying the same.
        same = await http.get(f"{RENDER}/render_1", params={"wait": "0.2", "since": seen}, headers=auth(token))
        assert same.headers["X-Localnemo-State"] == seen
        # Something the client has not seen yet (its last look was older): at once.
        stale = await http.get(f"{RENDER}/render_1", params={"wait": "30", "since": "pending.0.0"},
                               headers=auth(token), timeout=5)
        assert stale.json()["data"]["status"] == "processing"
        # Waiting with 30 s to go: the end of the render answers both waiting requests, the queued job's
        # too (its place changes as the first one ends).
        first = asyncio.ensure_future(http.get(f"{RENDER}/render_1", params={"wait": "30", "since": seen},
                                               headers=auth(token), timeout=40))
        queued = await job(http, token, "render_2")
        assert queued["queuePosition"] == 1
        second = asyncio.ensure_future(http.get(f"{RENDER}/render_2", params={"wait": "30", "since": "pending.0.1"},
                                                headers=auth(token), timeout=40))
        renderer.gate.set()
        done = await await_within(first, within=5, what="the wait to end at the render's end")
        assert done.json()["data"]["status"] == "completed"
        moved = await await_within(second, within=5, what="the queued job's wait to end")
        assert moved.json()["data"]["status"] in ("processing", "completed")
        assert "queuePosition" not in moved.json()["data"]
        # Another user's job stays a 404, waiting or not.
        other = (await grant(http, "mallory"))["token"]
        assert (await http.get(f"{RENDER}/render_1", params={"wait": "1"}, headers=auth(other))).status_code == 404
