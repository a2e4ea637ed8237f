"""localnemo over raw HTTP: the protocol of docs/nemo-api.md, the wire shapes of the fixtures, faults."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from localnemo.agent import AgentEvent, AgentText, SimpleAgent
from localnemo.app import LocalNemo
from localnemo.config import LocalNemoConfig
from localnemo.envelope import ApiError
from localnemo.media import ffmpeg_exe, probe
from localnemo.state import SessionRecord
from localnemo.testing import MAX_CALLS, Call, FaultPlan, TestLocalNemo
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "nemo"
ATTRIBUTION = {"X-Skill-Source": "tests", "X-Skill-Version": "0", "X-Skill-Platform": "tests"}


# -- helpers and fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("media") / "tiny clip.mp4"
    subprocess.run(
        [
            ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10", "-f", "lavfi", "-i", "sine",
            "-t", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(out),
        ],
        check=True,
    )  # fmt: skip
    return out


@pytest.fixture
def options() -> dict[str, Any]:
    """Parametrise to configure the server of one test."""
    return {}


@pytest.fixture
async def nemo_server(tmp_path: Path, options: dict[str, Any]) -> AsyncIterator[TestLocalNemo]:
    values: dict[str, Any] = {
        "heartbeat_seconds": 5.0,
        "event_delay_seconds": 0.0,
        "render_steps": 2,
        "render_step_seconds": 0.01,
    }
    values.update(options)
    silent_every = values.pop("silent_every", 3)  # the test server's quirk, not a setting
    config = LocalNemoConfig(data_dir=tmp_path / "nemo", **values)
    async with TestLocalNemo(config, silent_every=silent_every) as server:
        yield server


@pytest.fixture
async def client(nemo_server: TestLocalNemo) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=nemo_server.base_url, timeout=10) as http:
        yield http


async def grant(client: httpx.AsyncClient, client_id: str = "client-1") -> dict[str, Any]:
    answer = await client.post("/api/auth/anonymous-token", headers={"X-Client-Id": client_id})
    assert answer.status_code == 200
    body = answer.json()
    assert body["code"] == 0
    data: dict[str, Any] = body["data"]
    return data


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **ATTRIBUTION}


async def new_session(client: httpx.AsyncClient, token: str) -> str:
    answer = await client.post(
        "/api/tasks/me/with-session/nemo_agent", json={"task_name": "p", "language": "en"}, headers=auth(token)
    )
    assert answer.status_code == 200
    session_id: str = answer.json()["data"]["session_id"]
    return session_id


def run_body(session_id: str, text: str) -> dict[str, Any]:
    return {
        "app_name": "nemo_agent",
        "user_id": "me",
        "session_id": session_id,
        "new_message": {"role": "user", "parts": [{"text": text}]},
    }


def parse_sse(raw: str) -> list[Any]:
    """Each block as its JSON payload, "" for an empty ``data:``, or ("comment", text)."""
    items: list[Any] = []
    for block in raw.split("\n\n"):
        if not block:
            continue
        for line in block.split("\n"):
            if line.startswith(":"):
                items.append(("comment", line[1:].strip()))
            elif line.startswith("data:"):
                payload = line[5:].strip()
                items.append(json.loads(payload) if payload else "")
            else:
                raise AssertionError(f"unexpected SSE line {line!r}")
    return items


async def message(client: httpx.AsyncClient, token: str, session_id: str, text: str) -> list[Any]:
    answer = await client.post("/run_sse", json=run_body(session_id, text), headers=auth(token))
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/event-stream")
    return [item for item in parse_sse(answer.text) if isinstance(item, dict)]


def fixture_events(name: str) -> list[Any]:
    return [item for item in parse_sse((FIXTURES / name).read_text()) if isinstance(item, dict)]


def adk_kind(event: dict[str, Any]) -> str:
    if "error" in event:
        return "error"
    if event.get("author") == "system":
        return "system"
    parts = event["content"]["parts"]
    if not parts:
        return "silent"
    if "functionCall" in parts[0]:
        return "call"
    if "functionResponse" in parts[0]:
        return "response"
    return "partial" if event.get("partial") else "text"


def adk_shape(event: dict[str, Any]) -> tuple[str, frozenset[str], frozenset[str]]:
    """The kind of an ADK event, its keys, and the keys of its first part's payload."""
    kind = adk_kind(event)
    inner: frozenset[str] = frozenset()
    if kind in ("call", "response"):
        part = event["content"]["parts"][0]
        inner = frozenset(part["functionCall" if kind == "call" else "functionResponse"])
    return kind, frozenset(event), inner


async def upload(client: httpx.AsyncClient, token: str, session_id: str, *files: Path) -> dict[str, Any]:
    payload = [("files", (path.name, path.read_bytes(), "video/mp4")) for path in files]
    answer = await client.post(f"/api/upload-video/nemo_agent/me/{session_id}", files=payload, headers=auth(token))
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()["data"]
    return data


# -- auth and sessions -------------------------------------------------------------------------------------


async def test_token_needs_a_client_id_and_renews_for_the_same_user(client: httpx.AsyncClient) -> None:
    for headers in ({}, {"X-Client-Id": "x" * 65}):
        answer = await client.post("/api/auth/anonymous-token", headers=headers)
        assert answer.status_code == 400
        assert answer.json() == {"code": 400, "message": "missing X-Client-Id"}
    first = await grant(client)
    assert first["token"].startswith("nmv_usr_")
    assert first["credits"] == 100
    expires = time.mktime(time.strptime(first["expires_at"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert abs(expires - time.time() - 7 * 24 * 3600) < 120
    second = await grant(client)
    assert second["user_id"] == first["user_id"]
    assert second["token"] != first["token"]
    assert (await grant(client, "client-2"))["user_id"] != first["user_id"]


async def test_expired_or_missing_token_is_1001(client: httpx.AsyncClient, nemo_server: TestLocalNemo) -> None:
    token = (await grant(client))["token"]
    assert (await client.get("/api/credits/balance/simple", headers=auth(token))).status_code == 200
    for headers in ({}, auth("nmv_usr_unknown")):
        answer = await client.get("/api/credits/balance/simple", headers=headers)
        assert (answer.status_code, answer.json()) == (401, {"code": 1001, "message": "token expired"})
    assert nemo_server.expire_tokens() == 1
    answer = await client.get("/api/credits/balance/simple", headers=auth(token))
    assert (answer.status_code, answer.json()["code"]) == (401, 1001)
    # The admin API does the same for a server in another process.
    fresh = (await grant(client))["token"]
    assert (await client.post("/_localnemo/expire-tokens")).json()["data"]["expired"] == 1
    assert (await client.get("/api/credits/balance/simple", headers=auth(fresh))).status_code == 401


async def test_sessions_belong_to_their_user(client: httpx.AsyncClient) -> None:
    mine = (await grant(client, "me"))["token"]
    theirs = (await grant(client, "them"))["token"]
    sid = await new_session(client, mine)
    assert len(sid) == 19
    assert sid.isdigit()
    state = (await client.get(f"/api/state/nemo_agent/me/{sid}/latest", headers=auth(mine))).json()["data"]
    assert state["state"]["draft"] == {"t": [], "m": {}}
    assert set(state["state"]) == {"draft", "video_infos", "generated_media", "canvas_config", "video_analyses"}
    not_found = {"code": 1002, "message": "session not found"}
    for other_sid, token in ((sid, theirs), ("1234567890123456789", mine)):
        headers = auth(token)
        calls = [
            client.get(f"/api/state/nemo_agent/me/{other_sid}/latest", headers=headers),
            client.post("/run_sse", json=run_body(other_sid, "hi"), headers=headers),
            client.post(
                f"/api/upload-video/nemo_agent/me/{other_sid}", json={"urls": ["http://x/a.mp4"]}, headers=headers
            ),
            client.post("/api/auth/claim-token", json={"task_id": "t", "session_id": other_sid}, headers=headers),
        ]
        for answer in await asyncio.gather(*calls):
            assert (answer.status_code, answer.json()) == (404, not_found)
    claim = await client.post(
        "/api/auth/claim-token", json={"task_id": state["task_id"], "session_id": sid}, headers=auth(mine)
    )
    assert claim.json()["data"]["claim_token"]
    assert claim.json()["data"]["expires_in"] > 0


# -- uploads -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [{"max_upload_bytes": 4096}])
async def test_upload_refuses_unsupported_types_and_oversized_files(
    client: httpx.AsyncClient, nemo_server: TestLocalNemo, tiny_mp4: Path
) -> None:
    token = (await grant(client))["token"]
    sid = await new_session(client, token)
    url = f"/api/upload-video/nemo_agent/me/{sid}"
    for name, ctype in (("notes.pdf", "application/pdf"), ("clip.mp4", "application/pdf"), ("photo.png", "video/mp4")):
        answer = await client.post(url, files=[("files", (name, b"0" * 10, ctype))], headers=auth(token))
        assert answer.status_code == 400
        body = answer.json()
        assert body["code"] == 4001
        assert "mp4" in body["message"]
        assert "mp3" in body["message"]
    answer = await client.post(
        url, files=[("files", ("big.mp4", tiny_mp4.read_bytes(), "video/mp4"))], headers=auth(token)
    )
    assert (answer.status_code, answer.json()["code"]) == (413, 4002)
    folder = nemo_server.state.sessions[sid].folder
    assert not folder.exists() or list(folder.iterdir()) == []  # the partial file is gone
    assert nemo_server.state.sessions[sid].video_infos == []


@pytest.mark.parametrize("options", [{"allow_private_urls": True}])  # the URL below is on 127.0.0.1
async def test_upload_applies_state_and_serves_the_file_with_ranges(
    client: httpx.AsyncClient, nemo_server: TestLocalNemo, tiny_mp4: Path
) -> None:
    token = (await grant(client))["token"]
    sid = await new_session(client, token)
    data = await upload(client, token, sid, tiny_mp4, tiny_mp4)
    assert data["session_state_applied"] is True
    first, second = data["files"]
    assert first["filename"] == "tiny clip.mp4"
    assert first["file_type"] == "video"
    assert first["duration"] == pytest.approx(1.0, abs=0.1)
    assert (first["width"], first["height"], first["fps"]) == (160, 120, 10)
    assert len(first["hash"]) == 64
    assert first["cdn_url"].startswith(f"{nemo_server.base_url}/files/{sid}/")
    assert first["cdn_url"] != second["cdn_url"]
    state = (await client.get(f"/api/state/nemo_agent/me/{sid}/latest", headers=auth(token))).json()["data"]["state"]
    assert len(state["video_infos"]) == 2
    (track,) = state["draft"]["t"]
    assert track["tt"] == 0
    assert [segment["m"]["start"] for segment in track["sg"]] == [0, track["sg"][0]["d"]]
    assert track["sg"][0]["m"]["src"] == first["cdn_url"]
    assert track["sg"][0]["m"]["title"] == "tiny clip"
    ranged = await client.get(first["cdn_url"], headers={"Range": "bytes=0-9"})
    assert ranged.status_code == 206
    assert ranged.content == tiny_mp4.read_bytes()[:10]
    # Upload by URL, from this server's own file URL into another session.
    other = await new_session(client, token)
    answer = await client.post(
        f"/api/upload-video/nemo_agent/me/{other}",
        json={"urls": [first["cdn_url"]], "source_type": "url"},
        headers=auth(token),
    )
    assert answer.status_code == 200, answer.text
    fetched = answer.json()["data"]["files"][0]
    assert fetched["hash"] == first["hash"]
    assert fetched["file_type"] == "video"


# -- the event stream ----------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [{"silent_every": 0}])
async def test_adk_stream_has_the_fixtures_shapes(client: httpx.AsyncClient, nemo_server: TestLocalNemo) -> None:
    grant_data = await grant(client)
    token = grant_data["token"]
    sid = await new_session(client, token)
    events = await message(client, token, sid, 'title "Urban Dreams"')
    expected = {
        adk_shape(e) for name in ("adk_edit_with_text.sse", "adk_partial_text.sse") for e in fixture_events(name)
    }
    kinds = [adk_kind(e) for e in events]
    assert kinds[:2] == ["call", "response"]
    assert kinds[-1] == "text"
    assert set(kinds[2:-1]) == {"partial"}
    for event in events:
        if adk_kind(event) != "text":
            assert adk_shape(event) in expected, event
    final = events[-1]
    assert final["partial"] is False
    assert "".join(e["content"]["parts"][0]["text"] for e in events[2:-1]) == final["content"]["parts"][0]["text"]
    assert "Urban Dreams" in final["content"]["parts"][0]["text"]
    assert events[1]["content"]["role"] == "user"
    assert (
        events[0]["content"]["parts"][0]["functionCall"]["id"]
        == events[1]["content"]["parts"][0]["functionResponse"]["id"]
    )
    assert len({e["invocationId"] for e in events}) == 1
    assert nemo_server.state.users[grant_data["user_id"]].credits == 99
    assert nemo_server.state.max_concurrent_runs[sid] == 1


@pytest.mark.parametrize("options", [{"silent_every": 1, "partial_text": False}])
async def test_adk_silent_turns_and_errors(client: httpx.AsyncClient) -> None:
    token = (await grant(client))["token"]
    sid = await new_session(client, token)
    silent = await message(client, token, sid, "add background music")
    assert [adk_kind(e) for e in silent] == ["call", "response", "silent"]
    assert adk_shape(silent[-1]) == adk_shape(fixture_events("adk_silent_edit.sse")[-1])
    assert silent[-1]["turnComplete"] is True
    failed = await message(client, token, sid, "simulate an error")
    assert [adk_kind(e) for e in failed] == ["text", "error", "system"]
    error_forms = [adk_shape(e) for e in fixture_events("adk_error.sse")[1:]]
    assert [adk_shape(e) for e in failed[1:]] == error_forms
    assert failed[2]["content"]["parts"][0]["text"].startswith("Error: ")
    credits = (await client.get("/api/credits/balance/simple", headers=auth(token))).json()["data"]
    assert credits == {"available": 99, "frozen": 0, "total": 99}  # the failed turn is not charged


@pytest.mark.parametrize("options", [{"dialect": "simple", "silent_every": 0}])
async def test_simple_dialect_has_the_fixtures_shapes(client: httpx.AsyncClient) -> None:
    token = (await grant(client))["token"]
    sid = await new_session(client, token)
    events = await message(client, token, sid, "add background music at 35%")
    expected = {e["type"]: set(e) for e in fixture_events("simple_dialect.sse")}
    assert [e["type"] for e in events] == ["tool_call", "tool_result", "text"]
    for event in events:
        assert set(event) == expected[event["type"]]
    assert "35%" in events[-1]["content"]
    generate = await message(client, token, await new_session(client, token), "generate a video of a city at night")
    assert [e["type"] for e in generate] == ["text"]
    assert "offline" in generate[0]["content"]


class _WaitingAgent:
    """Says nothing until released, so that the server has to send heartbeats."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def run(self, session: SessionRecord, message: str) -> AsyncIterator[AgentEvent]:
        await self.release.wait()
        yield AgentText("done")


@pytest.mark.parametrize("dialect", ["simple", "adk"])
async def test_heartbeats_rotate_while_the_agent_is_silent(tmp_path: Path, dialect: str) -> None:
    agent = _WaitingAgent()
    config = LocalNemoConfig(data_dir=tmp_path, dialect=dialect, heartbeat_seconds=0.01)
    async with LocalNemo(config, agent=agent) as server, httpx.AsyncClient(base_url=server.base_url) as http:
        token = (await grant(http))["token"]
        sid = await new_session(http, token)
        wanted = {": ping", "data:"} | ({'data: {"type":"heartbeat"}'} if dialect == "simple" else set())
        seen: set[str] = set()
        lines: list[str] = []
        async with http.stream("POST", "/run_sse", json=run_body(sid, "hi"), headers=auth(token)) as answer:
            async for line in answer.aiter_lines():
                lines.append(line)
                if line:
                    seen.add(line)
                if wanted <= seen:
                    agent.release.set()
        assert wanted <= seen
        final = json.loads(lines[-2].removeprefix("data: "))
        assert (final if dialect == "simple" else final["content"]) == (
            {"type": "text", "content": "done"}
            if dialect == "simple"
            else {"role": "model", "parts": [{"text": "done"}]}
        )


async def test_out_of_credits_is_refused_before_the_stream(
    client: httpx.AsyncClient, nemo_server: TestLocalNemo
) -> None:
    data = await grant(client)
    sid = await new_session(client, data["token"])
    nemo_server.set_credits(data["user_id"], 0)
    answer = await client.post("/run_sse", json=run_body(sid, "hi"), headers=auth(data["token"]))
    assert (answer.status_code, answer.json()) == (403, {"code": 2001, "message": "insufficient credits"})
    bad = await client.post("/run_sse", json={"app_name": "nemo_agent"}, headers=auth(data["token"]))
    assert bad.status_code == 400


# -- exports -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [{"job_shape": "wrapped"}, {"job_shape": "top"}])
async def test_render_completes_and_the_result_downloads(
    client: httpx.AsyncClient, nemo_server: TestLocalNemo, tiny_mp4: Path, options: dict[str, Any]
) -> None:
    grant_data = await grant(client)
    token = grant_data["token"]
    sid = await new_session(client, token)
    await upload(client, token, sid, tiny_mp4)
    draft = (await client.get(f"/api/state/nemo_agent/me/{sid}/latest", headers=auth(token))).json()["data"]["state"][
        "draft"
    ]
    body = {"id": "render_1", "sessionId": sid, "draft": draft, "output": {"format": "mp4", "quality": "high"}}
    created = await client.post("/api/render/proxy/lambda", json=body, headers=auth(token))
    assert created.status_code == 200
    wrapped = options["job_shape"] == "wrapped"
    job = created.json()["data"] if wrapped else created.json()
    assert job["status"] == "pending"
    jobs: list[dict[str, Any]] = []

    async def completed() -> bool:
        answer = (await client.get("/api/render/proxy/lambda/render_1", headers=auth(token))).json()
        jobs.append(answer)
        return bool((answer["data"] if wrapped else answer)["status"] == "completed")

    await wait_for(completed, what="render_1 to complete")
    fixture = json.loads((FIXTURES / ("render_wrapped.json" if wrapped else "render_top_level.json")).read_text())
    final = jobs[-1]
    if wrapped:
        assert set(final) == set(fixture)
        assert set(final["data"]) == set(fixture["data"])
        url = final["data"]["outputUrl"]
    else:
        assert set(final) == set(fixture)
        assert set(final["output"]) == set(fixture["output"])
        assert final["output"]["duration"] == pytest.approx(1.0, abs=0.1)
        url = final["output"]["url"]
    # A signed link that names a random token, not the client's id; it needs no credentials.
    assert "/render-result/" in url
    assert "render_1" not in url
    result = await client.get(url)
    assert result.status_code == 200
    rendered = nemo_server.state.jobs[(grant_data["user_id"], "render_1")].output_path
    assert rendered is not None
    assert result.content == rendered.read_bytes()
    info = await probe(rendered)  # the FFmpeg engine's H.264/AAC MP4 of the 1-second clip
    assert info is not None
    assert info.kind == "video"
    assert info.has_audio
    assert info.duration == pytest.approx(1.0, abs=0.05)


async def test_render_refusals_failures_and_cancel(
    client: httpx.AsyncClient, nemo_server: TestLocalNemo, tiny_mp4: Path
) -> None:
    grant_data = await grant(client)
    token = grant_data["token"]
    sid = await new_session(client, token)
    empty = {"id": "render_empty", "sessionId": sid, "draft": {"t": [], "m": {}}, "output": {}}
    unattributed = await client.post(
        "/api/render/proxy/lambda", json=empty, headers={"Authorization": f"Bearer {token}"}
    )
    assert (unattributed.status_code, unattributed.json()["code"]) == (402, 402)
    failed = await client.post("/api/render/proxy/lambda", json=empty, headers=auth(token))
    assert failed.json() == {
        "success": True,
        "data": {
            "id": "render_empty",
            "status": "failed",
            "progress": 0,
            "error": "invalid draft: the timeline is empty",
            "createdAt": failed.json()["data"]["createdAt"],
        },
    }
    again = await client.post("/api/render/proxy/lambda", json=empty, headers=auth(token))
    assert (again.status_code, again.json()) == (409, {"code": 409, "message": "render id already exists"})
    unknown = await client.get("/api/render/proxy/lambda/render_nope", headers=auth(token))
    assert (unknown.status_code, unknown.json()["code"]) == (404, 404)

    nemo_server.config.render_step_seconds = 30  # long enough to cancel in the middle
    await upload(client, token, sid, tiny_mp4)
    draft = nemo_server.state.sessions[sid].draft.to_wire()
    body = {"id": "render_slow", "sessionId": sid, "draft": draft, "output": {}}
    assert (await client.post("/api/render/proxy/lambda", json=body, headers=auth(token))).status_code == 200
    slow = nemo_server.state.jobs[(grant_data["user_id"], "render_slow")]
    await wait_for(lambda: slow.status == "processing", what="the render to start")
    cancel = await client.post("/api/render/proxy/lambda/render_slow/cancel", headers=auth(token))
    assert cancel.json() == {"code": 0, "data": {}}
    status = (await client.get("/api/render/proxy/lambda/render_slow", headers=auth(token))).json()["data"]
    assert (status["status"], status["error"]) == ("failed", "cancelled")
    assert (await client.get(f"{nemo_server.base_url}/render-result/{slow.token}.mp4")).status_code == 404


# -- faults and the call log ---------------------------------------------------------------------------------


async def test_fail_faults_and_the_call_log(client: httpx.AsyncClient, nemo_server: TestLocalNemo) -> None:
    token = (await grant(client))["token"]
    nemo_server.faults.fail("credits", 1001, message="token expired")
    nemo_server.faults.fail("credits", 429, html=True)
    answer = await client.get("/api/credits/balance/simple", headers=auth(token))
    assert (answer.status_code, answer.json()) == (200, {"code": 1001, "message": "token expired"})
    answer = await client.get("/api/credits/balance/simple", headers=auth(token))
    assert answer.status_code == 429
    assert answer.headers["content-type"].startswith("text/html")
    assert answer.text == "<html><body><h1>429 Too Many Requests</h1></body></html>"
    assert (await client.get("/api/credits/balance/simple", headers=auth(token))).status_code == 200
    # Until cleared, through the admin API.
    fault = {"kind": "fail", "endpoint": "credits", "code": 503, "times": -1}
    assert (await client.post("/_localnemo/faults", json=fault)).status_code == 200
    for _ in range(3):
        assert (await client.get("/api/credits/balance/simple", headers=auth(token))).status_code == 503
    assert (await client.post("/_localnemo/faults", json={"kind": "clear"})).status_code == 200
    assert (await client.get("/api/credits/balance/simple", headers=auth(token))).status_code == 200
    assert (
        await client.post("/_localnemo/faults", json={"kind": "fail", "endpoint": "nope", "code": 1})
    ).status_code == 400
    assert nemo_server.faults.count("credits") == 7
    assert nemo_server.faults.count("token") == 1
    calls = (await client.get("/_localnemo/calls")).json()["data"]["calls"]
    assert [call["endpoint"] for call in calls] == ["token"] + ["credits"] * 7
    assert calls[1]["headers"]["X-Skill-Source"] == "tests"
    assert calls[1]["path"] == "/api/credits/balance/simple"
    # No credential is ever kept: not the bearer token, not the client id that buys one, not a token
    # smuggled into another header.
    logged = json.dumps(calls)
    assert token not in logged
    assert "client-1" not in logged
    assert all("authorization" not in {name.lower() for name in call["headers"]} for call in calls)
    smuggled = {**auth(token), "X-Skill-Platform": f"Bearer {token}", "Cookie": f"t={token}"}
    await client.get("/api/credits/balance/simple", headers=smuggled)
    assert token not in json.dumps((await client.get("/_localnemo/calls")).json())
    missing = await client.get("/nothing/here")
    assert (missing.status_code, missing.json()["code"]) == (404, 404)


async def test_the_call_log_keeps_no_capability_of_a_result_or_a_file(
    client: httpx.AsyncClient, nemo_server: TestLocalNemo, tiny_mp4: Path
) -> None:
    token = (await grant(client))["token"]
    sid = await new_session(client, token)
    stored = (await upload(client, token, sid, tiny_mp4))["files"][0]["cdn_url"]
    draft = (await client.get(f"/api/state/nemo_agent/me/{sid}/latest", headers=auth(token))).json()
    body = {"id": "render_1", "sessionId": sid, "draft": draft["data"]["state"]["draft"], "output": {}}
    assert (await client.post("/api/render/proxy/lambda", json=body, headers=auth(token))).status_code == 200

    async def link() -> str | None:
        data = (await client.get("/api/render/proxy/lambda/render_1", headers=auth(token))).json()["data"]
        return data.get("outputUrl") if data["status"] == "completed" else None

    result = await wait_for(link, what="the render")
    assert (await client.get(result)).status_code == 200
    assert (await client.get(stored)).status_code == 200
    calls = (await client.get("/_localnemo/calls")).json()["data"]["calls"]
    paths = {call["endpoint"]: call["path"] for call in calls}
    assert paths["result"] == "/render-result/***.mp4"
    assert paths["file"] == f"/files/{sid}/***"
    logged = json.dumps(calls)
    result_token = httpx.URL(result).path.removeprefix("/render-result/").removesuffix(".mp4")
    assert result_token not in logged
    assert httpx.URL(stored).path.rsplit("/", 1)[1] not in logged


def test_the_call_log_is_bounded() -> None:
    plan = FaultPlan(max_calls=3)
    for index in range(5):
        plan.record(Call("credits", "GET", f"/{index}", {}))
    assert [call.path for call in plan.calls] == ["/2", "/3", "/4"]
    assert FaultPlan().calls == []
    assert MAX_CALLS == 10_000



async def test_the_product_server_has_no_test_controls(tmp_path: Path) -> None:
    async with LocalNemo(LocalNemoConfig(data_dir=tmp_path)) as server, httpx.AsyncClient(
        base_url=server.base_url
    ) as http:
        assert (await http.get("/_localnemo/calls")).status_code == 404
        fault = {"kind": "fail", "endpoint": "credits", "code": 503, "times": -1}
        assert (await http.post("/_localnemo/faults", json=fault)).status_code == 404
        assert (await http.post("/_localnemo/expire-tokens")).status_code == 404
        assert not hasattr(server, "faults")
        # A user who types a test's trigger phrase gets an ordinary answer, not an injected failure.
        token = (await grant(http))["token"]
        sid = await new_session(http, token)
        answer = await message(http, token, sid, "simulate an error")
        assert [adk_kind(e) for e in answer if adk_kind(e) in ("error", "system")] == []
        # The product's agent always answers in words: no edit ends silent, however many there are.
        for text in ("fade in", 'title "One"', 'title "Two"', "add music", 'title "Three"', "fade out"):
            assert adk_kind((await message(http, token, sid, text))[-1]) == "text", text


async def test_the_test_server_runs_as_its_own_process(tmp_path: Path) -> None:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
    env = {**os.environ, "LOCALNEMO_DATA_DIR": str(tmp_path / "nemo"), "PYTHONPATH": str(ROOT)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "localnemo.testing", "--port", str(port),
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

            async def up() -> bool:
                assert process.returncode is None, "python -m localnemo.testing exited"
                try:
                    await http.get("/_localnemo/calls")
                except httpx.TransportError:
                    return False
                return True

            await wait_for(up, within=30, what="python -m localnemo.testing to answer")
            fault = {"kind": "fail", "endpoint": "credits", "code": 503}
            assert (await http.post("/_localnemo/faults", json=fault)).status_code == 200
            assert (await http.get("/api/credits/balance/simple")).status_code == 503
            calls = (await http.get("/_localnemo/calls")).json()["data"]["calls"]
            assert [call["endpoint"] for call in calls] == ["credits"]
    finally:
        if process.returncode is None:
            process.terminate()
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, stderr.decode(errors="replace")

async def test_dropped_stream_is_incomplete_and_the_turn_still_completes(
    client: httpx.AsyncClient, nemo_server: TestLocalNemo
) -> None:
    token = (await grant(client))["token"]
    sid = await new_session(client, token)
    nemo_server.faults.stream("drop", after_events=1)
    lines: list[str] = []

    async def read_all() -> None:
        async with client.stream("POST", "/run_sse", json=run_body(sid, "add music"), headers=auth(token)) as answer:
            async for line in answer.aiter_lines():
                lines.append(line)

    with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
        await read_all()
    assert [line for line in lines if line.startswith("data: ")][:1]
    assert len([line for line in lines if line.startswith("data: ")]) == 1
    # The backend keeps working after a dropped stream: the state shows the edit.
    session = nemo_server.state.sessions[sid]
    await wait_for(
        lambda: any(track["tt"] == 1 for track in session.draft.to_wire()["t"]), what="the edit in the draft"
    )
    await wait_for(lambda: nemo_server.state.active_runs[sid] == 0, what="the run to end")
    assert nemo_server.state.max_concurrent_runs[sid] == 1
    # The next stream is normal again.
    assert await message(client, token, sid, "add music")


async def test_an_unexpected_exception_is_a_plain_500(
    client: httpx.AsyncClient, nemo_server: TestLocalNemo, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(token: str) -> None:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(nemo_server.state, "user_for_token", broken)
    answer = await client.get("/api/credits/balance/simple", headers=auth("x"))
    assert (answer.status_code, answer.json()) == (500, {"code": 500, "message": "internal error"})


# -- the pieces behind the server ----------------------------------------------------------------------------


async def test_probe_reads_media_and_refuses_other_files(tiny_mp4: Path, tmp_path: Path) -> None:
    info = await probe(tiny_mp4)
    assert info is not None
    assert (info.kind, info.width, info.height, info.fps) == ("video", 160, 120, 10)
    assert info.duration == pytest.approx(1.0, abs=0.1)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    assert await probe(text) is None
    assert await probe(tmp_path / "missing.mp4") is None


async def test_planner_agent_rules_without_media(tmp_path: Path) -> None:
    session = SessionRecord("1", "t", "p", "en", "u", tmp_path)
    agent = SimpleAgent()  # the planner-backed agent, under its first name

    async def say(text: str) -> str:
        return " ".join([e.text async for e in agent.run(session, text) if isinstance(e, AgentText)])

    assert "no video on the timeline" in await say("remove the pauses")
    assert "1080×1920" in await say("make it 9:16 please")
    assert session.canvas_config == {"width": 1080, "height": 1920, "aspect_ratio": "9:16"}
    await say("export in 4k")
    assert session.draft.to_wire()["m"]["resolution"] == "4k"
    assert session.draft.to_wire()["m"]["width"] == 2160
    # Captions from speech need a clip to listen to: an honest answer, and nothing fake on the timeline.
    answer = await say("加字幕")
    assert "还没有可以加字幕的视频" in answer
    assert not [track for track in session.draft.to_wire()["t"] if track["tt"] == 7]
    assert "标题" in await say("标题：城市之夜")
    assert any(s["m"].get("text") == "城市之夜" for track in session.draft.to_wire()["t"] for s in track["sg"])
    unchanged = session.draft.to_wire()
    assert (await say("what a nice day")).startswith('I didn\'t understand "what a nice day", so nothing changed')
    assert session.draft.to_wire() == unchanged


def test_config_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LOCALNEMO_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LOCALNEMO_DIALECT", "simple")
    monkeypatch.setenv("LOCALNEMO_JOB_SHAPE", "top")
    monkeypatch.setenv("LOCALNEMO_RENDER_STEP_SECONDS", "0.1")
    monkeypatch.setenv("LOCALNEMO_MAX_FILES_PER_UPLOAD", "3")
    monkeypatch.setenv("LOCALNEMO_FETCH_TIMEOUT_SECONDS", "7")
    monkeypatch.setenv("LOCALNEMO_CREDITS", "5")
    config = LocalNemoConfig.from_env()
    assert (config.data_dir, config.dialect, config.job_shape) == (tmp_path, "simple", "top")
    assert (config.render_step_seconds, config.initial_credits) == (0.1, 5)
    assert (config.max_files_per_upload, config.fetch_timeout_seconds) == (3, 7.0)
    monkeypatch.setenv("LOCALNEMO_DIALECT", "xml")
    with pytest.raises(ValueError, match="LOCALNEMO_DIALECT"):
        LocalNemoConfig.from_env()


async def test_the_disk_quota_walks_the_data_folder_again_only_near_the_limit_or_after_a_while(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from localnemo import quota as quota_module
    from localnemo.quota import DiskQuota
    from localnemo.state import LocalNemoState

    walks: list[Path] = []
    real = quota_module.folder_size

    def counted(folder: Path) -> int:
        walks.append(folder)
        return real(folder)

    monkeypatch.setattr(quota_module, "folder_size", counted)
    config = LocalNemoConfig(data_dir=tmp_path, max_disk_mb=1)
    quota = DiskQuota(config, LocalNemoState(tmp_path, initial_credits=1, token_ttl_seconds=60))
    # Far under the limit: one walk serves a burst of exports and small uploads.
    for _ in range(20):
        await quota.make_room(0)
    await quota.make_room(10_000)
    assert len(walks) == 1
    # A file written meanwhile by someone else (a render) is seen at the next walk, not before.
    (tmp_path / "big").write_bytes(b"x" * 950_000)
    await quota.make_room(0)
    assert len(walks) == 1
    # Near the limit it looks again, and refuses what does not fit.
    with pytest.raises(ApiError):
        await quota.make_room(1_000_000)
    assert len(walks) == 2
    # And a measure grown old is taken again, whatever it said.
    (tmp_path / "big").unlink()
    quota._measured_at -= 10  # as if the last walk were 10 s old
    await quota.make_room(0)
    assert len(walks) == 3
