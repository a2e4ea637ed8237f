"""The README stays true: its test command is what CI runs, and every setting is documented."""

from __future__ import annotations

import re
from pathlib import Path

from bot.config import BotSettings, NemoSettings

ROOT = Path(__file__).resolve().parents[1]


def quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_quick_start_is_two_commands_and_ci_runs_the_test_one() -> None:
    commands = quick_start_commands()
    assert len(commands) == 2
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1].replace(" -q", "") in ci.replace(" -q", "")


def test_every_setting_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in NemoSettings.model_fields:
        assert f"`NEMO_{name.upper()}`" in readme, name
    for name in BotSettings.model_fields:
        assert f"`NEMOBOT_{name.upper()}`" in readme, name
    from adapters.console import ConsoleSettings
    from adapters.discord import DiscordSettings
    from adapters.telegram import TelegramSettings

    for name in ConsoleSettings.model_fields:
        assert f"`NEMOBOT_CONSOLE_{name.upper()}`" in readme, name

    for name in TelegramSettings.model_fields:
        assert f"`TELEGRAM_{name.upper()}`" in readme, name
    for name in DiscordSettings.model_fields:
        assert f"`DISCORD_{name.upper()}`" in readme, name
    for variable in re.findall(r"LOCALNEMO_[A-Z0-9_]+", (ROOT / "localnemo" / "config.py").read_text()):
        assert f"`{variable}`" in readme, variable


def test_quick_start_runs_the_terminal_chat_and_every_command_is_listed() -> None:
    assert "nemobot chat" in quick_start_commands()[0]
    readme = (ROOT / "README.md").read_text()
    for command in ("chat", "edit", "telegram", "discord", "run", "serve-local"):
        assert f"`nemobot {command}" in readme, command
