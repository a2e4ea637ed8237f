"""Which NemoVideo session and identity a chat uses.

The session-key policy (in groups one session per user, or one shared by the group), the identity each
chat is billed to, and finding or creating a chat's session in storage. The client's identity store
lives here too: it keeps the anonymous identities in the bot's database.
"""

from __future__ import annotations

import logging
from typing import Literal

from bot.config import BotSettings
from bot.explain import explain
from bot.messages import ChatKey
from bot.nemo import errors
from bot.nemo.auth import IdentityRecord
from bot.nemo.client import NemoAccount, NemoClient
from bot.nemo.timeline_model import Draft
from bot.texts import Backend
from storage import ChatSessionRecord, Store
from storage import IdentityRecord as StoredIdentity

log = logging.getLogger(__name__)


class SessionPolicy:
    """The session a message belongs to: in groups one per user unless NEMOBOT_GROUP_SESSIONS=shared."""

    def __init__(self, group_sessions: Literal["user", "shared"] = "user") -> None:
        self.group_sessions = group_sessions

    @classmethod
    def from_settings(cls, settings: BotSettings) -> SessionPolicy:
        return cls(settings.group_sessions)

    def chat_key(self, platform: str, chat: str, user: str, *, is_group: bool) -> ChatKey:
        per_user = is_group and self.group_sessions == "user"
        return ChatKey(platform, chat, user if per_user else None)


def identity_key(chat: ChatKey) -> str:
    # Each chat its own anonymous identity (its own free credits); the client maps every key to one
    # shared identity when NEMO_TOKEN is set.
    return f"{chat.platform}:{chat.chat}"


class RepositoryIdentities:
    """The client's identity store, kept in the bot's database."""

    def __init__(self, repo: Store) -> None:
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


class Sessions:
    """A chat's NemoVideo session: found in storage, or created on first use."""

    def __init__(self, nemo: NemoClient, repo: Store, *, backend: Backend = "hosted") -> None:
        self._nemo = nemo
        self._repo = repo
        self.backend: Backend = backend  # how messages name the backend (the embedded one: "the local editor")

    @property
    def max_upload_bytes(self) -> int:
        return self._nemo.settings.max_upload_bytes

    def account(self, chat: ChatKey) -> NemoAccount:
        return self._nemo.account(identity_key(chat))

    def account_for(self, identity: str) -> NemoAccount:
        """The account an export was submitted with (stored with it)."""
        return self._nemo.account(identity)

    async def get(self, chat: ChatKey, lang: str) -> ChatSessionRecord:
        record = await self._repo.get_chat_session(str(chat))
        if record is not None:
            return record
        info = await self.account(chat).create_session(f"nemobot {chat}", lang)
        record = ChatSessionRecord(
            chat_key=str(chat), identity_key=identity_key(chat), session_id=info.session_id,
            task_id=info.task_id, language=lang,
        )
        log.info("engine.session.created chat=%s", chat)
        return await self._repo.save_chat_session(record)

    async def get_stored(self, chat: ChatKey) -> ChatSessionRecord | None:
        """The chat's session if it has one; a read does not create one."""
        return await self._repo.get_chat_session(str(chat))

    async def forget(self, chat: ChatKey) -> None:
        await self._repo.delete_chat_session(str(chat))

    async def replace(self, chat: ChatKey, lang: str) -> None:
        """The backend lost the session: start a new one."""
        await self.forget(chat)
        await self.get(chat, lang)

    async def draft(self, chat: ChatKey, session: ChatSessionRecord) -> Draft:
        """The session's timeline now, remembered as the last one the user has seen."""
        state = await self.account(chat).state(session.session_id)
        await self._repo.update_last_draft(str(chat), state.draft.model_dump(mode="json"))
        return state.draft

    async def registration_link(self, chat: ChatKey | None) -> str | None:
        """Where the chat's user registers for more credits; None when every chat shares one token."""
        if self._nemo.uses_fixed_token or chat is None:
            return None
        try:
            return await self.account(chat).registration_link()
        except errors.NemoError:
            return self._nemo.settings.web_base

    async def words_for(self, exc: errors.NemoError, lang: str, chat: ChatKey | None) -> str:
        """The plain-language answer to a backend error, with the registration link it may need."""
        link = await self.registration_link(chat) if isinstance(exc, errors.OutOfCredits) else None
        return explain(exc, lang, registration_link=link, upload_limit=self.max_upload_bytes, backend=self.backend)
