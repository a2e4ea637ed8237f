"""Render benchmark: localnemo's FFmpeg engine against a plain FFmpeg transcode of the same input.

A 2-minute 1080p30 screen-recording-like clip is generated (a mostly still desktop with text being typed
and a moving cursor, a voice-like sound with about 25 % silence in pauses of 0.7–2.8 s). It is uploaded to
an in-process localnemo, edited with "cut the pauses, add background music, export 1080p" and exported;
the export is timed from the request to the finished file. The same input is transcoded by one plain
``ffmpeg -i in.mp4 -c:v libx264 -preset P -crf C -c:a aac out.mp4`` with the same encoder settings, in the
same run, alternating over the rounds so that both see the same machine.

Prints both times, their ratio (target ≤ 1.15) and the export's realtime factor (input seconds per second
of rendering; target ≥ 3 on 2 cores).

    .venv/bin/python bench/render.py [--seconds 120] [--rounds 1] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from localnemo.app import LocalNemo
from localnemo.config import LocalNemoConfig
from localnemo.fonts import find_font
from localnemo.graph import escape_value
from localnemo.media import ffmpeg_exe, probe

PROMPT = "cut the pauses, add background music, export 1080p"
ATTRIBUTION = {"X-Skill-Source": "bench", "X-Skill-Version": "0", "X-Skill-Platform": "bench"}


def pause_schedule(seconds: float, silence: float, seed: int = 7) -> list[tuple[float, float]]:
    """Pauses (start, end) making up ``silence`` of the clip, between bursts of speech; lengths drawn at
    random (2.5–7 s of speech, 0.7–2.8 s of pause) and then scaled to hit the share exactly."""
    rng = random.Random(seed)
    talks: list[float] = []
    gaps: list[float] = []
    while sum(talks) + sum(gaps) < seconds:
        talks.append(rng.uniform(2.5, 7.0))
        gaps.append(rng.uniform(0.7, 2.8))
    talks.append(rng.uniform(2.5, 7.0))  # speech at both ends
    talk_scale = seconds * (1 - silence) / sum(talks)
    gap_scale = seconds * silence / sum(gaps)
    pauses: list[tuple[float, float]] = []
    position = 0.0
    for talk, gap in zip(talks, gaps, strict=False):
        position += talk * talk_scale
        pauses.append((position, position + gap * gap_scale))
        position += gap * gap_scale
    return pauses


def make_input(path: Path, seconds: int) -> list[tuple[float, float]]:
    pauses = pause_schedule(seconds, 0.25)
    muted = "+".join(f"between(t,{a:.3f},{b:.3f})" for a, b in pauses) or "0"
    font = find_font()
    typing = ""
    if font is not None:
        fontfile = escape_value(str(font.path))
        typing = "".join(
            f",drawtext=fontfile={fontfile}:text='def handler(request)\\: return render(request)  # line {n}':"
            f"fontsize=26:fontcolor=0x202020:x=150:y={150 + 38 * n}:enable='gte(t,{n * 5})'"
            for n in range(min(18, seconds // 5))
        )
    video = (
        f"color=c=0xeeeeee:s=1920x1080:r=30:d={seconds},"
        "drawbox=x=0:y=0:w=1920:h=44:color=0x2b2b2b:t=fill,"
        "drawbox=x=120:y=110:w=1160:h=860:color=white:t=fill,"
        "drawbox=x=1320:y=110:w=480:h=860:color=0xdfe6ef:t=fill"
        f"{typing},"
        "drawbox=x=180+mod(t*97\\,1000):y=300+120*sin(t/3):w=14:h=22:color=black:t=fill"
    )
    voice = (
        f"[1:a][2:a][3:a]amix=inputs=3:normalize=0,volume=0.35,tremolo=f=4:d=0.55,"
        f"volume=0:enable='{muted}'[voice];"
        f"[4:a]volume=0.0006[noise];[voice][noise]amix=inputs=2:normalize=0:duration=first[a]"
    )
    command = [
        ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", video,
        "-f", "lavfi", "-i", f"sine=f=165:r=48000:d={seconds}",
        "-f", "lavfi", "-i", f"sine=f=330:r=48000:d={seconds}",
        "-f", "lavfi", "-i", f"sine=f=495:r=48000:d={seconds}",
        "-f", "lavfi", "-i", f"anoisesrc=r=48000:d={seconds}:c=pink",
        "-filter_complex", voice, "-map", "0:v", "-map", "[a]",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-g", "60", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "128k", "-shortest", str(path),
    ]  # fmt: skip
    subprocess.run(command, check=True)
    return pauses


def plain_transcode(source: Path, target: Path, preset: str, crf: int) -> float:
    command = [
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i", str(source),
        "-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "160k", "-movflags", "+faststart", str(target),
    ]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - started


async def localnemo_export(source: Path, data_dir: Path, preset: str, crf: int) -> dict[str, Any]:
    config = LocalNemoConfig(
        data_dir=data_dir, render_steps=1, render_step_seconds=0.0, event_delay_seconds=0.0,
        x264_preset=preset, x264_crf=crf,
    )  # fmt: skip
    async with LocalNemo(config) as server, httpx.AsyncClient(base_url=server.base_url, timeout=600) as http:
        token = (await http.post("/api/auth/anonymous-token", headers={"X-Client-Id": "bench"})).json()["data"]
        headers = {"Authorization": f"Bearer {token['token']}", **ATTRIBUTION}
        session = await http.post(
            "/api/tasks/me/with-session/nemo_agent", json={"task_name": "bench", "language": "en"}, headers=headers
        )
        sid = session.json()["data"]["session_id"]
        with source.open("rb") as stream:
            upload = await http.post(
                f"/api/upload-video/nemo_agent/me/{sid}", files=[("files", (source.name, stream, "video/mp4"))],
                headers=headers,
            )  # fmt: skip
        upload.raise_for_status()
        started = time.perf_counter()
        message = {"parts": [{"text": PROMPT}]}
        body = {"app_name": "nemo_agent", "user_id": "me", "session_id": sid, "new_message": message}
        (await http.post("/run_sse", json=body, headers=headers)).raise_for_status()
        planned = time.perf_counter() - started
        draft = server.state.sessions[sid].draft.to_wire()  # as the bot sends it
        render_id = f"render_bench_{time.time_ns()}"
        started = time.perf_counter()
        created = await http.post(
            "/api/render/proxy/lambda",
            json={"id": render_id, "sessionId": sid, "draft": draft, "output": {"format": "mp4", "quality": "high"}},
            headers=headers,
        )
        created.raise_for_status()
        while True:
            job = (await http.get(f"/api/render/proxy/lambda/{render_id}", headers=headers)).json()["data"]
            if job["status"] in ("completed", "failed"):
                break
            await asyncio.sleep(0.02)
        rendered = time.perf_counter() - started
        if job["status"] != "completed":
            raise SystemExit(f"export failed: {job.get('error')}")
        output = server.state.jobs[(token["user_id"], render_id)].output_path
        assert output is not None
        info = await probe(output)
        segments = len(draft["t"][0]["sg"])
        return {
            "plan": planned, "render": rendered, "output": output, "duration": info.duration if info else None,
            "width": info.width if info else None, "height": info.height if info else None, "segments": segments,
        }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=120, help="length of the generated clip")
    parser.add_argument("--rounds", type=int, default=1, help="timings of each, alternating")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the generated input here (reused)")
    parser.add_argument("--preset", default="veryfast", help="x264 preset of both (localnemo's default)")
    parser.add_argument("--crf", type=int, default=23, help="x264 CRF of both (localnemo's default)")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="nemobot-bench-render-"))
    workdir.mkdir(parents=True, exist_ok=True)
    source = workdir / f"screen-{args.seconds}s-1080p30.mp4"
    if not source.is_file():
        print(f"generating {source.name} ...", flush=True)
        started = time.perf_counter()
        make_input(source, args.seconds)
        print(f"  made in {time.perf_counter() - started:.1f} s")
    pauses = pause_schedule(args.seconds, 0.25)
    silent = sum(b - a for a, b in pauses)
    print(
        f"input: {args.seconds} s 1080p30, {len(pauses)} pauses, {silent:.1f} s silent ({silent / args.seconds:.0%}); "
        f"{source.stat().st_size / 1e6:.1f} MB; {os.cpu_count()} CPUs; ffmpeg {ffmpeg_exe()}"
    )
    plain_times: list[float] = []
    render_times: list[float] = []
    result: dict[str, Any] = {}
    for round_number in range(args.rounds):
        plain_times.append(plain_transcode(source, workdir / "plain.mp4", args.preset, args.crf))
        result = asyncio.run(localnemo_export(source, workdir / f"localnemo-{round_number}", args.preset, args.crf))
        render_times.append(result["render"])
        print(f"round {round_number + 1}: plain {plain_times[-1]:.2f} s, localnemo {render_times[-1]:.2f} s")
    plain = statistics.median(plain_times)
    render = statistics.median(render_times)
    ratio = render / plain
    realtime = args.seconds / render
    print()
    print(f"prompt:            {PROMPT!r} (planned in {result['plan']:.2f} s, incl. silencedetect)")
    print(f"localnemo output:  {result['width']}x{result['height']}, {result['duration']:.2f} s, "
          f"{result['segments']} kept spans, {Path(result['output']).stat().st_size / 1e6:.1f} MB")  # fmt: skip
    print(f"plain transcode:   {plain:.2f} s  (x264 {args.preset} CRF {args.crf}, AAC)")
    print(f"localnemo export:  {render:.2f} s  (loudness measured, then one run: cuts, music, gain, encode)")
    verdict = "ok" if ratio <= 1.15 else "MISSED"
    print(f"ratio:             {ratio:.3f}x the plain transcode  (target <= 1.15: {verdict})")
    print(f"realtime factor:   {realtime:.2f}x  (input seconds per second; target >= 3: "
          f"{'ok' if realtime >= 3 else 'MISSED'})")  # fmt: skip


if __name__ == "__main__":
    main()
