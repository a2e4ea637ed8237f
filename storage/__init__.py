"""What nemobot must remember across a restart, kept in SQLite through :class:`Repository`.

``async with Repository.open(path) as repo:`` opens (or creates, mode 0600) the database and runs the
numbered migrations. Nothing here imports ``bot``, ``adapters`` or ``localnemo``.
"""

from __future__ import annotations

from storage.errors import DuplicateExportError, RepositoryClosedError, SchemaVersionError, StorageError
from storage.migrations import MIGRATIONS, migrate, schema_version
from storage.records import (
    EXPORT_STATUSES,
    ChatSessionRecord,
    ExportRecord,
    ExportStatus,
    IdentityRecord,
    utc_now,
)
from storage.repository import Repository

__all__ = [
    "EXPORT_STATUSES",
    "MIGRATIONS",
    "ChatSessionRecord",
    "DuplicateExportError",
    "ExportRecord",
    "ExportStatus",
    "IdentityRecord",
    "Repository",
    "RepositoryClosedError",
    "SchemaVersionError",
    "StorageError",
    "migrate",
    "schema_version",
    "utc_now",
]
