"""Held-out validation results, read side: each front member beside its re-scoring on prompts and
seeds the study did not calibrate on (`cachesearch validate` writes them, `search.validate`).

A validation result is an evaluation of kind `validation` in the same study, for the same schedule
hash, under another prompt set (its `prompt_set_hash`), with `provenance["validates"]` = the id of
the search result it re-scores. It never enters a front, hypervolume or budget. The CLI, the
dashboard and `export --held-out` all read the pairs from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schedules.objectives import Objective

from .records import DONE, SEARCH, VALIDATION, EvaluationRecord

#: quality lost on held-out prompts beyond which a member is flagged (the quality's own unit: dB for PSNR)
DEFAULT_MAX_DROP = 2.0


@dataclass(frozen=True)
class ValidationPair:
    """A search result and its held-out re-scoring (None: not validated on this set)."""

    original: EvaluationRecord
    heldout: EvaluationRecord | None
    quality: Objective

    @property
    def calibration_quality(self) -> float | None:
        return self.original.objective(self.quality.name)

    @property
    def heldout_quality(self) -> float | None:
        return self.heldout.objective(self.quality.name) if self.heldout is not None else None

    @property
    def drop(self) -> float | None:
        """How much worse the held-out quality is (positive = worse), in the quality's unit."""
        cal, held = self.calibration_quality, self.heldout_quality
        if cal is None or held is None:
            return None
        return cal - held if self.quality.maximize else held - cal

    def flagged(self, max_drop: float = DEFAULT_MAX_DROP) -> bool:
        return self.drop is not None and self.drop > max_drop


def heldout_sets(store: Any, study: str) -> list[dict[str, Any]]:
    """The held-out sets a study was validated on, newest first: prompt_set_hash, what it was
    (prompts, num_prompts, seeds, resolution as recorded in provenance; resolution None: the
    study's) and how many results it holds."""
    sets: dict[str, dict[str, Any]] = {}
    for r in store.evaluations(study, DONE, per_prompt=False, kind=VALIDATION):
        entry = sets.setdefault(r.prompt_set_hash or "", {
            "prompt_set_hash": r.prompt_set_hash, "prompts": r.provenance.get("prompts"),
            "num_prompts": r.provenance.get("num_prompts"), "seeds": r.provenance.get("seeds"),
            "resolution": r.provenance.get("resolution"), "results": 0, "last": 0.0})
        entry["results"] += 1
        entry["last"] = max(entry["last"], r.recorded_at or 0.0)
    return sorted(sets.values(), key=lambda e: -e["last"])


def validation_pairs(store: Any, study: str, quality: str | None = None, *,
                     prompt_set_hash: str | None = None, front_only: bool = True) -> list[ValidationPair]:
    """Each front member (or every validated search result, `front_only=False`) with its held-out
    result on one set (default: the newest set validated)."""
    info = store.get_study(study)
    q = info.pair(quality, None)[0]
    if prompt_set_hash is None:
        sets = heldout_sets(store, study)
        prompt_set_hash = sets[0]["prompt_set_hash"] if sets else None
    held = {}
    if prompt_set_hash is not None:
        held = {r.schedule_hash: r for r in store.evaluations(study, DONE, per_prompt=False, kind=VALIDATION,
                                                           prompt_set_hash=prompt_set_hash)}
    if front_only:
        originals = store.front(study, q.name)
    else:
        originals = [r for r in store.evaluations(study, DONE, per_prompt=False, kind=SEARCH) if r.schedule_hash in held]
    return [ValidationPair(r, held.get(r.schedule_hash), q) for r in originals]
