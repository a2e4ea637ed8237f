"""Typed views of what NemoVideo answers. Every model tolerates unknown keys: the API is not fully
documented and grows; an unexpected field must never break a chat."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bot.nemo.timeline_model import Draft


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class TokenGrant(_Loose):
    token: str
    user_id: str | None = None
    expires_at: datetime | None = None
    credits: float | None = None


class SessionInfo(_Loose):
    task_id: str
    session_id: str

    def __init__(self, **data: Any) -> None:
        # The backend sends session ids as long digit strings; some clients see them as numbers.
        for key in ("task_id", "session_id"):
            if isinstance(data.get(key), int):
                data[key] = str(data[key])
        super().__init__(**data)


class Credits(_Loose):
    available: float = 0
    frozen: float = 0
    total: float = 0


class SessionState(_Loose):
    draft: Draft = Field(default_factory=Draft)
    video_infos: list[dict[str, Any]] = Field(default_factory=list)
    generated_media: list[Any] = Field(default_factory=list)
    canvas_config: dict[str, Any] = Field(default_factory=dict)
    video_analyses: Any = None

    def __init__(self, **data: Any) -> None:
        if data.get("draft") is None:
            data.pop("draft", None)
        super().__init__(**data)


class UploadedFile(_Loose):
    filename: str = ""
    file_type: str | None = None
    cdn_url: str | None = None
    duration: float | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    hash: str | None = None
    # localnemo's word on a file it took only in part (damaged: "only the first 28.7 s of 84.6 s can be used").
    warning: str | None = None


class UploadResult(_Loose):
    files: list[UploadedFile] = Field(default_factory=list)
    session_state_applied: bool | None = None


RenderStatus = Literal["pending", "processing", "completed", "failed"]


class RenderJob(BaseModel):
    """An export job, normalised from either documented shape."""

    id: str
    status: str
    progress: float = 0
    url: str | None = None
    error: str | None = None
    duration: float | None = None
    size: int | None = None
    # The video's captions as a SubRip file, timed to it (localnemo answers ``captionsUrl`` when it has any).
    captions_url: str | None = None
    # Where a render waiting for its turn stands (1 = next), when the backend caps renders running at once.
    queue_position: int | None = None

    @property
    def done(self) -> bool:
        """Completed *with* a URL: the doc warns that ``completed`` alone is not enough."""
        return self.status == "completed" and bool(self.url)

    @property
    def failed(self) -> bool:
        return self.status in ("failed", "cancelled", "canceled", "error")

    @classmethod
    def parse(cls, body: Any, fallback_id: str) -> RenderJob:
        """Accept ``{"taskId", "status", "output": {"url"}}`` and ``{"data": {"id", "outputUrl"}}``."""
        job: dict[str, Any] = body if isinstance(body, dict) else {}
        inner = job.get("data")
        if isinstance(inner, dict) and ("status" in inner or "id" in inner or "taskId" in inner):
            job = inner
        output = job.get("output") if isinstance(job.get("output"), dict) else {}
        assert isinstance(output, dict)
        url = job.get("outputUrl") or job.get("url") or output.get("url")
        captions = job.get("captionsUrl") or output.get("captionsUrl")
        error = job.get("error") or job.get("errorMessage")
        if isinstance(error, dict):
            error = error.get("message") or str(error)
        progress = job.get("progress")
        position = job.get("queuePosition", job.get("queue_position"))
        return cls(
            id=str(job.get("id") or job.get("taskId") or fallback_id),
            status=str(job.get("status") or "pending").lower(),
            progress=float(progress) if isinstance(progress, int | float) else 0.0,
            url=url if isinstance(url, str) and url else None,
            captions_url=captions if isinstance(captions, str) and captions else None,
            error=str(error) if error else None,
            duration=output.get("duration") if isinstance(output.get("duration"), int | float) else None,
            size=output.get("size") if isinstance(output.get("size"), int) else None,
            queue_position=position if isinstance(position, int) and not isinstance(position, bool)
            and position > 0 else None,
        )
