"""The exceptions storage raises on purpose, so callers can tell them from sqlite3's own."""

from __future__ import annotations


class StorageError(Exception):
    """Base of every error the repository raises deliberately."""


class SchemaVersionError(StorageError):
    """The database was written by a newer nemobot than this one; opening it could corrupt it."""

    def __init__(self, path: str, found: int, known: int) -> None:
        self.path = path
        self.found = found
        self.known = known
        super().__init__(
            f"database {path} has schema version {found}, but this nemobot knows only versions up to "
            f"{known}; upgrade nemobot or point it at another database file"
        )


class DuplicateExportError(StorageError):
    """An export with this render id is already recorded (a render id is the backend's, and unique)."""

    def __init__(self, render_id: str) -> None:
        self.render_id = render_id
        super().__init__(f"export {render_id!r} is already recorded")


class RepositoryClosedError(StorageError):
    """The repository was used after ``close()``."""

    def __init__(self) -> None:
        super().__init__("the repository is closed")
