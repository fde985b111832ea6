"""Persistence of search results: studies, schedules by hash, evaluations, searcher state, thumbnails;
Pareto fronts, hypervolume history, and schedule export. Other packages use `Store` only.

Imports nothing from evaluators/search/dashboard (dependency rule: store -> schedules).
"""

from .api import DEFAULT_URL, Store
from .errors import (
    ExportError, NothingQualifies, ObjectiveError, ScheduleNotFound, SchemaVersionError, StoreError,
    StudyExists, StudyNotFound,
)
from .export import FORMATS, PICK_HELP, choose, export_front, export_pick, parse_pick, write_schedule
from .records import (
    COST_OBJECTIVES, DONE, EVALUATION_STATUSES, FAILED, QUEUED, RUNNING, STUDY_STATUSES, EvaluationRecord,
    HVPoint, ObjectiveSpec, StudyInfo, StudySummary,
)

__all__ = [
    "DEFAULT_URL", "Store",
    "FORMATS", "PICK_HELP", "choose", "export_front", "export_pick", "parse_pick", "write_schedule",
    "ExportError", "NothingQualifies", "ObjectiveError", "ScheduleNotFound", "SchemaVersionError",
    "StoreError", "StudyExists", "StudyNotFound",
    "COST_OBJECTIVES", "DONE", "EVALUATION_STATUSES", "FAILED", "QUEUED", "RUNNING", "STUDY_STATUSES",
    "EvaluationRecord", "HVPoint", "ObjectiveSpec", "StudyInfo", "StudySummary",
]
