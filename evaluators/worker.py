"""`Evaluator`: the scoring code every pool runs, in-process or inside a Ray actor.

Built once per worker: load the pipeline, measure the cost table (one short call at the study's batch
and resolution), load or compute the all-compute references, build the metrics, time the all-compute
pipeline (warm-up + median of repeats; re-timed as the study goes, see `LatencyConfig`). Then
`evaluate(schedule)` runs the study's (prompt, seed) pairs under the schedule, batch by batch, and
scores them against the references. The scoring calls are also the latency samples, so scoring a
schedule costs exactly the images it generates.

`evaluate` never raises for a bad schedule or bad numbers: a mismatch, a NaN/inf output or a metric
that cannot be computed is a 'failed' result naming the reason, and the worker stays usable.
"""

from __future__ import annotations

import io
import os
import socket
import time
import traceback
from collections import deque
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from schedules import (
    DONE,
    FAILED,
    RACED,
    BaselineResult,
    EvaluationResult,
    SamplingSpec,
    Schedule,
    ScheduleError,
    apply_schedule,
    describe,
    full_macs,
    mac_speedup,
    measure_cost_table,
    schedule_macs,
)
from schedules.adapters import find_denoiser
from schedules.cost import DenoiserFlops
from schedules.latency import LatencyTable, calibration_schedules, measure_latency_table
from schedules.timesteps import fine_grid

from .baselines import BASELINES, BaselineError, NothingHooked, apply_baseline, baseline_label
from .config import EvaluationConfig
from .jumps import jump_costs
from .metrics import Batch, MetricError, build_metrics
from .models import load_model
from .profiling import DriftProfile, DriftRecorder
from .prompts import pairs as study_pairs, thumbnail_positions
from .racing import Race
from .references import Reference, ReferenceStore
from .runner import CfgWatch, Outputs, PipelineRunner
from .timing import Clock, Timer, median
from .trajectory import PrefixCache, TrajectoryControl, branch_points, prefix_key

EMBEDDED_MODEL_ID = "cachesearch/embedded"   # what evaluators.embedded's own schedules record
COST_STEPS = 2   # a 1-step call breaks PixArt's pipeline with multistep schedulers; MACs are per call


class NonFiniteOutput(RuntimeError):
    """The pipeline produced NaN or inf under a schedule."""


StartupProgress = Callable[..., None]   # progress(phase, done=None, total=None)


class Evaluator:
    """`progress(phase, done, total)` hears about the slow start-up steps (model, MACs, reference runs,
    reference timing). `clock` times the pipeline calls on CPU (`time.perf_counter`; tests inject a
    deterministic one)."""

    def __init__(self, config: EvaluationConfig, name: str | None = None, pipe: Any = None, *,
                 progress: StartupProgress | None = None, clock: Clock = time.perf_counter) -> None:
        t0 = time.perf_counter()
        if config.num_threads is not None:
            torch.set_num_threads(config.num_threads)
            self._blas_limit = _limit_blas_threads(config.num_threads)
        self.config = config
        self.clock = clock
        self._progress: StartupProgress = progress or (lambda *args, **kwargs: None)
        self.name = name or f"local@{socket.gethostname()}:{os.getpid()}"
        if pipe is None:
            self._progress(f"loading the model ({config.model})")
        self.pipe = pipe if pipe is not None else load_model(config)
        self.denoiser = find_denoiser(self.pipe)
        self.device = next(self.denoiser.parameters()).device
        self.runner = PipelineRunner(self.pipe, config)
        self.metrics = build_metrics(config, self.device)   # first: a plug-in that cannot load fails fast
        self.pairs = study_pairs(config)
        size = config.batch_size or len(self.pairs)
        self.batches = [self.pairs[i:i + size] for i in range(0, len(self.pairs), size)]
        self.spec = describe(self.pipe, model_id=EMBEDDED_MODEL_ID if config.is_embedded else config.model)
        self._progress("measuring MACs per component")
        self.cost_table, cfg_mode = self._measure_cost()
        self._calls_per_batch = config.num_inference_steps * (2 if cfg_mode == "sequential" else 1)
        self.store = ReferenceStore(config, self.device.type)
        self._refs_done = 0
        self._ref_batches = self._stack_references(
            self.store.get_or_compute(self.batches, self._compute_reference, self._references_done))
        height, width = self._ref_batches[0][0].shape[-2:]
        self.sampling = SamplingSpec(
            num_inference_steps=config.num_inference_steps, scheduler=type(self.pipe.scheduler).__name__,
            cfg=cfg_mode, guidance_scale=config.guidance_scale, height=int(height), width=int(width))
        self.prompt_set_hash = config.prompt_set_hash()
        # start-up median first; re-timings (see LatencyConfig) push it out of the window
        self._reference_samples: deque[float] = deque([self._reference_latency()],
                                                      maxlen=config.latency.reference_window)
        self.latency_table: LatencyTable | None = self._measure_latency_table() if config.latency.model else None
        self.thumbnail_index = self._thumbnail_index()
        share = config.sharing
        self.prefixes = PrefixCache(int(share.memory_mb * 2**20)) if share.enabled and self.runner.steerable else None
        self._save_points: dict[str, set[int]] = {}
        self.steps_run = 0               # denoising steps this worker ran per (prompt, seed) pair, in all
        self.load_seconds = time.perf_counter() - t0
        self.evaluations = 0

    # ------------------------------------------------------------------ setup
    def _measure_cost(self) -> tuple[Any, str]:
        """Cost table at the study's batch and resolution, and how the pipeline runs CFG (seen, not guessed)."""
        batch = self.batches[0]
        with CfgWatch(self.denoiser) as watch:
            table = measure_cost_table(
                self.pipe, lambda: self.runner([p for p, _ in batch], [s for _, s in batch], COST_STEPS),
                batch_size=len(batch), height=self.config.height, width=self.config.width)
        mode = watch.mode(len(batch), COST_STEPS)
        return table, mode

    def _references_done(self, done: int, total: int) -> None:
        self._refs_done = done
        self._progress("all-compute references (pairs)", done, total)

    def _compute_reference(self, prompts: list[str], seeds: list[int]) -> list[Reference]:
        calls = [0]
        total = len(self.pairs)

        def step(*_: Any) -> None:   # progress inside a batch, one denoiser call at a time
            calls[0] += 1
            done = self._refs_done + len(prompts) * min(1.0, calls[0] / self._calls_per_batch)
            self._progress("all-compute references (pairs)", round(done, 1), total)

        handle = self.denoiser.register_forward_pre_hook(step)
        try:
            out = self.runner(prompts, seeds)
        finally:
            handle.remove()
        bad = _first_non_finite(out, list(zip(prompts, seeds)))
        if bad:
            raise NonFiniteOutput(f"the all-compute reference itself is not finite ({bad}): "
                                  "the model or its dtype cannot produce usable outputs")
        lat = out.latents
        return [Reference(out.images[i].detach().cpu(), lat[i].detach().cpu() if lat is not None else None)
                for i in range(len(prompts))]

    def _stack_references(self, references: list[Reference]) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """References stacked per batch once (CPU), so scoring only moves them to the device."""
        out, offset = [], 0
        for batch in self.batches:
            refs = references[offset:offset + len(batch)]
            latents = None if any(r.latents is None for r in refs) else torch.stack([r.latents for r in refs])
            out.append((torch.stack([r.image for r in refs]), latents))
            offset += len(batch)
        return out

    def _reference_latency(self) -> float:
        """Start-up timing of the all-compute first batch (seconds per image, median after the warm-up)."""
        lat = self.config.latency
        calls = lat.warmup + lat.repeats
        times = []
        for i in range(calls):
            self._progress("timing the all-compute pipeline (calls)", i, calls)
            seconds = self._time_reference_call()
            if i >= lat.warmup:
                times.append(seconds)
        self._progress("timing the all-compute pipeline (calls)", calls, calls)
        return median(times)

    def _time_reference_call(self) -> float:
        prompts, seeds = self._batch_lists(self.batches[0])
        with Timer(self.device, self.clock) as t:
            self.runner(prompts, seeds)
        return t.seconds / len(prompts)

    def _measure_latency_table(self) -> LatencyTable:
        """The latency cost model for this worker (device, dtype, batch, resolution, CFG mode): the
        calibration schedules timed on the first batch, interleaved, and fitted (schedules.latency)."""
        prompts, seeds = self._batch_lists(self.batches[0])
        todo = calibration_schedules(self.spec, self.sampling, forecast=True)
        total = len(todo) * self.config.latency.model_repeats
        done = 0
        phase = "fitting the latency model (timed runs)"

        def time_run(schedule: Schedule) -> float:
            nonlocal done
            self._progress(phase, done, total)
            with apply_schedule(self.pipe, schedule), Timer(self.device, self.clock) as t:
                self.runner(prompts, seeds, schedule.num_steps)
            done += 1
            return t.seconds / len(prompts)

        table = measure_latency_table(time_run, self.spec, self.sampling, self.cost_table,
                                      repeats=self.config.latency.model_repeats, schedules=todo,
                                      device=str(self.device), dtype=str(next(self.denoiser.parameters()).dtype),
                                      batch_size=len(prompts), height=self.sampling.height, width=self.sampling.width)
        self._progress(phase, total, total)
        return table

    @property
    def reference_latency_s(self) -> float:
        """Median of the recent all-compute timings (see LatencyConfig for why it is re-timed)."""
        return median(self._reference_samples)

    def _maybe_retime_reference(self) -> None:
        every = self.config.latency.reference_every
        if every and self.evaluations % every == 0:
            self._reference_samples.append(self._time_reference_call())

    def _thumbnail_index(self) -> list[int]:
        """First seed of each of the first n prompts, as positions in the pair list."""
        return thumbnail_positions(self.config, len(self.pairs))

    @staticmethod
    def _batch_lists(batch: list[tuple[str, int]]) -> tuple[list[str], list[int]]:
        return [p for p, _ in batch], [s for _, s in batch]

    # ------------------------------------------------------------------ queries
    def all_compute_schedule(self) -> Schedule:
        return Schedule.all_compute(self.spec, self.sampling)

    def reference_thumbnails(self) -> list[bytes]:
        size = len(self.batches[0])
        return [self._png(self._ref_batches[i // size][0][i % size]) for i in self.thumbnail_index]

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name, "pid": os.getpid(), "host": socket.gethostname(), "device": str(self.device),
            "load_seconds": self.load_seconds, "reference_latency_s": self.reference_latency_s,
            "reference_hits": self.store.hits, "reference_misses": self.store.misses,
            "evaluations": self.evaluations, "model_spec": self.spec, "sampling_spec": self.sampling,
            "cost_table": self.cost_table.to_dict(), "prompt_set_hash": self.prompt_set_hash,
            "torch_threads": torch.get_num_threads(), "steps_run": self.steps_run,
            "prefix_hits": self.prefixes.hits if self.prefixes else 0,
            "prefix_misses": self.prefixes.misses if self.prefixes else 0,
            "prefix_bytes": self.prefixes.bytes if self.prefixes else 0,
            "latency_table": self.latency_table.to_dict() if self.latency_table else None,
        }

    # ------------------------------------------------------------------ scoring
    def evaluate(self, schedule: Schedule, race: Race | None = None) -> EvaluationResult:
        """Score `schedule` on every (prompt, seed) pair, or, with `race`, until it is clearly
        dominated by the race's opponent (a RACED partial result; see evaluators.racing)."""
        started = time.time()
        common = {"worker": self.name, "started_at": started, "prompt_set_hash": self.prompt_set_hash}
        self.evaluations += 1
        self._maybe_retime_reference()
        try:
            result = self._score(schedule, common, race)
        except (NonFiniteOutput, ScheduleError, MetricError) as exc:
            result = EvaluationResult.failed(schedule, str(exc), **common)
        except Exception as exc:  # a bug or an unforeseen model error must not stop the search
            where = traceback.extract_tb(exc.__traceback__)[-1]
            result = EvaluationResult.failed(
                schedule, f"{type(exc).__name__}: {exc} (at {os.path.basename(where.filename)}:{where.lineno})",
                **common)
        result.finished_at = time.time()
        return result

    def _check(self, schedule: Schedule) -> None:
        # Any step count and explicit timesteps/sigmas are fine (apply_schedule refuses a scheduler that
        # cannot sample them): the references stay the study's all-compute run at its own steps.
        if schedule.sampling.cfg != self.sampling.cfg:
            raise ScheduleError(f"the schedule was made for cfg={schedule.sampling.cfg!r}; this pipeline runs "
                                f"cfg={self.sampling.cfg!r} (build schedules from pool.sampling_spec())",
                                field="sampling.cfg")

    def plan(self, schedules: list[Schedule]) -> list[Schedule]:
        """The order to evaluate a request in (depth-first over its prefix tree) and, per schedule,
        where its run should save snapshots for the ones after it (prefix-shared evaluation)."""
        if self.prefixes is None:
            return schedules
        order, points = branch_points(schedules)
        self._save_points.update(points)
        return order

    def _host_clock(self) -> float:
        """The clock at a point inside a run (on CUDA, after the queued work is done)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return self.clock()

    def _run_batch(self, handle: Any, schedule: Schedule, b: int, prompts: list[str],
                   seeds: list[int]) -> tuple[Any, float]:
        """One batch under the applied schedule: (outputs, seconds of a full run). With sharing, the
        run resumes from the longest snapshot on hand and saves snapshots on its way."""
        if self.prefixes is None:
            with Timer(self.device, self.clock) as t:
                out = self.runner(prompts, seeds, schedule.num_steps)
            self.steps_run += schedule.num_steps * len(prompts)
            return out, t.seconds
        scope = f"{b}:"
        snap = self.prefixes.longest(schedule, scope)
        every = self.config.sharing.save_every
        save_at = set(self._save_points.pop(schedule.hash, ())) | (
            set(range(every, schedule.num_steps, every)) if every else set())
        with TrajectoryControl(self.pipe, handle, self.denoiser, self._host_clock, snap, save_at) as control:
            out = self.runner(prompts, seeds, schedule.num_steps, steer=control)
            seconds = control.latency(self._host_clock())
        for step, saved in control.saved.items():
            self.prefixes.put(scope + prefix_key(schedule, step), saved)
        self.steps_run += (schedule.num_steps - (snap.step if snap else 0)) * len(prompts)
        return out, seconds

    def _score(self, schedule: Schedule, common: dict[str, Any], race: Race | None = None) -> EvaluationResult:
        self._check(schedule)
        for m in self.metrics:
            m.begin()
        per_prompt: dict[str, list[float]] = {m.name: [] for m in self.metrics if m.per_sample}
        times: list[float] = []
        thumbs: dict[int, bytes] = {}
        wanted = set(self.thumbnail_index)
        offset = 0
        # record_history: every component's outputs kept, so any later schedule can resume from this run
        with apply_schedule(self.pipe, schedule, record_history=self.prefixes is not None) as handle:
            steps_before = self.steps_run
            for b, batch in enumerate(self.batches):
                if race is not None and race.metric in per_prompt and race.lost(per_prompt[race.metric]):
                    break       # dominated on the pairs scored so far (see evaluators.racing)
                prompts, seeds = self._batch_lists(batch)
                out, seconds = self._run_batch(handle, schedule, b, prompts, seeds)
                times.append(seconds / len(batch))
                self._update_metrics(out, batch, b, offset, per_prompt)
                for i in range(len(batch)):
                    if offset + i in wanted:
                        thumbs[offset + i] = self._png(out.images[i])
                offset += len(batch)
            prompts, seeds = self._batch_lists(self.batches[0])
            while len(times) < self.config.latency.min_timed_calls:
                with Timer(self.device, self.clock) as t:
                    self.runner(prompts, seeds, schedule.num_steps)
                self.steps_run += schedule.num_steps * len(prompts)    # extra images count as generated
                times.append(t.seconds / len(prompts))
        metrics = {m.name: m.result(per_prompt.get(m.name, [])) for m in self.metrics}
        bad_metrics = [k for k, v in metrics.items() if not torch.isfinite(torch.tensor(v))]
        if bad_metrics:
            raise MetricError(f"metric(s) {bad_metrics} are not finite: {metrics}")
        latency = median(times)
        per_call = self.cost_table.batch_size or len(self.batches[0])
        raced = offset < len(self.pairs)
        return EvaluationResult(
            schedule=schedule, status=RACED if raced else DONE, metrics=metrics, per_prompt=per_prompt,
            pairs_scored=offset, pairs_total=len(self.pairs), image_steps=self.steps_run - steps_before,
            macs=schedule_macs(schedule, self.cost_table) // per_call,
            mac_speedup=mac_speedup(schedule, self.cost_table, self.all_compute_schedule()), latency_s=latency,
            latency_speedup=self.reference_latency_s / latency if latency > 0 else None,
            latency_speedup_model=(self.latency_table.speedup(schedule, self.all_compute_schedule())
                                   if self.latency_table else None),
            thumbnails=[thumbs[i] for i in self.thumbnail_index if i in thumbs], **common)

    # ------------------------------------------------------------------ peers
    def evaluate_baseline(self, method: str, settings: Mapping[str, Any]) -> BaselineResult:
        """Score a peer method (`evaluators.baselines`) like a schedule: same pairs, references and
        metrics; MACs measured by FlopCounterMode on every denoiser call of the scored runs (a dynamic
        method decides per prompt); latency timed on separate, uncounted runs of the first batch."""
        common = {"worker": self.name, "prompt_set_hash": self.prompt_set_hash}
        label = baseline_label(method, settings)
        entry = BASELINES.get(method)
        if entry is not None and "num_inference_steps" in entry.defaults and "num_inference_steps" not in settings:
            settings = {**settings, "num_inference_steps": self.config.num_inference_steps}   # MagCache's plan length
        prompts0, seeds0 = self._batch_lists(self.batches[0])
        try:
            handle = apply_baseline(self.pipe, method, calibrate=lambda: self.runner(prompts0, seeds0),
                                    cfg=self.sampling.cfg, **settings)
        except (BaselineError, NothingHooked) as exc:
            return BaselineResult(method, dict(settings), label, FAILED, error=str(exc), finished_at=time.time(),
                                  **common)
        try:
            return self._score_baseline(handle, method, dict(settings), label, common)
        except Exception as exc:      # a peer that breaks on this model is a result, not a crash
            return BaselineResult(method, dict(settings), label, FAILED, hooked=handle.hooked,
                                  error=f"{type(exc).__name__}: {exc}", finished_at=time.time(), **common)
        finally:
            handle.remove()

    def _score_baseline(self, handle: Any, method: str, settings: dict[str, Any], label: str,
                        common: dict[str, Any]) -> BaselineResult:
        for m in self.metrics:
            m.begin()
        per_prompt: dict[str, list[float]] = {m.name: [] for m in self.metrics if m.per_sample}
        flops, images, offset = 0, 0, 0
        for b, batch in enumerate(self.batches):
            prompts, seeds = self._batch_lists(batch)
            handle.reset()
            with DenoiserFlops(self.denoiser) as counted:
                out = self.runner(prompts, seeds)
            flops += counted.flops
            images += len(batch)
            self._update_metrics(out, batch, b, offset, per_prompt)
            offset += len(batch)
        times = []
        prompts, seeds = self._batch_lists(self.batches[0])
        for _ in range(max(1, self.config.latency.min_timed_calls)):
            handle.reset()
            with Timer(self.device, self.clock) as t:
                self.runner(prompts, seeds)
            times.append(t.seconds / len(prompts))
        if handle.failures:           # it said it ran full compute: not a peer result at its MACs
            raise BaselineError(f"{label} fell back to full compute: {handle.failures[0]}")
        metrics = {m.name: m.result(per_prompt.get(m.name, [])) for m in self.metrics}
        macs = flops // 2 // max(images, 1)
        per_call = self.cost_table.batch_size or len(self.batches[0])
        full = full_macs(self.all_compute_schedule(), self.cost_table) // per_call
        latency = median(times)
        return BaselineResult(method, settings, label, DONE, metrics=metrics, per_prompt=per_prompt, macs=macs,
                              mac_speedup=full / max(macs, 1), latency_s=latency,
                              latency_speedup=self.reference_latency_s / latency if latency > 0 else None,
                              hooked=list(handle.hooked), finished_at=time.time(), **common)

    def _update_metrics(self, out: Outputs, batch: list[tuple[str, int]], b: int, offset: int,
                        per_prompt: dict[str, list[float]]) -> None:
        """Score one batch's outputs against its references (schedules and peers alike); a NaN or inf
        image is an error naming the pair."""
        out.images = out.images.to(self.device)
        bad = _first_non_finite(out, batch)
        if bad:
            raise NonFiniteOutput(f"non-finite output: {bad}")
        prompts, seeds = self._batch_lists(batch)
        ref_images, ref_latents = self._ref_batches[b]
        scored = Batch(prompts, seeds, out.images, out.latents, ref_images.to(self.device),
                       ref_latents.to(self.device) if ref_latents is not None else None, offset)
        for m in self.metrics:
            values = m.update(scored)
            if m.per_sample:
                per_prompt[m.name].extend(float(v) for v in values or [])

    # ------------------------------------------------------------------ profiling
    def profile(self, schedule: Schedule | None = None) -> DriftProfile:
        target = schedule if schedule is not None else self.all_compute_schedule()
        self._check(target)
        chosen = self.pairs[: self.config.profile_pairs]
        prompts, seeds = self._batch_lists(chosen)
        t0 = time.perf_counter()
        # fast_paths=False: the recorder needs every component called at every step (same trajectory,
        # bit for bit; the fast paths skip the calls of fully reused blocks)
        with apply_schedule(self.pipe, target, fast_paths=False):
            recorder = DriftRecorder(self.denoiser, target)
            try:
                self.runner(prompts, seeds, target.num_steps)
            finally:
                recorder.remove()
        drift = recorder.drift()
        values = getattr(self.pipe.scheduler, "timesteps", None)   # the run's timesteps: forecast positions
        positions = [float(v) for v in values.tolist()] if hasattr(values, "tolist") else None
        forecast = recorder.forecast_drift(positions)
        return DriftProfile(drift=drift, forecast=forecast, seconds=time.perf_counter() - t0,
                            schedule_hash=schedule.hash if schedule is not None else None,
                            num_pairs=len(chosen), worker=self.name)

    def timestep_grid(self, steps: int) -> tuple[str, tuple[float, ...]]:
        """(kind, values): a `steps`-point grid in the scheduler's own terms (schedules.timesteps.fine_grid)."""
        return fine_grid(self.pipe.scheduler, steps)

    def timestep_costs(self, grid: Sequence[float]) -> np.ndarray:
        """One-jump costs on `grid` along the all-compute fine trajectory (evaluators.jumps)."""
        prompts, seeds = self._batch_lists(self.pairs[: self.config.profile_pairs])
        return jump_costs(self.pipe, lambda steps: self.runner(prompts, seeds, steps), grid)

    # ------------------------------------------------------------------ helpers
    def _png(self, image: torch.Tensor) -> bytes:
        from PIL import Image
        arr = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        img = Image.fromarray(arr)
        size = self.config.thumbnail_size
        if max(img.size) > size:
            img.thumbnail((size, size))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return buf.getvalue()


def _limit_blas_threads(n: int) -> Any:
    """numpy/scipy's BLAS pools get the same thread budget as torch (kept alive with the worker)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return None
    return threadpool_limits(limits=n, user_api="blas")


def _first_non_finite(out: Outputs, batch: list[tuple[str, int]]) -> str | None:
    """'latents of pair 3 (prompt '...', seed 1)' for the first non-finite pair, else None."""
    for label, tensor in (("latents", out.latents), ("images", out.images)):
        if tensor is None:
            continue
        finite = torch.isfinite(tensor.reshape(tensor.shape[0], -1)).all(1)
        if not bool(finite.all()):
            i = int((~finite).nonzero()[0])
            prompt, seed = batch[i]
            return f"{label} of pair {i} (prompt {prompt[:60]!r}, seed {seed}) contain NaN/inf"
    return None

