"""Files going to NemoVideo: checked for type and size before a byte is sent, then streamed.

The multipart body is produced chunk by chunk from a path or an async byte stream, so memory stays flat
whatever the file size, and ``Content-Length`` is sent whenever every size is known up front.
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
import secrets
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Literal
from urllib.parse import unquote, urlsplit

import httpx

from bot.nemo.errors import (
    ACCEPTED_FORMATS,
    BackendUnavailable,
    FileTooLarge,
    UnsupportedFileType,
    accepted_formats_text,
)

CHUNK_SIZE = 1 << 20  # 1 MiB: large enough that per-chunk overhead vanishes, small enough to stay flat

_KIND_BY_EXT = {ext: kind for kind, exts in ACCEPTED_FORMATS.items() for ext in exts}
_EXTRA_MIME = {
    "mkv": "video/x-matroska", "m4a": "audio/mp4", "aac": "audio/aac", "webp": "image/webp",
    "srt": "application/x-subrip", "vtt": "text/vtt",
}
# What a platform may label a file of each kind with (captions travel as text or application types).
_MIME_MAJORS = {"video": ("video",), "image": ("image",), "audio": ("audio",), "subtitle": ("text", "application")}


AttachmentKind = Literal["video", "image", "audio", "subtitle", "document"]


def kind_of(filename: str) -> str | None:
    """``video``, ``image`` or ``audio`` for an accepted extension, else ``None``."""
    ext = PurePosixPath(filename.lower()).suffix.lstrip(".")
    return _KIND_BY_EXT.get(ext)


_KINDS: dict[str, AttachmentKind] = {"video": "video", "image": "image", "audio": "audio", "subtitle": "subtitle"}
_MEDIA_MAJORS: dict[str, AttachmentKind] = {"video": "video", "image": "image", "audio": "audio"}


def attachment_kind(filename: str, mime_type: str | None = None) -> AttachmentKind:
    """What a user's file is: by its extension when the backend accepts it, else by the major part of the
    MIME type the platform gave, else a document (which the engine then refuses in words)."""
    by_name = _KINDS.get(kind_of(filename) or "")
    if by_name is not None:
        return by_name
    major = (mime_type or "").split(";")[0].split("/")[0].strip().lower()
    return _MEDIA_MAJORS.get(major, "document")


def mime_for(filename: str) -> str:
    ext = PurePosixPath(filename.lower()).suffix.lstrip(".")
    return _EXTRA_MIME.get(ext) or mimetypes.guess_type(filename)[0] or "application/octet-stream"


def format_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n = n / 1024  # type: ignore[assignment]
    return f"{n} B"  # pragma: no cover


def check_file(filename: str, content_type: str | None, size: int | None, limit: int) -> str:
    """Refuse what the backend would refuse, before anything is read or sent. Returns the MIME type."""
    kind = kind_of(filename)
    if kind is None:
        raise UnsupportedFileType(
            f"{filename!r} is not a supported file type. Accepted: {accepted_formats_text()}.", filename=filename
        )
    mime = (content_type or "").split(";")[0].strip().lower()
    if mime and mime != "application/octet-stream" and mime.split("/")[0] not in _MIME_MAJORS[kind]:
        raise UnsupportedFileType(
            f"{filename!r} is labelled {mime}, which does not match a {kind} file. "
            f"Accepted: {accepted_formats_text()}.",
            filename=filename,
        )
    if size is not None and size > limit:
        raise FileTooLarge(
            f"{filename!r} is {format_size(size)}; the limit is {format_size(limit)}.",
            filename=filename, size=size, limit=limit,
        )
    return mime if mime and mime != "application/octet-stream" else mime_for(filename)


def check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UnsupportedFileType(f"{url!r} is not an http(s) link.")
    name = PurePosixPath(unquote(parts.path)).name
    if PurePosixPath(name).suffix and kind_of(name) is None:
        raise UnsupportedFileType(
            f"{name!r} is not a supported file type. Accepted: {accepted_formats_text()}.", filename=name
        )


@dataclass(frozen=True)
class UploadSource:
    """One file to upload. ``opener`` gives a fresh byte stream each time it is called (``None`` after a
    one-shot stream was used), so an upload that the backend refused before reading can be retried."""

    filename: str
    size: int | None
    content_type: str | None
    opener: Callable[[], AsyncIterator[bytes]]
    reopenable: bool = True
    release: Callable[[], None] | None = None  # frees what backs the stream (a temp file) once it is sent
    path: Path | None = None  # the file on this machine, when it is one (a backend beside it may take it so)

    def close(self) -> None:
        if self.release is not None:
            self.release()

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], *, filename: str | None = None,
                  content_type: str | None = None) -> UploadSource:
        p = Path(path)
        return cls(filename or p.name, p.stat().st_size, content_type, lambda: _read_file(p), path=p)

    @classmethod
    def from_stream(cls, filename: str, stream: AsyncIterable[bytes], *, size: int | None = None,
                    content_type: str | None = None) -> UploadSource:
        def opener() -> AsyncIterator[bytes]:
            return aiter(stream)

        return cls(filename, size, content_type, opener, reopenable=False)


async def spool_download(
    http: httpx.AsyncClient, url: str, *, filename: str, content_type: str | None, max_bytes: int,
    temp_dir: str | None = None,
) -> UploadSource:
    """Download a platform's file into an unnamed temporary file (gone from disk once closed, even if the
    bot dies) and return it as a re-readable upload source; ``UploadSource.close`` frees it.

    Platforms' file URLs are short-lived (Discord signs and expires them), so the file is fetched at once,
    streamed chunk by chunk, and cut off past ``max_bytes`` rather than trusted to be the size announced.
    """
    handle = tempfile.TemporaryFile(dir=temp_dir)
    size = 0
    try:
        async with http.stream("GET", url, timeout=httpx.Timeout(120, connect=15), follow_redirects=True) as resp:
            if resp.status_code >= 400:
                raise BackendUnavailable(f"{filename!r} could not be downloaded (HTTP {resp.status_code})")
            async for chunk in resp.aiter_bytes(CHUNK_SIZE):
                size += len(chunk)
                if size > max_bytes:
                    raise FileTooLarge(f"{filename!r} is larger than {format_size(max_bytes)}",
                                       filename=filename, limit=max_bytes)
                await asyncio.to_thread(handle.write, chunk)
    except httpx.TransportError as exc:
        handle.close()
        raise BackendUnavailable(f"{filename!r} could not be downloaded") from exc
    except BaseException:
        handle.close()
        raise
    return UploadSource(filename, size, content_type, lambda: _read_handle(handle), release=handle.close)


async def _read_handle(handle: IO[bytes]) -> AsyncIterator[bytes]:
    await asyncio.to_thread(handle.seek, 0)
    while chunk := await asyncio.to_thread(handle.read, CHUNK_SIZE):
        yield chunk


async def _read_file(path: Path) -> AsyncIterator[bytes]:
    handle = await asyncio.to_thread(path.open, "rb")
    try:
        while chunk := await asyncio.to_thread(handle.read, CHUNK_SIZE):
            yield chunk
    finally:
        handle.close()


def _quote(name: str) -> str:
    # What browsers do (WHATWG multipart/form-data): UTF-8 as is, with quote, CR and LF escaped.
    return name.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def upload_batches(sources: Sequence[UploadSource], limit: int, max_files: int) -> list[list[UploadSource]]:
    """The sources in order, grouped so that each group has at most ``max_files`` and its known sizes add
    up to at most ``limit``. A source of unknown size (a stream) stays in the current group: its size is
    known only once it has been read, and the backend counts it then."""
    batches: list[list[UploadSource]] = [[]]
    total = 0
    for source in sources:
        size = source.size or 0
        if batches[-1] and (total + size > limit or len(batches[-1]) >= max_files):
            batches.append([])
            total = 0
        batches[-1].append(source)
        total += size
    return [batch for batch in batches if batch]


@dataclass(frozen=True)
class MultipartBody:
    """A streamed ``multipart/form-data`` body of repeated ``files`` fields."""

    sources: Sequence[UploadSource]
    mimes: Sequence[str]
    limit: int
    boundary: str = ""

    @classmethod
    def build(cls, sources: Sequence[UploadSource], limit: int) -> MultipartBody:
        mimes = [check_file(s.filename, s.content_type, s.size, limit) for s in sources]
        return cls(sources, mimes, limit, "nemobot-" + secrets.token_hex(16))

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def _head(self, source: UploadSource, mime: str) -> bytes:
        return (
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="files"; filename="{_quote(source.filename)}"\r\n'
            f"Content-Type: {mime}\r\n\r\n"
        ).encode()

    @property
    def tail(self) -> bytes:
        return f"--{self.boundary}--\r\n".encode()

    @property
    def content_length(self) -> int | None:
        if any(s.size is None for s in self.sources):
            return None
        total = len(self.tail)
        for source, mime in zip(self.sources, self.mimes, strict=True):
            assert source.size is not None
            total += len(self._head(source, mime)) + source.size + 2
        return total

    async def stream(self) -> AsyncIterator[bytes]:
        for source, mime in zip(self.sources, self.mimes, strict=True):
            yield self._head(source, mime)
            sent = 0
            async for chunk in source.opener():
                sent += len(chunk)
                if sent > self.limit:
                    raise FileTooLarge(
                        f"{source.filename!r} is larger than the {format_size(self.limit)} limit.",
                        filename=source.filename, limit=self.limit,
                    )
                yield chunk
            if source.size is not None and sent != source.size:
                # A Content-Length computed from the old size would now be a lie.
                raise OSError(f"{source.filename!r} changed size while it was being uploaded")
            yield b"\r\n"
        yield self.tail
