"""The searchers, registered in one place.

Adding a searcher is one entry in `SEARCHERS` plus its class (a `base.Searcher` with a `name`, its
`Settings` model and `quick_settings` for a tiny study). Everything else derives from this table:
the study config's `searcher:` union (one `{name, seed, settings}` model per entry, settings checked
by the searcher's own model), the CLI's help, and the shared contract test
(`tests/test_searcher_contract.py`: resume equivalence, no duplicates, admissible asks, JSON state
round trip), which runs for every entry without being told.
"""

from __future__ import annotations

from .base import Searcher
from .bayes import BayesSearcher
from .dp_searcher import DPSearcher
from .ecad import EcadSearcher
from .heuristics import HeuristicsSearcher
from .random_search import RandomSearcher

SEARCHERS: dict[str, type[Searcher]] = {
    cls.name: cls for cls in (EcadSearcher, DPSearcher, BayesSearcher, RandomSearcher, HeuristicsSearcher)}
