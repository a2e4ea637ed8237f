"""The pluggable "brain" of localnemo: it reads a message, edits the session's draft, and says so.

An agent yields neutral events; the server renders them in the configured wire dialect. ``SimpleAgent``
is a small deterministic rule set (English and Chinese) that edits the draft the way the hosted agent
does — enough for the bot to be exercised end to end. It imitates the hosted agent's habits on purpose:
some edits end with no text at all, and some replies talk about buttons of a GUI the chat user does not
have. It cannot generate footage and says so.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from localnemo.state import SessionRecord

log = logging.getLogger(__name__)


@dataclass
class AgentText:
    text: str


@dataclass
class AgentToolCall:
    name: str
    args: dict[str, Any]
    call_id: str = field(default_factory=lambda: "af-" + secrets.token_hex(3))


@dataclass
class AgentToolResult:
    name: str
    result: dict[str, Any]
    call_id: str = ""


@dataclass
class AgentError:
    """An error inside the stream. ``system=True`` is the other documented form: an event authored
    by "system" whose text starts with "Error: " (ADK dialect only)."""

    message: str
    system: bool = False


AgentEvent = AgentText | AgentToolCall | AgentToolResult | AgentError


class Agent(Protocol):
    def run(self, session: SessionRecord, message: str) -> AsyncIterator[AgentEvent]:
        """Process one user message: change ``session`` as needed and yield what happens."""
        ...


# Phrases the hosted backend uses because it assumes its web editor; the bot must not pass them on.
GUI_EXPORT_EN = "Click the Export button when you're ready to download."
GUI_EXPORT_ZH = "准备好后点击导出按钮即可下载。"
GUI_PREVIEW_EN = "You can preview it in the timeline."
GUI_PREVIEW_ZH = "你可以在时间线中预览。"

DEFAULT_LENGTH_MS = 10_000
CAPTION_MS = 3_000
TITLE_MS = 3_000

_ASPECTS: dict[str, tuple[int, int]] = {"9:16": (9, 16), "1:1": (1, 1), "4:5": (4, 5), "16:9": (16, 9)}
_RESOLUTIONS: dict[str, int] = {"720p": 720, "1080p": 1080, "4k": 2160}

_CJK_RE = re.compile(r"[\u4e00-\u9fff]")
_GENERATE_RE = re.compile(
    r"\b(generate|create|make|produce)\b.{0,40}?\b(video|clip|footage|movie|film)\b|生成.{0,10}?(视频|影片|短片)",
    re.IGNORECASE,
)
# How a test asks for a failing tool (the hosted agent's errors cannot be triggered on purpose).
_ERROR_RE = re.compile(
    r"\b(simulate|force)\s+(an?\s+)?(error|failure)\b|\bfail\s+(this|the)\s+(edit|message|tool)\b|模拟错误",
    re.IGNORECASE,
)
_MUSIC_RE = re.compile(r"\bmusic\b|音乐|配乐", re.IGNORECASE)
_VOLUME_RE = re.compile(r"(\d{1,3})\s*%")
_TITLE_QUOTED_RE = re.compile(r"\btitle\b[^\"“「]{0,20}[\"“「](?P<text>[^\"”」]+)[\"”」]", re.IGNORECASE)
_TITLE_COLON_RE = re.compile(r"\btitle\s*[:：]\s*(?P<text>.+)$", re.IGNORECASE)
_TITLE_ZH_RE = re.compile(r"标题\s*(?:为|是|[:：])?\s*[\"“「『]?(?P<text>[^\"”」』]+)")
_CAPTION_RE = re.compile(r"\b(captions?|subtitles?)\b|字幕", re.IGNORECASE)
_PAUSE_RE = re.compile(r"\b(pauses?|silences?|silent parts?)\b|停顿|静音", re.IGNORECASE)
_ASPECT_RE = re.compile(r"(?<!\d)(9:16|1:1|4:5|16:9)(?!\d)")
_RESOLUTION_RE = re.compile(r"(?<![\w])(720p|1080p|4k)(?![\w])", re.IGNORECASE)


class _Reply:
    """Collects the sentences of one reply in the message's language."""

    def __init__(self, chinese: bool) -> None:
        self.chinese = chinese
        self.parts: list[str] = []

    def say(self, en: str, zh: str) -> None:
        self.parts.append(zh if self.chinese else en)

    @property
    def text(self) -> str:
        return ("" if self.chinese else " ").join(self.parts)


class SimpleAgent:
    """Deterministic keyword rules over the draft. Every ``silent_every``-th edit message of a session
    ends with no text (0 = never), as about a third of the hosted agent's edits do."""

    def __init__(self, silent_every: int = 3) -> None:
        self.silent_every = silent_every

    async def run(self, session: SessionRecord, message: str) -> AsyncIterator[AgentEvent]:
        text = message.strip()
        chinese = bool(_CJK_RE.search(text)) or session.language.lower().startswith("zh")
        reply = _Reply(chinese)
        session.message_count += 1

        if _ERROR_RE.search(text):
            # The two documented error forms, after a normal start (as in the wire examples).
            yield AgentText("我来看看你的视频。" if chinese else "Let me look at your clip.")
            yield AgentError("upstream model timeout")
            yield AgentError("tool edit_multitrack failed", system=True)
            return

        if _GENERATE_RE.search(text) and not session.video_infos:
            reply.say(
                "I can't generate footage here: this is localnemo, an offline stand-in for NemoVideo, and it "
                "has no video generation model. The hosted NemoVideo backend generates videos from a text "
                "prompt. Here you can upload your own clips and I'll edit them (music, titles, captions, "
                "pauses, aspect ratio, resolution).",
                "这里无法生成视频素材：localnemo 是离线运行的 NemoVideo 替身，没有视频生成模型。"
                "在线的 NemoVideo 后端可以根据文字描述生成视频。你可以上传自己的素材，我来帮你剪辑"
                "（音乐、标题、字幕、去停顿、画幅比例、分辨率）。",
            )
            yield AgentText(reply.text)
            return

        edits: list[tuple[AgentToolCall, AgentToolResult]] = []
        for rule in (self._music, self._title, self._captions, self._pauses, self._aspect, self._resolution):
            outcome = rule(session, text, reply)
            if outcome is not None:
                edits.append(outcome)
        if not edits and not reply.parts:
            edits.append(self._note(session, text, reply))

        for call, result in edits:
            yield call
            yield result
        if edits:
            session.edit_count += 1
            if self.silent_every > 0 and session.edit_count % self.silent_every == 0:
                log.info("localnemo.agent.silent session_id=%s", session.session_id)
                return
        if reply.parts:
            yield AgentText(reply.text)

    # rules: each returns the tool call and result of its edit, or None when it does not apply

    def _music(self, session: SessionRecord, text: str, reply: _Reply) -> tuple[AgentToolCall, AgentToolResult] | None:
        if not _MUSIC_RE.search(text):
            return None
        volume = 0.3
        volume_match = _VOLUME_RE.search(text)
        if volume_match is not None:
            volume = min(100, int(volume_match.group(1))) / 100
        length = video_length_ms(session.draft) or DEFAULT_LENGTH_MS
        segment = {"d": length, "m": {"title": "Background music", "volume": volume, "start": 0}}
        tracks = session.draft.setdefault("t", [])
        # Replace the music this agent added before; uploaded audio (it has a source) stays.
        existing = next(
            (
                track
                for track in tracks
                if track.get("tt") == 1 and track.get("sg") and "src" not in track["sg"][0].get("m", {})
            ),
            None,
        )
        if existing is not None:
            existing["sg"] = [segment]
        else:
            tracks.append({"tt": 1, "sg": [segment]})
        percent = round(volume * 100)
        reply.say(
            f"I added background music over the whole video ({length / 1000:g} s) at {percent}% volume. "
            + GUI_PREVIEW_EN,
            f"已为整段视频（{length / 1000:g} 秒）添加背景音乐，音量 {percent}%。" + GUI_PREVIEW_ZH,
        )
        call = AgentToolCall(
            "edit_multitrack", {"operation": "add_music", "volume": volume, "start_ms": 0, "duration_ms": length}
        )
        return call, AgentToolResult(call.name, {"status": "success", "track": "music"}, call.call_id)

    def _title(self, session: SessionRecord, text: str, reply: _Reply) -> tuple[AgentToolCall, AgentToolResult] | None:
        match = _TITLE_QUOTED_RE.search(text) or _TITLE_COLON_RE.search(text) or _TITLE_ZH_RE.search(text)
        if match is None:
            return None
        title = match.group("text").strip().strip("\"'“”「」『』").strip()
        if not title:
            return None
        segment = {"d": TITLE_MS, "m": {"text": title, "start": 0, "role": "title"}}
        tracks = session.draft.setdefault("t", [])
        replaced = False
        for track in tracks:
            if track.get("tt") != 7:
                continue
            for index, old in enumerate(track.get("sg", [])):
                if old.get("m", {}).get("role") == "title":
                    track["sg"][index] = segment
                    replaced = True
                    break
            if replaced:
                break
        if not replaced:
            tracks.append({"tt": 7, "sg": [segment]})
        reply.say(f'I added the title "{title}" for the first 3 seconds.', f"已添加标题「{title}」，显示前 3 秒。")
        call = AgentToolCall(
            "edit_multitrack", {"operation": "add_title", "text": title, "start_ms": 0, "duration_ms": TITLE_MS}
        )
        return call, AgentToolResult(call.name, {"status": "success"}, call.call_id)

    def _captions(
        self, session: SessionRecord, text: str, reply: _Reply
    ) -> tuple[AgentToolCall, AgentToolResult] | None:
        if not _CAPTION_RE.search(text):
            return None
        length = video_length_ms(session.draft) or DEFAULT_LENGTH_MS
        segments: list[dict[str, Any]] = []
        start = 0
        while start < length:
            duration = min(CAPTION_MS, length - start)
            number = len(segments) + 1
            # No speech recognition offline: the captions are timed placeholders the user can rewrite.
            segments.append({"d": duration, "m": {"text": f"Caption {number}", "start": start, "role": "caption"}})
            start += duration
        tracks = session.draft.setdefault("t", [])
        tracks[:] = [
            track
            for track in tracks
            if not (track.get("tt") == 7 and any(s.get("m", {}).get("role") == "caption" for s in track.get("sg", [])))
        ]
        tracks.append({"tt": 7, "sg": segments})
        reply.say(
            f"I added {len(segments)} caption segments. localnemo has no speech recognition, so they are "
            "placeholders: tell me the words and I'll put them in.",
            f"已添加 {len(segments)} 段字幕。localnemo 没有语音识别，字幕内容是占位文字，告诉我台词即可替换。",
        )
        call = AgentToolCall("edit_multitrack", {"operation": "add_captions", "segments": len(segments)})
        return call, AgentToolResult(call.name, {"status": "success", "segments": len(segments)}, call.call_id)

    def _pauses(self, session: SessionRecord, text: str, reply: _Reply) -> tuple[AgentToolCall, AgentToolResult] | None:
        if not _PAUSE_RE.search(text):
            return None
        video_tracks = [track for track in session.draft.get("t", []) if track.get("tt") == 0 and track.get("sg")]
        if not video_tracks:
            reply.say(
                "There is no video on the timeline yet, so there are no pauses to remove.",
                "时间线上还没有视频，没有可以去掉的停顿。",
            )
            return None
        removed = 0
        for track in video_tracks:
            start = 0
            for segment in track["sg"]:
                old = int(segment.get("d", 0))
                new = round(old * 0.8)
                removed += old - new
                segment["d"] = new
                segment.setdefault("m", {})["start"] = start
                start += new
        reply.say(
            f"Done! I removed {removed / 1000:g} s of pauses. " + GUI_EXPORT_EN,
            f"完成！已去掉 {removed / 1000:g} 秒的停顿。" + GUI_EXPORT_ZH,
        )
        call = AgentToolCall("edit_multitrack", {"operation": "remove_silence", "min_silence_ms": 400})
        return call, AgentToolResult(call.name, {"status": "success", "removed_ms": removed}, call.call_id)

    def _aspect(self, session: SessionRecord, text: str, reply: _Reply) -> tuple[AgentToolCall, AgentToolResult] | None:
        match = _ASPECT_RE.search(text)
        if match is None:
            return None
        ratio = match.group(1)
        across, down = _ASPECTS[ratio]
        short_side = _RESOLUTIONS.get(str(session.draft.get("m", {}).get("resolution", "")).lower(), 1080)
        if across >= down:
            width, height = round(short_side * across / down), short_side
        else:
            width, height = short_side, round(short_side * down / across)
        session.canvas_config.update({"width": width, "height": height, "aspect_ratio": ratio})
        session.draft.setdefault("m", {}).update({"width": width, "height": height})
        reply.say(f"The canvas is now {ratio} ({width}×{height}).", f"画布已改为 {ratio}（{width}×{height}）。")
        call = AgentToolCall("edit_multitrack", {"operation": "set_canvas", "aspect_ratio": ratio})
        return call, AgentToolResult(call.name, {"status": "success", "width": width, "height": height}, call.call_id)

    def _resolution(
        self, session: SessionRecord, text: str, reply: _Reply
    ) -> tuple[AgentToolCall, AgentToolResult] | None:
        match = _RESOLUTION_RE.search(text)
        if match is None:
            return None
        resolution = match.group(1).lower()
        session.draft.setdefault("m", {})["resolution"] = resolution
        reply.say(f"The export resolution is now {resolution}.", f"导出分辨率已设为 {resolution}。")
        call = AgentToolCall("edit_multitrack", {"operation": "set_resolution", "resolution": resolution})
        return call, AgentToolResult(call.name, {"status": "success"}, call.call_id)

    def _note(self, session: SessionRecord, text: str, reply: _Reply) -> tuple[AgentToolCall, AgentToolResult]:
        session.draft.setdefault("m", {}).setdefault("notes", []).append(text)
        reply.say(f"Noted: {text}", f"已记下：{text}")
        call = AgentToolCall("edit_multitrack", {"operation": "add_note", "text": text})
        return call, AgentToolResult(call.name, {"status": "success"}, call.call_id)


def video_length_ms(draft: dict[str, Any]) -> int:
    """Where the last video segment ends (0 when the timeline has no video)."""
    end = 0
    for track in draft.get("t", []):
        if not isinstance(track, dict) or track.get("tt") != 0:
            continue
        position = 0
        for segment in track.get("sg", []):
            if not isinstance(segment, dict):
                continue
            meta = segment.get("m", {})
            start = meta.get("start", position) if isinstance(meta, dict) else position
            duration = segment.get("d", 0)
            if isinstance(start, int | float) and isinstance(duration, int | float):
                position = int(start + duration)
                end = max(end, position)
    return end
