"""Write chosen schedules out of a store: one file picked by a rule, or the whole front.

Pick rules (the `--pick` of `cachesearch export`):
    knee                          the knee of the (quality, cost) front (`schedules.objectives.knee_index`)
    fastest-with psnr>=30         the highest speedup among evaluations meeting the bound
    fastest-with quality>=30      `quality` means the study's primary quality objective
    best-with speedup>=2          the best quality among evaluations meeting the bound
    best-with latency_speedup>=1.5
    fastest-with psnr>=30 on cost latency_speedup_model: pass cost= (the CLI's --cost)
Operators: >=, >, <=, < (so `fastest-with latent_mse<=0.01` works for lower-is-better metrics).

A written schedule file is the contract's format, carrying the measured metrics and provenance (study,
searcher, prompt set hash, seeds, versions, evaluation id, pick rule) via `Schedule.with_info`; its
content hash is unchanged, so it can be looked up in any store. `fmt="cache-dit"` writes a cache-dit
config instead when the plan fits (see `store.cachedit`), else raises `ExportError` saying why.
"""

from __future__ import annotations

import math
import operator
import os
import re
import time
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from schedules import FORMAT_VERSION, Schedule, save_schedule
from schedules.objectives import FIGURE_NAMES
from schedules.provenance import describe, origin

from .api import Store
from .cachedit import cache_dit_yaml
from .errors import ExportError, NothingQualifies, ObjectiveError
from .names import safe_path
from .records import DONE, SEARCH, EvaluationRecord, StudyInfo

FORMATS = ("cachesearch", "cache-dit")
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
_RULE = re.compile(r"^\s*(fastest-with|best-with)\s*[: ]\s*([A-Za-z_][\w.\-]*)\s*(>=|<=|>|<)\s*"
                   r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
PICK_HELP = "knee | fastest-with <metric>>=<Q> | best-with speedup>=<S>  (e.g. 'fastest-with psnr>=30')"


@dataclass(frozen=True)
class Pick:
    """A parsed pick rule. `bound` is (objective name as written, operator, threshold) or None."""

    kind: str                                   # "knee", "fastest-with", "best-with"
    bound: tuple[str, str, float] | None = None
    text: str = ""


def parse_pick(text: str) -> Pick:
    """Parse a pick rule, or `ObjectiveError` showing the accepted forms."""
    if text.strip().lower() == "knee":
        return Pick("knee", None, "knee")
    m = _RULE.match(text)
    if not m:
        raise ObjectiveError(f"cannot read pick rule {text!r}; expected {PICK_HELP}")
    kind, name, op, value = m.groups()
    return Pick(kind, (name, op, float(value)), f"{kind} {name}{op}{value}")


def _resolve_name(name: str, quality: str, cost: str) -> str:
    return {"quality": quality, "speedup": cost, "cost": cost}.get(name, name)


def _heldout_candidates(store: Store, study: str, quality: str) -> dict[int, tuple[EvaluationRecord, EvaluationRecord]]:
    """Front members validated on the newest held-out set: id -> (the member with its held-out
    metrics in place of its calibration ones, the member as stored)."""
    from .validation import validation_pairs
    pairs = [p for p in validation_pairs(store, study, quality) if p.heldout_quality is not None]
    if not pairs:
        raise NothingQualifies(f"no front member of study '{study}' has a held-out result yet: run "
                               f"`cachesearch validate {study}` first")
    return {p.original.id: (replace(p.original, metrics={**p.original.metrics, **p.heldout.metrics}), p.original)
            for p in pairs}


def _knee_of(records: list[EvaluationRecord], pair: Any) -> EvaluationRecord | None:
    """The knee (schedules.objectives.knee_index) of the front of `records` over `pair`."""
    from schedules import objectives as obj

    from .frontier import points_of
    pts, idx = points_of(records, pair)
    if not len(pts):
        return None
    mask = obj.nondominated(pts, pair.maximise_flags)
    front = [records[idx[i]] for i in range(len(idx)) if mask[i]]
    sign = 1.0 if pair[1].maximize else -1.0
    front.sort(key=lambda r: (sign * (r.objective(pair[1].name) or 0.0), r.id))
    fpts, _ = points_of(front, pair)
    return front[obj.knee_index(fpts, pair.maximise_flags)]


def choose(store: Store, study: str, pick: str | Pick, *, quality: str | None = None,
           cost: str | None = None, heldout: bool = False) -> EvaluationRecord:
    """The evaluation a rule picks (done evaluations only), or `NothingQualifies` with the nearest miss.
    `heldout`: among the front members validated on held-out prompts (`cachesearch validate`), on
    their held-out metrics; the record returned is the member as stored."""
    rule = parse_pick(pick) if isinstance(pick, str) else pick
    info = store.get_study(study)
    pair = info.pair(quality, cost)                  # roles checked: a cost as quality is an error
    quality, cost = pair[0].name, pair[1].name
    held = _heldout_candidates(store, study, quality) if heldout else None
    if rule.kind == "knee":
        knee = store.knee(study, quality, cost) if held is None else _knee_of([h for h, _ in held.values()], pair)
        if knee is None:
            raise NothingQualifies(f"study '{study}' has no done evaluation with finite {quality} and {cost} "
                                   "yet, so it has no front and no knee")
        return knee if held is None else held[knee.id][1]

    assert rule.bound is not None
    name, op, threshold = rule.bound
    bound_name = _resolve_name(name, quality, cost)
    pool = store.evaluations(study, DONE, per_prompt=False, kind=SEARCH) if held is None else [
        h for h, _ in held.values()]
    done = [r for r in pool if r.objective(quality) is not None and r.objective(cost) is not None]
    if not done:
        raise NothingQualifies(f"study '{study}' has no done evaluation with finite {quality} and {cost} yet")
    if all(r.objective(bound_name) is None for r in done):
        raise ObjectiveError(f"no evaluation of study '{study}' reports '{bound_name}' (rule {rule.text!r}); "
                             f"metrics present: {sorted({k for r in done for k in r.metrics})}")
    ok = [r for r in done if (v := r.objective(bound_name)) is not None and _OPS[op](v, threshold)]
    if not ok:
        better = max if op in (">=", ">") else min
        near = better((r for r in done if r.objective(bound_name) is not None),
                      key=lambda r: r.objective(bound_name) or 0.0)
        raise NothingQualifies(
            f"no done evaluation of study '{study}' has {bound_name} {op} {threshold:g}: the closest is "
            f"evaluation {near.id} with {bound_name} = {near.objective(bound_name):.4g} "
            f"({quality} {near.objective(quality):.4g}, {cost} {near.objective(cost):.4g}x)")
    sq = 1.0 if pair[0].maximize else -1.0
    sc = 1.0 if pair[1].maximize else -1.0
    if rule.kind == "fastest-with":
        key = lambda r: (sc * (r.objective(cost) or 0.0), sq * (r.objective(quality) or 0.0), -r.id)  # noqa: E731
    else:
        key = lambda r: (sq * (r.objective(quality) or 0.0), sc * (r.objective(cost) or 0.0), -r.id)  # noqa: E731
    best = max(ok, key=key)
    return best if held is None else held[best.id][1]


def _json_number(value: Any) -> Any:
    """Finite floats as numbers; inf/nan as strings so the file stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def _find_seeds(config: dict[str, Any]) -> Any:
    """`seeds` at the top of the study config or one section down (e.g. config['evaluation'])."""
    if "seeds" in config:
        return config["seeds"]
    for value in config.values():
        if isinstance(value, dict) and "seeds" in value:
            return value["seeds"]
    return None


def _versions() -> dict[str, str]:
    out = {"schedule_format": str(FORMAT_VERSION)}
    for dist in ("cachesearch", "torch", "diffusers"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def annotated_schedule(store: Store, info: StudyInfo, record: EvaluationRecord, rule: str | None = None,
                       quality: str | None = None, cost: str | None = None) -> Schedule:
    """The stored schedule with its measured metrics and provenance attached (hash unchanged)."""
    metrics: dict[str, Any] = {k: _json_number(v) for k, v in record.metrics.items()}
    for name in FIGURE_NAMES:
        value = getattr(record, name)
        if value is not None:
            metrics[name] = _json_number(value)
    provenance: dict[str, Any] = dict(record.provenance)
    versions = provenance.get("versions") or info.config.get("versions")
    provenance.update({
        "study": info.name,
        "searcher": provenance.get("searcher") or info.searcher,    # who proposed it (an import: its study's)
        "study_searcher": info.searcher,
        "origin": origin(record.provenance),
        "found_by": describe(record.provenance),
        "searcher_settings": info.searcher_settings,
        "model_signature": info.model_signature,
        "prompt_set_hash": record.prompt_set_hash,
        "seeds": _find_seeds(info.config),
        "evaluation_id": record.id,
        "step": record.step,
        "worker": record.worker,
        "evaluated_at": record.finished_at,
        "exported_at": time.time(),
        "objectives": {"quality": quality or info.quality, "cost": cost or info.cost},
        "kind": record.kind,
        "versions": versions or _versions(),
    })
    if not versions:
        provenance["versions_note"] = "versions of the exporting environment (the evaluation recorded none)"
    if rule:
        provenance["pick"] = rule
    return store.schedule(record.schedule_hash).with_info(metrics=metrics, provenance=provenance)


def _header(schedule: Schedule) -> list[str]:
    prov, met = schedule.provenance, schedule.metrics
    return [f"cachesearch schedule {schedule.hash}",
            f"study {prov.get('study')} / searcher {prov.get('searcher')} / evaluation {prov.get('evaluation_id')}"
            f" / pick {prov.get('pick', '-')}",
            f"found by {prov.get('found_by', 'unknown')}",
            f"model {schedule.model.transformer_class} ({schedule.model.model_id or 'no id'}), "
            f"{schedule.num_steps} steps, prompt set {prov.get('prompt_set_hash')}",
            "measured: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                     for k, v in sorted(met.items()))]


def write_schedule(schedule: Schedule, out_path: str | os.PathLike[str], fmt: str = "cachesearch") -> Path:
    """Write in the contract's JSON format or as a cache-dit YAML config (atomically, either way)."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r} (one of {', '.join(FORMATS)})")
    path = Path(out_path)
    if fmt == "cachesearch":
        return save_schedule(schedule, path)
    try:
        text = cache_dit_yaml(schedule, _header(schedule))
    except ExportError as exc:
        raise ExportError(f"schedule {schedule.short_hash} {exc}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class Written:
    """A file an export wrote and the evaluation it holds."""

    path: Path
    record: EvaluationRecord


def write_pick(store: Store, study: str, pick: str, out_path: str | os.PathLike[str], *,
               quality: str | None = None, cost: str | None = None, fmt: str = "cachesearch",
               heldout: bool = False) -> Written:
    """Pick one evaluation by rule (on held-out metrics with `heldout`) and write its schedule."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r} (one of {', '.join(FORMATS)})")
    rule = parse_pick(pick)
    record = choose(store, study, rule, quality=quality, cost=cost, heldout=heldout)
    info = store.get_study(study)
    text = f"{rule.text} on held-out prompts" if heldout else rule.text
    path = write_schedule(annotated_schedule(store, info, record, text, quality, cost), out_path, fmt)
    return Written(path, record)


def write_front(store: Store, study: str, folder: str | os.PathLike[str], *, quality: str | None = None,
                cost: str | None = None, fmt: str = "cachesearch") -> list[Written]:
    """Write every front member to `folder` as `<study>_<rank>_<cost>x_<quality>_<hash12>.json|yaml`,
    ranked by speedup (file names through `names.safe_path`: whatever the study is called, every file
    lands inside `folder`). With `fmt="cache-dit"`, members that do not fit are skipped; if none fits the
    error lists why for each."""
    info = store.get_study(study)
    pair = info.pair(quality, cost)
    quality, cost = pair[0].name, pair[1].name
    front = store.front(study, quality, cost)
    if not front:
        raise NothingQualifies(f"study '{study}' has no front yet (no done evaluation with {quality} and {cost})")
    folder = Path(folder)
    written: list[Written] = []
    reasons: list[str] = []
    ext = ".yaml" if fmt == "cache-dit" else ".json"
    for rank, record in enumerate(reversed(front)):       # fastest first
        schedule = annotated_schedule(store, info, record, f"front #{rank}", quality, cost)
        path = safe_path(folder, study, f"{rank:03d}", f"{record.objective(cost):.2f}x",
                         f"{quality}{record.objective(quality):.3g}", record.schedule_hash[:12], suffix=ext)
        try:
            written.append(Written(write_schedule(schedule, path, fmt), record))
        except ExportError as exc:
            if fmt != "cache-dit":
                raise
            reasons.append(str(exc))
    if not written:
        raise ExportError("no front member fits cache-dit:\n  " + "\n  ".join(reasons))
    return written


def export_pick(store: Store, study: str, pick: str, out_path: str | os.PathLike[str], **options: Any) -> Path:
    """`write_pick`, returning only the path written."""
    return write_pick(store, study, pick, out_path, **options).path


def export_front(store: Store, study: str, folder: str | os.PathLike[str], **options: Any) -> list[Path]:
    """`write_front`, returning only the paths written."""
    return [w.path for w in write_front(store, study, folder, **options)]
