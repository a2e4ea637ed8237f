"""The pluggable "brain" of localnemo: it reads a message, edits the session's draft, and says so.

An agent yields neutral events; the server renders them in the configured wire dialect. ``PlannerAgent``
turns a message (English or Chinese) into steps with ``localnemo.planner``, applies each one to the draft
(looking at the uploaded files where a step needs to: pauses are found with FFmpeg's ``silencedetect``),
and answers with one tool call and result per edit and a short reply saying what it did. It is
deterministic and needs no network.

It imitates the hosted agent's habits on purpose: some edits end with no text at all, and some replies talk
about buttons of a GUI the chat user does not have. What needs a model it does not have (footage from a
text prompt, captions from speech) gets an honest answer naming the hosted backend, never a fake success.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from yarl import URL

from localnemo import planner, timeline
from localnemo.config import resolution_lines
from localnemo.media import AudioAnalysis, analyse_audio
from localnemo.music import MUSIC_TITLE
from localnemo.state import SessionRecord
from localnemo.subtitles import SubtitleError, read_cues
from localnemo.timeline import video_length_ms

log = logging.getLogger(__name__)

__all__ = [
    "Agent",
    "AgentError",
    "AgentEvent",
    "AgentText",
    "AgentToolCall",
    "AgentToolResult",
    "PauseSettings",
    "PlannerAgent",
    "SimpleAgent",
    "video_length_ms",
]


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

DEFAULT_LENGTH_MS = timeline.DEFAULT_LENGTH_MS
TITLE_MS = 3000
TEXT_MS = 3000
MUSIC_VOLUME = 0.3
DUCK_DB = -12.0
# Where the music starts to duck, relative to the measured speech level: with the renderer's ratio and
# knee this gives about DUCK_DB of gain reduction while someone speaks.
DUCK_THRESHOLD_BELOW_SPEECH_DB = 15.0
DEFAULT_DUCK_THRESHOLD_DB = -30.0
_CJK_RE = re.compile(r"[\u4e00-\u9fff]")
# How a test asks for a failing tool (the hosted agent's errors cannot be triggered on purpose).
_ERROR_RE = re.compile(
    r"\b(simulate|force)\s+(an?\s+)?(error|failure)\b|\bfail\s+(this|the)\s+(edit|message|tool)\b|模拟错误",
    re.IGNORECASE,
)

Edit = tuple[AgentToolCall, AgentToolResult]


@dataclass(frozen=True)
class PauseSettings:
    """How pauses are found and cut; "tight" and "gentle" scale the lengths."""

    threshold_db: float = -35.0
    min_silence_ms: int = 500
    margin_ms: int = 200
    min_clip_ms: int = 200

    def for_mode(self, mode: planner.PauseMode) -> tuple[int, int]:
        """(shortest pause cut, margin kept around speech) in ms."""
        if mode == "tight":
            return max(150, round(self.min_silence_ms * 0.6)), round(self.margin_ms * 0.5)
        if mode == "gentle":
            return self.min_silence_ms * 2, round(self.margin_ms * 1.75)
        return self.min_silence_ms, self.margin_ms


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


def _s(ms: float) -> str:
    """Seconds for a reply: "12 s" style numbers without trailing zeros."""
    return f"{ms / 1000:.1f}".rstrip("0").rstrip(".")


def _clock(ms: float) -> str:
    seconds = ms / 1000
    minutes, rest = divmod(seconds, 60)
    text = f"{rest:04.1f}".rstrip("0").rstrip(".")
    if "." not in text and len(text) < 2:
        text = "0" + text
    return f"{int(minutes)}:{text}"


def _edit(operation: str, args: dict[str, Any], result: dict[str, Any]) -> Edit:
    call = AgentToolCall("edit_multitrack", {"operation": operation, **args})
    return call, AgentToolResult(call.name, {"status": "success", **result}, call.call_id)


class PlannerAgent:
    """Deterministic planner over the draft. Every ``silent_every``-th edit message of a session ends with
    no text (0 = never), as about a third of the hosted agent's edits do."""

    def __init__(
        self, silent_every: int = 3, pauses: PauseSettings | None = None, default_resolution: str = "1080p"
    ) -> None:
        self.silent_every = silent_every
        self.pauses = pauses or PauseSettings()
        # The renderer's output size when the draft names none: the canvas numbers in replies match it.
        self.default_resolution = default_resolution

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

        steps = planner.plan(text)
        if planner.wants_footage(text) and (not session.video_infos or not steps):
            self._no_footage(reply)
            yield AgentText(reply.text)
            return

        edits: list[Edit] = []
        for step in steps:
            outcome = await self._apply(session, step, reply)
            if outcome is not None:
                edits.append(outcome)
        if edits:
            timeline.sync(session.draft, session.video_infos)
        if not steps:
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

    async def _apply(self, session: SessionRecord, step: planner.Step, reply: _Reply) -> Edit | None:
        if isinstance(step, planner.CutPauses):
            return await self._cut_pauses(session, step, reply)
        if isinstance(step, planner.Trim):
            return self._trim(session, step, reply)
        if isinstance(step, planner.Join):
            return self._join(session, reply)
        if isinstance(step, planner.Slideshow):
            return self._slideshow(session, step, reply)
        if isinstance(step, planner.Speed):
            return self._speed(session, step, reply)
        if isinstance(step, planner.SpeedOutOfRange):
            reply.say(
                f"I can play the video from {planner.MIN_SPEED:g}× to {planner.MAX_SPEED:g}× speed; "
                f"{step.factor:g}× is outside that range, so I left the speed as it was.",
                f"播放速度可以在 {planner.MIN_SPEED:g}× 到 {planner.MAX_SPEED:g}× 之间；"
                f"{step.factor:g}× 超出范围，速度未改变。",
            )
            return None
        if isinstance(step, planner.Volume):
            return self._volume(session, step, reply)
        if isinstance(step, planner.Music):
            return await self._music(session, step, reply)
        if isinstance(step, planner.RemoveMusic):
            return self._remove_music(session, reply)
        if isinstance(step, planner.Title):
            return self._title(session, step, reply)
        if isinstance(step, planner.TextOverlay):
            return self._text(session, step, reply)
        if isinstance(step, planner.Captions):
            return await self._captions(session, step, reply)
        if isinstance(step, planner.Aspect):
            return self._aspect(session, step, reply)
        if isinstance(step, planner.Fade):
            return self._fade(session, step, reply)
        if isinstance(step, planner.Resolution):
            return self._resolution(session, step, reply)
        log.warning("localnemo.agent.unknown_step step=%s", type(step).__name__)
        return None

    # -- what cannot be done offline -------------------------------------------------------------------

    @staticmethod
    def _no_footage(reply: _Reply) -> None:
        reply.say(
            "I can't generate footage here: this is localnemo, an offline stand-in for NemoVideo, and it "
            "has no video generation model. The hosted NemoVideo backend generates videos from a text "
            "prompt. Here you can upload your own clips and I'll edit them (cut pauses, trim, music, titles, "
            "captions from an .srt file, aspect ratio, speed, fades, resolution).",
            "这里无法生成视频素材：localnemo 是离线运行的 NemoVideo 替身，没有视频生成模型。"
            "在线的 NemoVideo 后端可以根据文字描述生成视频。你可以上传自己的素材，我来帮你剪辑"
            "（去停顿、裁剪、音乐、标题、.srt 字幕、画幅比例、变速、淡入淡出、分辨率）。",
        )

    # -- pauses ----------------------------------------------------------------------------------------

    async def _analysis(self, session: SessionRecord, src: str) -> AudioAnalysis | None:
        cached = session.video_analyses.get(src)
        if isinstance(cached, dict) and cached.get("threshold_db") == self.pauses.threshold_db:
            if not cached.get("has_audio", True):
                return None
            return AudioAnalysis(
                duration=float(cached["duration"]),
                silences=tuple((float(a), float(b)) for a, b in cached["silences"]),
                threshold_db=float(cached["threshold_db"]),
                speech_db=cached.get("speech_db"),
            )
        path = _local_path(session, src)
        if path is None:
            return None
        analysis = await analyse_audio(path, threshold_db=self.pauses.threshold_db)
        if analysis is None:
            session.video_analyses[src] = {"threshold_db": self.pauses.threshold_db, "has_audio": False}
            return None
        session.video_analyses[src] = {
            "threshold_db": analysis.threshold_db,
            "has_audio": True,
            "duration": round(analysis.duration, 3),
            "silences": [[round(a, 3), round(b, 3)] for a, b in analysis.silences],
            "speech_db": None if analysis.speech_db is None else round(analysis.speech_db, 2),
        }
        log.info(
            "localnemo.agent.analysed session_id=%s silences=%s speech_db=%s",
            session.session_id, len(analysis.silences), analysis.speech_db,
        )  # fmt: skip
        return analysis

    async def _cut_pauses(self, session: SessionRecord, step: planner.CutPauses, reply: _Reply) -> Edit | None:
        clips = [s for s in timeline.video_segments(session.draft) if not timeline.is_image(s)]
        if not clips:
            reply.say(
                "There is no video on the timeline yet, so there are no pauses to remove.",
                "时间线上还没有视频，没有可以去掉的停顿。",
            )
            return None
        min_silence, margin = self.pauses.for_mode(step.mode)
        before = timeline.repack(session.draft)
        pieces = 0
        silent_clips = 0
        heard = 0
        for track in timeline.tracks_of(session.draft, timeline.TRACK_VIDEO):
            new_segments: list[timeline.Segment] = []
            for segment in track.sg:
                src = segment.m.src
                analysis = None
                if not timeline.is_image(segment) and src is not None:
                    analysis = await self._analysis(session, src)
                if analysis is None:
                    new_segments.append(segment)
                    continue
                heard += 1
                spans = kept_spans(
                    analysis, timeline.source_span(segment), min_silence_ms=min_silence, margin_ms=margin,
                    min_clip_ms=self.pauses.min_clip_ms,
                )  # fmt: skip
                if spans is None:
                    silent_clips += 1
                    new_segments.append(segment)
                    continue
                for start, end in spans:
                    piece = segment.model_copy(deep=True)
                    timeline.set_span(piece, start, end)
                    new_segments.append(piece)
                pieces += len(spans)
            track.sg = new_segments
        after = timeline.repack(session.draft)
        removed = before - after
        if removed <= 0:
            if not heard:
                reply.say(
                    "The video has no sound, so there are no pauses I can find in it.",
                    "视频没有声音，无法检测停顿。",
                )
            elif silent_clips:
                reply.say(
                    "I found no speech in the clip's sound to keep, so I left it as it is.",
                    "视频的声音里没有检测到说话，保持原样。",
                )
            else:
                reply.say(
                    f"I found no pauses longer than {_s(min_silence)} s to cut.",
                    f"没有找到超过 {_s(min_silence)} 秒的停顿。",
                )
            return None
        reply.say(
            f"Done! I removed {_s(removed)} s of pauses: the video is now {_s(after)} s instead of {_s(before)} s, "
            f"in {pieces} pieces. " + GUI_EXPORT_EN,
            f"完成！已去掉 {_s(removed)} 秒的停顿：视频从 {_s(before)} 秒变为 {_s(after)} 秒，共 {pieces} 段。"
            + GUI_EXPORT_ZH,
        )
        args = {
            "threshold_db": self.pauses.threshold_db, "min_silence_ms": min_silence, "margin_ms": margin,
            "min_clip_ms": self.pauses.min_clip_ms, "mode": step.mode,
        }  # fmt: skip
        return _edit("remove_silence", args, {"removed_ms": removed, "segments": pieces})

    # -- time ------------------------------------------------------------------------------------------

    def _trim(self, session: SessionRecord, step: planner.Trim, reply: _Reply) -> Edit | None:
        length = timeline.repack(session.draft)
        if length <= 0:
            reply.say("There is no video on the timeline to trim yet.", "时间线上还没有可以裁剪的视频。")
            return None
        ranges: list[tuple[float, float]]
        if step.mode == "keep_first":
            ranges = [(0, min(length, step.end_ms))]
        elif step.mode == "keep_last":
            ranges = [(max(0, length - step.end_ms), length)]
        elif step.mode == "drop_first":
            ranges = [(min(length, step.end_ms), length)]
        elif step.mode == "drop_last":
            ranges = [(0, max(0, length - step.end_ms))]
        elif step.mode == "keep_range":
            ranges = [(step.start_ms, min(length, step.end_ms))]
        else:
            ranges = [(0, min(length, step.start_ms)), (step.end_ms, length)]
        ranges = [(a, b) for a, b in ranges if b - a >= 1]
        kept = sum(b - a for a, b in ranges)
        if kept <= 0 or (step.mode in ("keep_range", "drop_range") and step.start_ms >= length):
            reply.say(
                f"The video is only {_s(length)} s long, so there is nothing in that part; I left it as it is.",
                f"视频只有 {_s(length)} 秒，那一段不存在，保持原样。",
            )
            return None
        if kept >= length:
            reply.say(
                f"The video is {_s(length)} s long, so that keeps all of it.", f"视频共 {_s(length)} 秒，全部保留。"
            )
            return None
        keep_ranges(session.draft, ranges)
        after = timeline.repack(session.draft)
        shown = ", ".join(f"{_clock(a)}–{_clock(b)}" for a, b in ranges)
        reply.say(
            f"I kept {shown} of the video: it is now {_s(after)} s long (was {_s(length)} s).",
            f"已保留视频的 {shown}：现在长 {_s(after)} 秒（原来 {_s(length)} 秒）。",
        )
        return _edit("trim", {"keep": [[round(a), round(b)] for a, b in ranges]}, {"duration_ms": after})

    def _join(self, session: SessionRecord, reply: _Reply) -> Edit | None:
        segments = timeline.video_segments(session.draft)
        sources = {s.m.src for s in segments}
        if len(sources) < 2:
            reply.say(
                "There is only one clip on the timeline; upload more and they play one after another.",
                "时间线上只有一个素材；上传更多素材后会按顺序播放。",
            )
            return None
        length = timeline.repack(session.draft)
        reply.say(
            f"The {len(sources)} clips play one after another, in the order you sent them ({_s(length)} s in all).",
            f"{len(sources)} 个素材按上传顺序依次播放（共 {_s(length)} 秒）。",
        )
        return _edit("join", {"clips": len(sources)}, {"duration_ms": length})

    def _slideshow(self, session: SessionRecord, step: planner.Slideshow, reply: _Reply) -> Edit | None:
        images = [s for s in timeline.video_segments(session.draft) if timeline.is_image(s)]
        if not images:
            reply.say("There are no images on the timeline for a slideshow yet.", "时间线上还没有可以做幻灯片的图片。")
            return None
        per_image = max(500, min(step.per_image_ms or timeline.IMAGE_SEGMENT_MS, 60_000))
        for segment in images:
            segment.d = per_image
        length = timeline.repack(session.draft)
        reply.say(
            f"The {len(images)} images play as a slideshow, {_s(per_image)} s each ({_s(length)} s in all).",
            f"{len(images)} 张图片做成幻灯片，每张 {_s(per_image)} 秒（共 {_s(length)} 秒）。",
        )
        return _edit("slideshow", {"per_image_ms": per_image}, {"duration_ms": length})

    def _speed(self, session: SessionRecord, step: planner.Speed, reply: _Reply) -> Edit | None:
        clips = [s for s in timeline.video_segments(session.draft) if not timeline.is_image(s)]
        if not clips:
            reply.say(
                "There is no video on the timeline to speed up or slow down yet.", "时间线上还没有可以变速的视频。"
            )
            return None
        before = timeline.repack(session.draft)
        for segment in clips:
            start, end = timeline.source_span(segment)
            segment.m.speed = step.factor
            timeline.set_span(segment, start, end)
        after = timeline.repack(session.draft)
        reply.say(
            f"The video now plays at {step.factor:g}× speed ({_s(after)} s, was {_s(before)} s).",
            f"视频现在以 {step.factor:g}× 速度播放（{_s(after)} 秒，原来 {_s(before)} 秒）。",
        )
        return _edit("set_speed", {"speed": step.factor}, {"duration_ms": after})

    # -- sound -----------------------------------------------------------------------------------------

    def _volume(self, session: SessionRecord, step: planner.Volume, reply: _Reply) -> Edit | None:
        if step.target == "music":
            segments = _music_segments(session.draft)
            if not segments:
                reply.say("There is no music on the timeline yet.", "时间线上还没有音乐。")
                return None
        else:
            segments = [s for s in timeline.video_segments(session.draft) if not timeline.is_image(s)]
            if not segments:
                reply.say("There is no clip with sound on the timeline yet.", "时间线上还没有带声音的视频。")
                return None
        level = 0.0
        for segment in segments:
            current = timeline.number(segment.m.volume, 1.0)
            level = step.level if step.level is not None else current * (step.factor or 1.0)
            level = round(max(0.0, min(2.0, level)), 3)
            segment.m.volume = level
        percent = round(level * 100)
        if step.target == "music":
            reply.say(f"The music is now at {percent}% volume.", f"音乐音量已设为 {percent}%。")
        elif level == 0:
            reply.say("The clip's own sound is now muted.", "视频原声已静音。")
        else:
            reply.say(f"The clip's own sound is now at {percent}% volume.", f"视频原声音量已设为 {percent}%。")
        return _edit("set_volume", {"target": step.target, "volume": level}, {})

    async def _music(self, session: SessionRecord, step: planner.Music, reply: _Reply) -> Edit | None:
        existing = _music_segments(session.draft)
        if existing and not step.explicit_add and step.volume is not None:
            return self._volume(session, planner.Volume("music", level=step.volume), reply)
        upload = next((info for info in reversed(session.video_infos) if info.get("file_type") == "audio"), None)
        length = timeline.repack(session.draft) or DEFAULT_LENGTH_MS
        volume = step.volume if step.volume is not None else MUSIC_VOLUME
        threshold = await self._duck_threshold(session)
        m = timeline.SegmentMeta(
            title=MUSIC_TITLE, start=0, in_=0, volume=volume, role="music", duck=step.duck, duck_db=DUCK_DB,
            duck_threshold_db=threshold, loop=True, fit=True,
        )  # fmt: skip
        if upload is not None:
            m.src = str(upload["cdn_url"])
            m.title = Path(str(upload.get("filename") or "music")).stem or "music"
        _drop_music(session.draft, also_src=m.src)
        session.draft.t.append(timeline.Track(tt=timeline.TRACK_AUDIO, sg=[timeline.Segment(d=length, m=m)]))
        percent = round(volume * 100)
        which_en = f'"{m.title}", the track you sent,' if upload is not None else "the built-in music loop"
        which_zh = f"你上传的「{m.title}」" if upload is not None else "内置的背景音乐"
        ducking_en = " It dips by about 12 dB while someone speaks." if step.duck else ""
        ducking_zh = "有人说话时音乐会自动降低约 12 dB。" if step.duck else ""
        reply.say(
            f"I added background music ({which_en}) over the whole video ({_s(length)} s) at {percent}% volume."
            + ducking_en
            + " "
            + GUI_PREVIEW_EN,
            f"已为整段视频（{_s(length)} 秒）添加背景音乐（{which_zh}），音量 {percent}%。"
            + ducking_zh
            + GUI_PREVIEW_ZH,
        )
        args = {"volume": volume, "start_ms": 0, "duration_ms": length, "duck": step.duck}
        return _edit("add_music", args, {"track": "music", "source": "upload" if upload else "bundled"})

    async def _duck_threshold(self, session: SessionRecord) -> float:
        levels: list[float] = []
        for segment in timeline.video_segments(session.draft):
            src = segment.m.src
            if timeline.is_image(segment) or src is None:
                continue
            analysis = await self._analysis(session, src)
            if analysis is not None and analysis.speech_db is not None:
                levels.append(analysis.speech_db)
        if not levels:
            return DEFAULT_DUCK_THRESHOLD_DB
        return round(max(-60.0, min(-6.0, max(levels) - DUCK_THRESHOLD_BELOW_SPEECH_DB)), 1)

    def _remove_music(self, session: SessionRecord, reply: _Reply) -> Edit | None:
        if not _music_segments(session.draft):
            reply.say("There is no music on the timeline.", "时间线上没有音乐。")
            return None
        _drop_music(session.draft)
        reply.say("I removed the background music.", "已去掉背景音乐。")
        return _edit("remove_music", {}, {})

    # -- text ------------------------------------------------------------------------------------------

    def _title(self, session: SessionRecord, step: planner.Title, reply: _Reply) -> Edit:
        duration = max(500, min(step.duration_ms or TITLE_MS, 60_000))
        segment = timeline.Segment(d=duration, m=timeline.SegmentMeta(text=step.text, start=0, role="title"))
        replaced = False
        for track in timeline.tracks_of(session.draft, timeline.TRACK_TEXT):
            for index, old in enumerate(track.sg):
                if old.m.role == "title":
                    track.sg[index] = segment
                    replaced = True
                    break
            if replaced:
                break
        if not replaced:
            session.draft.t.append(timeline.Track(tt=timeline.TRACK_TEXT, sg=[segment]))
        reply.say(
            f'I added the title "{step.text}" for the first {_s(duration)} seconds.',
            f"已添加标题「{step.text}」，显示前 {_s(duration)} 秒。",
        )
        return _edit("add_title", {"text": step.text, "start_ms": 0, "duration_ms": duration}, {})

    def _text(self, session: SessionRecord, step: planner.TextOverlay, reply: _Reply) -> Edit:
        length = timeline.repack(session.draft)
        m = timeline.SegmentMeta(text=step.text, role="text")
        if step.start_ms is not None and step.end_ms is not None:
            start, duration = step.start_ms, step.end_ms - step.start_ms
        elif step.at_end:
            start, duration = max(0, length - TEXT_MS), TEXT_MS
        else:
            start, duration = 0, length or DEFAULT_LENGTH_MS
            m.fit = True
        m.start = start
        session.draft.t.append(timeline.Track(tt=timeline.TRACK_TEXT, sg=[timeline.Segment(d=duration, m=m)]))
        reply.say(
            f'I put the text "{step.text}" on the video from {_clock(start)} to {_clock(start + duration)}.',
            f"已在 {_clock(start)}–{_clock(start + duration)} 添加文字「{step.text}」。",
        )
        return _edit("add_text", {"text": step.text, "start_ms": start, "duration_ms": duration}, {})

    async def _captions(self, session: SessionRecord, step: planner.Captions, reply: _Reply) -> Edit | None:
        if step.remove:
            removed = timeline.remove_captions(session.draft)
            if not removed:
                reply.say("There are no captions on the timeline.", "时间线上没有字幕。")
                return None
            reply.say(f"I removed the captions ({removed} lines).", f"已去掉字幕（{removed} 行）。")
            return _edit("remove_captions", {}, {"segments": removed})
        upload = next((info for info in reversed(session.video_infos) if info.get("file_type") == "subtitle"), None)
        path = _local_path(session, str(upload["cdn_url"])) if upload is not None else None
        if upload is None or path is None:
            reply.say(
                "I can't make captions from speech here: localnemo works offline and has no speech recognition "
                "model. The hosted NemoVideo backend transcribes speech into captions. If you have the captions "
                "as an .srt or .vtt file, send it and I'll burn them into the video.",
                "这里无法根据语音生成字幕：localnemo 离线运行，没有语音识别模型。在线的 NemoVideo 后端可以把语音"
                "转成字幕。如果你有 .srt 或 .vtt 字幕文件，发给我，我会把字幕烧录进视频。",
            )
            return None
        try:
            cues = await asyncio.to_thread(read_cues, path)
        except (OSError, SubtitleError) as exc:
            reply.say(f"I couldn't read the captions file: {exc}.", f"无法读取字幕文件：{exc}。")
            return None
        count = timeline.place_captions(
            session.draft, [(cue.start_ms, cue.end_ms, cue.text) for cue in cues], str(upload["cdn_url"])
        )
        timeline.sync(session.draft, session.video_infos)
        shown = sum(
            1 for t in timeline.tracks_of(session.draft, timeline.TRACK_TEXT) for s in t.sg if s.m.role == "caption"
        )
        name = upload.get("filename") or "the captions file"
        reply.say(
            f"I put the {shown} caption{'' if shown == 1 else 's'} from {name} on the video; "
            "they are burned in when you export."
            + (f" ({count - shown} fall in parts that were cut.)" if shown < count else ""),
            f"已把 {name} 中的 {shown} 条字幕加到视频上，导出时会烧录进画面。"
            + (f"（{count - shown} 条位于已剪掉的部分。）" if shown < count else ""),
        )
        return _edit("add_captions", {"source": name}, {"segments": shown})

    # -- picture ---------------------------------------------------------------------------------------

    def _aspect(self, session: SessionRecord, step: planner.Aspect, reply: _Reply) -> Edit:
        draft_meta = session.draft.m
        fit = step.fit or draft_meta.fit or "blur"
        draft_meta.fit = fit
        fit_en = {
            "blur": "clips of another shape sit on a blurred copy of themselves",
            "crop": "clips of another shape are cropped to fill it",
            "pad": "clips of another shape get black bars",
        }[fit]
        fit_zh = {
            "blur": "其他比例的画面会放在模糊背景上",
            "crop": "其他比例的画面会裁剪填满",
            "pad": "其他比例的画面会加黑边",
        }[fit]
        if step.ratio is None:
            reply.say(f"From now on {fit_en}.", f"之后{fit_zh}。")
            return _edit("set_canvas", {"fit": fit}, {})
        across, down = planner.ASPECTS[step.ratio]
        try:
            short_side = resolution_lines(draft_meta.resolution or self.default_resolution)
        except ValueError:
            short_side = 1080
        if across >= down:
            width, height = round(short_side * across / down), short_side
        else:
            width, height = short_side, round(short_side * down / across)
        width, height = width + width % 2, height + height % 2
        session.canvas_config.update({"width": width, "height": height, "aspect_ratio": step.ratio})
        draft_meta.width, draft_meta.height, draft_meta.aspect_ratio = width, height, step.ratio
        reply.say(
            f"The canvas is now {step.ratio} ({width}×{height}); {fit_en}.",
            f"画布已改为 {step.ratio}（{width}×{height}），{fit_zh}。",
        )
        return _edit("set_canvas", {"aspect_ratio": step.ratio, "fit": fit}, {"width": width, "height": height})

    def _fade(self, session: SessionRecord, step: planner.Fade, reply: _Reply) -> Edit:
        draft_meta = session.draft.m
        parts_en: list[str] = []
        parts_zh: list[str] = []
        if step.fade_in_ms is not None:
            draft_meta.fade_in_ms = step.fade_in_ms
            parts_en.append(f"fades in over {_s(step.fade_in_ms)} s")
            parts_zh.append(f"开头 {_s(step.fade_in_ms)} 秒淡入")
        if step.fade_out_ms is not None:
            draft_meta.fade_out_ms = step.fade_out_ms
            parts_en.append(f"fades out over {_s(step.fade_out_ms)} s")
            parts_zh.append(f"结尾 {_s(step.fade_out_ms)} 秒淡出")
        reply.say(
            "The video " + " and ".join(parts_en) + " (picture and sound).",
            "视频" + "，".join(parts_zh) + "（画面和声音）。",
        )
        return _edit("set_fade", {"fade_in_ms": step.fade_in_ms, "fade_out_ms": step.fade_out_ms}, {})

    def _resolution(self, session: SessionRecord, step: planner.Resolution, reply: _Reply) -> Edit:
        draft_meta = session.draft.m
        draft_meta.resolution = step.name
        ratio = draft_meta.aspect_ratio
        if ratio is not None and ratio in planner.ASPECTS:
            # Keep the canvas numbers in step with the new size.
            self._aspect(session, planner.Aspect(ratio, None), _Reply(reply.chinese))
        reply.say(f"The export resolution is now {step.name}.", f"导出分辨率已设为 {step.name}。")
        return _edit("set_resolution", {"resolution": step.name}, {})

    def _note(self, session: SessionRecord, text: str, reply: _Reply) -> Edit:
        session.draft.m.notes = [*(session.draft.m.notes or []), text]
        reply.say(f"Noted: {text}", f"已记下：{text}")
        return _edit("add_note", {"text": text}, {})


# The name the server and tests used for the first keyword agent; it is the planner now.
SimpleAgent = PlannerAgent


def kept_spans(
    analysis: AudioAnalysis, span: tuple[float, float], *, min_silence_ms: int, margin_ms: int, min_clip_ms: int
) -> list[tuple[float, float]] | None:
    """The parts of ``span`` (source ms) to keep: speech, with ``margin_ms`` either side, without pauses of
    ``min_silence_ms`` or more. None when the span holds no speech at all (nothing to go by)."""
    duration = analysis.duration * 1000
    silences = [(a * 1000, b * 1000) for a, b in analysis.silences if (b - a) * 1000 >= min_silence_ms]
    speech: list[tuple[float, float]] = []
    position = 0.0
    for start, end in silences:
        if start > position:
            speech.append((position, start))
        position = max(position, end)
    if position < duration:
        speech.append((position, duration))
    begin, finish = span
    speech = [(a, b) for a, b in speech if b > begin and a < finish]
    if not speech:
        return None
    padded: list[tuple[float, float]] = []
    for start, end in speech:
        start, end = max(begin, start - margin_ms), min(finish, end + margin_ms)
        if padded and start <= padded[-1][1]:
            padded[-1] = (padded[-1][0], max(padded[-1][1], end))
        else:
            padded.append((start, end))
    kept = [(a, b) for a, b in padded if b - a >= min_clip_ms]
    return kept or None


def keep_ranges(draft: timeline.Draft, ranges: list[tuple[float, float]]) -> None:
    """Keep only the given timeline ranges (ms) of the video, cutting segments at their edges."""
    timeline.repack(draft)
    for track in timeline.tracks_of(draft, timeline.TRACK_VIDEO):
        new_segments: list[timeline.Segment] = []
        for segment in track.sg:
            start = timeline.number(segment.m.start)
            end = start + timeline.number(segment.d)
            for low, high in ranges:
                lo, hi = max(start, low), min(end, high)
                if hi - lo < 1:
                    continue
                piece = segment.model_copy(deep=True)
                if timeline.is_image(piece):
                    piece.d = round(hi - lo)
                else:
                    source_in, _ = timeline.source_span(segment)
                    speed = timeline.speed_of(segment)
                    timeline.set_span(piece, source_in + (lo - start) * speed, source_in + (hi - start) * speed)
                new_segments.append(piece)
        track.sg = new_segments
    timeline.repack(draft)


def _is_music(segment: timeline.Segment) -> bool:
    """Background music: marked so, or the bundled loop (an audio segment without a source)."""
    return segment.m.role == "music" or segment.m.src is None


def _music_segments(draft: timeline.Draft) -> list[timeline.Segment]:
    return [segment for track in timeline.tracks_of(draft, timeline.TRACK_AUDIO) for segment in track.sg
            if _is_music(segment)]  # fmt: skip


def _drop_music(draft: timeline.Draft, *, also_src: str | None = None) -> None:
    """Remove the background music (and the plain audio segments of ``also_src``, which becomes the music)."""
    for track in timeline.tracks_of(draft, timeline.TRACK_AUDIO):
        track.sg = [
            segment
            for segment in track.sg
            if not (_is_music(segment) or (also_src is not None and segment.m.src == also_src))
        ]
    timeline.drop_empty_tracks(draft, timeline.TRACK_AUDIO)


def _local_path(session: SessionRecord, url: str) -> Path | None:
    """The file behind one of this session's upload URLs (``…/files/<sid>/<name>``)."""
    try:
        parts = URL(url).path.split("/")
    except ValueError:
        return None
    if len(parts) != 4 or parts[1] != "files" or parts[2] != session.session_id or not parts[3]:
        return None
    if "/" in parts[3] or parts[3].startswith("."):
        return None
    path = session.folder / parts[3]
    return path if path.is_file() else None
