"""`RayPool`: the same `Evaluator` inside Ray actors, one per GPU (CPU actors when there is none).

- Joins the cluster at `pool.address`, or uses the already initialised Ray, or starts a local one.
- Placement (evaluators/placement.py): how many actors, the GPU share and custom resources each
  reserves, and the device each computes on, planned from the live nodes before any actor exists;
  a config the cluster cannot hold (a GPU config on a cluster without GPUs) is one `PoolStartError`.
  Each actor reports the node it runs on (`worker_info()[i]["node_id"]`), its GPU ids and the
  CUDA_VISIBLE_DEVICES Ray set from them.
- Each actor loads the pipeline once and scores many schedules (`max_restarts=-1`: Ray restarts a
  dead actor, which reloads the model and reads the references from the disk cache).
- One task in flight per actor, results streamed with `ray.wait` as they finish.
- Fault handling is ours, not Ray's task retries (`max_task_retries=0`), so every schedule is
  accounted for exactly once: an actor that dies mid-task (OOM, SIGKILL, node loss: Ray then reports
  the actor "unavailable" and restarts it wherever its resources are free) puts the schedule
  back at the head of the queue, up to `max_retries` resubmissions, then it is a 'failed' result;
  the lost attempt produced nothing, so nothing is counted twice. A task past `task_timeout_s`
  (measured from submission) is a 'failed' result and its actor is killed and restarted so the pool
  keeps its capacity; timeouts are not retried (a slow schedule stays slow).
- References: if the disk cache lacks any, the first actor computes them before the others start,
  so they are computed once.
- Start-up on a busy machine: a cluster this pool starts runs its workers at `pool.worker_niceness`
  (0; Ray's default of 15 left a 2-actor study ~10 minutes in actor start-up on a loaded 2-core
  machine); `ray.init` is retried (`pool.start_attempts`: Ray gives a new node a fixed 30 s); while
  the actors load, the driver reports how many are ready and how many reference files exist; a
  start-up that fails or exceeds `pool.startup_timeout_s` is one `PoolStartError` naming the setting.
"""

from __future__ import annotations

import collections
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from schedules import CostTable, EvaluationResult, ModelSpec, SamplingSpec, Schedule

from .config import EvaluationConfig, PoolConfig
from .placement import ActorPlan, live_nodes, plan_actors
from .pool import EvaluatorPool, PoolStartError, unique
from .profiling import DriftProfile

_REPO_ROOT = Path(__file__).resolve().parents[1]
_PROBE_INTERVAL_S = 0.5      # how often to ask a restarting actor whether it is back
_RESTART_GIVE_UP_S = 900.0   # an actor not back after this long is dropped from the pool


class EvaluatorActor:
    """The Ray actor body: a thin shell around `Evaluator` (decorated with `ray.remote` at runtime so
    importing this module never needs Ray)."""

    def __init__(self, config: EvaluationConfig, index: int) -> None:
        from .worker import Evaluator
        _renice(config.pool.worker_niceness)
        # `config.device` is the plan's ("cuda" or "cpu"); with a GPU share Ray has set this process's
        # CUDA_VISIBLE_DEVICES to its GPU, so "cuda" is this actor's own device.
        self.evaluator = Evaluator(config, name=f"ray-{index}@{socket.gethostname()}:{os.getpid()}")

    def info(self) -> dict[str, Any]:
        import ray
        context = ray.get_runtime_context()
        return {**self.evaluator.info(), "niceness": os.nice(0), "node_id": context.get_node_id(),
                "gpu_ids": [str(g) for g in context.get_accelerator_ids().get("GPU", [])],
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}

    def evaluate(self, schedule: Schedule, race: Any = None) -> EvaluationResult:
        return self.evaluator.evaluate(schedule, race)

    def profile(self, schedule: Schedule | None) -> DriftProfile:
        return self.evaluator.profile(schedule)

    def evaluate_baseline(self, method: str, settings: dict[str, Any]) -> Any:
        return self.evaluator.evaluate_baseline(method, settings)

    def reference_thumbnails(self) -> list[bytes]:
        return self.evaluator.reference_thumbnails()

    def timestep_grid(self, steps: int) -> tuple[str, tuple[float, ...]]:
        return self.evaluator.timestep_grid(steps)

    def timestep_costs(self, grid: Sequence[float]) -> np.ndarray:
        return self.evaluator.timestep_costs(grid)


@dataclass
class _Task:
    schedule: Schedule
    actor: int
    submitted: float   # perf_counter


def local_cluster_options(pool: PoolConfig) -> dict[str, Any]:
    """`ray.init` options for a local cluster that evaluates well on a busy machine (also used by the
    tests' session cluster)."""
    return {"include_dashboard": False, "log_to_driver": False,
            "_system_config": {"worker_niceness": pool.worker_niceness}}


def _renice(target: int) -> None:
    """Bring this worker to `target` niceness where the OS lets us (lowering niceness needs
    CAP_SYS_NICE; otherwise the driver warns with the setting to change)."""
    try:
        if os.nice(0) > target:
            os.setpriority(os.PRIO_PROCESS, 0, target)
    except (OSError, AttributeError):
        pass


def _auth_hint() -> str:
    """Clusters started with `ray start` (Ray 2.60 here) use token authentication when a token exists; a
    driver naming an explicit address sends its token only with RAY_AUTH_MODE=token: the failure
    itself ("Failed to connect") does not say so."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "token":
        return ""
    return ("; if the cluster uses token authentication (Ray's default when ~/.ray/auth_token exists where it was "
            "started), set RAY_AUTH_MODE=token here and give this machine the cluster's token (RAY_AUTH_TOKEN, "
            "RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)")


def _one_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}"[:400]


class RayPool(EvaluatorPool):
    def __init__(self, config: EvaluationConfig, progress: Any = None) -> None:
        import ray

        self.config = config
        self._ray = ray
        self._owns_ray = False
        self._report = progress or (lambda *args, **kwargs: None)
        self.stats = {"submitted": 0, "retries": 0, "timeouts": 0, "actor_deaths": 0,
                      "eval_seconds": 0.0, "roundtrip_seconds": 0.0}
        self.actors: list[Any] = []
        self._down_since: dict[int, float] = {}   # actor index -> when it was seen dead (Ray restarts it)
        self._gone: set[int] = set()              # actors that never came back
        self._closed = False
        self._start_ray()
        try:
            self.plan = self._plan()
            self.num_actors = self.plan.num_actors
            self._actor_cls = ray.remote(EvaluatorActor).options(
                **self.plan.ray_options(), max_restarts=-1, max_task_retries=0)
            self._actor_config = config.model_copy(update={"device": self.plan.device})
            self._start_actors(device_type=self.plan.device)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ lifecycle
    def _start_ray(self) -> None:
        ray, pc = self._ray, self.config.pool
        if ray.is_initialized():
            return
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if pc.address is None:
            kwargs = local_cluster_options(pc)
        if not _importable_from_site_packages():
            kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": str(_REPO_ROOT)}}
        where = f"the Ray cluster at {pc.address!r}" if pc.address else "a local Ray cluster"
        last: BaseException | None = None
        for attempt in range(1, pc.start_attempts + 1):
            self._report(f"starting {where}" + (f" (attempt {attempt} of {pc.start_attempts})" if attempt > 1 else ""))
            try:
                ray.init(address=pc.address, **kwargs)
                self._owns_ray = True
                return
            except Exception as exc:   # Ray raises bare Exception / ConnectionError / RuntimeError here
                last = exc
                try:
                    ray.shutdown()
                except Exception:
                    pass
        hint = (f"check pool.address and that the cluster is up{_auth_hint()}" if pc.address else
                "the machine is probably overloaded: retry when it is quieter, raise pool.start_attempts, start "
                "a cluster yourself (`ray start --head`) and set pool.address: auto, or use pool.kind: local")
        raise PoolStartError(f"could not start {where} after {pc.start_attempts} attempt(s) ({_one_line(last)}); "
                             f"{hint}") from None

    def _plan(self) -> ActorPlan:
        """The actors this cluster can hold for this config, or a PoolStartError saying why not."""
        where = f"the Ray cluster at {self.config.pool.address}" if self.config.pool.address else "the Ray cluster"
        plan = plan_actors(self.config.pool, self.config.device, live_nodes(self._ray), where)
        if plan.num_actors > plan.capacity:
            self._report(f"warning: pool.num_actors is {plan.num_actors} but {where} holds {plan.capacity} actors "
                         f"reserving {plan.ray_options()}: the others wait for resources (an autoscaler may add "
                         "nodes; pool.startup_timeout_s bounds the wait)")
        return plan

    def _start_actors(self, device_type: str) -> None:
        first = self._actor_cls.remote(self._actor_config, 0)
        self.actors.append(first)
        refs = self._reference_store(device_type)
        if refs is not None and not self._references_cached(refs):
            self._info = self._wait_started([first], refs)[0]
        self.actors.extend(self._actor_cls.remote(self._actor_config, i) for i in range(1, self.num_actors))
        infos = self._wait_started(self.actors, None)   # references are on disk by now
        self._info = infos[0]
        self._warn_niceness(infos)

    def _wait_started(self, actors: list[Any], refs: Any) -> list[dict[str, Any]]:
        """The actors' info once all have started, reporting progress meanwhile (actors ready, and
        reference files written by the first actor); a start-up error or timeout is a PoolStartError."""
        ray, timeout = self._ray, self.config.pool.startup_timeout_s
        pending = [a.info.remote() for a in actors]
        order = list(pending)
        start = time.monotonic()
        while True:
            ready, waiting = ray.wait(pending, num_returns=len(pending), timeout=2.0)
            self._report("evaluator actors ready", len(order) - len(waiting), len(order))
            if refs is not None and waiting:
                self._report_references(refs)
            pending = waiting
            if not pending:
                break
            if timeout is not None and time.monotonic() - start > timeout:
                raise PoolStartError(f"{len(pending)} of {len(order)} evaluator actors did not start within "
                                     f"{timeout:g} s (pool.startup_timeout_s): raise it, use fewer actors "
                                     "(pool.num_actors), or run on a quieter machine")
        try:
            return ray.get(order)
        except ray.exceptions.RayError as exc:
            raise PoolStartError(f"an evaluator actor failed to start: {_one_line(exc)}") from None

    def _warn_niceness(self, infos: list[dict[str, Any]]) -> None:
        worst = max((int(i.get("niceness", 0)) for i in infos), default=0)
        if worst > self.config.pool.worker_niceness:
            self._report(f"warning: Ray workers run at niceness {worst} (a cluster started elsewhere, and this "
                         "process may not lower it); evaluation starves when the machine is busy: start the "
                         "cluster with RAY_worker_niceness=0 in its environment")

    def _reference_store(self, device_type: str) -> Any:
        from .prompts import pairs
        from .references import ReferenceStore
        try:
            return ReferenceStore(self.config, device_type), pairs(self.config)
        except OSError:
            return None

    @staticmethod
    def _references_cached(refs: Any) -> bool:
        store, all_pairs = refs
        return all(store.has(p, s) for p, s in all_pairs)

    def _report_references(self, refs: Any) -> None:
        store, all_pairs = refs
        self._report("all-compute references on disk (pairs)", sum(store.has(p, s) for p, s in all_pairs),
                     len(all_pairs))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for actor in self.actors:
            try:
                self._ray.kill(actor, no_restart=True)
            except Exception:
                pass
        self.actors.clear()
        if self._owns_ray and self._ray.is_initialized():
            self._ray.shutdown()

    # ------------------------------------------------------------------ queries
    def model_spec(self) -> ModelSpec:
        return self._info["model_spec"]

    def sampling_spec(self) -> SamplingSpec:
        return self._info["sampling_spec"]

    def cost_table(self) -> CostTable:
        return CostTable.from_dict(self._info["cost_table"])

    @property
    def num_workers(self) -> int:
        return len(self.actors)

    def reference_thumbnails(self) -> list[bytes]:
        return self._call_any(lambda a: a.reference_thumbnails.remote(), "reference_thumbnails")

    def profile(self, schedule: Schedule | None = None) -> DriftProfile:
        return self._call_any(lambda a: a.profile.remote(schedule), "profile")

    def evaluate_baselines(self, requests: Sequence[tuple[str, dict[str, Any]]]) -> Iterator[Any]:
        """Peers one at a time on one actor (each is timed against that actor's reference)."""
        for method, settings in requests:
            yield self._call_any(lambda a: a.evaluate_baseline.remote(method, dict(settings)), "evaluate_baseline")

    def timestep_grid(self, steps: int) -> tuple[str, tuple[float, ...]]:
        return self._call_any(lambda a: a.timestep_grid.remote(steps), "timestep_grid")

    def timestep_costs(self, grid: Sequence[float]) -> np.ndarray:
        return self._call_any(lambda a: a.timestep_costs.remote(tuple(grid)), "timestep_costs")

    def worker_info(self) -> list[dict[str, Any]]:
        """One dict per actor, in actor order; an actor that is restarting reports only that."""
        out = []
        for i, actor in enumerate(self.actors):
            try:
                out.append(self._ray.get(actor.info.remote(), timeout=60))
            except (self._ray.exceptions.GetTimeoutError, *self._lost_worker_errors()) as exc:
                out.append({"name": f"ray-{i}", "status": "restarting", "error": type(exc).__name__})
        return out

    def _call_any(self, call: Any, what: str) -> Any:
        """A one-off call, moved to the next actor when one dies under it (at most `max_retries`
        times) and waiting while an actor restarts."""
        unavailable = getattr(self._ray.exceptions, "ActorUnavailableError", ())
        lost = self._lost_worker_errors()
        deaths, k, start = 0, 0, time.perf_counter()
        while True:
            try:
                return self._ray.get(call(self.actors[k % len(self.actors)]))
            except unavailable:
                if time.perf_counter() - start > _RESTART_GIVE_UP_S:
                    raise RuntimeError(f"{what}: no evaluator actor came back within "
                                       f"{_RESTART_GIVE_UP_S:g} s") from None
                time.sleep(_PROBE_INTERVAL_S)
            except lost:
                self.stats["actor_deaths"] += 1
                deaths += 1
                if deaths > self.config.pool.max_retries:
                    raise
            k += 1

    def _lost_worker_errors(self) -> tuple[type, ...]:
        ex = self._ray.exceptions
        return tuple(getattr(ex, n) for n in ("RayActorError", "WorkerCrashedError", "NodeDiedError",
                                              "ObjectLostError", "OutOfMemoryError") if hasattr(ex, n))

    # ------------------------------------------------------------------ scoring
    def evaluate(self, schedules: Iterable[Schedule], races: Mapping[str, Any] | None = None
                 ) -> Iterator[EvaluationResult]:
        ray = self._ray
        lost_worker = self._lost_worker_errors()
        timeout = self.config.pool.task_timeout_s
        queue = collections.deque(unique(schedules))
        attempts: collections.Counter[str] = collections.Counter()
        down_since = self._down_since          # actors restarting, possibly since an earlier request
        idle = [i for i in range(len(self.actors)) if i not in down_since]
        running: dict[Any, _Task] = {}
        probes: dict[Any, int] = {}            # __ray_ready__ ref -> actor index (actor restarting)
        probe_due: dict[int, float] = {i: time.perf_counter() for i in down_since if i not in self._gone}
        self._running = running

        def fail(schedule: Schedule, reason: str) -> EvaluationResult:
            return EvaluationResult.failed(schedule, reason, prompt_set_hash=self._info.get("prompt_set_hash"),
                                           finished_at=time.time())

        while queue or running:
            now = time.perf_counter()
            for i, due in list(probe_due.items()):
                if due <= now:
                    del probe_due[i]
                    probes[self.actors[i].__ray_ready__.remote()] = i
            if not idle and not running and not probes and not probe_due:
                while queue:   # every actor gave up restarting
                    yield fail(queue.popleft(), "no evaluator actor is alive (they failed to restart)")
                break
            while queue and idle:
                i = idle.pop(0)
                schedule = queue.popleft()
                race = (races or {}).get(schedule.hash)
                running[self.actors[i].evaluate.remote(schedule, race)] = _Task(schedule, i, time.perf_counter())
                self.stats["submitted"] += 1
            wait_s = 1.0
            if timeout is not None and running:
                oldest = min(t.submitted for t in running.values())
                wait_s = min(wait_s, oldest + timeout - time.perf_counter())
            if probe_due:
                wait_s = min(wait_s, min(probe_due.values()) - time.perf_counter())
            refs = list(running) + list(probes)
            if not refs:   # only restarting actors, none due for a probe yet
                time.sleep(max(0.0, wait_s))
                continue
            done, _ = ray.wait(refs, num_returns=1, timeout=max(0.0, wait_s))
            for ref in done:
                if ref in probes:
                    i = probes.pop(ref)
                    try:
                        ray.get(ref)
                    except lost_worker:
                        if time.perf_counter() - down_since[i] > _RESTART_GIVE_UP_S:
                            self._gone.add(i)   # this actor is gone for good; the others carry on
                            continue
                        probe_due[i] = time.perf_counter() + _PROBE_INTERVAL_S
                        continue
                    down_since.pop(i, None)
                    idle.append(i)
                    continue
                task = running.pop(ref)
                try:
                    result = ray.get(ref)
                except lost_worker as exc:
                    # The actor died under this task: the attempt produced nothing. Wait for Ray to
                    # restart the actor (probe), and put the schedule back at the head of the queue.
                    self.stats["actor_deaths"] += 1
                    down_since.setdefault(task.actor, time.perf_counter())
                    probe_due[task.actor] = time.perf_counter() + _PROBE_INTERVAL_S
                    attempts[task.schedule.hash] += 1
                    if attempts[task.schedule.hash] > self.config.pool.max_retries:
                        yield fail(task.schedule, f"the evaluator actor died {attempts[task.schedule.hash]} "
                                                  f"times while scoring this schedule (last: {type(exc).__name__})")
                    else:
                        self.stats["retries"] += 1
                        queue.appendleft(task.schedule)
                    continue
                except ray.exceptions.RayTaskError as exc:
                    idle.append(task.actor)
                    yield fail(task.schedule, f"evaluator raised: {exc}")
                    continue
                idle.append(task.actor)
                self.stats["roundtrip_seconds"] += time.perf_counter() - task.submitted
                if result.started_at is not None and result.finished_at is not None:
                    self.stats["eval_seconds"] += result.finished_at - result.started_at
                yield result
            if timeout is not None:
                now = time.perf_counter()
                for ref, task in list(running.items()):
                    if now - task.submitted > timeout:
                        running.pop(ref)
                        self.stats["timeouts"] += 1
                        ray.kill(self.actors[task.actor], no_restart=False)   # Ray restarts it
                        down_since[task.actor] = now
                        probe_due[task.actor] = now + _PROBE_INTERVAL_S
                        yield fail(task.schedule, f"timed out after {timeout:g} s (pool.task_timeout_s); "
                                                  "the actor was restarted")
        self._running = {}

    def in_flight(self) -> list[dict[str, Any]]:
        """Tasks currently submitted: actor index, schedule hash, seconds since submission."""
        now = time.perf_counter()
        return [{"actor": t.actor, "schedule_hash": t.schedule.hash, "seconds": now - t.submitted}
                for t in list(getattr(self, "_running", {}).values())]

    def dispatch_overhead(self) -> float:
        """(driver round-trip - actor evaluation time) / actor evaluation time, over finished tasks."""
        ev = self.stats["eval_seconds"]
        return (self.stats["roundtrip_seconds"] - ev) / ev if ev > 0 else float("nan")


def _importable_from_site_packages() -> bool:
    """True when cachesearch is installed (workers import it like the driver); else Ray workers get
    the repository on PYTHONPATH."""
    import evaluators
    return "site-packages" in str(Path(evaluators.__file__).resolve())
