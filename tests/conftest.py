"""Shared fixtures. Ray tests share one session-scoped local cluster (started only when requested)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/tiny_models.py etc.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# One torch/BLAS thread per test process (and its subprocesses): tests check behaviour, not speed, and
# on a busy 2-core machine two threads per process wait on each other (measured ~50x slower with two
# CPU hogs, bench/latency_drift.py), which is what stretched the suite past 20 minutes under load.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


def pytest_configure(config: pytest.Config) -> None:
    import torch
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for the whole test session: ~3 s to start, shared by every Ray test."""
    ray = pytest.importorskip("ray")
    from evaluators import PoolConfig
    from evaluators.ray_pool import local_cluster_options
    if not ray.is_initialized():   # the pools' own options: workers at niceness 0, as in a study
        ray.init(num_cpus=2, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
                 **local_cluster_options(PoolConfig()))
    yield ray
    ray.shutdown()
