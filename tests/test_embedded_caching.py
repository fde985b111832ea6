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
    assert psnr >= 28.0, measured["mild"][:2]  # 31.1 dB on these 8 images, 36.8 dB over 32 (bench/results/embedded_quality.txt)
    assert adherence >= measured["all-compute"][1] - 0.1


def test_aggressive_reuse_measurably_lowers_fidelity_and_adherence(measured):
    base_adherence = measured["all-compute"][1]
    psnr = {k: v[0] for k, v in measured.items()}
    adherence = {k: v[1] for k, v in measured.items()}
    # fidelity ordering: mild (1.5x MACs) > reuse 2 of 3 steps (2.7x) > compute only the first 4 steps (4.5x)
    assert psnr["mild"] > psnr["2-of-3"] + 3 > psnr["first-4-only"] + 8, psnr
    # adherence: the mild and 2-of-3 plans keep it, computing only the first steps loses it
    assert adherence["first-4-only"] < base_adherence - 0.15, adherence
    assert adherence["first-4-only"] < min(adherence["mild"], adherence["2-of-3"]) - 0.1, adherence
