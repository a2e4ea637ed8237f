"""Several Telegram webhook receivers over one PostgreSQL, end to end: two ``nemobot telegram`` processes behind a
round-robin balancer, the Bot API stand-in delivering every update twice (so both receivers get each one), and
localnemo. Each chat's messages are sent at once, without waiting for answers: they are handled in order, one
at a time, by whichever process takes the chat's queued update. One receiver is killed with SIGKILL while it
follows exports; the other goes on. Every update is answered once, each chat's replies keep their order, and
every export is delivered exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from localnemo.agent import Agent, AgentEvent
from localnemo.app import default_agent, default_renderer
from localnemo.config import LocalNemoConfig
from localnemo.media import probe
from localnemo.render import Renderer
from localnemo.state import SessionRecord
from localnemo.testing import TestLocalNemo
from tests.conftest import BotProcess, bot_process, fast_localnemo_config, wait_for
from tests.fakes.round_robin import RoundRobin
from tests.fakes.telegram_server import FakeTelegram, ShownMessage
from tests.test_kill_restart import GatedRenderer

pytestmark = pytest.mark.usefixtures("ptb_timedelta")

CHATS = (701, 702, 703, 704)
SECRET = "hook-s3cret"
GREETING = "I edit videos for you"
# How the bot answers an export: its status message starts so.
EXPORT_ANSWERS = ("🎬 Exporting", "🎬 Queued for export")


def free_port() -> int:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        return int(probe_socket.getsockname()[1])


def receiver_environment(
    url: str, server: TestLocalNemo, fake: FakeTelegram, port: int, extra: dict[str, str] | None = None
) -> dict[str, str]:
    return {
        "NEMOBOT_DB": url, "NEMO_API_BASE": server.base_url, "NEMO_POLL_SECONDS": "0.1",
        "NEMO_SKILL_PLATFORM": "tests", "TELEGRAM_BOT_TOKEN": fake.token, "TELEGRAM_API_BASE": fake.api_base,
        "TELEGRAM_FILE_API_BASE": fake.file_base, "TELEGRAM_PRIVATE_EDIT_SECONDS": "0.05",
        "TELEGRAM_WEBHOOK_URL": "https://bot.example.test/tg-hook", "TELEGRAM_WEBHOOK_LISTEN": "127.0.0.1",
        "TELEGRAM_WEBHOOK_PORT": str(port), "TELEGRAM_WEBHOOK_SECRET": SECRET,
        "NEMOBOT_QUEUE_HEARTBEAT_SECONDS": "0.5", "NEMOBOT_QUEUE_STALLED_SECONDS": "2",
        "NEMOBOT_QUEUE_POLL_SECONDS": "0.5", "NEMOBOT_QUEUE_CLAIM_LEASE_SECONDS": "3",
        "NEMOBOT_LOG_LEVEL": "INFO",
    } | (extra or {})


@contextlib.asynccontextmanager
async def receivers(url: str, server: TestLocalNemo, fake: FakeTelegram, tmp_path: Path,
                    env: dict[str, str] | None = None
                    ) -> AsyncIterator[tuple[list[BotProcess], str, RoundRobin]]:
    """Two receivers and the balancer in front of them; yields the processes and the webhook's URL."""
    ports = [free_port(), free_port()]
    async with contextlib.AsyncExitStack() as stack:
        processes = [
            await stack.enter_async_context(
                bot_process("telegram", tmp_path, receiver_environment(url, server, fake, port, env))
            )
            for port in ports
        ]
        await wait_for(lambda: all("telegram.started" in p.output for p in processes), within=60,
                       what="both receivers to start", details=lambda: "".join(p.output[-3000:] for p in processes))
        balancer = RoundRobin([f"http://127.0.0.1:{port}" for port in ports])
        base = await stack.enter_async_context(balancer.running())
        yield processes, f"{base}/tg-hook", balancer


@dataclass
class Scene:
    server: TestLocalNemo
    fake: FakeTelegram
    http: httpx.AsyncClient
    procs: list[BotProcess]
    hook: str
    balancer: RoundRobin


@contextlib.asynccontextmanager
async def scene(tmp_path: Path, url: str, *, renderer: Renderer | None = None, agent: Agent | None = None,
                config: LocalNemoConfig | None = None, env: dict[str, str] | None = None) -> AsyncIterator[Scene]:
    """localnemo (with the given renderer or agent), the Bot API stand-in, and two receivers behind the
    balancer."""
    config = config or fast_localnemo_config(tmp_path / "localnemo")
    async with (TestLocalNemo(config, renderer=renderer, agent=agent) as server,
                FakeTelegram(tmp_dir=tmp_path / "tg") as fake, httpx.AsyncClient(timeout=30) as http,
                receivers(url, server, fake, tmp_path, env) as (procs, hook, balancer)):
        yield Scene(server, fake, http, procs, hook, balancer)


async def deliver_twice(http: httpx.AsyncClient, hook: str, update: dict[str, Any]) -> None:
    """Telegram's retry of an update it saw no answer to, at the same moment as the first try: the balancer
    hands one copy to each receiver."""
    answers = await asyncio.gather(*(
        http.post(hook, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}) for _ in range(2)
    ))
    assert [answer.status_code for answer in answers] == [200, 200]


async def unfinished_update_jobs(url: str) -> int:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        row = await (await conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'nemobot.handle_update' "
            "AND status IN ('todo', 'doing')"
        )).fetchone()
    assert row is not None
    return int(row[0])


def shown(fake: FakeTelegram, chat: int) -> list[ShownMessage]:
    return fake.chat_messages(chat)


def exports_answered(fake: FakeTelegram, chat: int) -> int:
    """How many of the chat's messages answer an export (its status message, as first sent)."""
    return sum((m.history[0] or "").startswith(EXPORT_ANSWERS) for m in shown(fake, chat))


def index_of(messages: list[ShownMessage], words: str) -> list[int]:
    return [n for n, m in enumerate(messages) if words in (m.text or "")]


async def test_two_receivers_one_killed_answer_every_update_once_in_order(
    tmp_path: Path, sample_video: Path, postgres_url: str
) -> None:
    config = fast_localnemo_config(tmp_path / "localnemo")
    renderer = GatedRenderer(default_renderer(config))
    async with scene(tmp_path, postgres_url, renderer=renderer, config=config) as on:
        fake, http, procs, hook = on.fake, on.http, on.procs, on.hook
        for chat in CHATS:
            fake.add_chat(chat)

        async def say(chat: int, *updates: dict[str, Any]) -> None:
            for update in updates:
                await deliver_twice(http, hook, update)

        def update(_message: dict[str, Any]) -> dict[str, Any]:
            # The stand-in keeps every update it made; a webhook receiver is handed them by the test.
            return fake.updates[-1]

        # Each chat's three messages, sent without waiting for any answer: the export must come after the upload.
        await asyncio.gather(*(say(
            chat, update(fake.user_text(chat, "/start")),
            update(fake.user_video(chat, content=sample_video, caption="add background music")),
            update(fake.user_text(chat, "export")),
        ) for chat in CHATS))
        await wait_for(lambda: all(exports_answered(fake, c) for c in CHATS), within=90,
                       what="every chat's export to start",
                       details=lambda: "\n".join(f"{c}: {[m.text for m in shown(fake, c)]}" for c in CHATS)
                       + procs[0].output[-2000:] + procs[1].output[-2000:])
        deadline = asyncio.get_running_loop().time() + 30
        while await unfinished_update_jobs(postgres_url):
            assert asyncio.get_running_loop().time() < deadline, "updates still queued"
            await asyncio.sleep(0.1)
        # Every update so far reached both receivers (one copy each); both took messages; the one that follows an
        # export is killed in the middle of it.
        assert len(on.balancer.receivers_of) == 3 * len(CHATS)
        assert all(len(got) == 2 for got in on.balancer.receivers_of.values())
        assert all("engine.message" in p.output for p in procs), [p.output[-2000:] for p in procs]
        victim = next((p for p in procs if "follow_export" in p.output), procs[0])
        survivor = procs[1] if victim is procs[0] else procs[0]
        victim.process.kill()
        await victim.process.wait()

        # A second export each, through the balancer, which now finds one receiver down.
        await asyncio.gather(*(say(chat, update(fake.user_text(chat, "export 720p"))) for chat in CHATS))
        await wait_for(lambda: all(exports_answered(fake, c) >= 2 for c in CHATS), within=60,
                       what="every chat's second export to be taken",
                       details=lambda: "\n".join(f"{c}: {[m.text for m in shown(fake, c)]}" for c in CHATS))
        renderer.gate.set()
        await wait_for(lambda: all(len(fake.sent_videos(c)) >= 2 for c in CHATS), within=120,
                       what="every export delivered", details=lambda: survivor.output[-4000:])
        # Whatever the killed receiver still followed was found stalled and finished by the other.
        assert "queue.stalled_job_retried" in survivor.output
        for chat in CHATS:
            messages = shown(fake, chat)
            texts = [m.history for m in messages]
            # Each update answered once: the greeting, the upload's reply, and one status message per export
            # (the one the killed receiver was following is picked up by the other, in a message of its own).
            (greeting,) = index_of(messages, GREETING)
            (uploaded,) = index_of(messages, "Uploaded")
            exports = [n for n, m in enumerate(messages) if (m.history[0] or "").startswith(EXPORT_ANSWERS)]
            assert len(exports) == 2, texts
            assert greeting < uploaded < exports[0], texts
            assert len(index_of(messages, "Your video is ready")) == 2, texts
            # An export that came while the upload was being worked on may be told it is next, once at most.
            assert len(index_of(messages, "this one is next")) <= 1, texts
            # Every export delivered exactly once, the first asked before the second.
            videos = fake.sent_videos(chat)
            assert len(videos) == 2, texts
            heights = []
            for video in videos:
                assert video.upload is not None
                info = await probe(video.upload.path)
                assert info is not None
                heights.append(info.height)
            assert heights == [240, 720], heights


async def test_an_album_split_across_two_receivers_is_one_upload_and_a_button_is_answered_once(
    tmp_path: Path, sample_video: Path, postgres_url: str
) -> None:
    async with scene(tmp_path, postgres_url) as on:
        server, fake, http, hook = on.server, on.fake, on.http, on.hook
        chat = CHATS[0]
        fake.add_chat(chat)
        # One update at a time to each receiver in turn (no copies): the album's items land on both.
        for i in range(3):
            fake.user_video(chat, content=sample_video, media_group_id="album-1", file_name=f"clip{i}.mp4",
                            caption="add background music" if i == 0 else None)
            answer = await http.post(hook, json=fake.updates[-1], headers={"X-Telegram-Bot-Api-Secret-Token": SECRET})
            assert answer.status_code == 200
        reply = await wait_for(
            lambda: next((m for m in shown(fake, chat) if "background music" in (m.text or "")
                          and "Uploaded" in (m.text or "") and m.reply_markup), None),
            within=60, what="the album's one reply",
            details=lambda: str([m.text for m in shown(fake, chat)]))
        assert "clip0.mp4, clip1.mp4, clip2.mp4" in (reply.history[0] or "") + (reply.text or ""), reply.history
        assert sum("Uploaded" in (m.text or "") for m in shown(fake, chat)) == 1
        (session,) = server.state.sessions.values()
        assert len(session.video_infos) == 3
        # The reply's Status button, pressed once and delivered to both receivers.
        fake.callback_query(chat, reply.message_id, "/status")
        await deliver_twice(http, hook, fake.updates[-1])
        await wait_for(lambda: fake.calls_to("answerCallbackQuery"), what="the button's answer")
        await wait_for(lambda: any(m.kind == "photo" for m in shown(fake, chat)), within=30,
                       what="the storyboard", details=lambda: str([(m.kind, m.text) for m in shown(fake, chat)]))
        assert len(fake.calls_to("answerCallbackQuery")) == 1
        assert sum(m.kind == "photo" for m in shown(fake, chat)) == 1


async def test_cancel_taken_by_either_receiver_stops_an_export_followed_by_the_other(
    tmp_path: Path, sample_video: Path, postgres_url: str
) -> None:
    config = fast_localnemo_config(tmp_path / "localnemo")
    renderer = GatedRenderer(default_renderer(config))
    async with scene(tmp_path, postgres_url, renderer=renderer, config=config) as on:
        fake, http, procs, hook = on.fake, on.http, on.procs, on.hook
        chat = CHATS[0]
        fake.add_chat(chat)

        async def say(text: str) -> None:
            fake.user_text(chat, text)
            await deliver_twice(http, hook, fake.updates[-1])

        fake.user_video(chat, content=sample_video)
        await deliver_twice(http, hook, fake.updates[-1])
        await say("export")
        await wait_for(lambda: renderer.started.is_set() and any("follow_export" in p.output for p in procs),
                       within=60, what="the export to be followed", details=lambda: str(texts_of(fake, chat)))
        # Sent twice, to both receivers: one takes it at once, wherever the export's follow runs.
        await say("/cancel")
        await wait_for(lambda: "🛑 Cancelled." in texts_of(fake, chat), within=30, what="the cancellation",
                       details=lambda: str(texts_of(fake, chat)))
        await wait_for(lambda: any("queue.chat_cancelled" in p.output for p in procs), what="the jobs reached")
        renderer.gate.set()
        # The next export is delivered; the cancelled one never is, and nobody says it failed.
        await say("export")
        await wait_for(lambda: fake.sent_videos(chat), within=60, what="the second export",
                       details=lambda: str(texts_of(fake, chat)) + procs[0].output[-2000:] + procs[1].output[-2000:])
        await wait_for(lambda: len(index_of(shown(fake, chat), "Your video is ready")) == 1, what="its link")
        texts = texts_of(fake, chat)
        assert texts.count("🛑 Cancelled.") == 1, texts
        assert len(fake.sent_videos(chat)) == 1
        assert not any("failed" in text.lower() for text in texts), texts


def texts_of(fake: FakeTelegram, chat: int) -> list[str]:
    return [m.text or "" for m in shown(fake, chat)]


class HeldAgent:
    """localnemo's agent, holding an edit (once armed) until the test lets it go: a message still being worked
    on when its receiver stops."""

    def __init__(self, inner: Agent) -> None:
        self.inner = inner
        self.armed = False
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def run(self, session: SessionRecord, message: str) -> AsyncIterator[AgentEvent]:
        if self.armed:
            self.entered.set()
            await self.gate.wait()
        async for event in self.inner.run(session, message):
            yield event


def running_update_job(process: BotProcess) -> int:
    """The highest update job the process started (Procrastinate logs each start)."""
    started = re.findall(r"Starting job nemobot\.handle_update\[(\d+)\]", process.output)
    return max((int(n) for n in started), default=0)


async def test_a_message_under_way_when_its_receiver_stops_is_handled_by_the_other(
    tmp_path: Path, sample_video: Path, postgres_url: str
) -> None:
    config = fast_localnemo_config(tmp_path / "localnemo")
    agent = HeldAgent(default_agent(config))
    async with scene(tmp_path, postgres_url, agent=agent, config=config) as on:
        server, fake, http, procs, hook = on.server, on.fake, on.http, on.procs, on.hook
        chat = CHATS[0]
        fake.add_chat(chat)
        fake.user_video(chat, content=sample_video)
        await deliver_twice(http, hook, fake.updates[-1])
        await wait_for(lambda: index_of(shown(fake, chat), "Got video"), within=60, what="the upload",
                       details=lambda: str(texts_of(fake, chat)))
        agent.armed = True
        fake.user_text(chat, "add background music")
        await deliver_twice(http, hook, fake.updates[-1])
        await wait_for(agent.entered.is_set, within=30, what="the edit to reach the agent")
        # The receiver working on it is stopped as a deploy stops it (SIGTERM), while the edit is held.
        victim = max(procs, key=running_update_job)
        survivor = procs[1] if victim is procs[0] else procs[0]
        victim.process.terminate()
        assert await victim.ended() == 0
        agent.armed = False
        agent.gate.set()
        # The edit is handled again by the other receiver, once its job is found stopped. localnemo went on
        # with the first try after its asker left, so the second finds the music there already and says so.
        finals = ("I added", "Nothing changed")
        await wait_for(lambda: any(f in text for f in finals for text in texts_of(fake, chat)), within=60,
                       what="the edit answered by the other receiver",
                       details=lambda: str(texts_of(fake, chat)) + survivor.output[-3000:])
        assert "intent=edit" in survivor.output
        # Answered once, and the music is on the timeline.
        assert sum(f in text for f in finals for text in texts_of(fake, chat)) == 1, texts_of(fake, chat)
        (session,) = server.state.sessions.values()
        assert any(s.m.role == "music" for track in session.draft.t for s in track.sg)


async def test_a_chats_next_message_starts_when_the_one_before_ends_not_at_the_next_poll(
    tmp_path: Path, sample_video: Path, postgres_url: str
) -> None:
    # Procrastinate wakes its workers for a new job only; a chat's next message, queued while the one before ran,
    # would start at the next poll: a minute here, so that only the wake-up can pass the deadline.
    async with scene(tmp_path, postgres_url, env={"NEMOBOT_QUEUE_POLL_SECONDS": "60"}) as on:
        chat = CHATS[0]
        on.fake.add_chat(chat)
        on.fake.user_video(chat, content=sample_video)
        upload = on.fake.updates[-1]
        on.fake.user_text(chat, "add background music")
        edit = on.fake.updates[-1]
        on.fake.user_text(chat, "export")
        for update in (upload, edit, on.fake.updates[-1]):
            await deliver_twice(on.http, on.hook, update)
        await wait_for(lambda: on.fake.sent_videos(chat), within=30, what="the video, three messages later",
                       details=lambda: str(texts_of(on.fake, chat)))
