"""Per-step drift of every scheduled component: the cost matrix of the dynamic-programming searcher.

`DriftProfile[(group, component)]` is a `Tensor[num_blocks, N, N]` with

    D[k, a, b] = sum |o_b - o_a| / sum |o_b|        (relative L1, over the whole output, all pairs)

where `o_s` is block k's component output at step s. For a <= b it is the error of "compute at a,
reuse until b" (CacheQuant's segment cost); both triangles are filled (the diagonal is 0) so the
matrix has no NaN. One run along the given schedule on the first `config.profile_pairs` calibration
(prompt, seed) pairs: the trajectory follows the schedule (on-policy), while every component is also
computed fresh at steps where the schedule reuses or skips it, so `o_s` is always what the component
*would* output at step s given the schedule's trajectory. With no schedule, the run is all compute.

`seconds` is the wall time of the profiling run, for the searcher to charge to its budget.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

Key = tuple[str, str]


@dataclass
class DriftProfile(Mapping):
    """Mapping (group, component) -> Tensor[num_blocks, N, N] of relative L1 drift, plus cost."""

    drift: dict[Key, torch.Tensor]
    seconds: float
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
