"""Whole-process benchmark: ``nemobot edit --local`` against a plain one-pass FFmpeg transcode.

For each length (60 s and 10 minutes; ``--quick``: 60 s only), a 1080p30 screen-recording-like clip with
speech-like pauses (about 25 % silence) is generated with FFmpeg's lavfi sources, as ``bench/render.py``
does. Then, alternating A B A B, for at least 3 pairs:

A. the whole ``nemobot edit --local INPUT -p "cut the pauses, add background music" -o OUT.mp4`` process, as a
   subprocess with a fresh database and localnemo data folder each run: start-up, token, session, upload,
   the pause analysis, the render, noticing it finished, the download to OUT.mp4, exit;
B. ``ffmpeg -i INPUT -c:v libx264 -preset P -crf C -pix_fmt yuv420p -c:a aac -b:a 160k OUT.mp4`` with
   localnemo's default encoder settings.

Before the runs, the project's own modules are compiled to bytecode once (``compileall``), as every installed
Python program has them after its first start; without it, a machine that sets ``PYTHONDONTWRITEBYTECODE``
(this one does) would have each run compile them all again (about 0.3 s of CPU), which no user waits for.
The bundled music loop is made once per machine, in the user's cache folder (``localnemo/music.py``), so the
runs after the first find it there, as a user's do.

Prints every run's wall time, the median ratio A/B (target ≤ 1.0: the cut output is shorter than the
input, so the edit should not take longer than a transcode of all of it) and the spread of A's own wall
time, (max − min) / median (target < 15 %).

    .venv/bin/python bench/edit.py [--quick] [--pairs 3] [--lengths 60,600] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from render import make_input, pause_schedule

from localnemo.config import LocalNemoConfig
from localnemo.media import ffmpeg_exe, probe

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "cut the pauses, add background music"
SPREAD_TARGET = 0.15


def edit_run(source: Path, workdir: Path) -> tuple[float, Path]:
    """One whole ``nemobot edit --local`` process in a fresh data folder; its wall time and output."""
    run_dir = Path(tempfile.mkdtemp(prefix="edit-", dir=workdir))
    output = run_dir / "out.mp4"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("NEMO", "LOCALNEMO_"))},
        "NEMOBOT_DB": str(run_dir / "nemobot.sqlite3"),
        "NEMOBOT_LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "nemobot", "edit", "--local", str(source), "-p", PROMPT, "-o", str(output)]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=run_dir, env=env, capture_output=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0 or not output.is_file():
        sys.stderr.write(result.stderr.decode("utf-8", "replace")[-3000:])
        raise SystemExit(f"nemobot edit failed with status {result.returncode}")
    return elapsed, output


def transcode_run(source: Path, workdir: Path, preset: str, crf: int) -> float:
    target = workdir / "plain.mp4"
    command = [
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i", str(source),
        "-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "160k", "-movflags", "+faststart", str(target),
    ]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - started


def bench_length(seconds: int, pairs: int, workdir: Path, preset: str, crf: int) -> tuple[float, float]:
    source = workdir / f"speech-{seconds}s-1080p30.mp4"
    if not source.is_file():
        print(f"generating {source.name} ...", flush=True)
        started = time.perf_counter()
        make_input(source, seconds)
        print(f"  made in {time.perf_counter() - started:.1f} s", flush=True)
    pauses = pause_schedule(seconds, 0.25)
    silent = sum(b - a for a, b in pauses)
    print(f"\n== {seconds} s 1080p30 input: {len(pauses)} pauses, {silent:.0f} s silent "
          f"({silent / seconds:.0%}), {source.stat().st_size / 1e6:.1f} MB")  # fmt: skip
    edits: list[float] = []
    plains: list[float] = []
    output: Path | None = None
    for pair in range(1, pairs + 1):
        elapsed, output = edit_run(source, workdir)
        edits.append(elapsed)
        plains.append(transcode_run(source, workdir, preset, crf))
        print(f"pair {pair}: A nemobot edit {edits[-1]:7.2f} s   B plain transcode {plains[-1]:7.2f} s   "
              f"A/B {edits[-1] / plains[-1]:.3f}", flush=True)  # fmt: skip
        if pair < pairs:
            shutil.rmtree(output.parent, ignore_errors=True)
    assert output is not None
    import asyncio

    info = asyncio.run(probe(output))
    shutil.rmtree(output.parent, ignore_errors=True)
    ratios = [a / b for a, b in zip(edits, plains, strict=True)]
    ratio = statistics.median(ratios)
    spread = (max(edits) - min(edits)) / statistics.median(edits)
    if info is not None:
        print(f"edit output: {info.width}x{info.height}, {info.duration or 0:.1f} s")
    print(f"median ratio A/B: {ratio:.3f}x  (target <= 1.0: {'ok' if ratio <= 1.0 else 'MISSED'})")
    print(f"spread of A:      {spread:.1%}  (max-min over median; target < {SPREAD_TARGET:.0%}: "
          f"{'ok' if spread < SPREAD_TARGET else 'MISSED'})")  # fmt: skip
    return ratio, spread


def main() -> None:
    defaults = LocalNemoConfig(data_dir=Path(tempfile.gettempdir()))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="60 s only, 2 pairs")
    parser.add_argument("--pairs", type=int, default=3, help="A B pairs per length (at least 3 for the figures)")
    parser.add_argument("--lengths", default="60,600", help="input lengths in seconds, comma-separated")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the generated inputs here (reused)")
    args = parser.parse_args()
    lengths = [60] if args.quick else [int(part) for part in args.lengths.split(",") if part]
    pairs = 2 if args.quick else args.pairs
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="nemobot-bench-edit-"))
    workdir.mkdir(parents=True, exist_ok=True)
    packages = [str(ROOT / name) for name in ("nemobot", "bot", "adapters", "storage", "localnemo")]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *packages], check=True, stdout=subprocess.DEVNULL)
    print(f"{os.cpu_count()} CPUs; ffmpeg {ffmpeg_exe()}; x264 {defaults.x264_preset} CRF {defaults.x264_crf}, "
          f"AAC; prompt {PROMPT!r}")  # fmt: skip
    results = {seconds: bench_length(seconds, pairs, workdir, defaults.x264_preset, defaults.x264_crf)
               for seconds in lengths}  # fmt: skip
    print("\nsummary:")
    for seconds, (ratio, spread) in results.items():
        print(f"  {seconds:>4} s input: median ratio {ratio:.3f}x, spread {spread:.1%}")


if __name__ == "__main__":
    main()
