"""The process's logging: one handler on the root logger, whose formatter hides every secret.

Secrets reach log lines through the libraries, not only through our own code: python-telegram-bot puts
the token in every request URL (``…/bot<TOKEN>/getMe``) and logs its base URL at DEBUG, httpx logs each
request URL, and a traceback of a failed request repeats the URL. So redaction is applied once, to the
*formatted* record (message, arguments, traceback and stack together), at the handler: whatever logs,
at whatever level, goes through it. The secrets are the configured values (tokens and the webhook
secret) and, by pattern, things that look like one (NemoVideo user tokens, Telegram bot tokens,
``Authorization`` values, Discord interaction tokens in webhook URLs).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from typing import TextIO
from urllib.parse import quote

MASK = "***"

# Shorter values are not worth hiding (and would mask ordinary words): a real token is far longer.
_MIN_SECRET = 6

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # NemoVideo user bearer tokens, issued per chat (localnemo: "nmv_usr_" + a url-safe random string).
    (re.compile(r"nmv_usr_[A-Za-z0-9_\-]+"), "nmv_usr_" + MASK),
    # Telegram bot tokens: "<bot id>:<35 url-safe characters>" (core.telegram.org/bots/api#authorizing-your-bot).
    (re.compile(r"(?<![0-9])\d{5,}:[A-Za-z0-9_\-]{30,}"), MASK),
    # An Authorization header's value, however it was printed.
    (re.compile(r"(?i)\b(authorization['\"]?\s*[:=]\s*['\"]?(?:bearer|bot)?\s*)[^\s'\",}]+"), r"\g<1>" + MASK),
    (re.compile(r"(?i)\b(bearer|bot)\s+[A-Za-z0-9_\-\.]{20,}"), r"\g<1> " + MASK),
    # Discord interaction tokens travel in webhook and callback URLs and live 15 minutes.
    (re.compile(r"(/webhooks/\d+/)[^/\s?'\"]+"), r"\g<1>" + MASK),
    (re.compile(r"(/interactions/\d+/)[^/\s?'\"]+"), r"\g<1>" + MASK),
)


class Redactor:
    """Replaces the given secrets (as written, and as they appear URL-encoded) and secret-looking text."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        values: set[str] = set()
        for secret in secrets:
            if secret and len(secret) >= _MIN_SECRET:
                values.update({secret, quote(secret, safe=""), quote(secret)})
        # Longest first, so that a secret containing another is replaced whole.
        self._secrets = sorted(values, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text


class RedactingFormatter(logging.Formatter):
    """A formatter whose whole output (message, arguments, traceback, stack) has passed the redactor."""

    def __init__(self, fmt: str, redact: Redactor) -> None:
        super().__init__(fmt)
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


def _platform_errors_in_one_line(record: logging.LogRecord) -> bool:
    """A handler filter: errors that are a platform's answer get one line, not a traceback; one kind of
    line, already said plainly by the command, is dropped."""
    error = record.exc_info[1] if record.exc_info else None
    if error is None:
        return True
    if record.name.startswith("aiohttp.") and _is_bad_request(error):
        # aiohttp logs each malformed request it answers with 400 at ERROR, with a traceback through its parser
        # (web_protocol.py, data_received): anyone can send one, so one INFO line each, or none below INFO.
        record.msg = f"{record.getMessage()}: {type(error).__name__}: {' '.join(str(error).split())[:300]}"
        record.args = None
        record.exc_info = None
        record.exc_text = None
        record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
        return logging.getLogger().isEnabledFor(logging.INFO)
    if type(error).__name__ == "Conflict" and type(error).__module__ == "telegram.error":
        # A 409 ends the process with its own plain line; python-telegram-bot then logs the same 409 again,
        # with a traceback, from the last getUpdates of its stop (telegram/ext/_updater.py,
        # _get_updates_cleanup), which the other poller answers with 409 too.
        return not record.getMessage().startswith("Error while calling `get_updates` one more time")
    if type(error).__module__ == "telegram.error" or (
        record.getMessage().startswith("Attempting a reconnect") and record.name == "discord.client"
    ):
        # A Bot API answer (a 409, a network error) is not a bug of this program: its traceback only walks
        # through the library. discord.py logs each gateway reconnect with _log.exception (discord/client.py,
        # connect), a full traceback for a network hiccup it is about to retry.
        record.msg = f"{record.getMessage()} ({type(error).__name__}: {error})"
        record.args = None
        record.exc_info = None
        record.exc_text = None
    return True


def _is_bad_request(error: BaseException) -> bool:
    """Whether an error is aiohttp's for a malformed request (``HttpProcessingError``, ``BadHttpMessage`` and
    the parser's other errors), judged by name: this module does not import the library."""
    return any(
        kind.__name__ == "HttpProcessingError" and kind.__module__ == "aiohttp.http_exceptions"
        for kind in type(error).__mro__
    )


def redact(text: str) -> str:
    """``text`` as the installed log handler would show it (for lines printed outside the log)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, RedactingFormatter):
            return handler.formatter.redact(text)
    return Redactor()(text)


class PlainLineFormatter(RedactingFormatter):
    """One plain line per record, for a screen shared with a conversation: ``nemobot: warning: …``, an
    exception as its type and message (the whole traceback goes to NEMOBOT_LOG_FILE when one is set)."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__("%(message)s", redact)

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        error = record.exc_info[1] if record.exc_info else None
        if error is not None:
            text = f"{text} ({type(error).__name__}: {error})"
        return self.redact(f"nemobot: {record.levelname.lower()}: {' '.join(text.split())}")


def configure(level_name: str, redact: Redactor, stream: TextIO = sys.stderr, *, file: str | None = None,
              chat: bool = False) -> None:
    """Log at ``level_name`` to ``stream``, through ``redact``; library noise trimmed unless debugging.

    ``file`` (NEMOBOT_LOG_FILE): log there instead, in full. ``chat``: the stream shares the screen with a
    conversation, so only WARNING and above reach it, each as one plain line."""
    level = getattr(logging, level_name.upper(), logging.INFO)
    if not isinstance(level, int):
        level = logging.INFO
    handler: logging.Handler
    if file:
        handler = logging.FileHandler(file, encoding="utf-8")
        handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s %(message)s", redact))
    elif chat:
        handler = logging.StreamHandler(stream)
        handler.setLevel(max(level, logging.WARNING))
        handler.setFormatter(PlainLineFormatter(redact))
    else:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s %(message)s", redact))
    handler.addFilter(_platform_errors_in_one_line)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Warnings go through the handler too, so a warning that quotes a URL is redacted like a log line.
    logging.captureWarnings(True)
    if level > logging.DEBUG:
        # httpx logs every request URL at INFO; keep those out of the bot's log unless debugging.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    # One line per request of the embedded localnemo would drown the bot's own log.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    discord_client = logging.getLogger("discord.client")
    # The bot has no voice features: discord.py's warnings about missing voice libraries are noise.
    discord_client.addFilter(lambda record: "voice will NOT be supported" not in record.getMessage())
