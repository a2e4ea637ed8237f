"""Settings of the local NemoVideo-compatible server (localnemo).

Timings and behaviours are settings so that tests can make renders and streams fast, and so that a
developer can make the server behave like the hosted backend (slow, silent, chatty) when trying the bot.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

Dialect = Literal["adk", "simple"]
JobShape = Literal["top", "wrapped"]

_DIALECTS: tuple[Dialect, ...] = ("adk", "simple")
_JOB_SHAPES: tuple[JobShape, ...] = ("top", "wrapped")


@dataclass
class LocalNemoConfig:
    """Everything localnemo can be told; the defaults mimic the hosted backend, only faster."""

    data_dir: Path
    dialect: Dialect = "adk"
    job_shape: JobShape = "wrapped"
    token_ttl_seconds: float = 7 * 24 * 3600
    initial_credits: int = 100
    message_cost: int = 1
    # Sent while the agent is silent, so that the client can tell "busy" from "dead".
    heartbeat_seconds: float = 5.0
    # A small pause between agent events so that clients see a stream, not a single burst.
    event_delay_seconds: float = 0.05
    # ADK streams text in partial chunks and then once more whole.
    partial_text: bool = True
    render_steps: int = 4
    render_step_seconds: float = 0.5
    require_attribution: bool = True
    max_upload_bytes: int = 500 * 1024 * 1024
    # None: URLs handed out are derived from the request's scheme and Host header.
    public_base_url: str | None = None
    # Every Nth edit message of a session ends with no text (the skill documents ~30 %); 0 = never.
    silent_every: int = 3
    # Upload-by-URL may fetch private/loopback addresses (tests serve files from 127.0.0.1).
    allow_private_urls: bool = True

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        if self.dialect not in _DIALECTS:
            raise ValueError(f"dialect must be one of {_DIALECTS}, not {self.dialect!r}")
        if self.job_shape not in _JOB_SHAPES:
            raise ValueError(f"job_shape must be one of {_JOB_SHAPES}, not {self.job_shape!r}")
        if self.public_base_url is not None:
            self.public_base_url = self.public_base_url.rstrip("/")

    @classmethod
    def from_env(cls) -> LocalNemoConfig:
        """Read the ``LOCALNEMO_*`` variables; anything unset keeps its default."""
        env = os.environ
        data_dir_text = env.get("LOCALNEMO_DATA_DIR")
        if data_dir_text:
            data_dir = Path(data_dir_text)
        else:
            data_dir = Path(tempfile.mkdtemp(prefix="localnemo-"))
            log.info("localnemo.data_dir temp=%s", data_dir)
        config = cls(data_dir=data_dir)
        dialect = env.get("LOCALNEMO_DIALECT")
        if dialect:
            if dialect not in _DIALECTS:
                raise ValueError(f"LOCALNEMO_DIALECT must be one of {_DIALECTS}, not {dialect!r}")
            config.dialect = dialect
        shape = env.get("LOCALNEMO_JOB_SHAPE")
        if shape:
            if shape not in _JOB_SHAPES:
                raise ValueError(f"LOCALNEMO_JOB_SHAPE must be one of {_JOB_SHAPES}, not {shape!r}")
            config.job_shape = shape
        config.render_step_seconds = _float(env, "LOCALNEMO_RENDER_STEP_SECONDS", config.render_step_seconds)
        config.heartbeat_seconds = _float(env, "LOCALNEMO_HEARTBEAT_SECONDS", config.heartbeat_seconds)
        config.silent_every = _int(env, "LOCALNEMO_SILENT_EVERY", config.silent_every)
        config.initial_credits = _int(env, "LOCALNEMO_CREDITS", config.initial_credits)
        return config


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number, not {text!r}") from None
    if value < 0:
        raise ValueError(f"{name} must not be negative")
    return value


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name)
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {text!r}") from None
    if value < 0:
        raise ValueError(f"{name} must not be negative")
    return value
