"""One-jump costs on a fine timestep grid: the matrix the BOSS-style DP chooses K of M timesteps with.

    J[i, j] = mean over pixels and pairs of (x_hat_{i->j} - x_j)^2 / a_j^2      for 0 <= i < j <= M

where x_0..x_{M-1} are the states the all-compute fine trajectory (the M grid values as an explicit
schedule, on the study's first `profile_pairs` calibration pairs) enters its steps with, x_M its final
output, and x_hat_{i->j} one solver step from x_i straight to grid point j (the end of sampling for
j = M) with the model output the fine run computed at x_i. So the whole matrix costs one M-step run;
the jumps are scheduler arithmetic on a copy of the pipeline's scheduler, which is set to the two
values [g_i, g_j] (or [g_i]) with the same extra arguments the pipeline gave it (FLUX's `mu`), so a
jump is always the scheduler's own first step (first order for multistep solvers).

`a_j` is the signal scale of state j (x_j = a_j x0 + noise: sqrt(alpha_bar_t) for variance-preserving
schedulers, 1 - sigma for flow matching, 1 at the end and for variance-exploding samplers), so a jump's
error counts in the units of the clean image it ends up in (an error early in sampling, where a_j is
small, moves the final image by about error / a_j when the noise prediction is held fixed). In a first
check on the embedded model (8 images) the unweighted state error let the DP skip the early steps and
lose to even spacing at most step counts, the weighted one won at most; bench/search_timesteps.py
measures the comparison properly. A schedule's error is modelled as the sum of its jumps' costs; the DP's
choices are then verified by real evaluation. The study's reference is its default-steps run, so a
fine grid of those very steps (`fine_steps` = the study's steps) makes the fine trajectory the
reference trajectory itself. The model output and states are read at `scheduler.step(model_output, t, sample)`,
which every diffusers pipeline calls after its guidance, so CFG and learned-sigma splits are already
applied whatever the pipeline.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any, Callable, Sequence

import numpy as np
import torch

from schedules import SamplingSpec, Schedule, ScheduleError, apply_schedule, describe
from schedules.timesteps import is_flow_matching, native_kind


class JumpRecorder:
    """Records (model_output, timestep, sample, prev_sample) at every `scheduler.step` of one call, and
    the keyword arguments the pipeline set the timesteps with."""

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.steps: list[tuple[torch.Tensor, float, torch.Tensor, torch.Tensor]] = []
        self.set_kwargs: dict[str, Any] = {}
        self._saved: dict[str, Any] = {}

    def __enter__(self) -> "JumpRecorder":
        sched, own_step, own_set = self.scheduler, self.scheduler.step, self.scheduler.set_timesteps

        def step(model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            out = own_step(model_output, timestep, sample, *args, **kwargs)
            prev = out[0] if isinstance(out, tuple) else out.prev_sample
            self.steps.append((model_output.detach().clone(), float(torch.as_tensor(timestep).reshape(-1)[0]),
                               sample.detach().clone(), prev.detach().clone()))
            return out

        def set_timesteps(*args: Any, **kwargs: Any) -> Any:
            self.set_kwargs = {k: v for k, v in kwargs.items()
                               if k not in ("num_inference_steps", "timesteps", "sigmas", "device")}
            return own_set(*args, **kwargs)

        # pipelines inspect these signatures (retrieve_timesteps, prepare_extra_step_kwargs)
        step.__signature__ = inspect.signature(own_step)             # type: ignore[attr-defined]
        set_timesteps.__signature__ = inspect.signature(own_set)     # type: ignore[attr-defined]
        self._saved = {n: vars(sched)[n] for n in ("step", "set_timesteps") if n in vars(sched)}
        sched.step, sched.set_timesteps = step, set_timesteps
        return self

    def __exit__(self, *exc: Any) -> None:
        for name in ("step", "set_timesteps"):
            self.scheduler.__dict__.pop(name, None)
        self.scheduler.__dict__.update(self._saved)


def jump_costs(pipe: Any, run: Callable[[int], Any], grid: Sequence[float]) -> np.ndarray:
    """[M+1, M+1] one-jump costs (inf where j <= i) on `grid`, the pipeline's scheduler kind (timesteps
    or sigmas). `run(num_steps)` makes one pipeline call; it runs once, all compute, on the grid."""
    scheduler = pipe.scheduler
    kind = native_kind(scheduler)
    m = len(grid)
    fine = Schedule.all_compute(describe(pipe), SamplingSpec(m, **{kind: tuple(grid)}))
    with apply_schedule(pipe, fine), JumpRecorder(scheduler) as rec:
        run(m)
    if len(rec.steps) != m:
        raise ScheduleError(f"the fine run made {len(rec.steps)} scheduler steps for {m} grid points "
                            f"({type(scheduler).__name__} evaluates more than once per step?)")
    states = [s[2] for s in rec.steps] + [rec.steps[-1][3]]
    scale = signal_scales(scheduler, [s[1] for s in rec.steps]) + [1.0]
    costs = np.full((m + 1, m + 1), np.inf)
    trial = copy.deepcopy(scheduler)
    own_set = type(trial).set_timesteps.__get__(trial, type(trial))
    for i in range(m):
        output, t_i, x_i, _ = rec.steps[i]
        for j in range(i + 1, m + 1):
            values = [grid[i], grid[j]] if j < m else [grid[i]]
            own_set(**{kind: values}, device=x_i.device, **rec.set_kwargs)
            t0 = trial.timesteps[0]
            if not np.isclose(float(t0), t_i, rtol=1e-5, atol=1e-5):
                raise ScheduleError(f"{type(scheduler).__name__} maps grid point {i} to timestep {float(t0):g} "
                                    f"alone but to {t_i:g} within the grid: its {kind} mapping is not pointwise, "
                                    "so one-jump costs are undefined for it")
            jumped = trial.step(output, t0, x_i, return_dict=False)[0]
            costs[i, j] = float(((jumped.float() - states[j].float()) ** 2).mean()) / scale[j] ** 2
    return costs


def signal_scales(scheduler: Any, timesteps: Sequence[float]) -> list[float]:
    """a_t of x_t = a_t x0 + noise at each timestep the scheduler just sampled (see the module doc)."""
    if is_flow_matching(scheduler):
        sigmas = scheduler.sigmas[:len(timesteps)]
        return [1.0 - float(s) for s in sigmas]
    alphas = getattr(scheduler, "alphas_cumprod", None)
    if alphas is not None and float(getattr(scheduler, "init_noise_sigma", 1.0)) == 1.0:
        return [float(alphas[int(round(t))]) ** 0.5 for t in timesteps]
    return [1.0] * len(timesteps)
