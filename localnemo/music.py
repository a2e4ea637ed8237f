"""The background music localnemo uses when the user has not uploaded any: a short loop it makes itself.

The track is synthesised with FFmpeg's ``aevalsrc`` (no sample, no licence): an 8-second, 120 bpm loop of
the chords C – G – Am – F, with a soft pad, a plucked bass on the beat and an arpeggio in eighth notes. Every
voice's envelope starts from zero at its own note boundary, so chord changes and the loop point do not
click. All of it sits below 800 Hz, under most of a speaking voice. It is made once per machine (about 0.3 s
of work) as 16-bit mono WAV, 768 kB, into the user's cache folder (``$XDG_CACHE_HOME/localnemo``, else
``~/.cache/localnemo``), outside every data folder and its disk quota; where the cache cannot be written,
it is made in the data folder's assets. The renderer loops it for as long as needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from pathlib import Path

from localnemo.media import ffmpeg_exe
from localnemo.processes import spawn

log = logging.getLogger(__name__)

MUSIC_TITLE = "Background music"
MUSIC_FILE = "localnemo-loop-v1.wav"
LOOP_SECONDS = 8
# 16-bit mono at 48 kHz, after a WAV header (44 bytes, more with FFmpeg's tags: 78 here).
LOOP_SAMPLE_BYTES = 2 * 48_000 * LOOP_SECONDS

# Chord tones and bass of C, G/B, Am, F (Hz), selected by the chord number kept in register 1.
_ROOT = "if(eq(ld(1),0),261.63,if(eq(ld(1),1),246.94,if(eq(ld(1),2),220.00,220.00)))"
_THIRD = "if(eq(ld(1),0),329.63,if(eq(ld(1),1),293.66,if(eq(ld(1),2),261.63,261.63)))"
_FIFTH = "if(eq(ld(1),0),392.00,if(eq(ld(1),1),392.00,if(eq(ld(1),2),329.63,349.23)))"
_BASS = "if(eq(ld(1),0),65.41,if(eq(ld(1),1),98.00,if(eq(ld(1),2),110.00,87.31)))"
LOOP_EXPRESSION = (
    f"st(1,floor(mod(t,{LOOP_SECONDS})/2));st(2,{_ROOT});st(3,{_THIRD});st(4,{_FIFTH});st(5,{_BASS});"
    "st(6,mod(t,2));st(7,mod(t,0.5));st(8,mod(t,0.25));st(9,mod(floor(t*4),3));"
    # pad: the chord, swelling over its two seconds
    "0.10*(1-exp(-6*ld(6)))*exp(-0.6*ld(6))*(sin(2*PI*ld(2)*t)+sin(2*PI*ld(3)*t)+sin(2*PI*ld(4)*t))"
    # bass: plucked on each beat, with its octave
    "+0.30*(1-exp(-50*ld(7)))*exp(-5*ld(7))*(sin(2*PI*ld(5)*t)+0.4*sin(4*PI*ld(5)*t))"
    # arpeggio: the chord tones an octave up, one per eighth note
    "+0.16*(1-exp(-90*ld(8)))*exp(-9*ld(8))*sin(4*PI*if(eq(ld(9),0),ld(2),if(eq(ld(9),1),ld(3),ld(4)))*t)"
)


def machine_cache() -> Path:
    """The user's cache folder for localnemo's generated assets."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "localnemo"


async def bundled_music(folder: Path, cache: Path | None = None) -> Path:
    """The loop's file: in ``cache`` (made there when missing), or, without a usable cache, in ``folder``."""
    if cache is not None:
        try:
            return await _made_in(cache)
        except (OSError, RuntimeError) as exc:
            log.info("localnemo.music.cache_unusable cache=%s error=%s", cache, type(exc).__name__)
    return await _made_in(folder)


def is_whole(path: Path) -> bool:
    """Whether the loop's file is there and whole (a cache can be cleared, or a file cut short, at any time)."""
    try:
        return LOOP_SAMPLE_BYTES + 44 <= path.stat().st_size <= LOOP_SAMPLE_BYTES + 4096
    except OSError:
        return False


async def _made_in(folder: Path) -> Path:
    """The loop's file in ``folder``, made when missing or not whole. Two makers racing both write a private
    partial file and rename it into place: the content is the same, so either rename wins harmlessly."""
    target = folder / MUSIC_FILE
    if await asyncio.to_thread(is_whole, target):
        return target
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    partial = folder / f".{MUSIC_FILE}.{os.getpid()}.{secrets.token_hex(4)}.wav"
    proc = await spawn(
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"aevalsrc=exprs='{LOOP_EXPRESSION}':s=48000:d={LOOP_SECONDS}",
        "-ac", "1", "-c:a", "pcm_s16le", str(partial),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        _, stderr = await proc.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        await asyncio.to_thread(partial.unlink, missing_ok=True)
        raise
    if proc.returncode != 0:
        await asyncio.to_thread(partial.unlink, missing_ok=True)
        log.error("localnemo.music.failed rc=%s error=%s", proc.returncode, stderr.decode(errors="replace")[-300:])
        raise RuntimeError("could not make the background music")
    try:
        await asyncio.to_thread(partial.replace, target)
    finally:
        await asyncio.to_thread(partial.unlink, missing_ok=True)
    log.info("localnemo.music.made path=%s", target)
    return target
