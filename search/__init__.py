"""Searchers, the search loop and the `cachesearch` CLI.

    from schedules.objectives import Objective, Objectives     # the one objectives module
    from search import SearchSpace, EcadSearcher
    searcher = EcadSearcher(space, objectives, {"population": 72}, seed=0)
    batch = searcher.ask(8); searcher.tell(results); state = searcher.state()   # JSON, resumable

Searchers: `ecad` (DEAP NSGA-II), `dp` (calibrated Bellman DP + knapsack, on-policy refinement, BOSS
timesteps), `bayes` (Optuna TPE/GP over a structured family), `random`, `heuristics`. The loop
(`SearchLoop`) owns budgets, dispatch, persistence, progress and resume; `run_study` assembles it all
from a YAML config. Exports resolve lazily so `cachesearch studies` starts without Optuna or DEAP.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Searcher": "base", "SearcherSettings": "base", "ProfileRequest": "base",
    "SearchSpace": "space", "fine_grid": "space", "KINDS": "space",
    "EcadSearcher": "ecad", "DPSearcher": "dp_searcher", "BayesSearcher": "bayes",
    "RandomSearcher": "random_search", "HeuristicsSearcher": "heuristics", "space_heuristics": "heuristics",
    "SearchLoop": "loop", "Budget": "loop", "Outcome": "loop",
    "StudyConfig": "config", "ConfigError": "config", "load_config": "config", "validate_config": "config",
    "SEARCHERS": "registry", "run_study": "study", "StudyError": "study",
    "SyntheticPool": "synthetic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'search' has no attribute {name!r}")
    return getattr(import_module(f".{module}", __name__), name)
