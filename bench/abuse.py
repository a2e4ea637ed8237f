"""Abuse benchmark: one localnemo (``python -m nemobot serve-local``, its own process) under, all at once,
20 renders of a real small clip (FFmpeg renderer), an upload of 1,000 parts, an upload that declares
600 MB and never sends its body, and 10,000 requests with large headers (loopback only, bounded
concurrency and time).

Prints, each beside its target: the most FFmpeg processes seen at once (the server's children, sampled
through /proc while the renders run; target ≤ ``LOCALNEMO_MAX_RENDERS``, default the number of cores),
the server's peak RSS (VmHWM; target < 300 MB), whether its RSS returns to its start level afterwards
(VmRSS before and after), and how long the 600 MB upload took to be refused (target < 1 s).

    .venv/bin/python bench/abuse.py [--renders 20] [--parts 1000] [--requests 10000] [--deadline 600]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from localserver import local_server

ATTRIBUTION = {"X-Skill-Source": "bench", "X-Skill-Version": "0", "X-Skill-Platform": "bench"}
BOUNDARY = "abusebench0123456789"
RSS_TARGET_MB = 300
RSS_BACK_RATIO = 1.2  # "back to its start level": within 20 % of it


@dataclass
class Figures:
    ffmpeg_peak: int = 0
    renders: dict[str, int] = field(default_factory=dict)
    parts_status: str = ""
    parts_seconds: float = 0.0
    oversize_status: str = ""
    oversize_seconds: float = float("nan")
    header_statuses: dict[str, int] = field(default_factory=dict)
    header_seconds: float = 0.0


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def ffmpeg_children(pid: int) -> int:
    """FFmpeg processes whose parent is ``pid``."""
    count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        comm_end = stat.rfind(")")
        comm = stat[stat.find("(") + 1 : comm_end]
        ppid = int(stat[comm_end + 2 :].split()[1])
        if ppid == pid and "ffmpeg" in comm:
            count += 1
    return count


async def sample_ffmpeg(pid: int, figures: Figures, stop: asyncio.Event) -> None:
    while not stop.is_set():
        figures.ffmpeg_peak = max(figures.ffmpeg_peak, await asyncio.to_thread(ffmpeg_children, pid))
        try:
            await asyncio.wait_for(stop.wait(), 0.05)
        except TimeoutError:
            pass


def make_clip(path: Path) -> None:
    from localnemo.media import ffmpeg_exe

    subprocess.run(
        [
            ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-f", "lavfi", "-i", "sine=frequency=440",
            "-t", "4", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path),
        ],
        check=True,
    )  # fmt: skip


async def identity(http: httpx.AsyncClient, name: str) -> tuple[dict[str, str], str]:
    grant = await http.post("/api/auth/anonymous-token", headers={"X-Client-Id": name})
    headers = {"Authorization": f"Bearer {grant.json()['data']['token']}", **ATTRIBUTION}
    session = await http.post("/api/tasks/me/with-session/nemo_agent", json={"task_name": name}, headers=headers)
    return headers, session.json()["data"]["session_id"]


async def renders(http: httpx.AsyncClient, clip: Path, count: int, deadline: float, figures: Figures) -> None:
    """``count`` sessions each with the clip uploaded, then every export submitted at once, until all end."""
    submissions: list[tuple[dict[str, str], dict[str, Any]]] = []
    for index in range(count):
        headers, sid = await identity(http, f"render-{index}")
        files = [("files", (clip.name, clip.read_bytes(), "video/mp4"))]
        answer = await http.post(f"/api/upload-video/nemo_agent/me/{sid}", files=files, headers=headers)
        answer.raise_for_status()
        state = (await http.get(f"/api/state/nemo_agent/me/{sid}/latest", headers=headers)).json()
        body = {"id": f"render_abuse{index}", "sessionId": sid, "draft": state["data"]["state"]["draft"],
                "output": {"format": "mp4", "quality": "high"}}  # fmt: skip
        submissions.append((headers, body))
    await asyncio.gather(*(http.post("/api/render/proxy/lambda", json=b, headers=h) for h, b in submissions))
    figures.renders["submitted"] = len(submissions)
    left = {str(body["id"]): headers for headers, body in submissions}
    ends = time.monotonic() + deadline
    while left and time.monotonic() < ends:
        for rid, headers in list(left.items()):
            answer = (await http.get(f"/api/render/proxy/lambda/{rid}", headers=headers)).json()
            status = answer.get("data", answer).get("status")
            if status in ("completed", "failed"):
                figures.renders[status] = figures.renders.get(status, 0) + 1
                del left[rid]
        if left:
            await asyncio.sleep(0.5)  # a poll interval of the benchmark's client
    figures.renders["unfinished"] = len(left)


async def thousand_parts(http: httpx.AsyncClient, parts: int, figures: Figures) -> None:
    headers, sid = await identity(http, "parts")
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 56
    body = b"".join(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="p{i}.png"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode() + png + b"\r\n"
        for i in range(parts)
    ) + f"--{BOUNDARY}--\r\n".encode()

    async def chunks() -> Any:
        for start in range(0, len(body), 16 * 1024):
            yield body[start : start + 16 * 1024]

    started = time.monotonic()
    try:
        answer = await http.post(
            f"/api/upload-video/nemo_agent/me/{sid}", content=chunks(),
            headers={**headers, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        )  # fmt: skip
        figures.parts_status = f"{answer.status_code} {answer.json().get('message', '')}"
    except httpx.HTTPError as exc:
        figures.parts_status = f"transport error {type(exc).__name__}"
    figures.parts_seconds = time.monotonic() - started


async def oversize(base: str, http: httpx.AsyncClient, figures: Figures) -> None:
    headers, sid = await identity(http, "oversize")
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (
        f"POST /api/upload-video/nemo_agent/me/{sid} HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: {headers['Authorization']}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {600 * 1024 * 1024}\r\n\r\n"
    )
    started = time.monotonic()
    try:
        writer.write(head.encode())
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 30)
        figures.oversize_seconds = time.monotonic() - started
        figures.oversize_status = line.decode(errors="replace").strip()
    except TimeoutError:
        figures.oversize_status = "no answer within 30 s"
    finally:
        writer.close()


async def large_headers(base: str, count: int, concurrency: int, deadline: float, figures: Figures) -> None:
    """``count`` GETs, each with about 12 KB of headers (three of 4 KB: aiohttp takes at most 8190 bytes
    in one), ``concurrency`` at a time, for at most ``deadline`` seconds."""
    pad = {f"X-Pad-{i}": "a" * 4000 for i in range(3)}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(count):
        queue.put_nowait(index)
    ends = time.monotonic() + deadline
    started = time.monotonic()

    async def worker(http: httpx.AsyncClient) -> None:
        while time.monotonic() < ends:
            try:
                queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            try:
                answer = await http.get("/api/credits/balance/simple", headers=pad)
                key = str(answer.status_code)
            except httpx.HTTPError as exc:
                key = type(exc).__name__
            figures.header_statuses[key] = figures.header_statuses.get(key, 0) + 1

    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    figures.header_seconds = time.monotonic() - started


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--renders", type=int, default=20)
    parser.add_argument("--parts", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=50, help="requests with large headers in flight")
    parser.add_argument("--deadline", type=float, default=600.0, help="give up on renders after this many seconds")
    args = parser.parse_args()
    render_cap = int(os.environ.get("LOCALNEMO_MAX_RENDERS") or os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="abuse-") as folder:
        work = Path(folder)
        clip = work / "clip.mp4"
        make_clip(clip)
        env = {
            "LOCALNEMO_DATA_DIR": str(work / "server"),
            "LOCALNEMO_MAX_DISK_MB": "2048",
            "LOCALNEMO_RENDERER": "ffmpeg",
            "LOCALNEMO_RESOLUTION": "360p",
            "LOCALNEMO_X264_PRESET": "ultrafast",
            "LOCALNEMO_CREDITS": "1000",
            "NEMOBOT_LOG_LEVEL": "WARNING",
        }
        figures = Figures()
        async with local_server(env, log_path=work / "localnemo.log") as (base, server):
            pid = server.pid
            rss_start = status_kb(pid, "VmRSS") / 1024
            stop = asyncio.Event()
            sampler = asyncio.create_task(sample_ffmpeg(pid, figures, stop))
            started = time.monotonic()
            async with httpx.AsyncClient(base_url=base, timeout=120) as http:
                await asyncio.gather(
                    renders(http, clip, args.renders, args.deadline, figures),
                    thousand_parts(http, args.parts, figures),
                    oversize(base, http, figures),
                    large_headers(base, args.requests, args.concurrency, 300.0, figures),
                )
            stop.set()
            await sampler
            wall = time.monotonic() - started
            # Let the server settle (finished renders' buffers freed) before reading its RSS again.
            settle_until = time.monotonic() + 10
            rss_end = status_kb(pid, "VmRSS") / 1024
            while time.monotonic() < settle_until and rss_end > rss_start * RSS_BACK_RATIO:
                await asyncio.sleep(0.5)
                rss_end = status_kb(pid, "VmRSS") / 1024
            peak = status_kb(pid, "VmHWM") / 1024

    def verdict(ok: bool) -> str:
        return "ok" if ok else "OVER TARGET"

    ratio = rss_end / rss_start if rss_start else float("nan")
    print(f"localnemo: python -m nemobot serve-local (pid {pid}), {os.cpu_count()} cores, wall {wall:.1f} s")
    print(f"renders:                 {args.renders} at once -> {figures.renders}")
    print(f"most FFmpeg at once:     {figures.ffmpeg_peak}   target <= {render_cap} (LOCALNEMO_MAX_RENDERS)"
          f"   {verdict(figures.ffmpeg_peak <= render_cap)}")
    print(f"{args.parts}-part upload:      {figures.parts_status!r} in {figures.parts_seconds:.2f} s")
    print(f"600 MB declared upload:  {figures.oversize_status!r} in {figures.oversize_seconds:.3f} s   target < 1 s"
          f"   {verdict(figures.oversize_seconds < 1)}")
    print(f"large-header requests:   {sum(figures.header_statuses.values())} of {args.requests} in "
          f"{figures.header_seconds:.1f} s -> {figures.header_statuses}")
    print(f"server peak RSS:         {peak:.1f} MB   target < {RSS_TARGET_MB} MB   {verdict(peak < RSS_TARGET_MB)}")
    print(f"server RSS before/after: {rss_start:.1f} MB -> {rss_end:.1f} MB (x{ratio:.2f})   target <= "
          f"x{RSS_BACK_RATIO}   {verdict(ratio <= RSS_BACK_RATIO)}")
    ok = figures.ffmpeg_peak <= render_cap and figures.oversize_seconds < 1 and peak < RSS_TARGET_MB
    return 0 if ok and ratio <= RSS_BACK_RATIO else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
