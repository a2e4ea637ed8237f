"""Start-up failures of ``nemobot telegram|discord|run``, run as processes against the platform stand-ins.

A rejected token, another process polling (409), a refused intent and an unreachable platform each end
the process with one plain line and a non-zero status (2: a setting to fix, 3: out of reach after the
retries), with no traceback, and no token in the output even at ``NEMOBOT_LOG_LEVEL=DEBUG``.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import bot_process
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.telegram_server import FakeTelegram

WRONG_TELEGRAM_TOKEN = "987654321:AAWrongTokenForTests_abcdefghijklmnop"
WRONG_DISCORD_TOKEN = "MTwrong-discord-token.for-tests.0123456789abcdef"
NEMO_TOKEN = "nemo-token-for-tests-0123456789"
# Fast retries, and a NemoVideo that is never called at start-up (no probe of the hosted one, no localnemo).
QUICK = {"NEMOBOT_START_ATTEMPTS": "3", "NEMOBOT_START_BACKOFF_SECONDS": "0.01", "NEMOBOT_LOG_LEVEL": "DEBUG"}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base(extra: dict[str, str]) -> dict[str, str]:
    return {**QUICK, "NEMO_API_BASE": f"http://127.0.0.1:{closed_port()}", "NEMO_TOKEN": NEMO_TOKEN, **extra}


def lines_with(output: str, needle: str) -> list[str]:
    return [line for line in output.splitlines() if needle in line]


def assert_quiet(output: str, *secrets: str) -> None:
    assert "Traceback" not in output, output
    for secret in (*secrets, NEMO_TOKEN):
        assert secret not in output, f"a secret was printed:\n{output}"


@pytest.fixture
async def telegram(tmp_path: Path) -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(tmp_dir=tmp_path / "telegram") as server:
        yield server


@pytest.fixture
async def discord_fake(tmp_path: Path) -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(tmp_dir=tmp_path / "discord") as server:
        yield server


def tg_env(fake: FakeTelegram, token: str | None = None) -> dict[str, str]:
    return base({"TELEGRAM_BOT_TOKEN": token or fake.token, "TELEGRAM_API_BASE": fake.api_base,
                 "TELEGRAM_FILE_API_BASE": fake.file_base})


def dc_env(fake: FakeDiscord, token: str | None = None) -> dict[str, str]:
    return base({"DISCORD_BOT_TOKEN": token or fake.token, "DISCORD_API_BASE": fake.api_base,
                 "DISCORD_GATEWAY_URL": fake.gateway_url})


# -- Telegram ---------------------------------------------------------------------------------------------


async def test_telegram_rejected_token_is_one_plain_line_and_status_2(telegram: FakeTelegram, tmp_path: Path) -> None:
    async with bot_process("telegram", tmp_path, tg_env(telegram, WRONG_TELEGRAM_TOKEN)) as bot:
        assert await bot.ended() == 2, bot.stderr
    assert len(lines_with(bot.stderr, "check TELEGRAM_BOT_TOKEN")) == 1, bot.stderr
    assert_quiet(bot.output, WRONG_TELEGRAM_TOKEN)


async def test_telegram_rejected_token_at_warning_level_says_only_the_line(
    telegram: FakeTelegram, tmp_path: Path
) -> None:
    env = {**tg_env(telegram, WRONG_TELEGRAM_TOKEN), "NEMOBOT_LOG_LEVEL": "WARNING"}
    async with bot_process("telegram", tmp_path, env) as bot:
        assert await bot.ended() == 2, bot.stderr
    assert bot.stdout == ""
    assert bot.stderr.splitlines() == [
        "nemobot telegram: Telegram rejected the bot token: check TELEGRAM_BOT_TOKEN (and TELEGRAM_API_BASE if it "
        "is set)."
    ]


async def test_telegram_conflicting_poller_stops_with_a_plain_line(telegram: FakeTelegram, tmp_path: Path) -> None:
    telegram.fail("getUpdates", error_code=409, times=None,
                  description="Conflict: terminated by other getUpdates request; "
                  "make sure that only one bot instance is running")
    async with bot_process("telegram", tmp_path, tg_env(telegram)) as bot:
        assert await bot.ended() == 2, bot.stderr
    assert len(lines_with(bot.stderr, "another process is polling with this bot token")) == 1, bot.stderr
    assert_quiet(bot.output, telegram.token)


async def test_telegram_unreachable_is_retried_then_given_up(telegram: FakeTelegram, tmp_path: Path) -> None:
    env = {**tg_env(telegram), "TELEGRAM_API_BASE": f"http://127.0.0.1:{closed_port()}/bot"}
    async with bot_process("telegram", tmp_path, env) as bot:
        assert await bot.ended() == 3, bot.stderr
    assert len(lines_with(bot.stderr, "Trying again in")) == 2, bot.stderr
    assert len(lines_with(bot.stderr, "Gave up after 3 attempts")) == 1, bot.stderr
    assert_quiet(bot.output, telegram.token)


# -- Discord ----------------------------------------------------------------------------------------------


async def test_discord_rejected_token_is_one_plain_line_and_status_2(
    discord_fake: FakeDiscord, tmp_path: Path
) -> None:
    async with bot_process("discord", tmp_path, dc_env(discord_fake, WRONG_DISCORD_TOKEN)) as bot:
        assert await bot.ended() == 2, bot.stderr
    assert len(lines_with(bot.stderr, "check DISCORD_BOT_TOKEN")) == 1, bot.stderr
    assert_quiet(bot.output, WRONG_DISCORD_TOKEN, discord_fake.token)


async def test_discord_privileged_intent_not_enabled_is_a_plain_line(tmp_path: Path) -> None:
    async with FakeDiscord(tmp_dir=tmp_path / "discord", allowed_privileged_intents=0) as fake:
        env = {**dc_env(fake), "DISCORD_MESSAGE_CONTENT": "true"}
        async with bot_process("discord", tmp_path, env) as bot:
            assert await bot.ended() == 2, bot.stderr
    assert len(lines_with(bot.stderr, "Message Content intent")) == 1, bot.stderr
    assert_quiet(bot.output, fake.token)


async def test_discord_unreachable_is_retried_then_given_up(discord_fake: FakeDiscord, tmp_path: Path) -> None:
    env = {**dc_env(discord_fake), "DISCORD_API_BASE": f"http://127.0.0.1:{closed_port()}/api/v10"}
    async with bot_process("discord", tmp_path, env) as bot:
        assert await bot.ended() == 3, bot.stderr
    assert len(lines_with(bot.stderr, "Trying again in")) == 2, bot.stderr
    assert len(lines_with(bot.stderr, "Gave up after 3 attempts")) == 1, bot.stderr
    assert_quiet(bot.output, discord_fake.token)


async def test_discord_unreachable_gateway_is_retried_then_given_up(
    discord_fake: FakeDiscord, tmp_path: Path
) -> None:
    env = {**dc_env(discord_fake), "DISCORD_GATEWAY_URL": f"ws://127.0.0.1:{closed_port()}/gateway"}
    async with bot_process("discord", tmp_path, env) as bot:
        assert await bot.ended() == 3, bot.stderr
    assert len(lines_with(bot.stderr, "Gave up after 3 attempts")) == 1, bot.stderr
    assert_quiet(bot.output, discord_fake.token)


@pytest.mark.parametrize(
    ("shards", "said"),
    [
        ({"DISCORD_SHARD_IDS": "0,3", "DISCORD_SHARD_COUNT": "2"}, "DISCORD_SHARD_IDS 3 is not a shard of"),
        ({"DISCORD_SHARD_IDS": "0,1"}, "DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT"),
        ({"DISCORD_SHARD_COUNT": "two"}, "DISCORD_SHARD_COUNT: Input should be a valid integer"),
        ({"DISCORD_SHARD_COUNT": "0"}, "DISCORD_SHARD_COUNT: Input should be greater than or equal to 1"),
    ],
)
async def test_discord_bad_shard_settings_are_one_plain_line_and_status_2(
    discord_fake: FakeDiscord, tmp_path: Path, shards: dict[str, str], said: str
) -> None:
    async with bot_process("discord", tmp_path, {**dc_env(discord_fake), **shards}) as bot:
        assert await bot.ended() == 2, bot.stderr
    assert len(lines_with(bot.stderr, said)) == 1, bot.stderr
    assert len(lines_with(bot.stderr, "nemobot discord: ")) == 1, bot.stderr
    assert_quiet(bot.output, discord_fake.token)
    assert discord_fake.calls == []  # refused before anything was asked of Discord


# -- both -------------------------------------------------------------------------------------------------


async def test_run_stops_both_platforms_when_one_is_refused(
    telegram: FakeTelegram, discord_fake: FakeDiscord, tmp_path: Path
) -> None:
    env = {**tg_env(telegram), **dc_env(discord_fake, WRONG_DISCORD_TOKEN)}
    async with bot_process("run", tmp_path, env) as bot:
        assert await bot.ended() == 2, bot.stderr
    assert len(lines_with(bot.stderr, "nemobot run: Discord rejected the bot token")) == 1, bot.stderr
    assert_quiet(bot.output, telegram.token, WRONG_DISCORD_TOKEN)
    # Telegram had started, and was stopped cleanly: its last getUpdates confirmed what it had read.
    assert telegram.calls_to("setMyCommands")
