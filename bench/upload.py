"""Upload benchmark: a 500 MB file streamed to localnemo by the nemobot client and by ``curl -F``,
side by side in one run, alternating so that both see the same machine.

Prints each run's throughput, the client/curl throughput ratio (target ≥ 0.8) and the client's peak RSS
growth during its uploads (target < 64 MB).

    .venv/bin/python bench/upload.py [--size-mb 500] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from localserver import local_server

from bot.config import NemoSettings
from bot.nemo.auth import MemoryIdentityStore
from bot.nemo.client import NemoClient
from bot.nemo.uploads import UploadSource
from localnemo.media import ffmpeg_exe


def rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def reset_peak_rss() -> None:
    # Linux: writing 5 to clear_refs resets VmHWM (peak RSS) to the current RSS.
    Path("/proc/self/clear_refs").write_text("5")


def make_file(path: Path, size: int) -> None:
    """A real MP4 (localnemo probes uploads and refuses what is not media) padded to ``size`` bytes.

    A one-second clip written with its index first (+faststart), then one ISO-BMFF ``free`` box of random
    bytes: players and FFmpeg skip such a box, so the file stays a valid video of any size.
    """
    ffmpeg = ffmpeg_exe()
    head = path.with_suffix(".head.mp4")
    subprocess.run(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=10",
         "-f", "lavfi", "-i", "sine", "-t", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac",
         "-movflags", "+faststart", str(head)],
        check=True,
    )
    clip = head.read_bytes()
    head.unlink()
    box = size - len(clip)  # the box's size counts its own 8-byte header
    padding = box - 8
    block = os.urandom(1 << 20)
    with path.open("wb") as f:
        f.write(clip)
        f.write(box.to_bytes(4, "big") + b"free")
        for _ in range(padding // len(block)):
            f.write(block)
        f.write(block[: padding % len(block)])


def curl_upload(url: str, headers: Path, path: Path) -> float:
    started = time.perf_counter()
    # Headers from a file: the token stays out of the process list and out of any error message.
    done = subprocess.run(
        ["curl", "-sS", "-f", "-o", "/dev/null", "-H", f"@{headers}", "-F", f"files=@{path};type=video/mp4", url],
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"curl failed (exit {done.returncode})")
    return time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not shutil.which("curl"):
        sys.exit("curl is needed for the comparison (apt-get install curl)")

    size = args.size_mb * 1024 * 1024
    work = Path(tempfile.mkdtemp(prefix="nemobot-bench-"))
    env = {"LOCALNEMO_DATA_DIR": str(work / "server"), "NEMOBOT_LOG_LEVEL": "WARNING"}
    try:
        async with local_server(env) as (base, _):
            source = work / "clip.mp4"
            make_file(source, size)
            settings = NemoSettings(_env_file=None, api_base=base, token=None)
            async with httpx.AsyncClient() as http:
                account = NemoClient(http, settings, MemoryIdentityStore()).account("bench")
                session = await account.create_session("bench", "en")
                token = await account.client.token("bench")
                url = f"{base}/api/upload-video/nemo_agent/me/{session.session_id}"
                headers = work / "curl-headers"
                headers.write_text(
                    f"Authorization: Bearer {token}\n"
                    "X-Skill-Source: bench\nX-Skill-Version: 0\nX-Skill-Platform: bench\n"
                )
                headers.chmod(0o600)
                curl_times: list[float] = []
                client_times: list[float] = []
                peak_growth_kb = 0
                for _ in range(args.rounds):
                    curl_times.append(curl_upload(url, headers, source))
                    shutil.rmtree(work / "server" / "sessions", ignore_errors=True)  # keep the disk flat
                    baseline = rss_kb("VmRSS")
                    reset_peak_rss()
                    started = time.perf_counter()
                    await account.upload_files(session.session_id, [UploadSource.from_path(source)])
                    client_times.append(time.perf_counter() - started)
                    peak_growth_kb = max(peak_growth_kb, rss_kb("VmHWM") - baseline)
                    shutil.rmtree(work / "server" / "sessions", ignore_errors=True)
            mb = size / 1e6
            for i, (c, n) in enumerate(zip(curl_times, client_times, strict=True), 1):
                print(f"round {i}: curl {mb / c:7.1f} MB/s ({c:.2f} s)   nemobot {mb / n:7.1f} MB/s ({n:.2f} s)")
            curl_mbs = mb / statistics.median(curl_times)
            client_mbs = mb / statistics.median(client_times)
            print(f"file: {args.size_mb} MiB, rounds: {args.rounds}")
            print(f"throughput (median): curl {curl_mbs:.1f} MB/s, nemobot client {client_mbs:.1f} MB/s")
            print(f"ratio client/curl (median): {client_mbs / curl_mbs:.2f} (target >= 0.8)")
            # The best round of each is the least disturbed by whatever else the machine is doing.
            print(f"ratio client/curl (best round): {min(curl_times) / min(client_times):.2f}")
            print(f"client peak RSS growth: {peak_growth_kb / 1024:.1f} MB (target < 64 MB)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
