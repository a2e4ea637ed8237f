"""Edit quality as a video editor would judge it: nemobot's "cut the pauses" beside auto-editor on one recording.

The recording is the known-truth one of ``tests/media_truth.py`` (made once and kept in the work folder): a
93-second 1080p30 screen recording with 19 spoken sentences, pauses of known length between them (a keyboard
click inside one long pause), and a sync marker in every sentence (one white frame with a beep starting on the
same frame); every frame carries its own number, so each output frame is traced back to its source frame.

It is edited by
  * ``nemobot edit --local INPUT -p "cut the pauses" -o OUT`` as ``bench/edit.py`` runs it (a fresh database
    and data folder), with localnemo's default encoder settings;
  * the same at auto-editor's x264 settings (the preset is the only difference, see below);
  * ``auto-editor INPUT -o OUT`` (Debian's package, 22w52a; ``apt-get install auto-editor``) with its default
    cutting rules and ``-c:v libx264 -b:v unset -c:a aac -b:a 160k``: its ``-b:v 10m`` default is unset so that
    x264 runs at CRF 23 as localnemo does. auto-editor 22w52a has no option for the x264 preset — its encoder
    command takes only a codec, a bitrate and ``-qscale:v``, and ``--extras`` reaches only the final mux, where
    the video is copied — so it encodes at FFmpeg's default, ``medium``. The CPU target compares it with
    nemobot at ``medium`` too.

Each output is measured with ``tests/media_truth.py`` (speech lost, pause time left, jump cuts, pieces without
speech, A/V offset at every marker, frame timing, size, loudness and true peak), and each process tree's wall
and CPU time is taken (``resource.getrusage(RUSAGE_CHILDREN)`` around it). Prints the truth and the table with
the targets: speech lost 0 ms; no more jump cuts than auto-editor; A/V within 1 frame at every marker; CPU no
more than auto-editor's at the same x264 settings.

    .venv/bin/python bench/quality.py [--workdir DIR] [--seconds 93] [--size 1920x1080]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from localnemo.config import LocalNemoConfig
from localnemo.media import ffmpeg_exe
from tests.media_truth import Measures, Truth, make_recording, measure, plan_recording

PROMPT = "cut the pauses"
AUTO_EDITOR_PRESET = "medium"  # FFmpeg's libx264 default, which auto-editor 22w52a cannot change
# Where a system FFmpeg (and the ffprobe auto-editor also needs) may be when it is kept off PATH.
FFMPEG_PLACES = ("/opt/auto-editor-ffmpeg/ffmpeg",)


@dataclass
class Run:
    name: str
    preset: str
    crf: int
    wall: float
    cpu: float
    measures: Measures
    x264: str


def timed(command: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> tuple[float, float]:
    """Run a process to its end; its wall time and the CPU time of its whole tree (every waited-for child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        sys.stderr.write(result.stderr.decode("utf-8", "replace")[-3000:])
        raise SystemExit(f"{command[0]} {command[1] if len(command) > 1 else ''} failed: {result.returncode}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def x264_settings(path: Path) -> str:
    """The encoder settings x264 wrote into the stream: CRF and the options that tell its preset."""
    head = path.read_bytes()[:4_000_000]
    found = re.search(rb"x264 - core (\d+).*?options: ([^\x00]*)", head)
    if found is None:
        return "?"
    options = dict(part.split("=", 1) for part in found.group(2).decode("ascii", "replace").split() if "=" in part)
    keys = ("crf", "subme", "ref", "me", "bframes")
    return f"core {found.group(1).decode()} " + " ".join(f"{k}={options.get(k, '?')}" for k in keys)


def nemobot_run(source: Path, workdir: Path, truth: Truth, preset: str, crf: int, name: str) -> Run:
    run_dir = Path(tempfile.mkdtemp(prefix="nemobot-", dir=workdir))
    output = run_dir / "out.mp4"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("NEMO", "LOCALNEMO_"))},
        "NEMOBOT_DB": str(run_dir / "nemobot.sqlite3"),
        "NEMOBOT_LOG_LEVEL": "WARNING",
        "LOCALNEMO_X264_PRESET": preset,
        "LOCALNEMO_X264_CRF": str(crf),
    }
    command = [sys.executable, "-m", "nemobot", "edit", "--local", str(source), "-p", PROMPT, "-o", str(output)]
    print(f"running {name} ...", flush=True)
    wall, cpu = timed(command, cwd=run_dir, env=env)
    run = Run(name, preset, crf, wall, cpu, measure(output, truth), x264_settings(output))
    shutil.rmtree(run_dir, ignore_errors=True)
    return run


def auto_editor_run(source: Path, workdir: Path, truth: Truth, program: str, ffmpeg: str | None, crf: int) -> Run:
    run_dir = Path(tempfile.mkdtemp(prefix="auto-editor-", dir=workdir))
    output = run_dir / "out.mp4"
    command = [
        program, str(source), "-o", str(output), "--no-open", "--progress", "none", "--temp-dir", str(run_dir / "tmp"),
        "-c:v", "libx264", "-b:v", "unset", "-c:a", "aac", "-b:a", "160k",
    ]  # fmt: skip
    if ffmpeg is not None:
        command += ["--ffmpeg-location", ffmpeg]
    print("running auto-editor ...", flush=True)
    wall, cpu = timed(command, cwd=run_dir)
    run = Run("auto-editor", AUTO_EDITOR_PRESET, crf, wall, cpu, measure(output, truth), x264_settings(output))
    shutil.rmtree(run_dir, ignore_errors=True)
    return run


def print_truth(truth: Truth, source: Path) -> None:
    pauses = truth.pauses
    inner = pauses[1:-1]
    short = sum(1 for a, b in inner if b - a < 0.5)
    click_pause = next(b - a for a, b in inner if a < truth.click[0] < b)
    print(f"\nrecording: {source.name}, {truth.seconds:g} s {truth.width}x{truth.height} {truth.fps} fps, "
          f"{source.stat().st_size / 1e6:.1f} MB")  # fmt: skip
    print(f"truth: {len(truth.sentences)} sentences, {truth.speech_seconds:.2f} s of speech; "
          f"{truth.seconds - truth.speech_seconds:.2f} s without speech: {pauses[0][1] - pauses[0][0]:.2f} s before "
          f"the first sentence, {pauses[-1][1] - pauses[-1][0]:.2f} s after the last, and {len(inner)} pauses "
          f"between them ({sum(b - a for a, b in inner):.2f} s)")  # fmt: skip
    print("  pauses (s): " + " ".join(f"{b - a:.2f}" for a, b in inner))
    print(f"  {short} pauses shorter than 0.5 s (a breath, nothing to cut); a "
          f"{1000 * (truth.click[1] - truth.click[0]):.0f} ms keyboard click at {truth.click[0]:.2f} s inside the "
          f"{click_pause:.2f} s pause; {len(truth.markers)} sync markers (one per sentence)")  # fmt: skip


def print_table(runs: list[Run]) -> None:
    reference = next(run for run in runs if run.name == "auto-editor")
    frame_ms = 1000 / reference.measures.truth.fps

    def verdict(run: Run, good: bool) -> str:
        return "" if run is reference else " ok" if good else " MISSED"

    def av(run: Run) -> str:
        offsets, expected = run.measures.offsets_ms, run.measures.markers_expected
        span = f"{min(offsets):+.1f}..{max(offsets):+.1f}" if offsets else "none"
        good = len(offsets) == expected > 0 and all(abs(o) <= frame_ms for o in offsets)
        return f"{span} ({len(offsets)}/{expected})" + (" ok" if good else " MISSED")

    def cpu(run: Run) -> str:
        same = run.preset == reference.preset and run.crf == reference.crf
        return f"{run.cpu:.1f}" + (verdict(run, run.cpu <= reference.cpu) if same else "")

    rows: list[tuple[str, str, list[str]]] = []
    for label, target, cell in (
        ("x264 preset / CRF", "", lambda r: f"{r.preset} / {r.crf}"),
        ("x264 as written", "", lambda r: r.x264),
        ("speech lost (ms)", "0",
         lambda r: f"{r.measures.speech_lost_ms:.0f}" + verdict(r, r.measures.speech_lost_ms == 0)),
        ("pause time left (s)", "", lambda r: f"{r.measures.pause_left_s:.2f}"),
        ("jump cuts", "<= auto-editor",
         lambda r: f"{r.measures.jump_cuts}" + verdict(r, r.measures.jump_cuts <= reference.measures.jump_cuts)),
        ("pieces without speech", "", lambda r: f"{r.measures.pieces_without_speech}"),
        ("A/V offset ms (markers)", f"|x| <= {frame_ms:.1f}", av),
        ("frames / fps", "", lambda r: f"{r.measures.frames} / {r.measures.fps:.2f}"),
        ("irregular/repeated/unread", "0 / 0 / 0",
         lambda r: f"{r.measures.irregular_steps} / {r.measures.repeated_frames} / {r.measures.unreadable_frames}"),
        ("duration (s)", "", lambda r: f"{r.measures.duration:.2f}"),
        ("size (MB)", "", lambda r: f"{r.measures.size_bytes / 1e6:.2f}"),
        ("loudness (LUFS)", "", lambda r: f"{r.measures.loudness_lufs:.1f}"),
        ("true peak (dBTP)", "", lambda r: f"{r.measures.true_peak_dbtp:.1f}"),
        ("wall (s)", "", lambda r: f"{r.wall:.1f}"),
        ("CPU (s)", "<= auto-editor, same x264", cpu),
    ):  # fmt: skip
        rows.append((label, target, [cell(run) for run in runs]))
    names = [run.name for run in runs]
    widths = [max(len(names[i]), *(len(cells[i]) for _, _, cells in rows)) for i in range(len(runs))]
    label_width = max(len(label) for label, _, _ in rows)
    target_width = max(len(target) for _, target, _ in rows)

    def line(label: str, target: str, cells: list[str]) -> str:
        columns = "  ".join(f"{cell:<{width}}" for cell, width in zip(cells, widths, strict=True))
        return f"{label:<{label_width}}  {target:<{target_width}}  {columns}".rstrip()

    print()
    print(line("", "target", names))
    for label, target, cells in rows:
        print(line(label, target, cells))
    for run in runs:
        print(f"{run.name} kept source frames: " + " ".join(f"{a}-{b - 1}" for a, b in run.measures.ranges))


def main() -> None:
    defaults = LocalNemoConfig(data_dir=Path(tempfile.gettempdir()))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the generated recording here (reused)")
    parser.add_argument("--seconds", type=float, default=93.0)
    parser.add_argument("--size", default="1920x1080", help="WIDTHxHEIGHT")
    parser.add_argument("--auto-editor", default=shutil.which("auto-editor"), help="the auto-editor program")
    parser.add_argument("--auto-editor-ffmpeg", default=None,
                        help="the FFmpeg auto-editor runs (an ffprobe must sit beside it); default: the one on PATH, "
                             f"else {FFMPEG_PLACES[0]}")  # fmt: skip
    args = parser.parse_args()
    if not args.auto_editor:
        raise SystemExit("auto-editor is not installed (Debian: apt-get install auto-editor)")
    ae_ffmpeg = args.auto_editor_ffmpeg or shutil.which("ffmpeg")
    if ae_ffmpeg is None:
        ae_ffmpeg = next((place for place in FFMPEG_PLACES if Path(place).is_file()), None)
    width, height = (int(part) for part in args.size.lower().split("x"))
    workdir = args.workdir or Path(tempfile.gettempdir()) / "nemobot-bench-quality"
    workdir.mkdir(parents=True, exist_ok=True)
    truth = plan_recording(args.seconds, width=width, height=height)
    source = workdir / f"{truth.name}.mp4"
    if not source.is_file():
        print(f"generating {source.name} ...", flush=True)
        started = time.perf_counter()
        make_recording(source, truth)
        print(f"  made in {time.perf_counter() - started:.1f} s", flush=True)
    print(f"{os.cpu_count()} CPUs; nemobot's FFmpeg {ffmpeg_exe()}; auto-editor's FFmpeg {ae_ffmpeg or 'its own'}")
    print_truth(truth, source)
    crf = defaults.x264_crf
    runs = [nemobot_run(source, workdir, truth, defaults.x264_preset, crf, "nemobot")]
    if defaults.x264_preset != AUTO_EDITOR_PRESET:
        runs.append(nemobot_run(source, workdir, truth, AUTO_EDITOR_PRESET, crf, f"nemobot {AUTO_EDITOR_PRESET}"))
    runs.append(auto_editor_run(source, workdir, truth, args.auto_editor, ae_ffmpeg, crf))
    print_table(runs)


if __name__ == "__main__":
    main()
