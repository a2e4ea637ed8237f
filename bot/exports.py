"""Exports: submit a render, follow it, and deliver the result exactly once — also after a restart.

Every submitted export is stored with where to deliver it (a :class:`DeliveryTarget`, as JSON). Its long
wait runs in the background; a restarted engine picks up the unfinished ones (:meth:`Exports.resume`).

Delivery is *claimed* in storage (by this run's owner id) before the result is downloaded, so two tasks never
deliver it at once, and *confirmed* only once the platform accepted the last message (the file where sent,
and the text with the link). A failed delivery releases its claim; a killed process cannot. With SQLite (one
process) a restart releases the claims of the previous run and delivers those exports again. With the durable
queue (:mod:`bot.queue`, several processes) a claim is leased: renewed while its delivery runs, free to take
once a dead process stopped renewing it, so a job run again after a crash finds the export delivered, or
waits out the lease and delivers it. A crash between the platform
accepting the file and the confirmation sends it twice: no platform here offers an idempotent send, and
twice is better than never.

An export the bot stops waiting for (``NEMO_EXPORT_TIMEOUT_SECONDS``) is cancelled on the backend too.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bot.explain import plain_reason
from bot.flows import Job
from bot.messages import Adapter, ChatKey, DeliveryTarget, MessageHandle, Replies
from bot.nemo import errors
from bot.nemo.client import NemoAccount, NemoClient
from bot.nemo.models import RenderJob
from bot.nemo.uploads import format_size
from bot.outcome import Operation, Outcome
from bot.progress import StatusMessage, buttons, join_text
from bot.queue import InProcessQueue, JobQueue
from bot.scheduler import Scheduler
from bot.sessions import Sessions, identity_key
from bot.texts import backend_text, t
from storage import ExportRecord, Store

log = logging.getLogger(__name__)


class Exports:
    def __init__(self, nemo: NemoClient, repo: Store, sessions: Sessions, scheduler: Scheduler, *,
                 temp_dir: str | None, queue: JobQueue | None = None) -> None:
        self._nemo = nemo
        self._queue: JobQueue = queue or InProcessQueue()
        self._repo = repo
        self._sessions = sessions
        self._scheduler = scheduler
        self._temp_dir = temp_dir
        # Who claims deliveries in storage: this run. Claims of any other owner were a previous run's.
        self.owner = f"run-{uuid.uuid4().hex}"
        self._claims_released = False

    async def start(
        self, job: Job, session_lost: Callable[[ChatKey, str, StatusMessage], Awaitable[None]], operation: Operation
    ) -> Outcome | None:
        """Submit the chat's timeline for rendering and follow it in the background. Returns the outcome when
        it ends here; None when the background follow will settle ``operation``."""
        message, lang = job.message, job.lang
        chat = message.chat
        status = StatusMessage(job.replies)
        try:
            session = await self._sessions.get(chat, lang)
            draft = await self._sessions.draft(chat, session)
            if not draft.exportable:
                await status.finish(t("export_empty", lang))
                return Outcome.FAILED
            output: dict[str, Any] = {"format": "mp4", "quality": "high"}
            if job.routed.resolution:
                output["resolution"] = job.routed.resolution
            job_state = await self._sessions.account(chat).submit_export(session.session_id, draft, output=output)
        except errors.SessionNotFound:
            await session_lost(chat, lang, status)
            return Outcome.FAILED
        except errors.NemoError as exc:
            await status.finish(await self._sessions.words_for(exc, lang, chat))
            return Outcome.FAILED
        record = await self._repo.add_export(ExportRecord(
            render_id=job_state.id, chat_key=str(chat), session_id=session.session_id,
            identity_key=identity_key(chat), status="submitted", target=message.delivery.to_json(chat),
            language=lang,
        ))
        log.info("engine.export.submitted render=%s chat=%s", record.render_id, chat)
        await status.show(t("export_started", lang))
        handle = status.handle
        if await self._queue.follow_export(chat, record.render_id, handle.id if handle is not None else None):
            await status.close()
            return Outcome.QUEUED
        follow = functools.partial(self._follow, record, job.replies, status)
        self._scheduler.track_export(str(chat), _settling(operation, follow))
        return None

    async def resume(self, adapter: Adapter) -> int:
        """Pick up every unfinished export of the adapter's chats and deliver each once. Returns how many."""
        if not self._claims_released:
            # One bot process owns the SQLite file: a claim it finds at start is a dead run's delivery that
            # was never confirmed. Several processes release only the claims whose lease ran out.
            released = await self._repo.release_stale_claims(self.owner, older_than=self._queue.claim_lease)
            if released:
                log.info("engine.export.claims_released count=%d", released)
            self._claims_released = True
        self._queue.serve(adapter.name, functools.partial(self._run_job, adapter))
        count = 0
        for record in await self._repo.unfinished_exports(platform_prefix=f"{adapter.name}:"):
            chat, target = DeliveryTarget.from_json(record.target, record.chat_key)
            if await self._queue.follow_export(chat, record.render_id, None):
                count += 1
                continue
            replies = adapter.replies_for(target)
            log.info("engine.export.resume render=%s chat=%s", record.render_id, record.chat_key)
            follow = functools.partial(self._follow, record, replies, None)
            self._scheduler.track_export(str(chat), _settling(Operation(), follow))
            count += 1
        return count

    async def _run_job(self, adapter: Adapter, render_id: str, status_id: str | None, retried: bool) -> None:
        """The durable queue's ``follow_export`` job. Idempotent: an export delivered, failed or cancelled
        since it was queued is left alone; the delivery claim does the rest."""
        record = await self._repo.get_export(render_id)
        if record is None or record.delivered or record.status in ("failed", "cancelled"):
            log.info("engine.export.job_skipped render=%s", render_id)
            return
        _, target = DeliveryTarget.from_json(record.target, record.chat_key)
        replies = adapter.replies_for(target)
        # A first run goes on editing the message that said the export started; a second one says it resumed.
        handle = MessageHandle(status_id) if status_id is not None and not retried else None
        await self._follow(record, replies, StatusMessage(replies, handle))

    async def cancel_stored(self, chat: ChatKey) -> bool:
        """Cancel the chat's unfinished exports at the backend and in storage. True when there were any."""
        cancelled = False
        for record in await self._repo.exports_for_chat(str(chat), limit=5):
            if not record.finished and not record.delivered:
                # Stored first: a follow in another process that sees the render stop then knows why.
                await self._repo.update_export(record.render_id, status="cancelled")
                with contextlib.suppress(errors.NemoError):
                    await self._sessions.account_for(record.identity_key).cancel_export(record.render_id)
                cancelled = True
        # Several processes: the chat's queued messages and export follows, wherever they run.
        return await self._queue.cancel_chat(chat) > 0 or cancelled

    async def _follow(self, record: ExportRecord, replies: Replies, status: StatusMessage | None) -> Outcome:
        lang = record.language
        status = status or StatusMessage(replies)
        account = self._sessions.account_for(record.identity_key)
        try:
            if not status.sent:
                await status.show(t("export_resumed", lang))

            async def on_progress(update: RenderJob) -> None:
                await self._repo.update_export(
                    record.render_id, status=_storable(update.status), progress=min(max(update.progress, 0), 100)
                )
                if not update.done and not update.failed:
                    await status.show(progress_text(update, lang))

            job = await self._wait_through_outages(record, account, on_progress)
            await self._repo.update_export(record.render_id, status="completed", progress=100, url=job.url)
            return await self._deliver(record, job, replies, status)
        except asyncio.CancelledError:
            raise
        except errors.ExportFailed as exc:
            current = await self._repo.get_export(record.render_id)
            if current is not None and current.status == "cancelled":
                # /cancel, taken by another process, stopped the render: the user was answered there.
                log.info("engine.export.cancelled render=%s", record.render_id)
                return Outcome.CANCELLED
            await self._repo.update_export(record.render_id, status="failed", error=exc.message)
            reason = plain_reason(exc.message, lang, self._sessions.backend)
            await status.finish(t("export_failed", lang, reason=reason),
                                buttons=buttons(lang, "/export", "/status"))
        except errors.ExportTimeout:
            # Given up on: the render must not keep running (and costing) for nobody.
            cancelled = await self._cancel_render(record)
            await self._repo.update_export(record.render_id, status="failed", error="timed out")
            await status.finish(t("export_timeout_cancelled" if cancelled else "export_timeout", lang))
        except errors.NemoError as exc:
            if isinstance(exc, errors.BadRequest) and exc.code == 404:
                # The backend no longer knows the job (localnemo restarted, say): nothing left to wait for.
                await self._repo.update_export(record.render_id, status="failed", error="unknown to the backend")
                lost = backend_text("export_lost", lang, self._sessions.backend)
                await status.finish(t("export_failed", lang, reason=lost),
                                    buttons=buttons(lang, "/export", "/status"))
                return Outcome.FAILED
            # Left unfinished in storage: the next start tries again.
            log.warning("engine.export.poll_failed render=%s kind=%s", record.render_id, type(exc).__name__)
            await status.finish(await self._sessions.words_for(exc, lang, None))
        except Exception:
            log.exception("engine.export.internal_error render=%s", record.render_id)
            await status.finish(t("internal_error", lang))
        finally:
            await status.close()
        return Outcome.FAILED

    async def _wait_through_outages(
        self, record: ExportRecord, account: NemoAccount, on_progress: Callable[[RenderJob], Awaitable[None]]
    ) -> RenderJob:
        """Wait for the render; when the backend cannot be reached or is busy (after the client's own quick
        retries), wait longer and ask again rather than leave the export owed until the next restart: a
        bot runs for months. Gives up as the client does, after ``export_timeout_seconds`` in all."""
        settings = self._nemo.settings
        deadline = time.monotonic() + settings.export_timeout_seconds
        pause = settings.poll_seconds
        while True:
            try:
                return await account.wait_for_export(record.render_id, on_progress)
            except (errors.BackendUnavailable, errors.RateLimited) as exc:
                if time.monotonic() + pause >= deadline:
                    raise
                log.warning("engine.export.poll_failed render=%s kind=%s retry_in=%.0fs", record.render_id,
                            type(exc).__name__, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, _LONGEST_POLL_PAUSE)

    async def _cancel_render(self, record: ExportRecord) -> bool:
        """Best effort: True when the backend took the cancellation."""
        try:
            await self._sessions.account_for(record.identity_key).cancel_export(record.render_id)
        except errors.NemoError as exc:
            log.warning("engine.export.cancel_failed render=%s kind=%s", record.render_id, type(exc).__name__)
            return False
        log.info("engine.export.cancelled render=%s reason=timeout", record.render_id)
        return True

    async def _deliver(
        self, record: ExportRecord, job: RenderJob, replies: Replies, status: StatusMessage
    ) -> Outcome:
        if not await self._claim(record.render_id):
            # Delivered already, or another task of this run is delivering it right now.
            log.info("engine.export.already_claimed render=%s", record.render_id)
            return Outcome.DUPLICATE
        lease = self._queue.claim_lease
        if lease is None:
            return await self._deliver_claimed(record, job, replies, status)
        renewing = asyncio.create_task(
            _repeat(lambda: self._renew(record.render_id), lease.total_seconds() / _RENEWALS_PER_LEASE)
        )
        try:
            return await self._deliver_claimed(record, job, replies, status)
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing

    async def _claim(self, render_id: str) -> bool:
        """Claim the delivery. With a lease, a claim held by another process is waited out: its owner either
        delivers (then this is a duplicate) or died (its lease runs out and the claim is taken over)."""
        lease = self._queue.claim_lease
        while True:
            if await self._repo.claim_delivery(render_id, self.owner, lease=lease):
                return True
            record = await self._repo.get_export(render_id)
            if lease is None or record is None or record.delivered or record.delivery_owner == self.owner:
                return False
            log.info("engine.export.claim_held render=%s", render_id)
            await asyncio.sleep(lease.total_seconds() / _RENEWALS_PER_LEASE)

    async def _renew(self, render_id: str) -> None:
        if not await self._repo.renew_delivery(render_id, self.owner):
            log.warning("engine.export.claim_lost render=%s", render_id)

    async def _deliver_claimed(
        self, record: ExportRecord, job: RenderJob, replies: Replies, status: StatusMessage
    ) -> Outcome:
        lang = record.language
        url = job.url or ""
        # An adapter may ask for its own words with the result (a reel credits its clips' authors).
        _, target = DeliveryTarget.from_json(record.target, record.chat_key)
        caption = target.caption or ""
        try:
            limit = replies.capabilities.max_upload_bytes
            sent = False
            if limit > 0 and (job.size is None or job.size <= limit):
                # Downloading and re-uploading a result is work like any other: it takes a slot.
                async with self._scheduler.slots:
                    sent = await self._send_file(url, limit, replies, caption or t("export_caption", lang))
            if sent:
                # The platform took the video: that is the delivery. Confirmed now, so that a failure of the
                # closing words below can never send the file a second time.
                await self._repo.confirm_delivery(record.render_id, self.owner)
                local = self._sessions.backend == "local"
                text = t("export_done_file", lang) if local else t("export_done", lang, url=url)
            else:
                size = format_size(job.size) if job.size else "?"
                text = t("export_link_only", lang, url=url, size=size) if limit > 0 else t(
                    "export_done", lang, url=url)
        except BaseException:
            # Not delivered (or not known to be): owed again, to the next try or the next start.
            with contextlib.suppress(Exception):
                await self._repo.release_delivery(record.render_id, self.owner)
            raise
        captions_sent = False
        if sent and job.captions_url:
            captions_sent = await self._send_captions(job.captions_url, replies, lang)
        if job.captions_url and not captions_sent:
            text = join_text(text, t("export_captions_link", lang, url=job.captions_url))
        if sent:
            try:
                await status.finish(text, buttons=buttons(lang))
            except Exception:
                log.warning("engine.export.closing_text_failed render=%s", record.render_id, exc_info=True)
        else:
            try:
                # Without a file the message with the link is the delivery: confirmed once it is accepted.
                await status.finish(join_text(caption, text) if caption else text, buttons=buttons(lang))
            except BaseException:
                with contextlib.suppress(Exception):
                    await self._repo.release_delivery(record.render_id, self.owner)
                raise
            await self._repo.confirm_delivery(record.render_id, self.owner)
        log.info("engine.export.delivered render=%s file=%s", record.render_id, sent)
        return Outcome.DONE

    async def _send_captions(self, url: str, replies: Replies, lang: str) -> bool:
        """The video's captions as an .srt document beside it, where the platform takes files."""
        if not replies.capabilities.documents:
            return False
        with tempfile.TemporaryDirectory(prefix="nemobot-", dir=self._temp_dir) as tmp:
            path = Path(tmp) / "captions.srt"
            try:
                await self._nemo.download(url, path, max_bytes=_MAX_CAPTIONS_BYTES)
                await replies.send_document(path, filename="captions.srt", caption=t("export_captions", lang))
            except Exception:
                # The video is delivered; the captions' link goes out in words instead.
                log.warning("engine.export.send_captions_failed", exc_info=True)
                return False
        return True

    async def _send_file(self, url: str, limit: int, replies: Replies, caption: str) -> bool:
        # Into the adapter's own folder where it keeps files (the same file system, so it is moved, not
        # copied), else a temporary one; streamed to disk either way, and the platform reads it from there.
        keep = replies.capabilities.download_dir
        if keep is not None:
            await asyncio.to_thread(keep.mkdir, parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".nemobot-", dir=keep or self._temp_dir) as tmp:
            path = Path(tmp) / "video.mp4"
            await replies.show_working("upload_video")
            try:
                await self._nemo.download(url, path, max_bytes=limit)
            except errors.NemoError as exc:
                log.info("engine.export.download_skipped reason=%s", exc.message)
                return False
            keep_alive = asyncio.create_task(_repeat(lambda: replies.show_working("upload_video"), 4.0))
            try:
                await replies.send_video(path, caption=caption)
            except Exception:
                # The platform refused the file (too large after all, say): the link still goes out.
                log.warning("engine.export.send_video_failed", exc_info=True)
                return False
            finally:
                keep_alive.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keep_alive
        return True


# Captions files are small: a two-hour film's SubRip is under 200 KB.
_MAX_CAPTIONS_BYTES = 5 * 1024 * 1024
# A leased claim is renewed this many times per lease while its delivery runs (and a held one looked at again).
_RENEWALS_PER_LEASE = 4
# The longest pause between asking again for an export while its backend is out of reach.
_LONGEST_POLL_PAUSE = 600.0


def progress_text(update: RenderJob, lang: str) -> str:
    """The status line of a render that is still running, or still waiting for its turn."""
    if update.queue_position is not None and update.status == "pending":
        ahead = max(update.queue_position - 1, 0)
        return t("export_queued", lang, ahead=ahead) if ahead else t("export_queued_next", lang)
    return t("export_progress", lang, progress=int(update.progress))


async def _settling(operation: Operation, follow: Callable[[], Awaitable[Outcome]]) -> None:
    """Run an export's follow and settle the message's operation with how it ended. The follow is made here,
    not by the caller: a task cancelled before it first runs (the engine closing at once) leaves no
    never-awaited coroutine behind."""
    try:
        operation.settle(await follow())
    except asyncio.CancelledError:
        operation.settle(Outcome.CANCELLED)
        raise
    except BaseException:
        operation.settle(Outcome.FAILED)
        raise


def _storable(status: str) -> Any:
    return status if status in ("pending", "processing", "completed", "failed") else "processing"


async def _repeat(action: Callable[[], Awaitable[None]], every: float) -> None:
    while True:
        await asyncio.sleep(every)
        with contextlib.suppress(Exception):
            await action()
