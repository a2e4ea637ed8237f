"""The NemoVideo client against localnemo over real loopback HTTP and SSE."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.config import NemoSettings
from bot.nemo import errors
from bot.nemo.auth import MemoryIdentityStore
from bot.nemo.client import NemoAccount, NemoClient
from bot.nemo.draft import describe_changes
from bot.nemo.events import ErrorEvent, HeartbeatEvent, StreamEvent, TextEvent, ToolCallEvent, ToolResultEvent
from bot.nemo.models import RenderJob, SessionInfo
from bot.nemo.timeline_model import Draft
from bot.nemo.uploads import UploadSource
from localnemo.render import RenderOutput
from localnemo.testing import TestLocalNemo
from tests.conftest import assert_video, fast_localnemo_config, fast_settings
from tests.waiting import await_within, wait_for


async def collect(account: NemoAccount, session_id: str, text: str) -> list[StreamEvent]:
    async with contextlib.aclosing(account.send_message(session_id, text)) as stream:
        return [event async for event in stream]


def texts(events: list[StreamEvent]) -> list[str]:
    return [e.text for e in events if isinstance(e, TextEvent)]


@pytest.fixture
async def account(nemo: NemoClient) -> NemoAccount:
    return nemo.account("tg:1")


@pytest.fixture
async def session_id(account: NemoAccount) -> str:
    return (await account.create_session("project", "en")).session_id


# -- every endpoint ---------------------------------------------------------------------------------


async def test_identity_is_issued_once_and_persisted(
    nemo: NemoClient, identities: MemoryIdentityStore, localnemo: TestLocalNemo
) -> None:
    account = nemo.account("tg:1")
    credits = await account.credits()
    assert credits.available == 100
    assert credits.total == credits.available + credits.frozen
    await account.credits()
    assert localnemo.faults.count("token") == 1
    record = identities.records["tg:1"]
    assert record.token
    assert record.token.startswith("nmv_usr_")
    assert record.token not in repr(record)
    # Every call carries the three attribution headers.
    for call in localnemo.faults.calls:
        headers = {k.lower(): v for k, v in call.headers.items()}
        assert headers["x-skill-source"] == "nemobot"
        assert headers["x-skill-platform"] == "tests"
        assert headers["x-skill-version"]


async def test_each_chat_identity_has_its_own_client_id(nemo: NemoClient, identities: MemoryIdentityStore) -> None:
    await nemo.account("tg:1").credits()
    await nemo.account("tg:2").credits()
    assert identities.records["tg:1"].client_id != identities.records["tg:2"].client_id


async def test_a_restarted_client_reuses_the_stored_token(
    http: httpx.AsyncClient, settings: Any, identities: MemoryIdentityStore, localnemo: TestLocalNemo
) -> None:
    await NemoClient(http, settings, identities).account("tg:1").credits()
    await NemoClient(http, settings, identities).account("tg:1").credits()
    assert localnemo.faults.count("token") == 1


async def test_session_state_and_claim_link(account: NemoAccount) -> None:
    info = await account.create_session("holiday", "zh")
    assert info.session_id.isdigit()
    assert info.task_id
    state = await account.state(info.session_id)
    assert not state.draft.exportable
    link = await account.claim_link(info.task_id, info.session_id)
    assert link.startswith("https://nemovideo.com/workspace/claim?ct=")


async def test_upload_files_from_path_and_stream_then_export_and_download(
    account: NemoAccount,
    session_id: str,
    sample_video: Path,
    tmp_path: Path,
    nemo: NemoClient,
    localnemo: TestLocalNemo,
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        with sample_video.open("rb") as f:
            while block := f.read(4096):
                yield block

    result = await account.upload_files(
        session_id,
        [
            UploadSource.from_path(sample_video),
            UploadSource.from_stream("second clip.mp4", chunks(), content_type="video/mp4"),
        ],
    )
    assert localnemo.faults.count("upload") == 1
    assert [f.filename for f in result.files] == ["clip.mp4", "second clip.mp4"]
    assert all(f.file_type == "video" for f in result.files)
    assert result.files[0].duration == pytest.approx(2.0, abs=0.2)
    state = await account.state(session_id)
    assert state.draft.exportable
    assert len(state.video_infos) == 2

    job = await account.submit_export(session_id, state.draft)
    assert job.id.startswith("render_")
    seen: list[RenderJob] = []

    async def on_progress(update: RenderJob) -> None:
        seen.append(update)

    done = await account.wait_for_export(job.id, on_progress)
    assert done.done
    assert done.url
    assert any(update.status == "processing" for update in seen)
    out = tmp_path / "result.mp4"
    size = await nemo.download(done.url, out)
    assert size == out.stat().st_size > 0
    await assert_video(out, seconds=4.0)  # the two 2-second clips, joined


async def test_upload_by_url(
    account: NemoAccount, session_id: str, localnemo: TestLocalNemo, sample_video: Path
) -> None:
    first = await account.upload_files(session_id, [UploadSource.from_path(sample_video)])
    url = first.files[0].cdn_url
    assert url
    other = await account.create_session("second", "en")
    result = await account.upload_urls(other.session_id, [url])
    assert result.files[0].file_type == "video"
    assert (await account.state(other.session_id)).draft.exportable


async def test_cancel_export(
    account: NemoAccount, session_id: str, sample_video: Path, localnemo: TestLocalNemo
) -> None:
    localnemo.config.render_step_seconds = 5
    await account.upload_files(session_id, [UploadSource.from_path(sample_video)])
    job = await account.submit_export(session_id, (await account.state(session_id)).draft)
    await account.cancel_export(job.id)
    with pytest.raises(errors.ExportFailed):
        await account.wait_for_export(job.id)


# -- the event stream ---------------------------------------------------------------------------------


@pytest.mark.parametrize("localnemo_options", [{"dialect": "adk"}, {"dialect": "simple"}])
async def test_edit_in_both_dialects(
    account: NemoAccount, session_id: str, sample_video: Path, localnemo_options: dict[str, Any]
) -> None:
    await account.upload_files(session_id, [UploadSource.from_path(sample_video)])
    events = await collect(account, session_id, "add background music")
    assert any(isinstance(e, ToolCallEvent) and e.name == "edit_multitrack" for e in events)
    assert any(isinstance(e, ToolResultEvent) for e in events)
    assert len(texts(events)) == 1
    assert "music" in texts(events)[0].lower()
    draft = (await account.state(session_id)).draft
    assert any(track.tt == 1 for track in draft.t)


@pytest.mark.parametrize("localnemo_options", [{"dialect": "adk", "partial_text": True}])
async def test_partial_chunks_are_shown_once(account: NemoAccount, session_id: str) -> None:
    events = await collect(account, session_id, 'title "Urban Dreams"')
    assert len(texts(events)) == 1
    assert "Urban Dreams" in texts(events)[0]


@pytest.mark.parametrize("localnemo_options", [{"silent_every": 1}])
async def test_silent_completion_is_seen_through_state(account: NemoAccount, session_id: str) -> None:
    before = (await account.state(session_id)).draft
    events = await collect(account, session_id, 'title "Urban Dreams"')
    assert texts(events) == []
    after = (await account.state(session_id)).draft
    assert describe_changes(before, after) == ["added the title 'Urban Dreams' (0–3 s)"]


@pytest.mark.parametrize("localnemo_options", [{"heartbeat_seconds": 0.01, "event_delay_seconds": 0.05}])
async def test_heartbeats_while_the_agent_works(account: NemoAccount, session_id: str) -> None:
    events = await collect(account, session_id, "add background music")
    assert any(isinstance(e, HeartbeatEvent) for e in events)
    assert texts(events)


async def test_dropped_stream_is_a_typed_error_and_not_resent(
    account: NemoAccount, session_id: str, localnemo: TestLocalNemo
) -> None:
    localnemo.faults.stream("drop", after_events=1)
    seen: list[StreamEvent] = []

    async def consume() -> None:
        async with contextlib.aclosing(account.send_message(session_id, "add background music")) as stream:
            async for event in stream:
                seen.append(event)

    with pytest.raises(errors.StreamInterrupted):
        await consume()
    assert seen, "the events before the drop still reach the caller"
    assert localnemo.faults.count("run_sse") == 1


async def test_heartbeat_only_stream_times_out(
    http: httpx.AsyncClient, localnemo: TestLocalNemo, identities: MemoryIdentityStore
) -> None:
    nemo = NemoClient(http, fast_settings(localnemo.base_url, heartbeat_timeout_seconds=0.3), identities)
    account = nemo.account("tg:1")
    sid = (await account.create_session("p", "en")).session_id
    localnemo.faults.stream("heartbeats_only")
    with pytest.raises(errors.StreamTimeout, match="only heartbeats"):
        await collect(account, sid, "add music")
    assert localnemo.faults.count("run_sse") == 1


async def test_hanging_stream_times_out(
    http: httpx.AsyncClient, localnemo: TestLocalNemo, identities: MemoryIdentityStore
) -> None:
    nemo = NemoClient(http, fast_settings(localnemo.base_url, heartbeat_timeout_seconds=0.3), identities)
    account = nemo.account("tg:1")
    sid = (await account.create_session("p", "en")).session_id
    localnemo.faults.stream("hang", after_events=1)
    with pytest.raises(errors.StreamTimeout):
        await collect(account, sid, "add music")
    assert localnemo.faults.count("run_sse") == 1


async def test_slow_stream_hits_the_overall_limit(
    http: httpx.AsyncClient, localnemo: TestLocalNemo, identities: MemoryIdentityStore
) -> None:
    nemo = NemoClient(http, fast_settings(localnemo.base_url, stream_timeout_seconds=0.3), identities)
    account = nemo.account("tg:1")
    sid = (await account.create_session("p", "en")).session_id
    localnemo.faults.stream("slow", delay=0.2, times=1)
    with pytest.raises(errors.StreamTimeout, match="no result within"):
        await collect(account, sid, "add music and a title")


async def test_backend_error_inside_the_stream(account: NemoAccount, session_id: str) -> None:
    events = await collect(account, session_id, "please fail this edit")
    assert any(isinstance(e, ErrorEvent) for e in events) or texts(events)


# -- errors -------------------------------------------------------------------------------------------


async def test_token_expiry_is_renewed_invisibly(
    account: NemoAccount, session_id: str, localnemo: TestLocalNemo, identities: MemoryIdentityStore
) -> None:
    old = identities.records["tg:1"].client_id
    localnemo.expire_tokens()
    assert (await account.state(session_id)).draft is not None  # same session: same user after renewal
    events = await collect(account, session_id, "add background music")
    assert texts(events)
    assert localnemo.faults.count("token") == 2
    assert identities.records["tg:1"].client_id == old


async def test_1001_on_the_stream_is_renewed_before_anything_is_sent(
    account: NemoAccount, session_id: str, localnemo: TestLocalNemo
) -> None:
    localnemo.expire_tokens()
    events = await collect(account, session_id, "add background music")
    assert texts(events)
    accepted = [c for c in localnemo.faults.calls if c.endpoint == "run_sse"]
    assert len(accepted) == 2  # one refused with 1001 before the stream, one processed
    assert localnemo.state.max_concurrent_runs[session_id] == 1


async def test_rate_limit_once_recovers_twice_fails(account: NemoAccount, localnemo: TestLocalNemo) -> None:
    await account.credits()
    localnemo.faults.fail("credits", 429, html=True)
    assert (await account.credits()).available == 100
    localnemo.faults.fail("credits", 429, times=2)
    with pytest.raises(errors.RateLimited):
        await account.credits()
    assert localnemo.faults.count("credits") == 5


async def test_rate_limit_on_the_stream_waits_and_sends_once(
    account: NemoAccount, session_id: str, localnemo: TestLocalNemo
) -> None:
    localnemo.faults.fail("run_sse", 429)
    assert texts(await collect(account, session_id, "add background music"))
    localnemo.faults.fail("run_sse", 429, times=2)
    with pytest.raises(errors.RateLimited):
        await collect(account, session_id, "add background music")


async def trigger(endpoint: str, account: NemoAccount, info: SessionInfo | None, video: Path) -> None:
    """Make one call that reaches ``endpoint``."""
    if endpoint in ("token", "credits"):
        await account.credits()
        return
    if endpoint == "session":
        await account.create_session("p", "en")
        return
    assert info is not None
    sid = info.session_id
    if endpoint == "run_sse":
        await collect(account, sid, "add music")
    elif endpoint == "upload":
        await account.upload_files(sid, [UploadSource.from_path(video)])
    elif endpoint == "render":
        await account.submit_export(sid, (await account.state(sid)).draft)
    elif endpoint == "state":
        await account.state(sid)
    else:
        await account.claim_link(info.task_id, sid)


@pytest.mark.parametrize(
    ("endpoint", "code", "expected"),
    [
        ("session", 1002, errors.SessionNotFound),
        ("run_sse", 1002, errors.SessionNotFound),
        ("run_sse", 2001, errors.OutOfCredits),
        ("upload", 4001, errors.UnsupportedFileType),
        ("upload", 4002, errors.FileTooLarge),
        ("token", 400, errors.MissingClientId),
        ("render", 402, errors.ExportBlocked),
        ("state", 429, errors.RateLimited),
        ("credits", 503, errors.BackendUnavailable),
        ("claim", 418, errors.BadRequest),
    ],
)
async def test_every_error_code_is_typed(
    nemo: NemoClient, localnemo: TestLocalNemo, sample_video: Path, endpoint: str, code: int,
    expected: type[errors.NemoError],
) -> None:
    account = nemo.account("tg:9")
    info = None
    if endpoint != "token":
        info = await account.create_session("p", "en")
        await account.upload_files(info.session_id, [UploadSource.from_path(sample_video)])
    localnemo.faults.fail(endpoint, code, message="injected failure", times=-1)
    with pytest.raises(expected) as caught:
        await trigger(endpoint, account, info, sample_video)
    assert "Bearer" not in str(caught.value)
    assert "nmv_usr_" not in str(caught.value)


async def test_server_errors_retried_only_where_safe(
    account: NemoAccount, session_id: str, localnemo: TestLocalNemo, sample_video: Path
) -> None:
    localnemo.faults.fail("state", 502, html=True, times=2)
    await account.state(session_id)
    assert localnemo.faults.count("state") == 3
    localnemo.faults.fail("upload", 502, html=True)
    with pytest.raises(errors.BackendUnavailable):
        await account.upload_files(session_id, [UploadSource.from_path(sample_video)])
    assert localnemo.faults.count("upload") == 1  # not repeated: it may have been applied
    localnemo.faults.fail("run_sse", 500)
    with pytest.raises(errors.BackendUnavailable):
        await collect(account, session_id, "add music")
    assert localnemo.faults.count("run_sse") == 1


async def test_unreachable_backend_is_a_typed_error(http: httpx.AsyncClient) -> None:
    nemo = NemoClient(http, fast_settings("http://127.0.0.1:9"), MemoryIdentityStore())
    with pytest.raises(errors.BackendUnavailable):
        await nemo.account("tg:1").credits()


async def test_another_identitys_session_is_not_found(nemo: NemoClient) -> None:
    mine = await nemo.account("tg:1").create_session("p", "en")
    with pytest.raises(errors.SessionNotFound):
        await nemo.account("tg:2").state(mine.session_id)


async def test_fixed_token_is_used_as_is(http: httpx.AsyncClient, localnemo: TestLocalNemo) -> None:
    grant = await http.post(localnemo.base_url + "/api/auth/anonymous-token", headers={"X-Client-Id": "ops"})
    token = grant.json()["data"]["token"]
    before = localnemo.faults.count("token")
    nemo = NemoClient(http, fast_settings(localnemo.base_url, token=token), MemoryIdentityStore())
    a, b = nemo.account("tg:1"), nemo.account("dc:2")
    session = await a.create_session("p", "en")
    await b.state(session.session_id)  # one shared identity for every chat
    assert localnemo.faults.count("token") == before
    localnemo.expire_tokens()
    with pytest.raises(errors.TokenInvalid):
        await a.credits()


async def test_export_blocked_without_attribution(
    http: httpx.AsyncClient, localnemo: TestLocalNemo, sample_video: Path
) -> None:
    nemo = NemoClient(http, fast_settings(localnemo.base_url, skill_platform=""), MemoryIdentityStore())
    account = nemo.account("tg:1")
    sid = (await account.create_session("p", "en")).session_id
    await account.upload_files(sid, [UploadSource.from_path(sample_video)])
    with pytest.raises(errors.ExportBlocked):
        await account.submit_export(sid, (await account.state(sid)).draft)


@pytest.mark.parametrize("localnemo_options", [{"job_shape": "top"}, {"job_shape": "wrapped"}])
async def test_export_in_both_job_shapes_and_a_taken_id(
    account: NemoAccount,
    session_id: str,
    sample_video: Path,
    localnemo: TestLocalNemo,
    localnemo_options: dict[str, Any],
) -> None:
    await account.upload_files(session_id, [UploadSource.from_path(sample_video)])
    draft = (await account.state(session_id)).draft
    localnemo.faults.fail("render", 409, message="render id already exists")
    job = await account.submit_export(session_id, draft)
    assert localnemo.faults.count("render") == 2
    done = await account.wait_for_export(job.id)
    assert done.done
    assert done.progress == 100


async def test_failed_export_carries_the_reason(account: NemoAccount, session_id: str) -> None:
    job = await account.submit_export(session_id, {"t": [], "m": {}})
    with pytest.raises(errors.ExportFailed, match="empty"):
        await account.wait_for_export(job.id)


# -- uploads are checked before a byte is sent --------------------------------------------------------------


async def test_oversized_sparse_file_is_refused_before_any_request(
    nemo: NemoClient, localnemo: TestLocalNemo, tmp_path: Path
) -> None:
    big = tmp_path / "huge.mp4"
    with big.open("wb") as f:
        f.truncate(600 * 1024 * 1024)  # sparse: costs no disk
    with pytest.raises(errors.FileTooLarge) as caught:
        await nemo.account("tg:1").upload_files("123", [UploadSource.from_path(big)])
    assert "500.0 MB" in str(caught.value)
    assert localnemo.faults.calls == []


@pytest.mark.parametrize(
    ("name", "ctype"), [("notes.pdf", None), ("movie.exe", None), ("clip.mp4", "application/pdf")]
)
async def test_wrong_type_is_refused_before_any_request_listing_formats(
    nemo: NemoClient, localnemo: TestLocalNemo, tmp_path: Path, name: str, ctype: str | None
) -> None:
    path = tmp_path / name
    path.write_bytes(b"x" * 10)
    with pytest.raises(errors.UnsupportedFileType) as caught:
        await nemo.account("tg:1").upload_files("123", [UploadSource.from_path(path, content_type=ctype)])
    assert "mp4" in str(caught.value)
    assert "mp3" in str(caught.value)
    assert caught.value.accepted["video"]
    assert localnemo.faults.calls == []


async def test_backend_size_rule_holds_for_streams_of_unknown_size(
    http: httpx.AsyncClient, localnemo: TestLocalNemo
) -> None:
    nemo = NemoClient(http, fast_settings(localnemo.base_url, max_upload_bytes=1_000_000), MemoryIdentityStore())
    account = nemo.account("tg:1")
    sid = (await account.create_session("p", "en")).session_id

    async def endless() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield os.urandom(64 * 1024)

    with pytest.raises(errors.FileTooLarge):
        await account.upload_files(sid, [UploadSource.from_stream("big.mp4", endless())])


async def test_files_together_over_the_limit_go_in_several_requests(
    http: httpx.AsyncClient, localnemo: TestLocalNemo, tmp_path: Path, sample_video: Path
) -> None:
    # Each file is under the limit, both together are not: localnemo refuses a request whose declared
    # length is over the limit before reading it, so the client sends two.
    size = sample_video.stat().st_size
    localnemo.config.max_upload_bytes = int(size * 1.5)
    nemo = NemoClient(http, fast_settings(localnemo.base_url, max_upload_bytes=int(size * 1.5)), MemoryIdentityStore())
    account = nemo.account("tg:big")
    session_id = (await account.create_session("project", "en")).session_id
    second = tmp_path / "second.mp4"
    second.write_bytes(sample_video.read_bytes())
    sources = [UploadSource.from_path(sample_video), UploadSource.from_path(second)]
    result = await account.upload_files(session_id, sources)
    assert [f.filename for f in result.files] == ["clip.mp4", "second.mp4"]
    assert localnemo.faults.count("upload") == 2
    assert len((await account.state(session_id)).video_infos) == 2


def test_upload_batches_keep_order_and_the_limit() -> None:
    from bot.nemo.uploads import upload_batches

    def sized(name: str, size: int | None) -> UploadSource:
        return UploadSource.from_stream(name, _nothing(), size=size, content_type="video/mp4")

    sources = [sized("a", 60), sized("b", 30), sized("c", 20), sized("d", None), sized("e", 100)]
    batches = upload_batches(sources, 100, 20)
    assert [[s.filename for s in batch] for batch in batches] == [["a", "b"], ["c", "d"], ["e"]]
    by_count = upload_batches([sized(str(i), 1) for i in range(5)], 100, 2)
    assert [[s.filename for s in batch] for batch in by_count] == [["0", "1"], ["2", "3"], ["4"]]


async def _nothing() -> AsyncIterator[bytes]:
    yield b""


# -- noticing the end of an export ------------------------------------------------------------------


class SteppedRenderer:
    """A render the test moves along: progress when told, done when told (no clock involved)."""

    def __init__(self) -> None:
        self.steps: asyncio.Queue[float] = asyncio.Queue()
        self.started = asyncio.Event()

    async def render(
        self, draft: Draft, sources: Mapping[str, Path], out_path: Path, on_progress: Callable[[float], None]
    ) -> RenderOutput:
        self.started.set()
        while (fraction := await self.steps.get()) < 1.0:
            on_progress(fraction)
        await asyncio.to_thread(out_path.write_bytes, b"video")
        return RenderOutput(duration=1.0, size=5)


async def test_an_export_finishing_is_noticed_within_a_second_with_localnemo(
    http: httpx.AsyncClient, tmp_path: Path, sample_video: Path
) -> None:
    slept: list[float] = []

    async def no_sleep(seconds: float) -> None:
        slept.append(seconds)

    renderer = SteppedRenderer()
    config = fast_localnemo_config(tmp_path / "nemo", render_steps=1, render_step_seconds=0.01)
    async with TestLocalNemo(config, renderer=renderer) as server:
        # The documented schedule, which a backend without the long-poll gets: polls 2 s apart and more.
        nemo = NemoClient(http, fast_settings(server.base_url, poll_seconds=30.0), MemoryIdentityStore(),
                          sleep=no_sleep)
        account = nemo.account("tg:1")
        session_id = (await account.create_session("project", "en")).session_id
        await account.upload_files(session_id, [UploadSource.from_path(sample_video)])
        job = await account.submit_export(session_id, (await account.state(session_id)).draft)
        seen: list[float] = []

        async def on_progress(update: RenderJob) -> None:
            seen.append(update.progress)

        waiting = asyncio.create_task(account.wait_for_export(job.id, on_progress))
        await await_within(renderer.started.wait(), what="the render to start", watch=[waiting])
        # Progress still reaches the caller while it renders.
        for fraction in (0.3, 0.6):
            renderer.steps.put_nowait(fraction)
            shown = int(95 * fraction)
            await wait_for(lambda: any(p >= shown for p in seen), what=f"progress {shown}%")
        renderer.steps.put_nowait(1.0)
        done = await await_within(waiting, what="the client to see the export done")
        returned_ms = time.time() * 1000
        user_id = await account.user_id()
        assert user_id is not None
        completed_ms = server.state.jobs[(user_id, job.id)].completed_at_ms
    assert done.done
    assert completed_ms is not None
    assert 0 <= returned_ms - completed_ms < 1000
    assert slept == []  # never once waited on the schedule


@pytest.mark.parametrize(("poll_seconds", "expected"), [
    (30.0, [2.0, 3.0, 4.5, 6.75, 10.125, 15.1875, 22.78125, 30.0, 30.0]),
    (5.0, [2.0, 3.0, 4.5, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0]),
])
async def test_the_hosted_service_is_polled_on_the_documented_schedule(
    poll_seconds: float, expected: list[float]
) -> None:
    answers = [{"status": "processing", "progress": 10 * n} for n in range(len(expected))]
    answers.append({"status": "completed", "progress": 100, "output": {"url": "http://x/r.mp4"}})
    requests: list[httpx.Request] = []
    replies = iter(answers)

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, json={"code": 0, "data": {"id": "r-1", **next(replies)}})

    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        settings = NemoSettings(_env_file=None, api_base="http://stub", token="t", poll_seconds=poll_seconds)
        job = await NemoClient(client, settings, MemoryIdentityStore(), sleep=fake_sleep).account(
            "shared").wait_for_export("r-1")
    assert job.done
    assert slept == pytest.approx(expected)
    # Exactly the documented request, every time: no long-poll parameters for a backend that never offered them.
    assert len(requests) == len(expected) + 1
    assert all(r.url.path == "/api/render/proxy/lambda/r-1" and not r.url.query for r in requests)


async def test_a_backend_offering_the_long_poll_is_asked_to_wait_and_not_slept_on() -> None:
    answers = iter([
        {"status": "pending", "progress": 0}, {"status": "processing", "progress": 40},
        {"status": "processing", "progress": 80},
        {"status": "completed", "progress": 100, "outputUrl": "http://x/r.mp4"},
    ])
    requests: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        data = next(answers)
        headers = {"X-Localnemo-Wait": "1", "X-Localnemo-State": f"{data['status']}.{data['progress']}.0"}
        return httpx.Response(200, json={"success": True, "data": {"id": "r-1", **data}}, headers=headers)

    async def fake_sleep(seconds: float) -> None:
        raise AssertionError(f"slept {seconds} s")

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        settings = NemoSettings(_env_file=None, api_base="http://stub", token="t")
        job = await NemoClient(client, settings, MemoryIdentityStore(), sleep=fake_sleep).account(
            "shared").wait_for_export("r-1")
    assert job.done
    assert not requests[0].url.query  # the first ask is the documented one
    assert [r.url.params.get("since") for r in requests[1:]] == ["pending.0.0", "processing.40.0", "processing.80.0"]
    assert all(float(r.url.params["wait"]) == 25.0 for r in requests[1:])


async def test_a_client_beside_its_embedded_localnemo_names_local_files_by_path(
    http: httpx.AsyncClient, tmp_path: Path, sample_video: Path
) -> None:
    own = tmp_path / "own.mp4"
    own.write_bytes(sample_video.read_bytes())
    own.chmod(0o600)
    config = fast_localnemo_config(tmp_path / "nemo", local_files_key="the-key")
    async with TestLocalNemo(config) as server:
        nemo = NemoClient(http, fast_settings(server.base_url), MemoryIdentityStore(), local_files_key="the-key")
        account = nemo.account("console:local")
        session_id = (await account.create_session("project", "en")).session_id
        result = await account.upload_files(session_id, [UploadSource.from_path(own)])
        url = result.files[0].cdn_url
        assert url is not None
        stored = server.state.sessions[session_id].folder / url.rsplit("/", 1)[1]
        assert stored.stat().st_ino == own.stat().st_ino  # one file on disk: no upload through HTTP, no copy
        assert server.faults.count("upload") == 1
        # A stream (a platform's download) has no path: it goes as a multipart upload, as always.
        async def chunks() -> AsyncIterator[bytes]:
            yield sample_video.read_bytes()

        streamed = await account.upload_files(
            session_id, [UploadSource.from_stream("clip.mp4", chunks(), content_type="video/mp4")])
        assert streamed.files[0].filename == "clip.mp4"


def test_render_ids_of_two_processes_in_the_same_millisecond_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    # Several bot processes share one exports table, keyed by the render id: at 1,000 chats over two Telegram
    # receivers, `render_<ms>` alone collided 1 to 3 times per run.
    from bot.nemo import client as client_module

    monkeypatch.setattr(time, "time", lambda: 1796237551.914)
    made = set()
    for _ in range(50):
        monkeypatch.setattr(client_module, "_last_render_ms", 0)  # each a fresh process
        made.add(client_module.new_render_id())
    assert len(made) == 50
    assert all(re.fullmatch(r"render_1796237551914_[0-9a-f]{8}", render_id) for render_id in made)
