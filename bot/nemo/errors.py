"""Typed errors at the edge of the NemoVideo client.

The backend reports failures as ``{"code": N, "message": ...}``, as a bare HTTP status, or both, and
sometimes as an HTML page. :func:`error_from_response` turns all of those into one of the exceptions
below so the engine can map each to plain words; nothing here ever carries a token.
"""

from __future__ import annotations

from typing import Any, ClassVar

ACCEPTED_FORMATS: dict[str, tuple[str, ...]] = {
    "video": ("mp4", "mov", "avi", "webm", "mkv"),
    "image": ("jpg", "jpeg", "png", "gif", "webp"),
    "audio": ("mp3", "wav", "m4a", "aac"),
    # Caption files for burned-in subtitles, and scripts (.txt) to time as captions. Not in the hosted
    # backend's published list (it may answer 4001, which the bot reports plainly); localnemo takes them.
    "subtitle": ("srt", "vtt", "txt"),
}


def accepted_formats_text() -> str:
    """``video: mp4, mov, …; image: …; audio: …`` — for error messages and help."""
    return "; ".join(f"{kind}: {', '.join(exts)}" for kind, exts in ACCEPTED_FORMATS.items())


class NemoError(Exception):
    """Any failure talking to NemoVideo. ``code`` is the backend's code, or the HTTP status."""

    default_code: ClassVar[int] = 0

    def __init__(self, message: str, *, code: int | None = None, http_status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = self.default_code if code is None else code
        self.http_status = http_status


class TokenInvalid(NemoError):
    """1001: the token expired or is invalid. Renewed inside the client; surfaces only for a fixed token."""

    default_code = 1001


class SessionNotFound(NemoError):
    """1002: the session is gone (or belongs to another identity)."""

    default_code = 1002


class OutOfCredits(NemoError):
    """2001: the identity has no credits left."""

    default_code = 2001


class UnsupportedFileType(NemoError):
    """4001, or refused locally before upload: the file's type is not one the backend takes."""

    default_code = 4001

    def __init__(self, message: str, *, filename: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.filename = filename
        self.accepted = ACCEPTED_FORMATS


class FileTooLarge(NemoError):
    """4002, or refused locally before upload: over the backend's size limit."""

    default_code = 4002

    def __init__(
        self, message: str, *, filename: str | None = None, size: int | None = None, limit: int | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(message, **kw)
        self.filename = filename
        self.size = size
        self.limit = limit


class MissingClientId(NemoError):
    """HTTP 400 on the token call: no ``X-Client-Id``. The client always sends one, so this is a bug."""

    default_code = 400


class ExportBlocked(NemoError):
    """402: export is not available on the plan (or the attribution headers were missing)."""

    default_code = 402


class RateLimited(NemoError):
    """429, still after the one retry."""

    default_code = 429


class RenderIdTaken(NemoError):
    """The export id was used before; the client makes a new one and retries."""

    default_code = 409


class BackendUnavailable(NemoError):
    """Network failure or a 5xx that outlived the retries (or was not safe to retry)."""

    default_code = 503


class BadRequest(NemoError):
    """The backend refused the request for a reason the client does not know specifically."""


class StreamInterrupted(NemoError):
    """The event stream broke before it closed normally. The message is *not* resent."""

    default_code = 599


class StreamTimeout(NemoError):
    """The stream hit the overall limit, or sent nothing but heartbeats for too long."""

    default_code = 598


class StreamError(NemoError):
    """The backend reported an error inside the event stream."""

    default_code = 597


class ExportFailed(NemoError):
    """The render job ended ``failed``; ``message`` is the backend's reason."""

    default_code = 596


class ExportTimeout(NemoError):
    """The render job did not finish within the export time limit."""

    default_code = 595


_BY_CODE: dict[int, type[NemoError]] = {
    1001: TokenInvalid,
    1002: SessionNotFound,
    2001: OutOfCredits,
    4001: UnsupportedFileType,
    4002: FileTooLarge,
    402: ExportBlocked,
    429: RateLimited,
    409: RenderIdTaken,
}


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_from_response(status: int, body: Any) -> NemoError | None:
    """The error a response stands for, or ``None`` when it is a success.

    ``body`` is the decoded JSON (any shape) or the raw text when it was not JSON.
    A business code in the body wins over the HTTP status; an HTML error page counts by its status.
    """
    code: int | None = None
    message = ""
    if isinstance(body, dict):
        raw_code = body.get("code")
        if isinstance(raw_code, int) and not isinstance(raw_code, bool) and raw_code != 0:
            code = raw_code
        elif body.get("success") is False:
            code = status if status >= 400 else 400
        msg = body.get("message") or body.get("msg") or body.get("error")
        if isinstance(msg, str):
            message = msg
    if code is None or code == 0:
        if status < 400:
            return None
        code = status
    if not message:
        message = f"HTTP {status}" if not isinstance(body, str) or not body.strip() else _short(body)
        if isinstance(body, str) and "<html" in body.lower():
            message = f"HTTP {status} (an HTML error page)"
    if code == 401:
        cls: type[NemoError] = TokenInvalid
    elif code == 409 or "already exists" in message.lower() or "duplicate" in message.lower():
        cls = RenderIdTaken if code in (400, 409) else _BY_CODE.get(code, BadRequest)
    elif code in _BY_CODE:
        cls = _BY_CODE[code]
    elif code == 400 and "client" in message.lower() and "id" in message.lower():
        cls = MissingClientId
    elif code == 404:
        cls = SessionNotFound if "session" in message.lower() else BadRequest
    elif 500 <= code < 600:
        cls = BackendUnavailable
    else:
        cls = BadRequest
    return cls(_short(message), code=code, http_status=status)
