"""A real multi-node Ray cluster on this one machine, started with the `ray` CLI exactly as on several
machines: `ray start --head`, then `ray start --address=HEAD` per extra node, each with its own
`--num-cpus`, `--num-gpus` and `--resources`, so where an actor lands is observable (and Ray's GPU
bookkeeping can be checked on a machine without a GPU: a node started with `--num-gpus=1` has one
GPU as far as Ray's scheduler is concerned, which is all placement needs).

    with LocalCluster() as cluster:                       # the head: no CPUs, so nothing runs on it
        a = cluster.add_node("a", num_cpus=2, resources={"evaluator": 1})
        ray.init(address=cluster.address)                 # a driver: auth_env() gave it the token
        ...
        a.kill()                                          # a whole worker node dies (raylet by PID)

Used by the multi-node tests and by bench/cluster_dispatch.py. What one machine needs (and why):
- Each node is `ray start --block` in its own process group: stopping the cluster ends exactly the
  processes it started, never `ray stop`, which ends every Ray process on the machine (the tests'
  shared local cluster, other users' clusters).
- Nodes start one after another: two raylets starting at once in one session folder race for the
  same socket names and one dies with "Address already in use".
- The head gets its own short temp folder (Unix socket paths are limited to 107 bytes) and free
  ports for the GCS, the Ray client server and each node's dashboard agent and metrics, so it never
  collides with another cluster here.
- Token authentication: `ray start --head` enables it when a token exists (Ray 2.60 here), and a
  driver or node given an explicit address only sends the token with RAY_AUTH_MODE=token. The
  cluster uses the token in RAY_AUTH_TOKEN, creating one in this process's environment when there is
  none (`auth_env()`, which must run before this process imports Ray), and gives it to every node,
  so this process is a driver that can connect.
- Workers run at niceness 0 (RAY_worker_niceness=0): Ray's default of 15 starves them on a busy
  machine.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

ROOT = Path(__file__).resolve().parents[1]
STARTED = "Ray runtime started"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def auth_env() -> dict[str, str]:
    """Token authentication for this process and the nodes it starts (see the module docstring).
    Must run before this process imports Ray, which reads RAY_AUTH_MODE once, at import."""
    if "ray" in sys.modules and os.environ.get("RAY_AUTH_MODE") != "token":
        raise RuntimeError("ray_nodes.auth_env() must run before Ray is imported in this process")
    token = os.environ.get("RAY_AUTH_TOKEN") or secrets.token_hex(32)
    os.environ["RAY_AUTH_TOKEN"] = token
    os.environ["RAY_AUTH_MODE"] = "token"
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}


@dataclass
class Node:
    """One `ray start --block` process and the node it runs."""

    name: str
    process: subprocess.Popen
    log: Path
    resources: dict[str, float] = field(default_factory=dict)
    node_id: str | None = None

    def raylet_pid(self) -> int | None:
        """The node's raylet (a child of the `ray start` process), or None once it is gone."""
        for pid, ppid, comm in _processes():
            if ppid == self.process.pid and comm == "raylet":
                return pid
        return None

    def kill(self) -> int:
        """The node dies as a machine would: SIGKILL to its raylet (by PID) and, at once, to the
        worker processes the raylet started (`ray start --block` then ends the node's other
        processes). With the raylet alone, a worker notices about 2 s later, and one about to finish
        still delivers its result first. Returns the raylet's PID."""
        pid = self.raylet_pid()
        if pid is None:
            raise RuntimeError(f"node {self.name} has no raylet running")
        workers = _worker_pids_of(pid)
        os.kill(pid, signal.SIGKILL)
        for worker in workers:
            try:
                os.kill(worker, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """End every process of this node: SIGKILL to its process group (a graceful `ray start`
        shutdown drains for up to 30 s; the tests want nothing to survive and need nothing kept)."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass


def _processes() -> list[tuple[int, int, str]]:
    """(pid, ppid, command name) of every process, from /proc."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        out.append((int(entry.name), ppid, comm))
    return out


def _worker_pids_of(raylet_pid: int) -> list[int]:
    return [pid for pid, ppid, _ in _processes() if ppid == raylet_pid]


class LocalCluster:
    """A head node (no CPUs by default: drivers connect through it, nothing is placed on it) plus the
    nodes `add_node` starts. A context manager; `stop()` is idempotent and safe after a failure."""

    def __init__(self, *, head_cpus: int = 0, start_timeout_s: float = 180.0, env: Mapping[str, str] | None = None,
                 root: Path | None = None) -> None:
        self._own_root = root is None
        self.root = Path(root or tempfile.mkdtemp(prefix="csray", dir="/tmp"))   # short: socket path limit
        self.start_timeout_s = start_timeout_s
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_worker_niceness": "0",
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                    **auth_env(), **(env or {})}
        self.nodes: dict[str, Node] = {}
        self.address = ""
        try:
            address_file = self.root / "ray_current_cluster"   # `ray start` writes it just after "started"
            self.head = self._start("head", ["--head", f"--port={free_port()}", f"--temp-dir={self.root}",
                                             f"--num-cpus={head_cpus}", "--include-dashboard=false",
                                             f"--ray-client-server-port={free_port()}"],
                                    ready=lambda: address_file.is_file() and address_file.read_text().strip())
            self.address = address_file.read_text().strip()
        except BaseException:
            self.stop()
            raise

    def add_node(self, name: str, *, num_cpus: int = 1, num_gpus: int = 0,
                 resources: Mapping[str, float] | None = None) -> Node:
        """Start a worker node joining the head; returns once Ray reports it started."""
        args = [f"--address={self.address}", f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}"]
        if resources:
            args.append(f"--resources={json.dumps(dict(resources))}")
        node = self._start(name, args)
        node.resources = {"CPU": float(num_cpus), "GPU": float(num_gpus),
                          **{k: float(v) for k, v in (resources or {}).items()}}
        return node

    def _start(self, name: str, args: list[str], ready: Any = lambda: True) -> Node:
        if name in self.nodes:
            raise ValueError(f"node {name!r} exists")
        log = self.root / f"{name}.log"
        ports = [f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}"]
        with log.open("w") as out:
            process = subprocess.Popen(["ray", "start", "--block", "--disable-usage-stats", *args, *ports],
                                       stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        node = Node(name, process, log)
        self.nodes[name] = node
        deadline = time.monotonic() + self.start_timeout_s
        while STARTED not in log.read_text(errors="replace") or not ready():
            if not node.alive or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"ray node {name!r} did not start ({'exited' if not node.alive else 'timed out'}):"
                                   f"\n{tail}")
            time.sleep(0.2)
        node.node_id = self._node_id(node)
        return node

    @staticmethod
    def _node_id(node: Node) -> str | None:
        """The Ray node id, from the raylet's command line (`--node_id=...`)."""
        pid = node.raylet_pid()
        if pid is None:
            return None
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        for arg in args:
            if arg.startswith(b"--node_id="):
                return arg.split(b"=", 1)[1].decode()
        return None

    def node_of(self, node_id: str) -> str | None:
        """The name of the node with this Ray node id."""
        return next((n.name for n in self.nodes.values() if n.node_id == node_id), None)

    def stop(self) -> None:
        """End every process this cluster started (worker nodes first, then the head), then remove
        its folder (sessions, logs) unless it was given one."""
        for node in reversed(list(self.nodes.values())):
            raylet = node.raylet_pid()
            workers = _worker_pids_of(raylet) if raylet else []
            node.stop()
            for pid in workers:   # actor processes run in their own process groups
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
