"""Save a sampling run's state at any step, and resume another run from it: prefix-shared evaluation.

Two schedules whose plans agree on steps 0..k-1 (and that sample the same timesteps) reach step k in
the same state: the latents, the scheduler's internal state (multistep solvers keep past model
outputs), and every hook's cached and forecast outputs. A `Snapshot` holds that state at the start of
step k; a run that resumes from it skips the first k steps' work.

How a pipeline call is steered, with no copy of its loop (it works for any pipeline whose loop calls
`callback_on_step_end(pipe, i, t, {"latents": ...})` after each step, as most of diffusers' do and
the embedded pipeline does, or the older `callback(i, t, latents)` every step, as PixArt's does —
then the latents are restored in place):
- saving: the step-end callback after step k-1 records the latents, a copy of the scheduler's
  attributes (lists copied one level: solvers append to and shift them, never write into a tensor)
  and `ScheduleHandle.state()`;
- resuming: while steps 0..k-1 run, a hook on the denoiser returns zeros shaped like its output
  without calling it (the scheduler still steps on them: the pipeline's loop and any noise drawn from
  the generators advance exactly as in the original run); the step-end callback after step k-1 then
  puts back the snapshot's latents, scheduler state and hook states, and removes the denoiser hook.
So every step from k on sees exactly what it saw in the original run: resumed results are bit-for-bit
those of a run from scratch (a test checks it).

`elapsed` is the wall time from the call's start to the snapshot: a resumed run's latency is that
plus its own time from the restore on, an honest full-run figure without timing the prefix again.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch
from diffusers.hooks import HookRegistry, ModelHook

from schedules import Schedule

SKIP_HOOK = "cachesearch_resume_skip"


@dataclass
class Snapshot:
    step: int                       # the state at the start of this step (after `step` steps ran)
    latents: torch.Tensor
    scheduler: dict[str, Any]
    runtime: Any                    # ScheduleHandle.state()
    output: Any                     # zeros shaped like one denoiser output (for the skipped steps)
    denoiser_calls: int             # denoiser calls made before the snapshot (2 per step with sequential CFG)
    elapsed: float                  # seconds from the call's start to the snapshot
    nbytes: int


def prefix_key(schedule: Schedule, step: int) -> str:
    """Identifies the state at the start of `step`: the model, the sampling (timesteps included) and
    every plan row before `step` (later rows cannot influence it)."""
    doc = schedule.canonical_dict()
    rows = {g: {c: list(r[:step]) for c, r in comps.items()} for g, comps in doc["plan"].items()}
    text = repr((doc["model"], doc["sampling"], rows, step))
    return hashlib.sha256(text.encode()).hexdigest()


def _scheduler_state(scheduler: Any) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, list) else v) for k, v in vars(scheduler).items()}


def _zeros_like(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return torch.zeros_like(value)
    if isinstance(value, tuple):
        return tuple(_zeros_like(v) for v in value)
    if isinstance(value, list):
        return [_zeros_like(v) for v in value]
    if hasattr(value, "to_tuple"):                      # a diffusers BaseOutput (return_dict=True)
        return type(value)(*[_zeros_like(v) for v in value.to_tuple()])
    return value


def _nbytes(value: Any, seen: set[int] | None = None) -> int:
    """Bytes of the distinct tensors reachable from `value` (shared tensors counted once)."""
    seen = set() if seen is None else seen
    if isinstance(value, torch.Tensor):
        key = value.untyped_storage().data_ptr()
        if key in seen:
            return 0
        seen.add(key)
        return value.untyped_storage().nbytes()
    if isinstance(value, dict):
        return sum(_nbytes(v, seen) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v, seen) for v in value)
    if hasattr(value, "__dict__") and not isinstance(value, type):
        return _nbytes(vars(value), seen)
    return 0


class _SkipHook(ModelHook):
    """Returns `output` for the first `remaining` denoiser calls without running the denoiser."""

    def __init__(self, output: Any, remaining: int) -> None:
        super().__init__()
        self.output = output
        self.remaining = remaining

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        if self.remaining > 0:
            self.remaining -= 1
            return self.output
        return self.fn_ref.original_forward(*args, **kwargs)


class TrajectoryControl:
    """Saves and restores one pipeline call's state: pass `callback` as the pipeline's
    `callback_on_step_end` (see `PipelineRunner`) while a schedule is applied through `handle`."""

    def __init__(self, pipe: Any, handle: Any, denoiser: torch.nn.Module, clock: Callable[[], float],
                 resume: Snapshot | None = None, save_at: Iterable[int] = ()) -> None:
        self.pipe, self.handle, self.denoiser, self.clock = pipe, handle, denoiser, clock
        self.resume = resume
        self.save_at = set(save_at)
        self.saved: dict[int, Snapshot] = {}
        self.restored_at: float | None = None
        self.calls = 0
        self._output: Any = None
        self._t0 = 0.0
        self._hooks: list[Any] = []

    def __enter__(self) -> "TrajectoryControl":
        self._t0 = self.clock()
        self._hooks.append(self.denoiser.register_forward_hook(self._count))
        if self.resume is not None and self.resume.step > 0:
            registry = HookRegistry.check_if_exists_or_initialize(self.denoiser)
            registry.register_hook(_SkipHook(self.resume.output, self.resume.denoiser_calls), SKIP_HOOK)
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        self._remove_skip()

    def _count(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        self.calls += 1           # skipped calls too: the count is the original run's
        if self._output is None:
            self._output = output

    def _remove_skip(self) -> None:
        registry = HookRegistry.check_if_exists_or_initialize(self.denoiser)
        if registry.get_hook(SKIP_HOOK) is not None:
            registry.remove_hook(SKIP_HOOK, recurse=False)

    def legacy_callback(self, i: int, t: Any, latents: torch.Tensor) -> None:
        """For pipelines with the older `callback(step, timestep, latents)` (called every step when
        `callback_steps=1` and the scheduler's order is 1): the latents are restored in place."""
        if self.resume is not None and i + 1 == self.resume.step:
            latents.copy_(self.resume.latents)
            self.callback(self.pipe, i, t, {"latents": latents})
        else:
            self.callback(self.pipe, i, t, {"latents": latents.clone()})

    def callback(self, pipe: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        done = i + 1
        if self.resume is not None and done == self.resume.step:
            kwargs["latents"] = self.resume.latents
            vars(pipe.scheduler).update(_scheduler_state_from(self.resume.scheduler))
            self.handle.load_state(self.resume.runtime)
            self._remove_skip()
            self.restored_at = self.clock()
        elif done in self.save_at and (self.resume is None or done > self.resume.step):
            elapsed = self.clock() - self._t0
            if self.resume is not None and self.restored_at is not None:
                elapsed = self.resume.elapsed + (self.clock() - self.restored_at)
            state = self.handle.state()
            snap = Snapshot(done, kwargs["latents"], _scheduler_state(pipe.scheduler), state,
                            _zeros_like(self._output), self.calls,
                            elapsed, 0)
            snap.nbytes = _nbytes([snap.latents, state["modules"]]) + _nbytes(snap.scheduler)
            self.saved[done] = snap
        return kwargs

    def latency(self, end: float) -> float:
        """Seconds of the whole run: the snapshot's prefix time plus the time since the restore."""
        if self.resume is None or self.restored_at is None:
            return end - self._t0
        return self.resume.elapsed + (end - self.restored_at)


def _scheduler_state_from(saved: dict[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, list) else v) for k, v in saved.items()}


class PrefixCache:
    """Snapshots by prefix key, least recently used dropped first beyond `max_bytes`."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.items: OrderedDict[str, Snapshot] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = 0

    def put(self, key: str, snap: Snapshot) -> None:
        if key in self.items or snap.nbytes > self.max_bytes:
            return
        self.items[key] = snap
        self.bytes += snap.nbytes
        while self.bytes > self.max_bytes:
            _, old = self.items.popitem(last=False)
            self.bytes -= old.nbytes

    def longest(self, schedule: Schedule, scope: str) -> Snapshot | None:
        """The snapshot of the longest prefix of `schedule` (within `scope`, e.g. a batch) on hand."""
        for step in range(schedule.num_steps - 1, 0, -1):
            key = scope + prefix_key(schedule, step)
            snap = self.items.get(key)
            if snap is not None:
                self.items.move_to_end(key)
                self.hits += 1
                return snap
        self.misses += 1
        return None


def branch_points(schedules: Sequence[Schedule]) -> tuple[list[Schedule], dict[str, set[int]]]:
    """The schedules in prefix-tree (depth-first) order, and for each (by hash) the steps at which a
    later schedule in that order leaves its path: where its run should save a snapshot."""
    def key(s: Schedule) -> tuple:
        return (repr(s.canonical_dict()["sampling"]),
                tuple(tuple(s.rows(g, c)[step] for g, c in s.components()) for step in range(s.num_steps)))
    order = sorted(schedules, key=key)
    points: dict[str, set[int]] = {s.hash: set() for s in order}
    for i, later in enumerate(order):
        best, best_k = None, 0
        for earlier in order[:i]:
            k = common_prefix(earlier, later)
            if k > best_k:
                best, best_k = earlier, k
        if best is not None and best_k > 0:
            points[best.hash].add(best_k)
    return order, points


def common_prefix(a: Schedule, b: Schedule) -> int:
    """How many leading steps two schedules share (0 unless model and sampling agree)."""
    if a.canonical_dict()["sampling"] != b.canonical_dict()["sampling"] or a.model != b.model:
        return 0
    n = 0
    for step in range(min(a.num_steps, b.num_steps)):
        if any(a.rows(g, c)[step] != b.rows(g, c)[step] for g, c in a.components()):
            break
        n += 1
    return n
