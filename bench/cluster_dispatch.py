"""Dispatch overhead of a multi-node Ray pool vs the in-process pool, measured side by side.

    python bench/cluster_dispatch.py            # embedded model, 2 worker nodes; writes bench/results/
    python bench/cluster_dispatch.py --num-prompts 2 --steps 4 --schedules 2 --rounds 1 --out ''   # smoke

The cluster is real (tests/ray_nodes.py): `ray start --head` plus `--nodes` worker nodes on this
machine, each offering `{"evaluator": 1}` and `--node-cpus` CPUs, so the Ray pool runs one actor per
worker node and every task crosses Ray's scheduler, object store and gRPC as on several machines
(minus the network). The in-process pool (`LocalPool`) scores the same schedules in this process.
Both use `--threads` torch threads per worker (1: stable on a shared CPU).

Rounds are interleaved (local first in even rounds, Ray first in odd ones); each round every pool
scores the same `--schedules` distinct schedules in one request; a first round warms both pools up
and is not counted. Per pool:
- evaluation: seconds the workers spent inside `evaluate` (result.started_at -> finished_at);
- dispatch overhead per task: (round trip seen by the driver - evaluation) / evaluation; for the
  in-process pool, the time between results outside the evaluator's own timing;
- request wall time and throughput in images/s. The Ray pool runs its actors at once, but on a
  2-core machine they share the cores with each other and the driver, so the throughput ratio here
  says little about a real cluster; the dispatch overhead and the per-evaluation time ratio
  (actor / in-process: are remote workers slower?) do transfer.
Start-up (cluster, actors, model load) is paid once per study and reported apart. The quality
metrics of both pools are compared too (same threads: they must be identical).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from _common import header, report  # noqa: E402
from ray_nodes import LocalCluster  # noqa: E402

from evaluators import EvaluationConfig, LocalPool  # noqa: E402
from schedules import Schedule  # noqa: E402


def fora_schedules(pool: Any, n: int) -> list[Schedule]:
    """All-compute, then FORA-k (every component computes every k-th step) for k = 2, 3, ..."""
    spec, sampling = pool.model_spec(), pool.sampling_spec()
    out = [pool.all_compute_schedule()]
    for k in range(2, n + 1):
        rows = {(g.name, c): [[s % k == 0] * g.num_blocks for s in range(sampling.num_inference_steps)]
                for g in spec.block_groups for c in g.components}
        out.append(Schedule.from_masks(spec, sampling, rows))
    return out[:n]


class Tally:
    """One pool's figures over the rounds."""

    def __init__(self) -> None:
        self.walls: list[float] = []
        self.evals: list[float] = []        # per-task evaluation seconds
        self.overheads: list[float] = []    # per-task seconds outside the evaluation
        self.results: dict[str, Any] = {}

    def line(self, name: str, images: int) -> str:
        ev, oh = sum(self.evals), sum(self.overheads)
        return (f"{name:12s} wall per request {statistics.median(self.walls):7.2f} s (median of {len(self.walls)}), "
                f"{images * len(self.walls) / sum(self.walls):6.2f} images/s; evaluation "
                f"{statistics.median(self.evals):.3f} "
                f"s per task; dispatch overhead {1e3 * oh / len(self.overheads):7.2f} ms per task = "
                f"{100 * oh / ev:.3f}% of evaluation time")


def score_local(pool: LocalPool, schedules: list[Schedule], tally: Tally) -> None:
    t0 = prev = time.perf_counter()
    for r in pool.evaluate(schedules):
        now = time.perf_counter()
        assert r.ok, r.error
        inside = r.finished_at - r.started_at
        tally.evals.append(inside)
        tally.overheads.append(now - prev - inside)
        tally.results[r.schedule.hash] = r
        prev = now
    tally.walls.append(time.perf_counter() - t0)


def score_ray(pool: Any, schedules: list[Schedule], tally: Tally) -> None:
    before = dict(pool.stats)
    t0 = time.perf_counter()
    results = list(pool.evaluate(schedules))
    tally.walls.append(time.perf_counter() - t0)
    assert all(r.ok for r in results), [r.error for r in results]
    for r in results:
        tally.evals.append(r.finished_at - r.started_at)
        tally.results[r.schedule.hash] = r
    round_trip = pool.stats["roundtrip_seconds"] - before["roundtrip_seconds"]
    inside = pool.stats["eval_seconds"] - before["eval_seconds"]
    tally.overheads.extend([(round_trip - inside) / len(results)] * len(results))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--num-prompts", type=int, default=8)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--schedules", type=int, default=6, help="distinct schedules per request")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--nodes", type=int, default=2, help="worker nodes (one actor each)")
    ap.add_argument("--node-cpus", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker, both pools")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "cluster_dispatch.txt"),
                    help="where to record the report ('' to only print it)")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(args.threads)   # what the in-process pool's evaluator sets too (num_threads)

    lines = [header("cluster_dispatch.py", f"{args.nodes} worker nodes x {args.node_cpus} CPU"),
             "# command: python bench/cluster_dispatch.py " + " ".join(sys.argv[1:]),
             "# load average at start: {:.1f} {:.1f} {:.1f} on {} CPUs".format(*os.getloadavg(), os.cpu_count())]
    with tempfile.TemporaryDirectory() as cache, LocalCluster() as cluster:
        import ray
        doc = dict(model=args.model, num_prompts=args.num_prompts, seeds=args.seeds, num_inference_steps=args.steps,
                   cache_dir=cache, num_threads=args.threads, latency={"warmup": 0, "repeats": 1, "reference_every": 0})
        t0 = time.perf_counter()
        local = LocalPool(EvaluationConfig(**doc))
        lines.append(f"in-process pool ready in {time.perf_counter() - t0:.1f} s (references computed here)")
        t0 = time.perf_counter()
        for i in range(args.nodes):
            cluster.add_node(f"w{i}", num_cpus=args.node_cpus, resources={"evaluator": 1})
        lines.append(f"cluster of {args.nodes} worker nodes + head up in {time.perf_counter() - t0:.1f} s at "
                     f"{cluster.address}")
        ray.init(address=cluster.address, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
        from evaluators import make_pool
        t0 = time.perf_counter()
        remote = make_pool(EvaluationConfig(**doc, pool={
            "kind": "ray", "address": cluster.address, "cpus_per_actor": args.node_cpus,
            "resources_per_actor": {"evaluator": 1}}))
        nodes = sorted(cluster.node_of(i["node_id"]) or "?" for i in remote.worker_info())
        lines.append(f"Ray pool ready in {time.perf_counter() - t0:.1f} s: {remote.num_workers} actors on nodes "
                     f"{', '.join(nodes)} (references read from the shared cache)")
        print("\n".join(lines), flush=True)
        try:
            schedules = fora_schedules(local, args.schedules)
            images = len(schedules) * args.num_prompts * len(args.seeds)
            tallies = {"in-process": Tally(), "ray cluster": Tally()}
            for r in range(-1, args.rounds):   # round -1: warm-up, not counted
                order = [("in-process", local), ("ray cluster", remote)]
                counted = {n: Tally() if r < 0 else t for n, t in tallies.items()}
                for name, pool in (order if r % 2 == 0 else order[::-1]):
                    (score_local if pool is local else score_ray)(pool, schedules, counted[name])
                print(f"round {r + 1}/{args.rounds}{' (warm-up)' if r < 0 else ''}: " + ", ".join(
                    f"{n} {t.walls[-1]:.2f} s" for n, t in counted.items()), flush=True)
        finally:
            remote.close()
            ray.shutdown()
            local.close()
    here, there = tallies["in-process"], tallies["ray cluster"]
    lines.append(f"{len(schedules)} schedules per request x {args.rounds} rounds, {args.num_prompts} prompts x "
                 f"{len(args.seeds)} seeds, {args.steps} steps, {args.threads} torch thread(s) per worker")
    lines += [here.line("in-process", images), there.line("ray cluster", images)]
    lines.append(f"per-evaluation time, Ray actor / in-process: "
                 f"{statistics.median(there.evals) / statistics.median(here.evals):.3f} (median of tasks)")
    same = all(there.results[h].metrics == r.metrics and there.results[h].per_prompt == r.per_prompt
               for h, r in here.results.items())
    lines.append(f"quality metrics identical between the pools: {'yes' if same else 'NO'}")
    report(lines, Path(args.out) if args.out else None)


if __name__ == "__main__":
    main()
