"""Is a file what its extension says? Magic bytes of the accepted formats, read from the first bytes of an
upload before it can reach FFmpeg (an HTML page named ``.png`` once made FFmpeg spin without end).

A file passes when its first bytes are one of the formats of its extension's kind: a ``.mov`` that is
really an MP4, or an ``.mp4`` that is Matroska, is common and harmless, since FFmpeg reads the content,
not the name; a page, a script or a text file named like media is not. Captions files must be UTF-8 text
(checked over the whole file as it streams, by ``TextCheck``).
"""

from __future__ import annotations

import codecs
from collections.abc import Callable

# Bytes to collect before deciding (the longest signature read below, with room for an ID3 header).
HEAD_BYTES = 16

# QuickTime atoms that can open a .mov written without an ftyp box.
_QUICKTIME_ATOMS = (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")


def _isobmff(head: bytes) -> bool:
    return head[4:8] in _QUICKTIME_ATOMS


def _matroska(head: bytes) -> bool:
    return head.startswith(b"\x1a\x45\xdf\xa3")


def _riff(head: bytes, form: bytes) -> bool:
    return head.startswith(b"RIFF") and head[8:12] == form


def _mp3(head: bytes) -> bool:
    if head.startswith(b"ID3"):
        return True
    # An MPEG audio frame: 11 sync bits, a version other than "reserved" (01), a layer other than
    # "reserved" (00).
    return len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and head[1] & 0x18 != 0x08 and (
        head[1] & 0x06 != 0
    )


def _adts(head: bytes) -> bool:
    # ADTS: 12 sync bits, then layer 00. AAC files may also open with an ID3 tag.
    return head.startswith(b"ID3") or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0)


_CHECKS: dict[str, Callable[[bytes], bool]] = {
    "png": lambda h: h.startswith(b"\x89PNG\r\n\x1a\n"),
    "jpeg": lambda h: h.startswith(b"\xff\xd8\xff"),
    "gif": lambda h: h.startswith((b"GIF87a", b"GIF89a")),
    "webp": lambda h: _riff(h, b"WEBP"),
    "isobmff": _isobmff,
    "matroska": _matroska,
    "avi": lambda h: _riff(h, b"AVI "),
    "wav": lambda h: _riff(h, b"WAVE"),
    "mp3": _mp3,
    "adts": _adts,
}
# The formats each kind of extension may hold.
_KIND_FORMATS: dict[str, tuple[str, ...]] = {
    "video": ("isobmff", "matroska", "avi"),
    "image": ("png", "jpeg", "gif", "webp"),
    "audio": ("mp3", "adts", "wav", "isobmff"),
}


def content_format(kind: str, head: bytes) -> str | None:
    """The format of a file of ``kind`` (video, image, audio) whose first bytes are ``head``, or None when
    its content is none of that kind's accepted formats."""
    for name in _KIND_FORMATS.get(kind, ()):
        if _CHECKS[name](head):
            return name
    return None


# What a file that is not of its extension's kind is, by its first bytes: the catalogue's "upload.is_<name>"
# words it (bot/texts.py). Media of the other kinds first, then the documents most often sent by mistake.
_OTHER_THINGS: tuple[tuple[str, Callable[[bytes], bool]], ...] = (
    ("png", _CHECKS["png"]),
    ("jpeg", _CHECKS["jpeg"]),
    ("gif", _CHECKS["gif"]),
    ("webp", _CHECKS["webp"]),
    ("isobmff", _isobmff),
    ("matroska", _matroska),
    ("avi", _CHECKS["avi"]),
    ("wav", _CHECKS["wav"]),
    ("mp3", lambda h: h.startswith(b"ID3")),
    ("pdf", lambda h: h.startswith(b"%PDF")),
    ("zip", lambda h: h.startswith(b"PK\x03\x04")),
    ("archive", lambda h: h.startswith((b"\x1f\x8b", b"Rar!", b"7z\xbc\xaf\x27\x1c", b"BZh"))),
    ("program", lambda h: h.startswith((b"\x7fELF", b"MZ"))),
)


def what_it_is(head: bytes) -> str | None:
    """What the first bytes ``head`` of a file show it to be, as a catalogue name ("pdf", "html", "text",
    "png", "isobmff"…), or None when they show nothing known."""
    for name, check in _OTHER_THINGS:
        if check(head):
            return name
    try:
        # The head may end inside a character: only what decodes before it counts.
        text = codecs.getincrementaldecoder("utf-8-sig")().decode(head)
    except UnicodeDecodeError:
        return None
    opening = text.lstrip().lower()
    if opening.startswith(("<!doctype html", "<html", "<head", "<body")):
        return "html"
    if text and all(char.isprintable() or char in "\t\r\n" for char in text):
        return "text"
    return None


class TextCheck:
    """Whether a stream of bytes is UTF-8 text (a leading BOM allowed, no NUL), fed chunk by chunk."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self.ok = True

    def feed(self, chunk: bytes, *, final: bool = False) -> bool:
        if self.ok:
            try:
                text = self._decoder.decode(chunk, final)
            except UnicodeDecodeError:
                self.ok = False
            else:
                self.ok = "\x00" not in text
        return self.ok
