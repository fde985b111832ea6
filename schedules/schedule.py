"""The one Schedule type that flows from searcher to evaluator to store to dashboard to exported file.

A schedule is indexed by denoising *step number* (0..N-1), never by timestep value: FLUX feeds t/1000
and custom sigmas change the values, while step numbers mean the same thing everywhere. Which noise
levels the N steps sample is part of the schedule when it lists explicit `sampling.timesteps` (or
`sampling.sigmas`, for flow-matching schedulers); `schedules.timesteps` makes a pipeline sample them. The plan is
dense and diff-friendly: per block group and component, one string per step, one character per block.

Modes: one character each, defined by the table in `modes.py` ('1' compute, '0' reuse the last
computed output, '-' skip, 'F' forecast, ...), so new modes fit without a new format version.
Step 0 must compute everything: nothing is cached yet and a skip needs the output's shape; each mode
says how many earlier computes of its component it needs (a forecast needs two).
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

from .errors import ScheduleError
from .spec import (  # noqa: F401  (re-exported with the Schedule type)
    CFG_MODES, COMPUTE, FORMAT, FORMAT_VERSION, MODES, REUSE, SKIP, BlockGroup, ModelSpec, SamplingSpec,
)
from .validation import parse_document, validate_plan

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
        validate_plan(self.model, self.sampling, self.plan)
        if self.sampling.explicit is not None:   # 999 and 999.0 are one number: one canonical form
            kind, values = self.sampling.explicit
            object.__setattr__(self, "sampling", replace(self.sampling, **{kind: tuple(float(v) for v in values)}))
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
        return parse_document(doc, source)

    @classmethod
    def from_json(cls, text: str, source: str | None = None) -> "Schedule":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ScheduleError(f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
                                source=source) from None
        except RecursionError:
            raise ScheduleError("not a schedule: the JSON is nested too deeply", source=source) from None
        return parse_document(doc, source)

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
    def periodic(cls, model: ModelSpec, sampling: SamplingSpec, interval: int, mode: str = REUSE,
                 warmup: int = 1, only: Sequence[tuple[str, str]] | None = None, **info: Any) -> "Schedule":
        """Compute every block at the first `warmup` steps and every `interval`-th step, `mode` in
        between (FORA for reuse, TaylorSeer-style for forecast); `only` limits it to some
        (group, component) pairs, the others compute everywhere."""
        chosen = None if only is None else set(only)
        masks = {(g.name, c): [(COMPUTE if s < warmup or s % interval == 0 else mode) * g.num_blocks
                               for s in range(sampling.num_inference_steps)]
                 for g in model.block_groups for c in g.components if chosen is None or (g.name, c) in chosen}
        return cls.from_masks(model, sampling, masks, **info)

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

    def completed(self, block_groups: Sequence[BlockGroup]) -> "Schedule":
        """A `model.subset` schedule spelled out on the whole model's `block_groups`: what it leaves
        out computes at every step, so the runtime (fast paths, feeders), the cost and the latency
        models all see one complete plan. A complete schedule comes back as is."""
        if not self.model.subset:
            return self
        masks = {(g, c): self.rows(g, c) for g, c in self.components()}
        whole = replace(self.model, block_groups=tuple(block_groups), subset=False)
        return Schedule.from_masks(whole, self.sampling, masks, metrics=self.metrics, provenance=self.provenance)

    # ----------------------------------------------------------------- genome
    def to_bits(self) -> list[int]:
        """Flat compute(1)/reuse(0) genome over steps 1..N-1 (step 0 always computes), in
        `components()` order, then step, then block. Only compute and reuse are representable here."""
        bits: list[int] = []
        for g, c in self.components():
            for row in self.plan[g][c][1:]:
                for ch in row:
                    if ch not in (COMPUTE, REUSE):
                        raise ScheduleError(f"mode {ch!r} has no bit encoding", field=f"plan.{g}.{c}")
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


