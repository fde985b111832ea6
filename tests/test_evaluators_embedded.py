"""Evaluators on the embedded default model (skipped until its weights ship): quality responds to
caching, and the judge metrics score what they should."""

from __future__ import annotations

import pytest

from evaluators import EvaluationConfig, LocalPool
from evaluators.metrics import PSNR_CAP_DB
from schedules import Schedule

embedded = pytest.importorskip("evaluators.embedded")
from evaluators.embedded.judge import JUDGE_WEIGHTS  # noqa: E402
from evaluators.embedded.model import DENOISER_WEIGHTS  # noqa: E402

pytestmark = pytest.mark.skipif(not DENOISER_WEIGHTS.exists(), reason="embedded denoiser weights not shipped yet")
JUDGE = JUDGE_WEIGHTS.exists()


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    metrics = ["latent_mse", "psnr", "ssim"] + (["judge_adherence", "judge_fd"] if JUDGE else [])
    cfg = EvaluationConfig(num_prompts=4, seeds=[0, 1], metrics=metrics, num_inference_steps=10,
                           cache_dir=str(tmp_path_factory.mktemp("cache")), latency={"warmup": 0, "repeats": 1})
    with LocalPool(cfg) as p:
        yield p


def fora(pool, every: int) -> Schedule:
    spec, sampling = pool.model_spec(), pool.sampling_spec()
    n = spec.group("transformer_blocks").num_blocks
    rows = [[s % every == 0] * n for s in range(sampling.num_inference_steps)]
    return Schedule.from_masks(spec, sampling, {("transformer_blocks", c): rows for c in ("attn1", "attn2", "ff")})


def test_embedded_quality_responds_to_caching(pool):
    assert pool.model_spec().model_id == "cachesearch/embedded" and pool.sampling_spec().cfg == "batched"
    base, mild, harsh = pool.all_compute_schedule(), fora(pool, 2), fora(pool, 5)
    results = {r.schedule.hash: r for r in pool.evaluate([base, mild, harsh])}
    ref, m, h = results[base.hash], results[mild.hash], results[harsh.hash]
    assert ref.ok and m.ok and h.ok, (ref.error, m.error, h.error)
    assert ref.metrics["psnr"] == PSNR_CAP_DB
    assert PSNR_CAP_DB > m.metrics["psnr"] > h.metrics["psnr"]
    assert 1.0 < m.mac_speedup < h.mac_speedup
    if JUDGE:
        assert 0.0 <= ref.metrics["judge_adherence"] <= 1.0
        assert ref.metrics["judge_fd"] == pytest.approx(0.0, abs=1e-3)   # against the reference itself
        assert h.metrics["judge_fd"] > ref.metrics["judge_fd"]
        assert "judge_fd" not in ref.per_prompt and len(ref.per_prompt["judge_adherence"]) == 8
