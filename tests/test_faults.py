"""Nothing lost, nothing crashes: runs killed, interrupted and starved of disk, then resumed.

The harness (marked `faults`; `make test-faults`, a few minutes) runs a real reduced study on MNIST
through the command line with two workers and the report on, SIGKILLs it at ten random moments
spread over data loading, front-end fitting, training, evaluation and the report --
half of the time the whole process group, half of the time the main process alone, as the OOM
killer does -- resumes it each time, and checks that the end result is the uninterrupted run's,
file by file. After every kill: no process of the run survives, and every result file on disk
reads back whole. The quick tests beside it do one kill, one Ctrl-C and full or read-only disks on
the tiny synthetic data, in the default test run.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mnist_study import files
from mnist_study.cli import app
from mnist_study.errors import WriteError
from mnist_study.results import load_run
from mnist_study.runner import resume_run, run_study
from mnist_study.studies import parse_study

from conftest import KILLABLE_STUDY, TINY_STUDY

MNIST_STUDY = str(Path(sys.executable).with_name("mnist-study"))
# What metrics.json records about how a seed was computed rather than what it learnt: its times,
# and how many seeds shared its training (a resume trains only the missing ones together).
NOT_RESULTS = {"train_seconds", "evaluate_seconds", "seeds_trained_together"}


# ------------------------------------------------------------------------------------- helpers

def group_members(pgid: int) -> list[str]:
    """The living processes of process group `pgid`, as 'PID command line' (zombies are dead)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, _, group = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:3]
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue
        if int(group) == pgid and state != "Z":
            found.append(f"{entry.name} ({state}) {command.strip()}")
    return found


def assert_group_ends(pgid: int, within: float = 5.0) -> float:
    """Wait until no process of group `pgid` lives (workers included); return how long it took."""
    start = time.monotonic()
    while (alive := group_members(pgid)) and time.monotonic() - start < within:
        time.sleep(0.02)
    assert not alive, f"processes of the killed run still alive after {within} s: {alive}"
    return time.monotonic() - start


def assert_nothing_partial(run_dir: Path) -> int:
    """Every result file on disk reads back whole; return how many temporary files killed writes left."""
    from safetensors.numpy import load_file

    if not run_dir.exists():
        return 0
    temporary = [p for p in run_dir.rglob("*") if p.name.endswith(files.TMP_SUFFIX)]
    for path in run_dir.rglob("*"):
        if path in temporary or not path.is_file():
            continue
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".safetensors":
            load_file(str(path))
        elif path.suffix == ".html":
            assert path.read_text().rstrip().endswith("</html>"), path
    if (run_dir / "study.json").is_file():
        load_run(run_dir)  # raises if any finished seed's files do not all read back
    return len(temporary)


def result_files(run_dir: Path) -> dict[str, object]:
    """Every file of the run's results, by path: bytes, and metrics.json without NOT_RESULTS."""
    found = {}
    for path in sorted((run_dir / "experiments").rglob("*")):
        if path.is_file():
            key = str(path.relative_to(run_dir))
            if path.name == "metrics.json":
                found[key] = {k: v for k, v in json.loads(path.read_text()).items() if k not in NOT_RESULTS}
            else:
                found[key] = path.read_bytes()
    return found


def assert_same_results(a: Path, b: Path) -> None:
    ours, theirs = result_files(a), result_files(b)
    assert sorted(ours) == sorted(theirs)
    different = [name for name in ours if ours[name] != theirs[name]]
    assert not different, f"differ from the uninterrupted run: {different}"


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    """`mnist-study ARGS` in a session of its own, with Ctrl-C's default action (a shell gives a
    background process SIGINT ignored, and the child would inherit that). Unbuffered, so that each
    line arrives when it is printed."""
    return subprocess.Popen([MNIST_STUDY, *args], cwd=cwd, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


class Output:
    """The lines a process prints, each with when it came, read on a thread."""

    def __init__(self, process: subprocess.Popen):
        self.started = time.monotonic()
        self.lines: list[tuple[float, str]] = []
        self.thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self.thread.start()

    def _read(self, process) -> None:
        for line in process.stdout:
            self.lines.append((time.monotonic() - self.started, line.rstrip("\n")))

    def first(self, pattern: str) -> float | None:
        return next((t for t, line in list(self.lines) if re.search(pattern, line)), None)

    def text(self) -> str:
        self.thread.join(10)
        return "\n".join(line for _, line in self.lines)


def wait_until(condition, process: subprocess.Popen, past=lambda: False, timeout: float = 300) -> None:
    """Poll `condition()` until it holds, the run is `past()` the moment, or the process ends."""
    deadline = time.monotonic() + timeout
    while not condition() and not past() and process.poll() is None:
        assert time.monotonic() < deadline, "the moment to interrupt the run never came"
        time.sleep(0.002)


# ----------------------------------------------------------------- one kill, one Ctrl-C (quick)

def test_main_process_killed_during_training_leaves_no_workers_and_resumes_to_the_same_results(tmp_path, tiny_data):
    (tmp_path / "s.toml").write_text(KILLABLE_STUDY)
    out = tmp_path / "killed"
    process = start(["run", "s.toml", "--seeds", "2", "--workers", "2", "--no-report", "--device", "cpu",
                     "--data-dir", str(tiny_data), "--out", str(out)], tmp_path)
    output = Output(process)
    wait_until(lambda: list(out.glob("experiments/*/seed-*/metrics.json")), process)
    assert process.poll() is None, output.text()
    assert len(group_members(process.pid)) >= 3  # the main process and its two workers
    os.kill(process.pid, signal.SIGKILL)  # the main process alone, as the OOM killer would
    process.wait()
    assert_group_ends(process.pid)  # workers do not live on, writing into the run
    assert_nothing_partial(out)
    assert 0 < len(load_run(out).missing()) < 8, output.text()

    resume_run(out, device="cpu", workers=0, progress=False)
    reference = run_study(parse_study(KILLABLE_STUDY), seeds=[0, 1], device="cpu", data_dir=tiny_data,
                          out=tmp_path / "whole", workers=0, progress=False)
    assert load_run(out).manifest["complete"]
    assert_same_results(out, reference)
    assert not list(out.rglob(f"*{files.TMP_SUFFIX}"))


def test_ctrl_c_stops_the_run_at_once_naming_the_resume_command(tmp_path, tiny_data):
    (tmp_path / "s.toml").write_text(KILLABLE_STUDY)
    out = tmp_path / "interrupted"
    process = start(["run", "s.toml", "--seeds", "2", "--workers", "2", "--no-report", "--device", "cpu",
                     "--data-dir", str(tiny_data), "--out", str(out)], tmp_path)
    output = Output(process)
    wait_until(lambda: list(out.glob("experiments/*/seed-*/metrics.json")), process)
    assert process.poll() is None, output.text()
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C on a terminal does: the whole foreground group
    sent = time.monotonic()
    assert process.wait(timeout=30) == 130
    assert time.monotonic() - sent < 10  # workers are stopped, not waited for
    text = output.text()
    assert f"continue with mnist-study run --resume {out}" in " ".join(text.split()), text
    assert "Traceback" not in text
    assert_group_ends(process.pid)
    assert_nothing_partial(out)
    resume_run(out, device="cpu", workers=0, progress=False)
    assert load_run(out).missing() == [] and load_run(out).manifest["complete"]


# ----------------------------------------------------------------------- full and read-only disks

def fail_commits_after(monkeypatch, successes: int, code: int) -> list[Path]:
    """Make every atomic write after the first `successes` fail with OSError `code`; return the failed paths."""
    real, failed = files._commit, []

    def commit(tmp: Path, path: Path) -> None:
        if len(failed) or commit.done >= successes:
            failed.append(path)
            raise OSError(code, os.strerror(code))
        commit.done += 1
        real(tmp, path)

    commit.done = 0
    monkeypatch.setattr(files, "_commit", commit)
    return failed


@pytest.mark.parametrize("code, says", [(errno.ENOSPC, "no space left on device"),
                                        (errno.EROFS, "read-only file system")])
@pytest.mark.parametrize("successes", [2, 14])  # at the start (the manifest), and amid the seeds
def test_a_failed_write_ends_the_run_naming_the_file_and_resume_completes_it(
        tmp_path, tiny_data, tiny_study, tiny_run, monkeypatch, code, says, successes):
    out = tmp_path / "run"
    failed = fail_commits_after(monkeypatch, successes, code)
    with pytest.raises(WriteError) as raised:
        run_study(tiny_study, seeds=[0, 1], device="cpu", data_dir=tiny_data, out=out, workers=0, progress=False)
    message = str(raised.value)
    assert message.startswith(f"cannot write {failed[0]}: {says}")
    assert failed[0].is_relative_to(out) and f"mnist-study run --resume {out}" in message
    assert assert_nothing_partial(out) == 0  # finished results intact, no temporary file left behind
    finished = {p: p.read_bytes() for p in out.glob("experiments/*/seed-*/*")}

    monkeypatch.undo()  # space freed
    resume_run(out, device="cpu", workers=0, progress=False)
    assert load_run(out).manifest["complete"]
    assert_same_results(out, tiny_run)
    assert all(p.read_bytes() == data for p, data in finished.items())


def test_the_command_line_says_which_file_could_not_be_written(tmp_path, tiny_data, monkeypatch):
    (tmp_path / "tiny.toml").write_text(TINY_STUDY)
    out = tmp_path / "run"
    fail_commits_after(monkeypatch, 6, errno.ENOSPC)
    result = CliRunner().invoke(app, ["run", str(tmp_path / "tiny.toml"), "--data-dir", str(tiny_data),
                                      "--out", str(out), "--workers", "0", "--no-report"])
    message = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert re.search(rf"error: cannot write {out}/\S+: no space left on device; free some space on that disk, "
                     rf"then continue with `mnist-study run --resume {out}`", message), message


def test_io_errors_of_safetensors_are_write_errors_and_others_are_not(tmp_path):
    path = tmp_path / "model.safetensors"
    rust = Exception("Error while serializing: I/O error: No space left on device (os error 28)")
    assert "no space left on device" in str(files.as_write_error(rust, path))
    assert files.as_write_error(OSError(errno.EDQUOT, "quota"), path) is not None
    assert files.as_write_error(OSError(errno.EIO, "I/O error"), path) is None  # a failing disk: not ours to fix
    assert files.as_write_error(ValueError("bad value"), path) is None


def test_a_write_error_crosses_from_a_worker_process_intact():
    error = WriteError("cannot write runs/x/metrics.json: no space left on device; free some space")
    assert str(pickle.loads(pickle.dumps(error))) == str(error)


def test_temporary_files_of_killed_writes_are_removed_on_resume(tmp_path, tiny_run):
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    leftover = copy / "experiments/raw8/seed-0/.model.safetensors.k2j4.tmp"
    leftover.write_bytes(b"half a network")
    assert load_run(copy).missing() == []  # never taken for a result
    resume_run(copy, device="cpu", workers=0, progress=False)
    assert not leftover.exists()


# ------------------------------------------------------------------ the harness: killed anywhere

FAULT_STUDY = """
name = "faults"
description = "Small networks on real MNIST with every kind of front-end: the fault-injection harness's study"

[[experiment]]
name = "raw10"          # narrow: its seeds train together, then are evaluated one after the other
hidden = 10
l2 = 0.001
train_size = 20000
validation_size = 2000
max_epochs = 6

[[experiment]]
name = "raw80"          # wide: a task per seed, and the longest training
hidden = 80
l2 = 0.001
train_size = 30000
validation_size = 2000
max_epochs = 8
early_stopping = false

[[experiment]]
name = "pca32"
hidden = 32
frontend = { kind = "pca", variance = 0.9 }
train_size = 10000
validation_size = 2000
max_epochs = 3
early_stopping = false
validation = "first"

[[experiment]]
name = "forest32"
hidden = 32
frontend = { kind = "forest_pixels", n_pixels = 50, n_trees = 10 }
train_size = 10000
validation_size = 2000
max_epochs = 3
early_stopping = false
validation = "first"
"""
EXPERIMENTS = ("raw10", "raw80", "pca32", "forest32")
SEEDS = (0, 1)
STAGES = ("data", "frontend", "training", "evaluation", "report")  # data: the dataset's files open
# The plan, in the pipeline's order (a report kill lets the training finish). A stage with nothing
# left to do gives its turn to a stage not hit yet, else to the next stage of the pipeline.
KILLS = ("data", "frontend", "frontend", "evaluation", "training", "evaluation", "training", "data", "report",
         "report")
TRAINING_LINE, FIT_DONE, SEED_DONE = r"training \d+ network", r"fit \S+ front-end \((\w+)\): done", r"seed \d+ done"
TABLE_LINE = r"accuracy \(%\)"  # printed when training is over, before the report
REPORT_S = (0.5, 15.0)  # a kill in the report comes this long after the table (the report takes longer)


def training_seconds(output: Output) -> float:
    """How long the uninterrupted run trained once its front-ends were fitted."""
    fits_done = [t for t, line in output.lines if re.search(FIT_DONE, line)]
    seeds_done = [t for t, line in output.lines if re.search(SEED_DONE, line)]
    return max(seeds_done) - max(fits_done)


class Attempt:
    """One `mnist-study run` of the harness, with what its run directory held when it began."""

    def __init__(self, args: list[str], cwd: Path, run_dir: Path, data_dir: Path):
        self.run_dir, self.data_dir, self.data_open_at_kill = run_dir, data_dir, False
        self.pending_fits = [e for e in EXPERIMENTS if not (run_dir / "experiments" / e / "frontend.json").is_file()]
        self.unfinished = [run_dir / "experiments" / e / f"seed-{s}" for e in EXPERIMENTS for s in SEEDS
                           if not (run_dir / "experiments" / e / f"seed-{s}" / "metrics.json").is_file()]
        self.began = time.time()
        self.process = start(args, cwd)
        self.output = Output(self.process)

    def fits_done(self) -> bool:
        done = {m.group(1) for _, line in list(self.output.lines) if (m := re.search(FIT_DONE, line))}
        return set(self.pending_fits) <= done

    def writing_results(self) -> bool:
        """A seed's model is written and its metrics.json not yet: its evaluation is being saved."""
        for seed in self.unfinished:
            model = seed / "model.safetensors"
            try:
                if model.stat().st_mtime >= self.began and not (seed / "metrics.json").exists():
                    return True
            except FileNotFoundError:
                continue
        return False

    def reading_data(self) -> bool:
        """The main process has one of the dataset's files open."""
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{self.process.pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd).startswith(str(self.data_dir)):
                        return True
        return False

    def stage(self) -> str:
        """Where the run was when it was killed, from what it printed, read and wrote."""
        if self.output.first(TABLE_LINE) is not None:
            return "report"
        if self.output.first(TRAINING_LINE) is None:
            return "data" if self.data_open_at_kill else "start-up"
        if not self.fits_done():
            return "frontend"
        if self.writing_results():
            return "evaluation"
        if all((seed / "metrics.json").exists() for seed in self.unfinished):
            return "summary"  # trained, writing the manifest: before the table and the report
        return "training"


def kill_moment(target: str, attempt: Attempt, training_s: float, rng: random.Random) -> None:
    """Return at a random moment of stage `target` in this attempt."""
    out, process = attempt.output, attempt.process
    trained = lambda: out.first(TABLE_LINE) is not None  # noqa: E731
    if target == "data":
        wait_until(attempt.reading_data, process, lambda: out.first(TRAINING_LINE) is not None)
        time.sleep(rng.uniform(0, 0.05))
    elif target == "frontend":
        wait_until(lambda: out.first(r"front-end .*: started") is not None, process, trained)
        time.sleep(rng.uniform(0.05, 0.5))
    elif target == "training":
        if attempt.pending_fits:  # training starts as the front-ends are done
            wait_until(lambda: out.first(TRAINING_LINE) is not None and attempt.fits_done(), process, trained)
            time.sleep(rng.uniform(0.05, 0.35) * training_s)
        else:  # the workers are warm once a seed is done; the rest may be short
            wait_until(lambda: out.first(SEED_DONE) is not None, process, trained)
            time.sleep(rng.uniform(0.0, 0.2) * training_s)
    elif target == "evaluation":
        wait_until(attempt.writing_results, process, trained)
        time.sleep(rng.uniform(0, 0.002))
    else:
        wait_until(trained, process)
        time.sleep(rng.uniform(*REPORT_S))


def available(target: str, run_dir: Path) -> str:
    """`target`, or the next stage of the pipeline when nothing is left to do in it."""
    fits_left = any(not (run_dir / "experiments" / e / "frontend.json").is_file() for e in EXPERIMENTS)
    seeds_left = any(not (run_dir / "experiments" / e / f"seed-{s}" / "metrics.json").is_file()
                     for e in EXPERIMENTS for s in SEEDS)
    if target == "frontend" and not fits_left:
        target = "training"
    if target in ("training", "evaluation") and not seeds_left:
        target = "report"
    return target


@pytest.mark.faults
@pytest.mark.timeout(1800)
def test_killed_anywhere_a_run_resumes_to_the_same_results(tmp_path, real_mnist):
    seed = int(os.environ.get("MNIST_STUDY_FAULT_SEED", random.randrange(10**6)))
    rng = random.Random(seed)
    (tmp_path / "faults.toml").write_text(FAULT_STUDY)
    options = ["--workers", "2", "--device", "cpu", "--tsne-points", "100"]
    first_run = ["run", "faults.toml", "--seeds", "2", "--data-dir", str(real_mnist), *options]

    # The uninterrupted run, without the report (its results are what is compared; it saves a minute).
    reference = Attempt([*first_run, "--out", "reference", "--no-report"], tmp_path, tmp_path / "reference",
                        real_mnist)
    assert reference.process.wait(timeout=900) == 0, reference.output.text()
    training_s = training_seconds(reference.output)
    print(f"\nuninterrupted run: trained for {training_s:.1f} s after its front-ends", flush=True)

    run_dir, kills, finished_first = tmp_path / "killed", [], 0
    while len(kills) < len(KILLS):
        number, hit = len(kills), {k["stage"] for k in kills}
        target = available(KILLS[number], run_dir)
        not_hit = [stage for stage in STAGES if stage not in hit and available(stage, run_dir) == stage]
        if target != KILLS[number] and not_hit:
            target = not_hit[0]
        resumable = (run_dir / "study.json").is_file()
        args = ["run", "--resume", str(run_dir), *options] if resumable else [*first_run, "--out", str(run_dir)]
        attempt = Attempt(args, tmp_path, run_dir, real_mnist)
        kill_moment(target, attempt, training_s, rng)
        if attempt.process.poll() is not None:  # this machine was quicker than the uninterrupted run: again
            assert attempt.process.returncode == 0, attempt.output.text()
            finished_first += 1
            assert finished_first <= 5, f"runs keep ending before their kill:\n{attempt.output.text()}"
            continue
        whole_group = number % 2 == 0  # else the main process alone, as the OOM killer does
        at = time.monotonic() - attempt.output.started
        attempt.data_open_at_kill = attempt.reading_data()
        (os.killpg if whole_group else os.kill)(attempt.process.pid, signal.SIGKILL)
        attempt.process.wait()
        gone_in = assert_group_ends(attempt.process.pid)
        kills.append({"target": target, "stage": attempt.stage(), "at_s": round(at, 2),
                      "killed": "process group" if whole_group else "main process", "workers_gone_s": round(gone_in, 2),
                      "temporary_files_on_disk": assert_nothing_partial(run_dir)})
        print(f"kill {number + 1}: {kills[-1]}", flush=True)

    final = Attempt(["run", "--resume", str(run_dir), *options], tmp_path, run_dir, real_mnist)
    assert final.process.wait(timeout=900) == 0, final.output.text()
    assert "in use by" not in final.output.text()  # every dead run's lock was taken over
    assert not list(run_dir.rglob(f"*{files.TMP_SUFFIX}")) and assert_nothing_partial(run_dir) == 0
    assert load_run(run_dir).manifest["complete"] and (run_dir / "report.html").is_file()
    assert_same_results(run_dir, tmp_path / "reference")

    hit = {stage: sum(k["stage"] == stage for k in kills) for stage in STAGES}
    print(f"\nfault harness (MNIST_STUDY_FAULT_SEED={seed}): {len(kills)} kills survived; stages hit: {hit}; "
          f"{finished_first} attempts ended before their kill")
    for k in kills:
        print(f"  {k}")
    assert all(hit.values()), f"not every stage was hit (MNIST_STUDY_FAULT_SEED={seed}): {kills}"
