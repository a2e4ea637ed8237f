"""Receiving uploads: multipart files, files fetched by URL and (for the bot that embeds this server only)
local files named by their path, the kind and extension checks, the content
check (magic bytes, ``localnemo.sniff``), safe stored names, streaming to disk under the size, file-count
and disk limits, the readability check (a file cut short is kept to the part that can be read, with a
warning saying how long that is), and the address safety of URL fetches (only public addresses, at
any redirect or connect, within an overall deadline). Stored files are readable by their owner only. Also
serves the stored files back (``/files/<sid>/<name>``, like a CDN)."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import hmac
import ipaddress
import logging
import mimetypes
import os
import re
import secrets
import socket
import stat
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, Literal, cast
from urllib.parse import unquote

import aiohttp
import aiohttp.abc
import aiohttp.http_exceptions
from aiohttp import web
from yarl import URL

from bot.nemo.errors import ACCEPTED_FORMATS
from bot.texts import t
from localnemo import timeline
from localnemo.envelope import ApiError, json_object, ok
from localnemo.media import MediaInfo, decodes_a_frame, keep_usable, probe, usable_duration
from localnemo.quota import DiskQuota, unlink_quietly
from localnemo.runtime import Runtime
from localnemo.sniff import HEAD_BYTES, TextCheck, content_format, what_it_is
from localnemo.state import SessionRecord
from localnemo.subtitles import Cue, SubtitleError, read_cues, read_script

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
# The header the embedding bot proves itself with when it names local files by their path.
LOCAL_KEY_HEADER = "X-Localnemo-Local-Key"
# linux/fs.h: FICLONE = _IOW(0x94, 9, int), a copy-on-write clone of a whole file.
_FICLONE = 0x40049409
STORED_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,200}$")
_CHUNK = 1 << 20
# A part of an upload that is not a file (a form field) is read up to this, and refused past it.
_MAX_OTHER_PART_BYTES = 64 * 1024
# What one upload may add to its files for the multipart framing (boundaries, part headers).
_FRAMING_BYTES = 1 << 20
# Unicode categories refused in a file name: controls (NUL among them), format characters (a right-to-left
# override hides the real extension), surrogates (bytes that were not UTF-8), unassigned, line separators.
_BAD_NAME_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_MAX_NAME_BYTES = 255
# What aiohttp's multipart reader raises on a body that is not well-formed multipart.
_MALFORMED = (ValueError, KeyError, AssertionError, aiohttp.http_exceptions.HttpProcessingError)
# NAT64 (RFC 6052, RFC 8215), 6to4 (RFC 3056), Teredo (RFC 4380) and the deprecated IPv4-compatible form
# (RFC 4291) wrap an IPv4 address, possibly a private one, behind an address Python counts as global.
# A video or sound whose readable data ends this much before its header says is damaged (cut short while
# copied or downloaded): less than this is a container's rounding, or a last packet cut in half.
DAMAGE_TOLERANCE_SECONDS = 0.5
# Less than this of a damaged file is refused: nothing can be edited in it. Above it the part is kept, with
# a warning giving both lengths, however small a share it is: the user knows what the footage is worth.
MIN_USABLE_SECONDS = 1.0
# FFmpeg's demuxers whose length, without an index, is an estimate from the bitrate and the file's size.
_ESTIMATED_LENGTH_FORMATS = frozenset({"mp3", "aac"})
_TUNNEL_NETWORKS = tuple(
    ipaddress.IPv6Network(network) for network in ("64:ff9b::/96", "64:ff9b:1::/48", "2002::/16", "2001::/32", "::/96")
)


@dataclass
class Received:
    original_name: str
    stored_path: Path
    kind: FileKind
    sha256: str | None  # None for a local file taken by its path: hashing it would read it all once more
    size: int
    info: MediaInfo | None = None
    cues: list[Cue] | None = None
    # Said with the upload's answer: the file was damaged and only a part of it is kept ("upload.damaged").
    warning: str | None = None


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


def check_filename(filename: str) -> str:
    """A file name as sent, if it is a plain name: no path, no control or invisible characters, not too
    long; else ApiError 400."""
    problem = None
    if "/" in filename or "\\" in filename or filename in (".", ".."):
        problem = "a file name must not be a path"
    elif any(unicodedata.category(char) in _BAD_NAME_CATEGORIES for char in filename):
        problem = "a file name must not contain control or invisible characters"
    elif len(filename.encode("utf-8", "surrogatepass")) > _MAX_NAME_BYTES:
        problem = f"a file name must be at most {_MAX_NAME_BYTES} bytes"
    if problem is not None:
        raise ApiError(400, 400, problem)
    return filename


def _plain_name(filename: str) -> bool:
    try:
        check_filename(filename)
    except ApiError:
        return False
    return True


def is_public_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether an address is a public unicast one: not private, loopback, link-local, multicast, reserved or
    unspecified, and not an IPv6 form that wraps an IPv4 address (judged by that address when mapped,
    refused outright as NAT64, 6to4, Teredo or IPv4-compatible)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return is_public_address(address.ipv4_mapped)
        if address.scope_id or address.is_site_local or any(address in net for net in _TUNNEL_NETWORKS):
            return False
    return address.is_global and not (
        address.is_multicast or address.is_reserved or address.is_unspecified or address.is_loopback
        or address.is_link_local or address.is_private
    )


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def stored_name(filename: str, extension: str) -> str:
    """A safe, unique, unguessable file name: no directories, no leading dot, ASCII only. Its random part
    (128 bits) makes ``/files/<sid>/<name>``, served without a token, a capability."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(filename).stem).strip("._")[:80] or "file"
    return f"{secrets.token_hex(16)}_{stem}.{extension}"


def _write_chunk(writer: BinaryIO, digest: Any, chunk: bytes) -> None:
    writer.write(chunk)
    digest.update(chunk)


def _open_private(target: Path) -> BinaryIO:
    """A new file only its owner can read (blocking: run it in a thread); never follows a link."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    return os.fdopen(fd, "wb")


def place_local(fd: int, info: os.stat_result, source: Path, target: Path) -> str:
    """Put the open file ``fd`` (``source``, as ``info`` describes it) at ``target``, readable by its owner
    only, with as little copying as the file allows (blocking: run it in a thread). Returns how.

    - ``link``: a hard link, when the file is this user's and already owner-only. A hard link shares the
      inode, so its mode is the user's file's mode: making a link private would chmod the user's own file.
      So a file others may read is never linked, and a linked file's mode is never touched.
    - ``clone``: a copy-on-write clone (``FICLONE``, on Btrfs, XFS, …): no bytes copied, its own inode.
    - ``copy``: an in-kernel copy (``copy_file_range``), else a plain one.
    """
    if info.st_uid == os.geteuid() and not info.st_mode & 0o077:
        try:
            os.link(source, target, follow_symlinks=True)
            linked = os.stat(target, follow_symlinks=False)
            if (linked.st_dev, linked.st_ino) == (info.st_dev, info.st_ino):
                return "link"
            os.unlink(target)  # the path now names another file than the one checked: copy what was checked
        except OSError:
            unlink_quietly(target)  # another file system (EXDEV), or links not allowed here
    with _open_private(target) as out:
        try:
            try:
                fcntl.ioctl(out.fileno(), _FICLONE, fd)
                return "clone"
            except OSError:
                pass
            offset = 0
            try:
                while offset < info.st_size:
                    copied = os.copy_file_range(fd, out.fileno(), info.st_size - offset, offset, offset)
                    if copied == 0:
                        break
                    offset += copied
            except OSError:
                offset = 0
                out.seek(0)
                out.truncate()
                while chunk := os.pread(fd, _CHUNK, offset):
                    out.write(chunk)
                    offset += len(chunk)
            if offset != info.st_size:
                raise ApiError(400, 4001, f"could not read {source.name}: it changed while it was taken")
        except BaseException:
            unlink_quietly(target)
            raise
    return "copy"


def _create_private(target: Path) -> None:
    """An empty owner-only file, for FFmpeg to write into (it keeps the mode of a file it overwrites)."""
    _open_private(target).close()


def make_private_folder(folder: Path) -> None:
    """Create ``folder`` (and its parent) readable by its owner only (blocking: run it in a thread)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for each in (folder.parent, folder):
        os.chmod(each, 0o700)


class _ContentCheck:
    """Whether the bytes of an upload are what its extension says, decided from its first bytes (or, for
    captions, from all of them)."""

    def __init__(self, kind: FileKind, display_name: str, extension: str, lang: str = "en") -> None:
        self.kind = kind
        self.lang = lang
        self.display_name = display_name
        self.extension = extension
        self.head = b""
        self.decided = False
        self.text = TextCheck() if kind == "subtitle" else None

    def feed(self, chunk: bytes, *, final: bool = False) -> None:
        if self.text is not None:
            if not self.text.feed(chunk, final=final):
                self._refuse("it is not UTF-8 text")
            return
        if self.decided:
            return
        self.head += chunk[: HEAD_BYTES - len(self.head)]
        if len(self.head) >= HEAD_BYTES or final:
            self.decided = True
            if content_format(self.kind, self.head) is None:
                # Said as what the file is: "not a .mp4 file" or a list of formats would name its own.
                what = what_it_is(self.head)
                kind = t(f"upload.kind_{self.kind}", self.lang)
                if what is None:
                    message = t("upload.is_not_unknown", self.lang, name=self.display_name, kind=kind)
                else:
                    what_text = t(f"upload.is_{what}", self.lang)
                    message = t("upload.is_not", self.lang, name=self.display_name, what=what_text, kind=kind)
                raise ApiError(400, 4001, message)

    def _refuse(self, why: str) -> None:
        raise ApiError(400, 4001, f"could not read {self.display_name}: {why}")


async def save_stream(
    chunks: AsyncIterator[bytes],
    target: Path,
    *,
    limit: int,
    display_name: str,
    kind: FileKind | None = None,
    admit: Callable[[int], Awaitable[None]] | None = None,
    lang: str = "en",
) -> tuple[str, int]:
    """Stream chunks into ``target`` (owner-only), hashing on the way. Over ``limit`` bytes: ApiError 4002;
    content that is not of ``kind``'s formats: ApiError 4001; ``admit`` (the disk quota) is asked before
    each chunk is written and may refuse. On any failure the partial file is removed."""
    digest = hashlib.sha256()
    size = 0
    extension = target.suffix.lower().lstrip(".")
    check = _ContentCheck(kind, display_name, extension, lang) if kind is not None else None
    writer = await asyncio.to_thread(_open_private, target)
    try:
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise ApiError(
                    413, 4002, f"file too large: {display_name} is over the {limit // (1024 * 1024)} MB limit"
                )
            if check is not None:
                check.feed(chunk)
            if admit is not None:
                await admit(len(chunk))
            await asyncio.to_thread(_write_chunk, writer, digest, chunk)
        if check is not None:
            check.feed(b"", final=True)
    except BaseException:
        await asyncio.to_thread(writer.close)
        await asyncio.to_thread(unlink_quietly, target)
        raise
    await asyncio.to_thread(writer.close)
    return digest.hexdigest(), size


async def _part_chunks(part: aiohttp.BodyPartReader, size: int = _CHUNK) -> AsyncIterator[bytes]:
    while True:
        try:
            chunk = await part.read_chunk(size)
        except _MALFORMED:
            raise ApiError(400, 400, "malformed multipart body") from None
        if not chunk:
            return
        yield chunk


async def _skip_small(part: aiohttp.BodyPartReader) -> None:
    """Read and drop a part that is not a file, refused past ``_MAX_OTHER_PART_BYTES``: releasing it would
    read without limit, and a chunked body could stream for ever."""
    size = 0
    async for chunk in _part_chunks(part, _MAX_OTHER_PART_BYTES):
        size += len(chunk)
        if size > _MAX_OTHER_PART_BYTES:
            raise ApiError(
                400, 400, f"a form field other than 'files' may hold at most {_MAX_OTHER_PART_BYTES // 1024} KB"
            )


async def refuse_private(url: URL) -> None:
    """Refuse URLs whose host is (or resolves to) a private, loopback or otherwise local address."""
    host = url.host or ""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, url.port or 0)
    except OSError:
        raise ApiError(400, 4003, f"could not download from {host}: unknown host") from None
    for info in infos:
        address = _address(str(info[4][0]))
        if address is None or not is_public_address(address):
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
            address = _address(answer["host"])
            if address is None or not is_public_address(address):
                raise OSError(f"{host} resolves to a non-public address")
        return answers

    async def close(self) -> None:
        await self._inner.close()


async def check_readable(item: Received, lang: str = "en") -> None:
    """Refuse a damaged or unreadable upload with a plain 400 before it reaches the timeline; a video or sound
    cut short is kept to the part that can be read, with a warning (``keep_readable_part``). The refusals
    and the warning are worded in ``lang``."""
    if item.kind == "subtitle" and item.stored_path.suffix.lower() == ".txt":
        # A script: its words are timed to the speech when captions are asked for ("generate captions").
        try:
            await asyncio.to_thread(read_script, item.stored_path)
        except (OSError, SubtitleError) as exc:
            raise ApiError(400, 4001, f"could not read {item.original_name}: {exc}") from None
        item.cues = []
        return
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
    if item.kind in ("video", "image") and (
        not info.width or not info.height or not await decodes_a_frame(item.stored_path)
    ):
        # Only the beginning of a picture (a signature and junk), or a header over garbage: FFmpeg would spin
        # on it in a render.
        if item.kind == "video":
            raise ApiError(400, 4001, t("upload.no_picture", lang, name=item.original_name))
        raise ApiError(
            400, 4001, f"could not read {item.original_name}: the file is damaged or not a format FFmpeg can read"
        )
    item.info = info
    if item.kind in ("video", "audio"):
        await keep_readable_part(item, info, lang)


def _seconds(value: float) -> str:
    return f"{value:.1f}"


async def keep_readable_part(item: Received, info: MediaInfo, lang: str) -> None:
    """Find where a video's or sound's data really ends (a pass over its packets, none decoded). A file cut
    short (a copy or download that stopped) keeps its header's length, which every later answer and the
    export would trust: the readable part is copied into a file of its own, whose header says its real
    length, and the upload answers with a warning giving both. Less than ``MIN_USABLE_SECONDS`` is refused.
    """
    usable = await usable_duration(item.stored_path)
    if usable is None:
        return  # the pass timed out: the file is taken as its header describes it, as before
    declared = info.duration
    end = usable.seconds or 0.0
    if usable.problems:
        log.info(
            "localnemo.upload.damage kind=%s declared=%s readable=%.3f problems=%s",
            item.kind, declared, end, usable.problems.splitlines()[0][:200],
        )  # fmt: skip
    if declared is None:
        if usable.seconds is not None:
            item.info = replace(info, duration=usable.seconds)
        return
    if info.container in _ESTIMATED_LENGTH_FORMATS and not usable.problems and usable.seconds is not None:
        # A length FFmpeg estimated from the bitrate (a VBR MP3 without a Xing header), and data read to
        # its end without a complaint: the file is whole, the pass measured its real length (longer or shorter
        # than the guess).
        if abs(declared - end) > DAMAGE_TOLERANCE_SECONDS:
            item.info = replace(info, duration=usable.seconds)
        return
    if declared - end <= DAMAGE_TOLERANCE_SECONDS:
        return
    usable_text, declared_text = _seconds(end), _seconds(declared)
    if end < MIN_USABLE_SECONDS:
        raise ApiError(
            400, 4001, t("upload.damaged_too_short", lang, name=item.original_name, usable=usable_text,
                         total=declared_text),
        )  # fmt: skip
    kept = await _keep_part(item, lang, usable_text, declared_text)
    try:
        kept_info = await probe(kept)
    except BaseException:
        await asyncio.to_thread(unlink_quietly, kept)
        raise
    if kept_info is None or not kept_info.duration:
        await asyncio.to_thread(unlink_quietly, kept)
        raise ApiError(
            400, 4001, t("upload.repair_failed", lang, name=item.original_name, usable=usable_text,
                         total=declared_text),
        )  # fmt: skip
    # The stored file was the damaged one (for a local file, perhaps a hard link to the user's: unlinking
    # the link leaves the user's file alone).
    await asyncio.to_thread(unlink_quietly, item.stored_path)
    item.stored_path = kept
    item.info = kept_info
    item.size = (await asyncio.to_thread(kept.stat)).st_size
    item.warning = t(
        "upload.damaged", lang, name=item.original_name, usable=_seconds(kept_info.duration), total=declared_text
    )
    log.info(
        "localnemo.upload.damaged_kept declared=%.3f kept=%.3f size=%s", declared, kept_info.duration, item.size
    )


async def _keep_part(item: Received, lang: str, usable_text: str, declared_text: str) -> Path:
    """The readable part of ``item`` in a new owner-only file beside it: in its own container, else in
    Matroska (which takes any codec, for content whose extension names another container)."""
    source = item.stored_path
    base = source.stem
    for suffix in (source.suffix, ".mkv"):
        target = source.with_name(f"{secrets.token_hex(16)}_{base.split('_', 1)[-1]}{suffix}")
        await asyncio.to_thread(_create_private, target)
        try:
            if await keep_usable(source, target):
                return target
        except BaseException:
            await asyncio.to_thread(unlink_quietly, target)
            raise
        await asyncio.to_thread(unlink_quietly, target)
    raise ApiError(
        400, 4001, t("upload.repair_failed", lang, name=item.original_name, usable=usable_text, total=declared_text)
    )


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

    def _request_limit(self) -> int:
        return self.config.max_upload_bytes + _FRAMING_BYTES

    def _too_large(self) -> ApiError:
        megabytes = self.config.max_upload_bytes // (1024 * 1024)
        return ApiError(413, 4002, f"file too large: this upload is over the {megabytes} MB limit")

    async def upload(self, request: web.Request) -> web.StreamResponse:
        # Before anything reads the body: a declared size over the limit is refused at once.
        if request.content_length is not None and request.content_length > self._request_limit():
            raise self._too_large()
        user = self.runtime.user(request)
        session = self.runtime.session(user, request.match_info["sid"])
        received: list[Received] = []
        with self.quota.uploading(session):
            await self.quota.make_room(request.content_length or 0, keep=session)
            await asyncio.to_thread(make_private_folder, session.folder)
            try:
                if request.content_type.startswith("multipart/"):
                    await self._receive_multipart(request, session, received)
                else:
                    body = await json_object(request)
                    if body.get("source_type") == "path":
                        await self._receive_paths(request, body, session, received)
                    else:
                        await self._receive_urls(body, session, received)
                if not received:
                    raise ApiError(400, 400, "no files: send multipart field 'files' or JSON {\"urls\": [...]}")
                for item in received:
                    await check_readable(item, session.language)
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
            if item.sha256 is not None:
                entry["hash"] = item.sha256
            if item.warning is not None:
                entry["warning"] = item.warning
            entry["size"] = item.size
            timeline.place_upload(session, entry, Path(item.original_name).stem or item.original_name, item.cues)
            files.append(entry)
            log.info("localnemo.upload.stored session_id=%s kind=%s size=%s", session.session_id, item.kind, item.size)
        return ok({"files": files, "session_state_applied": True})

    async def _admit(self, session: SessionRecord) -> Callable[[int], Awaitable[None]]:
        async def admit(size: int) -> None:
            await self.quota.admit(size, keep=session)

        return admit

    async def _receive_multipart(self, request: web.Request, session: SessionRecord, received: list[Received]) -> None:
        try:
            reader = await request.multipart()
        except _MALFORMED:
            raise ApiError(400, 400, "malformed multipart body") from None
        admit = await self._admit(session)
        parts = 0
        total = 0
        limit = self.config.max_files_per_upload
        while True:
            try:
                part = await reader.next()
            except _MALFORMED:
                raise ApiError(400, 400, "malformed multipart body") from None
            if part is None:
                return
            # Counted as the body streams: a body of thousands of parts is refused at the first one too many.
            parts += 1
            if parts > limit:
                raise ApiError(400, 400, f"too many files: at most {limit} in one upload")
            if not isinstance(part, aiohttp.BodyPartReader):
                raise ApiError(400, 400, "nested multipart bodies are not supported")
            if part.name != "files":
                await _skip_small(part)
                continue
            filename = check_filename(part.filename or "")
            if not filename:
                raise ApiError(
                    400, 4001, f"unsupported file type: a file has no name. Accepted: {ACCEPTED_FORMATS_TEXT}"
                )
            kind, extension = kind_for(filename, part.headers.get(aiohttp.hdrs.CONTENT_TYPE))
            target = session.folder / stored_name(filename, extension)
            # One upload's files together stay within the limit, as its declared length must.
            file_limit = min(self.config.max_upload_bytes, self._request_limit() - total)
            digest, size = await save_stream(
                _part_chunks(part), target, limit=file_limit, display_name=filename, kind=kind, admit=admit,
                lang=session.language,
            )
            total += size
            received.append(Received(filename, target, kind, digest, size))

    async def _receive_paths(
        self, request: web.Request, body: dict[str, Any], session: SessionRecord, received: list[Received]
    ) -> None:
        """Files on this machine, named by their path: only for the bot that embeds this server, which
        proves it with the key it made for it (``local_files_key``); a server without one (``serve-local``)
        refuses every path."""
        key = self.config.local_files_key
        offered = request.headers.get(LOCAL_KEY_HEADER, "")
        if key is None or not hmac.compare_digest(offered.encode(), key.encode()):
            raise ApiError(400, 400, "local paths are not accepted here: upload the files")
        paths = body.get("paths")
        limit = self.config.max_files_per_upload
        if not isinstance(paths, list) or not paths or len(paths) > limit or not all(
            isinstance(p, str) and os.path.isabs(p) for p in paths
        ):
            raise ApiError(400, 400, f'expected {{"paths": [1 to {limit} absolute paths], "source_type": "path"}}')
        admit = await self._admit(session)
        for path_text in paths:
            received.append(await self._take_local(Path(path_text), session, admit))

    async def _take_local(
        self, source: Path, session: SessionRecord, admit: Callable[[int], Awaitable[None]]
    ) -> Received:
        """The same checks as an upload (name, kind, size, disk quota, content sniffing; the probe follows in
        ``check_readable``), then the file goes into the session's folder without a pass over its bytes
        where it can (``place_local``)."""
        filename = check_filename(source.name)
        kind, extension = kind_for(filename, None)
        try:
            fd = await asyncio.to_thread(os.open, source, os.O_RDONLY | getattr(os, "O_NOCTTY", 0))
        except OSError:
            raise ApiError(400, 4001, f"could not read {filename}: no such file here") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ApiError(400, 4001, f"could not read {filename}: not a file")
            if info.st_size > self.config.max_upload_bytes:
                megabytes = self.config.max_upload_bytes // (1024 * 1024)
                raise ApiError(413, 4002, f"file too large: {filename} is over the {megabytes} MB limit")
            check = _ContentCheck(kind, filename, extension, session.language)
            # Captions are read whole (they must be UTF-8 throughout); media by their first bytes.
            size = info.st_size if kind == "subtitle" else HEAD_BYTES
            head = await asyncio.to_thread(os.pread, fd, size, 0)
            check.feed(head, final=True)
            await admit(info.st_size)
            target = session.folder / stored_name(filename, extension)
            how = await asyncio.to_thread(place_local, fd, info, source, target)
        finally:
            await asyncio.to_thread(os.close, fd)
        log.info("localnemo.upload.local kind=%s size=%s how=%s", kind, info.st_size, how)
        return Received(filename, target, kind, None, info.st_size)

    async def _receive_urls(self, body: dict[str, Any], session: SessionRecord, received: list[Received]) -> None:
        urls = body.get("urls")
        source_type = body.get("source_type", "url")
        if (
            not isinstance(urls, list)
            or not urls
            or len(urls) > self.config.max_files_per_upload
            or not all(isinstance(url, str) for url in urls)
            or source_type != "url"
        ):
            raise ApiError(
                400,
                400,
                f'expected {{"urls": [1 to {self.config.max_files_per_upload} URLs], "source_type": "url"}} '
                "or a multipart upload",
            )
        # One deadline for the whole request, every URL in it: not one per URL (20 URLs would be 20 deadlines).
        seconds = self.config.fetch_timeout_seconds
        current = ""
        try:
            async with asyncio.timeout(seconds):
                for current in urls:
                    received.append(await self._fetch(current, session))
        except TimeoutError:
            try:
                host = URL(current).host
            except ValueError:
                host = None
            log.info("localnemo.upload.fetch_timeout host=%s seconds=%s", host, seconds)
            raise ApiError(400, 4003, f"could not download from {host}: it took longer than {seconds:g} s") from None

    async def _fetch(self, url_text: str, session: SessionRecord) -> Received:
        try:
            url = URL(url_text)
        except ValueError:
            raise ApiError(400, 4003, "could not download: not a valid URL") from None
        filename = Path(unquote(url.path)).name or "download"
        if not _plain_name(filename):
            filename = "download"
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
        except (aiohttp.ClientError, OSError, ValueError) as exc:
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
            resp.content.iter_chunked(_CHUNK), target, limit=limit, display_name=filename, kind=kind,
            admit=await self._admit(session), lang=session.language,
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
