"""The terminal that behaves (issue 11, point 5): how the embedded backend is named, and the chat under a
pseudo-terminal (prompt, progress redrawn in place, Ctrl-C, ./videos/)."""

from __future__ import annotations

import fcntl
import os
import select
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.console import PROMPT
from bot.explain import explain
from bot.nemo import errors
from bot.texts import _CATALOGUE, backend_text
from tests.test_cli import cli_environment


@pytest.mark.parametrize("error", [
    errors.TokenInvalid("x"), errors.SessionNotFound("x"), errors.OutOfCredits("x"), errors.ExportBlocked("x"),
    errors.RateLimited("x"), errors.BackendUnavailable("x"), errors.StreamInterrupted("x"),
    errors.StreamTimeout("x"), errors.ExportFailed("{raw}"), errors.StreamError("{raw}"),
])
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_with_the_embedded_backend_no_error_speaks_of_nemovideo(error: errors.NemoError, lang: str) -> None:
    words = explain(error, lang, registration_link=None, upload_limit=1, backend="local")
    assert "NemoVideo" not in words
    hosted = explain(error, lang, registration_link=None, upload_limit=1, backend="hosted")
    assert words != hosted or "NemoVideo" not in hosted


def test_every_text_that_names_nemovideo_has_a_local_wording() -> None:
    naming = [key for key, (en, zh) in _CATALOGUE.items()
              if "NemoVideo" in en + zh and "@" not in key and not key.startswith("agent.")]
    for key in naming:
        for lang in ("en", "zh"):
            assert "NemoVideo" not in backend_text(key, lang, "local", reason="r", link="l"), key
    # localnemo's own replies never name NemoVideo: localnemo is the local editor, whoever embeds it.
    agent_naming = [key for key, (en, zh) in _CATALOGUE.items() if key.startswith("agent.") and "NemoVideo" in en + zh]
    assert agent_naming == []
    assert "the local editor" in backend_text("export_lost", "en", "local")
    assert "本地编辑器" in backend_text("export_lost", "zh", "local")


# -- the chat under a pseudo-terminal --------------------------------------------------------------------


class Terminal:
    """``nemobot chat --local`` on a pseudo-terminal that is its controlling terminal (so Ctrl-C, sent as
    ``\\x03``, is a SIGINT from the terminal, as a person's would be). Everything it writes is kept."""

    def __init__(self, cwd: Path, *args: str, **env: str) -> None:
        self.master, slave = os.openpty()
        self.output = b""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "nemobot", "chat", "--local", *args], cwd=cwd, env=cli_environment(**env),
            stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        os.close(slave)

    def read_until(self, needle: str, within: float = 60) -> str:
        deadline = time.monotonic() + within
        while needle.encode() not in self.output:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{needle!r} never came; the terminal showed:\n{self.text}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # the child closed the terminal
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"{needle!r} never came before the end; the terminal showed:\n{self.text}")
                self.output += chunk
        return self.text

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace")

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def wait(self, within: float = 30) -> int:
        deadline = time.monotonic() + within
        while self.process.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], max(0.0, deadline - time.monotonic()))
            if ready:
                try:
                    self.output += os.read(self.master, 65536)
                except OSError:
                    break
        return self.process.wait(timeout=max(0.1, deadline - time.monotonic()))

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.master)


@pytest.fixture
def terminals() -> Iterator[list[Terminal]]:
    made: list[Terminal] = []
    yield made
    for terminal in made:
        terminal.close()


def test_on_a_terminal_the_prompt_shows_progress_is_redrawn_in_place_and_videos_go_to_videos(
    tmp_path: Path, sample_video: Path, terminals: list[Terminal]
) -> None:
    terminal = Terminal(tmp_path)
    terminals.append(terminal)
    terminal.read_until(PROMPT)
    terminal.type(f"/upload {sample_video}\r")
    terminal.read_until("Got clip.mp4")
    terminal.type("add background music\r")
    terminal.read_until("music")
    terminal.type("export\r")
    terminal.read_until("saved to")
    # A status line redrawn where it stood: up one line, erase it, write it again.
    assert "\x1b[1A\r\x1b[2Knemobot> " in terminal.text
    assert terminal.text.count(PROMPT) >= 3
    videos = list((tmp_path / "videos").glob("*.mp4"))
    assert len(videos) == 1
    terminal.type("\x04")  # Ctrl-D
    assert terminal.wait() == 0
    assert "Traceback" not in terminal.text


def test_ctrl_c_stops_at_once_with_a_plain_line(tmp_path: Path, terminals: list[Terminal]) -> None:
    terminal = Terminal(tmp_path)
    terminals.append(terminal)
    terminal.read_until(PROMPT)
    started = time.monotonic()
    terminal.type("\x03")
    terminal.read_until("Stopped.", within=10)
    assert terminal.wait(within=15) in (130, 0)
    assert time.monotonic() - started < 15
    assert "Traceback" not in terminal.text
    assert "KeyboardInterrupt" not in terminal.text


def test_second_ctrl_c_leaves_a_rendering_export_to_be_resumed(
    tmp_path: Path, sample_video: Path, terminals: list[Terminal]
) -> None:
    # The placeholder renderer at a slow pace: the export is still rendering when Ctrl-C comes.
    terminal = Terminal(tmp_path, LOCALNEMO_RENDERER="copy", LOCALNEMO_RENDER_STEP_SECONDS="30")
    terminals.append(terminal)
    terminal.read_until(PROMPT)
    terminal.type(f"/upload {sample_video}\r")
    terminal.read_until("Got clip.mp4")
    terminal.type("export\r")
    terminal.read_until("Exporting")
    terminal.type("\x03")
    terminal.read_until("Press Ctrl-C again", within=10)
    terminal.type("\x03")
    terminal.read_until("resumed the next time", within=10)
    assert terminal.wait(within=20) == 130
    assert "Traceback" not in terminal.text


def test_the_sample_clip_is_removed_on_exit(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    chat = subprocess.run(
        [sys.executable, "-m", "nemobot", "chat", "--local", "--sample"], cwd=tmp_path,
        env=cli_environment(TMPDIR=str(temp)), input="", capture_output=True, text=True, timeout=120, check=False,
    )
    assert chat.returncode == 0, chat.stderr
    assert "Got sample.mp4" in chat.stdout
    assert list(temp.glob("nemobot-sample-*")) == []


def test_chat_log_lines_stay_off_the_chat(tmp_path: Path) -> None:
    """At INFO the chat's screen gets no log line; with NEMOBOT_LOG_FILE they all go to the file."""
    log_file = tmp_path / "nemobot.log"
    chat = subprocess.run(
        [sys.executable, "-m", "nemobot", "chat", "--local"], cwd=tmp_path,
        env=cli_environment(NEMOBOT_LOG_LEVEL="INFO", NEMOBOT_LOG_FILE=str(log_file)),
        input="status\n", capture_output=True, text=True, timeout=120, check=False,
    )
    assert chat.returncode == 0, chat.stderr
    assert " INFO " not in chat.stdout + chat.stderr
    assert "localnemo.started" in log_file.read_text()
    plain = subprocess.run(
        [sys.executable, "-m", "nemobot", "chat", "--local"], cwd=tmp_path,
        env=cli_environment(NEMOBOT_LOG_LEVEL="INFO"), input="status\n", capture_output=True, text=True,
        timeout=120, check=False,
    )
    assert plain.returncode == 0, plain.stderr
    assert "localnemo.started" not in plain.stdout + plain.stderr
