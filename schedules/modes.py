"""The schedule's alphabet as one table: what each plan character means, everywhere.

A plan cell (step, block, component) holds one character. Every consumer — the validator and the JSON
Schema, the runtime, the cost and latency models, the searchers, the figures, the exporters — reads
this table, and a character that is not in it is an error everywhere (`mode_of`), never a fall-through.

Adding a mode is one `Mode` entry here plus its State class: the runtime keeps one State per non-compute
mode a component's row uses, calls `update(output, position)` whenever the component computes and
`predict(position)` on the mode's cells (the shape of diffusers' `hooks/taylorseer_cache.py`).
`position` is where on the trajectory a step lies (see `StepCounterHook.position`): the step number,
or the step's timestep value when the runtime knows the timesteps.

This module is pure Python (tensor work happens through the tensors' own methods, `torch` is imported
only inside `predict`), so the store and dashboard can read the table without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


# ----------------------------------------------------------------------------------- cell states
class CellState:
    """What one component remembers, per cache context, to serve the cells of one mode.
    `predict` returns None when it has not seen enough computes yet (the runtime reports that)."""

    #: tensors this state may hold at once (per component and cache context): the memory cost
    history = 0
    #: whether `predict` looks at positions (the runtime reads the step's timestep only then)
    uses_position = False

    def update(self, output: Any, position: float) -> None:
        raise NotImplementedError

    def predict(self, position: float) -> Any:
        raise NotImplementedError

    def reset(self) -> None:
        raise NotImplementedError


class ReuseState(CellState):
    """'0': the last computed output itself (no copy, no device sync)."""

    history = 1

    def __init__(self) -> None:
        self.last: Any = None

    def update(self, output: Any, position: float) -> None:
        self.last = output

    def predict(self, position: float) -> Any:
        return self.last

    def reset(self) -> None:
        self.last = None


class SkipState(CellState):
    """'-': zeros shaped like the component's output (allocated once per context), so a residual
    branch passes its input through. Block fast paths skip the term instead of adding zeros."""

    history = 1

    def __init__(self) -> None:
        self.template: Any = None
        self.zeros: Any = None

    def update(self, output: Any, position: float) -> None:
        if self.template is None:
            self.template = output

    def predict(self, position: float) -> Any:
        if self.template is None:
            return None
        if self.zeros is None:
            self.zeros = _map(self.template, lambda t: t.new_zeros(t.shape))
        return self.zeros

    def reset(self) -> None:
        self.template = self.zeros = None


class LinearForecastState(CellState):
    """'F': first-order extrapolation of the output from its last two computed values.

    With outputs y0, y1 computed at positions x0 < x1, the forecast at x is
    `y0 + (y1 - y0) * (x - x0) / (x1 - x0)`, done as one `torch.lerp(y0, y1, w)` (w > 1 extrapolates;
    lerp returns y1 exactly at w = 1). Positions are timestep values when the runtime knows them, so the
    slope is per unit of noise level, not per step: on non-uniform spacings (Karras, shifted flow
    sigmas) a step that jumps further is extrapolated further. That is what a Taylor expansion in t
    means; step distance would silently assume uniform spacing.
    """

    history = 2
    uses_position = True

    def __init__(self) -> None:
        self.older: Any = None
        self.newer: Any = None
        self.x0 = self.x1 = 0.0

    def update(self, output: Any, position: float) -> None:
        self.older, self.x0 = self.newer, self.x1
        self.newer, self.x1 = output, float(position)

    @staticmethod
    def weight(position: float, x0: float, x1: float) -> float:
        """The lerp weight from (y0 at x0, y1 at x1) to `position` (also used by drift profiling)."""
        return (position - x0) / (x1 - x0)

    def predict(self, position: float) -> Any:
        import torch

        if self.older is None:
            return None
        weight = self.weight(float(position), self.x0, self.x1)
        return _map2(self.older, self.newer, lambda a, b: torch.lerp(a, b, weight))

    def reset(self) -> None:
        self.older = self.newer = None
        self.x0 = self.x1 = 0.0


class DampedForecastState(LinearForecastState):
    """'D': the last computed output plus a quarter of the linear trend (`y1 + 0.25 (y1 - y0) (x - x1)
    / (x1 - x0)`, one `lerp`). Why: on the embedded model's 20-step DPM-Solver++ run, the full slope
    overshoots (every component forecast between computes every 3 steps: 23.5 dB vs 31.8 dB for
    reuse), while a quarter of it beats reuse (32.9 dB); between full forecast and reuse, the
    search picks per cell."""

    damping = 0.25

    @staticmethod
    def weight(position: float, x0: float, x1: float) -> float:
        return 1.0 + DampedForecastState.damping * (position - x1) / (x1 - x0)


def _map(value: Any, fn: Callable[[Any], Any]) -> Any:
    if isinstance(value, tuple):
        return tuple(_map(v, fn) for v in value)
    if isinstance(value, list):
        return [_map(v, fn) for v in value]
    return fn(value) if hasattr(value, "shape") else value


def _map2(a: Any, b: Any, fn: Callable[[Any, Any], Any]) -> Any:
    if isinstance(b, (tuple, list)):
        return type(b)(_map2(x, y, fn) for x, y in zip(a, b))
    return fn(a, b) if hasattr(b, "shape") else b


# ----------------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Mode:
    """One plan character.

    `calls_module`: the component's forward runs (and its MACs count). `computes_before`: how many
    earlier computes of the same component (same block, same cache context) a cell of this mode
    needs; validation refuses a plan that breaks it, naming the cell. `state`: the CellState class
    that serves its cells (None for compute). `contributes`: False when the cell's output is zero, so
    a block fast path drops the term. `colour`/`label`: how figures show it.
    """

    char: str
    name: str
    description: str
    calls_module: bool
    computes_before: int
    state: type[CellState] | None
    contributes: bool
    colour: str
    label: str

    @property
    def memory_tensors(self) -> int:
        """Tensors per (component, block, cache context) that this mode keeps alive."""
        return self.state.history if self.state is not None else 0


COMPUTE, REUSE, SKIP, FORECAST, DAMPED = "1", "0", "-", "F", "D"

MODE_TABLE: dict[str, Mode] = {m.char: m for m in (
    Mode(COMPUTE, "compute", "compute the component", True, 0, None, True, "#1f4e8c", "compute"),
    Mode(REUSE, "reuse", "reuse the component's last computed output (the block still applies this "
         "step's gates)", False, 1, ReuseState, True, "#dde6ee", "reuse"),
    Mode(SKIP, "skip", "skip (zero output, residual passes through)", False, 1, SkipState, False,
         "#d9534f", "skip"),
    Mode(FORECAST, "forecast", "forecast the output by linear extrapolation of its last two computed "
         "outputs (in timestep)", False, 2, LinearForecastState, True, "#2ca02c", "forecast"),
    Mode(DAMPED, "damped", "damped forecast: the last computed output plus a quarter of its linear trend",
         False, 2, DampedForecastState, True, "#98df8a", "damped forecast"),
)}

#: character -> one-line description (the JSON Schema and `cachesearch schema` list these)
MODES: dict[str, str] = {c: m.description for c, m in MODE_TABLE.items()}


def forecast_modes() -> dict[str, Mode]:
    """Modes whose cells extrapolate from the last two computes (their State has `weight`)."""
    return {c: m for c, m in MODE_TABLE.items() if m.state is not None and hasattr(m.state, "weight")}


def mode_of(char: str) -> Mode:
    """The table entry of a plan character; an unknown character is an error, never a fall-through."""
    try:
        return MODE_TABLE[char]
    except KeyError:
        from .errors import ScheduleError
        raise ScheduleError(f"unknown mode {char!r} (the alphabet is "
                            f"{{{', '.join(repr(c) for c in MODE_TABLE)}}})") from None


def is_compute(char: str) -> bool:
    return mode_of(char).calls_module


def plan_pattern() -> str:
    """The regular expression of one plan row (the JSON Schema's pattern)."""
    return "^[" + "".join("\\-" if c == "-" else c for c in MODE_TABLE) + "]+$"
