"""Shared fixtures. Ray tests share one local cluster (started only when requested; see RayConnection)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/tiny_models.py etc.
from ray_nodes import auth_env  # noqa: E402
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# One torch/BLAS thread per test process (and its subprocesses): tests check behaviour, not speed, and
# on a busy 2-core machine two threads per process wait on each other (measured ~50x slower with two
# CPU hogs, bench/latency_drift.py), which is what stretched the suite past 20 minutes under load.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
auth_env()   # one Ray token for the session, set before anything imports Ray (see RayConnection)


def pytest_configure(config: pytest.Config) -> None:
    import torch
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


class RayConnection:
    """This test process's one Ray connection (Ray allows one per process): the shared local cluster
    most Ray tests use (~3 s to start), or a multi-node cluster a test module started itself
    (tests/ray_nodes.py, test_ray_cluster.py). Switching shuts the current connection down: a module
    that connects elsewhere must run when no module-scoped fixture still holds actors on the local
    cluster, which pytest guarantees by finishing a module's fixtures before the next module starts;
    the next `local()` then starts a fresh local cluster.

    Token authentication is the same everywhere: `ray_nodes.auth_env()` puts one token for the
    session in RAY_AUTH_TOKEN (and RAY_AUTH_MODE=token) when this file is imported, before Ray is, so
    the local cluster and the multi-node ones (whose nodes get the same environment) accept this
    process, and nothing is written to ~/.ray."""

    def __init__(self) -> None:
        self.address: str | None = None   # "local", a cluster address, or None (not connected)

    def local(self):
        import ray
        from evaluators import PoolConfig
        from evaluators.ray_pool import local_cluster_options
        if self.address != "local" or not ray.is_initialized():
            self.disconnect()
            # the pools' own options: workers at niceness 0, as in a study
            ray.init(num_cpus=2, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
                     **local_cluster_options(PoolConfig()))
            self.address = "local"
        return ray

    def connect(self, address: str):
        import ray
        if self.address != address or not ray.is_initialized():
            self.disconnect()
            ray.init(address=address, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
            self.address = address
        return ray

    def disconnect(self) -> None:
        import ray
        if ray.is_initialized():
            ray.shutdown()
        self.address = None


@pytest.fixture(scope="session")
def ray_connection():
    pytest.importorskip("ray")
    connection = RayConnection()
    yield connection
    connection.disconnect()


@pytest.fixture(scope="module")
def ray_cluster(ray_connection):
    """The shared local Ray cluster (started on first use, and again after a module used another)."""
    return ray_connection.local()
