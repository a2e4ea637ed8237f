"""The command line as a user runs it: real processes, localnemo started in-process with --local."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from localnemo.testing import TestLocalNemo
from tests.conftest import fast_localnemo_config, wait_for

ROOT = Path(__file__).resolve().parents[1]


def cli_environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NEMO_", "NEMOBOT_", "TELEGRAM_", "DISCORD_", "LOCALNEMO_"))}
    env["NEMOBOT_LOG_LEVEL"] = "WARNING"
    env["PYTHONPATH"] = str(ROOT)
    # Short delays and a small, fast render, as the in-process tests use (tests/conftest.py): no test here
    # is about a delay, and the defaults are for people.
    env.update({
        "NEMO_POLL_SECONDS": "0.05",
        "NEMOBOT_CONSOLE_EDIT_SECONDS": "0",
        "LOCALNEMO_RENDER_STEP_SECONDS": "0.02",
        "LOCALNEMO_HEARTBEAT_SECONDS": "0.05",
        "LOCALNEMO_RESOLUTION": "240p",
        "LOCALNEMO_X264_PRESET": "ultrafast",
    })
    env.update(extra)
    return env


def nemobot(*args: str, cwd: Path, stdin: str = "", timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nemobot", *args], cwd=cwd, env=cli_environment(), input=stdin, capture_output=True,
        text=True, timeout=timeout, check=False,
    )


async def nemobot_against(server: TestLocalNemo, *args: str, cwd: Path) -> tuple[int, str]:
    """Run a command against a test server on this event loop (so it keeps answering); (status, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nemobot", *args, cwd=cwd, env=cli_environment(NEMO_API_BASE=server.base_url),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, stderr.decode(errors="replace")


def test_help_names_commands_and_settings(tmp_path: Path) -> None:
    top = nemobot("--help", cwd=tmp_path)
    assert top.returncode == 0
    for command in ("chat", "edit", "run", "serve-local"):
        assert command in top.stdout
    assert "NEMO_API_BASE" in top.stdout
    for command in ("chat", "edit", "run", "telegram", "discord", "serve-local"):
        sub = nemobot(command, "--help", cwd=tmp_path)
        assert sub.returncode == 0
        assert "NEMO" in sub.stdout
    serve = nemobot("serve-local", "--help", cwd=tmp_path).stdout
    for variable in set(re.findall(r"LOCALNEMO_[A-Z0-9_]+[A-Z0-9]", (ROOT / "localnemo" / "config.py").read_text())):
        assert variable in " ".join(serve.split()), variable


def test_one_shot_edit(tmp_path: Path, sample_video: Path) -> None:
    out = tmp_path / "result" / "out.mp4"
    done = nemobot("edit", str(sample_video), "-p", "add background music", "-o", str(out), "--local", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert out.is_file()
    assert out.stat().st_size > 0
    # Downloaded beside the output and renamed into place: nothing else is left there.
    assert list(out.parent.iterdir()) == [out]
    assert "music" in done.stderr
    assert (tmp_path / "nemobot.sqlite3").stat().st_mode & 0o777 == 0o600
    # The embedded localnemo keeps its data beside the database, for the owner only.
    data = tmp_path / "nemobot.localnemo"
    assert data.is_dir()
    assert data.stat().st_mode & 0o777 == 0o700
    assert any(data.rglob("*.mp4"))


def test_one_shot_edit_keeps_its_state_in_postgresql(tmp_path: Path, sample_video: Path, postgres_url: str) -> None:
    out = tmp_path / "out.mp4"
    done = subprocess.run(
        [sys.executable, "-m", "nemobot", "edit", str(sample_video), "-p", "add background music", "-o", str(out),
         "--local"],
        cwd=tmp_path, env=cli_environment(NEMOBOT_DB=postgres_url), capture_output=True, text=True, timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size > 0
    assert not (tmp_path / "nemobot.sqlite3").exists()
    assert any((tmp_path / "nemobot.localnemo").rglob("*.mp4"))
    with psycopg.connect(postgres_url) as conn:
        exports = conn.execute("SELECT status, url IS NOT NULL FROM exports").fetchall()
    assert exports == [("completed", True)]


async def test_local_data_dir_setting_wins(tmp_path: Path, sample_video: Path) -> None:
    chosen = tmp_path / "chosen"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nemobot", "chat", "--local", cwd=tmp_path,
        env=cli_environment(LOCALNEMO_DATA_DIR=str(chosen), NEMOBOT_DB=str(tmp_path / "db" / "bot.sqlite3")),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(f"/upload {sample_video}\n".encode()), 120)
    assert process.returncode == 0, stderr.decode()
    assert "Got clip.mp4" in stdout.decode()
    assert any(chosen.rglob("*.mp4"))
    assert not (tmp_path / "db" / "bot.localnemo").exists()


@pytest.mark.parametrize(
    ("endpoint", "code", "step"),
    [("upload", 500, "upload"), ("run_sse", 2001, "edit"), ("run_sse", 500, "edit")],
)
async def test_one_shot_edit_exports_nothing_after_a_failed_step(
    tmp_path: Path, sample_video: Path, endpoint: str, code: int, step: str
) -> None:
    async with TestLocalNemo(fast_localnemo_config(tmp_path / "localnemo")) as server:
        server.faults.fail(endpoint, code, times=-1)
        out = tmp_path / "out.mp4"
        status, stderr = await nemobot_against(server, "edit", str(sample_video), "-p", "add music", "-o", str(out),
                                               cwd=tmp_path)
        assert status == 1, stderr
        assert f"the {step} did not succeed" in stderr
        assert "Traceback" not in stderr
        assert not out.exists()
        assert server.faults.count("render") == 0
        if step == "upload":
            assert server.faults.count("run_sse") == 0  # the edit was not sent either


async def test_one_shot_edit_exports_nothing_when_the_agent_reports_an_error(
    tmp_path: Path, sample_video: Path
) -> None:
    async with TestLocalNemo(fast_localnemo_config(tmp_path / "localnemo")) as server:
        status, stderr = await nemobot_against(server, "edit", str(sample_video), "-p", "simulate an error", "-o",
                                               str(tmp_path / "out.mp4"), cwd=tmp_path)
        assert status == 1, stderr
        assert "the edit did not succeed" in stderr
        assert server.faults.count("render") == 0
        assert not (tmp_path / "out.mp4").exists()


async def test_one_shot_edit_exports_nothing_when_the_edit_changed_nothing(
    tmp_path: Path, sample_video: Path
) -> None:
    async with TestLocalNemo(fast_localnemo_config(tmp_path / "localnemo")) as server:
        status, stderr = await nemobot_against(server, "edit", str(sample_video), "-p", "make it look better", "-o",
                                               str(tmp_path / "out.mp4"), cwd=tmp_path)
        assert status == 1, stderr
        assert "the edit changed nothing" in stderr
        assert server.faults.count("render") == 0
        assert not (tmp_path / "out.mp4").exists()


def test_one_shot_edit_failure_is_plain_and_non_zero(tmp_path: Path) -> None:
    notes = tmp_path / "notes.pdf"
    notes.write_text("not a video")
    refused = nemobot("edit", str(notes), "-p", "add music", "--local", cwd=tmp_path)
    assert refused.returncode == 1
    assert "I can't use notes.pdf" in refused.stderr
    assert "Traceback" not in refused.stderr
    missing = nemobot("edit", "nope.mp4", "-p", "x", "--local", cwd=tmp_path)
    assert missing.returncode == 2
    assert "file not found: nope.mp4" in missing.stderr


def test_piped_chat_runs_each_line_in_turn_and_exits_zero(tmp_path: Path, sample_video: Path) -> None:
    lines = f"/upload {sample_video}\nadd background music\nexport\n"
    chat = nemobot("chat", "--local", "--out", str(tmp_path / "videos"), cwd=tmp_path, stdin=lines)
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout.index("Got clip.mp4") < chat.stdout.index("music") < chat.stdout.index("ready")
    assert len(list((tmp_path / "videos").glob("*.mp4"))) == 1
    # The embedded editor's link lives on this machine's loopback and dies with the process: the file is
    # the result, and no dead link is handed out with it.
    assert "Your video is ready." in chat.stdout
    assert "render-result" not in chat.stdout


@pytest.mark.parametrize("var", ["TELEGRAM_BOT_TOKEN"])
def test_run_without_tokens_says_what_to_do(tmp_path: Path, var: str) -> None:
    result = nemobot("run", cwd=tmp_path)
    assert result.returncode == 2
    assert var in result.stderr


def test_sample_chat_keeps_the_users_input(tmp_path: Path) -> None:
    """FFmpeg making the sample must not swallow what the user types (it reads stdin unless told not to)."""
    chat = nemobot("chat", "--local", "--sample", "--out", str(tmp_path / "v"), cwd=tmp_path,
                   stdin="cut the pauses, add background music\nexport\n")
    assert chat.returncode == 0, chat.stderr
    assert "Got sample.mp4" in chat.stdout
    after_upload = chat.stdout.split("Got sample.mp4", 1)[1]
    assert "music" in after_upload
    assert "I removed" in after_upload  # the sample has pauses, and they were cut
    assert "Enter command" not in chat.stdout + chat.stderr
    assert len(list((tmp_path / "v").glob("*.mp4"))) == 1


async def serve_local_until_serving(
    cwd: Path, *, stop: signal.Signals = signal.SIGINT, **environment: str
) -> list[str]:
    """Start ``nemobot serve-local --port 0``, read its log until it serves, stop it with ``stop``; the lines it
    logged, to the end."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nemobot", "serve-local", "--port", "0", cwd=cwd,
        env=cli_environment(NEMOBOT_LOG_LEVEL="INFO", **environment),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    lines: list[str] = []
    try:
        while not any("localnemo.serving" in line for line in lines):
            line = await asyncio.wait_for(process.stderr.readline(), 30)
            assert line, f"serve-local ended: {lines}"
            lines.append(line.decode(errors="replace").rstrip())
    finally:
        process.send_signal(stop)
        _, rest = await asyncio.wait_for(process.communicate(), 30)
    lines += rest.decode(errors="replace").splitlines() if rest else []
    assert process.returncode == 0, lines
    return lines


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
async def test_serve_local_keeps_its_data_in_a_folder_that_outlives_it(tmp_path: Path) -> None:
    lines = await serve_local_until_serving(tmp_path)
    folder = tmp_path / "localnemo-data"
    said = [line for line in lines if "nemobot.serve_local.data_dir" in line]
    assert len(said) == 1
    assert f"path={folder}" in said[0]
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert (folder / "state.sqlite3").is_file()
    # LOCALNEMO_DATA_DIR wins.
    chosen = tmp_path / "elsewhere"
    lines = await serve_local_until_serving(tmp_path, LOCALNEMO_DATA_DIR=str(chosen))
    assert any(f"path={chosen} from=LOCALNEMO_DATA_DIR" in line for line in lines)
    assert (chosen / "state.sqlite3").is_file()


async def test_a_running_bot_keeps_forgetting_updates_nothing_can_redeliver(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from nemobot.compose import keep_pruning
    from storage import open_repository

    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    async with open_repository(tmp_path / "bot.sqlite3", clock=lambda: now[0]) as repo:
        assert await repo.accept_update("1", 10) is True
        now[0] += timedelta(days=3)  # Telegram gives up on an update after a day: this one cannot come again
        pruning = asyncio.create_task(keep_pruning(repo, 0.01))
        try:
            # Accepted again only once the task has forgotten it (a refused accept changes nothing).
            await wait_for(lambda: repo.accept_update("1", 10), what="the old update to be forgotten")
        finally:
            pruning.cancel()


async def test_serve_local_stops_cleanly_on_sigterm_as_a_service_manager_asks(tmp_path: Path) -> None:
    lines = await serve_local_until_serving(tmp_path, stop=signal.SIGTERM)
    assert any("localnemo.stopping" in line for line in lines), lines
