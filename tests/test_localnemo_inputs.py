"""localnemo's input limits over raw HTTP: how many files one upload may carry, the disk cap while a body
streams, a declared size over the limit, the deadline of URL fetches, content that is not what its name
says, malformed names and bodies, and the permissions of what is stored."""

from __future__ import annotations

import asyncio
import json
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from localnemo.config import LocalNemoConfig
from localnemo.media import ffmpeg_exe
from localnemo.testing import TestLocalNemo
from tests.conftest import serving
from tests.test_localnemo_server import auth, grant, new_session
from tests.waiting import await_within

PNG_HEAD = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24
BOUNDARY = "testboundary7MA4YWxkTrZu0gW"


@pytest.fixture
def options() -> dict[str, Any]:
    return {}


@pytest.fixture
async def server(tmp_path: Path, options: dict[str, Any]) -> AsyncIterator[TestLocalNemo]:
    config = LocalNemoConfig(data_dir=tmp_path / "nemo", event_delay_seconds=0.0, **options)
    async with TestLocalNemo(config) as nemo:
        yield nemo


@pytest.fixture
async def client(server: TestLocalNemo) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        yield http


@pytest.fixture
async def session(client: httpx.AsyncClient) -> tuple[str, str]:
    token = (await grant(client))["token"]
    return token, await new_session(client, token)


def part(filename: str, content: bytes, content_type: str = "application/octet-stream") -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="{filename}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode("utf-8", "surrogateescape") + content + b"\r\n"


def multipart(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


async def chunked(body: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    """The body with no declared length (chunked transfer encoding), as a streaming client sends it."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def post_upload(
    client: httpx.AsyncClient, token: str, sid: str, body: bytes | AsyncIterator[bytes]
) -> httpx.Response:
    headers = {**auth(token), "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    return await client.post(f"/api/upload-video/nemo_agent/me/{sid}", content=body, headers=headers)


def stored_files(server: TestLocalNemo, sid: str) -> list[Path]:
    folder = server.state.sessions[sid].folder
    return sorted(folder.iterdir()) if folder.exists() else []


# -- how much one upload may carry ------------------------------------------------------------------------


async def test_an_upload_of_a_thousand_parts_is_refused_at_the_first_one_too_many(
    client: httpx.AsyncClient, server: TestLocalNemo, session: tuple[str, str]
) -> None:
    token, sid = session
    body = multipart(*(part(f"p{index}.png", PNG_HEAD, "image/png") for index in range(1000)))
    started = time.monotonic()
    answer = await post_upload(client, token, sid, chunked(body))
    assert answer.status_code == 400
    assert answer.json() == {"code": 400, "message": "too many files: at most 20 in one upload"}
    assert time.monotonic() - started < 5
    assert stored_files(server, sid) == []  # the 20 received before it are removed too
    # The URL form has the same cap.
    urls = {"urls": [f"http://example.com/{index}.mp4" for index in range(21)], "source_type": "url"}
    answer = await client.post(f"/api/upload-video/nemo_agent/me/{sid}", json=urls, headers=auth(token))
    assert answer.status_code == 400
    assert "1 to 20 URLs" in answer.json()["message"]


@pytest.mark.parametrize("options", [{"max_disk_mb": 1}])
async def test_the_disk_cap_holds_while_a_body_of_unknown_length_streams(
    client: httpx.AsyncClient, server: TestLocalNemo, session: tuple[str, str]
) -> None:
    token, sid = session
    wav = b"RIFF\x00\x00\x00\x00WAVEfmt " + b"\x00" * (3 * 1024 * 1024)
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        async for chunk in chunked(multipart(part("long.wav", wav, "audio/wav"))):
            sent += len(chunk)
            yield chunk

    answer = await post_upload(client, token, sid, body())
    assert (answer.status_code, answer.json()["code"]) == (507, 507)
    assert "not enough space" in answer.json()["message"]
    assert stored_files(server, sid) == []  # the partial file is removed


@pytest.mark.parametrize("options", [{"max_upload_bytes": 500 * 1024 * 1024}])
async def test_a_declared_length_over_the_limit_is_refused_before_its_body(
    client: httpx.AsyncClient, server: TestLocalNemo, session: tuple[str, str]
) -> None:
    token, sid = session
    host, port = server.base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (
        f"POST /api/upload-video/nemo_agent/me/{sid} HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {600 * 1024 * 1024}\r\n\r\n"
    )
    started = time.monotonic()
    try:
        writer.write(head.encode())
        await writer.drain()
        # Headers only: the body is never sent, so an answer can only come from a server that did not wait.
        status_line = await await_within(reader.readline(), within=5, what="the answer to the headers")
        elapsed = time.monotonic() - started
        headers: dict[str, str] = {}
        while (line := await await_within(reader.readline(), within=5, what="a header")) != b"\r\n":
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await await_within(reader.readexactly(int(headers["content-length"])), within=5, what="the body")
    finally:
        writer.close()
    assert status_line.startswith(b"HTTP/1.1 413")
    assert json.loads(body) == {"code": 4002, "message": "file too large: this upload is over the 500 MB limit"}
    assert elapsed < 1
    assert stored_files(server, sid) == []


async def test_a_form_field_that_never_ends_is_refused_past_its_small_cap(
    server: TestLocalNemo, session: tuple[str, str]
) -> None:
    token, sid = session
    host, port = server.base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (
        f"POST /api/upload-video/nemo_agent/me/{sid} HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    field = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="note"\r\n\r\n'.encode() + b"x" * (256 * 1024)

    def chunk(data: bytes) -> bytes:
        return f"{len(data):x}\r\n".encode() + data + b"\r\n"

    try:
        # A field of 256 KB that goes on (the body is never finished): only a cap can answer it.
        writer.write(head.encode() + chunk(field))
        await writer.drain()
        status_line = await await_within(reader.readline(), within=10, what="the answer to an endless field")
        headers: dict[str, str] = {}
        while (line := await await_within(reader.readline(), within=5, what="a header")) != b"\r\n":
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await await_within(reader.readexactly(int(headers["content-length"])), within=5, what="the body")
    finally:
        writer.close()
    assert status_line.startswith(b"HTTP/1.1 400")
    assert json.loads(body) == {"code": 400, "message": "a form field other than 'files' may hold at most 64 KB"}
    assert stored_files(server, sid) == []


# -- fetches by URL ----------------------------------------------------------------------------------------


@pytest.fixture
async def trickling_host() -> AsyncIterator[str]:
    """A server that sends an MP4's first bytes and then one byte at a time, for ever."""

    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "video/mp4"})
        await response.prepare(request)
        await response.write(b"\x00\x00\x00\x18ftypisom")
        while True:
            await response.write(b"\x00")
            await asyncio.sleep(0.05)  # the trickle is the behaviour under test, not a wait of the test

    app = web.Application()
    app.router.add_get("/slow.mp4", trickle)
    async with serving(app, shutdown_timeout=0.1) as base:
        yield base


@pytest.mark.parametrize("options", [{"allow_private_urls": True, "fetch_timeout_seconds": 0.5}])
async def test_a_fetch_that_trickles_is_cut_off_at_its_deadline(
    client: httpx.AsyncClient, server: TestLocalNemo, session: tuple[str, str], trickling_host: str
) -> None:
    token, sid = session
    started = time.monotonic()
    answer = await client.post(
        f"/api/upload-video/nemo_agent/me/{sid}",
        json={"urls": [f"{trickling_host}/slow.mp4"], "source_type": "url"},
        headers=auth(token),
    )
    assert answer.status_code == 400
    assert answer.json() == {"code": 4003, "message": "could not download from 127.0.0.1: it took longer than 0.5 s"}
    assert time.monotonic() - started < 5
    assert stored_files(server, sid) == []


@pytest.fixture
async def slow_clip_host(sample_video: Path) -> AsyncIterator[str]:
    """A server that sends a real MP4 in about 0.7 s: one such fetch fits a 1 s deadline, two do not."""
    content = sample_video.read_bytes()

    async def slow(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "video/mp4"})
        response.content_length = len(content)
        await response.prepare(request)
        await response.write(content[:16])
        await asyncio.sleep(0.7)  # the slowness is the behaviour under test, not a wait of the test
        await response.write(content[16:])
        return response

    app = web.Application()
    app.router.add_get("/{name}.mp4", slow)
    async with serving(app, shutdown_timeout=0.1) as base:
        yield base


@pytest.mark.parametrize("options", [{"allow_private_urls": True, "fetch_timeout_seconds": 1.0}])
async def test_the_fetch_deadline_covers_the_whole_upload(
    client: httpx.AsyncClient, server: TestLocalNemo, session: tuple[str, str], slow_clip_host: str
) -> None:
    token, sid = session
    started = time.monotonic()
    answer = await client.post(
        f"/api/upload-video/nemo_agent/me/{sid}",
        json={"urls": [f"{slow_clip_host}/{n}.mp4" for n in range(3)], "source_type": "url"},
        headers=auth(token),
    )
    assert answer.status_code == 400, answer.text
    assert answer.json() == {"code": 4003, "message": "could not download from 127.0.0.1: it took longer than 1 s"}
    assert time.monotonic() - started < 5
    assert stored_files(server, sid) == []


# -- content and names -------------------------------------------------------------------------------------


async def test_content_that_is_not_what_its_name_says_is_refused_before_ffmpeg(
    client: httpx.AsyncClient, server: TestLocalNemo, session: tuple[str, str], sample_video: Path
) -> None:
    token, sid = session
    page = b"<!doctype html><html><body>" + b"x" * 4096 + b"</body></html>"
    for name, content, ctype, why in (
        # Said as what the file is, not "not a .mp4 file": its name says it is one.
        ("photo.png", page, "image/png", "it is a web page (HTML), not an image"),
        ("clip.mp4", b"just some words in a text file, nothing more", "video/mp4", "it is a text file, not a video"),
        ("song.mp3", b"#!/bin/sh\necho hello\n", "audio/mpeg", "it is a text file, not a sound file"),
        # Shorter than a signature:
        ("pic.jpg", PNG_HEAD[:4], "image/jpeg", "it is not an image (its content is no format this editor reads)"),
        ("words.srt", b"1\n00:00:01,000 --> 00:00:02,000\n\xff\xfe bad\n", "text/plain", "it is not UTF-8 text"),
    ):
        answer = await post_upload(client, token, sid, multipart(part(name, content, ctype)))
        assert (answer.status_code, answer.json()) == (400, {"code": 4001, "message": f"could not read {name}: {why}"})
    assert stored_files(server, sid) == []
    # A real MP4 under another video extension is fine: FFmpeg reads the content, not the name.
    mov = part("clip.mov", sample_video.read_bytes(), "video/quicktime")
    answer = await post_upload(client, token, sid, multipart(mov))
    assert answer.status_code == 200, answer.text


async def test_a_file_that_only_starts_like_a_picture_is_refused_and_real_ones_pass(
    client: httpx.AsyncClient, server: TestLocalNemo, session: tuple[str, str], sample_video: Path, tmp_path: Path
) -> None:
    token, sid = session
    # A PNG signature and junk: FFmpeg probes it as a picture of no size, and a render of it spins for ever.
    for name, content in (("a.png", b"\x89PNG\r\n\x1a\n" + b"0" * 100), ("b.png", PNG_HEAD + b"junk" * 64)):
        started = time.monotonic()
        answer = await post_upload(client, token, sid, multipart(part(name, content, "image/png")))
        assert answer.status_code == 400
        assert answer.json() == {
            "code": 4001, "message": f"could not read {name}: the file is damaged or not a format FFmpeg can read"
        }
        assert time.monotonic() - started < 20
    assert stored_files(server, sid) == []
    image = tmp_path / "real.png"
    made = await asyncio.create_subprocess_exec(
        ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x48",
        "-frames:v", "1", str(image),
    )  # fmt: skip
    assert await made.wait() == 0
    for name, content, ctype in (("real.png", image.read_bytes(), "image/png"),
                                 ("clip.mp4", sample_video.read_bytes(), "video/mp4")):  # fmt: skip
        answer = await post_upload(client, token, sid, multipart(part(name, content, ctype)))
        assert answer.status_code == 200, answer.text
        assert answer.json()["data"]["files"][0]["width"]


@pytest.mark.parametrize(
    "filename",
    ["a\x00b.mp4", "bell\x07.mp4", "line\r\nbreak.mp4", "../../etc/passwd.png", "dir/clip.mp4", "C:\\\\clips\\\\a.mp4",
     "evil\u202egnp.mp4", "x" * 300 + ".mp4", "latin\udce9.mp4"],
)  # fmt: skip
async def test_a_name_that_is_not_a_plain_file_name_is_a_400(
    client: httpx.AsyncClient, server: TestLocalNemo, session: tuple[str, str], sample_video: Path, filename: str
) -> None:
    token, sid = session
    answer = await post_upload(client, token, sid, multipart(part(filename, sample_video.read_bytes(), "video/mp4")))
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == 400
    # A control character is refused by the multipart reader itself, in the part's header.
    assert "file name" in answer.json()["message"] or answer.json()["message"] == "malformed multipart body"
    assert stored_files(server, sid) == []


async def test_malformed_bodies_are_a_400_never_a_500(
    client: httpx.AsyncClient, server: TestLocalNemo, session: tuple[str, str]
) -> None:
    token, sid = session
    deep = b"[" * 100_000 + b"]" * 100_000
    nested_object = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    not_utf8 = b'{"task_name": "caf\xe9"}'
    json_headers = {**auth(token), "Content-Type": "application/json"}
    for path in ("/api/tasks/me/with-session/nemo_agent", "/run_sse", "/api/render/proxy/lambda",
                 f"/api/upload-video/nemo_agent/me/{sid}", "/api/auth/claim-token"):  # fmt: skip
        for body in (deep, nested_object, not_utf8, b"\x00\x01\x02"):
            answer = await client.post(path, content=body, headers=json_headers)
            assert answer.status_code == 400, (path, body[:10], answer.text)
            assert answer.json()["code"] == 400
            assert "Traceback" not in answer.text
    upload = f"/api/upload-video/nemo_agent/me/{sid}"
    for content_type, body in (
        ("multipart/form-data", b"--x\r\n\r\n"),  # no boundary
        (f"multipart/form-data; boundary={BOUNDARY}", b"garbage with no boundary at all"),
        (f"multipart/form-data; boundary={BOUNDARY}", f"--{BOUNDARY}\r\nbroken header line\r\n\r\nx".encode()),
    ):
        answer = await client.post(upload, content=body, headers={**auth(token), "Content-Type": content_type})
        assert answer.status_code == 400, (content_type, body, answer.text)
        assert "Traceback" not in answer.text


# -- what is stored ------------------------------------------------------------------------------------------


async def test_uploads_are_stored_for_their_owner_only(
    client: httpx.AsyncClient, server: TestLocalNemo, session: tuple[str, str], sample_video: Path
) -> None:
    token, sid = session
    answer = await post_upload(client, token, sid, multipart(part("clip.mp4", sample_video.read_bytes(), "video/mp4")))
    assert answer.status_code == 200, answer.text
    (stored,) = stored_files(server, sid)
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert stat.S_IMODE(stored.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(server.config.data_dir.stat().st_mode) == 0o700


# -- local files taken by their path (the embedded server only) ---------------------------------------------

KEY = "k" * 43


async def post_paths(
    client: httpx.AsyncClient, token: str, sid: str, paths: list[Path], key: str | None = KEY
) -> httpx.Response:
    headers = auth(token) | ({"X-Localnemo-Local-Key": key} if key is not None else {})
    body = {"paths": [str(p) for p in paths], "source_type": "path"}
    return await client.post(f"/api/upload-video/nemo_agent/me/{sid}", json=body, headers=headers)


@pytest.mark.parametrize("options", [{"local_files_key": KEY}])
async def test_a_local_file_is_taken_by_its_path_without_a_needless_copy(
    client: httpx.AsyncClient, server: TestLocalNemo, session: tuple[str, str], sample_video: Path, tmp_path: Path
) -> None:
    token, sid = session
    private = tmp_path / "mine.mp4"
    private.write_bytes(sample_video.read_bytes())
    private.chmod(0o600)
    shared = tmp_path / "shared.mp4"
    shared.write_bytes(sample_video.read_bytes())
    shared.chmod(0o644)
    answer = await post_paths(client, token, sid, [private, shared])
    assert answer.status_code == 200, answer.text
    files = answer.json()["data"]["files"]
    assert [f["filename"] for f in files] == ["mine.mp4", "shared.mp4"]
    assert files[0]["duration"] == pytest.approx(2.0, abs=0.2)
    linked, copied = (server.state.sessions[sid].folder / f["cdn_url"].rsplit("/", 1)[1] for f in files)
    # Already owner-only: a hard link, the same file, no byte copied.
    assert linked.stat().st_ino == private.stat().st_ino
    # Readable by others: a hard link would share that mode (or chmod the user's own file), so a private copy.
    assert copied.stat().st_ino != shared.stat().st_ino
    assert stat.S_IMODE(copied.stat().st_mode) == 0o600
    assert stat.S_IMODE(shared.stat().st_mode) == 0o644  # the user's file untouched
    assert copied.read_bytes() == shared.read_bytes()
    # The same checks as an upload: content sniffed against the name, size capped, kind by extension.
    page = tmp_path / "page.mp4"
    page.write_bytes(b"<!doctype html><html>" + b"x" * 4096)
    refused = await post_paths(client, token, sid, [page])
    assert refused.json() == {"code": 4001, "message": "could not read page.mp4: it is a web page (HTML), not a video"}
    for bad in ([tmp_path / "missing.mp4"], [tmp_path], ["relative.mp4"], [tmp_path / "notes.pdf"]):
        (tmp_path / "notes.pdf").write_text("hello")
        answer = await post_paths(client, token, sid, bad)  # type: ignore[arg-type]
        assert answer.status_code == 400, bad
    assert len(stored_files(server, sid)) == 2


@pytest.mark.parametrize("options", [{"local_files_key": KEY, "max_upload_bytes": 100_000}])
async def test_a_local_file_over_the_size_limit_is_refused(
    client: httpx.AsyncClient, server: TestLocalNemo, session: tuple[str, str], tmp_path: Path
) -> None:
    token, sid = session
    big = tmp_path / "big.mp4"
    with big.open("wb") as out:
        out.truncate(200_000)
    answer = await post_paths(client, token, sid, [big])
    assert (answer.status_code, answer.json()["code"]) == (413, 4002)
    assert stored_files(server, sid) == []


@pytest.mark.parametrize("options", [{}, {"local_files_key": KEY}])
async def test_paths_are_refused_without_the_embedding_bots_key(
    client: httpx.AsyncClient, server: TestLocalNemo, session: tuple[str, str], sample_video: Path,
    options: dict[str, Any],
) -> None:
    # serve-local has no key at all: anyone on the network could otherwise read the machine's files.
    token, sid = session
    for key in (None, "guess", KEY if not options else None):
        answer = await post_paths(client, token, sid, [sample_video], key=key)
        assert answer.status_code == 400
        assert "not accepted here" in answer.json()["message"]
    assert stored_files(server, sid) == []
