"""Validation of plans and parsing of schedule documents: one clear error naming the field per problem.

Parsing only reads JSON values; nothing in a document is ever executed.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from .errors import ScheduleError
from .modes import MODE_TABLE
from .spec import CFG_MODES, COMPUTE, FORMAT, FORMAT_VERSION, BlockGroup, ModelSpec, SamplingSpec

_TOP_LEVEL_FIELDS = ("format", "version", "model", "sampling", "plan", "metrics", "provenance")

def validate_plan(model: ModelSpec, sampling: SamplingSpec, plan: Mapping[str, Any]) -> None:
    n = sampling.num_inference_steps
    _validate_explicit(sampling)
    if not isinstance(plan, Mapping):
        raise ScheduleError("must be an object keyed by block group", field="plan")
    groups = {g.name: g for g in model.block_groups}
    for name in plan:
        if name not in groups:
            raise ScheduleError(f"unknown block group '{name}' (model.block_groups has: "
                                f"{', '.join(groups)})", field="plan")
    for g in model.block_groups:
        if g.name not in plan:
            raise ScheduleError(f"missing block group '{g.name}'", field="plan")
        comps = plan[g.name]
        if not isinstance(comps, Mapping):
            raise ScheduleError("must be an object keyed by component", field=f"plan.{g.name}")
        for c in comps:
            if c not in g.components:
                raise ScheduleError(f"unknown component '{c}' (block group '{g.name}' has: "
                                    f"{', '.join(g.components)})", field=f"plan.{g.name}")
        for c in g.components:
            where = f"plan.{g.name}.{c}"
            if c not in comps:
                raise ScheduleError("missing component", field=where)
            rows = comps[c]
            if isinstance(rows, str) or not isinstance(rows, Sequence):
                raise ScheduleError("must be a list of strings, one per step", field=where)
            if len(rows) != n:
                raise ScheduleError(f"has {len(rows)} steps but sampling.num_inference_steps is {n}",
                                    field=where)
            for step, row in enumerate(rows):
                if not isinstance(row, str):
                    raise ScheduleError(f"must be a string, got {type(row).__name__}",
                                        field=f"{where}[{step}]")
                if len(row) != g.num_blocks:
                    raise ScheduleError(f"has {len(row)} characters but block group '{g.name}' has "
                                        f"{g.num_blocks} blocks", field=f"{where}[{step}]")
                bad = sorted(set(row) - set(MODE_TABLE))
                if bad:
                    raise ScheduleError(f"character(s) {bad} outside the alphabet "
                                        f"{{{', '.join(repr(m) for m in MODE_TABLE)}}}", field=f"{where}[{step}]")
            if rows and set(rows[0]) != {COMPUTE}:
                raise ScheduleError("step 0 must compute every block ('1'): nothing is cached yet",
                                    field=f"{where}[0]")
            _check_history(rows, g.num_blocks, where)


def _check_history(rows: Sequence[str], num_blocks: int, where: str) -> None:
    """Each cell's mode needs `computes_before` earlier computes of its (component, block)."""
    computed = [0] * num_blocks
    for step, row in enumerate(rows):
        for b, ch in enumerate(row):
            mode = MODE_TABLE[ch]
            if computed[b] < mode.computes_before:
                raise ScheduleError(f"block {b} is '{ch}' ({mode.name}) at step {step}, which needs "
                                    f"{mode.computes_before} earlier computes of that component; it has "
                                    f"{computed[b]}", field=f"{where}[{step}]")
            computed[b] += mode.calls_module


def _validate_explicit(sampling: SamplingSpec) -> None:
    """Explicit timesteps or sigmas (at most one): one value per step, finite, strictly descending
    (every sampler in diffusers runs from noise to data), timesteps >= 0, sigmas > 0."""
    if sampling.timesteps is not None and sampling.sigmas is not None:
        raise ScheduleError("give timesteps or sigmas, not both (sampling.timesteps is set too)",
                            field="sampling.sigmas")
    if sampling.explicit is None:
        return
    kind, values = sampling.explicit
    where = f"sampling.{kind}"
    n = sampling.num_inference_steps
    if len(values) != n:
        raise ScheduleError(f"lists {len(values)} {kind} but num_inference_steps is {n}", field=where)
    if not all(math.isfinite(v) for v in values):
        raise ScheduleError("must be finite numbers", field=where)
    low = min(values)
    if low < 0 or (kind == "sigmas" and low == 0):
        raise ScheduleError(f"must be {'> 0' if kind == 'sigmas' else '>= 0'}, got {low:g}", field=where)
    for i, (a, b) in enumerate(zip(values, values[1:])):
        if b >= a:
            raise ScheduleError(f"must strictly descend (noise to data): [{i}] = {a:g}, [{i + 1}] = {b:g}",
                                field=where)


def parse_document(doc: Any, source: str | None):
    """Parse a JSON value into a Schedule, or raise ScheduleError naming the field and the source."""
    from .schedule import Schedule
    def fail(msg: str, where: str | None = None) -> ScheduleError:
        return ScheduleError(msg, field=where, source=source)

    if not isinstance(doc, dict):
        raise fail(f"a schedule document must be a JSON object, got {type(doc).__name__}")
    unknown = sorted(set(doc) - set(_TOP_LEVEL_FIELDS))
    if unknown:
        raise fail(f"unknown field(s) {unknown}")
    if doc.get("format") != FORMAT:
        raise fail(f"must be '{FORMAT}', got {doc.get('format')!r}", "format")
    version = doc.get("version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise fail(f"unsupported version {version!r}; this cachesearch reads version {FORMAT_VERSION}",
                   "version")
    model = _parse_model(_require(doc, "model", dict, fail), fail)
    sampling = _parse_sampling(_require(doc, "sampling", dict, fail), fail)
    plan_doc = _require(doc, "plan", dict, fail)
    plan = {
        g: ({c: tuple(rows) if isinstance(rows, list) else rows for c, rows in comps.items()}
            if isinstance(comps, dict) else comps)
        for g, comps in plan_doc.items()
    }
    metrics = doc.get("metrics") or {}
    provenance = doc.get("provenance") or {}
    if not isinstance(metrics, dict):
        raise fail("must be an object", "metrics")
    if not isinstance(provenance, dict):
        raise fail("must be an object", "provenance")
    try:
        return Schedule(model, sampling, plan, metrics=metrics, provenance=provenance)
    except ScheduleError as exc:
        if exc.source is None and source is not None:
            raise ScheduleError(str(exc), field=None, source=source) from None
        raise


def _require(doc: dict, key: str, typ: type, fail: Any, prefix: str = "") -> Any:
    where = f"{prefix}{key}"
    if key not in doc:
        raise fail("is required", where)
    value = doc[key]
    if typ is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise fail(f"must be an integer, got {value!r}", where)
    if not isinstance(value, typ):
        raise fail(f"must be {_TYPE_NAMES.get(typ, typ.__name__)}, got {type(value).__name__}", where)
    return value


_TYPE_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer"}


def _optional(doc: dict, key: str, types: tuple[type, ...], fail: Any, prefix: str) -> Any:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, types):
        raise fail(f"must be {' or '.join(t.__name__ for t in types)} or null, got {value!r}",
                   f"{prefix}{key}")
    return value


def _parse_model(doc: dict, fail: Any) -> ModelSpec:
    p = "model."
    unknown = sorted(set(doc) - {"family", "transformer_class", "block_groups", "model_id", "revision", "subset"})
    if unknown:
        raise fail(f"unknown field(s) {unknown}", "model")
    groups_doc = _require(doc, "block_groups", list, fail, p)
    if not groups_doc:
        raise fail("must list at least one block group", "model.block_groups")
    groups = []
    seen: set[str] = set()
    for i, gd in enumerate(groups_doc):
        gp = f"model.block_groups[{i}]."
        if not isinstance(gd, dict):
            raise fail("must be an object", gp[:-1])
        extra = sorted(set(gd) - {"name", "num_blocks", "components"})
        if extra:
            raise fail(f"unknown field(s) {extra}", gp[:-1])
        name = _require(gd, "name", str, fail, gp)
        if name in seen:
            raise fail(f"duplicate block group '{name}'", gp + "name")
        seen.add(name)
        num = _require(gd, "num_blocks", int, fail, gp)
        if num < 1:
            raise fail(f"must be >= 1, got {num}", gp + "num_blocks")
        comps = _require(gd, "components", list, fail, gp)
        if not comps or not all(isinstance(c, str) and c for c in comps) or len(set(comps)) != len(comps):
            raise fail("must be a non-empty list of distinct component names", gp + "components")
        groups.append(BlockGroup(name, num, tuple(comps)))
    subset = doc.get("subset", False)
    if not isinstance(subset, bool):
        raise fail(f"must be true or false, got {subset!r}", p + "subset")
    return ModelSpec(
        family=_require(doc, "family", str, fail, p),
        transformer_class=_require(doc, "transformer_class", str, fail, p),
        block_groups=tuple(groups),
        model_id=_optional(doc, "model_id", (str,), fail, p),
        revision=_optional(doc, "revision", (str,), fail, p),
        subset=subset,
    )


def _parse_sampling(doc: dict, fail: Any) -> SamplingSpec:
    p = "sampling."
    allowed = {"num_inference_steps", "scheduler", "timesteps", "sigmas", "cfg", "guidance_scale", "height",
               "width"}
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise fail(f"unknown field(s) {unknown}", "sampling")
    n = _require(doc, "num_inference_steps", int, fail, p)
    if n < 1:
        raise fail(f"must be >= 1, got {n}", p + "num_inference_steps")
    explicit = {}
    for kind in ("timesteps", "sigmas"):
        values = doc.get(kind)
        if values is not None:
            if (not isinstance(values, list)
                    or not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in values)):
                raise fail("must be a list of numbers or null", p + kind)
            values = tuple(float(t) for t in values)
        explicit[kind] = values
    cfg = doc.get("cfg", "batched")
    if cfg not in CFG_MODES:
        raise fail(f"must be one of {list(CFG_MODES)}, got {cfg!r}", p + "cfg")
    guidance = _optional(doc, "guidance_scale", (int, float), fail, p)
    return SamplingSpec(
        num_inference_steps=n,
        scheduler=_optional(doc, "scheduler", (str,), fail, p),
        timesteps=explicit["timesteps"],
        sigmas=explicit["sigmas"],
        cfg=cfg,
        guidance_scale=float(guidance) if guidance is not None else None,
        height=_optional(doc, "height", (int,), fail, p),
        width=_optional(doc, "width", (int,), fail, p),
    )

