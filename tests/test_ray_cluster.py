"""One study across a real multi-node Ray cluster on this machine (tests/ray_nodes.py): a head started
with `ray start --head` and worker nodes joining it with `ray start --address=...`, each declaring
its own resources, so where each actor lands is observable. Checked: actors go to the nodes the
config asks for; a study there gives exactly the in-process pool's results; GPU placement (one actor
per GPU, two per GPU at 0.5) on nodes that declare GPUs to Ray's scheduler (`--num-gpus=1`: there is
no GPU here, and placement is all Ray's GPU bookkeeping does); and killing a whole worker node (its
raylet, by PID) mid-study loses nothing.

Marked e2e (a few minutes: every node is a real `ray start`, every actor loads the model), so
`.ci/run` runs it in its second step. This process is the driver: the module's cluster fixture
connects it to the head through `ray_connection` (conftest.RayConnection), which first shuts down
the shared local cluster if an earlier module started it; a later module's `ray_cluster` starts a
fresh one. The node-kill test is last in the file because it kills a node (it adds a spare first).
"""

from __future__ import annotations

import collections
import threading
import time
from pathlib import Path

import pytest
from ray_nodes import LocalCluster
from tiny_pipelines import TINY_PIXART_KWARGS, save_tiny_pixart

from evaluators import LocalPool, make_pool
from evaluators.pool import PoolStartError
from search.config import validate_config
from search.study import run_study
from store import Store

pytestmark = pytest.mark.e2e

STEPS = 6
BUDGET = 8


@pytest.fixture(scope="module")
def cluster(ray_connection):
    """The head (no CPUs: only drivers connect there) and nodes a and b, each with 2 CPUs, one GPU as
    far as Ray's scheduler knows, one `evaluator` unit and a resource naming the node."""
    with LocalCluster() as c:
        for name in ("a", "b"):
            c.add_node(name, num_cpus=2, num_gpus=1, resources={"evaluator": 1, f"node_{name}": 1})
        ray_connection.connect(c.address)
        try:
            yield c
        finally:
            ray_connection.disconnect()


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory) -> Path:
    return save_tiny_pixart(tmp_path_factory.mktemp("models") / "tiny-pixart")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """One reference cache for every pool here: the nodes share this machine's disk, as a cluster
    would share a network folder (otherwise each node computes the references once)."""
    return tmp_path_factory.mktemp("cache")


def study(tiny_path: Path, cache_dir: Path, **pool):
    """The module's study. `device: cpu` throughout: the nodes declare GPUs that do not exist, and
    `auto` would (rightly) put the model on them; GPU shares are still reserved when asked for."""
    evaluation = dict(model=str(tiny_path), device="cpu", num_prompts=2, seeds=[0, 1], num_inference_steps=STEPS,
                      batch_size=4,
                      pipeline_kwargs=TINY_PIXART_KWARGS, cache_dir=str(cache_dir), n_thumbnails=1,
                      latency={"warmup": 0, "repeats": 1}, num_threads=1, pool=pool or {"kind": "local"})
    return validate_config({
        "study": "cluster", "evaluation": evaluation, "searcher": {"name": "random", "seed": 3},
        "objectives": [{"name": "psnr", "reference": 5.0}, {"name": "mac_speedup", "reference": 1.0}],
        "budget": {"evaluations": BUDGET}, "batch_size": 2})


def stored(db: Path) -> dict:
    with Store(f"sqlite:///{db}") as store:
        return {r.schedule.hash: r for r in store.results("cluster")}


@pytest.fixture(scope="module")
def in_process(tiny_path, cache_dir, tmp_path_factory) -> dict:
    """The study run by the in-process pool (its references land in the shared cache)."""
    cfg = study(tiny_path, cache_dir)
    db = tmp_path_factory.mktemp("local") / "local.db"
    with LocalPool(cfg.evaluation) as pool:
        _, outcome = run_study(cfg, db=str(db), pool=pool, show_progress=False, log=lambda m: None)
    assert outcome.evaluations == BUDGET
    return stored(db)


def assert_same_results(there: dict, here: dict) -> None:
    assert set(there) == set(here) and len(here) == BUDGET
    for h, a in here.items():
        b = there[h]
        assert a.ok and b.ok, (a.error, b.error)
        assert b.worker.startswith("ray-") and a.worker.startswith("local@")
        assert (b.metrics, b.per_prompt, b.macs, b.mac_speedup, b.prompt_set_hash) == \
            (a.metrics, a.per_prompt, a.macs, a.mac_speedup, a.prompt_set_hash)   # one torch thread each: exact


def placement(cluster: LocalCluster, pool) -> list[str]:
    return sorted(cluster.node_of(i["node_id"]) or "?" for i in pool.worker_info())


def test_a_study_on_two_nodes_places_an_actor_on_each_and_matches_the_in_process_pool(
        cluster, tiny_path, cache_dir, in_process, tmp_path):
    cfg = study(tiny_path, cache_dir, kind="ray", address=cluster.address, resources_per_actor={"evaluator": 1})
    with make_pool(cfg.evaluation) as pool:
        assert pool.num_workers == 2                      # default: one actor per `evaluator` unit
        assert placement(cluster, pool) == ["a", "b"]     # never the head, which offers no `evaluator`
        assert [i["niceness"] for i in pool.worker_info()] == [0, 0]   # RAY_worker_niceness=0 at ray start
        _, outcome = run_study(cfg, db=str(tmp_path / "ray.db"), pool=pool, show_progress=False, log=lambda m: None)
    assert outcome.evaluations == BUDGET
    there = stored(tmp_path / "ray.db")
    assert_same_results(there, in_process)
    assert len({r.worker for r in there.values()}) == 2  # both actors worked


@pytest.mark.parametrize("pool, expect", [
    ({"gpus_per_actor": 1}, {"a": 1, "b": 1}),                                     # one actor per GPU
    ({"gpus_per_actor": 0.5}, {"a": 2, "b": 2}),                                   # two actors per GPU
    ({"gpus_per_actor": 0.5, "resources_per_actor": {"node_b": 0.5}}, {"b": 2}),   # only the node asked for
])
def test_gpu_actors_one_per_gpu_or_two_sharing_one(cluster, tiny_path, cache_dir, in_process, pool, expect):
    cfg = study(tiny_path, cache_dir, kind="ray", address=cluster.address, **pool)
    with make_pool(cfg.evaluation) as p:
        infos = p.worker_info()
        assert collections.Counter(cluster.node_of(i["node_id"]) for i in infos) == expect
        # each node has one GPU, id 0 on it; Ray shows an actor only its own (CUDA_VISIBLE_DEVICES),
        # which is the device `cuda` means inside the actor
        assert all(i["gpu_ids"] == ["0"] and i["cuda_visible_devices"] == "0" for i in infos), infos
        share = collections.Counter(i["node_id"] for i in infos)
        assert set(share.values()) == {1 if pool["gpus_per_actor"] == 1 else 2}
        assert {i["device"] for i in infos} == {"cpu"}
        schedule = next(iter(in_process.values())).schedule
        [result] = p.evaluate([schedule])
        assert result.ok and result.metrics == in_process[schedule.hash].metrics


def test_an_actor_no_single_node_can_hold_is_refused_in_one_line(cluster, tiny_path, cache_dir):
    """The cluster has 2 GPUs, but on two nodes: an actor never spans nodes."""
    cfg = study(tiny_path, cache_dir, kind="ray", address=cluster.address, gpus_per_actor=2)
    with pytest.raises(PoolStartError) as err:
        make_pool(cfg.evaluation)
    message = str(err.value)
    assert "\n" not in message
    assert (f"no node of the Ray cluster at {cluster.address} can hold an evaluator actor, which reserves "
            "{CPU 1, GPU 2} on one node (3 live nodes: ") in message, message


def test_killing_a_worker_node_mid_study_loses_nothing(cluster, tiny_path, cache_dir, in_process, tmp_path):
    """Two actors on three evaluator nodes (c is a spare). Once a few evaluations were dispatched,
    the node running one that has just started is killed (raylet by PID, and its workers with it):
    the evaluation is resubmitted to the other actor, Ray restarts the lost actor on a node with a
    free `evaluator`, and the study ends with every result, once each, identical to the in-process
    pool's. Each evaluation here times 12 pipeline calls (latency only: quality is computed from the
    first), so the one killed is seconds from its end."""
    cluster.add_node("c", num_cpus=2, resources={"evaluator": 1})
    cfg = study(tiny_path, cache_dir, kind="ray", address=cluster.address, num_actors=2,
                resources_per_actor={"evaluator": 1})
    cfg.evaluation.latency.min_timed_calls = 12
    db = tmp_path / "killed.db"
    killed: dict = {}
    with make_pool(cfg.evaluation) as pool:
        infos = pool.worker_info()
        node_of_actor = [cluster.node_of(i["node_id"]) for i in infos]

        def kill_a_busy_node() -> None:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and not killed:
                running = [t for t in pool.in_flight() if t["seconds"] < 0.5] if pool.stats["submitted"] >= 3 else []
                if running:
                    task = running[0]
                    name = node_of_actor[task["actor"]]
                    killed.update(node=name, schedule=task["schedule_hash"], pid=infos[task["actor"]]["pid"],
                                  raylet=cluster.nodes[name].kill())
                    killed["at"] = time.time()
                    return
                time.sleep(0.005)

        killer = threading.Thread(target=kill_a_busy_node, daemon=True)
        killer.start()
        _, outcome = run_study(cfg, db=str(db), pool=pool, show_progress=False, log=lambda m: None)
        killer.join(timeout=60)
        stats = dict(pool.stats)
    assert killed, "no evaluation was in flight to kill"
    assert outcome.evaluations == BUDGET and outcome.reason != "interrupted"
    there = stored(db)
    assert_same_results(there, in_process)               # nothing lost, nothing twice, the same figures
    assert stats["actor_deaths"] >= 1 and stats["retries"] >= 1
    chosen = there[killed["schedule"]]
    if f":{killed['pid']}" in chosen.worker:
        # on a loaded machine the chosen evaluation can finish in the instant the kill takes: then its
        # result must predate the kill, and the actor's next task is the one rescored (retries above)
        assert chosen.finished_at is not None and chosen.finished_at <= killed["at"], \
            "a result from the killed actor finished after its node was killed"
    deadline = time.monotonic() + 60
    while cluster.nodes[killed["node"]].alive and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not cluster.nodes[killed["node"]].alive        # the whole node went down, not one worker
