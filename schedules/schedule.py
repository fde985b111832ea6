"""The one Schedule type that flows from searcher to evaluator to store to dashboard to exported file.

A schedule is indexed by denoising *step number* (0..N-1), never by timestep value: FLUX feeds t/1000
and custom sigmas change the values, while step numbers mean the same thing everywhere. The plan is
dense and diff-friendly: per block group and component, one string per step, one character per block.

Modes (one character each, so new modes fit without a new format version):
    '1'  compute the component
    '0'  reuse the component's last computed output (the block still applies this step's gates)
    '-'  skip: the component outputs zeros, so in a residual branch the block passes its input through

Step 0 must compute everything: nothing is cached yet and a skip needs the output's shape.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

from .errors import ScheduleError

FORMAT = "cachesearch.schedule"
FORMAT_VERSION = 1

COMPUTE = "1"
REUSE = "0"
SKIP = "-"
MODES: dict[str, str] = {
    COMPUTE: "compute",
    REUSE: "reuse the cached output",
    SKIP: "skip (zero output, residual passes through)",
}
CFG_MODES = ("batched", "sequential", "none")

_TOP_LEVEL_FIELDS = ("format", "version", "model", "sampling", "plan", "metrics", "provenance")


@dataclass(frozen=True)
class BlockGroup:
    """A list of transformer blocks that share one structure (e.g. FLUX's dual vs single blocks)."""

    name: str
    num_blocks: int
    components: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "num_blocks": self.num_blocks, "components": list(self.components)}


@dataclass(frozen=True)
class ModelSpec:
    """What the schedule was made for; applying it elsewhere is an error that names the mismatch."""

    family: str
    transformer_class: str
    block_groups: tuple[BlockGroup, ...]
    model_id: str | None = None
    revision: str | None = None

    def group(self, name: str) -> BlockGroup:
        for g in self.block_groups:
            if g.name == name:
                return g
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "transformer_class": self.transformer_class,
            "block_groups": [g.to_dict() for g in self.block_groups],
            "model_id": self.model_id,
            "revision": self.revision,
        }


@dataclass(frozen=True)
class SamplingSpec:
    """Sampling settings the schedule was searched with; step count is binding, the rest is a record."""

    num_inference_steps: int
    scheduler: str | None = None
    timesteps: tuple[float, ...] | None = None
    cfg: str = "batched"
    guidance_scale: float | None = None
    height: int | None = None
    width: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_inference_steps": self.num_inference_steps,
            "scheduler": self.scheduler,
            "timesteps": list(self.timesteps) if self.timesteps is not None else None,
            "cfg": self.cfg,
            "guidance_scale": self.guidance_scale,
            "height": self.height,
            "width": self.width,
        }


Plan = Mapping[str, Mapping[str, tuple[str, ...]]]


@dataclass(frozen=True, eq=False)
class Schedule:
    """A per-step compute/reuse/skip plan for one model, with its measured metrics and provenance.

    Metrics and provenance ride along for the exported file but never change the content hash, so the
    same plan found by two searchers is one schedule, evaluated once.
    """

    model: ModelSpec
    sampling: SamplingSpec
    plan: Plan
    metrics: Mapping[str, Any] = field(default_factory=dict)
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _validate_plan(self.model, self.sampling, self.plan)
        # Normalise to canonical order and immutable rows, so equal plans compare and serialise equal.
        normalised = {g.name: {c: tuple(self.plan[g.name][c]) for c in g.components}
                      for g in self.model.block_groups}
        object.__setattr__(self, "plan", normalised)
        object.__setattr__(self, "metrics", dict(self.metrics))
        object.__setattr__(self, "provenance", dict(self.provenance))

    # ----------------------------------------------------------------- identity
    def canonical_dict(self) -> dict[str, Any]:
        """The part of the document that defines behaviour; the hash is taken over this."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "model": self.model.to_dict(),
            "sampling": self.sampling.to_dict(),
            "plan": {g: {c: list(rows) for c, rows in comps.items()} for g, comps in self.plan.items()},
        }

    def canonical_json(self) -> str:
        return json.dumps(self.canonical_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def hash(self) -> str:
        cached = self.__dict__.get("_hash")
        if cached is None:
            cached = hashlib.sha256(self.canonical_json().encode()).hexdigest()
            object.__setattr__(self, "_hash", cached)
        return cached

    @property
    def short_hash(self) -> str:
        return self.hash[:12]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schedule) and other.hash == self.hash

    def __hash__(self) -> int:
        return hash(self.hash)

    def __repr__(self) -> str:
        return (
            f"Schedule({self.model.transformer_class}, steps={self.num_steps}, "
            f"computed={self.compute_fraction():.2f}, hash={self.short_hash})"
        )

    # ----------------------------------------------------------------- document
    def to_dict(self) -> dict[str, Any]:
        doc = self.canonical_dict()
        doc["metrics"] = copy.deepcopy(dict(self.metrics))
        doc["provenance"] = copy.deepcopy(dict(self.provenance))
        return doc

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    @classmethod
    def from_dict(cls, doc: Any, source: str | None = None) -> "Schedule":
        return _parse_document(doc, source)

    @classmethod
    def from_json(cls, text: str, source: str | None = None) -> "Schedule":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ScheduleError(f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})",
                                source=source) from None
        return _parse_document(doc, source)

    def with_info(self, metrics: Mapping[str, Any] | None = None,
                  provenance: Mapping[str, Any] | None = None) -> "Schedule":
        """A copy with metrics/provenance merged in (the hash is unchanged)."""
        new_metrics = {**self.metrics, **(metrics or {})}
        new_prov = {**self.provenance, **(provenance or {})}
        out = replace(self, metrics=new_metrics, provenance=new_prov)
        return out

    # ----------------------------------------------------------------- queries
    @property
    def num_steps(self) -> int:
        return self.sampling.num_inference_steps

    def components(self) -> list[tuple[str, str]]:
        """(group, component) pairs in canonical order: the order of `model.block_groups`."""
        return [(g.name, c) for g in self.model.block_groups for c in g.components]

    def rows(self, group: str, component: str) -> tuple[str, ...]:
        """One string per step, one mode character per block."""
        return self.plan[group][component]

    def mode(self, group: str, component: str, step: int, block: int) -> str:
        return self.plan[group][component][step][block]

    def compute_fraction(self, group: str | None = None, component: str | None = None) -> float:
        """Fraction of (step, block, component) slots that compute, optionally for one group/component."""
        total = computed = 0
        for g, c in self.components():
            if (group is not None and g != group) or (component is not None and c != component):
                continue
            for row in self.plan[g][c]:
                total += len(row)
                computed += row.count(COMPUTE)
        return computed / total if total else 1.0

    def fractions(self) -> dict[str, float]:
        """Fraction computed per `group.component`: the store's summary columns."""
        return {f"{g}.{c}": self.compute_fraction(g, c) for g, c in self.components()}

    def compute_mask(self, group: str, component: str) -> list[list[bool]]:
        return [[ch == COMPUTE for ch in row] for row in self.plan[group][component]]

    # ----------------------------------------------------------------- builders
    @classmethod
    def all_compute(cls, model: ModelSpec, sampling: SamplingSpec, **info: Any) -> "Schedule":
        plan = {
            g.name: {c: tuple(COMPUTE * g.num_blocks for _ in range(sampling.num_inference_steps))
                     for c in g.components}
            for g in model.block_groups
        }
        return cls(model, sampling, plan, **info)

    @classmethod
    def from_masks(cls, model: ModelSpec, sampling: SamplingSpec,
                   masks: Mapping[tuple[str, str], Sequence[Sequence[Any]]],
                   **info: Any) -> "Schedule":
        """Build from per-(group, component) steps x blocks masks of bools (True = compute) or mode
        characters. Components not in `masks` compute everywhere."""
        plan: dict[str, dict[str, tuple[str, ...]]] = {}
        for g in model.block_groups:
            plan[g.name] = {}
            for c in g.components:
                mask = masks.get((g.name, c))
                if mask is None:
                    rows = tuple(COMPUTE * g.num_blocks for _ in range(sampling.num_inference_steps))
                else:
                    rows = tuple("".join(_mode_char(v) for v in row) for row in mask)
                plan[g.name][c] = rows
        unknown = set(masks) - {(g.name, c) for g in model.block_groups for c in g.components}
        if unknown:
            raise ScheduleError(f"unknown (group, component) {sorted(unknown)}", field="plan")
        return cls(model, sampling, plan, **info)

    # ----------------------------------------------------------------- genome
    def to_bits(self) -> list[int]:
        """Flat compute(1)/reuse(0) genome over steps 1..N-1 (step 0 always computes), in
        `components()` order, then step, then block. Skips are not representable here."""
        bits: list[int] = []
        for g, c in self.components():
            for row in self.plan[g][c][1:]:
                for ch in row:
                    if ch == SKIP:
                        raise ScheduleError("skip mode has no bit encoding", field=f"plan.{g}.{c}")
                    bits.append(1 if ch == COMPUTE else 0)
        return bits

    @classmethod
    def from_bits(cls, model: ModelSpec, sampling: SamplingSpec, bits: Sequence[int],
                  **info: Any) -> "Schedule":
        expected = genome_length(model, sampling.num_inference_steps)
        if len(bits) != expected:
            raise ScheduleError(f"genome has {len(bits)} bits, the model and step count need {expected}")
        plan: dict[str, dict[str, tuple[str, ...]]] = {}
        i = 0
        for g in model.block_groups:
            plan[g.name] = {}
            for c in g.components:
                rows = [COMPUTE * g.num_blocks]
                for _ in range(1, sampling.num_inference_steps):
                    chunk = bits[i:i + g.num_blocks]
                    rows.append("".join(COMPUTE if b else REUSE for b in chunk))
                    i += g.num_blocks
                plan[g.name][c] = tuple(rows)
        return cls(model, sampling, plan, **info)


def genome_length(model: ModelSpec, num_steps: int) -> int:
    return sum(g.num_blocks * len(g.components) for g in model.block_groups) * (num_steps - 1)


def _mode_char(value: Any) -> str:
    if isinstance(value, str):
        return value
    return COMPUTE if bool(value) else REUSE


# --------------------------------------------------------------------- validation
def _validate_plan(model: ModelSpec, sampling: SamplingSpec, plan: Plan) -> None:
    n = sampling.num_inference_steps
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
                bad = sorted(set(row) - set(MODES))
                if bad:
                    raise ScheduleError(f"character(s) {bad} outside the alphabet "
                                        f"{{{', '.join(repr(m) for m in MODES)}}}", field=f"{where}[{step}]")
            if rows and set(rows[0]) != {COMPUTE}:
                raise ScheduleError("step 0 must compute every block ('1'): nothing is cached yet",
                                    field=f"{where}[0]")


def _parse_document(doc: Any, source: str | None) -> Schedule:
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
    unknown = sorted(set(doc) - {"family", "transformer_class", "block_groups", "model_id", "revision"})
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
    return ModelSpec(
        family=_require(doc, "family", str, fail, p),
        transformer_class=_require(doc, "transformer_class", str, fail, p),
        block_groups=tuple(groups),
        model_id=_optional(doc, "model_id", (str,), fail, p),
        revision=_optional(doc, "revision", (str,), fail, p),
    )


def _parse_sampling(doc: dict, fail: Any) -> SamplingSpec:
    p = "sampling."
    allowed = {"num_inference_steps", "scheduler", "timesteps", "cfg", "guidance_scale", "height", "width"}
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise fail(f"unknown field(s) {unknown}", "sampling")
    n = _require(doc, "num_inference_steps", int, fail, p)
    if n < 1:
        raise fail(f"must be >= 1, got {n}", p + "num_inference_steps")
    timesteps = doc.get("timesteps")
    if timesteps is not None:
        if (not isinstance(timesteps, list)
                or not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in timesteps)):
            raise fail("must be a list of numbers or null", p + "timesteps")
        if len(timesteps) != n:
            raise fail(f"lists {len(timesteps)} timesteps but num_inference_steps is {n}", p + "timesteps")
        timesteps = tuple(timesteps)
    cfg = doc.get("cfg", "batched")
    if cfg not in CFG_MODES:
        raise fail(f"must be one of {list(CFG_MODES)}, got {cfg!r}", p + "cfg")
    guidance = _optional(doc, "guidance_scale", (int, float), fail, p)
    return SamplingSpec(
        num_inference_steps=n,
        scheduler=_optional(doc, "scheduler", (str,), fail, p),
        timesteps=timesteps,
        cfg=cfg,
        guidance_scale=float(guidance) if guidance is not None else None,
        height=_optional(doc, "height", (int,), fail, p),
        width=_optional(doc, "width", (int,), fail, p),
    )

