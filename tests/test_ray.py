"""Studies on Ray (executors/ray.py): the same results as the local executors, a killed worker's unit
retried, runs resumed across executors, units spread over the nodes of a cluster on this machine.

Every Ray instance and cluster a test starts is stopped in a finally (a fixture's, or the
executor's close), and each stays on this machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.numpy import load_file

from mnist_study.errors import OptionError
from mnist_study.results import load_run
from mnist_study.runner import resume_run, run_study
from mnist_study.studies import parse_study

from conftest import TINY_STUDY

# Tests that start Ray (seconds each): `pytest -m ray` selects them, `make test-ray` runs them.
ray_test = pytest.mark.ray

RAW_AND_PCA = TINY_STUDY.split("[[experiment]]\nname = \"forest8\"")[0]  # raw8 and pca8

# One wide experiment whose seeds train one per unit, a few seconds each: long enough to kill a unit midway.
LONG_UNITS = """
name = "long"
[[experiment]]
name = "adam256"
hidden = 256
optimizer = "adam"
learning_rate = 0.001
max_epochs = 60
early_stopping = false
validation_size = 200
"""

TIMINGS = ("train_seconds", "evaluate_seconds")


def assert_same_results(a: Path, b: Path, *, ignore: tuple[str, ...] = TIMINGS) -> int:
    """Every seed's tensors, history, report and metrics (less `ignore`) equal; returns the seeds compared."""
    run_a, run_b = load_run(a), load_run(b)
    assert run_a.missing() == [] and run_b.missing() == []
    compared = 0
    for e in run_a.experiments:
        folder_a, folder_b = a / "experiments" / e.name, b / "experiments" / e.name
        assert_same_tensors(folder_a / "frontend.safetensors", folder_b / "frontend.safetensors")
        assert json.loads((folder_a / "frontend.json").read_text()) == json.loads((folder_b / "frontend.json").read_text())
        for ra, rb in zip(run_a.results(e.name), run_b.results(e.name), strict=True):
            assert ra.seed == rb.seed
            for name in ("model.safetensors", "evaluation.safetensors"):
                assert_same_tensors(ra.path / name, rb.path / name)
            assert ra.history == rb.history
            assert ra.classification_report == rb.classification_report
            strip = lambda m: {k: v for k, v in m.items() if k not in ignore}  # noqa: E731
            assert strip(ra.metrics) == strip(rb.metrics)
            compared += 1
    return compared


def assert_same_tensors(a: Path, b: Path) -> None:
    """Same names, dtypes and values (not bytes: safetensors writes its metadata in no fixed order)."""
    ta, tb = load_file(str(a)), load_file(str(b))
    assert ta.keys() == tb.keys(), a
    for name in ta:
        assert ta[name].dtype == tb[name].dtype and (ta[name] == tb[name]).all(), f"{a}: {name} differs"


# ------------------------------------------------------------------------- without Ray, or before it

def test_importing_the_package_does_not_import_ray():
    code = ("import sys, mnist_study, mnist_study.runner, mnist_study.executor, mnist_study.cli; "
            "print('ray' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"


def test_without_ray_asking_for_it_says_how_to_install_it(monkeypatch, tmp_path, tiny_data, tiny_study):
    from mnist_study.executor import make_executor

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as where it is not installed
    with pytest.raises(OptionError, match=r"pip install 'mnist-study\[ray\]'"):
        make_executor(2, kind="ray")
    with pytest.raises(OptionError, match=r"pip install 'mnist-study\[ray\]'"):
        run_study(tiny_study, seeds=[0], device="cpu", data_dir=tiny_data, out=tmp_path / "run", executor="ray",
                  progress=False)
    assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.parametrize("options, message", [
    ({"executor": "dask"}, "unknown executor 'dask'"),
    ({"address": "auto"}, "options of --executor ray"),
    ({"executor": "ray", "cpus_per_unit": 0}, "needs some CPUs or GPUs"),
    ({"executor": "ray", "device": "cuda"}, "needs --gpus-per-unit"),
    ({"executor": "ray", "workers": 0}, "workers must be 1"),
])
def test_executor_options_are_checked_before_anything_is_written(tmp_path, tiny_data, tiny_study, options, message):
    if options.get("executor") == "ray":
        pytest.importorskip("ray")
    kwargs = {"device": "cpu", **options}
    with pytest.raises(OptionError, match=message):
        run_study(tiny_study, seeds=[0], data_dir=tiny_data, out=tmp_path / "run", progress=False, **kwargs)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, message", [
    (["--address", "auto"], "options of --executor ray"),
    (["--gpus-per-unit", "0.5"], "options of --executor ray"),
    (["--executor", "dask"], "'dask' is not one of"),
])
def test_the_cli_refuses_ray_options_without_ray_before_any_work(tmp_path, tiny_data, args, message):
    from typer.testing import CliRunner

    from mnist_study.cli import app

    study = tmp_path / "raw-and-pca.toml"
    study.write_text(RAW_AND_PCA)
    result = CliRunner().invoke(app, ["run", str(study), "--data-dir", str(tiny_data), "--out",
                                      str(tmp_path / "run"), *args])
    assert result.exit_code != 0 and message in " ".join(result.output.split())
    assert not (tmp_path / "run").exists()


def test_the_cli_says_how_to_install_ray(monkeypatch, tmp_path, tiny_data):
    from typer.testing import CliRunner

    from mnist_study.cli import app

    study = tmp_path / "raw-and-pca.toml"
    study.write_text(RAW_AND_PCA)
    monkeypatch.setitem(sys.modules, "ray", None)
    result = CliRunner().invoke(app, ["run", str(study), "--executor", "ray", "--data-dir", str(tiny_data),
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "pip install 'mnist-study[ray]'" in " ".join(result.output.split())
    assert not (tmp_path / "run").exists()


def test_unit_files_are_written_with_the_completion_markers_last(tmp_path, monkeypatch):
    from mnist_study.executors import ray as ray_module

    order = []
    monkeypatch.setattr(ray_module, "write_bytes", lambda path, payload: order.append(Path(path).name))
    ray_module.write_unit_files(tmp_path, {"experiments/a/seed-0/metrics.json": b"{}",
                                             "experiments/a/seed-0/model.safetensors": b"",
                                             "experiments/a/frontend.json": b"{}",
                                             "experiments/a/seed-1/metrics.json": b"{}",
                                             "experiments/a/seed-1/history.json": b"{}"})
    assert order == ["model.safetensors", "history.json", "frontend.json", "metrics.json", "metrics.json"]
    with pytest.raises(Exception, match="outside its run directory"):
        ray_module.write_unit_files(tmp_path, {"../escape.json": b"{}"})


def test_unit_slots_follow_the_scarcer_resource():
    from mnist_study.executors.ray import unit_slots

    assert unit_slots({"CPU": 8.0}, 1, 0) == 8
    assert unit_slots({"CPU": 8.0}, 3, 0) == 2
    assert unit_slots({"CPU": 8.0, "GPU": 1.0}, 1, 0.25) == 4
    assert unit_slots({"CPU": 0.0, "GPU": 2.0}, 0, 0.5) == 4
    assert unit_slots({"CPU": 2.0}, 1, 1) == 0



class FlakyRay:
    """ray's init and shutdown, failing as Ray Client's proxy does when the server it starts for a
    new client dies at once: the first `failures` calls raise, the rest connect."""

    class exceptions:
        RayError = RuntimeError

    def __init__(self, failures: int, message: str):
        self.failures, self.message, self.inits, self.shutdowns = failures, message, 0, 0

    def init(self, **options):
        self.inits += 1
        if self.inits <= self.failures:
            raise ConnectionAbortedError(self.message)

    def shutdown(self):
        self.shutdowns += 1


ZOMBIE = ("Initialization failure from server:\nTraceback (most recent call last):\n  ...\n"
          "psutil.ZombieProcess: PID still exists but it's a zombie (pid=802)\n")


@pytest.mark.parametrize("message", [ZOMBIE, "ray client server failed to start"])
def test_a_client_connection_is_tried_again_when_the_proxy_loses_its_server(message):
    from mnist_study.executors.ray import _connect

    ray = FlakyRay(failures=2, message=message)
    _connect(ray, "ray://127.0.0.1:10001", workers=None, runtime_env=None)
    assert (ray.inits, ray.shutdowns) == (3, 2)


def test_a_client_connection_that_keeps_failing_is_an_error_naming_the_address():
    from mnist_study.executors.ray import CLIENT_TRIES, _connect

    ray = FlakyRay(failures=CLIENT_TRIES, message=ZOMBIE)
    with pytest.raises(OptionError, match=r"'ray://127.0.0.1:10001'.*ZombieProcess.*is the cluster running"):
        _connect(ray, "ray://127.0.0.1:10001", workers=None, runtime_env=None)
    assert ray.inits == CLIENT_TRIES


def test_a_failure_of_a_direct_connection_is_not_retried():
    from mnist_study.executors.ray import _connect

    ray = FlakyRay(failures=1, message=ZOMBIE)
    with pytest.raises(OptionError, match="127.0.0.1:6379"):
        _connect(ray, "127.0.0.1:6379", workers=None, runtime_env=None)
    assert ray.inits == 1


# ------------------------------------------------------------------------------------ on Ray

@dataclass(frozen=True)
class Square:
    """A task without a run directory: squares its number, says so, reports its threads and process."""

    number: int

    def run(self, emit):
        emit({"kind": "squared", "number": self.number})
        from threadpoolctl import threadpool_info

        blas = {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}
        return self.number ** 2, torch.get_num_threads(), blas, os.getpid()


@dataclass(frozen=True)
class Fail:
    def run(self, emit):
        raise RuntimeError("task failed on purpose")


@ray_test
def test_a_private_ray_instance_runs_tasks_and_is_stopped_on_close():
    ray = pytest.importorskip("ray")
    from mnist_study.executor import make_executor
    from mnist_study.executors.ray import RayExecutor

    assert not ray.is_initialized()
    events = []
    try:
        # The workers import this file's tasks from here (runtime_env goes to ray.init).
        tests = {"env_vars": {"PYTHONPATH": str(Path(__file__).parent)}}
        with make_executor(2, events.append, kind="ray", address="local", runtime_env=tests) as executor:
            assert isinstance(executor, RayExecutor) and executor.workers == 2
            results = {task.number: result for task, result in executor.run_all([Square(n) for n in range(6)])}
            with pytest.raises(RuntimeError, match="on purpose"):
                list(executor.run_all([Fail()]))
        assert {n: r[0] for n, r in results.items()} == {n: n * n for n in range(6)}
        assert all(threads == 1 and blas == {1} for _, threads, blas, _ in results.values())  # one thread each
        assert os.getpid() not in {pid for *_, pid in results.values()}
        assert sorted(e["number"] for e in events if e["kind"] == "squared") == list(range(6))
        starts = [e for e in events if e["kind"] == "unit-start"]
        assert len(starts) == 7 and {pid for *_, pid in results.values()} <= {e["pid"] for e in starts}
        assert not ray.is_initialized()  # the instance it started is stopped
    finally:
        ray.shutdown()


@pytest.fixture(scope="class")
def ray_here():
    """One private Ray instance of 2 CPUs for a class of tests: executors use it as it is."""
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="warning",
             _node_ip_address="127.0.0.1")
    try:
        yield ray
    finally:
        ray.shutdown()


@ray_test
@pytest.mark.usefixtures("ray_here")
class TestOnALocalRayInstance:
    def test_a_study_on_ray_equals_the_local_runs(self, tmp_path, tiny_data):
        """The same bits in this process, in worker processes and on Ray: one thread (PyTorch and BLAS)
        everywhere, the data through the object store, results written here."""
        study = parse_study(RAW_AND_PCA, "raw-and-pca.toml")
        here, workers, on_ray = (
            run_study(study, seeds=[0, 1], device="cpu", data_dir=tiny_data, out=tmp_path / name, progress=False,
                      **options)
            for name, options in [("here", {"workers": 0}), ("workers", {"workers": 2}), ("ray", {"executor": "ray"})])
        assert assert_same_results(here, on_ray) == 4
        assert assert_same_results(workers, on_ray) == 4
        manifest = json.loads((on_ray / "manifest.json").read_text())
        assert manifest["executor"] == {"kind": "ray", "address": "local", "cpus_per_unit": 1, "gpus_per_unit": 0}
        assert manifest["workers"] == 2 and manifest["complete"]
        assert not list(on_ray.rglob("*.tmp"))

    def test_the_cli_runs_a_study_on_ray(self, tmp_path, tiny_data):
        from typer.testing import CliRunner

        from mnist_study.cli import app

        study = tmp_path / "raw-and-pca.toml"
        study.write_text(RAW_AND_PCA)
        args = ["run", str(study), "--executor", "ray", "--cpus-per-unit", "1", "--no-report", "--seeds", "2",
                "--data-dir", str(tiny_data), "--out", str(tmp_path / "run"), "--device", "cpu"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "raw8" in result.output and "pca8" in result.output  # the accuracy table
        manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
        assert manifest["complete"] and manifest["executor"]["kind"] == "ray"
        assert load_run(tmp_path / "run").missing() == []

    def test_a_killed_worker_s_unit_runs_again_to_the_same_result(self, tmp_path, tiny_data):
        study = parse_study(LONG_UNITS, "long.toml")
        killed: dict[int, int] = {}  # unit -> the pid killed while running it
        starts: list[dict] = []

        def kill_the_first_unit(event: dict) -> None:
            if event["kind"] == "unit-start":
                starts.append(event)
                if event["task"] == "TrainSeeds" and not killed:
                    os.kill(event["pid"], signal.SIGKILL)
                    killed[event["unit"]] = event["pid"]

        on_ray = run_study(study, seeds=[0, 1], device="cpu", data_dir=tiny_data, out=tmp_path / "ray",
                           executor="ray", progress=False, on_event=kill_the_first_unit)
        (unit, pid), = killed.items()
        again = [e for e in starts if e["unit"] == unit]
        assert len(again) == 2 and again[1]["pid"] != pid  # run again, in another worker process
        reference = run_study(study, seeds=[0, 1], device="cpu", data_dir=tiny_data, out=tmp_path / "here",
                              workers=0, progress=False)
        assert assert_same_results(reference, on_ray) == 2

    def test_a_run_started_here_finishes_on_ray_and_back(self, tmp_path, tiny_data):
        study = parse_study(RAW_AND_PCA, "raw-and-pca.toml")
        common = {"device": "cpu", "data_dir": tiny_data, "progress": False}
        reference = run_study(study, seeds=[0, 1], out=tmp_path / "whole", workers=0, **common)
        # Here -> Ray: seed 0 here, then seed 1 and a front-end fitted again on Ray.
        first = run_study(study, seeds=[0], out=tmp_path / "here-then-ray", workers=0, **common)
        (first / "experiments" / "pca8" / "frontend.json").unlink()
        run_study(study, seeds=[0, 1], out=first, executor="ray", **common)
        assert assert_same_results(reference, first, ignore=(*TIMINGS, "seeds_trained_together")) == 4
        # Ray -> here (worker processes): a run on Ray loses two seeds, and a resume here redoes them.
        second = run_study(study, seeds=[0, 1], out=tmp_path / "ray-then-here", executor="ray", **common)
        for name in ("raw8", "pca8"):
            (second / "experiments" / name / "seed-1" / "metrics.json").unlink()
        resume_run(second, device="cpu", workers=2, progress=False)
        assert assert_same_results(reference, second, ignore=(*TIMINGS, "seeds_trained_together")) == 4
        assert "executor" not in json.loads((second / "manifest.json").read_text())  # finished locally


# ------------------------------------------------------------------------- a cluster on this machine

@pytest.fixture(scope="module")
def loopback():
    """A head without CPUs and two nodes of one CPU each, all on this machine, for this module's
    last tests; stopped, every process of it, when they are done."""
    ray = pytest.importorskip("ray")
    from mnist_study.executors.loopback import loopback_cluster

    assert not ray.is_initialized()  # a driver here would use its own Ray, not the cluster
    with loopback_cluster(worker_nodes=2, cpus_per_node=1) as cluster:
        yield cluster


@ray_test
def test_units_spread_over_the_nodes_of_a_loopback_cluster(tmp_path, tiny_data, loopback):
    """Nothing shared with the nodes but the address: each unit's files travel back to this process."""
    import ray

    study = parse_study(RAW_AND_PCA, "raw-and-pca.toml")
    common = {"device": "cpu", "data_dir": tiny_data, "progress": False}
    starts = []
    on_cluster = run_study(study, seeds=[0, 1], out=tmp_path / "cluster", executor="ray", address=loopback.address,
                           on_event=lambda e: starts.append(e) if e["kind"] == "unit-start" else None, **common)
    assert len(starts) == 4  # two front-ends, two experiments' seeds
    assert len({e["node"] for e in starts}) == 2  # both nodes ran units; the head has no CPU for any
    assert not ray.is_initialized()  # disconnected, the cluster left running
    manifest = json.loads((on_cluster / "manifest.json").read_text())
    assert manifest["workers"] == 2 and manifest["executor"]["address"] == loopback.address
    reference = run_study(study, seeds=[0, 1], out=tmp_path / "here", workers=0, **common)
    assert assert_same_results(reference, on_cluster) == 4


@ray_test
def test_a_run_through_ray_client(tmp_path, tiny_data, loopback):
    import ray

    study = parse_study(RAW_AND_PCA, "raw-and-pca.toml")
    common = {"device": "cpu", "data_dir": tiny_data, "progress": False}
    events = []
    through_client = run_study(study, seeds=[0], out=tmp_path / "client", executor="ray",
                               address=loopback.client_address, on_event=events.append, **common)
    assert not ray.is_initialized()
    assert sum(e["kind"] == "seed-done" for e in events) == 2 and any(e["kind"] == "epoch" for e in events)
    reference = run_study(study, seeds=[0], out=tmp_path / "here", workers=0, **common)
    assert assert_same_results(reference, through_client) == 2
