"""Search-cost levers end to end: racing stores partial results as such and keeps them out of every
front; images generated are accounted per evaluation and over a study."""

from __future__ import annotations

import pytest

from schedules import DONE, RACED, EvaluationResult, Schedule
from search.config import validate_config
from search.study import make_pool, run_study
from store import Store

EVALUATION = {"model": "embedded", "num_prompts": 4, "seeds": [0], "num_inference_steps": 8, "batch_size": 1,
              "n_thumbnails": 0, "metrics": ["psnr"], "latency": {"warmup": 0, "repeats": 1, "reference_every": 0}}


def test_a_raced_result_is_stored_shown_and_kept_out_of_fronts(tmp_path):
    from tiny_models import tiny_pixart
    from schedules import SamplingSpec, describe
    spec = describe(tiny_pixart()[0])
    url = f"sqlite:///{tmp_path / 's.db'}"
    with Store(url) as store:
        store.create_study("s", {"evaluation": {"num_inference_steps": 20}}, "sig", "test", {},
                           ["psnr", "mac_speedup"], {"psnr": 0.0})
        fast = Schedule.periodic(spec, SamplingSpec(4), 3)
        slow = Schedule.periodic(spec, SamplingSpec(4), 2)
        store.record_evaluation("s", EvaluationResult(slow, DONE, {"psnr": 30.0}, {"psnr": [30.0] * 4},
                                                      mac_speedup=1.5, pairs_scored=4, pairs_total=4, image_steps=16))
        store.record_evaluation("s", EvaluationResult(fast, RACED, {"psnr": 99.0}, {"psnr": [99.0]},
                                                      mac_speedup=2.5, pairs_scored=1, pairs_total=4, image_steps=4))
        shown = {r.schedule_hash: r for r in store.evaluations("s")}
        assert shown[fast.hash].status == RACED and shown[fast.hash].pairs_scored == 1
        assert [r.schedule_hash for r in store.front("s")] == [slow.hash], "a partial result is never a front point"
        assert [r.schedule_hash for r in store.evaluations("s", status=RACED)] == [fast.hash]
        assert {r.schedule.hash: r.status for r in store.results("s")} == {slow.hash: DONE, fast.hash: RACED}
        history = store.hypervolume_history("s")
        assert [p.images for p in history] == [16 / 20, (16 + 4) / 20]


@pytest.mark.e2e   # a whole racing study on the embedded model (~16 s): the e2e step
def test_a_racing_study_on_the_embedded_model(tmp_path):
    """Candidates dominated on their first pairs stop early (raced), the rest are full; the study's
    image count is what was generated; resume re-tells raced results without re-running them."""
    cfg = validate_config({"study": "race", "evaluation": {**EVALUATION, "cache_dir": str(tmp_path / "cache")},
                           "objectives": [{"name": "psnr", "reference": 10.0}, {"name": "mac_speedup", "reference": 1.0}],
                           "searcher": {"name": "heuristics", "seed": 0}, "budget": {"evaluations": 30},
                           "racing": {"enabled": True, "z": 1.0}})
    pool = make_pool(cfg)
    try:
        _, out = run_study(cfg, db=str(tmp_path / "r.db"), pool=pool, show_progress=False, log=lambda m: None)
    finally:
        pool.close()
    with Store(f"sqlite:///{tmp_path / 'r.db'}") as store:
        rows = store.evaluations("race")
    raced = [r for r in rows if r.status == RACED]
    full = [r for r in rows if r.status == DONE]
    assert raced and full, (len(raced), len(full))
    assert all(r.pairs_scored < r.pairs_total == 4 for r in raced)
    assert all(0 < r.image_steps <= r.pairs_scored * 8 for r in raced), "prefix sharing may save steps too"
    assert out.images == sum(r.image_steps for r in rows) / 8
    assert out.images < len(rows) * 4, "racing generated fewer images than scoring everything"
