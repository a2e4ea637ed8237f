"""Settings of the local NemoVideo-compatible server (localnemo), read with pydantic-settings.

Timings and behaviours are settings so that tests can make renders and streams fast, and so that a
developer can make the server behave like the hosted backend (slow, silent, chatty) when trying the bot.
Building ``LocalNemoConfig(...)`` reads nothing from the environment (tests build it directly and must not
pick up a developer's shell); ``LocalNemoConfig.from_env()`` reads the documented ``LOCALNEMO_*`` variables.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

log = logging.getLogger(__name__)

Dialect = Literal["adk", "simple"]
JobShape = Literal["top", "wrapped"]
RendererName = Literal["ffmpeg", "copy"]

# x264's presets (x264 --help), fastest first.
X264_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo",
)  # fmt: skip
_RESOLUTION_RE = re.compile(r"^(?P<lines>\d{3,4})p$|^(?P<k>[248])k$")

# The variables localnemo reads, and the setting each one sets. Only these: every one is documented in the
# README (tests/test_readme.py reads the names from this file), the other settings are for code and tests.
ENV_VARIABLES: dict[str, str] = {
    "data_dir": "LOCALNEMO_DATA_DIR",
    "dialect": "LOCALNEMO_DIALECT",
    "job_shape": "LOCALNEMO_JOB_SHAPE",
    "render_step_seconds": "LOCALNEMO_RENDER_STEP_SECONDS",
    "heartbeat_seconds": "LOCALNEMO_HEARTBEAT_SECONDS",
    "initial_credits": "LOCALNEMO_CREDITS",
    "allow_private_urls": "LOCALNEMO_ALLOW_PRIVATE_URLS",
    "renderer": "LOCALNEMO_RENDERER",
    "default_resolution": "LOCALNEMO_RESOLUTION",
    "x264_preset": "LOCALNEMO_X264_PRESET",
    "x264_crf": "LOCALNEMO_X264_CRF",
    "silence_threshold_db": "LOCALNEMO_SILENCE_THRESHOLD_DB",
    "silence_min_ms": "LOCALNEMO_SILENCE_MIN_MS",
    "silence_margin_ms": "LOCALNEMO_SILENCE_MARGIN_MS",
    "min_clip_ms": "LOCALNEMO_MIN_CLIP_MS",
    "min_cut_ms": "LOCALNEMO_MIN_CUT_MS",
    "min_end_ms": "LOCALNEMO_MIN_END_MS",
    "min_speech_ms": "LOCALNEMO_MIN_SPEECH_MS",
    "max_disk_mb": "LOCALNEMO_MAX_DISK_MB",
    "max_files_per_upload": "LOCALNEMO_MAX_FILES_PER_UPLOAD",
    "fetch_timeout_seconds": "LOCALNEMO_FETCH_TIMEOUT_SECONDS",
    "font_file": "LOCALNEMO_FONT_FILE",
    "result_link_hours": "LOCALNEMO_RESULT_LINK_HOURS",
    "max_renders": "LOCALNEMO_MAX_RENDERS",
    "max_renders_per_user": "LOCALNEMO_MAX_RENDERS_PER_USER",
    "render_timeout_seconds": "LOCALNEMO_RENDER_TIMEOUT_SECONDS",
    "max_output_seconds": "LOCALNEMO_MAX_OUTPUT_SECONDS",
    "max_segments": "LOCALNEMO_MAX_SEGMENTS",
    "stt_engine": "LOCALNEMO_STT_ENGINE",
    "whisper_model": "LOCALNEMO_WHISPER_MODEL",
    "queue_db": "LOCALNEMO_QUEUE_DB",
    "shared_dir": "LOCALNEMO_SHARED_DIR",
    "worker_concurrency": "LOCALNEMO_WORKER_CONCURRENCY",
    "stalled_seconds": "LOCALNEMO_STALLED_SECONDS",
}


def _temporary_data_dir() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="localnemo-"))
    log.info("localnemo.data_dir temp=%s", folder)
    return folder


class LocalNemoConfig(BaseSettings):
    """Everything localnemo can be told; the defaults mimic the hosted backend, only faster."""

    model_config = SettingsConfigDict(env_prefix="LOCALNEMO_", env_ignore_empty=True, extra="forbid")

    # Uploads, renders and assets; unset: a new temporary folder.
    data_dir: Path = Field(default_factory=_temporary_data_dir)
    dialect: Dialect = "adk"
    job_shape: JobShape = "wrapped"
    token_ttl_seconds: float = Field(7 * 24 * 3600, gt=0)
    initial_credits: int = Field(100, ge=0)
    message_cost: int = Field(1, ge=0)
    # Sent while the agent is silent, so that the client can tell "busy" from "dead".
    heartbeat_seconds: float = Field(5.0, ge=0)
    # A small pause between agent events so that clients see a stream, not a single burst.
    event_delay_seconds: float = Field(0.05, ge=0)
    # ADK streams text in partial chunks and then once more whole.
    partial_text: bool = True
    render_steps: int = 4
    render_step_seconds: float = Field(0.5, ge=0)
    require_attribution: bool = True
    # One upload (the whole request: every file in it, plus its multipart framing) is at most this big; a
    # larger declared Content-Length is refused before its body is read.
    max_upload_bytes: int = 500 * 1024 * 1024
    # Files in one upload, multipart parts or URLs alike.
    max_files_per_upload: int = Field(20, ge=1)
    # The whole of one upload by URL (every URL in it, every redirect, the bodies): a server that trickles
    # is cut off, and 20 URLs do not get 20 deadlines.
    fetch_timeout_seconds: float = Field(300.0, gt=0)
    # None: URLs handed out are derived from the request's scheme and Host header.
    public_base_url: str | None = None
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
    x264_crf: int = Field(23, ge=0, le=51)
    # Pause detection: quieter than this (dBFS) for at least silence_min_ms is a pause; silence_margin_ms
    # of it is kept on each side of speech; kept pieces shorter than min_clip_ms are dropped.
    silence_threshold_db: float = Field(-35.0, lt=0)
    silence_min_ms: int = Field(500, ge=0)
    silence_margin_ms: int = Field(200, ge=0)
    min_clip_ms: int = Field(200, ge=0)
    # No jump cuts for nothing: a cut saving less than min_cut_ms is not made, the piece at either end of a
    # clip is at least min_end_ms long, and sound between pauses shorter than min_speech_ms (a click) is not
    # speech, so it keeps no piece of its own.
    min_cut_ms: int = Field(300, ge=0)
    min_end_ms: int = Field(500, ge=0)
    min_speech_ms: int = Field(120, ge=0)
    # Disk used by uploads and renders under data_dir; over it, the least recently used idle sessions are
    # removed (0: no bound).
    max_disk_mb: int = Field(20 * 1024, ge=0)
    # Speech recognition for captions: "auto" uses Whisper when whisper_model loads (a faster-whisper model
    # folder, or a model name fetched when there is a network), else pocketsphinx; the others force one.
    stt_engine: Literal["auto", "pocketsphinx", "whisper"] = "auto"
    whisper_model: str | None = None
    # The font titles and captions are drawn with; None: found among the system's fonts.
    font_file: str | None = None
    # How long the signed download link of a result (the job's output URL) stays valid.
    result_link_hours: float = Field(168, gt=0)
    # Renders running at once; the others wait in order ("pending" with a queuePosition).
    max_renders: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    # Renders one user may have waiting or running; past it an export is refused (429) until one is done.
    max_renders_per_user: int = Field(3, ge=1)
    # How often finished jobs older than the result link's lifetime (and their files) and expired tokens
    # are forgotten; also done at start.
    prune_interval_seconds: float = Field(600.0, gt=0)
    # A render running longer is stopped (FFmpeg killed) and fails with a plain reason.
    render_timeout_seconds: float = Field(3600, gt=0)
    # Caps of a draft, checked when its export is asked for.
    max_output_seconds: float = Field(7200, gt=0)
    max_segments: int = Field(2000, ge=1)
    # Set only by the bot that embeds this server (nemobot --local), never from the environment: with it, an
    # upload may name files on this machine by their path (header X-Localnemo-Local-Key: this key), which
    # are then taken without a needless copy. None (serve-local, tests): every path is refused.
    local_files_key: str | None = None
    # A postgresql:// URL: renders are queued there and done by `nemobot render-worker` processes (any number,
    # any machine); unset, the server renders them itself.
    queue_db: str | None = None
    # Where the sources of queued renders and every render's result are kept: a folder that the server and
    # every render worker mount. Unset: the data folder.
    shared_dir: Path | None = None
    # Renders one render worker runs at once.
    worker_concurrency: int = Field(1, ge=1)
    # A render worker silent for this long is taken for dead, and its renders are done again by another.
    stalled_seconds: float = Field(30.0, gt=0)

    @property
    def renders_dir(self) -> Path:
        """Where results are written: ``renders`` under the shared folder."""
        return (self.shared_dir or self.data_dir) / "renders"

    @field_validator("x264_preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        if value not in X264_PRESETS:
            raise ValueError(f"must be one of {', '.join(X264_PRESETS)}")
        return value

    @field_validator("default_resolution")
    @classmethod
    def _readable_resolution(cls, value: str) -> str:
        try:
            resolution_lines(value)
        except ValueError:
            raise ValueError("must be like 720p, 1080p or 4k") from None
        return value

    @field_validator("public_base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value is not None else None

    @field_validator("font_file")
    @classmethod
    def _font_or_none(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("queue_db")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only what the constructor is given: the environment is read by from_env, on purpose.
        return (init_settings,)

    @classmethod
    def from_env(cls, default_data_dir: Path | None = None) -> LocalNemoConfig:
        """Read the ``LOCALNEMO_*`` variables; anything unset keeps its default (the data folder: the one
        given, else a new temporary folder). A bad value raises ValueError naming its variable."""
        values: dict[str, Any] = {} if default_data_dir is None else {"data_dir": default_data_dir}
        values.update(_DocumentedEnvironment(cls)())
        try:
            return cls(**values)
        except ValidationError as exc:
            raise ValueError(_explain(exc)) from None


class _DocumentedEnvironment(EnvSettingsSource):
    """The environment as pydantic-settings reads it, limited to ``ENV_VARIABLES`` under their names."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        variable = ENV_VARIABLES.get(field_name)
        if variable is None:
            return None, field_name, False
        key = variable if self.case_sensitive else variable.lower()
        return self.env_vars.get(key), field_name, False


def _explain(exc: ValidationError) -> str:
    """One line per bad variable, named as the user set it."""
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        variable = ENV_VARIABLES.get(field, field)
        # pydantic words a validator's own ValueError as "Value error, <message>".
        message = error["msg"].removeprefix("Value error, ")
        # A database URL may hold a password: never repeated.
        shown = "" if field == "queue_db" else f" (got {error['input']!r})"
        lines.append(f"{variable}: {message}{shown}")
    return "; ".join(lines)


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
