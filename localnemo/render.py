"""Turning a draft into a video file for an export job.

``Renderer`` is the seam. ``FFmpegRenderer`` is the real one: it probes every input (refusing a damaged or
unsupported file with a plain reason), builds one filter graph for the whole draft (``localnemo.graph``),
measures the loudness of its mix in a quick audio-only run (``localnemo.loudness``), and runs ONE ffmpeg
process for the picture and the sound — one decode of each source, one H.264/AAC encode, the mix set to
−14 LUFS — reading its ``-progress`` output into the job's progress. Arguments go to ffmpeg as a list, never
through a shell; what ffmpeg prints on failure goes to the log, and the job gets a plain sentence.

``CopyRenderer`` is the placeholder it replaced: it copies the first video clip, which is enough for tests
of the export flow (job, progress, download URL) that do not look at the picture.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bot.nemo.timeline_model import TRACK_AUDIO, TRACK_VIDEO, Draft
from localnemo.fonts import find_font, needs_cjk_font
from localnemo.graph import SAMPLE_RATE, GraphError, RenderGraph, Source, build_graph, needs_font
from localnemo.loudness import SILENT, corrected, leveling_for, measure, needs_recheck
from localnemo.media import ffmpeg_exe, ffmpeg_major, probe
from localnemo.music import bundled_music, is_whole
from localnemo.processes import spawn

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".avi", ".webm", ".mkv"})
_CHUNK = 1 << 20


class RenderError(Exception):
    """A render that cannot be done; the message is plain language, shown as the job's error."""


@dataclass(frozen=True)
class RenderOutput:
    duration: float
    size: int


class Renderer(Protocol):
    async def render(
        self,
        draft: Draft,
        sources: Mapping[str, Path],
        out_path: Path,
        on_progress: Callable[[float], None],
    ) -> RenderOutput:
        """Write the draft's video to ``out_path``; ``sources`` maps each cdn_url to its local file;
        ``on_progress`` takes a fraction from 0 to 1."""
        ...


def draft_sources(draft: Draft) -> Iterator[tuple[int, str]]:
    """Each (track type, source URL) the draft's segments reference, in timeline order."""
    for track in draft.t:
        for segment in track.sg:
            if segment.m.src is not None:
                yield track.tt, segment.m.src


class CopyRenderer:
    """Placeholder renderer: the output is a copy of the first video clip on the timeline."""

    async def render(
        self,
        draft: Draft,
        sources: Mapping[str, Path],
        out_path: Path,
        on_progress: Callable[[float], None],
    ) -> RenderOutput:
        source: Path | None = None
        for track_type, url in draft_sources(draft):
            path = sources.get(url)
            if track_type == TRACK_VIDEO and path is not None and path.suffix.lower() in VIDEO_EXTENSIONS:
                source = path
                break
        if source is None:
            raise RenderError("nothing to render: the timeline has no video clips uploaded to this server")
        log.info("localnemo.render.copy source=%s out=%s", source.name, out_path.name)
        partial = out_path.parent / f".{out_path.stem}.{secrets.token_hex(4)}.partial.mp4"
        try:
            await asyncio.to_thread(_copy_with_progress, source, partial, on_progress)
            await asyncio.to_thread(partial.replace, out_path)
        finally:
            await asyncio.to_thread(partial.unlink, missing_ok=True)
        info = await probe(out_path)
        size = (await asyncio.to_thread(out_path.stat)).st_size
        return RenderOutput(duration=info.duration if info and info.duration else 0.0, size=size)


def _copy_with_progress(source: Path, target: Path, on_progress: Callable[[float], None]) -> None:
    # Runs in a worker thread; on_progress only stores a number, which is safe from here.
    total = source.stat().st_size or 1
    done = 0
    target.parent.mkdir(parents=True, exist_ok=True)
    with source.open("rb") as reader, target.open("wb") as writer:
        while chunk := reader.read(_CHUNK):
            writer.write(chunk)
            done += len(chunk)
            on_progress(min(1.0, done / total))
    on_progress(1.0)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers narrow), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def thread_options(cores: int) -> tuple[list[str], list[str], list[str]]:
    """FFmpeg's thread settings for one render on ``cores`` cores, chosen rather than left to each build's
    defaults: (global options, options of each input, options of the output).

    - decoding: frame threads on every core (``-threads`` before each ``-i``);
    - the filter graph: ``-filter_complex_threads`` (and ``-filter_threads``) on every core. Since FFmpeg 7
      a graph runs in a thread of its own, beside the decoders and the encoder; this sets how many threads
      its slice-threaded filters (scaling, format conversion, blur, overlay) use within it;
    - x264: 1.5 threads a core (x264's own rule, made explicit): frame threads keep both cores busy while
      one frame waits for its reference, and lookahead threads come from x264 as a share of them.

    Measured on a 2-core machine (shared, so wall times were noisy) with a 98-piece graph of a 10-minute
    1080p30 input: 173 s of CPU with these settings against 167 s with FFmpeg 9's defaults, which they
    mostly pin (x264's and the graph's defaults are the same; decoding gets N threads rather than N + 1).
    They keep a render from depending on how another build or version counts cores.
    """
    n = str(cores)
    return (["-filter_complex_threads", n, "-filter_threads", n], ["-threads", n],
            ["-threads", str(max(1, cores * 3 // 2))])


@dataclass(frozen=True)
class RenderSettings:
    """How FFmpegRenderer encodes: x264 preset and CRF, and the output size when the draft names none."""

    x264_preset: str = "veryfast"
    x264_crf: int = 23
    default_resolution: str = "1080p"
    audio_bitrate: str = "160k"
    font_file: str | None = None
    # Cores one render may use (FFmpeg's thread settings follow it); None: every core this process may use.
    cores: int | None = None


# Graph descriptions longer than this are handed to ffmpeg in a file (Linux caps one argument at 128 kB).
_MAX_GRAPH_ARGUMENT = 100_000
_STDERR_KEEP = 8000


class FFmpegRenderer:
    """Renders a draft with one ffmpeg run. ``assets`` is where the bundled music loop is kept."""

    def __init__(self, settings: RenderSettings, assets: Path, music_cache: Path | None = None) -> None:
        self.settings = settings
        self.assets = assets
        self.music_cache = music_cache
        self._music: asyncio.Task[Path] | None = None

    async def on_startup(self, _app: object) -> None:
        """Have the bundled music loop ready before the first export asks for it (in the background)."""
        self._music = asyncio.create_task(bundled_music(self.assets, self.music_cache))

    async def on_cleanup(self, _app: object) -> None:
        if self._music is not None and not self._music.done():
            self._music.cancel()
        if self._music is not None:
            with contextlib.suppress(BaseException):
                await self._music

    async def _bundled_music(self) -> Path:
        task = self._music
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            task = self._music = asyncio.create_task(bundled_music(self.assets, self.music_cache))
        elif task.done() and not await asyncio.to_thread(is_whole, task.result()):
            # Made at start-up, and since removed (a cache cleared) or cut short: made again.
            task = self._music = asyncio.create_task(bundled_music(self.assets, self.music_cache))
        # Shielded: a cancelled export does not take the loop away from the next one.
        return await asyncio.shield(task)

    async def render(
        self,
        draft: Draft,
        sources: Mapping[str, Path],
        out_path: Path,
        on_progress: Callable[[float], None],
    ) -> RenderOutput:
        # Each attempt its own names: an FFmpeg of an earlier, killed attempt never writes what this one renames.
        attempt = secrets.token_hex(4)
        workdir = out_path.parent / f".{out_path.stem}.{attempt}.parts"
        partial = out_path.parent / f".{out_path.stem}.{attempt}.partial.mp4"
        await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
        try:
            plan = await self._plan(draft, sources, workdir)
            started = time.monotonic()
            await self._run(plan, workdir, partial, on_progress)
            await asyncio.to_thread(partial.replace, out_path)
            elapsed = time.monotonic() - started
        finally:
            await asyncio.to_thread(shutil.rmtree, workdir, True)
            await asyncio.to_thread(partial.unlink, missing_ok=True)
        info = await probe(out_path)
        size = (await asyncio.to_thread(out_path.stat)).st_size
        duration = info.duration if info is not None and info.duration else plan.duration
        log.info(
            "localnemo.render.done out=%s size=%s duration=%.2f seconds=%.2f %sx%s",
            out_path.name, size, duration, elapsed, plan.width, plan.height,
        )  # fmt: skip
        on_progress(1.0)
        return RenderOutput(duration=duration, size=size)

    async def _plan(self, draft: Draft, sources: Mapping[str, Path], workdir: Path) -> RenderGraph:
        probed: dict[str, Source] = {}
        titles = _titles(draft)
        for track_type, url in draft_sources(draft):
            if url in probed or track_type not in (0, 1):
                continue
            path = sources.get(url)
            title = titles.get(url, "a clip")
            if path is None:
                raise RenderError(f'"{title}" is not on this server: upload it here before exporting')
            info = await probe(path)
            if info is None:
                raise RenderError(
                    f'could not read "{title}": the file is damaged or not a format FFmpeg can read'
                )
            probed[url] = Source(path, info, title)
        music = None
        if _needs_bundled_music(draft):
            try:
                music = await self._bundled_music()
            except RuntimeError as exc:
                raise RenderError(f"render failed: {exc}") from None
        text = needs_font(draft)
        font = None
        if text is not None:
            font = await asyncio.to_thread(find_font, self.settings.font_file, cjk=needs_cjk_font(text))
        try:
            return await asyncio.to_thread(
                build_graph, draft, probed, default_resolution=self.settings.default_resolution, workdir=workdir,
                music=music, font=font,
            )  # fmt: skip
        except GraphError as exc:
            raise RenderError(str(exc)) from None

    def _graph_arguments(self, graph: str, workdir: Path, name: str) -> list[str]:
        if len(graph) <= _MAX_GRAPH_ARGUMENT:
            return ["-filter_complex", graph]
        script = workdir / name
        script.write_text(graph, encoding="utf-8")
        # FFmpeg 7 reads any option's value from a file when its name starts with "/"; older builds
        # only know -filter_complex_script.
        if ffmpeg_major() >= 7 or ffmpeg_major() == 0:
            return ["-/filter_complex", str(script)]
        return ["-filter_complex_script", str(script)]

    def _measuring_command(self, plan: RenderGraph, workdir: Path, level: str = "") -> list[str]:
        command = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "info"]
        for options in plan.measuring_inputs:
            command += options
        # The null muxer writes nothing; the name only marks the process as this render's (as the render's is).
        return [*command, *self._graph_arguments(plan.measuring(level), workdir, "measure.txt"),
                "-map", "[measured]", "-f", "null", str(workdir / "measure.null")]  # fmt: skip

    def _command(self, plan: RenderGraph, graph: str, workdir: Path, target: Path) -> list[str]:
        graph_threads, input_threads, output_threads = thread_options(self.settings.cores or usable_cores())
        command = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", "-loglevel", "error", "-nostats",
                   "-progress", "pipe:1", *graph_threads]  # fmt: skip
        for options in plan.inputs:
            command += [*input_threads, *options]
        command += self._graph_arguments(graph, workdir, "graph.txt")
        command += [
            "-map", "[vout]", "-map", "[aout]",
            "-c:v", "libx264", "-preset", self.settings.x264_preset, "-crf", str(self.settings.x264_crf),
            "-pix_fmt", "yuv420p", *output_threads,
            "-c:a", "aac", "-b:a", self.settings.audio_bitrate, "-ar", str(SAMPLE_RATE),
            "-ac", "1" if plan.mono else "2",
            "-movflags", "+faststart", "-f", "mp4", str(target),
        ]  # fmt: skip
        return command

    async def _run(self, plan: RenderGraph, workdir: Path, target: Path, on_progress: Callable[[float], None]) -> None:
        if plan.measuring_inputs:
            measured = await measure(await asyncio.to_thread(self._measuring_command, plan, workdir))
            level = leveling_for(measured)
            if needs_recheck(measured, level):
                filters = level.filters(SAMPLE_RATE)
                again = await measure(await asyncio.to_thread(self._measuring_command, plan, workdir, filters))
                level = corrected(level, again)
        else:
            level = SILENT  # no clip and no music has sound: nothing to measure or to set
        command = await asyncio.to_thread(
            self._command, plan, plan.with_level(level.filters(SAMPLE_RATE)), workdir, target
        )
        log.info(
            "localnemo.render.start inputs=%s duration=%.2f size=%sx%s fps=%s gain_db=%.2f limiter=%s mono=%s",
            len(plan.inputs), plan.duration, plan.width, plan.height, plan.fps, level.gain_db, level.limit, plan.mono,
        )  # fmt: skip
        proc = await spawn(
            *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        assert proc.stdout is not None
        assert proc.stderr is not None
        stderr_tail = bytearray()

        async def read_stderr(stream: asyncio.StreamReader) -> None:
            while chunk := await stream.read(4096):
                stderr_tail.extend(chunk)
                del stderr_tail[:-_STDERR_KEEP]

        async def read_progress(stream: asyncio.StreamReader) -> None:
            total = max(plan.duration, 1e-3)
            while line := await stream.readline():
                key, _, value = line.decode("ascii", errors="replace").strip().partition("=")
                # out_time_us is in microseconds (so is out_time_ms, despite its name).
                if key == "out_time_us" and value.lstrip("-").isdigit():
                    on_progress(min(0.99, max(0.0, int(value) / 1e6 / total)))

        readers = asyncio.gather(read_stderr(proc.stderr), read_progress(proc.stdout))
        try:
            await readers
            code = await proc.wait()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            readers.cancel()
            with contextlib.suppress(BaseException):
                await readers
            await proc.wait()
            raise
        if code != 0:
            log.error(
                "localnemo.render.ffmpeg_failed rc=%s stderr=%s",
                code, stderr_tail.decode("utf-8", errors="replace").strip()[-2000:],
            )  # fmt: skip
            raise RenderError("render failed: FFmpeg could not make the video from this timeline")


def _titles(draft: Draft) -> dict[str, str]:
    titles: dict[str, str] = {}
    for track in draft.t:
        for segment in track.sg:
            if segment.m.src is not None:
                titles.setdefault(segment.m.src, segment.m.title or "a clip")
    return titles


def _needs_bundled_music(draft: Draft) -> bool:
    """An audio segment without a source plays the bundled music loop."""
    return any(segment.m.src is None for track in draft.t if track.tt == TRACK_AUDIO for segment in track.sg)
