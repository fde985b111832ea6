"""Assemble and run a study from a validated config: store, pool, space, searcher, loop.

What is decided here and why:
- A new study refuses an existing name (so two runs never mix silently); `resume=NAME` reopens it,
  and the store checks the model signature, searcher, objectives and reference point still match.
  The budget comes from the config given now, so a resumed study can be given more budget.
- Schedules are built from the pool's own all-compute schedule (model spec *and* sampling, CFG mode
  included), so what the searcher proposes is exactly what the evaluator accepts.
- Seeds for a searcher (e.g. a DP study's front for ECAD) come from other studies in the same store
  or from schedule files; they are projected into this study's space or left out.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from schedules import CostTable, Schedule, ScheduleError, load_schedule
from store import check_study_name, database_url, safe_filename

from .base import Searcher
from .config import StudyConfig
from .loop import Budget, Outcome, SearchLoop
from .progress import SearchProgress, StartupProgress
from .registry import SEARCHERS
from .space import SearchSpace, fine_grid
from .synthetic import SyntheticPool


class StudyError(RuntimeError):
    """A study cannot start or resume; the message says why and what to do."""


def make_pool(config: StudyConfig, progress: Any = None) -> Any:
    if config.synthetic is not None:
        s, sp = config.synthetic, config.space
        grid = None
        if "timesteps" in sp.kinds:
            grid = tuple(sp.grid) if sp.grid else fine_grid(sp.fine_steps or 2 * s.num_steps, sp.num_train_timesteps)
        return SyntheticPool(num_blocks=s.num_blocks, num_steps=s.num_steps, seed=s.seed, delay=s.delay, grid=grid)
    from evaluators import make_pool as make_evaluator_pool
    return make_evaluator_pool(config.evaluation, progress)


def pool_cost_table(pool: Any) -> CostTable | None:
    """The pool's per-component MACs (DP's knapsack weights), wherever the pool exposes them."""
    fn = getattr(pool, "cost_table", None)
    if callable(fn):
        return fn()
    try:
        info = pool.worker_info()
    except Exception:
        return None
    doc = info[0].get("cost_table") if info else None
    return CostTable.from_dict(doc) if doc else None


def baseline_requests(config: StudyConfig) -> list[tuple[str, dict[str, Any]]]:
    """The (method, settings) pairs of the config's `baselines:` section, sweeps expanded, each checked."""
    if not config.baselines:
        return []
    from evaluators.baselines import BaselineError, check_baseline
    out = []
    for i, b in enumerate(config.baselines):
        for method, settings in b.expanded():
            try:
                check_baseline(method, settings)
            except BaselineError as exc:
                raise StudyError(f"baselines[{i}]: {exc}") from None
            out.append((method, settings))
    return out


def score_baselines(store: Any, study: str, pool: Any, requests: list[tuple[str, dict[str, Any]]],
                    log: Any = print) -> int:
    """Score the peer settings this study has not scored yet on its prompt set (a resumed study skips
    what it has); each result is stored as it arrives. Returns how many were scored now."""
    from evaluators.baselines import baseline_label
    done = {b.label for b in store.baselines(study)}       # a study's prompt set is fixed: its label suffices
    todo = [(m, s) for m, s in requests if baseline_label(m, s) not in done]
    if not todo:
        return 0
    log(f"scoring {len(todo)} peer setting(s) on the study's prompts ...")
    for n, result in enumerate(pool.evaluate_baselines(todo), 1):
        store.record_baseline(study, result)
        if result.ok:
            figures = ", ".join(f"{k} {v:.4g}" for k, v in result.metrics.items())
            log(f"  [{n}/{len(todo)}] {result.label}: {result.mac_speedup:.2f}x MACs, "
                f"{result.latency_speedup or float('nan'):.2f}x latency, {figures}")
        else:
            log(f"  [{n}/{len(todo)}] {result.label}: cannot run here: {result.error}")
    return len(todo)


def pool_latency_table(pool: Any, cost_table: CostTable | None) -> Any:
    """The first worker's latency cost model (evaluation.latency.model), or None. Each worker scores
    with its own table; the searcher predicts with this one."""
    if cost_table is None:
        return None
    try:
        info = pool.worker_info()
    except Exception:
        return None
    doc = info[0].get("latency_table") if info else None
    if not doc:
        return None
    from schedules.latency import LatencyTable
    return LatencyTable.from_dict(doc, cost_table)


def model_signature(config: StudyConfig) -> str:
    if config.synthetic is not None:
        s = config.synthetic
        return f"synthetic:{s.num_blocks}x{s.num_steps}:seed{s.seed}"
    return config.evaluation.model_signature()


def make_space(config: StudyConfig, pool: Any) -> SearchSpace:
    """The study's space. A timesteps space takes its fine grid (and whether it holds timesteps or
    sigmas) from the pool's scheduler, which must be able to sample custom values."""
    base = pool.all_compute_schedule()
    sp = config.space
    grid, kind = None, "timesteps"
    if "timesteps" in sp.kinds:
        grid_of = getattr(pool, "timestep_grid", None)
        if grid_of is None:
            raise StudyError("the timesteps space needs an evaluator pool that samples explicit timesteps "
                             "(timestep_grid); this one does not: use kinds [cache] and/or [architecture]")
        try:
            kind, grid = grid_of(sp.fine_steps or len(sp.grid))
        except ScheduleError as exc:
            raise StudyError(f"space.kinds: timesteps: {exc}") from None
        if sp.grid:
            grid = tuple(sp.grid)
    try:
        return SearchSpace(base.model, base.sampling, tuple(sp.kinds), grid, sp.min_changes, kind,
                           sp.min_steps, sp.max_steps, tuple(sp.modes))
    except ValueError as exc:
        raise StudyError(f"space: {exc}") from None


def collect_seeds(config: StudyConfig, store: Any) -> list[Schedule]:
    """The seeds a searcher starts from, each saying where it came from (`seed_from`) on top of the
    provenance it had there (a heuristic stays a heuristic)."""
    seeds: list[Schedule] = []
    for name in config.seed_studies:
        seeds += [store.schedule(r.schedule_hash).with_info(provenance={**r.provenance, "seed_from": f"study {name}"})
                  for r in store.front(name)]
    for path in config.seed_schedules:
        loaded = load_schedule(path)
        seeds.append(loaded.with_info(provenance={"seed_from": f"file {path}"}))
    return seeds


def import_seed_results(store: Any, name: str, config: StudyConfig) -> int:
    """Copy the front results of `seed_studies` scored on the same model, sampling, prompts and seeds
    into the new study (provenance `imported_from`), so seeding a searcher with them costs no
    evaluation; they do not count toward this study's evaluation budget. Studies scored differently
    only lend their schedules (re-evaluated here)."""
    signature = model_signature(config)
    prompt_set = config.evaluation.prompt_set_hash() if config.evaluation is not None else "synthetic"
    n = 0
    for seed_study in config.seed_studies:
        if store.get_study(seed_study).model_signature != signature:
            continue
        front = {r.schedule_hash for r in store.front(seed_study)}
        for r in store.results(seed_study):
            if r.ok and r.schedule.hash in front and r.prompt_set_hash == prompt_set:
                r.schedule = r.schedule.with_info(provenance={"imported_from": seed_study})
                store.record_evaluation(name, r)
                n += 1
    return n


def make_searcher(config: StudyConfig, space: SearchSpace, cost_table: CostTable | None,
                  seeds: list[Schedule], latency_table: Any = None) -> Searcher:
    sc = config.searcher
    cls = SEARCHERS[sc.name]
    try:
        return cls(space, config.resolved_objectives(), sc.settings, sc.seed, seeds=seeds, cost_table=cost_table,
                   latency_table=latency_table)
    except ValueError as exc:
        raise StudyError(f"searcher: {exc}") from None


def study_name(config: StudyConfig, source: str | None) -> str:
    if config.study:
        return config.study
    stem = safe_filename(Path(source).stem if source else "study", max_length=80).lstrip("_-") or "study"
    return check_study_name(f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}")


def open_store(db: str | None) -> Any:
    from store import Store
    return Store(database_url(db))


def check_inputs(config: StudyConfig, store: Any, name: str, resume: str | None) -> bool:
    """Everything about the inputs that can be checked before the study is written: the study name
    (new, or the one to resume), the seed studies and seed files. Returns whether the study is new."""
    from store import StudyNotFound
    try:
        if resume:
            store.get_study(resume)
        for seed_study in config.seed_studies:
            store.get_study(seed_study)
    except StudyNotFound as exc:
        raise StudyError(str(exc)) from None
    if not resume and name in {s.name for s in store.list_studies()}:
        raise StudyError(f"a study named '{name}' already exists in {store!r}: resume it with "
                         f"--resume {name}, or set another `study:` name")
    for path in config.seed_schedules:
        load_schedule(path)
    return not resume


def study_document(config: StudyConfig) -> dict[str, Any]:
    """The config as stored with the study, plus what the pages show about it without importing the
    evaluators: the model's name, the units of the evaluation's metrics, and the (prompt, seed) of each
    stored thumbnail (in thumbnail order)."""
    doc = config.to_document()
    if config.synthetic is not None:
        s = config.synthetic
        doc["model_name"] = f"synthetic ({s.num_blocks} blocks, {s.num_steps} steps)"
        return doc
    from evaluators.metrics import metric_unit
    from evaluators.prompts import thumbnail_pairs
    ev = config.evaluation
    doc["model_name"] = ev.model
    doc["metric_units"] = {m: metric_unit(m) for m in ev.metric_names() if metric_unit(m)}
    doc["thumbnails"] = [{"prompt": p, "seed": seed} for p, seed in thumbnail_pairs(ev)]
    return doc


def _create_or_check(store: Any, name: str, config: StudyConfig, resume: bool) -> None:
    store.create_study(
        name, study_document(config), model_signature(config), config.searcher.name,
        {"seed": config.searcher.seed, **config.searcher.settings.model_dump(mode="json")},
        list(config.resolved_objectives()), exist_ok=resume)


def _locate_model(config: StudyConfig) -> None:
    """The model's files, before anything is written (a remote Ray cluster loads its own copy)."""
    ev = config.evaluation
    if ev is None or (ev.pool.kind == "ray" and ev.pool.address):
        return
    from evaluators.models import locate_model
    locate_model(ev)


def run_study(config: StudyConfig, *, source: str | None = None, db: str | None = None,
              resume: str | None = None, show_progress: bool = True, pool: Any = None,
              console: Any = None, log: Any = print) -> tuple[str, Outcome]:
    """Run (or resume) a study to its budget; returns (study name, outcome). Ctrl-C returns cleanly.

    Order matters for what a failure leaves behind: bad inputs (database, model, names, seeds) are
    refused before anything is written; then the study row is created and its heartbeat started
    *before* the evaluator's long start-up (references), so a run killed at any moment can be
    resumed; a start-up that fails with an error removes a study it had just created, empty."""
    from store import Heartbeat
    name = resume or study_name(config, source)
    objectives = config.resolved_objectives()
    own_pool = pool is None
    peers = baseline_requests(config)       # an unknown peer or setting is refused before anything is written
    if own_pool:
        _locate_model(config)
    store = open_store(db or config.db)
    try:
        fresh = check_inputs(config, store, name, resume)
        _create_or_check(store, name, config, bool(resume))
        with Heartbeat(store, name, config.heartbeat_s):
            startup = StartupProgress(show_progress, console)
            try:
                if own_pool:
                    log(f"loading the evaluator ({'synthetic' if config.synthetic else config.evaluation.model}) ...")
                    pool = make_pool(config, startup)
                space = make_space(config, pool)
                if hasattr(pool, "reference_thumbnails") and not store.reference_thumbnails(name):
                    store.set_reference_thumbnails(name, pool.reference_thumbnails())
                if fresh and config.seed_studies:
                    log(f"imported {import_seed_results(store, name, config)} front results from {config.seed_studies}")
                if peers:
                    score_baselines(store, name, pool, peers, log)
                costs = pool_cost_table(pool)
                searcher = make_searcher(config, space, costs, collect_seeds(config, store),
                                         pool_latency_table(pool, costs))
            except KeyboardInterrupt:
                store.set_study_status(name, "interrupted")
                done = store.finished_hashes(name)
                return name, Outcome("interrupted during start-up", len(done), 0, 0.0, 0.0)
            except BaseException:
                if fresh and not store.finished_hashes(name):
                    store.delete_study(name)
                else:
                    store.set_study_status(name, "failed")
                raise
            finally:
                startup.close()
            b = config.budget
            budget = Budget(b.evaluations, b.wall_time_s, b.evaluator_seconds, b.images)
            workers = getattr(pool, "num_workers", 1)
            batch = config.batch_size or max(1, int(workers() if callable(workers) else workers))
            progress = SearchProgress(b.evaluations, f"{name} [{config.searcher.name}]", show_progress, console)
            loop = SearchLoop(store, name, searcher, pool, objectives, budget, batch_size=batch, progress=progress,
                              racing=config.racing)
            with progress:
                outcome = loop.run()
            return name, outcome
    finally:
        if own_pool and pool is not None:
            pool.close()
        store.close()
