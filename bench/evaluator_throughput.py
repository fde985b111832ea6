"""Evaluator throughput vs the plain pipeline, and Ray dispatch overhead, measured side by side.

    python bench/evaluator_throughput.py                     # embedded model, writes bench/results/
    python bench/evaluator_throughput.py --rounds 3 --num-prompts 4 --no-ray

Local: each round times one plain pipeline call (`pipe(prompts, generator=[...], output_type="pt")`,
what a user would run) and one `LocalPool.evaluate([all-compute schedule])` on the same prompts and
seeds, alternating which goes first; throughput = images / second, ratio = evaluator / plain (goal
>= 0.95). The evaluator's extra work is the schedule hooks, NaN checks, metrics and thumbnails.

Ray: one actor scores several distinct schedules in one request; dispatch overhead = (driver round
trip - time the actor spent evaluating) / time the actor spent evaluating (goal < 2%).
Machines here are shared and noisy: only ratios measured in the same run mean anything.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from evaluators import EvaluationConfig, LocalPool  # noqa: E402
from evaluators.prompts import pairs  # noqa: E402
from schedules import Schedule  # noqa: E402


def fora(pool, every: int) -> Schedule:
    spec, sampling = pool.model_spec(), pool.sampling_spec()
    rows = {}
    for g in spec.block_groups:
        for c in g.components:
            rows[(g.name, c)] = [[s % every == 0] * g.num_blocks for s in range(sampling.num_inference_steps)]
    return Schedule.from_masks(spec, sampling, rows)


def judge_metrics(model: str) -> list[str]:
    """The judge's metrics when the embedded judge loads in this checkout (it may be mid-retraining)."""
    if model != "embedded":
        return []
    try:
        from evaluators.embedded import load_judge
        load_judge()
        return ["judge_adherence", "judge_fd"]
    except Exception as exc:
        print(f"embedded judge unavailable, fidelity metrics only: {type(exc).__name__}: {str(exc)[:120]}")
        return []


def make_config(args, cache: str, **over) -> EvaluationConfig:
    doc = dict(model=args.model, num_prompts=args.num_prompts, seeds=args.seeds, batch_size=None,
               num_inference_steps=args.steps, cache_dir=cache, latency={"warmup": 1, "repeats": 3},
               n_thumbnails=4, num_threads=args.threads,
               metrics=["latent_mse", "psnr", "ssim"] + judge_metrics(args.model))
    doc.update(over)
    return EvaluationConfig(**doc)


def bench_local(args, cache: str, out: list[str]) -> None:
    cfg = make_config(args, cache)
    t0 = time.perf_counter()
    pool = LocalPool(cfg)
    out.append(f"local pool ready in {time.perf_counter() - t0:.1f} s; metrics {cfg.metric_names()}")
    pipe, base = pool.evaluator.pipe, pool.all_compute_schedule()
    ps = pairs(cfg)
    prompts, seeds = [p for p, _ in ps], [s for _, s in ps]
    n = len(ps)

    def plain() -> float:
        gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        kwargs = dict(num_inference_steps=cfg.num_inference_steps, guidance_scale=cfg.guidance_scale,
                      generator=gens, output_type="pt", **cfg.pipeline_kwargs)
        t = time.perf_counter()
        with torch.no_grad():
            pipe(prompts, **kwargs)
        return time.perf_counter() - t

    inside: list[float] = []   # seconds of the evaluation spent in the pipeline call itself

    def evaluator() -> float:
        t = time.perf_counter()
        [result] = pool.evaluate([base])
        assert result.ok, result.error
        inside.append(result.latency_s * n)
        return time.perf_counter() - t

    plain()  # warm both paths once
    evaluator()
    plain_t, eval_t = [], []
    for r in range(args.rounds):
        if r % 2 == 0:
            plain_t.append(plain())
            eval_t.append(evaluator())
        else:
            eval_t.append(evaluator())
            plain_t.append(plain())
    inside = inside[-args.rounds:]
    per_round = [p / e for p, e in zip(plain_t, eval_t)]
    out.append(f"images per call: {n} ({cfg.num_prompts} prompts x {len(cfg.seeds)} seeds), "
               f"{cfg.num_inference_steps} steps, rounds: {args.rounds}")
    out.append(f"plain pipeline : {n * len(plain_t) / sum(plain_t):8.2f} images/s  (per call s: "
               f"{', '.join(f'{t:.2f}' for t in plain_t)})")
    out.append(f"local evaluator: {n * len(eval_t) / sum(eval_t):8.2f} images/s  (per call s: "
               f"{', '.join(f'{t:.2f}' for t in eval_t)})")
    out.append(f"throughput ratio evaluator/plain: total {sum(plain_t) / sum(eval_t):.3f}, median of rounds "
               f"{statistics.median(per_round):.3f}  (goal >= 0.95)")
    out.append(f"evaluator time outside the pipeline call (hooks, NaN checks, metrics, thumbnails): "
               f"{100 * (sum(eval_t) - sum(inside)) / sum(eval_t):.1f}%; pipeline call inside the evaluator vs "
               f"plain: {sum(plain_t) / sum(inside):.3f}")
    fast = next(iter(pool.evaluate([fora(pool, 2)])))
    out.append(f"FORA every-2nd on the same worker: MAC speedup {fast.mac_speedup:.2f}, latency speedup "
               f"{fast.latency_speedup:.2f}, psnr {fast.metrics.get('psnr', float('nan')):.2f} dB")
    pool.close()


def bench_ray(args, cache: str, out: list[str]) -> None:
    import ray
    ray.init(num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    from evaluators import RayPool
    cfg = make_config(args, cache, pool={"kind": "ray", "num_actors": 1, "cpus_per_actor": args.ray_cpus})
    t0 = time.perf_counter()
    pool = RayPool(cfg)
    out.append(f"ray pool ready in {time.perf_counter() - t0:.1f} s (1 actor, {args.ray_cpus} CPUs)")
    schedules = [pool.all_compute_schedule()] + [fora(pool, k) for k in range(2, 2 + args.ray_schedules - 1)]
    t0 = time.perf_counter()
    results = list(pool.evaluate(schedules))
    wall = time.perf_counter() - t0
    assert all(r.ok for r in results), [r.error for r in results]
    actor_s = sum(r.finished_at - r.started_at for r in results)
    out.append(f"ray: {len(results)} schedules in {wall:.2f} s wall, {actor_s:.2f} s inside the actor")
    out.append(f"ray dispatch overhead: per task {100 * pool.dispatch_overhead():.2f}% of evaluation time, "
               f"whole request {100 * (wall - actor_s) / actor_s:.2f}%  (goal < 2%)")
    pool.close()
    ray.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--num-prompts", type=int, default=16)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--ray-schedules", type=int, default=6)
    ap.add_argument("--ray-cpus", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker (1: stable on a shared CPU)")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "evaluator_throughput.txt"))
    args = ap.parse_args()
    out = [f"# bench/evaluator_throughput.py  {time.strftime('%Y-%m-%d %H:%M:%S')}  model={args.model}",
           f"# {platform.platform()}, torch {torch.__version__}, {args.threads} torch thread(s) per worker, "
           f"cuda={torch.cuda.is_available()}",
           "# command: python bench/evaluator_throughput.py " + " ".join(sys.argv[1:]),
           "# load average at start: {:.1f} {:.1f} {:.1f} on {} CPUs (shared machine: per-call times swing; "
           "the share of evaluator time outside the pipeline call is the stable figure)".format(
               *os.getloadavg(), os.cpu_count())]
    with tempfile.TemporaryDirectory() as cache:
        bench_local(args, cache, out)
        print("\n".join(out), flush=True)
        if not args.no_ray:
            bench_ray(args, cache, out)
    text = "\n".join(out) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
