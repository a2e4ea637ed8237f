"""Backend errors in plain words: what a user reads instead of a code, a trace or raw JSON.

Pure functions of the error and the language: whatever must be fetched first (a registration link) is
fetched by the caller and passed in.
"""

from __future__ import annotations

import re

from bot.nemo import errors
from bot.nemo.uploads import format_size, kind_of
from bot.texts import Backend, backend_text, t

_RAW_LOOKING = re.compile(r"[{}\[\]<>]|Traceback|Exception|nmv_|Bearer", re.IGNORECASE)


def plain_reason(reason: str | None, lang: str, backend: Backend = "hosted") -> str:
    """A backend reason fit for a user: short, and never raw JSON, a trace or a credential."""
    text = " ".join((reason or "").split())
    if not text or _RAW_LOOKING.search(text):
        return backend_text("reason_unknown", lang, backend)
    return text if len(text) <= 160 else text[:159] + "…"


_SECRET_LOOKING = re.compile(r"Traceback|Exception|nmv_|Bearer", re.IGNORECASE)


def plain_warning(warning: str, lang: str, backend: Backend = "hosted") -> str:
    """A backend's warning about a file it took (a damaged upload kept in part), fit for a user: the words as
    they are — file names keep their brackets — on one line, never a trace or a credential, and long enough
    for a long file name and the advice after it."""
    text = " ".join("".join(c for c in warning if c.isprintable() or c.isspace()).split())
    if not text or _SECRET_LOOKING.search(text):
        return backend_text("reason_unknown", lang, backend)
    return text if len(text) <= 400 else text[:399] + "…"


def file_refusal(exc: errors.NemoError, name: str, lang: str, *, upload_limit: int) -> str:
    """Why one file was refused: too large (with both sizes), not a kind the backend takes (with the list of
    the kinds it takes), or, for a name the backend does take, the backend's reason: a damaged .mp4 told
    "Accepted formats: mp4, …" would be told nothing."""
    if isinstance(exc, errors.FileTooLarge):
        return t("file_too_large", lang, name=name, size=format_size(exc.size) if exc.size else "?",
                 limit=format_size(exc.limit or upload_limit))
    reason = plain_reason(exc.message, lang).rstrip(".。")
    if kind_of(name) is None or not exc.message.strip() or reason == plain_reason(None, lang):
        return t("unsupported_file", lang, name=name)
    if any(each and each in reason for each in name.split(", ")):
        return t("unreadable_file_said", lang, reason=reason[:1].upper() + reason[1:])
    return t("unreadable_file", lang, name=name, reason=reason)


def explain(exc: errors.NemoError, lang: str, *, registration_link: str | None, upload_limit: int,
            backend: Backend = "hosted") -> str:
    """The answer to a failed operation. ``registration_link`` is where a user out of credits gets more
    (None when every chat shares one token: then there is nothing for the user to do but wait); ``backend``
    words the answers that name it."""
    if isinstance(exc, errors.OutOfCredits):
        if registration_link is None:
            return backend_text("out_of_credits_shared", lang, backend)
        return t("out_of_credits", lang, link=registration_link)
    if isinstance(exc, errors.SessionNotFound):
        return backend_text("session_lost", lang, backend)
    if isinstance(exc, errors.ExportBlocked):
        return backend_text("export_blocked", lang, backend)
    if isinstance(exc, errors.RateLimited):
        return backend_text("rate_limited", lang, backend)
    if isinstance(exc, errors.FileTooLarge | errors.UnsupportedFileType):
        return file_refusal(exc, getattr(exc, "filename", None) or "this file", lang, upload_limit=upload_limit)
    if isinstance(exc, errors.StreamTimeout):
        return backend_text("stream_timeout", lang, backend)
    if isinstance(exc, errors.StreamInterrupted | errors.BackendUnavailable):
        return backend_text("backend_down", lang, backend)
    if isinstance(exc, errors.TokenInvalid | errors.MissingClientId):
        return backend_text("token_refused", lang, backend)
    if isinstance(exc, errors.ExportFailed):
        return backend_text("export_failed", lang, backend, reason=plain_reason(exc.message, lang, backend))
    return backend_text("backend_error", lang, backend, reason=plain_reason(exc.message, lang, backend))
