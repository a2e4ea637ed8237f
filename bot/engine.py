"""The conversation engine: the small facade the adapters call.

Messages that change the project (uploads, edits, exports, /new) run one after another per chat, in
arrival order, never concurrently and never twice; a message that arrives while one runs is told it is
next (:mod:`bot.scheduler`). Reads (/status, /credits, /help) answer at once. What each message does is in
:mod:`bot.flows`; exports, which are stored so that a restarted engine finishes and delivers them exactly
once, in :mod:`bot.exports`; the moderators' reel in :mod:`bot.reels`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable

from bot.config import BotSettings
from bot.exports import Exports
from bot.flows import Flows, Job
from bot.intents import Intent, changes_project, route
from bot.lang import detect_language
from bot.messages import Adapter, ChatKey, FileOpener, IncomingMessage, Replies
from bot.nemo import errors
from bot.nemo.client import NemoClient
from bot.outcome import Operation, Outcome
from bot.queue import JobQueue
from bot.reels import ReelPost, ReelRequest, make_reel
from bot.scheduler import Scheduler
from bot.sessions import Sessions
from bot.texts import Backend, t
from storage import Store

log = logging.getLogger(__name__)


class Engine:
    def __init__(self, nemo: NemoClient, repo: Store, settings: BotSettings, *,
                 backend: Backend = "hosted", queue: JobQueue | None = None) -> None:
        """``backend``: "local" when the composition root embedded localnemo, so that no message speaks of
        NemoVideo to someone who never used it. ``queue``: where exports are followed (:mod:`bot.queue`;
        in this process unless given)."""
        self._repo = repo
        self._scheduler = Scheduler(settings.max_in_flight)
        self._sessions = Sessions(nemo, repo, backend=backend)
        self._flows = Flows(self._sessions, still_working_seconds=nemo.settings.still_working_seconds,
                            poll_seconds=nemo.settings.poll_seconds, temp_dir=settings.temp_dir,
                            exporting=self._scheduler.exporting)
        self._exports = Exports(nemo, repo, self._sessions, self._scheduler, temp_dir=settings.temp_dir,
                                queue=queue)
        self._adapters: dict[str, Adapter] = {}
        # Operations not settled yet, per chat: /cancel and close settle the ones whose work never ran.
        self._open: dict[str, set[Operation]] = {}
        self._closing = False

    # -- the adapters' entry points -------------------------------------------------------------

    async def handle(
        self, message: IncomingMessage, replies: Replies, files: FileOpener | None = None, *, again: bool = False
    ) -> Operation:
        """Take one incoming message. Returns as soon as it is answered or queued, with the operation whose
        ``await operation.wait()`` tells how it ended (an export: once delivered). Adapters may ignore it.

        ``again``: the durable queue hands the message over a second time because the process that took it
        first died before it was done; it is handled although it is marked as seen."""
        if not await self._repo.mark_processed(str(message.chat), message.message_id) and not again:
            log.info("engine.duplicate chat=%s message=%s", message.chat, message.message_id)
            return Operation.settled(Outcome.DUPLICATE)
        routed = route(message.text, has_files=bool(message.attachments))
        lang = detect_language(message.locale, message.text)
        log.info("engine.message chat=%s intent=%s files=%d", message.chat, routed.intent.value,
                 len(message.attachments))
        job = Job(message, replies, files, routed, lang)
        key = str(message.chat)
        if routed.intent is Intent.CANCEL:
            await self._cancel(job)
            return Operation.settled(Outcome.DONE)
        operation = self._track(key, Operation())
        if not changes_project(routed, has_files=bool(message.attachments)):
            self._scheduler.read(key, self._guarded(self._read(job), replies, lang, operation))
            return operation
        await self._scheduler.submit(key, lambda: self._guarded(self._run(job, operation), replies, lang, operation),
                                    notice=lambda: self._safe_send(replies, t("queued", lang)))
        return operation

    async def make_reel(self, request: ReelRequest, posts: Iterable[ReelPost], replies: Replies,
                        files: FileOpener) -> None:
        """A moderator's highlight reel of a channel's clips (see :mod:`bot.reels`)."""
        await make_reel(self, request, posts, replies, files)

    async def join(self, chat: ChatKey | None = None) -> None:
        """Wait until the chat (or every chat) has nothing running, queued or being exported."""
        await self._scheduler.join(str(chat) if chat is not None else None)

    def exporting(self, chat: ChatKey | None = None) -> bool:
        """Whether an export of the chat (or of any chat) is rendering or being delivered."""
        return self._scheduler.exporting(str(chat) if chat is not None else None)

    async def resume(self, adapter: Adapter | None = None) -> int:
        """Pick up every unfinished export of the adapter(s) and deliver each once. Returns how many."""
        if adapter is not None:
            self._adapters.setdefault(adapter.name, adapter)
        count = 0
        for each in [adapter] if adapter is not None else list(self._adapters.values()):
            count += await self._exports.resume(each)
        return count

    def abandon(self, operation: Operation) -> None:
        """Stop the chat's work that ``operation`` belongs to, as /cancel does, without a word to the user: the
        durable queue aborted the job that waited for it (/cancel taken by another process)."""
        for key, pending in list(self._open.items()):
            if operation in pending:
                self._scheduler.cancel(key)
                self._settle_open(key, Outcome.CANCELLED)
                return

    @property
    def closing(self) -> bool:
        """True once :meth:`close` began: an operation cancelled now was stopped by the shutdown, not by /cancel."""
        return self._closing

    async def close(self) -> None:
        """Stop every task. Unfinished exports stay stored for the next start."""
        self._closing = True
        await self._scheduler.close()
        for key in list(self._open):
            self._settle_open(key, Outcome.CANCELLED)

    # -- one message ----------------------------------------------------------------------------

    async def _run(self, job: Job, operation: Operation) -> Outcome | None:
        intent = job.routed.intent
        if intent is Intent.NEW:
            return await self._flows.new(job)
        if intent is Intent.EXPORT:
            return await self._exports.start(job, self._flows.session_lost, operation)
        return await self._flows.upload_and_edit(job)

    async def _cancel(self, job: Job) -> None:
        chat = job.message.chat
        cancelled = self._scheduler.cancel(str(chat))
        cancelled = await self._exports.cancel_stored(chat) or cancelled
        # Queued work that was dropped never runs, so nothing else would settle its operation.
        self._settle_open(str(chat), Outcome.CANCELLED)
        await job.replies.send_text(t("cancelled" if cancelled else "nothing_to_cancel", job.lang))

    async def _guarded(
        self, work: Awaitable[Outcome | None], replies: Replies, lang: str, operation: Operation
    ) -> None:
        """Run one piece of work; whatever fails, the user gets plain words and the log gets the detail.

        The work's outcome settles ``operation``; None means the work handed it on (an export's follow)."""
        try:
            outcome = await work
        except asyncio.CancelledError:
            operation.settle(Outcome.CANCELLED)
            raise
        except errors.NemoError as exc:
            operation.settle(Outcome.FAILED)
            log.info("engine.backend_error kind=%s code=%s", type(exc).__name__, exc.code)
            await self._safe_send(replies, await self._sessions.words_for(exc, lang, None))
        except Exception:
            operation.settle(Outcome.FAILED)
            log.exception("engine.internal_error")
            await self._safe_send(replies, t("internal_error", lang))
        else:
            if outcome is not None:
                operation.settle(outcome)

    async def _read(self, job: Job) -> Outcome:
        await self._flows.answer_read(job)
        return Outcome.DONE

    def _track(self, key: str, operation: Operation) -> Operation:
        self._open.setdefault(key, set()).add(operation)

        def settled(done: Operation) -> None:
            pending = self._open.get(key)
            if pending is not None:
                pending.discard(done)
                if not pending:
                    del self._open[key]

        operation.on_settle(settled)
        return operation

    def _settle_open(self, key: str, outcome: Outcome) -> None:
        for operation in self._open.pop(key, set()):
            operation.settle(outcome)

    async def _safe_send(self, replies: Replies, text: str) -> None:
        try:
            await replies.send_text(text)
        except Exception:
            log.warning("engine.reply.failed", exc_info=True)


__all__ = ["Engine"]
