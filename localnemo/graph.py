"""A draft turned into ONE FFmpeg command: every input opened once, one filter graph, one encode.

The shape of the graph (labels in brackets):

    each video input ─ fit ─ fps (own rate) ─ split ┬ trim + setpts (one per kept span) ─┐
                    └─ audio: resample ─ asplit ────┴ atrim + asetpts (+ atempo, volume) ─┴ concat (v=1:a=1)
    images ─ fit ─ setpts                            with silence beside them ─────────────┘
    [vcat] ─ fps ─ drawtext (titles, text) ─ ass (captions) ─ fade ─ format ─ [vout]
    [acat] ─ asplit ─ key ───────────────────────────────┐
    music ─ atrim, volume, adelay ─ sidechaincompress ◄──┘ ─ amix with the voice ─ afade ─ level ─ [aout]

The level (one gain to −14 LUFS, and a true-peak limiter only where needed: ``localnemo/loudness.py``) comes
from a measuring run of the same mix before the render: ``RenderGraph.measuring()`` is the audio half of the
graph alone, ending in ``ebur128``, with only the inputs it reads.

Cuts use ``trim``/``atrim`` inside the one graph rather than seeking per piece, so each source is decoded
once. Every cut point is moved to a frame boundary of its source, so each piece keeps exactly as many video
frames as its audio lasts; and video and audio of a piece go into the SAME ``concat`` filter, which "will
use the duration of the longest stream in each segment … and if necessary pad shorter audio streams with
silence" (FFmpeg filters documentation, concat) — so nothing left over carries into the next piece and
sound cannot drift from picture however many pieces there are.

Frame rates: each video is first put on its own frame grid (``fps`` at its highest common rate, FFmpeg's
"tbr"), so a variable-rate recording keeps each frame at its time, held until the next, and the cuts fall on
whole frames of it; the output is constant-rate at the highest rate among the sources (at most 60).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from localnemo import timeline
from localnemo.config import resolution_lines
from localnemo.fonts import Font
from localnemo.loudness import measurement_filter
from localnemo.media import MediaInfo
from localnemo.planner import ASPECTS
from localnemo.subtitles import CaptionStyle, Cue, write_ass

log = logging.getLogger(__name__)

SAMPLE_RATE = 48_000
MAX_FPS = 60.0
DEFAULT_FPS = 30.0
# Seek into a long source only when the first kept frame is this far in (seconds), from this much earlier.
SEEK_AFTER_SECONDS = 5.0
SEEK_LEAD_SECONDS = 1.0
DUCK_ATTACK_MS = 50
DUCK_RELEASE_MS = 500
DUCK_RATIO = 8.0
_NTSC = {23.976: "24000/1001", 29.97: "30000/1001", 59.94: "60000/1001"}
# Output shapes (across, down) a source's shape snaps to, and how far off (relative) it may be to snap: a
# recorder's 1081×607 or 1366×768 is 16:9; a source that is within it fills the canvas (cropped at most
# this much), with no band of blur or black.
STANDARD_SHAPES: tuple[tuple[int, int], ...] = (
    (16, 9), (9, 16), (1, 1), (4, 5), (5, 4), (4, 3), (3, 4), (3, 2), (2, 3), (16, 10), (10, 16), (64, 27), (27, 64),
)  # fmt: skip
SNAP_SHAPE = 0.02
# A shape this close to the canvas's is scaled to it: the stretch cannot be seen.
SAME_SHAPE = 0.005


class GraphError(ValueError):
    """The draft cannot be rendered; the message is plain language."""


@dataclass(frozen=True)
class Source:
    path: Path
    info: MediaInfo
    title: str


@dataclass
class RenderGraph:
    inputs: list[list[str]]
    # The whole graph but the audio's last step: ``[vout]`` is ready, the mix is at ``audio``.
    graph: str
    duration: float
    width: int
    height: int
    fps: str
    files: list[Path] = field(default_factory=list)
    audio: str = "[amix]"
    # Every sound in the export has one channel: the export is mono too (half the AAC work, nothing lost).
    mono: bool = False
    # The measuring run: its inputs, and the audio half of the graph alone, up to the mix at ``audio``.
    measuring_inputs: list[list[str]] = field(default_factory=list)
    measuring_graph: str = ""

    def measuring(self, level: str = "") -> str:
        """The measuring run's graph: the mix (leveled by ``level``, when given) into ``ebur128``, at
        ``[measured]``."""
        steps = ",".join(step for step in (level, measurement_filter(mono=self.mono)) if step)
        return f"{self.measuring_graph};{self.audio}{steps}[measured]"

    def with_level(self, level: str) -> str:
        """The render's graph, the mix leveled by ``level`` (filters) into ``[aout]``."""
        return f"{self.graph};{self.audio}{level or 'anull'}[aout]"


# -- escaping -------------------------------------------------------------------------------------------


def escape_value(value: str) -> str:
    """A filter option value escaped twice, as "Notes on filtergraph escaping" in the FFmpeg filters
    documentation describes: once for the option parser (``\\ : '``), once for the graph (``\\ ' [ ] , ;``)."""
    first = value.replace("\\", "\\\\").replace("'", "\\'").replace(":", "\\:")
    second = first.replace("\\", "\\\\").replace("'", "\\'")
    for char in "[],;":
        second = second.replace(char, "\\" + char)
    return second


def _seconds(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".") or "0"


# -- shape of the output ------------------------------------------------------------------------------


def canvas_size(draft: timeline.Draft, first: MediaInfo | None, default_resolution: str) -> tuple[int, int]:
    """Output width and height: the draft's aspect ratio (or canvas, or first picture's shape) with its
    short side at the draft's resolution (or the default).

    A shape within ``SNAP_SHAPE`` of a standard one is that one, so a 1081×607 recording comes out
    1920×1080, not 1924×1080; the sides are always even (what H.264 in 4:2:0 needs)."""
    meta = draft.m
    try:
        short = resolution_lines(meta.resolution or default_resolution)
    except ValueError:
        short = resolution_lines(default_resolution)
    ratio = meta.aspect_ratio
    across: float
    down: float
    if ratio is not None and ratio in ASPECTS:
        across, down = ASPECTS[ratio]
    elif timeline.number(meta.width) > 0 and timeline.number(meta.height) > 0:
        across, down = _standard_shape(timeline.number(meta.width), timeline.number(meta.height))
    elif first is not None and first.width and first.height:
        across, down = _standard_shape(first.width, first.height)
    else:
        across, down = 16, 9
    short = _even(short)
    if across >= down:
        width, height = short * across / down, float(short)
    else:
        width, height = float(short), short * down / across
    return _even(width), _even(height)


def _standard_shape(width: float, height: float) -> tuple[float, float]:
    """The standard shape nearest to width:height when it is within ``SNAP_SHAPE``, else width:height."""
    shape = width / height
    nearest = min(STANDARD_SHAPES, key=lambda s: abs(math.log(shape * s[1] / s[0])))
    if abs(shape * nearest[1] / nearest[0] - 1) <= SNAP_SHAPE:
        return nearest
    return width, height


def _even(value: float) -> int:
    return max(2, 2 * round(value / 2))


def _fps_text(fps: float) -> str:
    for rate, text in _NTSC.items():
        if abs(fps - rate) < 0.01:
            return text
    return _seconds(round(fps, 3))


def _frame_rate(info: MediaInfo) -> float:
    """A video source's frame rate as the filters take it (29.97 is exactly 30000/1001)."""
    over, _, under = _fps_text(info.fps or DEFAULT_FPS).partition("/")
    return float(over) / float(under or 1)


def _fit(label: str, info: MediaInfo, width: int, height: int, mode: str, tag: str) -> list[str]:
    """Filter chains that bring ``label`` to exactly width×height (square pixels), ending at ``[tag]``."""
    off = 1.0
    if info.width and info.height:
        off = abs(info.width * height / (info.height * width) - 1)
    if off <= SAME_SHAPE:
        if (info.width, info.height) == (width, height):
            return [f"{label}setsar=1[{tag}]"]
        return [f"{label}scale={width}:{height},setsar=1[{tag}]"]
    if mode == "crop" or off <= SNAP_SHAPE:
        # Nearly the canvas's shape (a 1081×607 recording on 1920×1080): filled, losing a sliver at the edges.
        return [
            f"{label}scale={width}:{height}:force_original_aspect_ratio=increase,crop={width}:{height},setsar=1[{tag}]"
        ]
    fitted = f"scale={width}:{height}:force_original_aspect_ratio=decrease:force_divisible_by=2"
    if mode == "pad":
        return [f"{label}{fitted},pad={width}:{height}:(ow-iw)/2:(oh-ih)/2:color=black,setsar=1[{tag}]"]
    # The blurred background is made at a quarter of the size: blurring is the costly part, and a blur
    # hides the upscale. boxblur's radius must stay within half the (chroma) plane, hence the bound.
    small_w, small_h = _even(width / 4), _even(height / 4)
    radius = max(1, min(small_w, small_h) // 16)
    return [
        f"{label}split=2[{tag}bg][{tag}fg]",
        f"[{tag}bg]scale={small_w}:{small_h}:force_original_aspect_ratio=increase,crop={small_w}:{small_h},"
        f"boxblur=luma_radius={radius}:luma_power=2,scale={width}:{height},setsar=1[{tag}bgb]",
        f"[{tag}fg]{fitted},setsar=1[{tag}fgs]",
        f"[{tag}bgb][{tag}fgs]overlay=(W-w)/2:(H-h)/2[{tag}]",
    ]


def _atempo(speed: float) -> list[str]:
    """``atempo`` steps for a speed: each stays within 0.5–2, the range every FFmpeg version takes."""
    steps: list[str] = []
    remaining = speed
    while remaining > 2.0:
        steps.append("atempo=2")
        remaining /= 2.0
    while remaining < 0.5:
        steps.append("atempo=0.5")
        remaining /= 0.5
    if abs(remaining - 1.0) > 1e-6:
        steps.append(f"atempo={remaining:.6f}")
    return steps


# -- the graph ------------------------------------------------------------------------------------------


@dataclass
class _Piece:
    segment: timeline.Segment
    source: Source
    start: float  # source seconds (videos)
    end: float
    duration: float  # seconds on the timeline
    speed: float
    volume: float
    image: bool


def _pieces(draft: timeline.Draft, sources: Mapping[str, Source]) -> list[_Piece]:
    pieces: list[_Piece] = []
    for segment in timeline.video_segments(draft):
        m = segment.m
        src = m.src
        title = m.title or "a clip"
        if src is None:
            log.info("localnemo.graph.skip_segment reason=no_src")
            continue
        source = sources.get(src)
        if source is None:
            raise GraphError(f'"{title}" is not on this server: upload it here before exporting')
        image = source.info.kind == "image"
        volume = max(0.0, min(2.0, timeline.number(m.volume, 1.0)))
        if image:
            duration = timeline.number(segment.d) / 1000
            if duration <= 0:
                continue
            pieces.append(_Piece(segment, source, 0.0, duration, duration, 1.0, volume, True))
            continue
        if source.info.kind != "video":
            raise GraphError(f'"{title}" has no picture: put it on the audio track instead')
        fps = _frame_rate(source.info)
        speed = timeline.speed_of(segment)
        start_ms, end_ms = timeline.source_span(segment)
        if source.info.duration:
            end_ms = min(end_ms, source.info.duration * 1000)
        # Frame boundaries: trim keeps whole frames, atrim keeps exact samples; equal spans keep them equal.
        first_frame, end_frame = round(start_ms * fps / 1000), round(end_ms * fps / 1000)
        if end_frame <= first_frame:
            continue
        start, end = first_frame / fps, end_frame / fps
        pieces.append(_Piece(segment, source, start, end, (end - start) / speed, speed, volume, False))
    return pieces


class _Builder:
    def __init__(self) -> None:
        self.inputs: list[list[str]] = []
        self.chains: list[str] = []

    def add_input(self, options: list[str], path: Path) -> int:
        self.inputs.append([*options, "-i", str(path)])
        return len(self.inputs) - 1


def build_graph(
    draft: timeline.Draft,
    sources: Mapping[str, Source],
    *,
    default_resolution: str,
    workdir: Path,
    music: Path | None,
    font: Font | None,
) -> RenderGraph:
    """The inputs and the filter graph for a draft (``workdir`` receives the captions and text files)."""
    pieces = _pieces(draft, sources)
    audio_segments = [
        s for t in timeline.tracks_of(draft, timeline.TRACK_AUDIO) for s in t.sg if timeline.number(s.d) > 0
    ]
    if not pieces:
        raise GraphError("nothing to render: the timeline has no video clips or images uploaded to this server")
    first_visual = pieces[0].source.info
    width, height = canvas_size(draft, first_visual, default_resolution)
    rates = [p.source.info.fps for p in pieces if not p.image and p.source.info.fps]
    fps_value = min(MAX_FPS, max(rates)) if rates else DEFAULT_FPS
    fps = _fps_text(fps_value)
    fit_mode = draft.m.fit or "blur"
    b = _Builder()

    # When every sound of the export has one channel, the whole mix is made in mono, and so is the export:
    # half the work for every audio filter and for the AAC encoder, and nothing lost.
    mono = _all_mono(pieces, audio_segments, sources, music)
    layout = "mono" if mono else "stereo"
    segment_labels = _video_pieces(b, pieces, width, height, fps, fit_mode, layout)
    duration = sum(p.duration for p in pieces)
    concat = ""
    if len(segment_labels) == 1:
        video, voice = segment_labels[0]
    else:
        joined = "".join(f"{v}{a}" for v, a in segment_labels)
        concat = f"{joined}concat=n={len(segment_labels)}:v=1:a=1[vcat][acat]"
        b.chains.append(concat)
        video, voice = "[vcat]", "[acat]"

    files: list[Path] = []
    video = _overlays(b, draft, video, width, height, fps, duration, workdir, font, files)
    audio = _mix(b, draft, voice, audio_segments, sources, music, duration, layout)
    video, audio = _fades(b, draft, video, audio, duration)
    b.chains.append(f"{video}format=yuv420p[vout]")
    b.chains.append(f"{audio}anull[amix]")
    audio_chains = [chain for chain in b.chains if chain != concat]
    if len(segment_labels) > 1:
        # The render's concat pads each piece's sound with silence to its picture's length: so does this one.
        for index, ((_, sound), piece) in enumerate(zip(segment_labels, pieces, strict=True)):
            audio_chains.append(f"{sound}apad=whole_dur={_seconds(piece.duration)}[mpad{index}]")
        padded = "".join(f"[mpad{index}]" for index in range(len(segment_labels)))
        audio_chains.append(f"{padded}concat=n={len(segment_labels)}:v=0:a=1[acat]")
    measuring_inputs, measuring_graph = _only_what_feeds(b.inputs, audio_chains, "[amix]")
    return RenderGraph(
        b.inputs, ";".join(b.chains), duration, width, height, fps, files, "[amix]", mono,
        measuring_inputs, measuring_graph,
    )  # fmt: skip


_LEADING_LABELS_RE = re.compile(r"^(?:\[[^\]]+\])+")
_TRAILING_LABELS_RE = re.compile(r"(?:\[[^\]\\]+\])+$")
_LABEL_RE = re.compile(r"\[([^\]]+)\]")
_INPUT_STREAM_RE = re.compile(r"\[(\d+):")


def _only_what_feeds(inputs: list[list[str]], chains: list[str], label: str) -> tuple[list[list[str]], str]:
    """The chains that ``label`` depends on (in their order), and the inputs they read, renumbered."""
    producers: dict[str, int] = {}
    for index, chain in enumerate(chains):
        trailing = _TRAILING_LABELS_RE.search(chain)
        for name in _LABEL_RE.findall(trailing.group(0) if trailing else ""):
            producers[name] = index
    needed: set[int] = set()
    pending = [label.strip("[]")]
    while pending:
        producer = producers.get(pending.pop())
        if producer is None or producer in needed:
            continue
        needed.add(producer)
        pending.extend(_LABEL_RE.findall(_leading(chains[producer])))
    kept = [chains[i] for i in sorted(needed)]
    used = sorted({int(n) for chain in kept for n in _INPUT_STREAM_RE.findall(_leading(chain))})
    number = {old: new for new, old in enumerate(used)}
    renumbered: list[str] = []
    for chain in kept:
        head = _leading(chain)
        renumbered.append(_INPUT_STREAM_RE.sub(lambda m: f"[{number[int(m.group(1))]}:", head) + chain[len(head) :])
    return [inputs[i] for i in used], ";".join(renumbered)


def _leading(chain: str) -> str:
    """The labels a chain starts with (its inputs)."""
    match = _LEADING_LABELS_RE.match(chain)
    return match.group(0) if match else ""


def _all_mono(
    pieces: list[_Piece], audio_segments: list[timeline.Segment], sources: Mapping[str, Source], music: Path | None
) -> bool:
    """Whether every sound of the export has one channel (the bundled music loop has one)."""
    for piece in pieces:
        if not piece.image and piece.source.info.has_audio and not piece.source.info.mono:
            return False
    for segment in audio_segments:
        source = sources.get(segment.m.src) if segment.m.src is not None else None
        if source is not None and not source.info.mono:
            return False
    return True


def _audio_format(mono: bool, layout: str) -> str:
    """A source's sound at the mix's rate, sample format and channels. A mono sound in a stereo mix plays at
    its own level on both sides (FFmpeg's own upmix would put it 3 dB lower on each), so that the level the
    analysis measured on the file (for ducking) is the level it has in the mix."""
    steps = [f"aresample={SAMPLE_RATE}"]
    if mono and layout == "stereo":
        steps.append("pan=stereo|c0=c0|c1=c0")
    steps.append(f"aformat=sample_fmts=fltp:channel_layouts={layout}")
    return ",".join(steps)


def _silence(seconds: float, tag: str, layout: str) -> str:
    return f"anullsrc=r={SAMPLE_RATE}:cl={layout},atrim=duration={_seconds(seconds)}[{tag}]"


def _video_pieces(
    b: _Builder, pieces: list[_Piece], width: int, height: int, fps: str, fit_mode: str, layout: str
) -> list[tuple[str, str]]:
    """Open each source once per run of increasing spans and cut the pieces out; their labels in order."""
    # Pieces of one source are cut from one decode only while they move forward in the source: a piece
    # that goes back would have to wait for frames already passed (buffered without bound), so it gets its
    # own input instead.
    runs: list[list[int]] = []
    open_runs: dict[Path, list[int]] = {}
    for index, piece in enumerate(pieces):
        if piece.image:
            runs.append([index])
            continue
        run = open_runs.get(piece.source.path)
        if run is not None and pieces[run[-1]].end <= piece.start + 1e-6:
            run.append(index)
        else:
            run = [index]
            runs.append(run)
            open_runs[piece.source.path] = run
    labels: dict[int, tuple[str, str]] = {}
    for run_number, run in enumerate(runs):
        first = pieces[run[0]]
        info = first.source.info
        if first.image:
            still = ["-loop", "1", "-framerate", fps, "-t", _seconds(first.duration)]
            if "gif" in info.container:
                # The gif demuxer has no -loop; repeating the file does the same for animations.
                still = ["-stream_loop", "-1", "-t", _seconds(first.duration)]
            number = b.add_input(still, first.source.path)
            tag = f"p{run_number}"
            b.chains.extend(_fit(f"[{number}:v:0]", info, width, height, fit_mode, f"{tag}f"))
            b.chains.append(f"[{tag}f]fps={fps},format=yuv420p,setpts=PTS-STARTPTS[{tag}v]")
            b.chains.append(_silence(first.duration, f"{tag}a", layout))
            labels[run[0]] = (f"[{tag}v]", f"[{tag}a]")
            continue
        low = min(pieces[i].start for i in run)
        high = max(pieces[i].end for i in run)
        rate = _frame_rate(info)
        seek = max(0.0, low - SEEK_LEAD_SECONDS) if low > SEEK_AFTER_SECONDS else 0.0
        # On a frame boundary, so that the frames' times after the seek stay on the source's grid.
        seek = math.floor(seek * rate + 1e-6) / rate
        options: list[str] = []
        if seek > 0:
            options += ["-ss", _seconds(seek)]
        if info.duration and high + SEEK_LEAD_SECONDS < info.duration:
            options += ["-t", _seconds(high - seek + SEEK_LEAD_SECONDS)]
        number = b.add_input(options, first.source.path)
        tag = f"s{run_number}"
        b.chains.extend(_fit(f"[{number}:v:0]", info, width, height, fit_mode, f"{tag}f"))
        count = len(run)
        video_outs = [f"[{tag}v{k}]" for k in range(count)]
        audio_outs = [f"[{tag}a{k}]" for k in range(count)]
        # Each frame on the source's own grid from its time 0: a variable-rate source (a phone, a screen
        # recorder) gets its frames at their times, each held until the next, so the cuts below (on that
        # grid) keep picture and sound together, and a smooth 30 fps part stays 30 fps.
        b.chains.append(
            f"[{tag}f]fps={_fps_text(_frame_rate(info))}:start_time=0,format=yuv420p"
            + (f",split={count}{''.join(video_outs)}" if count > 1 else video_outs[0])
        )
        if info.has_audio:
            resample = f"[{number}:a:0]{_audio_format(info.mono, layout)}"
            b.chains.append(resample + (f",asplit={count}{''.join(audio_outs)}" if count > 1 else audio_outs[0]))
        frame = 1 / rate
        for k, index in enumerate(run):
            piece = pieces[index]
            start, end = piece.start - seek, piece.end - seek
            speed = "" if abs(piece.speed - 1) < 1e-6 else f"/{piece.speed:.6f}"
            # The frames are on the grid (the fps filter above), and trim rounds its bounds to it: a quarter
            # of a frame early on both ends keeps exactly the frames at start…end-1 however seconds round.
            b.chains.append(
                f"{video_outs[k]}trim=start={_seconds(max(0.0, start - frame / 4))}:end={_seconds(end - frame / 4)},"
                f"setpts=(PTS-STARTPTS){speed}[{tag}sv{k}]"
            )
            if info.has_audio:
                steps = [f"atrim=start={_seconds(start)}:end={_seconds(end)}", "asetpts=PTS-STARTPTS"]
                steps += _atempo(piece.speed)
                if abs(piece.volume - 1) > 1e-6:
                    steps.append(f"volume={piece.volume:.3f}")
                b.chains.append(f"{audio_outs[k]}{','.join(steps)}[{tag}sa{k}]")
            else:
                b.chains.append(_silence(piece.duration, f"{tag}sa{k}", layout))
            labels[index] = (f"[{tag}sv{k}]", f"[{tag}sa{k}]")
    return [labels[i] for i in range(len(pieces))]


# -- text -----------------------------------------------------------------------------------------------


def _wrap(text: str, limit: int) -> list[str]:
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        words = paragraph.split()
        if not words:
            continue
        if len(words) == 1 or all(len(w) > limit for w in words):
            # No spaces to break at (Chinese, or one long word): break by characters.
            chunk = paragraph.strip()
            lines.extend(chunk[i : i + limit] for i in range(0, len(chunk), limit))
            continue
        line = ""
        for word in words:
            if line and len(line) + 1 + len(word) > limit:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}".strip()
        if line:
            lines.append(line)
    return lines[:6]


def _text_segments(draft: timeline.Draft) -> list[tuple[str, float, float, str]]:
    """(role, start s, end s, text) of every title and text overlay."""
    found: list[tuple[str, float, float, str]] = []
    for track in timeline.tracks_of(draft, timeline.TRACK_TEXT):
        for segment in track.sg:
            m = segment.m
            text = m.text
            role = m.role or "text"
            if role == "caption" or text is None or not text.strip():
                continue
            start = timeline.number(m.start) / 1000
            end = start + timeline.number(segment.d) / 1000
            if end > start:
                found.append((role, start, end, text.strip()))
    return found


def _captions(draft: timeline.Draft) -> list[Cue]:
    cues: list[Cue] = []
    for track in timeline.tracks_of(draft, timeline.TRACK_TEXT):
        for segment in track.sg:
            m = segment.m
            text = m.text
            if m.role != "caption" or text is None or not text.strip():
                continue
            start = round(timeline.number(m.start))
            end = start + round(timeline.number(segment.d))
            words = tuple(
                (w.w, round(timeline.number(w.at)), round(timeline.number(w.until)))
                for w in m.words or [] if w.at is not None and w.until is not None
            )  # fmt: skip
            if end > start:
                cues.append(Cue(start, end, text, words))
    return sorted(cues, key=lambda cue: cue.start_ms)


def caption_style(draft: timeline.Draft) -> CaptionStyle:
    m = draft.m
    return CaptionStyle(m.caption_position or "bottom", m.caption_size or "medium", m.caption_style == "karaoke")


def needs_font(draft: timeline.Draft) -> str | None:
    """All the text the render will draw (None when there is none), to choose a font for it."""
    texts = [text for _, _, _, text in _text_segments(draft)] + [cue.text for cue in _captions(draft)]
    return " ".join(texts) if texts else None


def _overlays(
    b: _Builder,
    draft: timeline.Draft,
    video: str,
    width: int,
    height: int,
    fps: str,
    duration: float,
    workdir: Path,
    font: Font | None,
    files: list[Path],
) -> str:
    filters = [f"fps={fps}"]
    texts = _text_segments(draft)
    cues = _captions(draft)
    if (texts or cues) and font is None:
        raise GraphError(
            "titles and captions need a font, and none is installed on this server "
            "(install DejaVu or set LOCALNEMO_FONT_FILE)"
        )
    short = min(width, height)
    for index, (role, start, end, text) in enumerate(texts):
        assert font is not None
        if start >= duration:
            continue
        title = role == "title"
        limit = 22 if title else 36
        lines = _wrap(text, limit)
        longest = max((len(line) for line in lines), default=1)
        size = round(min(short / (7 if title else 14), 1.6 * width / (longest + 2)))
        size = max(8, size)
        spacing = round(size * 1.3)
        block = spacing * len(lines)
        enable = f"between(t,{_seconds(start)},{_seconds(end)})"
        fade = min(0.3, (end - start) / 4)
        alpha = f"max(0,min(1,min((t-{_seconds(start)})/{_seconds(fade)},({_seconds(end)}-t)/{_seconds(fade)})))"
        for number, line in enumerate(lines):
            path = workdir / f"text{index}_{number}.txt"
            path.write_text(line, encoding="utf-8")
            files.append(path)
            if title:
                top = f"(h-{block})/2+{number * spacing}"
                style = f"borderw={max(1, size // 14)}:bordercolor=black@0.8:shadowx=2:shadowy=2:shadowcolor=black@0.5"
            else:
                # Above the captions' band at the bottom.
                top = f"h*0.72-{block}/2+{number * spacing}"
                style = f"box=1:boxcolor=black@0.55:boxborderw={max(2, size // 4)}"
            filters.append(
                f"drawtext=fontfile={escape_value(str(font.path))}:textfile={escape_value(str(path))}:"
                f"expansion=none:fontcolor=white:fontsize={size}:{style}:x=(w-text_w)/2:y={top}:"
                f"enable={escape_value(enable)}:alpha={escape_value(alpha)}"
            )
    if cues:
        assert font is not None
        path = workdir / "captions.ass"
        write_ass(cues, path, width=width, height=height, font_name=font.family, style=caption_style(draft))
        files.append(path)
        filters.append(f"ass=filename={escape_value(str(path))}:fontsdir={escape_value(str(font.path.parent))}")
    b.chains.append(f"{video}{','.join(filters)}[vtext]")
    return "[vtext]"


# -- sound ----------------------------------------------------------------------------------------------


def _mix(
    b: _Builder,
    draft: timeline.Draft,
    voice: str,
    segments: list[timeline.Segment],
    sources: Mapping[str, Source],
    music: Path | None,
    duration: float,
    layout: str,
) -> str:
    if not segments:
        return voice
    ducked: list[str] = []
    plain: list[str] = []
    thresholds: list[float] = []
    for index, segment in enumerate(segments):
        m = segment.m
        src = m.src
        title = m.title or "the music"
        if src is not None:
            source = sources.get(src)
            if source is None:
                raise GraphError(f'"{title}" is not on this server: upload it here before exporting')
            if not source.info.has_audio:
                raise GraphError(f'"{title}" has no sound')
            path, single_channel = source.path, source.info.mono
        elif music is not None:
            path, single_channel = music, True  # the bundled loop is mono
        else:
            raise GraphError("the background music is missing")
        start = timeline.number(m.start) / 1000
        if start >= duration:
            continue
        length = min(timeline.number(segment.d) / 1000, duration - start)
        offset = max(0.0, timeline.number(m.in_) / 1000)
        loop = bool(m.loop) or src is None
        number = b.add_input(["-stream_loop", "-1"] if loop else [], path)
        volume = max(0.0, min(2.0, timeline.number(m.volume, 1.0)))
        steps = [
            _audio_format(single_channel, layout),
            f"atrim=start={_seconds(offset)}:duration={_seconds(length)}", "asetpts=PTS-STARTPTS",
            f"volume={volume:.3f}",
        ]  # fmt: skip
        if m.role == "music" and length > 2:
            steps += ["afade=t=in:d=0.5", f"afade=t=out:st={_seconds(length - 1.0)}:d=1"]
        if start > 0:
            steps.append(f"adelay={round(start * 1000)}:all=1")
        tag = f"m{index}"
        b.chains.append(f"[{number}:a:0]{','.join(steps)}[{tag}]")
        # Background music ducks unless told otherwise; other audio only when asked.
        if m.duck if m.duck is not None else m.role == "music":
            ducked.append(f"[{tag}]")
            thresholds.append(timeline.number(m.duck_threshold_db, -30.0))
        else:
            plain.append(f"[{tag}]")
    if not ducked and not plain:
        return voice
    mix_inputs: list[str] = []
    if ducked:
        bus = ducked[0]
        if len(ducked) > 1:
            b.chains.append(f"{''.join(ducked)}amix=inputs={len(ducked)}:duration=longest:normalize=0[duckbus]")
            bus = "[duckbus]"
        b.chains.append(f"{voice}asplit=2[voicemix][voicekey]")
        threshold = max(1 / 1024, min(1.0, math.pow(10, min(thresholds) / 20)))
        # Downward compression of the music keyed by the voice; the threshold sits 13 dB under the measured
        # speech level and the release (half a second) holds the dip through the gaps between syllables, so
        # that, with this ratio, the music dips by about 12 dB while someone talks (measured on syllabic
        # speech: 11.9 dB, tests/test_export_sound.py; a steady voice dips it a little more).
        b.chains.append(
            f"{bus}[voicekey]sidechaincompress=threshold={threshold:.6f}:ratio={DUCK_RATIO:g}:"
            f"attack={DUCK_ATTACK_MS}:release={DUCK_RELEASE_MS}:makeup=1[ducked]"
        )
        mix_inputs = ["[voicemix]", "[ducked]", *plain]
    else:
        mix_inputs = [voice, *plain]
    # duration=first: the voice (the picture's own sound) sets the length; normalize=0 keeps each level as
    # set instead of dividing by the number of inputs.
    b.chains.append(
        f"{''.join(mix_inputs)}amix=inputs={len(mix_inputs)}:duration=first:dropout_transition=0:normalize=0[mixed]"
    )
    return "[mixed]"


def _fades(b: _Builder, draft: timeline.Draft, video: str, audio: str, duration: float) -> tuple[str, str]:
    fade_in = min(timeline.number(draft.m.fade_in_ms) / 1000, duration / 2)
    fade_out = min(timeline.number(draft.m.fade_out_ms) / 1000, duration / 2)
    video_steps: list[str] = []
    audio_steps: list[str] = []
    if fade_in > 0:
        video_steps.append(f"fade=t=in:st=0:d={_seconds(fade_in)}")
        audio_steps.append(f"afade=t=in:st=0:d={_seconds(fade_in)}")
    if fade_out > 0:
        start = _seconds(max(0.0, duration - fade_out))
        video_steps.append(f"fade=t=out:st={start}:d={_seconds(fade_out)}")
        audio_steps.append(f"afade=t=out:st={start}:d={_seconds(fade_out)}")
    if video_steps:
        b.chains.append(f"{video}{','.join(video_steps)}[vfaded]")
        b.chains.append(f"{audio}{','.join(audio_steps)}[afaded]")
        return "[vfaded]", "[afaded]"
    return video, audio
