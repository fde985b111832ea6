"""Caching must matter on the embedded model: mild reuse barely changes the images, aggressive reuse
clearly lowers fidelity (PSNR vs all-compute) and prompt adherence.  Without this, the search on the
default model would have nothing to find."""

from __future__ import annotations

import pytest
import torch

from evaluators.embedded import load_embedded_pipeline, load_judge, prompt_set
from evaluators.embedded.caching import reference_schedule
from schedules import apply_schedule

STEPS = 20
N_PROMPTS = 8


@pytest.fixture(scope="module")
def pipe():
    return load_embedded_pipeline()


@pytest.fixture(scope="module")
def judge():
    return load_judge()


def _run(pipe, prompts: list[str]) -> torch.Tensor:
    gens = [torch.Generator().manual_seed(100 + i) for i in range(len(prompts))]
    return pipe(prompts, num_inference_steps=STEPS, generator=gens, output_type="pt").images


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a - b).pow(2).flatten(1).mean(1).clamp(min=1e-10)
    return float((10 * torch.log10(1 / mse)).mean())


@pytest.fixture(scope="module")
def measured(pipe, judge):
    prompts = prompt_set("heldout")[-N_PROMPTS:]
    reference = _run(pipe, prompts)
    results = {"all-compute": (float("inf"), float(judge.adherence(reference, prompts).mean()), reference)}
    for name in ("all-compute-scheduled", "mild", "2-of-3", "first-4-only"):
        schedule = reference_schedule(pipe, name.replace("-scheduled", ""), STEPS)
        with apply_schedule(pipe, schedule):
            images = _run(pipe, prompts)
        results[name] = (_psnr(images, reference), float(judge.adherence(images, prompts).mean()), images)
    return results


def test_all_compute_schedule_is_bit_identical(measured):
    assert torch.equal(measured["all-compute-scheduled"][2], measured["all-compute"][2])


def test_mild_reuse_barely_changes_quality(measured):
    psnr, adherence, _ = measured["mild"]
    assert psnr >= 30.0, measured["mild"][:2]
    assert adherence >= measured["all-compute"][1] - 0.05


def test_aggressive_reuse_measurably_lowers_fidelity_and_adherence(measured):
    base_adherence = measured["all-compute"][1]
    psnr = {k: v[0] for k, v in measured.items()}
    adherence = {k: v[1] for k, v in measured.items()}
    # ordering: all-compute > mild > reuse 2 of 3 steps > compute only the first 4 steps
    assert psnr["mild"] > psnr["2-of-3"] + 5 > psnr["first-4-only"] + 5, psnr
    assert psnr["2-of-3"] < 25.0, psnr
    assert adherence["first-4-only"] < base_adherence - 0.15, adherence
    assert adherence["first-4-only"] <= adherence["2-of-3"] <= adherence["mild"] + 1e-6, adherence
