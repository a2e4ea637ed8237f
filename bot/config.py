"""One typed settings object, read from the environment (and an optional ``.env`` file).

Every endpoint and delay the bot uses is a setting so that tests and users can point it anywhere.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, SecretStr
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot import __version__

DEFAULT_NEMO_API_BASE = "https://mega-api-prod.nemovideo.ai"


def parse_ids(value: Any) -> Any:
    """Platform ids from a setting: ``1,2``, ``1; 2``, ``1 2``, a JSON list, one number, or a list."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [int(part) for part in re.split(r"[,;\s]+", text) if part]
    if isinstance(value, int):
        return [value]
    return value


# NoDecode: pydantic-settings would otherwise read a list setting from the environment as JSON only, and
# refuse the comma-separated form people write.
IdList = Annotated[list[int], NoDecode, BeforeValidator(parse_ids)]


class NemoSettings(BaseSettings):
    """How to reach NemoVideo and how patiently to talk to it."""

    model_config = SettingsConfigDict(env_prefix="NEMO_", env_file=".env", extra="ignore")

    api_base: str = Field(DEFAULT_NEMO_API_BASE, description="NemoVideo API base URL.")
    token: SecretStr | None = Field(
        None, description="A NemoVideo token used as is for every chat; unset: one anonymous identity per chat."
    )
    web_base: str = Field("https://nemovideo.com", description="Base of NemoVideo's web links (claim, register).")
    poll_seconds: float = Field(30.0, gt=0, description="Seconds between export status polls.")
    retry_seconds: float = Field(30.0, ge=0, description="Wait before the one retry after a 429.")
    backoff_seconds: float = Field(
        1.0, ge=0, description="First wait before retrying a network error or 5xx on a safe call (doubles)."
    )
    network_retries: int = Field(3, ge=0, description="Retries of a safe call after network errors or 5xx.")
    still_working_seconds: float = Field(120.0, gt=0, description="Silence before a 'still working' note.")
    stream_timeout_seconds: float = Field(900.0, gt=0, description="Overall limit of one message's stream.")
    heartbeat_timeout_seconds: float = Field(
        600.0, gt=0, description="A stream with nothing but heartbeats for this long has timed out."
    )
    export_timeout_seconds: float = Field(1800.0, gt=0, description="Give up waiting for one export after this.")
    connect_timeout_seconds: float = Field(10.0, gt=0, description="TCP/TLS connect timeout.")
    read_timeout_seconds: float = Field(60.0, gt=0, description="Read timeout of ordinary (non-stream) calls.")
    skill_source: str = Field("nemobot", description="X-Skill-Source attribution header.")
    skill_version: str = Field(__version__, description="X-Skill-Version attribution header.")
    skill_platform: str = Field("unknown", description="X-Skill-Platform attribution header.")
    max_upload_bytes: int = Field(500 * 1024 * 1024, gt=0, description="Largest file the backend accepts.")
    max_files_per_upload: int = Field(20, ge=1, description="Most files sent in one upload request.")


class BotSettings(BaseSettings):
    """The bot itself: where it keeps its memory and how it shares work between chats."""

    model_config = SettingsConfigDict(env_prefix="NEMOBOT_", env_file=".env", extra="ignore")

    db: str = Field(
        "./nemobot.sqlite3",
        description="SQLite database file (created with mode 0600), or a postgresql:// URL of a PostgreSQL database.",
    )
    group_sessions: Literal["user", "shared"] = Field(
        "user", description="In group chats: one NemoVideo session per user, or one shared by the group."
    )
    max_in_flight: int = Field(
        32, ge=1, description="Backend operations running at once across all chats (the rest wait their turn)."
    )
    temp_dir: str | None = Field(None, description="Where downloads are staged (default: the system temp dir).")
    log_level: str = Field("INFO", description="Log level.")
