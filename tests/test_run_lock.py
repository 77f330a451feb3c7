"""Two processes, one run: the second writer is refused, told who holds the run; readers need no lock."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mnist_study.cli import app
from mnist_study.errors import RunInUseError
from mnist_study.results import load_run
from mnist_study.runlock import LOCK_NAME, run_lock
from mnist_study.runner import resume_run

runner = CliRunner()
MNIST_STUDY = str(Path(sys.executable).with_name("mnist-study"))


@pytest.fixture
def unfinished_run(tmp_path, tiny_run):
    """A copy of the tiny run with seed 1 of every experiment (and the raw front-end) to redo."""
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    for marker in copy.glob("experiments/*/seed-1/metrics.json"):
        marker.unlink()
    (copy / "experiments/raw8/frontend.json").unlink()
    return copy


def wait_for_holder(run_dir: Path, pid: int, process: subprocess.Popen, timeout: float = 120) -> dict:
    """The lock record, once process `pid` has written it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            record = json.loads((run_dir / LOCK_NAME).read_text() or "{}")
        except (FileNotFoundError, ValueError):
            record = {}
        if record.get("pid") == pid:
            return record
        time.sleep(0.02)
    raise AssertionError(f"process {pid} never took the lock of {run_dir}")


def hold_lock_in_another_process(run_dir: Path) -> subprocess.Popen:
    code = ("import sys, time; from mnist_study.runlock import run_lock\n"
            f"with run_lock({str(run_dir)!r}, 'mnist-study run --resume {run_dir}'):\n"
            "    print('held', flush=True); time.sleep(600)")
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_writer_is_told_who_holds_the_run_and_a_dead_holders_lock_is_taken_over(unfinished_run):
    holder = hold_lock_in_another_process(unfinished_run)
    try:
        with pytest.raises(RunInUseError, match=rf"is in use by process {holder.pid} "
                                                rf"\(mnist-study run --resume {unfinished_run}\)"):
            resume_run(unfinished_run, device="cpu", workers=0, progress=False)
        assert len(load_run(unfinished_run).missing()) == 3  # refused before touching anything
    finally:
        holder.kill()  # as kill -9 would: no clean-up, the lock file still names it
        holder.wait()
    assert json.loads((unfinished_run / LOCK_NAME).read_text())["pid"] == holder.pid
    resume_run(unfinished_run, device="cpu", workers=0, progress=False)  # the OS released the dead one's lock
    assert load_run(unfinished_run).missing() == []
    assert (unfinished_run / LOCK_NAME).read_text() == ""  # released: it names no one


def test_the_lock_is_reentrant_within_a_process_and_released_after(tmp_path):
    import fcntl

    with run_lock(tmp_path, "outer"):
        with run_lock(tmp_path, "inner"):  # the CLI holds the run across training and the report
            record = json.loads((tmp_path / LOCK_NAME).read_text())
            assert record["pid"] == os.getpid() and record["command"] == "outer"
        fd = os.open(tmp_path / LOCK_NAME, os.O_RDWR)
        with pytest.raises(BlockingIOError):  # still held after the inner block
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free now
    os.close(fd)


def test_a_read_only_place_for_the_lock_is_a_clear_error(tmp_path, monkeypatch):
    import errno

    from mnist_study.errors import WriteError

    def refuse(path, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr("mnist_study.runlock.os.open", refuse)
    with pytest.raises(WriteError, match=rf"cannot write {tmp_path / LOCK_NAME}: read-only file system"):
        with run_lock(tmp_path):
            pass


@pytest.mark.timeout(300)
def test_two_commands_on_one_run_at_once(unfinished_run):
    """A real `run --resume` holds the run; a second `run --resume` and a `report` are refused; `show` reads."""
    first = subprocess.Popen([MNIST_STUDY, "run", "--resume", str(unfinished_run), "--workers", "0", "--no-report"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_holder(unfinished_run, first.pid, first)
    os.kill(first.pid, signal.SIGSTOP)  # hold it there, whatever the machine's speed
    try:
        for args in (["run", "--resume", str(unfinished_run), "--workers", "0"], ["report", str(unfinished_run)]):
            second = subprocess.run([MNIST_STUDY, *args], capture_output=True, text=True, timeout=120)
            message = " ".join(second.stderr.split())
            assert second.returncode == 2, second.stderr
            assert (f"{unfinished_run} is in use by process {first.pid} (mnist-study run --resume "
                    f"{unfinished_run} --workers 0 --no-report)") in message
            assert "Traceback" not in second.stderr
        shown = runner.invoke(app, ["show", str(unfinished_run), "--format", "json"])  # readers take no lock
        assert shown.exit_code == 0, shown.output
    finally:
        os.kill(first.pid, signal.SIGCONT)
    out, err = first.communicate(timeout=240)
    assert first.returncode == 0, err
    run = load_run(unfinished_run)
    assert run.missing() == [] and run.manifest["complete"]
