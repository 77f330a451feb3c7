"""A Ray cluster of several nodes on this machine alone: the cluster code paths without a second machine.

    from mnist_study.executors.loopback import loopback_cluster
    with loopback_cluster(worker_nodes=2, cpus_per_node=1) as cluster:   # head without CPUs + 2 nodes
        run_study("quick", executor="ray", address=cluster.address)     # or cluster.client_address

Each node is a `ray start --block` process in a session of its own, started one after the other
(nodes of one machine started together time out), with a small object store each (they share the
machine's memory). On exit every node is stopped with every process it started, by their ids, and
nothing else: other Ray instances on the machine are left alone. Linux only (/proc).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

from mnist_study.processes import alive, descendants


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_command() -> str:
    beside = Path(sys.executable).with_name("ray")  # this environment's, not another one's on PATH
    return str(beside) if beside.is_file() else (shutil.which("ray") or "ray")


def _stop_node(process: subprocess.Popen, grace_s: float = 15.0) -> None:
    """Stop a `ray start --block` node and every process it started: SIGTERM (the node stops its
    own processes), then SIGKILL to whatever of them still lives after `grace_s`."""
    tree = descendants(process.pid)
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and (process.poll() is None or any(alive(p) for p in tree)):
        time.sleep(0.1)
    for pid in [*tree, *descendants(process.pid)]:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    if process.poll() is None:
        process.kill()
    process.wait()


@dataclasses.dataclass(frozen=True)
class LoopbackCluster:
    address: str         # the head's, HOST:PORT
    client_address: str  # its Ray Client server's, ray://HOST:PORT


@contextlib.contextmanager
def loopback_cluster(worker_nodes: int = 2, cpus_per_node: int = 1, head_cpus: int = 0,
                     object_store_mib: int = 300, timeout_s: float = 90.0) -> Iterator[LoopbackCluster]:
    """A head with `head_cpus` CPUs and `worker_nodes` nodes of `cpus_per_node` CPUs, all on this
    machine, each with an object store of `object_store_mib`; yields their addresses, and stops
    them all on exit."""
    ray_cmd = _ray_command()
    temp = tempfile.mkdtemp(prefix="rayc-", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    port, client_port = free_port(), free_port()
    address = f"127.0.0.1:{port}"
    # The nodes authenticate as drivers in this process will: Ray settles a process's mode once
    # (token once it has started a local instance, which sets RAY_AUTH_MODE), and a driver whose mode
    # differs from the cluster's cannot use it. Without a token, the cluster lives only inside the `with`.
    mode = "token" if os.environ.get("RAY_AUTH_MODE", "").lower() == "token" else "disabled"
    env = {**os.environ, "RAY_AUTH_MODE": mode, "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--node-ip-address=127.0.0.1", "--disable-usage-stats", f"--object-store-memory={object_store_mib << 20}",
              "--block"]
    head = [ray_cmd, "start", "--head", f"--port={port}", f"--num-cpus={head_cpus}", "--include-dashboard=false",
            f"--ray-client-server-port={client_port}", f"--dashboard-port={free_port()}", f"--temp-dir={temp}", *common]
    nodes: list[subprocess.Popen] = []
    try:
        def start(i: int, command: list[str]) -> tuple[subprocess.Popen, Path]:
            log = Path(temp) / f"node-{i}.log"
            with open(log, "w") as out:
                nodes.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                              env=env, start_new_session=True))
            return nodes[-1], log

        _wait_for_start(*start(0, head), timeout_s)
        node = [ray_cmd, "start", f"--address={address}", f"--num-cpus={cpus_per_node}", *common]
        for i in range(worker_nodes):  # one after the other: nodes of one machine started together time out
            _wait_for_start(*start(i + 1, node), timeout_s)
        yield LoopbackCluster(address, f"ray://127.0.0.1:{client_port}")
    finally:
        for node in reversed(nodes):
            _stop_node(node)
        shutil.rmtree(temp, ignore_errors=True)


def _wait_for_start(process: subprocess.Popen, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while "Ray runtime started" not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            text = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"a Ray node did not start ({' '.join(process.args[:3])} ...):\n{text}")
        time.sleep(0.1)


__all__ = ["LoopbackCluster", "free_port", "loopback_cluster"]
