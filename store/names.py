"""Names users type that end up in the database or on disk: the study-name rule, and the one helper
that turns any user text into a file name that cannot leave its folder.

Why both: a study name is validated when the study is created (a documented rule, an error naming
it), but databases written before the rule, or by other programs, may still hold any text; so every
file name built from a study name, a prompt set or a schedule label also goes through
`safe_filename`, and `safe_path` checks that the result stays inside the folder it was meant for.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from .errors import StoreError

STUDY_NAME_MAX = 100
STUDY_NAME_RULE = (f"1-{STUDY_NAME_MAX} characters: letters, digits, '.', '_', '-' or '+', starting with a "
                   "letter or digit")
_STUDY_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._+-]{{0,{STUDY_NAME_MAX - 1}}}")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")
FILENAME_MAX = 120


class StudyNameError(StoreError):
    """A study name outside the documented rule (`STUDY_NAME_RULE`)."""


def check_study_name(name: object) -> str:
    """`name` if it follows `STUDY_NAME_RULE`, else `StudyNameError` quoting the name and the rule."""
    if not isinstance(name, str) or not _STUDY_NAME.fullmatch(name):
        shown = name if isinstance(name, str) else type(name).__name__
        raise StudyNameError(f"study name {shown!r} is not allowed: use {STUDY_NAME_RULE}")
    return name


def safe_filename(*parts: object, max_length: int = FILENAME_MAX) -> str:
    """One path component made of `parts` joined by '_': every run of characters outside
    [A-Za-z0-9._+-] (separators, '..', spaces, control characters) becomes '_', leading dots are
    dropped (no hidden files, no '..'); never empty. A name longer than `max_length` is cut and ends
    in a hash of the whole text, so names that differ only past the cut stay different."""
    text = "_".join(str(p) for p in parts)
    name = _UNSAFE.sub("_", text).lstrip(".")
    if len(name) > max_length:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:10]
        name = f"{name[:max_length - 11]}_{digest}"
    return name.rstrip(".") or "unnamed"


def safe_path(folder: str | os.PathLike[str], *parts: object, suffix: str = "") -> Path:
    """`folder / safe_filename(*parts) + suffix`, checked to resolve inside `folder`."""
    root = Path(folder)
    path = root / (safe_filename(*parts) + suffix)
    if path.resolve().parent != root.resolve():
        raise StoreError(f"refusing to write {path}: it is not inside {root}")
    return path
