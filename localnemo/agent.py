"""The pluggable "brain" of localnemo: it reads a message, edits the session's draft, and says so.

An agent yields neutral events; the server renders them in the configured wire dialect. ``PlannerAgent``
turns a message (English or Chinese) into steps with ``localnemo.planner``, applies each one to the draft
(looking at the uploaded files where a step needs to: pauses are found with FFmpeg's ``silencedetect``),
and answers with one tool call and result per edit and a short reply saying what it did. It is
deterministic and needs no network. A reply claims a change only when the draft changed: an edit that was
already so says "nothing changed", and a message it does not understand is answered with the nearest
things it can do (``localnemo.understand``), never with a pretend edit. "undo", "redo", "start over" step
through the session's draft history (``localnemo.history``); "help" lists what it does.

It imitates the hosted agent's habits on purpose: some edits end with no text at all, and some replies talk
about buttons of a GUI the chat user does not have. Captions come from the clips' speech (``localnemo.speech``:
recognition, or forced alignment of a script), with "Transcribing… 40%" progress while it runs. What needs a
model it does not have (footage from a text prompt, Chinese speech without a Whisper model) gets an honest
answer saying so, never a fake success.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from yarl import URL

from bot.lang import Language, language_of
from bot.nemo.draft import describe_changes
from bot.texts import t
from localnemo import history, planner, timeline, understand, voice
from localnemo.captioning import CaptionCue, cues_from_words
from localnemo.config import resolution_lines
from localnemo.media import AudioAnalysis, analyse_audio
from localnemo.music import MUSIC_TITLE
from localnemo.speech import LanguageNotAvailable, Speech, SpeechError, Word, words_from_json, words_to_json
from localnemo.state import SessionRecord
from localnemo.subtitles import SubtitleError, read_cues, read_script
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


DEFAULT_LENGTH_MS = timeline.DEFAULT_LENGTH_MS
TITLE_MS = 3000
TEXT_MS = 3000
MUSIC_VOLUME = 0.3
DUCK_DB = -12.0
# Where the music starts to duck, relative to the measured speech level: with the renderer's ratio and
# knee this gives about DUCK_DB of gain reduction while someone speaks.
DUCK_THRESHOLD_BELOW_SPEECH_DB = 13.0
DEFAULT_DUCK_THRESHOLD_DB = -30.0

Edit = tuple[AgentToolCall, AgentToolResult]
# Where a clip's recognised words are kept in the session's analyses (by the clip's URL).
SPEECH_KEY = "speech:"


# A cut that saves less than this is a jump for nothing; a piece shorter than this at either end of a clip
# is a flash.
MIN_CUT_MS = 300
MIN_END_MS = 500


@dataclass(frozen=True)
class PauseSettings:
    """How pauses are found and cut; "tight" and "gentle" scale the lengths."""

    threshold_db: float = -35.0
    min_silence_ms: int = 500
    margin_ms: int = 200
    min_clip_ms: int = 200
    # No jump cut for less than this; no piece shorter than this at either end of a clip; sound between
    # pauses shorter than this is not speech (localnemo.voice). The same in every mode.
    min_cut_ms: int = MIN_CUT_MS
    min_end_ms: int = MIN_END_MS
    min_speech_ms: int = voice.MIN_SPEECH_MS

    def for_mode(self, mode: planner.PauseMode) -> tuple[int, int]:
        """(shortest pause cut, margin kept around speech) in ms."""
        if mode == "tight":
            return max(150, round(self.min_silence_ms * 0.6)), round(self.margin_ms * 0.5)
        if mode == "gentle":
            return self.min_silence_ms * 2, round(self.margin_ms * 1.75)
        return self.min_silence_ms, self.margin_ms


class _Reply:
    """Collects the sentences of one reply in the message's language; the words are the catalogue's
    ``agent.*`` entries (bot/texts.py)."""

    def __init__(self, lang: Language) -> None:
        self.lang = lang
        self.parts: list[str] = []
        # Progress of a long step ("Transcribing… 40%"), as tool calls the stream carries while it runs.
        self.events: asyncio.Queue[AgentEvent] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._shown = -1

    def progress(self, fraction: float) -> None:
        """Report a fraction done; callable from a worker thread. Sent at each tenth."""
        percent = max(0, min(100, int(fraction * 100)))
        if percent // 10 == self._shown // 10 and self._shown >= 0:
            return
        self._shown = percent
        call = AgentToolCall(
            "transcribe_captions", {"progress": percent, "message": self.words("transcribing", percent=percent)}
        )
        self._loop.call_soon_threadsafe(self.events.put_nowait, call)

    def words(self, key: str, **values: object) -> str:
        return t(f"agent.{key}", self.lang, **values)

    def say(self, key: str, **values: object) -> None:
        self.parts.append(self.words(key, **values))

    @property
    def text(self) -> str:
        # Chinese sentences end in full-width punctuation and need no space between them.
        return ("" if self.lang == "zh" else " ").join(self.parts)


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
    """Deterministic planner over the draft; it always answers in words. (The hosted agent's habit of ending
    some edits with no text is imitated by a test-only wrapper, ``localnemo.testing.SilentEvery``.)"""

    def __init__(
        self, pauses: PauseSettings | None = None, default_resolution: str = "1080p", speech: Speech | None = None
    ) -> None:
        self.pauses = pauses or PauseSettings()
        # Speech recognition for captions; the engine is chosen (and logged) on first use.
        self.speech = speech or Speech()
        # The renderer's output size when the draft names none: the canvas numbers in replies match it.
        self.default_resolution = default_resolution

    async def run(self, session: SessionRecord, message: str) -> AsyncIterator[AgentEvent]:
        text = message.strip()
        lang: Language = language_of(text, session.language)
        reply = _Reply(lang)
        session.message_count += 1
        before = history.begin(session)

        command = planner.command(text)
        if command is not None:
            edit = self._command(session, command, reply)
            if edit is not None:
                yield edit[0]
                yield edit[1]
            yield AgentText(reply.text)
            return

        steps = planner.plan(text)
        if planner.wants_footage(text) and (not session.video_infos or not steps):
            self._no_footage(reply)
            yield AgentText(reply.text)
            return

        if any(isinstance(step, planner.CutPauses) for step in steps) and any(
            isinstance(step, planner.Captions) and not step.remove and step.script is None for step in steps
        ):
            # Captions asked for with the cut: listen first, so that the cut respects the words.
            listening = asyncio.ensure_future(self._listen(session, reply))
            async for event in _while_running(listening, reply):
                yield event
        edits: list[Edit] = []
        for step in steps:
            said = len(reply.parts)
            unchanged = timeline.effective(session.draft)
            task = asyncio.ensure_future(self._apply(session, step, reply))
            async for event in _while_running(task, reply):
                yield event
            outcome = task.result()
            if outcome is not None and timeline.effective(session.draft) == unchanged:
                # Never claim a change that did not happen: say it already was so.
                del reply.parts[said:]
                reply.say("already")
                outcome = None
            if outcome is not None:
                edits.append(outcome)
        if edits:
            timeline.sync(session.draft, session.video_infos)
        if not steps:
            self._not_understood(text, reply)
        history.record(session, before)

        for call, result in edits:
            yield call
            yield result
        if edits:
            session.edit_count += 1
        if reply.parts:
            yield AgentText(reply.text)

    # -- history and help --------------------------------------------------------------------------------

    def _command(self, session: SessionRecord, command: planner.Command, reply: _Reply) -> Edit | None:
        if command == "help":
            lines = "\n".join("• " + reply.words(f"can_{c.key}") for c in understand.CAPABILITIES)
            reply.say("help", lines=lines)
            return None
        before = session.draft.model_copy(deep=True)
        step = {"undo": history.undo, "redo": history.redo, "start_over": history.start_over}[command]
        if not step(session):
            reply.say(f"nothing_to_{command}")
            return None
        changes = describe_changes(before, session.draft, reply.lang)
        joiner = t("changes_joiner", reply.lang)
        reply.say(f"did_{command}", changes=joiner.join(changes) if changes else reply.words("changes_none"))
        return _edit(command, {}, {"history": len(session.history), "undone": len(session.undone)})

    @staticmethod
    def _not_understood(text: str, reply: _Reply) -> None:
        lines = "\n".join("• " + reply.words(f"can_{key}") for key in understand.suggestions(text))
        reply.say("not_understood", text=text, lines=lines)

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
            reply.say("speed_out_of_range", low=planner.MIN_SPEED, high=planner.MAX_SPEED, factor=step.factor)
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
        if isinstance(step, planner.ExportLater):
            # Exporting is the bot's (or the app's) own request, never a side effect of an edit.
            how = f"export {step.resolution}" if step.resolution else "export"
            reply.say("export_later", how=how if reply.lang == "en" else how.replace("export", "导出"))
            return None
        log.warning("localnemo.agent.unknown_step step=%s", type(step).__name__)
        return None

    # -- what cannot be done offline -------------------------------------------------------------------

    @staticmethod
    def _no_footage(reply: _Reply) -> None:
        reply.say("no_footage")

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
            reply.say("no_video_for_pauses")
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
                fps = timeline.number(segment.m.fps) or None
                spans = kept_spans(
                    analysis, timeline.source_span(segment), min_silence_ms=min_silence, margin_ms=margin,
                    min_clip_ms=self.pauses.min_clip_ms, min_cut_ms=self.pauses.min_cut_ms,
                    min_end_ms=self.pauses.min_end_ms, min_speech_ms=self.pauses.min_speech_ms, fps=fps,
                )  # fmt: skip
                if spans is None:
                    silent_clips += 1
                    new_segments.append(segment)
                    continue
                words = _known_words(session, src) if src is not None else []
                if words:
                    span = timeline.source_span(segment)
                    spans = close_small_cuts(respect_words(spans, words, span, fps), span, self.pauses.min_cut_ms, fps)
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
                reply.say("no_sound")
            elif silent_clips:
                reply.say("no_speech")
            else:
                # The shortest pause that is cut: it must also save min_cut_ms once the margins are kept.
                reply.say("no_pauses", seconds=_s(max(min_silence, 2 * margin + self.pauses.min_cut_ms)))
            return None
        reply.say(
            "pauses_cut", removed=_s(removed), after=_s(after), before=_s(before), pieces=pieces,
            gui=reply.words("gui_export"),
        )  # fmt: skip
        args = {
            "threshold_db": self.pauses.threshold_db, "min_silence_ms": min_silence, "margin_ms": margin,
            "min_clip_ms": self.pauses.min_clip_ms, "min_cut_ms": self.pauses.min_cut_ms,
            "min_end_ms": self.pauses.min_end_ms, "min_speech_ms": self.pauses.min_speech_ms, "mode": step.mode,
        }  # fmt: skip
        return _edit("remove_silence", args, {"removed_ms": removed, "segments": pieces})

    # -- time ------------------------------------------------------------------------------------------

    def _trim(self, session: SessionRecord, step: planner.Trim, reply: _Reply) -> Edit | None:
        length = timeline.repack(session.draft)
        if length <= 0:
            reply.say("nothing_to_trim")
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
            reply.say("trim_outside", length=_s(length))
            return None
        if kept >= length:
            reply.say("trim_keeps_all", length=_s(length))
            return None
        keep_ranges(session.draft, ranges)
        after = timeline.repack(session.draft)
        shown = ", ".join(f"{_clock(a)}–{_clock(b)}" for a, b in ranges)
        reply.say("trimmed", shown=shown, after=_s(after), length=_s(length))
        return _edit("trim", {"keep": [[round(a), round(b)] for a, b in ranges]}, {"duration_ms": after})

    def _join(self, session: SessionRecord, reply: _Reply) -> Edit | None:
        segments = timeline.video_segments(session.draft)
        sources = {s.m.src for s in segments}
        if len(sources) < 2:
            reply.say("one_clip")
            return None
        before = session.draft.to_wire()
        length = timeline.repack(session.draft)
        if session.draft.to_wire() == before:
            # Uploads always play in the order sent: there is nothing to change, and no change to claim.
            reply.say("already_joined", n=len(sources), length=_s(length))
            return None
        reply.say("joined", n=len(sources), length=_s(length))
        return _edit("join", {"clips": len(sources)}, {"duration_ms": length})

    def _slideshow(self, session: SessionRecord, step: planner.Slideshow, reply: _Reply) -> Edit | None:
        images = [s for s in timeline.video_segments(session.draft) if timeline.is_image(s)]
        if not images:
            reply.say("no_images")
            return None
        per_image = max(500, min(step.per_image_ms or timeline.IMAGE_SEGMENT_MS, 60_000))
        for segment in images:
            segment.d = per_image
        length = timeline.repack(session.draft)
        reply.say("slideshow", n=len(images), each=_s(per_image), length=_s(length))
        return _edit("slideshow", {"per_image_ms": per_image}, {"duration_ms": length})

    def _speed(self, session: SessionRecord, step: planner.Speed, reply: _Reply) -> Edit | None:
        clips = [s for s in timeline.video_segments(session.draft) if not timeline.is_image(s)]
        if not clips:
            reply.say("no_video_for_speed")
            return None
        before = timeline.repack(session.draft)
        for segment in clips:
            start, end = timeline.source_span(segment)
            # Normal speed is written as no speed at all: "1x" on an untouched clip changes nothing.
            timeline.set_or_clear(segment.m, "speed", step.factor)
            timeline.set_span(segment, start, end)
        after = timeline.repack(session.draft)
        reply.say("speed", factor=step.factor, after=_s(after), before=_s(before))
        return _edit("set_speed", {"speed": step.factor}, {"duration_ms": after})

    # -- sound -----------------------------------------------------------------------------------------

    def _volume(self, session: SessionRecord, step: planner.Volume, reply: _Reply) -> Edit | None:
        if step.target == "music":
            segments = _music_segments(session.draft)
            if not segments:
                reply.say("no_music_yet")
                return None
        else:
            segments = [s for s in timeline.video_segments(session.draft) if not timeline.is_image(s)]
            if not segments:
                reply.say("no_clip_sound")
                return None
        level = 0.0
        for segment in segments:
            current = timeline.number(segment.m.volume, 1.0)
            level = step.level if step.level is not None else current * (step.factor or 1.0)
            level = round(max(0.0, min(2.0, level)), 3)
            # The clip's sound as recorded is written as no volume at all (music always says its own).
            if step.target == "clip":
                timeline.set_or_clear(segment.m, "volume", level)
            else:
                segment.m.volume = level
        percent = round(level * 100)
        if step.target == "music":
            reply.say("music_volume", percent=percent)
        elif level == 0:
            reply.say("muted")
        else:
            reply.say("clip_volume", percent=percent)
        return _edit("set_volume", {"target": step.target, "volume": level}, {})

    async def _music(self, session: SessionRecord, step: planner.Music, reply: _Reply) -> Edit | None:
        existing = _music_segments(session.draft)
        if existing and not step.explicit_add and step.volume is not None:
            return self._volume(session, planner.Volume("music", level=step.volume), reply)
        upload = next((info for info in reversed(session.video_infos) if info.get("file_type") == "audio"), None)
        length = timeline.repack(session.draft) or DEFAULT_LENGTH_MS
        volume = step.volume if step.volume is not None else MUSIC_VOLUME
        speech_level = await self._speech_level(session)
        threshold = DEFAULT_DUCK_THRESHOLD_DB
        if speech_level is not None:
            threshold = round(max(-60.0, min(-6.0, speech_level - DUCK_THRESHOLD_BELOW_SPEECH_DB)), 1)
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
        which = reply.words("music_yours", title=m.title) if upload is not None else reply.words("music_bundled")
        reply.say(
            "music_added", which=which, length=_s(length), percent=percent,
            # Where no clip has any sound (a slideshow), nothing will make the music dip: nothing is said of it.
            ducking=reply.words("music_ducks") if step.duck and speech_level is not None else "",
            gui=reply.words("gui_preview"),
        )  # fmt: skip
        args = {"volume": volume, "start_ms": 0, "duration_ms": length, "duck": step.duck}
        return _edit("add_music", args, {"track": "music", "source": "upload" if upload else "bundled"})

    async def _speech_level(self, session: SessionRecord) -> float | None:
        """The loudest measured speech level of the timeline's clips (dBFS); None when no clip has sound."""
        levels: list[float] = []
        for segment in timeline.video_segments(session.draft):
            src = segment.m.src
            if timeline.is_image(segment) or src is None:
                continue
            analysis = await self._analysis(session, src)
            if analysis is not None and analysis.speech_db is not None:
                levels.append(analysis.speech_db)
        return max(levels) if levels else None

    def _remove_music(self, session: SessionRecord, reply: _Reply) -> Edit | None:
        if not _music_segments(session.draft):
            reply.say("no_music")
            return None
        _drop_music(session.draft)
        reply.say("music_removed")
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
        reply.say("title", text=step.text, seconds=_s(duration))
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
        reply.say("text", text=step.text, start=_clock(start), end=_clock(start + duration))
        return _edit("add_text", {"text": step.text, "start_ms": start, "duration_ms": duration}, {})

    async def _captions(self, session: SessionRecord, step: planner.Captions, reply: _Reply) -> Edit | None:
        if step.remove:
            removed = timeline.remove_captions(session.draft)
            if not removed:
                reply.say("no_captions")
                return None
            reply.say("captions_removed", n=removed)
            return _edit("remove_captions", {}, {"segments": removed})
        has_captions = any(
            s.m.role == "caption" for t in timeline.tracks_of(session.draft, timeline.TRACK_TEXT) for s in t.sg
        )
        if step.styled and has_captions and step.script is None:
            return self._caption_style(session, step, reply)
        self._set_caption_style(session, step)
        if step.script is not None:
            return await self._captions_from_script(session, step.script, reply)
        upload = next((info for info in reversed(session.video_infos) if info.get("file_type") == "subtitle"), None)
        if upload is None:
            return await self._captions_from_speech(session, reply)
        path = _local_path(session, str(upload["cdn_url"]))
        if path is None:
            return await self._captions_from_speech(session, reply)
        if path.suffix.lower() == ".txt":
            try:
                script = await asyncio.to_thread(read_script, path)
            except (OSError, SubtitleError) as exc:
                reply.say("captions_unreadable", error=exc)
                return None
            return await self._captions_from_script(session, script, reply)
        try:
            cues = await asyncio.to_thread(read_cues, path)
        except (OSError, SubtitleError) as exc:
            reply.say("captions_unreadable", error=exc)
            return None
        unchanged = session.draft.to_wire()
        count = timeline.place_captions(
            session.draft, [(cue.start_ms, cue.end_ms, cue.text) for cue in cues], str(upload["cdn_url"])
        )
        timeline.sync(session.draft, session.video_infos)
        shown = sum(
            1 for t in timeline.tracks_of(session.draft, timeline.TRACK_TEXT) for s in t.sg if s.m.role == "caption"
        )
        name = upload.get("filename") or reply.words("captions_file")
        cut = reply.words("captions_cut", n=count - shown) if shown < count else ""
        if session.draft.to_wire() == unchanged:
            # An upload of a captions file already puts them on: say so rather than claim it again.
            reply.say("caption_already" if shown == 1 else "captions_already", n=shown, name=name)
            return None
        reply.say("caption_placed" if shown == 1 else "captions_placed", n=shown, name=name, cut=cut)
        return _edit("add_captions", {"source": name}, {"segments": shown})

    # -- captions from speech --------------------------------------------------------------------------

    @staticmethod
    def _set_caption_style(session: SessionRecord, step: planner.Captions) -> None:
        meta = session.draft.m
        if step.position is not None:
            meta.caption_position = step.position
        if step.size is not None:
            meta.caption_size = step.size
        if step.karaoke is not None:
            meta.caption_style = "karaoke" if step.karaoke else "plain"

    def _caption_style(self, session: SessionRecord, step: planner.Captions, reply: _Reply) -> Edit | None:
        self._set_caption_style(session, step)
        meta = session.draft.m
        style = {
            "position": meta.caption_position or "bottom", "size": meta.caption_size or "medium",
            "style": meta.caption_style or "plain",
        }  # fmt: skip
        reply.say(
            "captions_styled", position=reply.words(f"caption_{style['position']}"),
            size=reply.words(f"caption_{style['size']}"), style=reply.words(f"caption_{style['style']}"),
        )  # fmt: skip
        return _edit("style_captions", style, {})

    def _speech_clips(self, session: SessionRecord) -> list[tuple[str, Path]]:
        """The uploaded clips on the timeline (source URL, file), in upload order."""
        used = {s.m.src for s in timeline.video_segments(session.draft) if not timeline.is_image(s)}
        clips: list[tuple[str, Path]] = []
        for info in session.video_infos:
            url = info.get("cdn_url")
            if info.get("file_type") != "video" or not isinstance(url, str) or url not in used:
                continue
            path = _local_path(session, url)
            if path is not None:
                clips.append((url, path))
        return clips

    async def _words(
        self, session: SessionRecord, src: str, path: Path, language: str, reply: _Reply, share: tuple[int, int]
    ) -> tuple[list[Word], str]:
        """The recognised words of one clip (source ms), remembered with the session's analyses, and the name of
        the engine that heard them."""
        key = SPEECH_KEY + src
        cached = session.video_analyses.get(key)
        if isinstance(cached, dict) and cached.get("language") == language:
            return words_from_json(cached["words"]), str(cached.get("engine"))
        done, total = share

        def progress(fraction: float) -> None:
            reply.progress((done + fraction) / total)

        words, engine = await self.speech.recognise(path, language, progress)
        session.video_analyses[key] = {
            "language": language, "engine": engine, "words": words_to_json(words),
        }  # fmt: skip
        return words, engine

    async def _listen(self, session: SessionRecord, reply: _Reply) -> None:
        """Recognise the clips' words ahead of an edit that uses them; a failure is answered by the captions
        step itself."""
        clips = self._speech_clips(session)
        language = "zh" if reply.lang == "zh" else "en"
        for index, (src, path) in enumerate(clips):
            try:
                await self._words(session, src, path, language, reply, (index, len(clips)))
            except SpeechError:
                return

    async def _captions_from_speech(self, session: SessionRecord, reply: _Reply) -> Edit | None:
        clips = self._speech_clips(session)
        if not clips:
            reply.say("no_video_for_captions")
            return None
        language = "zh" if reply.lang == "zh" else "en"
        offsets = timeline.origins(session.video_infos)
        cues: list[CaptionCue] = []
        engine = ""
        try:
            for index, (src, path) in enumerate(clips):
                words, engine = await self._words(session, src, path, language, reply, (index, len(clips)))
                origin = round(offsets.get(src, 0.0))
                shifted = [Word(w.text, w.start_ms + origin, w.end_ms + origin) for w in words]
                cues.extend(cues_from_words(shifted))
        except LanguageNotAvailable:
            reply.say("needs_whisper")
            return None
        except SpeechError as exc:
            # The reason may name a model's folder or a library's internals: the log has it, the user plain words.
            log.warning("localnemo.captions.speech_failed session_id=%s error=%s", session.session_id, exc)
            reply.say("speech_failed")
            return None
        if not cues:
            reply.say("no_speech_heard")
            return None
        return self._place_spoken(session, cues, reply, "captions_made", engine)

    async def _captions_from_script(self, session: SessionRecord, script: str, reply: _Reply) -> Edit | None:
        clips = self._speech_clips(session)
        if not clips:
            reply.say("no_video_for_captions")
            return None
        # One script for the clips as uploaded, one after another: aligned clip by clip would need the script
        # cut at the right words; aligned against the first clip it covers the common case (one recording).
        src, path = clips[0]
        origin = round(timeline.origins(session.video_infos).get(src, 0.0))
        reply.progress(0.0)
        try:
            words = await self.speech.align(path, script)
        except SpeechError as exc:
            log.info("localnemo.captions.script_unmatched session_id=%s error=%s", session.session_id, exc)
            reply.say("script_unmatched")
            return None
        reply.progress(1.0)
        if not words:
            reply.say("no_speech_heard")
            return None
        session.video_analyses[SPEECH_KEY + src] = {
            "language": "script", "engine": "alignment", "words": words_to_json(words),
        }  # fmt: skip
        shifted = [Word(w.text, w.start_ms + origin, w.end_ms + origin) for w in words]
        return self._place_spoken(session, cues_from_words(shifted), reply, "captions_aligned", "alignment")

    @staticmethod
    def _place_spoken(
        session: SessionRecord, cues: list[CaptionCue], reply: _Reply, said: str, engine: str
    ) -> Edit | None:
        timeline.place_captions(
            session.draft, [(c.start_ms, c.end_ms, c.text) for c in cues], None,
            [[(w.text, w.start_ms, w.end_ms) for w in c.words] for c in cues],
        )  # fmt: skip
        timeline.sync(session.draft, session.video_infos)
        shown = sum(
            1 for t in timeline.tracks_of(session.draft, timeline.TRACK_TEXT) for s in t.sg if s.m.role == "caption"
        )
        words = sum(len(c.words) for c in cues)
        cut = reply.words("captions_cut", n=len(cues) - shown) if shown < len(cues) else ""
        reply.say(said, n=shown, words=words, engine=engine, cut=cut)
        return _edit("add_captions", {"source": "speech", "engine": engine}, {"segments": shown, "words": words})

    # -- picture ---------------------------------------------------------------------------------------

    def _aspect(self, session: SessionRecord, step: planner.Aspect, reply: _Reply) -> Edit:
        draft_meta = session.draft.m
        fit = step.fit or draft_meta.fit or "blur"
        draft_meta.fit = fit
        fit_words = reply.words(f"fit_{fit}")
        if step.ratio is None:
            reply.say("fit_from_now", fit=fit_words)
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
        reply.say("canvas", ratio=step.ratio, width=width, height=height, fit=fit_words)
        return _edit("set_canvas", {"aspect_ratio": step.ratio, "fit": fit}, {"width": width, "height": height})

    def _fade(self, session: SessionRecord, step: planner.Fade, reply: _Reply) -> Edit:
        draft_meta = session.draft.m
        parts: list[str] = []
        if step.fade_in_ms is not None:
            draft_meta.fade_in_ms = step.fade_in_ms
            parts.append(reply.words("fades_in", seconds=_s(step.fade_in_ms)))
        if step.fade_out_ms is not None:
            draft_meta.fade_out_ms = step.fade_out_ms
            parts.append(reply.words("fades_out", seconds=_s(step.fade_out_ms)))
        reply.say("fades", parts=reply.words("fades_joiner").join(parts))
        return _edit("set_fade", {"fade_in_ms": step.fade_in_ms, "fade_out_ms": step.fade_out_ms}, {})

    def _resolution(self, session: SessionRecord, step: planner.Resolution, reply: _Reply) -> Edit:
        draft_meta = session.draft.m
        draft_meta.resolution = step.name
        ratio = draft_meta.aspect_ratio
        if ratio is not None and ratio in planner.ASPECTS:
            # Keep the canvas numbers in step with the new size.
            self._aspect(session, planner.Aspect(ratio, None), _Reply(reply.lang))
        reply.say("resolution", name=step.name)
        return _edit("set_resolution", {"resolution": step.name}, {})


# The name the server and tests used for the first keyword agent; it is the planner now.
SimpleAgent = PlannerAgent


def kept_spans(
    analysis: AudioAnalysis,
    span: tuple[float, float],
    *,
    min_silence_ms: int,
    margin_ms: int,
    min_clip_ms: int,
    min_cut_ms: int = MIN_CUT_MS,
    min_end_ms: int = MIN_END_MS,
    min_speech_ms: int = voice.MIN_SPEECH_MS,
    fps: float | None = None,
) -> list[tuple[float, float]] | None:
    """The parts of ``span`` (source ms) to keep: speech, with ``margin_ms`` either side, without pauses of
    ``min_silence_ms`` or more. None when the span holds no speech at all (nothing to go by).

    What a video editor would not do is not done: sound too short to be speech (a click) keeps nothing of
    its own (``localnemo.voice``); a cut that would save less than ``min_cut_ms`` is not made; and the piece
    at either end of the span is at least ``min_end_ms`` long, grown into the pause beside it."""
    spoken, _ = voice.speech(analysis, min_silence_ms=min_silence_ms, min_speech_ms=min_speech_ms)
    begin, finish = span
    spoken = [(a, b) for a, b in spoken if b > begin and a < finish]
    if not spoken:
        return None
    padded: list[tuple[float, float]] = []
    for start, end in spoken:
        start, end = max(begin, start - margin_ms), min(finish, end + margin_ms)
        if padded and start <= padded[-1][1]:
            padded[-1] = (padded[-1][0], max(padded[-1][1], end))
        else:
            padded.append((start, end))
    kept = [(a, b) for a, b in padded if b - a >= min_clip_ms]
    if not kept:
        return None
    kept = close_small_cuts(kept, span, min_cut_ms, fps)
    for index in (0, len(kept) - 1):
        kept = _grow_end_piece(kept, index, span, min_end_ms)
    return close_small_cuts(kept, span, min_cut_ms, fps)


def close_small_cuts(
    spans: list[tuple[float, float]], limit: tuple[float, float], min_cut_ms: int, fps: float | None = None
) -> list[tuple[float, float]]:
    """``spans`` without the cuts that save less than ``min_cut_ms`` (a jump cut for a few frames): pieces
    that close are joined, and the ends of ``limit`` are kept when trimming them would save less. With
    ``fps``, the gaps are measured between the frame boundaries the cuts will land on."""

    def at(ms: float) -> float:
        return timeline.snap(ms, fps) if fps else ms

    joined: list[tuple[float, float]] = []
    for start, end in spans:
        if joined and at(start) - at(joined[-1][1]) < min_cut_ms:
            joined[-1] = (joined[-1][0], max(joined[-1][1], end))
        else:
            joined.append((start, end))
    if joined and at(joined[0][0]) - at(limit[0]) < min_cut_ms:
        joined[0] = (limit[0], joined[0][1])
    if joined and at(limit[1]) - at(joined[-1][1]) < min_cut_ms:
        joined[-1] = (joined[-1][0], limit[1])
    return joined


def _grow_end_piece(
    spans: list[tuple[float, float]], index: int, limit: tuple[float, float], min_end_ms: int
) -> list[tuple[float, float]]:
    """``spans`` with its piece ``index`` (the first or the last) at least ``min_end_ms`` long: grown first
    towards the end of ``limit`` it stands at, then into the pause before its neighbour, never past it."""
    start, end = spans[index]
    short = min_end_ms - (end - start)
    if short <= 0:
        return spans
    spans = list(spans)
    if index == 0:
        grown = min(short, start - limit[0])
        start -= grown
        ceiling = spans[1][0] if len(spans) > 1 else limit[1]
        end = min(ceiling, end + short - grown)
    else:
        grown = min(short, limit[1] - end)
        end += grown
        floor = spans[index - 1][1] if index > 0 else limit[0]
        start = max(floor, start - (short - grown))
    spans[index] = (start, end)
    return spans


async def _while_running(task: asyncio.Future[Any], reply: _Reply) -> AsyncIterator[AgentEvent]:
    """The progress events of a step while it runs (the step is cancelled if the stream is dropped)."""
    try:
        while not task.done():
            getter = asyncio.ensure_future(reply.events.get())
            await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield getter.result()
            else:
                getter.cancel()
    finally:
        if not task.done():
            task.cancel()
    while not reply.events.empty():
        yield reply.events.get_nowait()


def respect_words(
    spans: list[tuple[float, float]], words: list[Word], limit: tuple[float, float], fps: float | None = None
) -> list[tuple[float, float]]:
    """``spans`` (source ms) widened so that no edge falls inside a word (within ``limit``), then merged where
    they meet. With ``fps``, edges sit on frame boundaries (which snapping keeps), outside every word."""
    frame = 1000 / fps if fps else None

    def inside(ms: float) -> Word | None:
        return next((w for w in words if w.start_ms < ms < w.end_ms), None)

    def edge(ms: float, outwards: int) -> float:
        for _ in range(len(words) + 2):
            word = inside(ms)
            if word is not None:
                ms = word.start_ms if outwards < 0 else word.end_ms
            if frame is None:
                return ms
            out = (math.floor(ms / frame) if outwards < 0 else math.ceil(ms / frame)) * frame
            back = (math.ceil(ms / frame) if outwards < 0 else math.floor(ms / frame)) * frame
            for candidate in (out, back):
                if inside(candidate) is None:
                    return candidate
            ms = out
        return ms

    widened: list[tuple[float, float]] = []
    for start, end in spans:
        start, end = max(limit[0], edge(start, -1)), min(limit[1], edge(end, 1))
        if widened and start <= widened[-1][1]:
            widened[-1] = (widened[-1][0], max(widened[-1][1], end))
        else:
            widened.append((start, end))
    return widened


def _known_words(session: SessionRecord, src: str) -> list[Word]:
    """The words recognised (or aligned) in a clip, source ms; empty when none are known yet."""
    cached = session.video_analyses.get(SPEECH_KEY + src)
    if not isinstance(cached, dict):
        return []
    return words_from_json(cached.get("words"))


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
