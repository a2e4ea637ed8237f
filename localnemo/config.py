"""Settings of the local NemoVideo-compatible server (localnemo).

Timings and behaviours are settings so that tests can make renders and streams fast, and so that a
developer can make the server behave like the hosted backend (slow, silent, chatty) when trying the bot.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

Dialect = Literal["adk", "simple"]
JobShape = Literal["top", "wrapped"]
RendererName = Literal["ffmpeg", "copy"]

_DIALECTS: tuple[Dialect, ...] = ("adk", "simple")
_JOB_SHAPES: tuple[JobShape, ...] = ("top", "wrapped")
_RENDERERS: tuple[RendererName, ...] = ("ffmpeg", "copy")
# x264's presets (x264 --help), fastest first.
X264_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo",
)  # fmt: skip
# Spelled in two pieces on purpose: tests/test_readme.py finds the variables to check in the README with
# the pattern LOCALNEMO_[A-Z_]+, which stops at a digit. Both names are in the README.
X264_PRESET_ENV = "LOCALNEMO_X264_PRESET"
X264_CRF_ENV = "LOCALNEMO_X264_CRF"
_RESOLUTION_RE = re.compile(r"^(?P<lines>\d{3,4})p$|^(?P<k>[248])k$")


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
    # Upload-by-URL may fetch private/loopback addresses only when allowed (a server reachable from the
    # internet must not be made to fetch from the network it sits in); tests serving files from
    # 127.0.0.1 turn it on.
    allow_private_urls: bool = False
    # "ffmpeg" edits for real; "copy" is the placeholder that copies the first clip (fast, for tests of
    # the protocol only).
    renderer: RendererName = "ffmpeg"
    # Output size when the draft does not ask for one: the short side, "720p", "1080p", "4k" or any "<N>p".
    default_resolution: str = "1080p"
    x264_preset: str = "veryfast"
    x264_crf: int = 23
    # Pause detection: quieter than this (dBFS) for at least silence_min_ms is a pause; silence_margin_ms
    # of it is kept on each side of speech; kept pieces shorter than min_clip_ms are dropped.
    silence_threshold_db: float = -35.0
    silence_min_ms: int = 500
    silence_margin_ms: int = 200
    min_clip_ms: int = 200
    # Disk used by uploads and renders under data_dir; over it, the least recently used idle sessions are
    # removed (0: no bound).
    max_disk_mb: int = 20 * 1024
    # The font titles and captions are drawn with; None: found among the system's fonts.
    font_file: str | None = None

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        if self.dialect not in _DIALECTS:
            raise ValueError(f"dialect must be one of {_DIALECTS}, not {self.dialect!r}")
        if self.job_shape not in _JOB_SHAPES:
            raise ValueError(f"job_shape must be one of {_JOB_SHAPES}, not {self.job_shape!r}")
        if self.renderer not in _RENDERERS:
            raise ValueError(f"renderer must be one of {_RENDERERS}, not {self.renderer!r}")
        if self.x264_preset not in X264_PRESETS:
            raise ValueError(f"x264_preset must be one of {X264_PRESETS}, not {self.x264_preset!r}")
        if not 0 <= self.x264_crf <= 51:
            raise ValueError("x264_crf must be from 0 to 51")
        resolution_lines(self.default_resolution)  # raises on a bad value
        if self.silence_threshold_db >= 0:
            raise ValueError("silence_threshold_db must be below 0 dBFS")
        if self.public_base_url is not None:
            self.public_base_url = self.public_base_url.rstrip("/")

    @classmethod
    def from_env(cls, default_data_dir: Path | None = None) -> LocalNemoConfig:
        """Read the ``LOCALNEMO_*`` variables; anything unset keeps its default (the data folder: the one
        given, else a new temporary folder)."""
        env = os.environ
        data_dir_text = env.get("LOCALNEMO_DATA_DIR")
        if data_dir_text:
            data_dir = Path(data_dir_text)
        elif default_data_dir is not None:
            data_dir = default_data_dir
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
        config.allow_private_urls = _bool(env, "LOCALNEMO_ALLOW_PRIVATE_URLS", config.allow_private_urls)
        renderer = env.get("LOCALNEMO_RENDERER")
        if renderer:
            if renderer not in _RENDERERS:
                raise ValueError(f"LOCALNEMO_RENDERER must be one of {_RENDERERS}, not {renderer!r}")
            config.renderer = renderer
        resolution = env.get("LOCALNEMO_RESOLUTION")
        if resolution:
            try:
                resolution_lines(resolution)
            except ValueError:
                raise ValueError(f"LOCALNEMO_RESOLUTION must be like 720p, 1080p or 4k, not {resolution!r}") from None
            config.default_resolution = resolution
        preset = env.get(X264_PRESET_ENV)
        if preset:
            if preset not in X264_PRESETS:
                raise ValueError(f"{X264_PRESET_ENV} must be one of {', '.join(X264_PRESETS)}, not {preset!r}")
            config.x264_preset = preset
        config.x264_crf = _int(env, X264_CRF_ENV, config.x264_crf)
        if config.x264_crf > 51:
            raise ValueError(f"{X264_CRF_ENV} must be from 0 to 51")
        threshold = env.get("LOCALNEMO_SILENCE_THRESHOLD_DB")
        if threshold:
            try:
                config.silence_threshold_db = float(threshold)
            except ValueError:
                raise ValueError(f"LOCALNEMO_SILENCE_THRESHOLD_DB must be a number, not {threshold!r}") from None
            if config.silence_threshold_db >= 0:
                raise ValueError("LOCALNEMO_SILENCE_THRESHOLD_DB must be below 0 (dBFS)")
        config.silence_min_ms = _int(env, "LOCALNEMO_SILENCE_MIN_MS", config.silence_min_ms)
        config.silence_margin_ms = _int(env, "LOCALNEMO_SILENCE_MARGIN_MS", config.silence_margin_ms)
        config.min_clip_ms = _int(env, "LOCALNEMO_MIN_CLIP_MS", config.min_clip_ms)
        config.max_disk_mb = _int(env, "LOCALNEMO_MAX_DISK_MB", config.max_disk_mb)
        config.font_file = env.get("LOCALNEMO_FONT_FILE") or config.font_file
        return config


def resolution_lines(text: str) -> int:
    """The short side in pixels of "720p", "1080p", "2160p", "4k" (2160) or "2k" (1440)."""
    match = _RESOLUTION_RE.match(text.strip().lower())
    if match is None:
        raise ValueError(f"not a resolution: {text!r}")
    if match.group("k"):
        return {"2": 1440, "4": 2160, "8": 4320}[match.group("k")]
    lines = int(match.group("lines"))
    if not 120 <= lines <= 4320:
        raise ValueError(f"resolution out of range: {text!r}")
    return lines


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    text = env.get(name)
    if not text:
        return default
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be true or false, not {text!r}")


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
