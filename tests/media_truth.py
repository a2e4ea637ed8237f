"""A screen recording whose truth is known, and the measures of an edit of it that a video editor would take.

``plan_recording`` lays out the truth (pure, deterministic for a seed): sentences of speech-like sound with
pauses of known length between them (some short enough to keep, one long one holding a keyboard click), and
sync markers inside the sentences — one white frame with a beep starting on the same frame. ``make_recording``
writes it with FFmpeg: a dark "code editor" desktop with a moving cursor, and along the bottom a strip of
black/white cells spelling each frame's own number in binary (every bit beside its complement, so a misread
cell is seen, not guessed), so that any frame of an edited output can be mapped back to its source frame.
The sound is computed here (harmonic tone bursts per word with syllable-rate amplitude modulation and a
little breath noise over a faint room noise) because FFmpeg's expression sources cannot place thousands of
word edges exactly.

``measure`` decodes an output (small grey frames through a pipe, their times from ``showinfo``) into the
source frames it kept and reports: jump cuts, speech lost, pause time left, pieces without speech, frame
timing, the A/V offset at each marker found (flash frame time against the beep's onset in the sound), size,
and loudness and true peak (FFmpeg's ``ebur128=peak=true``).
"""

from __future__ import annotations

import array
import itertools
import math
import random
import re
import subprocess
import wave
from dataclasses import dataclass, field
from pathlib import Path

from localnemo.media import ffmpeg_exe

RATE = 48000
BITS = 16  # frame numbers up to 65535: 36 minutes at 30 fps
STRIP = 0.1  # the bottom tenth of the picture holds the frame number
BEEP_HZ = 3500.0  # above every harmonic of the "voice", so a high-pass hears only beeps (and the click)
BEEP_SECONDS = 0.06
CLICK_SECONDS = 0.03
# The picture is decoded this small (grey): 8 pixels per strip cell across.
DECODE_WIDTH, DECODE_HEIGHT = 256, 144


@dataclass(frozen=True)
class Truth:
    """What the recording holds. Times in seconds of the source; markers as source frame numbers."""

    seconds: float
    width: int
    height: int
    fps: int
    sentences: tuple[tuple[float, float], ...]
    markers: tuple[int, ...]
    click: tuple[float, float]
    seed: int

    @property
    def frames(self) -> int:
        return round(self.seconds * self.fps)

    @property
    def pauses(self) -> list[tuple[float, float]]:
        """Everything that is not a sentence: the silence before the first, between them, after the last."""
        edges = [0.0, *(t for sentence in self.sentences for t in sentence), self.seconds]
        return [(edges[i], edges[i + 1]) for i in range(0, len(edges), 2) if edges[i + 1] > edges[i]]

    @property
    def speech_seconds(self) -> float:
        return sum(b - a for a, b in self.sentences)

    @property
    def name(self) -> str:
        size = f"{self.width}x{self.height}"
        return f"truth-{self.seconds:g}s-{size}-{self.fps}fps-{len(self.sentences)}s-seed{self.seed}"


def plan_recording(
    seconds: float = 93.0,
    *,
    width: int = 1920,
    height: int = 1080,
    fps: int = 30,
    sentences: int | None = None,
    seed: int = 1,
) -> Truth:
    """The layout of a recording: ``sentences`` (default: 19 per 93 s, at least 3) with pauses between them.
    The first pause is short (0.35 s, which an editor should keep), the second is long (2.6 s) with a click
    in its middle, the rest are drawn short, medium or long; the sentences share what is left."""
    rng = random.Random(seed)
    count = sentences if sentences is not None else max(3, round(seconds * 19 / 93))
    lead, tail = 0.6, 0.9
    gaps = [0.35, 2.6][: count - 1]
    while len(gaps) < count - 1:
        kind = rng.random()
        gaps.append(rng.uniform(0.25, 0.45) if kind < 0.25 else rng.uniform(0.6, 1.4) if kind < 0.7 else
                    rng.uniform(1.6, 3.2))  # fmt: skip
    speech = seconds - lead - tail - sum(gaps)
    if speech < 1.2 * count:
        raise ValueError(f"{seconds} s is too short for {count} sentences")
    weights = [rng.uniform(0.6, 1.4) for _ in range(count)]
    spans: list[tuple[float, float]] = []
    position = lead
    for index, weight in enumerate(weights):
        length = speech * weight / sum(weights)
        spans.append((round(position, 3), round(position + length, 3)))
        position += length + (gaps[index] if index < len(gaps) else 0)
    markers = []
    for start, end in spans:
        # Inside the sentence, clear of its edges (an editor may trim a little of a sentence's margin).
        at = start + 0.3 + rng.uniform(0.0, 1.0) * (end - start - 0.6)
        markers.append(math.ceil(at * fps))
    click_pause = (spans[1][1], spans[2][0]) if count >= 3 else (spans[0][1], spans[1][0])
    middle = round((click_pause[0] + click_pause[1]) / 2, 3)
    return Truth(
        seconds=seconds, width=width, height=height, fps=fps, sentences=tuple(spans), markers=tuple(markers),
        click=(middle, round(middle + CLICK_SECONDS, 3)), seed=seed,
    )  # fmt: skip


# -- making it ------------------------------------------------------------------------------------------------


def _voice_table(size: int = 2048) -> list[float]:
    """One period of a buzzy, voice-like wave (harmonics falling off as 1/k^1.2, up to the 10th)."""
    values = [sum(math.sin(2 * math.pi * k * i / size + 0.7 * k) / k**1.2 for k in range(1, 11)) for i in range(size)]
    peak = max(abs(v) for v in values)
    return [v / peak for v in values]


def make_audio(truth: Truth) -> array.array[int]:
    """The sound, mono 16-bit at ``RATE``."""
    rng = random.Random(truth.seed + 1)
    noise = [rng.gauss(0.0, 1.0) for _ in range(1 << 16)]
    mask = (1 << 16) - 1
    total = round(truth.seconds * RATE)
    samples = [0.0015 * noise[(i * 3) & mask] for i in range(total)]  # a quiet room
    table = _voice_table()
    size = len(table)
    for start, end in truth.sentences:
        words: list[tuple[float, float]] = []
        position = start
        while position < end:
            length = rng.uniform(0.18, 0.55)
            if end - (position + length) < 0.25:  # no crumb of a word at the end
                length = end - position
            words.append((position, position + length))
            position += length + rng.uniform(0.04, 0.16)
        for w0, w1 in words:
            f0, glide, syllables = rng.uniform(105, 175), rng.uniform(-0.25, 0.15), rng.uniform(3.5, 6.0)
            first, last = round(w0 * RATE), min(total, round(w1 * RATE))
            length = (last - first) / RATE
            phase = rng.random()
            for i in range(first, last):
                t = (i - first) / RATE
                ramp = min(1.0, t / 0.012, (length - t) / 0.012)
                envelope = ramp * (0.25 + 0.75 * (0.5 - 0.5 * math.cos(2 * math.pi * syllables * t)))
                phase += f0 * (1 + glide * t / length) / RATE
                samples[i] += envelope * (0.26 * table[int(phase * size) % size] + 0.02 * noise[(i * 7) & mask])
    for frame in truth.markers:
        first = round(frame / truth.fps * RATE)
        for i in range(first, min(total, first + round(BEEP_SECONDS * RATE))):
            samples[i] += 0.4 * math.sin(2 * math.pi * BEEP_HZ * (i - first) / RATE)
    first = round(truth.click[0] * RATE)
    for i in range(first, min(total, first + round(CLICK_SECONDS * RATE))):
        samples[i] += 0.15 * math.exp(-(i - first) / (0.006 * RATE)) * noise[(i * 11) & mask]
    return array.array("h", (max(-32767, min(32767, round(v * 32767))) for v in samples))


def strip_cells(width: int) -> tuple[int, int]:
    """(left edge, cell width) of the frame-number strip: 2 cells per bit, across the picture."""
    cell = width // (2 * BITS)
    return (width - 2 * BITS * cell) // 2, cell


def picture_filter(truth: Truth) -> str:
    w, h = truth.width, truth.height
    top = h - round(h * STRIP)
    flashes = "+".join(f"eq(n\\,{k})" for k in truth.markers) or "0"
    parts = [
        f"color=c=0x1e1f22:s={w}x{h}:r={truth.fps}:d={truth.seconds}",
        f"drawbox=x=0:y=0:w=iw:h={h // 24}:color=0x2b2d30:t=fill",
        f"drawbox=x=0:y={h // 24}:w={w // 6}:h={top - h // 24}:color=0x26282b:t=fill",
    ]
    for line in range(12):  # code on the screen
        parts.append(
            f"drawbox=x={w // 5 + (line % 3) * w // 40}:y={h // 10 + line * h // 18}"
            f":w={w // 4 + (line * 37) % (w // 3)}:h={max(2, h // 60)}:color=0x6a8759:t=fill"
        )
    parts.append(
        f"drawbox=x={w // 5}+mod(t*{w // 12}\\,{w // 2}):y={h // 3}+{h // 10}*sin(t/3):w={max(2, w // 140)}"
        f":h={max(3, h // 50)}:color=white:t=fill"
    )
    parts.append(f"drawbox=x=0:y=0:w=iw:h=ih:color=white:t=fill:enable='{flashes}'")
    parts.append(f"drawbox=x=0:y={top}:w=iw:h=ih-{top}:color=black:t=fill")
    left, cell = strip_cells(w)
    for bit in range(BITS):
        on = f"mod(floor(n/{2**bit})\\,2)"
        for position, enable in ((2 * bit, on), (2 * bit + 1, f"1-{on}")):
            parts.append(
                f"drawbox=x={left + position * cell}:y={top}:w={cell}:h=ih-{top}:color=white:t=fill:enable='{enable}'"
            )
    return ",".join(parts)


def make_recording(path: Path, truth: Truth) -> Path:
    """Write the recording (H.264 CRF 18 + AAC in MP4) to ``path``."""
    if truth.frames >= 2**BITS:
        raise ValueError("too many frames to number")
    sound = path.with_suffix(".wav")
    with wave.open(str(sound), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(make_audio(truth).tobytes())
    try:
        subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
             "-f", "lavfi", "-i", picture_filter(truth), "-i", str(sound),
             "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "veryfast", "-crf", "18",
             "-g", str(2 * truth.fps), "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "192k",
             "-t", f"{truth.seconds}", "-movflags", "+faststart", str(path)],
            check=True,
        )  # fmt: skip
    finally:
        sound.unlink(missing_ok=True)
    return path


# -- measuring ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    time: float  # seconds from the start of the output
    source: int | None  # the source frame it shows; None when the strip cannot be read
    bright: float  # mean grey level of the picture above the strip


def read_strip(pixels: bytes, width: int = DECODE_WIDTH, height: int = DECODE_HEIGHT) -> int | None:
    """The frame number in a decoded grey frame, None unless every bit reads cleanly against its complement."""
    left, cell = strip_cells(width)
    rows = [height - round(height * STRIP * f) for f in (0.3, 0.5, 0.7)]

    def level(position: int) -> float:
        x0 = left + position * cell + cell // 4
        values = [pixels[row * width + x] for row in rows for x in range(x0, x0 + max(1, cell // 2))]
        return sum(values) / len(values)

    number = 0
    for bit in range(BITS):
        on, off = level(2 * bit), level(2 * bit + 1)
        if abs(on - off) < 80:
            return None
        number |= (on > off) << bit
    return number


_PTS_RE = re.compile(r"\bn:\s*\d+\s.*?\bpts_time:\s*(-?[\d.]+)")


def decode_frames(path: Path) -> list[Frame]:
    """Every video frame of ``path`` as decoded (no frame made up or dropped), with its time and source frame."""
    process = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostats", "-loglevel", "info", "-i", str(path), "-map", "0:v:0",
         "-vf", f"scale={DECODE_WIDTH}:{DECODE_HEIGHT}:flags=area,format=gray,showinfo",
         "-fps_mode", "passthrough", "-f", "rawvideo", "-"],
        capture_output=True, check=True,
    )  # fmt: skip
    times = [float(m.group(1)) for m in _PTS_RE.finditer(process.stderr.decode("utf-8", "replace"))]
    size = DECODE_WIDTH * DECODE_HEIGHT
    above = (DECODE_HEIGHT - round(DECODE_HEIGHT * STRIP) - 2) * DECODE_WIDTH
    raw = process.stdout
    count = len(raw) // size
    if len(times) != count:
        raise RuntimeError(f"{count} frames decoded but {len(times)} times read")
    frames = []
    for index in range(count):
        pixels = raw[index * size : (index + 1) * size]
        frames.append(Frame(times[index], read_strip(pixels), sum(pixels[:above]) / above))
    return frames


def decode_sound(path: Path, filters: str = "") -> array.array[int]:
    """The first audio stream, mono at ``RATE``, padded or trimmed so that sample 0 is at the output's time 0."""
    chain = "aresample=first_pts=0" + (f",{filters}" if filters else "")
    command = [
        ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:a:0", "-af", chain, "-ac", "1", "-ar", str(RATE),
        "-f", "s16le", "-",
    ]  # fmt: skip
    samples = array.array("h")
    samples.frombytes(subprocess.run(command, capture_output=True, check=True).stdout)
    return samples


def beep_onsets(path: Path) -> list[float]:
    """Times where a beep (or anything as sharp and high) starts: 1 ms windows of the high-passed sound."""
    samples = decode_sound(path, "highpass=f=2500,highpass=f=2500,highpass=f=2500")
    window = RATE // 1000
    onsets: list[float] = []
    loud = False
    for start in range(0, len(samples) - window, window):
        level = math.sqrt(sum(x * x for x in samples[start : start + window]) / window) / 32768
        if not loud and level > 0.08:
            onsets.append(start / RATE)
            loud = True
        elif loud and level < 0.02:
            loud = False
    return onsets


def kept_ranges(frames: list[Frame]) -> list[tuple[int, int]]:
    """The source frames shown, as runs [first, last + 1) in output order; a new run at every jump."""
    ranges: list[list[int]] = []
    for frame in frames:
        if frame.source is None:
            continue
        if ranges and frame.source == ranges[-1][1]:
            ranges[-1][1] += 1
        elif not ranges or frame.source != ranges[-1][1] - 1:  # a repeated frame is timing, not a cut
            ranges.append([frame.source, frame.source + 1])
    return [(a, b) for a, b in ranges]


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def _union(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


@dataclass(frozen=True)
class Marker:
    source_frame: int | None  # the source frame of the flash, as read from its strip
    flash: float  # output time of the white frame
    beep: float | None  # output time of the nearest beep onset, None when none is near

    @property
    def offset_ms(self) -> float | None:
        """Sound minus picture: positive when the beep comes after its flash."""
        return None if self.beep is None else (self.beep - self.flash) * 1000


@dataclass(frozen=True)
class Measures:
    size_bytes: int
    duration: float  # seconds of picture (frames × their step)
    fps: float  # from the median step between frame times
    frames: int
    irregular_steps: int  # steps between frame times off the median by more than a quarter of it
    repeated_frames: int  # a source frame shown again right after itself
    unreadable_frames: int  # frames whose number could not be read
    ranges: list[tuple[int, int]]  # kept source frames, runs [first, last + 1) in output order
    speech_lost_ms: float
    pause_left_s: float
    pieces_without_speech: int
    markers: list[Marker]
    markers_expected: int  # marker frames among the kept source frames
    loudness_lufs: float
    true_peak_dbtp: float
    truth: Truth = field(repr=False)

    @property
    def jump_cuts(self) -> int:
        return max(0, len(self.ranges) - 1)

    @property
    def offsets_ms(self) -> list[float]:
        return [m.offset_ms for m in self.markers if m.offset_ms is not None]

    @property
    def worst_offset_frames(self) -> float | None:
        """The largest A/V offset at a marker, in frames; None when no marker has both flash and beep."""
        offsets = self.offsets_ms
        return max(abs(o) for o in offsets) * self.truth.fps / 1000 if offsets else None


def edit_figures(ranges: list[tuple[int, int]], truth: Truth) -> tuple[float, float, int]:
    """(speech lost in ms, pause time left in s, pieces without speech) for kept source frame runs."""
    kept = _union([(a / truth.fps, b / truth.fps) for a, b in ranges])
    lost = sum((b - a) - sum(_overlap((a, b), span) for span in kept) for a, b in truth.sentences)
    left = sum(_overlap(pause, span) for pause in truth.pauses for span in kept)
    empty = sum(
        1 for a, b in ranges if not any(_overlap((a / truth.fps, b / truth.fps), s) > 0 for s in truth.sentences)
    )
    return lost * 1000, left, empty


def find_markers(frames: list[Frame], onsets: list[float], fps: float) -> list[Marker]:
    """White frames (the first of a run) and, for each, the beep onset nearest to it within a third of a second."""
    markers = []
    for index, frame in enumerate(frames):
        if frame.bright > 200 and (index == 0 or frames[index - 1].bright <= 200):
            near = [t for t in onsets if abs(t - frame.time) <= 10 / fps]
            beep = min(near, key=lambda t: abs(t - frame.time)) if near else None
            markers.append(Marker(frame.source, frame.time, beep))
    return markers


_LOUDNESS_RE = re.compile(r"Integrated loudness:\s*I:\s*(-?[\d.]+|-inf) LUFS", re.S)
_PEAK_RE = re.compile(r"True peak:\s*Peak:\s*(-?[\d.]+|-inf) dBFS", re.S)


def loudness(path: Path) -> tuple[float, float]:
    """(integrated loudness in LUFS, true peak in dBTP) as FFmpeg's ``ebur128=peak=true`` measures them; a mono
    sound as it plays on two speakers (``dualmono``), the way a platform turning it into stereo hears it."""
    mono = "mono" in subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True, check=False
    ).stderr.split("Audio:", 1)[-1].split("\n", 1)[0]
    report = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostats", "-i", str(path), "-map", "0:a:0",
         "-af", f"ebur128=peak=true{':dualmono=true' if mono else ''}", "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    ).stderr  # fmt: skip
    summary = report.rsplit("Summary:", 1)[-1]
    integrated, peak = _LOUDNESS_RE.search(summary), _PEAK_RE.search(summary)
    if integrated is None or peak is None:
        raise RuntimeError("ebur128 printed no summary")
    return float(integrated.group(1)), float(peak.group(1))


def measure(path: Path, truth: Truth) -> Measures:
    frames = decode_frames(path)
    if not frames:
        raise RuntimeError(f"{path} has no video frames")
    steps = sorted(b.time - a.time for a, b in itertools.pairwise(frames))
    step = steps[len(steps) // 2] if steps else 1 / truth.fps
    irregular = sum(1 for s in steps if abs(s - step) > step / 4)
    repeated = sum(1 for a, b in itertools.pairwise(frames) if a.source is not None and a.source == b.source)
    ranges = kept_ranges(frames)
    lost, left, empty = edit_figures(ranges, truth)
    kept_frames = {k for a, b in ranges for k in range(a, b)}
    integrated, peak = loudness(path)
    return Measures(
        size_bytes=path.stat().st_size, duration=len(frames) * step, fps=1 / step, frames=len(frames),
        irregular_steps=irregular, repeated_frames=repeated,
        unreadable_frames=sum(1 for f in frames if f.source is None), ranges=ranges, speech_lost_ms=lost,
        pause_left_s=left, pieces_without_speech=empty, markers=find_markers(frames, beep_onsets(path), 1 / step),
        markers_expected=sum(1 for k in truth.markers if k in kept_frames), loudness_lufs=integrated,
        true_peak_dbtp=peak, truth=truth,
    )  # fmt: skip
