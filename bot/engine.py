"""The conversation engine: one NemoVideo session per chat, one backend operation at a time per chat.

Messages that change the project (uploads, edits, exports, /new) run one after another per chat, in
arrival order, never concurrently and never twice; a message that arrives while one runs is told it is
next. Reads (/status, /credits, /help) answer at once. An export's long wait runs in the background and
is stored, so a restarted engine finishes and delivers it exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import tempfile
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.config import BotSettings
from bot.intents import Intent, Routed, detect_language, links_in, route
from bot.messages import Attachment, Button, ChatKey, FileOpener, IncomingMessage, Platform, Replies
from bot.nemo import errors
from bot.nemo.auth import IdentityRecord
from bot.nemo.client import NemoAccount, NemoClient
from bot.nemo.draft import describe_changes, summarize
from bot.nemo.events import ErrorEvent, TextEvent, ToolCallEvent
from bot.nemo.models import Draft, RenderJob
from bot.nemo.uploads import UploadSource, check_file, format_size, kind_of
from bot.progress import Progress, StatusMessage
from bot.texts import BUTTON_LABELS, clean_backend_text, is_trailing_noise, t, tool_label
from storage import ChatSessionRecord, ExportRecord, Repository
from storage import IdentityRecord as StoredIdentity

log = logging.getLogger(__name__)

_MUTATING = {Intent.UPLOAD, Intent.EDIT, Intent.EXPORT, Intent.NEW}
_RAW_LOOKING = re.compile(r"[{}\[\]<>]|Traceback|Exception|nmv_|Bearer", re.IGNORECASE)


class RepositoryIdentities:
    """The client's identity store, kept in the bot's database."""

    def __init__(self, repo: Repository) -> None:
        self._repo = repo

    async def load_identity(self, key: str) -> IdentityRecord | None:
        stored = await self._repo.get_identity(key)
        if stored is None:
            return None
        return IdentityRecord(stored.client_id, stored.token, stored.expires_at, stored.user_id)

    async def save_identity(self, key: str, record: IdentityRecord) -> None:
        await self._repo.save_identity(
            StoredIdentity(
                key=key, client_id=record.client_id, token=record.token, expires_at=record.expires_at,
                user_id=record.user_id,
            )
        )


def buttons(lang: str, *commands: str) -> list[Button]:
    chosen = commands or ("/export", "/status", "/credits", "/new")
    return [Button(BUTTON_LABELS[c][1 if lang == "zh" else 0], c) for c in chosen]


def plain_reason(reason: str | None, lang: str) -> str:
    """A backend reason fit for a user: short, and never raw JSON, a trace or a credential."""
    text = " ".join((reason or "").split())
    if not text or _RAW_LOOKING.search(text):
        return "未知错误" if lang == "zh" else "an unexpected error on NemoVideo's side"
    return text if len(text) <= 160 else text[:159] + "…"


@dataclass
class _Job:
    message: IncomingMessage
    replies: Replies
    files: FileOpener | None
    routed: Routed
    lang: str


@dataclass
class _Chat:
    queue: deque[_Job] = field(default_factory=deque)
    worker: asyncio.Task[None] | None = None
    current: asyncio.Task[None] | None = None
    exports: set[asyncio.Task[None]] = field(default_factory=set)
    reads: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def busy(self) -> bool:
        return self.worker is not None and not self.worker.done()


class Engine:
    def __init__(
        self,
        nemo: NemoClient,
        repo: Repository,
        settings: BotSettings,
        *,
        bot_username: str | None = None,
    ) -> None:
        self.nemo = nemo
        self.repo = repo
        self.settings = settings
        self.bot_username = bot_username
        self._chats: dict[str, _Chat] = {}
        self._slots = asyncio.Semaphore(settings.max_in_flight)
        self._platforms: dict[str, Platform] = {}
        self._closing = False

    # -- the adapters' entry points -------------------------------------------------------------

    def chat_key(self, platform: str, chat: str, user: str, *, is_group: bool) -> ChatKey:
        """The session a message belongs to: in groups one per user unless NEMOBOT_GROUP_SESSIONS=shared."""
        per_user = is_group and self.settings.group_sessions == "user"
        return ChatKey(platform, chat, user if per_user else None)

    def add_platform(self, platform: Platform) -> None:
        self._platforms[platform.name] = platform

    async def handle(self, message: IncomingMessage, replies: Replies, files: FileOpener | None = None) -> None:
        """Take one incoming message. Returns as soon as it is answered or queued."""
        if not await self.repo.mark_processed(str(message.chat), message.message_id):
            log.info("engine.duplicate chat=%s message=%s", message.chat, message.message_id)
            return
        routed = route(message.text, has_files=bool(message.attachments), bot_username=self.bot_username)
        lang = detect_language(message.locale, message.text)
        log.info("engine.message chat=%s intent=%s files=%d", message.chat, routed.intent.value,
                 len(message.attachments))
        if routed.intent is Intent.CANCEL:
            await self._cancel(message.chat, replies, lang)
            return
        chat = self._chats.setdefault(str(message.chat), _Chat())
        if routed.intent not in _MUTATING and not (routed.intent is Intent.HELP and message.attachments):
            self._track(chat.reads, self._guarded(self._answer_read(message, replies, routed, lang), replies, lang))
            return
        # Queue first, then speak: the job's place must not depend on how long the notice takes to send,
        # and a notice that fails to send must not lose the job.
        was_busy = chat.busy
        chat.queue.append(_Job(message, replies, files, routed, lang))
        if not was_busy:
            chat.worker = asyncio.create_task(self._work(str(message.chat), chat))
        else:
            await self._safe_send(replies, t("queued", lang))

    async def join(self, chat: ChatKey | None = None) -> None:
        """Wait until the chat (or every chat) has nothing running, queued or being exported."""
        while True:
            chats = [self._chats.get(str(chat))] if chat is not None else list(self._chats.values())
            tasks: list[asyncio.Task[None]] = []
            for state in chats:
                if state is None:
                    continue
                if state.worker is not None and not state.worker.done():
                    tasks.append(state.worker)
                tasks.extend(task for task in (*state.exports, *state.reads) if not task.done())
            if not tasks:
                return
            await asyncio.gather(*tasks, return_exceptions=True)

    async def resume(self, platform: Platform | None = None) -> int:
        """Pick up every unfinished export of the platform(s) and deliver each once. Returns how many."""
        platforms = [platform] if platform is not None else list(self._platforms.values())
        count = 0
        for p in platforms:
            self._platforms.setdefault(p.name, p)
            for record in await self.repo.unfinished_exports(platform_prefix=f"{p.name}:"):
                chat = ChatKey.parse(record.chat_key)
                replies = p.replies_for(chat, record.target or {})
                log.info("engine.export.resume render=%s chat=%s", record.render_id, record.chat_key)
                self._track_export(chat, self._follow_export(record, replies, None))
                count += 1
        return count

    async def close(self) -> None:
        """Stop every task. Unfinished exports stay stored for the next start."""
        self._closing = True
        tasks = [t_ for c in self._chats.values() for t_ in (c.worker, *c.exports, *c.reads) if t_ is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- queues ---------------------------------------------------------------------------------

    async def _work(self, key: str, chat: _Chat) -> None:
        while chat.queue:
            job = chat.queue.popleft()
            async with self._slots:
                chat.current = asyncio.create_task(self._guarded(self._run(job), job.replies, job.lang))
                try:
                    await chat.current
                except asyncio.CancelledError:
                    if self._closing:
                        raise
                finally:
                    chat.current = None

    @staticmethod
    def _track(tasks: set[asyncio.Task[None]], coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def _track_export(self, chat: ChatKey, coro: Awaitable[None]) -> None:
        self._track(self._chats.setdefault(str(chat), _Chat()).exports, coro)

    async def _guarded(self, work: Awaitable[None], replies: Replies, lang: str) -> None:
        """Run one piece of work; whatever fails, the user gets plain words and the log gets the detail."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except errors.NemoError as exc:
            log.info("engine.backend_error kind=%s code=%s", type(exc).__name__, exc.code)
            await self._safe_send(replies, await self._explain(exc, lang, None))
        except Exception:
            log.exception("engine.internal_error")
            await self._safe_send(replies, t("internal_error", lang))

    async def _safe_send(self, replies: Replies, text: str) -> None:
        try:
            await replies.send_text(text)
        except Exception:
            log.warning("engine.reply.failed", exc_info=True)

    async def _cancel(self, chat_key: ChatKey, replies: Replies, lang: str) -> None:
        chat = self._chats.get(str(chat_key))
        cancelled = False
        if chat is not None:
            cancelled = bool(chat.queue)
            chat.queue.clear()
            if chat.current is not None and not chat.current.done():
                chat.current.cancel()
                cancelled = True
            for task in list(chat.exports):
                task.cancel()
                cancelled = True
        for record in await self.repo.exports_for_chat(str(chat_key), limit=5):
            if not record.finished and not record.delivered:
                with contextlib.suppress(errors.NemoError):
                    await self.nemo.account(record.identity_key).cancel_export(record.render_id)
                await self.repo.update_export(record.render_id, status="cancelled")
                cancelled = True
        await replies.send_text(t("cancelled" if cancelled else "nothing_to_cancel", lang))

    # -- sessions -------------------------------------------------------------------------------

    def _identity_key(self, chat: ChatKey) -> str:
        # Each chat its own anonymous identity (its own free credits); the client maps every key to one
        # shared identity when NEMO_TOKEN is set.
        return f"{chat.platform}:{chat.chat}"

    def _account(self, chat: ChatKey) -> NemoAccount:
        return self.nemo.account(self._identity_key(chat))

    async def _session(self, chat: ChatKey, lang: str) -> ChatSessionRecord:
        record = await self.repo.get_chat_session(str(chat))
        if record is not None:
            return record
        info = await self._account(chat).create_session(f"nemobot {chat}", lang)
        record = ChatSessionRecord(
            chat_key=str(chat), identity_key=self._identity_key(chat), session_id=info.session_id,
            task_id=info.task_id, language=lang,
        )
        log.info("engine.session.created chat=%s", chat)
        return await self.repo.save_chat_session(record)

    async def _draft(self, chat: ChatKey, session: ChatSessionRecord) -> Draft:
        state = await self._account(chat).state(session.session_id)
        await self.repo.update_last_draft(str(chat), state.draft.model_dump(mode="json"))
        return state.draft

    # -- reads ----------------------------------------------------------------------------------

    async def _answer_read(self, message: IncomingMessage, replies: Replies, routed: Routed, lang: str) -> None:
        intent = routed.intent
        if intent in (Intent.START, Intent.HELP):
            await replies.send_text(t("start", lang), buttons=buttons(lang, "/status", "/credits"))
        elif intent is Intent.CREDITS:
            credits = await self._account(message.chat).credits()
            await replies.send_text(t(
                "credits", lang, available=_num(credits.available), frozen=_num(credits.frozen),
                total=_num(credits.total),
            ), buttons=buttons(lang, "/export", "/status", "/new"))
        elif intent is Intent.STATUS:
            record = await self.repo.get_chat_session(str(message.chat))
            if record is None:
                await replies.send_text(t("status_empty", lang))
                return
            draft = await self._draft(message.chat, record)
            text = summarize(draft, lang) if draft.exportable else t("status_empty", lang)
            await replies.send_text(text, buttons=buttons(lang) if draft.exportable else ())

    # -- operations -----------------------------------------------------------------------------

    async def _run(self, job: _Job) -> None:
        intent = job.routed.intent
        if intent is Intent.NEW:
            await self.repo.delete_chat_session(str(job.message.chat))
            await job.replies.send_text(t("new_session", job.lang))
            return
        if intent is Intent.EXPORT:
            await self._start_export(job)
            return
        async with Progress(job.replies, job.lang, self.nemo.settings.still_working_seconds) as progress:
            try:
                await self._upload_and_edit(job, progress)
            except errors.SessionNotFound:
                await self._session_lost(job.message.chat, job.lang, progress)
            except errors.NemoError as exc:
                await progress.finish(await self._explain(exc, job.lang, job.message.chat))

    async def _session_lost(self, chat: ChatKey, lang: str, progress: Progress | StatusMessage) -> None:
        await self.repo.delete_chat_session(str(chat))
        await self._session(chat, lang)
        await progress.finish(t("session_lost", lang))

    async def _upload_and_edit(self, job: _Job, progress: Progress) -> None:
        message, lang = job.message, job.lang
        media_links = [u for u in links_in(message.text) if kind_of(u.split("?", 1)[0]) is not None]
        instruction = message.text
        for link in media_links:
            instruction = instruction.replace(link, " ")
        instruction = " ".join(instruction.split())
        uploaded_note = ""
        if message.attachments or media_links:
            note = await self._upload(job, media_links, progress)
            if note is None:
                return
            uploaded_note = note
        if job.routed.intent is Intent.UPLOAD or not instruction:
            if uploaded_note:
                await progress.finish(uploaded_note, buttons=buttons(lang, "/export", "/status"))
            return
        await self._edit(job, instruction, progress, prefix=uploaded_note)

    async def _upload(self, job: _Job, links: Sequence[str], progress: Progress) -> str | None:
        """Check every file first, then stream the good ones in one request. Returns a note, or None when
        nothing could be uploaded (the user has been told why)."""
        message, lang = job.message, job.lang
        refusals: list[str] = []
        accepted: list[Attachment] = []
        limit = self.nemo.settings.max_upload_bytes
        for attachment in message.attachments:
            try:
                check_file(attachment.filename, attachment.mime_type, attachment.size, limit)
                accepted.append(attachment)
            except errors.NemoError as exc:
                refusals.append(self._file_refusal(exc, attachment.filename, lang))
        # A public link the adapter cannot (or need not) open itself is fetched by the backend.
        fetched = [a for a in accepted if a.url and (job.files is None or a.ref is None)]
        by_url = [a.url for a in fetched if a.url]
        streamed = [a for a in accepted if a not in fetched]
        total = len(streamed) + len(by_url) + len(links)
        if total == 0:
            await progress.finish("\n".join(refusals))
            return None
        await progress.update(t("uploading", lang, count=total))
        session = await self._session(message.chat, lang)
        account = self._account(message.chat)
        names: list[str] = []
        if streamed:
            if job.files is None:
                raise RuntimeError("attachments without a way to open them")
            sources: list[UploadSource] = []
            for attachment in streamed:
                try:
                    sources.append(await job.files.open(attachment))
                except errors.NemoError as exc:
                    refusals.append(self._file_refusal(exc, attachment.filename, lang))
            if sources:
                try:
                    result = await account.upload_files(session.session_id, sources)
                except (errors.UnsupportedFileType, errors.FileTooLarge) as exc:
                    # The backend's refusal names no file; the user should know which.
                    exc.filename = exc.filename or ", ".join(s.filename for s in sources)
                    raise
                finally:
                    for source in sources:
                        source.close()
                names += [f.filename or s.filename for f, s in zip(result.files, sources, strict=False)]
        if by_url or links:
            result = await account.upload_urls(session.session_id, [*by_url, *links])
            names += [f.filename for f in result.files]
        if not names:
            await progress.finish("\n".join(refusals))
            return None
        await self._draft(message.chat, session)  # the upload changed the timeline: remember it as seen
        shown = ", ".join(names)
        note = t("uploaded_short" if job.routed.intent is Intent.EDIT else "uploaded", lang, names=shown)
        return "\n".join([*refusals, note])

    def _file_refusal(self, exc: errors.NemoError, name: str, lang: str) -> str:
        if isinstance(exc, errors.FileTooLarge):
            return t("file_too_large", lang, name=name, size=format_size(exc.size) if exc.size else "?",
                     limit=format_size(exc.limit or self.nemo.settings.max_upload_bytes))
        return t("unsupported_file", lang, name=name)

    async def _edit(self, job: _Job, instruction: str, progress: Progress, *, prefix: str = "") -> None:
        message, lang = job.message, job.lang
        chat = message.chat
        session = await self._session(chat, lang)
        before = Draft.model_validate(session.last_draft) if session.last_draft is not None else None
        if before is None:
            before = await self._draft(chat, session)
        await progress.update(_join(prefix, t("thinking", lang)))
        replies_text: list[str] = []
        problems: list[str] = []
        account = self._account(chat)
        try:
            async with contextlib.aclosing(account.send_message(session.session_id, instruction)) as stream:
                async for event in stream:
                    if isinstance(event, TextEvent):
                        if replies_text and is_trailing_noise(event.text):
                            continue
                        replies_text.append(clean_backend_text(event.text, lang))
                        await progress.update(_join(prefix, replies_text[-1]))
                    elif isinstance(event, ToolCallEvent):
                        await progress.update(_join(prefix, tool_label(event.name, lang)))
                    elif isinstance(event, ErrorEvent):
                        problems.append(event.message)
        except errors.StreamInterrupted:
            await progress.update(_join(prefix, t("stream_interrupted", lang)))
            await self._after_drop(job, session, before, progress, prefix)
            return
        after = await self._draft(chat, session)
        if replies_text:
            await progress.finish(_join(prefix, "\n\n".join(replies_text)), buttons=buttons(lang))
            return
        if problems:
            await progress.finish(_join(prefix, t("backend_error", lang, reason=plain_reason(problems[-1], lang))))
            return
        await progress.finish(_join(prefix, self._changes_text(before, after, lang)), buttons=buttons(lang))

    def _changes_text(self, before: Draft | None, after: Draft, lang: str) -> str:
        changes = describe_changes(before, after, lang)
        if not changes:
            return t("done_nothing", lang)
        return t("done_changes", lang, changes=("；" if lang == "zh" else "; ").join(changes))

    async def _after_drop(
        self, job: _Job, session: ChatSessionRecord, before: Draft | None, progress: Progress, prefix: str
    ) -> None:
        """After a dropped stream, poll the state instead of resending (30 s, then 60 s, up to ~5 min)."""
        poll = self.nemo.settings.poll_seconds
        waited = 0.0
        for delay in (poll, 2 * poll, 2 * poll, 2 * poll, 2 * poll):
            await asyncio.sleep(delay)
            waited += delay
            after = await self._draft(job.message.chat, session)
            if describe_changes(before, after):
                await progress.finish(_join(prefix, self._changes_text(before, after, job.lang)),
                                      buttons=buttons(job.lang))
                return
        await progress.finish(_join(prefix, t("stream_timeout", job.lang)), buttons=buttons(job.lang, "/status"))

    # -- exports --------------------------------------------------------------------------------

    async def _start_export(self, job: _Job) -> None:
        message, lang = job.message, job.lang
        chat = message.chat
        status = StatusMessage(job.replies)
        try:
            session = await self._session(chat, lang)
            draft = await self._draft(chat, session)
            if not draft.exportable:
                await status.finish(t("export_empty", lang))
                return
            output: dict[str, Any] = {"format": "mp4", "quality": "high"}
            if job.routed.resolution:
                output["resolution"] = job.routed.resolution
            job_state = await self._account(chat).submit_export(session.session_id, draft, output=output)
        except errors.SessionNotFound:
            await self._session_lost(chat, lang, status)
            return
        except errors.NemoError as exc:
            await status.finish(await self._explain(exc, lang, chat))
            return
        record = await self.repo.add_export(ExportRecord(
            render_id=job_state.id, chat_key=str(chat), session_id=session.session_id,
            identity_key=self._identity_key(chat), status="submitted", target=message.target, language=lang,
        ))
        log.info("engine.export.submitted render=%s chat=%s", record.render_id, chat)
        await status.show(t("export_started", lang))
        self._track_export(chat, self._follow_export(record, job.replies, status))

    async def _follow_export(self, record: ExportRecord, replies: Replies, status: StatusMessage | None) -> None:
        lang = record.language
        status = status or StatusMessage(replies)
        account = self.nemo.account(record.identity_key)
        try:
            if not status.sent:
                await status.show(t("export_resumed", lang))

            async def on_progress(update: RenderJob) -> None:
                await self.repo.update_export(
                    record.render_id, status=_storable(update.status), progress=min(max(update.progress, 0), 100)
                )
                if not update.done and not update.failed:
                    await status.show(t("export_progress", lang, progress=int(update.progress)))

            job = await account.wait_for_export(record.render_id, on_progress)
            await self.repo.update_export(record.render_id, status="completed", progress=100, url=job.url)
            await self._deliver(record, job, replies, status)
        except asyncio.CancelledError:
            raise
        except errors.ExportFailed as exc:
            await self.repo.update_export(record.render_id, status="failed", error=exc.message)
            await status.finish(t("export_failed", lang, reason=plain_reason(exc.message, lang)),
                                buttons=buttons(lang, "/export", "/status"))
        except errors.ExportTimeout:
            await self.repo.update_export(record.render_id, status="failed", error="timed out")
            await status.finish(t("export_timeout", lang))
        except errors.NemoError as exc:
            if isinstance(exc, errors.BadRequest) and exc.code == 404:
                # The backend no longer knows the job (localnemo restarted, say): nothing left to wait for.
                await self.repo.update_export(record.render_id, status="failed", error="unknown to the backend")
                await status.finish(t("export_failed", lang, reason=t("export_lost", lang)),
                                    buttons=buttons(lang, "/export", "/status"))
                return
            # Left unfinished in storage: the next start tries again.
            log.warning("engine.export.poll_failed render=%s kind=%s", record.render_id, type(exc).__name__)
            await status.finish(await self._explain(exc, lang, None))
        except Exception:
            log.exception("engine.export.internal_error render=%s", record.render_id)
            await status.finish(t("internal_error", lang))
        finally:
            await status.close()

    async def _deliver(self, record: ExportRecord, job: RenderJob, replies: Replies, status: StatusMessage) -> None:
        if not await self.repo.claim_delivery(record.render_id):
            log.info("engine.export.already_delivered render=%s", record.render_id)
            return
        lang = record.language
        url = job.url or ""
        # An adapter may ask for its own words with the result (a reel credits its clips' authors).
        caption = str((record.target or {}).get("caption") or "")
        try:
            limit = replies.capabilities.max_upload_bytes
            sent = False
            if limit > 0 and (job.size is None or job.size <= limit):
                # Downloading and re-uploading a result is work like any other: it takes a slot.
                async with self._slots:
                    sent = await self._send_file(url, limit, replies, caption or t("export_caption", lang))
            if sent:
                text = t("export_done", lang, url=url)
            else:
                size = format_size(job.size) if job.size else "?"
                text = t("export_link_only", lang, url=url, size=size) if limit > 0 else t(
                    "export_done", lang, url=url)
            await status.finish(_join(caption, text) if caption and not sent else text, buttons=buttons(lang))
            log.info("engine.export.delivered render=%s file=%s", record.render_id, sent)
        except BaseException:
            await self.repo.release_delivery(record.render_id)
            raise

    async def _send_file(self, url: str, limit: int, replies: Replies, caption: str) -> bool:
        with tempfile.TemporaryDirectory(prefix="nemobot-", dir=self.settings.temp_dir) as tmp:
            path = Path(tmp) / "video.mp4"
            await replies.show_working("upload_video")
            try:
                await self.nemo.download(url, path, max_bytes=limit)
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

    # -- errors in words ------------------------------------------------------------------------

    async def _explain(self, exc: errors.NemoError, lang: str, chat: ChatKey | None) -> str:
        if isinstance(exc, errors.OutOfCredits):
            if self.nemo.uses_fixed_token or chat is None:
                return t("out_of_credits_shared", lang)
            try:
                link = await self._account(chat).registration_link()
            except errors.NemoError:
                link = self.nemo.settings.web_base
            return t("out_of_credits", lang, link=link)
        if isinstance(exc, errors.SessionNotFound):
            return t("session_lost", lang)
        if isinstance(exc, errors.ExportBlocked):
            return t("export_blocked", lang)
        if isinstance(exc, errors.RateLimited):
            return t("rate_limited", lang)
        if isinstance(exc, errors.FileTooLarge | errors.UnsupportedFileType):
            return self._file_refusal(exc, getattr(exc, "filename", None) or "this file", lang)
        if isinstance(exc, errors.StreamTimeout):
            return t("stream_timeout", lang)
        if isinstance(exc, errors.StreamInterrupted | errors.BackendUnavailable):
            return t("backend_down", lang)
        if isinstance(exc, errors.TokenInvalid | errors.MissingClientId):
            return t("token_refused", lang)
        if isinstance(exc, errors.ExportFailed):
            return t("export_failed", lang, reason=plain_reason(exc.message, lang))
        return t("backend_error", lang, reason=plain_reason(exc.message, lang))


def _join(prefix: str, text: str) -> str:
    return f"{prefix}\n\n{text}" if prefix else text


def _num(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def _storable(status: str) -> Any:
    return status if status in ("pending", "processing", "completed", "failed") else "processing"


async def _repeat(action: Callable[[], Awaitable[None]], every: float) -> None:
    while True:
        await asyncio.sleep(every)
        with contextlib.suppress(Exception):
            await action()


__all__ = ["Engine", "RepositoryIdentities"]
