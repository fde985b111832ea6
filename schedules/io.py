"""Reading and writing schedule files. Loading only parses JSON: nothing in a file is ever executed."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Union

from .errors import ScheduleError
from .schedule import Schedule

PathLike = Union[str, "os.PathLike[str]"]

SCHEMA_PATH = Path(__file__).with_name("schedule.schema.json")


def load_schedule(source: PathLike | Schedule | dict) -> Schedule:
    """Load a schedule from a JSON file path, a parsed JSON object, or pass a Schedule through."""
    if isinstance(source, Schedule):
        return source
    if isinstance(source, dict):
        return Schedule.from_dict(source)
    path = Path(source)
    if not path.exists():
        raise ScheduleError("file not found", source=str(path))
    if path.is_dir():
        raise ScheduleError("is a directory, expected a schedule .json file", source=str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ScheduleError("is not UTF-8 text (a schedule file is JSON)", source=str(path)) from None
    return Schedule.from_json(text, source=str(path))


def save_schedule(schedule: Schedule, path: PathLike) -> Path:
    """Write atomically (temp file + rename) so an interrupted export never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(schedule.to_json() + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def json_schema() -> dict:
    """The published JSON Schema of the file format (shipped as schedules/schedule.schema.json)."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
