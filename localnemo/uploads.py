"""Receiving uploads: multipart files and files fetched by URL, the kind and extension checks, safe stored
names, streaming to disk under the size limit, the readability check, and the address safety of URL
fetches (no private or loopback address, at any redirect or connect). Also serves the stored files back
(``/files/<sid>/<name>``, like a CDN)."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import mimetypes
import re
import secrets
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal, cast
from urllib.parse import unquote

import aiohttp
import aiohttp.abc
from aiohttp import web
from yarl import URL

from bot.nemo.errors import ACCEPTED_FORMATS
from localnemo import timeline
from localnemo.envelope import ApiError, json_object, ok
from localnemo.media import MediaInfo, probe
from localnemo.quota import DiskQuota, unlink_quietly
from localnemo.runtime import Runtime
from localnemo.state import SessionRecord
from localnemo.subtitles import Cue, SubtitleError, read_cues

log = logging.getLogger(__name__)

FileKind = Literal["video", "image", "audio", "subtitle"]

# The one list of accepted formats is the client's (bot/nemo/errors.py); captions files (subtitle) are a
# localnemo addition there, since the hosted backend's list has no text formats.
ACCEPTED_EXTENSIONS: dict[str, FileKind] = {
    extension: cast(FileKind, kind) for kind, extensions in ACCEPTED_FORMATS.items() for extension in extensions
}
ACCEPTED_FORMATS_TEXT = "; ".join(
    f"{', '.join(extensions)} ({'captions' if kind == 'subtitle' else kind})"
    for kind, extensions in ACCEPTED_FORMATS.items()
)
# Which MIME major types a declared content type may have for each kind of extension: containers
# such as mp4/webm/m4a are labelled audio/* or video/* interchangeably by browsers and platforms;
# captions come as text/vtt, application/x-subrip or text/plain.
_ALLOWED_MAJORS: dict[FileKind, frozenset[str]] = {
    "video": frozenset({"video", "audio"}),
    "audio": frozenset({"audio", "video"}),
    "image": frozenset({"image"}),
    "subtitle": frozenset({"text", "application"}),
}
# Redirects followed when fetching an upload by URL (each hop is checked like the first URL).
_MAX_REDIRECTS = 5
_GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})
# The names stored files get (see stored_name): anything else in a /files/ URL is not one of them.
STORED_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,200}$")
_CHUNK = 1 << 20
_MAX_URLS = 20


@dataclass
class Received:
    original_name: str
    stored_path: Path
    kind: FileKind
    sha256: str
    size: int
    info: MediaInfo | None = None
    cues: list[Cue] | None = None


def kind_for(filename: str, content_type: str | None) -> tuple[FileKind, str]:
    """The kind and lower-case extension of an acceptable file, else ApiError 4001."""
    extension = Path(filename).suffix.lower().lstrip(".")
    kind = ACCEPTED_EXTENSIONS.get(extension)
    declared = (content_type or "").split(";", 1)[0].strip().lower()
    if kind is not None and declared not in _GENERIC_TYPES:
        major = declared.split("/", 1)[0]
        if major not in _ALLOWED_MAJORS[kind]:
            kind = None
    if kind is None:
        shown = Path(filename).name or "file"
        raise ApiError(
            400, 4001, f"unsupported file type: {shown} ({declared or 'no type'}). Accepted: {ACCEPTED_FORMATS_TEXT}"
        )
    return kind, extension


def stored_name(filename: str, extension: str) -> str:
    """A safe, unique file name: no directories, no leading dot, ASCII only."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(filename).stem).strip("._")[:80] or "file"
    return f"{secrets.token_hex(4)}_{stem}.{extension}"


def _write_chunk(writer: BinaryIO, digest: Any, chunk: bytes) -> None:
    writer.write(chunk)
    digest.update(chunk)


async def save_stream(chunks: AsyncIterator[bytes], target: Path, *, limit: int, display_name: str) -> tuple[str, int]:
    """Stream chunks into ``target``, hashing on the way; over ``limit`` bytes: remove it, ApiError 4002."""
    digest = hashlib.sha256()
    size = 0
    writer = await asyncio.to_thread(target.open, "wb")
    try:
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise ApiError(
                    413, 4002, f"file too large: {display_name} is over the {limit // (1024 * 1024)} MB limit"
                )
            await asyncio.to_thread(_write_chunk, writer, digest, chunk)
    except BaseException:
        await asyncio.to_thread(writer.close)
        await asyncio.to_thread(unlink_quietly, target)
        raise
    await asyncio.to_thread(writer.close)
    return digest.hexdigest(), size


async def _part_chunks(part: aiohttp.BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(_CHUNK):
        yield chunk


async def refuse_private(url: URL) -> None:
    """Refuse URLs whose host is (or resolves to) a private, loopback or otherwise local address."""
    host = url.host or ""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, url.port or 0)
    except OSError:
        raise ApiError(400, 4003, f"could not download from {host}: unknown host") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise ApiError(400, 4003, f"could not download from {host}: not a public address")


class PublicResolver(aiohttp.abc.AbstractResolver):
    """Resolves names like aiohttp's default resolver, refusing any answer that is not a public address."""

    def __init__(self) -> None:
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        for answer in answers:
            if not ipaddress.ip_address(answer["host"]).is_global:
                raise OSError(f"{host} resolves to a non-public address")
        return answers

    async def close(self) -> None:
        await self._inner.close()


async def check_readable(item: Received) -> None:
    """Refuse a damaged or unreadable upload with a plain 400 before it reaches the timeline."""
    if item.kind == "subtitle":
        try:
            item.cues = await asyncio.to_thread(read_cues, item.stored_path)
        except (OSError, SubtitleError) as exc:
            raise ApiError(400, 4001, f"could not read {item.original_name}: {exc}") from None
        return
    info = await probe(item.stored_path)
    if info is None:
        raise ApiError(
            400, 4001, f"could not read {item.original_name}: the file is damaged or not a format FFmpeg can read"
        )
    if item.kind in ("video", "audio") and info.kind == "audio":
        # An .mp4 with only sound is sound: it goes on the audio track.
        item.kind = "audio"
    elif item.kind == "audio" and info.has_audio:
        pass
    elif info.kind != item.kind:
        what = {"video": "a video", "image": "an image", "audio": "a sound file"}[item.kind]
        raise ApiError(400, 4001, f"could not read {item.original_name}: it is not {what}")
    item.info = info


def upload_duration(item: Received) -> float | None:
    if item.kind == "subtitle":
        return max((cue.end_ms for cue in item.cues or []), default=0) / 1000 or None
    if item.kind == "image" or item.info is None:
        return None
    return item.info.duration


class Uploads:
    """The upload route and the file route, and the HTTP client that fetches uploads by URL."""

    def __init__(self, runtime: Runtime, quota: DiskQuota) -> None:
        self.runtime = runtime
        self.config = runtime.config
        self.quota = quota
        self._http: aiohttp.ClientSession | None = None

    async def on_cleanup(self, app: web.Application) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            # Without permission for private addresses, every name the client resolves is checked again
            # at connect time, so a name that changes its answer after the first check (DNS rebinding)
            # still cannot reach the local network.
            connector = None if self.config.allow_private_urls else aiohttp.TCPConnector(resolver=PublicResolver())
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, connect=15, sock_read=60),
                trust_env=False,
                connector=connector,
            )
        return self._http

    async def upload(self, request: web.Request) -> web.StreamResponse:
        user = self.runtime.user(request)
        session = self.runtime.session(user, request.match_info["sid"])
        await self.quota.make_room(request.content_length or 0, keep=session)
        await asyncio.to_thread(session.folder.mkdir, parents=True, exist_ok=True)
        received: list[Received] = []
        try:
            if request.content_type.startswith("multipart/"):
                await self._receive_multipart(request, session, received)
            else:
                await self._receive_urls(request, session, received)
            if not received:
                raise ApiError(400, 400, "no files: send multipart field 'files' or JSON {\"urls\": [...]}")
            for item in received:
                await check_readable(item)
            await self.quota.make_room(0, keep=session)
        except BaseException:
            for item in received:
                await asyncio.to_thread(unlink_quietly, item.stored_path)
            raise
        base = self.runtime.base_url(request)
        files: list[dict[str, Any]] = []
        for item in received:
            info = item.info
            entry: dict[str, Any] = {
                "filename": item.original_name,
                "file_type": item.kind,
                "cdn_url": f"{base}/files/{session.session_id}/{item.stored_path.name}",
                "duration": upload_duration(item),
                "width": info.width if info is not None else None,
                "height": info.height if info is not None else None,
            }
            if info is not None and info.fps is not None and item.kind == "video":
                entry["fps"] = info.fps
            entry["hash"] = item.sha256
            entry["size"] = item.size
            timeline.place_upload(session, entry, Path(item.original_name).stem or item.original_name, item.cues)
            files.append(entry)
            log.info("localnemo.upload.stored session_id=%s kind=%s size=%s", session.session_id, item.kind, item.size)
        return ok({"files": files, "session_state_applied": True})

    async def _receive_multipart(self, request: web.Request, session: SessionRecord, received: list[Received]) -> None:
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                return
            if not isinstance(part, aiohttp.BodyPartReader):
                raise ApiError(400, 400, "nested multipart bodies are not supported")
            if part.name != "files":
                await part.release()
                continue
            filename = Path(part.filename or "").name
            if not filename:
                raise ApiError(
                    400, 4001, f"unsupported file type: a file has no name. Accepted: {ACCEPTED_FORMATS_TEXT}"
                )
            kind, extension = kind_for(filename, part.headers.get(aiohttp.hdrs.CONTENT_TYPE))
            target = session.folder / stored_name(filename, extension)
            digest, size = await save_stream(
                _part_chunks(part), target, limit=self.config.max_upload_bytes, display_name=filename
            )
            received.append(Received(filename, target, kind, digest, size))

    async def _receive_urls(self, request: web.Request, session: SessionRecord, received: list[Received]) -> None:
        body = await json_object(request)
        urls = body.get("urls")
        source_type = body.get("source_type", "url")
        if (
            not isinstance(urls, list)
            or not urls
            or len(urls) > _MAX_URLS
            or not all(isinstance(url, str) for url in urls)
            or source_type != "url"
        ):
            raise ApiError(
                400, 400, f'expected {{"urls": [1 to {_MAX_URLS} URLs], "source_type": "url"}} or a multipart upload'
            )
        for url_text in urls:
            received.append(await self._fetch(url_text, session))

    async def _fetch(self, url_text: str, session: SessionRecord) -> Received:
        try:
            url = URL(url_text)
        except ValueError:
            raise ApiError(400, 4003, "could not download: not a valid URL") from None
        filename = Path(unquote(url.path)).name or "download"
        try:
            for _ in range(_MAX_REDIRECTS + 1):
                # Every hop is checked as the first URL was: a public page must not redirect the server
                # into its own network.
                if url.scheme not in ("http", "https") or not url.host:
                    raise ApiError(400, 4003, "could not download: only http and https URLs can be fetched")
                if not self.config.allow_private_urls:
                    await refuse_private(url)
                async with self.http().get(url, allow_redirects=False) as resp:
                    if resp.status in (301, 302, 303, 307, 308) and resp.headers.get(aiohttp.hdrs.LOCATION):
                        try:
                            url = url.join(URL(resp.headers[aiohttp.hdrs.LOCATION]))
                        except ValueError:
                            raise ApiError(400, 4003, f"could not download from {url.host}: bad redirect") from None
                        continue
                    return await self._save_download(resp, url, filename, session)
            raise ApiError(400, 4003, f"could not download from {url.host}: too many redirects")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.info("localnemo.upload.fetch_failed host=%s error=%s", url.host, type(exc).__name__)
            raise ApiError(400, 4003, f"could not download from {url.host}") from None

    async def _save_download(
        self, resp: aiohttp.ClientResponse, url: URL, filename: str, session: SessionRecord
    ) -> Received:
        if resp.status != 200:
            raise ApiError(400, 4003, f"could not download {url.host}: HTTP {resp.status}")
        declared = resp.headers.get(aiohttp.hdrs.CONTENT_TYPE)
        if Path(filename).suffix.lower().lstrip(".") not in ACCEPTED_EXTENSIONS:
            # The URL has no usable extension: name the file after its declared type instead.
            guessed = mimetypes.guess_extension((declared or "").split(";", 1)[0].strip())
            if guessed and guessed.lstrip(".") in ACCEPTED_EXTENSIONS:
                filename = f"{Path(filename).stem or 'download'}{guessed}"
        kind, extension = kind_for(filename, declared)
        limit = self.config.max_upload_bytes
        if resp.content_length is not None and resp.content_length > limit:
            raise ApiError(
                413, 4002, f"file too large: {filename} is over the {limit // (1024 * 1024)} MB limit"
            )
        target = session.folder / stored_name(filename, extension)
        digest, size = await save_stream(
            resp.content.iter_chunked(_CHUNK), target, limit=limit, display_name=filename
        )
        log.info("localnemo.upload.fetched host=%s size=%s", url.host, size)
        return Received(filename, target, kind, digest, size)

    async def file(self, request: web.Request) -> web.StreamResponse:
        # Like a CDN: no token needed, the URL is the capability.
        session = self.runtime.state.sessions.get(request.match_info["sid"])
        name = request.match_info["name"]
        if session is None or not STORED_NAME_RE.match(name):
            raise ApiError(404, 404, "file not found")
        path = session.folder / name
        if not await asyncio.to_thread(path.is_file):
            raise ApiError(404, 404, "file not found")
        return web.FileResponse(path)
