"""Where the Ray pool's evaluator actors go: how many, what each reserves, what device it computes on.

Ray places an actor on one node offering everything the actor reserves: `pool.cpus_per_actor` CPUs,
a GPU share (`pool.gpus_per_actor`: 1 = one actor per GPU; 0.5 = two actors share a GPU, for a model
small enough) and any custom resources (`pool.resources_per_actor`, e.g. `{evaluator: 1}` with
`ray start --resources='{"evaluator": 2}'` on the nodes meant to evaluate). The plan is made from the
cluster's live nodes *before* any actor exists, so that a config no node can satisfy is one line
(`PoolStartError`) instead of actors pending forever:
- a GPU config (`evaluation.device: cuda`, or `gpus_per_actor` > 0) on a cluster without GPUs;
- a reservation no single node holds (an actor never spans nodes).

Devices: an actor with a GPU share sees only its own GPU (Ray sets its CUDA_VISIBLE_DEVICES), so
`cuda` inside the actor is that GPU, and two half-GPU actors see the same one; an actor without one
computes on the CPU. `device: auto` means GPUs when the cluster has any. `device: cpu` with
`gpus_per_actor` > 0 reserves GPU shares for placement only: that is how the tests check GPU
placement on a machine without a GPU (a node started with `ray start --num-gpus=N` has N GPUs as far
as Ray's scheduler is concerned, and scheduling is all placement is).

Default number of actors: as many as the nodes hold when each actor reserves a GPU share or a custom
resource (one per GPU, two per GPU at 0.5, one per `evaluator` unit); otherwise one, since a CPU
node would get a copy of the model per core (set `pool.num_actors`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .config import PoolConfig
from .pool import PoolStartError

_GRANULARITY = 1e-4   # Ray's fractional resources are multiples of 0.0001
_HIDDEN = ("memory", "object_store_memory")


@dataclass(frozen=True)
class ActorPlan:
    num_actors: int
    capacity: int                      # actors of this kind the live nodes hold at once
    device: str                        # "cuda" or "cpu": what every actor computes on
    demand: dict[str, float] = field(default_factory=dict)   # per actor: CPU, GPU (if any), custom

    @property
    def gpus(self) -> float:
        return self.demand.get("GPU", 0.0)

    def ray_options(self) -> dict[str, Any]:
        """The `ray.remote(...).options()` reservation of one actor."""
        custom = {k: v for k, v in self.demand.items() if k not in ("CPU", "GPU")}
        options: dict[str, Any] = {"num_cpus": self.demand.get("CPU", 0.0), "num_gpus": self.gpus}
        if custom:
            options["resources"] = custom
        return options


def live_nodes(ray: Any) -> list[dict[str, float]]:
    """The total resources of each live node of the connected cluster."""
    return [dict(n.get("Resources", {})) for n in ray.nodes() if n.get("Alive")]


def plan_actors(pool: PoolConfig, device: str, nodes: Sequence[Mapping[str, float]],
                where: str = "the Ray cluster") -> ActorPlan:
    """The actors for `pool` and `evaluation.device` on a cluster whose live nodes offer `nodes`
    (see the module docstring); `PoolStartError` when the cluster can never hold one."""
    cluster_gpus = sum(float(n.get("GPU", 0.0)) for n in nodes)
    cuda = device.startswith("cuda")
    gpus = pool.gpus_per_actor
    if gpus is None:
        gpus = 1.0 if cuda or (device == "auto" and cluster_gpus > 0) else 0.0
    if cuda and gpus == 0:
        raise PoolStartError(f"evaluation.device is {device!r} but pool.gpus_per_actor is 0: give each actor a "
                             "GPU share (1, or 0.5 for two actors per GPU), or use device: cpu")
    if gpus > 0 and cluster_gpus == 0:
        asked = f"evaluation.device: {device}" if cuda else f"pool.gpus_per_actor: {gpus:g}"
        raise PoolStartError(f"{asked} asks for GPU actors, but {where} has no GPUs ({describe_nodes(nodes)}): "
                             "use device: cpu with gpus_per_actor: 0, or add GPU nodes")
    demand = {"CPU": float(pool.cpus_per_actor)}
    if gpus > 0:
        demand["GPU"] = float(gpus)
    demand.update({k: float(v) for k, v in pool.resources_per_actor.items()})
    capacity = sum(actor_slots(n, demand) for n in nodes)
    if capacity == 0:
        raise PoolStartError(f"no node of {where} can hold an evaluator actor, which reserves {_fmt(demand)} on one "
                             f"node ({describe_nodes(nodes)}): lower pool.cpus_per_actor / gpus_per_actor / "
                             "resources_per_actor, or start nodes offering them (ray start --num-cpus / --num-gpus / "
                             "--resources)")
    by_share = gpus > 0 or bool(pool.resources_per_actor)
    num_actors = pool.num_actors or (capacity if by_share else 1)
    return ActorPlan(num_actors, capacity, "cuda" if gpus > 0 and device != "cpu" else "cpu", demand)


def actor_slots(node: Mapping[str, float], demand: Mapping[str, float]) -> int:
    """How many actors reserving `demand` one node holds."""
    counts = [math.floor((float(node.get(k, 0.0)) + _GRANULARITY / 2) / v) for k, v in demand.items() if v > 0]
    return min(counts) if counts else 0


def describe_nodes(nodes: Sequence[Mapping[str, float]], limit: int = 4) -> str:
    """'2 live nodes: {CPU 2, GPU 1, nodeA 1}, {CPU 0}' (Ray's per-node bookkeeping keys left out)."""
    shown = ", ".join(_fmt({k: v for k, v in n.items() if k not in _HIDDEN and not k.startswith(("node:",
                                                                                                 "accelerator_type:"))})
                      for n in nodes[:limit])
    more = f", and {len(nodes) - limit} more" if len(nodes) > limit else ""
    return f"{len(nodes)} live node{'s' if len(nodes) != 1 else ''}: {shown}{more}" if nodes else "no live nodes"


def _fmt(resources: Mapping[str, float]) -> str:
    return "{" + ", ".join(f"{k} {float(v):g}" for k, v in sorted(resources.items())) + "}"
