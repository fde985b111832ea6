"""Errors raised by the schedule contract.

Every error names *where* the problem is (a JSON field path, a file, a model attribute) so a user can
fix the input without reading our code. They all derive from `ScheduleError`, so callers that only
want "is this schedule usable?" catch one type.
"""

from __future__ import annotations


class ScheduleError(ValueError):
    """A schedule file or object is malformed. `field` is a dotted path into the JSON document."""

    def __init__(self, message: str, field: str | None = None, source: str | None = None):
        self.field = field
        self.source = source
        where = ""
        if source:
            where += f"{source}: "
        if field:
            where += f"{field}: "
        super().__init__(where + message)


class ScheduleMismatchError(ScheduleError):
    """The schedule was made for a different model (class, block groups, block counts, components)."""


class ScheduleStepError(ScheduleError):
    """A pipeline call ran a different number of denoising steps than the schedule was made for."""


class ScheduleConflictError(ScheduleError):
    """Another caching method (or another schedule) is already attached to the model."""
