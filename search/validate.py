"""Held-out validation, run side: re-score a study's front on prompts and seeds it did not calibrate on.

A search can only fit the prompts it is scored on; whether a schedule holds up beyond them is a
separate measurement. `validate_study` takes the study's own evaluation settings, swaps the prompt
set (and optionally the seeds), computes new all-compute references for those prompts, scores the
chosen search results exactly as the search did, and stores each as a `validation` result linked to
the one it re-scores (`provenance["validates"]`; read back with `store.validation`).

Step count: a plan is a row per denoising step, and there is no faithful map from a 20-step plan to
28 steps (which step reuses what depends on where the trajectory changes, which the search measured
at 20), so another step count is refused; search at that step count instead.

Resolution: a plan names steps, blocks and components, never tokens, so at another resolution the
same plan applies unchanged (the identity map); the references, MACs and latency are measured anew at
that resolution, and the results are a held-out set of their own. A pipeline that takes no
height/width (the embedded one, DiT) is refused, as is one the pipeline cannot run at.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from evaluators.config import EvaluationConfig
from store import DONE, SEARCH, VALIDATION, EvaluationRecord, StoreError



class ValidationRefused(ValueError):
    """The validation asked for cannot be done (the message names the option and why)."""


@dataclass(frozen=True)
class HeldOutSet:
    prompts: str = "heldout"
    num_prompts: int | None = None
    seeds: tuple[int, ...] | None = None
    steps: int | None = None
    resolution: tuple[int, int] | None = None     # (height, width); None: the study's

    def describe(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"prompts": self.prompts, "num_prompts": self.num_prompts,
                               "seeds": list(self.seeds) if self.seeds is not None else None}
        if self.resolution is not None:
            doc["resolution"] = f"{self.resolution[0]}x{self.resolution[1]}"
        return doc


def parse_resolution(text: str) -> tuple[int, int]:
    """`512x768` (height x width) -> (512, 768); `ValidationRefused` naming --resolution otherwise."""
    parts = text.lower().replace(" ", "").split("x")
    try:
        h, w = (int(v) for v in parts)
    except ValueError:
        raise ValidationRefused(f"--resolution: expected HxW such as 512x512, got {text!r}") from None
    if h < 8 or w < 8:
        raise ValidationRefused(f"--resolution: {h}x{w} is below 8x8")
    return h, w


def heldout_evaluation(calibration: EvaluationConfig, heldout: HeldOutSet) -> EvaluationConfig:
    """The study's evaluation settings on the held-out prompts/seeds; refuses what cannot be mapped."""
    if heldout.steps is not None and heldout.steps != calibration.num_inference_steps:
        raise ValidationRefused(
            f"--steps: the study's plans are per step at {calibration.num_inference_steps} steps; a plan "
            f"has no faithful mapping to {heldout.steps} steps (search at {heldout.steps} steps instead)")
    doc = calibration.model_dump(mode="json")
    doc.update(prompts=heldout.prompts, num_prompts=heldout.num_prompts)
    if heldout.seeds is not None:
        doc["seeds"] = list(heldout.seeds)
    if heldout.resolution is not None:
        doc["height"], doc["width"] = heldout.resolution
    try:
        config = EvaluationConfig(**doc)
        same = config.prompt_set_hash() == calibration.prompt_set_hash()
    except (ValueError, OSError) as exc:
        raise ValidationRefused(f"--prompts: {exc}") from None
    if same:
        raise ValidationRefused(f"--prompts: '{heldout.prompts}' with these seeds is the study's own calibration "
                                "set; validation needs prompts, seeds or a resolution the search did not see")
    return config


def targets(store: Any, study: str, ids: Sequence[int] | None) -> list[EvaluationRecord]:
    """The search results to validate: the given evaluation ids, else the study's front."""
    if not ids:
        return store.front(study)
    out = []
    for i in ids:
        try:
            r = store.evaluation(i)
        except StoreError:
            r = None
        if r is None or r.study != study or r.kind != SEARCH or r.status != DONE:
            raise ValidationRefused(f"--ids: evaluation {i} is not a done search result of study '{study}'")
        out.append(r)
    return out


def validate_study(store: Any, study: str, heldout: HeldOutSet, *, ids: Sequence[int] | None = None,
                   pool: Any = None, log: Callable[[str], None] = print,
                   progress: Callable[..., None] | None = None) -> tuple[str, list[EvaluationRecord]]:
    """Score the chosen results on the held-out set and store them; returns (the set's
    prompt_set_hash, the originals). Results already validated on this set are not scored again."""
    info = store.get_study(study)
    doc = info.config.get("evaluation")
    if not doc:
        raise ValidationRefused(f"study '{study}' scores a synthetic objective: there are no prompts to hold out")
    evaluation = heldout_evaluation(EvaluationConfig(**doc), heldout)
    chosen = targets(store, study, ids)
    if not chosen:
        raise ValidationRefused(f"study '{study}' has no done search result to validate yet")
    set_hash = evaluation.prompt_set_hash()
    done = {r.schedule_hash for r in store.evaluations(study, DONE, per_prompt=False, kind=VALIDATION,
                                                       prompt_set_hash=set_hash)}
    todo = [r for r in chosen if r.schedule_hash not in done]
    log(f"validating {len(todo)} of {len(chosen)} results of '{study}' on {heldout.prompts} "
        f"({len(chosen) - len(todo)} already done on this set)")
    if not todo:
        return set_hash, chosen
    from evaluators import make_pool
    own = pool is None
    pool = pool if pool is not None else _make_pool(make_pool, evaluation, heldout, progress)
    try:
        _check_resolution(pool, heldout)
        by_hash = {r.schedule_hash: r for r in todo}
        schedules = [store.schedule(h) for h in by_hash]
        for n, result in enumerate(pool.evaluate(schedules), 1):
            original = by_hash[result.schedule.hash]
            result.schedule = result.schedule.with_info(provenance={"validates": original.id, **heldout.describe()})
            store.record_evaluation(study, result, kind=VALIDATION)
            log(f"  [{n}/{len(todo)}] evaluation {original.id}: {result.status}"
                + (f" ({result.error})" if result.error else ""))
    finally:
        if own:
            pool.close()
    return set_hash, chosen


def _make_pool(make_pool: Callable[..., Any], evaluation: EvaluationConfig, heldout: HeldOutSet,
               progress: Callable[..., None] | None) -> Any:
    """The pool for the held-out set; at another resolution, a pipeline that cannot run there is a
    refusal naming --resolution, not a crash."""
    if heldout.resolution is None:
        return make_pool(evaluation, progress)
    try:
        return make_pool(evaluation, progress)
    except (RuntimeError, ValueError) as exc:
        h, w = heldout.resolution
        raise ValidationRefused(f"--resolution: the pipeline cannot run at {h}x{w}: {exc}") from None


def _check_resolution(pool: Any, heldout: HeldOutSet) -> None:
    if heldout.resolution is None:
        return
    sampling = pool.sampling_spec()
    if (sampling.height, sampling.width) != heldout.resolution:
        h, w = heldout.resolution
        raise ValidationRefused(f"--resolution: asked for {h}x{w} but the pipeline made {sampling.height}x"
                                f"{sampling.width} images (it takes no height/width)")
