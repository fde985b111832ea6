"""Persistence of search results: studies, schedules by hash, evaluations, searcher state, thumbnails;
Pareto fronts, hypervolume history, and schedule export. Other packages use `Store` only.

Imports nothing from evaluators/search/dashboard (dependency rule: store -> schedules).
"""

from .api import Store
from .engine import DB_ENV, DEFAULT_URL, database_url
from .errors import (
    DatabaseUnavailable, ExportError, NothingQualifies, ObjectiveError, ScheduleNotFound, SchemaVersionError, StoreError,
    StudyBusy, StudyExists, StudyNotFound,
)
from .heartbeat import Heartbeat
from .names import STUDY_NAME_RULE, StudyNameError, check_study_name, safe_filename, safe_path
from .export import (
    FORMATS, PICK_HELP, Written, choose, export_front, export_pick, parse_pick, write_front, write_pick, write_schedule,
)
from .records import (
    BASELINE, DONE, EVALUATION_STATUSES, FAILED, QUEUED, RESULT_KINDS, RUNNING, SEARCH, STUDY_STATUSES, VALIDATION,
    EvaluationRecord, HVPoint, RunInfo, StudyInfo, StudySummary, format_age,
)
from schedules.objectives import Objective, Objectives

#: The old name of `schedules.objectives.Objective` (the same class, not a second type), kept while
#: branches written against it (the cluster tests) land; new code names `Objective`.
ObjectiveSpec = Objective

__all__ = [
    "DB_ENV", "DEFAULT_URL", "Store", "database_url", "Heartbeat", "RunInfo", "format_age", "DatabaseUnavailable",
    "StudyBusy",
    "FORMATS", "PICK_HELP", "Written", "choose", "export_front", "export_pick", "parse_pick", "write_front",
    "write_pick", "write_schedule",
    "ExportError", "NothingQualifies", "ObjectiveError", "ScheduleNotFound", "SchemaVersionError",
    "StoreError", "StudyExists", "StudyNotFound",
    "STUDY_NAME_RULE", "StudyNameError", "check_study_name", "safe_filename", "safe_path",
    "BASELINE", "DONE", "EVALUATION_STATUSES", "FAILED", "QUEUED", "RESULT_KINDS", "RUNNING", "SEARCH",
    "STUDY_STATUSES", "VALIDATION", "EvaluationRecord", "HVPoint", "Objective", "ObjectiveSpec", "Objectives",
    "StudyInfo", "StudySummary",
]
