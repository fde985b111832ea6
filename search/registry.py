"""The searchers, registered in one place.

Adding a searcher is one entry in `_ENTRIES` (its name and where its class lives) plus its class (a
`base.Searcher` with that `name`, its `Settings` model and `quick_settings` for a tiny study).
Everything else derives from this table: the study config's `searcher:` union (one `{name, seed,
settings}` model per entry, settings checked by the searcher's own model), the CLI's help (`NAMES`,
without importing any searcher), and the shared contract test (`tests/test_searcher_contract.py`:
resume equivalence, no duplicates, admissible asks, provenance, JSON state round trip), which runs for
every entry without being told.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import Searcher

_ENTRIES = {
    "ecad": "search.ecad:EcadSearcher",
    "dp": "search.dp_searcher:DPSearcher",
    "bayes": "search.bayes:BayesSearcher",
    "random": "search.random_search:RandomSearcher",
    "heuristics": "search.heuristics:HeuristicsSearcher",
}
#: The registered names, in registration order (cheap: imports no searcher, e.g. for the CLI's help).
NAMES = tuple(_ENTRIES)


def _load() -> dict[str, type["Searcher"]]:
    out = {}
    for name, where in _ENTRIES.items():
        module, cls_name = where.split(":")
        cls = getattr(import_module(module), cls_name)
        if cls.name != name:
            raise RuntimeError(f"searcher registry: {where} is named {cls.name!r}, registered as {name!r}")
        out[name] = cls
    return out


def __getattr__(attr: str) -> Any:
    if attr == "SEARCHERS":            # name -> class, imported on first use (DEAP, Optuna ...)
        value = _load()
        globals()["SEARCHERS"] = value
        return value
    raise AttributeError(f"module 'search.registry' has no attribute {attr!r}")
