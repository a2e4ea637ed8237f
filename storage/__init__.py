"""What nemobot must remember across a restart, kept in SQLite through :class:`Repository` or in
PostgreSQL through :class:`storage.postgres.PostgresRepository`; both are a :class:`Store`.

``async with open_repository(settings.db) as repo:`` opens the one NEMOBOT_DB names (an SQLite file,
created with mode 0600, or a ``postgresql://`` URL) and runs the numbered migrations.
Nothing here imports ``bot``, ``adapters`` or ``localnemo``.
"""

from __future__ import annotations

from storage.errors import DuplicateExportError, RepositoryClosedError, SchemaVersionError, StorageError
from storage.migrations import MIGRATIONS, Migration, migrate, schema_version
from storage.opening import connect_repository, is_postgres_url, open_repository
from storage.protocol import Store
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
    "Migration",
    "Repository",
    "RepositoryClosedError",
    "SchemaVersionError",
    "StorageError",
    "Store",
    "connect_repository",
    "is_postgres_url",
    "migrate",
    "open_repository",
    "schema_version",
    "utc_now",
]
