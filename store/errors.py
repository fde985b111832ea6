"""Errors raised by the store. Each message names the study, database or rule involved, so the CLI
and the dashboard can show it as is. All derive from `StoreError`, except `ObjectiveError` (an
objective or pick rule that cannot be used), which is `schedules.objectives`' own (a ValueError)."""

from __future__ import annotations

from schedules.objectives import ObjectiveError  # noqa: F401  (one class: objectives and pick rules)


class StoreError(RuntimeError):
    """Base class of every store failure."""


class DatabaseUnavailable(StoreError):
    """The database cannot be used as a cachesearch store; nothing was written to it. `kind` says why
    (missing, not_store, foreign, not_sqlite, url, driver, unreachable, readonly, error), for the
    dashboard's page messages."""

    def __init__(self, kind: str, message: str):
        self.kind = kind
        super().__init__(message)


class StudyNotFound(StoreError, KeyError):
    """No study of that name in the database."""

    def __init__(self, name: str, known: list[str] | None = None):
        self.name = name
        hint = f" (studies here: {', '.join(known)})" if known else " (the database has no studies)"
        super().__init__(f"no study named '{name}'{hint}")

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


class StudyExists(StoreError):
    """A study of that name exists and differs from what the caller asked to create."""


class StudyBusy(StoreError):
    """Another live process runs this study (its heartbeat is fresh); the message names it."""


class ScheduleNotFound(StoreError, KeyError):
    """No schedule with that content hash in the database."""

    def __str__(self) -> str:
        return str(self.args[0])


class SchemaVersionError(StoreError):
    """The database was written by a store of another schema version (or is not a cachesearch store)."""


class NothingQualifies(StoreError):
    """An export pick rule matched no evaluation; the message says what the best available was."""


class ExportError(StoreError):
    """A schedule cannot be written in the requested format; the message says exactly why."""
