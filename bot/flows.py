"""What one message does to a chat's project: uploads, edits, /new, and the reads (/status, /credits).

Each flow speaks through one status message (:mod:`bot.progress`) and turns backend errors into words
(:mod:`bot.explain`). Exports have their own module (:mod:`bot.exports`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bot import storyboard
from bot.explain import file_refusal, plain_reason, plain_warning
from bot.ffmpeg import ffmpeg_exe
from bot.intents import Intent, Routed, links_in
from bot.messages import Attachment, ChatKey, FileOpener, IncomingMessage, Replies
from bot.nemo import errors
from bot.nemo.draft import describe_changes, summarize
from bot.nemo.events import ErrorEvent, TextEvent, ToolCallEvent
from bot.nemo.timeline_model import Draft
from bot.nemo.uploads import UploadSource, check_file, kind_of
from bot.outcome import Outcome
from bot.progress import Progress, StatusMessage, buttons, join_text
from bot.sessions import Sessions
from bot.texts import backend_text, clean_backend_text, is_trailing_noise, t, tool_label
from storage import ChatSessionRecord

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One message on its way through the engine, with where to answer and how to open its files."""

    message: IncomingMessage
    replies: Replies
    files: FileOpener | None
    routed: Routed
    lang: str


class Flows:
    def __init__(self, sessions: Sessions, *, still_working_seconds: float, poll_seconds: float,
                 temp_dir: str | None = None, exporting: Callable[[str], bool] = lambda chat: False) -> None:
        self._sessions = sessions
        # Whether a chat's export is rendering: an edit made meanwhile goes into the next export, and says so.
        self._exporting = exporting
        self._still_working = still_working_seconds
        self._poll = poll_seconds
        self._temp_dir = temp_dir

    # -- reads ----------------------------------------------------------------------------------

    async def answer_read(self, job: Job) -> None:
        intent, lang, chat, replies = job.routed.intent, job.lang, job.message.chat, job.replies
        if intent in (Intent.START, Intent.HELP):
            await replies.send_text(t("start", lang), buttons=buttons(lang, "/status", "/credits"))
        elif intent is Intent.CREDITS:
            credits = await self._sessions.account(chat).credits()
            await replies.send_text(t(
                "credits", lang, available=_num(credits.available), frozen=_num(credits.frozen),
                total=_num(credits.total),
            ), buttons=buttons(lang, "/export", "/status", "/new"))
        elif intent is Intent.STATUS:
            record = await self._sessions.get_stored(chat)
            if record is None:
                await replies.send_text(t("status_empty", lang))
                return
            draft = await self._sessions.draft(chat, record)
            text = summarize(draft, lang) if draft.exportable else t("status_empty", lang)
            await replies.send_text(text, buttons=buttons(lang) if draft.exportable else ())
            if draft.exportable and replies.capabilities.images:
                await self._send_storyboard(draft, replies, lang, str(chat))

    async def _send_storyboard(self, draft: Draft, replies: Replies, lang: str, chat: str) -> None:
        """The timeline as a picture, after its summary in words. When it cannot be made, the words were
        enough: the log says why, the user is not bothered."""
        with tempfile.TemporaryDirectory(prefix="nemobot-storyboard-", dir=self._temp_dir) as tmp:
            path = Path(tmp) / "storyboard.png"
            try:
                plan = await storyboard.make_storyboard(draft, path, ffmpeg=ffmpeg_exe)
            except storyboard.StoryboardError as exc:
                log.warning("flows.storyboard.skipped chat=%s reason=%s", chat, exc)
                return
            await replies.send_image(path, caption=t("storyboard_caption", lang, n=len(plan.thumbnails)))

    # -- operations -----------------------------------------------------------------------------

    async def new(self, job: Job) -> Outcome:
        await self._sessions.forget(job.message.chat)
        await job.replies.send_text(t("new_session", job.lang))
        return Outcome.DONE

    async def session_lost(self, chat: ChatKey, lang: str, status: Progress | StatusMessage) -> None:
        await self._sessions.replace(chat, lang)
        await status.finish(backend_text("session_lost", lang, self._sessions.backend))

    async def upload_and_edit(self, job: Job) -> Outcome:
        """Upload the message's files, then send its words to the agent. FAILED when a file was refused or
        the edit did not happen (the user has been told which)."""
        async with Progress(job.replies, job.lang, self._still_working) as progress:
            try:
                return await self._upload_and_edit(job, progress)
            except errors.SessionNotFound:
                await self.session_lost(job.message.chat, job.lang, progress)
            except errors.NemoError as exc:
                await progress.finish(await self._sessions.words_for(exc, job.lang, job.message.chat))
        return Outcome.FAILED

    async def _upload_and_edit(self, job: Job, progress: Progress) -> Outcome:
        message, lang = job.message, job.lang
        media_links = [u for u in links_in(message.text) if kind_of(u.split("?", 1)[0]) is not None]
        instruction = message.text
        for link in media_links:
            instruction = instruction.replace(link, " ")
        instruction = " ".join(instruction.split())
        uploaded_note = ""
        outcome = Outcome.DONE
        if message.attachments or media_links:
            uploaded = await self._upload(job, media_links, progress)
            if uploaded is None:
                return Outcome.FAILED
            uploaded_note, refused = uploaded
            if refused:
                outcome = Outcome.FAILED
        if job.routed.intent is Intent.UPLOAD or not instruction:
            if uploaded_note:
                await progress.finish(uploaded_note, buttons=buttons(lang, "/export", "/status"))
            return outcome
        edited = await self._edit(job, instruction, progress, prefix=uploaded_note)
        return outcome if edited is Outcome.DONE else edited

    def _refusal(self, exc: errors.NemoError, name: str, lang: str) -> str:
        return file_refusal(exc, name, lang, upload_limit=self._sessions.max_upload_bytes)

    async def _upload(self, job: Job, links: Sequence[str], progress: Progress) -> tuple[str, bool] | None:
        """Check every file first, then stream the good ones in one request. Returns a note and whether any
        file was refused, or None when nothing could be uploaded (the user has been told why)."""
        message, lang = job.message, job.lang
        refusals: list[str] = []
        accepted: list[Attachment] = []
        limit = self._sessions.max_upload_bytes
        for attachment in message.attachments:
            try:
                check_file(attachment.filename, attachment.mime_type, attachment.size, limit)
                accepted.append(attachment)
            except errors.NemoError as exc:
                refusals.append(self._refusal(exc, attachment.filename, lang))
        # A public link the adapter cannot (or need not) open itself is fetched by the backend.
        fetched = [a for a in accepted if a.url and (job.files is None or a.ref is None)]
        by_url = [a.url for a in fetched if a.url]
        streamed = [a for a in accepted if a not in fetched]
        total = len(streamed) + len(by_url) + len(links)
        if total == 0:
            await progress.finish("\n".join(refusals))
            return None
        await progress.update(t("uploading", lang, count=total))
        session = await self._sessions.get(message.chat, lang)
        account = self._sessions.account(message.chat)
        names: list[str] = []
        warnings: list[str] = []
        if streamed:
            if job.files is None:
                raise RuntimeError("attachments without a way to open them")
            sources: list[UploadSource] = []
            for attachment in streamed:
                try:
                    sources.append(await job.files.open(attachment))
                except errors.NemoError as exc:
                    refusals.append(self._refusal(exc, attachment.filename, lang))
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
                warnings += [f.warning for f in result.files if f.warning]
        if by_url or links:
            result = await account.upload_urls(session.session_id, [*by_url, *links])
            names += [f.filename for f in result.files]
            warnings += [f.warning for f in result.files if f.warning]
        if not names:
            await progress.finish("\n".join(refusals))
            return None
        await self._sessions.draft(message.chat, session)  # the upload changed the timeline: remember it as seen
        shown = ", ".join(names)
        note = t("uploaded_short" if job.routed.intent is Intent.EDIT else "uploaded", lang, names=shown)
        # A file taken only in part (damaged): the backend's warning says how much of it can be used.
        cautions = [t("upload_warning", lang, warning=plain_warning(w, lang, self._sessions.backend)) for w in warnings]
        return "\n".join([*refusals, *cautions, note]), bool(refusals)

    async def _edit(self, job: Job, instruction: str, progress: Progress, *, prefix: str = "") -> Outcome:
        message, lang = job.message, job.lang
        chat = message.chat
        session = await self._sessions.get(chat, lang)
        before = Draft.model_validate(session.last_draft) if session.last_draft is not None else None
        if before is None:
            before = await self._sessions.draft(chat, session)
        await progress.update(join_text(prefix, t("thinking", lang)))
        replies_text: list[str] = []
        problems: list[str] = []
        account = self._sessions.account(chat)
        try:
            async with contextlib.aclosing(account.send_message(session.session_id, instruction)) as stream:
                async for event in stream:
                    if isinstance(event, TextEvent):
                        if replies_text and is_trailing_noise(event.text):
                            continue
                        replies_text.append(clean_backend_text(event.text, lang))
                        await progress.update(join_text(prefix, replies_text[-1]))
                    elif isinstance(event, ToolCallEvent):
                        percent = event.args.get("progress")
                        percent = percent if isinstance(percent, int) and not isinstance(percent, bool) else None
                        await progress.update(join_text(prefix, tool_label(event.name, lang, percent)))
                    elif isinstance(event, ErrorEvent):
                        problems.append(event.message)
        except errors.StreamInterrupted:
            dropped = backend_text("stream_interrupted", lang, self._sessions.backend)
            await progress.update(join_text(prefix, dropped))
            return await self._after_drop(job, session, before, progress, prefix)
        after = await self._sessions.draft(chat, session)
        changed = bool(describe_changes(before, after))
        # The agent reported an error and changed nothing: the edit did not happen, whatever it said before.
        # Without an error, an edit that changed nothing (not understood, already so) is not a success either.
        outcome = Outcome.DONE if changed else Outcome.FAILED if problems else Outcome.UNCHANGED
        later = [t("in_next_export", lang)] if changed and self._exporting(str(chat)) else []
        if replies_text:
            await progress.finish(join_text(prefix, "\n\n".join([*replies_text, *later])), buttons=buttons(lang))
            return outcome
        if problems:
            backend = self._sessions.backend
            reason = plain_reason(problems[-1], lang, backend)
            await progress.finish(join_text(prefix, backend_text("backend_error", lang, backend, reason=reason)))
            return outcome
        text = "\n\n".join([changes_text(before, after, lang), *later])
        await progress.finish(join_text(prefix, text), buttons=buttons(lang))
        return outcome

    async def _after_drop(
        self, job: Job, session: ChatSessionRecord, before: Draft | None, progress: Progress, prefix: str
    ) -> Outcome:
        """After a dropped stream, poll the state instead of resending (30 s, then 60 s, up to ~5 min)."""
        poll = self._poll
        for delay in (poll, 2 * poll, 2 * poll, 2 * poll, 2 * poll):
            await asyncio.sleep(delay)
            after = await self._sessions.draft(job.message.chat, session)
            if describe_changes(before, after):
                await progress.finish(join_text(prefix, changes_text(before, after, job.lang)),
                                      buttons=buttons(job.lang))
                return Outcome.DONE
        timeout = backend_text("stream_timeout", job.lang, self._sessions.backend)
        await progress.finish(join_text(prefix, timeout), buttons=buttons(job.lang, "/status"))
        # Not known to have happened: a caller that must be sure treats it as failed.
        return Outcome.FAILED


def changes_text(before: Draft | None, after: Draft, lang: str) -> str:
    changes = describe_changes(before, after, lang)
    if not changes:
        return t("done_nothing", lang)
    return t("done_changes", lang, changes=t("changes_joiner", lang).join(changes))


def _num(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
