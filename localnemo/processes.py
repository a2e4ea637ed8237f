"""Starting FFmpeg: every child of localnemo (render, probe, decode check, analysis, the music loop) is started
here, so that it dies with localnemo.

A SIGKILLed server cannot kill its children, and an FFmpeg left running keeps a core busy and keeps writing a
file that a restarted server renders again. On Linux each child asks the kernel, between fork and exec, for
SIGKILL when its parent goes (``prctl(PR_SET_PDEATHSIG, SIGKILL)``, prctl(2)); elsewhere children start as
before. The signal follows the *thread* that forked: asyncio forks from the event loop's thread, which lives
as long as the server.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import sys
from collections.abc import Callable
from functools import cache
from typing import Any

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@cache
def _libc() -> Any:
    # Loaded before the fork: the child only calls into it.
    return ctypes.CDLL(None, use_errno=True)


def _die_with(parent: int, prctl: Any) -> Callable[[], None]:
    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # The parent died between fork and prctl: nobody would send the signal any more.
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def dies_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child die with this process (Linux), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = _libc().prctl
    except (OSError, AttributeError):
        return None
    return _die_with(os.getpid(), prctl)


async def spawn(*command: str, **options: Any) -> asyncio.subprocess.Process:
    """``asyncio.create_subprocess_exec``, with the child bound to this process's life, in a session of its
    own: a Ctrl-C typed in the terminal of an embedding ``nemobot chat --local`` goes to the chat, which
    decides what to stop, not straight to every FFmpeg it runs."""
    options.setdefault("start_new_session", True)
    return await asyncio.create_subprocess_exec(*command, preexec_fn=dies_with_parent(), **options)
