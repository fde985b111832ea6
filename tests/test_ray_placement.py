"""Where the Ray pool puts its actors, decided from the cluster's nodes before any actor exists
(evaluators/placement.py): one actor per GPU, two per GPU at 0.5, custom resources, and a config the
cluster can never satisfy refused in one line. The last tests run the real refusal on the shared
local Ray cluster (which has no GPU), through the pool and through the CLI; the multi-node checks
of the same logic with real nodes are in test_ray_cluster.py (e2e)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from evaluators import EvaluationConfig, PoolConfig
from evaluators.placement import ActorPlan, actor_slots, describe_nodes, plan_actors
from evaluators.pool import PoolStartError

CPU_NODE = {"CPU": 4.0, "memory": 1e9, "node:10.0.0.1": 1.0}
GPU_NODE = {"CPU": 8.0, "GPU": 2.0, "memory": 1e9, "accelerator_type:A100": 1.0}


def plan(nodes, device="auto", **pool) -> ActorPlan:
    return plan_actors(PoolConfig(kind="ray", **pool), device, nodes, "the test cluster")


def test_one_actor_per_gpu_by_default_and_two_per_gpu_at_half():
    one = plan([CPU_NODE, GPU_NODE, GPU_NODE])
    assert (one.num_actors, one.capacity, one.device, one.gpus) == (4, 4, "cuda", 1.0)
    assert one.ray_options() == {"num_cpus": 1.0, "num_gpus": 1.0}
    half = plan([GPU_NODE, GPU_NODE], gpus_per_actor=0.5)
    assert (half.num_actors, half.device) == (8, "cuda")
    assert plan([GPU_NODE], device="cuda", gpus_per_actor=0.5, cpus_per_actor=3).num_actors == 2   # CPU-bound
    assert plan([GPU_NODE], device="cuda", num_actors=1).num_actors == 1


def test_cpu_actors_by_default_one_unless_a_custom_resource_counts_them():
    cpu = plan([CPU_NODE, CPU_NODE])
    assert (cpu.num_actors, cpu.capacity, cpu.device, cpu.gpus) == (1, 8, "cpu", 0.0)
    assert cpu.ray_options() == {"num_cpus": 1.0, "num_gpus": 0.0}
    tagged = [{**CPU_NODE, "evaluator": 2.0}, CPU_NODE, {**CPU_NODE, "evaluator": 1.0}]
    custom = plan(tagged, resources_per_actor={"evaluator": 1})
    assert (custom.num_actors, custom.capacity) == (3, 3)
    assert custom.ray_options() == {"num_cpus": 1.0, "num_gpus": 0.0, "resources": {"evaluator": 1.0}}
    # GPUs in the cluster but the study says cpu, or gpus_per_actor 0: CPU actors
    assert plan([GPU_NODE], device="cpu").device == plan([GPU_NODE], gpus_per_actor=0).device == "cpu"
    # device cpu with a GPU share: placed like GPU actors, computing on the CPU (how tests check placement)
    reserved = plan([GPU_NODE], device="cpu", gpus_per_actor=1)
    assert (reserved.num_actors, reserved.device, reserved.gpus) == (2, "cpu", 1.0)


def test_slots_count_every_reserved_resource_on_one_node():
    assert actor_slots({"CPU": 3, "GPU": 1}, {"CPU": 1, "GPU": 0.5}) == 2
    assert actor_slots({"CPU": 1, "GPU": 4}, {"CPU": 1, "GPU": 0.5}) == 1
    assert actor_slots({"CPU": 2, "GPU": 1}, {"CPU": 1, "GPU": 1 / 3}) == 2       # fractions round like Ray's
    assert actor_slots({"CPU": 0.9999, "GPU": 0.9999}, {"CPU": 0.3333, "GPU": 0.3333}) == 3
    assert actor_slots({"CPU": 8}, {"CPU": 1, "nodeA": 1}) == 0


@pytest.mark.parametrize("nodes, device, pool, needle", [
    ([CPU_NODE, CPU_NODE], "cuda", {}, "evaluation.device: cuda asks for GPU actors, but the test cluster has no GPUs "
                                       "(2 live nodes: {CPU 4}, {CPU 4})"),
    ([CPU_NODE], "auto", {"gpus_per_actor": 0.5}, "pool.gpus_per_actor: 0.5 asks for GPU actors, but the test "
                                                  "cluster has no GPUs"),
    ([GPU_NODE], "cuda", {"gpus_per_actor": 0}, "evaluation.device is 'cuda' but pool.gpus_per_actor is 0"),
    ([GPU_NODE], "cuda", {"gpus_per_actor": 3}, "no node of the test cluster can hold an evaluator actor, which "
                                                "reserves {CPU 1, GPU 3} on one node (1 live node: {CPU 8, GPU 2})"),
    ([CPU_NODE, {"CPU": 0.0, "nodeA": 1.0}], "cpu", {"resources_per_actor": {"nodeA": 1}},
     "reserves {CPU 1, nodeA 1} on one node (2 live nodes: {CPU 4}, {CPU 0, nodeA 1})"),
    ([], "cpu", {}, "no node of the test cluster can hold an evaluator actor, which reserves {CPU 1} on one node "
                    "(no live nodes)"),
])
def test_a_config_the_cluster_cannot_hold_is_one_line(nodes, device, pool, needle):
    with pytest.raises(PoolStartError) as err:
        plan(nodes, device, **pool)
    message = str(err.value)
    assert needle in message, message
    assert "\n" not in message


def test_more_actors_than_the_cluster_holds_is_a_warning_not_a_refusal():
    """An autoscaler may add nodes, so asking for more is allowed; the start-up display says so."""
    from evaluators.ray_pool import RayPool

    class Cluster:
        @staticmethod
        def nodes():
            return [{"Alive": True, "Resources": GPU_NODE}, {"Alive": False, "Resources": GPU_NODE}]
    reports: list[tuple] = []
    pool = RayPool.__new__(RayPool)   # only the planning step, on a described cluster
    pool.config = EvaluationConfig(model="embedded", pool={"kind": "ray", "address": "head:6379", "num_actors": 3})
    pool._ray, pool._report = Cluster(), lambda *args: reports.append(args)
    plan = pool._plan()
    assert (plan.num_actors, plan.capacity, plan.device) == (3, 2, "cuda")   # the dead node does not count
    [(message,)] = reports
    assert message.startswith("warning: pool.num_actors is 3 but the Ray cluster at head:6379 holds 2 actors "
                              "reserving {'num_cpus': 1.0, 'num_gpus': 1.0}"), message


def test_node_descriptions_stay_short():
    nodes = [dict(CPU_NODE, **{f"node:10.0.0.{i}": 1.0}) for i in range(7)]
    assert describe_nodes(nodes) == "7 live nodes: {CPU 4}, {CPU 4}, {CPU 4}, {CPU 4}, and 3 more"


@pytest.mark.parametrize("pool, device, needle", [
    ({"resources_per_actor": {"GPU": 1}}, "auto",
     "'GPU' is not a custom resource: use cpus_per_actor / gpus_per_actor"),
    ({"resources_per_actor": {"evaluator": 0}}, "auto", "pool.resources_per_actor.evaluator"),
    ({}, "cuda:1", "device 'cuda:1' names one GPU, but a Ray actor sees only the GPU Ray gives it"),
])
def test_pool_config_errors(pool, device, needle):
    with pytest.raises(ValidationError) as err:
        EvaluationConfig(model="embedded", device=device, pool={"kind": "ray", **pool})
    assert needle in str(err.value).replace("\n", " "), str(err.value)


# ------------------------------------------------------------------------------------------ a real cluster
@pytest.mark.ray
@pytest.mark.parametrize("device, pool", [("cuda", {}), ("auto", {"gpus_per_actor": 1})])
def test_a_gpu_config_on_a_cluster_without_gpus_is_refused_at_start_up(ray_cluster, tmp_path, device, pool):
    """Before this, such actors pended until pool.startup_timeout_s (an hour by default)."""
    from evaluators.ray_pool import RayPool
    assert ray_cluster.cluster_resources().get("GPU", 0) == 0
    config = EvaluationConfig(model="embedded", device=device, cache_dir=str(tmp_path),
                              pool={"kind": "ray", **pool})
    with pytest.raises(PoolStartError) as err:
        RayPool(config)
    message = str(err.value)
    assert "asks for GPU actors, but the Ray cluster has no GPUs (1 live node: {CPU 2})" in message, message
    assert "\n" not in message and "use device: cpu" in message
    assert ray_cluster.is_initialized()            # a cluster the pool did not start is left running
    assert not list(tmp_path.iterdir())            # no actor ever started (none wrote references)


@pytest.mark.ray
def test_the_cli_refuses_a_gpu_study_on_a_cluster_without_gpus_in_one_line(ray_cluster, tmp_path):
    import yaml
    from typer.testing import CliRunner

    from search.cli import app
    from store import Store
    cfg = tmp_path / "gpu.yaml"
    cfg.write_text(yaml.safe_dump({
        "study": "gpu-study", "searcher": {"name": "random"}, "budget": {"evaluations": 4},
        "evaluation": {"model": "embedded", "device": "cuda", "cache_dir": str(tmp_path / "cache"),
                       "pool": {"kind": "ray"}}}))
    db = tmp_path / "results.db"
    result = CliRunner().invoke(app, ["search", str(cfg), "--db", str(db), "-q"], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("error: evaluation.device: cuda asks for GPU actors, but the Ray cluster has no "
                                "GPUs"), result.output
    assert not [ln for ln in lines if ln.startswith(("Traceback", "  File"))]
    with Store(str(db)) as store:
        assert store.list_studies() == []          # the study it had just created is gone again


def test_joining_an_explicit_address_that_fails_says_how_token_authentication_is_set(monkeypatch, tmp_path):
    """Ray's own failure here is a stream of InvalidAuthToken warnings and then "Failed to connect":
    the one line says what to set."""
    import ray

    from evaluators.ray_pool import RayPool

    def failing_init(**kwargs):
        raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379")
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", failing_init)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    config = EvaluationConfig(model="embedded", cache_dir=str(tmp_path),
                              pool={"kind": "ray", "address": "10.0.0.1:6379", "start_attempts": 1})
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    with pytest.raises(PoolStartError) as err:
        RayPool(config)
    message = str(err.value)
    assert "\n" not in message and "could not start the Ray cluster at '10.0.0.1:6379'" in message
    assert "set RAY_AUTH_MODE=token here" in message and "RAY_AUTH_TOKEN" in message
    monkeypatch.setenv("RAY_AUTH_MODE", "token")                     # already set: no such hint
    with pytest.raises(PoolStartError) as err:
        RayPool(config)
    assert "RAY_AUTH_MODE" not in str(err.value) and "check pool.address" in str(err.value)
