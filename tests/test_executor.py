"""The executors: the same tasks, results and events in this process and in worker processes."""

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from mnist_study.executor import InProcessExecutor, ProcessExecutor, make_executor, single_threaded, worker_count


@dataclass(frozen=True)
class Square:
    """A task: squares its number, says so, and reports the threads it computed with."""

    number: int

    def run(self, emit):
        emit({"kind": "squared", "number": self.number})
        return self.number ** 2, torch.get_num_threads(), os.getpid()


@dataclass(frozen=True)
class Fail:
    def run(self, emit):
        raise RuntimeError("task failed on purpose")


@pytest.mark.parametrize("workers", [0, 2])
def test_executors_run_tasks_and_forward_events(workers):
    events = []
    with make_executor(workers, events.append) as executor:
        results = {task.number: result for task, result in executor.run_all([Square(n) for n in range(5)])}
    assert {n: r[0] for n, r in results.items()} == {n: n * n for n in range(5)}
    assert all(threads == 1 for _, threads, _ in results.values())  # one thread per task, everywhere
    assert sorted(e["number"] for e in events) == list(range(5))
    pids = {pid for _, _, pid in results.values()}
    assert (pids == {os.getpid()}) == (workers == 0)
    assert isinstance(executor, InProcessExecutor if workers == 0 else ProcessExecutor)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_task_error_reaches_the_caller(workers):
    with pytest.raises(RuntimeError, match="on purpose"):
        with make_executor(workers) as executor:
            list(executor.run_all([Square(1), Fail()]))


def test_single_threaded_restores_the_thread_count():
    before = torch.get_num_threads()
    with single_threaded():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_worker_count_never_exceeds_the_tasks():
    assert worker_count(8, 3) == 3
    assert worker_count(0, 3) == 0
    assert worker_count(None, 1) == 1


def test_run_study_from_a_plain_script_with_worker_processes(tmp_path, tiny_data):
    """A script that calls run_study at its top level (no __main__ guard), as the README shows it:
    worker processes must not run the script again."""
    from conftest import TINY_STUDY

    (tmp_path / "tiny.toml").write_text(TINY_STUDY)
    script = tmp_path / "study_script.py"
    script.write_text(textwrap.dedent(f"""
        from mnist_study import build_report, load_run, run_study
        print("script body runs")
        run_dir = run_study({str(tmp_path / "tiny.toml")!r}, seeds=[0, 1], data_dir={str(tiny_data)!r},
                            out={str(tmp_path / "run")!r}, workers=2, progress=False)
        build_report(run_dir, tsne_points=50, workers=2, progress=False)
        print("test accuracy", load_run(run_dir).results("raw8")[0].metrics["accuracy"]["test"])
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("script body runs") == 1
    assert "test accuracy" in done.stdout
    assert (tmp_path / "run" / "report.html").is_file()


def test_a_run_gives_the_same_results_in_workers_and_in_this_process(tmp_path, tiny_data, tiny_study):
    from mnist_study.results import load_run
    from mnist_study.runner import run_study

    runs = [load_run(run_study(tiny_study, seeds=[0, 1], device="cpu", data_dir=tiny_data, out=tmp_path / f"w{w}",
                               workers=w, progress=False)) for w in (0, 2)]
    for e in tiny_study.experiments:
        for here, there in zip(runs[0].results(e.name), runs[1].results(e.name)):
            assert here.metrics["accuracy"] == there.metrics["accuracy"] and here.metrics["loss"] == there.metrics["loss"]
            assert (here.path / "model.safetensors").read_bytes() == (there.path / "model.safetensors").read_bytes()
