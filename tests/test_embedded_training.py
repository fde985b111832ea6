"""The training script is what makes the shipped weights reproducible: same seed, same machine and
thread count -> the same weights, bit for bit.  Checked on a few steps of a small caption bank, written
to a temporary folder so the shipped weights are never touched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from evaluators.embedded import train


def _run(tmp: Path, monkeypatch: pytest.MonkeyPatch, seed: int) -> tuple[dict[str, torch.Tensor], dict]:
    tmp.mkdir()
    monkeypatch.setattr(train, "WEIGHTS_DIR", tmp)
    monkeypatch.setattr(train, "DENOISER_WEIGHTS", tmp / "denoiser.safetensors")
    monkeypatch.setattr(train, "DENOISER_CONFIG", tmp / "denoiser_config.json")
    record = train.train_denoiser(steps=3, batch_size=4, seed=seed, lr=1e-3, time_budget_s=None, bank_size=16,
                                  log_path=tmp / "train.log")
    return load_file(str(tmp / "denoiser.safetensors")), record


def test_denoiser_training_is_deterministic(tmp_path, monkeypatch):
    a, rec_a = _run(tmp_path / "a", monkeypatch, seed=0)
    b, _ = _run(tmp_path / "b", monkeypatch, seed=0)
    c, _ = _run(tmp_path / "c", monkeypatch, seed=1)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)  # the seed matters
    assert rec_a["steps_done"] == 3 and not rec_a["stopped_early"] and rec_a["min_snr"] is None
    config = json.loads((tmp_path / "a" / "denoiser_config.json").read_text())
    shipped = json.loads((Path(train.PACKAGE_DIR) / "weights" / "denoiser_config.json").read_text())
    assert config["text_layers"] == shipped["text_layers"] == [0, -1]
    assert config["transformer"] == shipped["transformer"]
