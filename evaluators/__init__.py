"""What scores a schedule: model loading, prompt sets, reference runs, metrics, latency, and the
local and Ray evaluator pools (one interface, identical scoring code)."""

from .config import EvaluationConfig, LatencyConfig, MetricSpec, PoolConfig
from .pool import EvaluatorPool, make_pool
from .profiling import DriftProfile

__all__ = ["EvaluationConfig", "LatencyConfig", "MetricSpec", "PoolConfig", "EvaluatorPool", "make_pool",
           "DriftProfile", "load_model", "LocalPool", "RayPool"]


def __getattr__(name: str):  # heavy imports (diffusers pipelines, ray) only when used
    if name == "load_model":
        from .models import load_model
        return load_model
    if name == "LocalPool":
        from .local import LocalPool
        return LocalPool
    if name == "RayPool":
        from .ray_pool import RayPool
        return RayPool
    raise AttributeError(name)
