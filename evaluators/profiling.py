"""Per-step drift of every scheduled component: the cost matrix of the dynamic-programming searcher.

`DriftProfile[(group, component)]` is a `Tensor[num_blocks, N, N]` with

    D[k, a, b] = sum |o_b - o_a| / sum |o_b|        (relative L1, over the whole output, all pairs)

where `o_s` is block k's component output at step s. For a <= b it is the error of "compute at a,
reuse until b" (CacheQuant's segment cost); both triangles are filled (the diagonal is 0) so the
matrix has no NaN. One run along the given schedule on the first `config.profile_pairs` calibration
(prompt, seed) pairs: the trajectory follows the schedule (on-policy), while every component is also
computed fresh at steps where the schedule reuses or skips it, so `o_s` is always what the component
*would* output at step s given the schedule's trajectory. With no schedule, the run is all compute.

`forecast[(group, component, mode)]` is a `Tensor[num_blocks, N, N, N]` for every forecast mode of
the table ('F', 'D'): F[k, p, a, s] is the relative L1 error at step s of extrapolating from the
outputs computed at p < a < s, with the runtime's own lerp weight (`State.weight`, in timestep
positions when the pipeline's scheduler gives them); inf where undefined or beyond `window` steps
(a - p <= window and s - a <= window: the cost grows with N^3 otherwise).

`seconds` is the wall time of the profiling run, for the searcher to charge to its budget.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

Key = tuple[str, str]
FORECAST_WINDOW = 6   # forecasts profiled up to this many steps between computes and ahead


@dataclass
class DriftProfile(Mapping):
    """Mapping (group, component) -> Tensor[num_blocks, N, N] of relative L1 drift, plus cost."""

    drift: dict[Key, torch.Tensor]
    seconds: float
    forecast: dict[tuple[str, str, str], torch.Tensor] = field(default_factory=dict)
    schedule_hash: str | None = None        # None: all compute
    num_pairs: int = 0
    worker: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: Key) -> torch.Tensor:
        return self.drift[key]

    def __iter__(self) -> Iterator[Key]:
        return iter(self.drift)

    def __len__(self) -> int:
        return len(self.drift)


class DriftRecorder:
    """Records every scheduled component's fresh output at every step of one pipeline call.

    Torch forward hooks on the component modules see what the schedule hook returned; where the plan
    reuses or skips, the recorder also runs the module's own class `forward` (below diffusers' hook
    chain) to get the fresh output, and the trajectory still uses the schedule's value.
    """

    def __init__(self, denoiser: torch.nn.Module, schedule: Any) -> None:
        from schedules.adapters import adapter_for, component_module, group_blocks
        from schedules.cost import calls_per_step
        from schedules.schedule import COMPUTE

        self.schedule = schedule
        self.num_steps = schedule.num_steps
        self.calls_per_step = calls_per_step(schedule)
        self.calls = 0
        self.outputs: dict[Key, list[list[list[torch.Tensor]]]] = {}
        self._handles = [denoiser.register_forward_pre_hook(self._count)]
        layouts = {layout.attribute: layout for layout in adapter_for(denoiser).groups}
        for group in schedule.model.block_groups:
            blocks = group_blocks(denoiser, layouts[group.name].attribute)
            for comp in group.components:
                per_block: list[list[list[torch.Tensor]]] = [[[] for _ in range(self.num_steps)] for _ in blocks]
                self.outputs[(group.name, comp)] = per_block
                for b, block in enumerate(blocks):
                    module = component_module(block, comp)
                    if module is None:
                        continue
                    modes = "".join(row[b] for row in schedule.rows(group.name, comp))
                    hook = self._make_hook(per_block[b], modes, COMPUTE)
                    self._handles.append(module.register_forward_hook(hook, with_kwargs=True))

    def _count(self, module: torch.nn.Module, args: Any) -> None:
        self.calls += 1

    def _step(self) -> int:
        return min((self.calls - 1) // self.calls_per_step, self.num_steps - 1)

    def _make_hook(self, store: list[list[torch.Tensor]], modes: str, compute: str):
        def hook(module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            step = self._step()
            if modes[step] != compute:
                with torch.no_grad():
                    output = type(module).forward(module, *args, **kwargs)
            store[step].append(_flatten(output))
        return hook

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _stacked(self, steps: list[list[torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.stack([torch.cat(s) for s in steps]).float()    # N x numel
        return x, x.abs().sum(1).clamp_min(1e-12)

    def forecast_drift(self, positions: list[float] | None = None,
                       window: int = FORECAST_WINDOW) -> dict[tuple[str, str, str], torch.Tensor]:
        """F[k, p, a, s] for every forecast mode (see the module doc)."""
        from schedules.modes import forecast_modes

        n = self.num_steps
        pos = [float(v) for v in positions] if positions is not None and len(positions) == n else list(map(float, range(n)))
        out: dict[tuple[str, str, str], torch.Tensor] = {}
        for char, mode in forecast_modes().items():
            for (g, c), per_block in self.outputs.items():
                mats = torch.full((len(per_block), n, n, n), float("inf"))
                for b, steps in enumerate(per_block):
                    if not all(steps):
                        continue
                    x, norms = self._stacked(steps)
                    for a in range(1, n - 1):
                        s_hi = min(n, a + window + 1)
                        targets = list(range(a + 1, s_hi))
                        for q in range(max(0, a - window), a):
                            w = torch.tensor([mode.state.weight(pos[t], pos[q], pos[a]) for t in targets])
                            guess = torch.lerp(x[q].expand(len(targets), -1), x[a].expand(len(targets), -1),
                                               w[:, None])
                            err = (x[a + 1:s_hi] - guess).abs().sum(1) / norms[a + 1:s_hi]
                            mats[b, q, a, a + 1:s_hi] = err.cpu()
                out[(g, c, char)] = mats
        return out

    def drift(self) -> dict[Key, torch.Tensor]:
        """Relative L1 matrices; a block that lacks the component gets zeros."""
        out: dict[Key, torch.Tensor] = {}
        n = self.num_steps
        for key, per_block in self.outputs.items():
            mats = torch.zeros(len(per_block), n, n, dtype=torch.float32)
            for b, steps in enumerate(per_block):
                if not all(steps):
                    continue
                x, norms = self._stacked(steps)                            # N x numel, ||o_b||_1
                for a in range(n):
                    mats[b, a] = ((x - x[a]).abs().sum(1) / norms).cpu()
            out[key] = mats
        return out


def _flatten(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output.detach().reshape(-1)
    if isinstance(output, (tuple, list)):
        parts = [_flatten(o) for o in output if isinstance(o, (torch.Tensor, tuple, list))]
        return torch.cat(parts) if parts else torch.zeros(0)
    raise TypeError(f"cannot profile a component output of type {type(output).__name__}")
