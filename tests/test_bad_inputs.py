"""Bad inputs meet clear errors: data files, images and study files a user might give us, and
networks whose training blows up.

Every entry of the corpus (tests/corpus/) goes through the command a user would give it, in this
process through typer's CliRunner, and a few through a real `mnist-study` process: each must end
in one line that names the problem and a non-zero exit, never a traceback, a hang or more than
1 GiB of memory. The focused tests below pin the fixes one by one.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import hashlib
import resource
import subprocess
import sys
import time
import tracemalloc
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from corpus import CASES, IMAGE_CASES, count_by_kind
from corpus.idx_cases import header, write_dataset, zeros_gz
from corpus.image_cases import digit, encoded, exif_rotated_jpeg
from mnist_study import cli
from mnist_study.cli import app
from mnist_study.data.idx import parse_idx, read_idx, read_idx_file, sha256_uncompressed
from mnist_study.data.sources import load_dataset
from mnist_study.errors import DataError, StudyError
from mnist_study.report.sections import _training_summary
from mnist_study.report.summary import accuracy_rows
from mnist_study.results import load_run
from mnist_study.serving.preprocess import preprocess
from mnist_study.studies import parse_study
from mnist_study.tasks import divergence
from mnist_study.training import fused
from mnist_study.training.model import init_params
from mnist_study.training.optimizers import RMSpropConfig
from mnist_study.training.trainer import Split, StackedTrainer, TrainConfig, train_seeds

runner = CliRunner()
GIB = 1 << 30
MIB = 1 << 20
ROOT = Path(__file__).resolve().parents[1]

_NO_KERNEL = fused.missing_tools()
PATHS = pytest.mark.parametrize("use_fused", [
    pytest.param(True, id="fused", marks=pytest.mark.skipif(bool(_NO_KERNEL), reason=f"{_NO_KERNEL}")),
    pytest.param(False, id="eager"),
])


# ------------------------------------------------------------------------------ memory and output

def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


@contextmanager
def peak_growth():
    """Yields a dict whose "bytes" becomes how far this process's peak memory rose above where it
    stood at the start. On Linux the peak (VmHWM) is reset first, so each use measures itself."""
    reset = True
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # "5": reset the peak resident set size to the current one
    except OSError:
        reset = False
    before = _status_kib("VmRSS") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    measured: dict[str, int] = {}
    yield measured
    after = _status_kib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    measured["bytes"] = max(0, (after - before)) * 1024


def assert_one_line_error(stderr: str, expect: str) -> None:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got:\n{stderr}"
    assert expect in lines[0], f"{expect!r} not in {lines[0]!r}"
    assert "Traceback" not in stderr


def command(case, path: Path, folder: Path, tiny_run: Path, tiny_data: Path) -> list[str]:
    """The mnist-study arguments a user would give `case`'s input (its run, if any, under `folder`).

    A fine image's answer is read as JSON; a bad one's reason from stderr, under the table."""
    if case.kind == "idx":
        return ["data", "--data-dir", str(path)]
    if case.kind == "image":
        return ["predict", str(tiny_run), str(path), *(["--format", "json"] if case.expect is None else [])]
    return ["run", str(path), "--out", str(folder / "run"), "--data-dir", str(tiny_data), "--workers", "0",
            "--no-report"]


# ----------------------------------------------------------------------------------- the corpus

def test_corpus_is_large_and_named_once():
    names = [case.name for case in CASES]
    assert len(names) == len(set(names))
    counts = count_by_kind()
    assert len(CASES) >= 100 and min(counts.values()) >= 30, counts


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_every_bad_input_ends_in_one_clear_line(case, tmp_path, tiny_run, tiny_data, monkeypatch):
    path = case.make(tmp_path / "input")
    # `predict` prints a failed image's reason without soft wrap, so Rich breaks it at the console's
    # width (80 columns under CliRunner): give it a terminal wide enough for the long temporary path.
    monkeypatch.setattr(cli.err, "width", 1000)
    with peak_growth() as memory:
        start = time.perf_counter()
        result = runner.invoke(app, command(case, path, tmp_path, tiny_run, tiny_data))
        seconds = time.perf_counter() - start
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert memory["bytes"] < GIB, f"{case.name}: memory grew by {memory['bytes'] / MIB:.0f} MiB"
    assert seconds < 20, f"{case.name}: took {seconds:.1f} s"
    if case.expect is None:  # fine after all: the network gives its answer
        assert result.exit_code == 0, result.output
        [row] = json.loads(result.stdout)
        assert row["digit"] in range(10) and not row.get("error"), row
        return
    assert result.exit_code != 0
    if case.kind == "image":
        assert result.exit_code == 1  # the table is printed; the failed row's reason is on stderr
    else:
        assert result.exit_code == 2 and result.stderr.startswith("error:")
    assert_one_line_error(result.stderr, case.expect)
    if case.kind == "study":
        assert not list((tmp_path / "run").rglob("metrics.json"))  # refused before any training


def _wait(process: subprocess.Popen, timeout: float) -> tuple[int, int]:
    """(exit status, peak resident memory in bytes) of `process`; a failure after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)  # wait4: this child's own peak memory
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: tell Popen
            return process.returncode, usage.ru_maxrss * 1024
        if time.monotonic() > deadline:
            pytest.fail(f"{process.args} still running after {timeout} s")
        time.sleep(0.05)


SUBPROCESS_CASES = ["idx-bomb-behind-images", "image-png-50000x50000-declared", "study-million-experiments"]


@pytest.mark.timeout(180)
def test_some_bad_inputs_through_real_processes(tmp_path, tiny_run, tiny_data):
    """The real command, started as a user starts it: one line on stderr, exit status 2 (1 for a
    failed image), no traceback, under 1 GiB. The processes run side by side, to save time."""
    by_name = {case.name: case for case in CASES}
    started = []
    try:
        for name in SUBPROCESS_CASES:
            case, folder = by_name[name], tmp_path / name
            args = command(case, case.make(folder / "input"), folder, tiny_run, tiny_data)
            with open(folder / "stderr", "w") as err:  # the child keeps its own copy of the descriptor
                # COLUMNS: as wide a terminal as the long temporary paths need (see the test above)
                started.append((case, folder, subprocess.Popen(
                    [sys.executable, "-m", "mnist_study.cli", *args], stdout=subprocess.DEVNULL, stderr=err,
                    cwd=ROOT, env={**os.environ, "COLUMNS": "1000"})))
        for case, folder, process in started:
            status, peak = _wait(process, timeout=150)
            stderr = (folder / "stderr").read_text()
            assert status == (1 if case.kind == "image" else 2), stderr
            assert peak < GIB, f"{case.name}: {peak / MIB:.0f} MiB"
            assert_one_line_error(stderr, case.expect)
    finally:
        for _, _, process in started:
            if process.returncode is None:
                process.kill()
                process.wait()


# -------------------------------------------------------------------------- fine, if surprising

def _difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


@pytest.mark.parametrize("case", [c for c in IMAGE_CASES if c.expect is None], ids=str)
def test_awkward_but_fine_images_give_the_digit(case, tmp_path):
    """16-bit, CMYK, palette, animated and EXIF-rotated copies of a 7 give the 7's input."""
    plain = preprocess(encoded(digit(), "PNG"))
    seen = preprocess(case.make(tmp_path))
    assert seen.shape == (28, 28) and seen.dtype == np.float32
    assert _difference(seen, plain) < 0.03, f"{case.name} differs from the plain digit"


def test_exif_rotation_is_applied_not_ignored():
    rotated = exif_rotated_jpeg()
    upright = preprocess(rotated)
    plain = preprocess(encoded(digit(), "PNG"))
    as_stored = preprocess(np.asarray(digit().transpose(Image.Transpose.ROTATE_90)))  # the pixels as stored
    assert _difference(upright, plain) < 0.03
    assert _difference(as_stored, plain) > 0.1  # so the check above can tell a turned digit apart


# ------------------------------------------------------------------------------------ IDX files

BOMB_ZEROS = 200 * MIB


def test_gzip_bomb_is_refused_after_the_declared_bytes(tmp_path):
    """200 MB of zeros behind a valid 20-label header: refused as trailing data, reading only the
    20 declared bytes and a little more, not the whole stream (which once took 2.2x its size)."""
    labels = header(20) + bytes(range(10)) * 2
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(zeros_gz(labels, BOMB_ZEROS))
    tracemalloc.start()
    try:
        start = time.perf_counter()
        with pytest.raises(DataError, match="more than 1048576 bytes of trailing garbage after the 20 = 20 bytes"):
            read_idx(path, ndim=1)
        seconds = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * MIB, f"peak {peak / MIB:.0f} MiB"
    assert seconds < 5


def test_a_honest_but_huge_file_is_refused_before_its_payload_is_read(tmp_path):
    """A labels file that really holds 200 MB of labels, beside 20 images: the headers disagree,
    so nothing of the payload is read."""
    write_dataset(tmp_path, {"train-labels-idx1-ubyte": zeros_gz(header(BOMB_ZEROS), BOMB_ZEROS)})
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=f"has {BOMB_ZEROS} labels but .* has 20 images"):
            load_dataset(tmp_path, download=False, progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * MIB, f"peak {peak / MIB:.0f} MiB"


@pytest.mark.parametrize("compress", [False, True])
def test_lying_dimensions_allocate_nothing_of_their_size(compress):
    data = header(2**32 - 1, 2**32 - 1, 28) + bytes(1000)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="truncated"):
            parse_idx(gzip.compress(data) if compress else data, "lies.idx", ndim=3)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MIB


def test_streamed_digest_is_of_the_uncompressed_bytes(tmp_path):
    content = header(3, 28, 28) + bytes(range(256)) * 9 + bytes(3 * 784 - 256 * 9)
    (tmp_path / "a.gz").write_bytes(gzip.compress(content))
    (tmp_path / "a").write_bytes(content)
    expected = hashlib.sha256(content).hexdigest()
    assert read_idx_file(tmp_path / "a.gz").sha256 == read_idx_file(tmp_path / "a").sha256 == expected
    assert sha256_uncompressed(tmp_path / "a.gz") == expected


def test_labels_outside_the_classes_name_the_file_and_index(tmp_path):
    labels = np.arange(20, dtype=np.uint8) % 10
    labels[13] = 200
    write_dataset(tmp_path, {"train-labels-idx1-ubyte": header(20) + labels.tobytes()})
    with pytest.raises(DataError) as caught:
        load_dataset(tmp_path, download=False, progress=False)
    message = str(caught.value)
    assert str(tmp_path / "train-labels-idx1-ubyte") in message
    assert "outside the classes 0-9" in message and "first at index 13 (value 200)" in message
    result = runner.invoke(app, ["data", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "first at index 13" in result.stderr


# ---------------------------------------------------------------------------------- study files

GOOD = 'name = "s"\n[[experiment]]\nname = "a"\nhidden = 8\n'


@pytest.mark.parametrize("depth", [50, 2000, 100_000])
def test_deep_nesting_is_a_study_error_not_a_recursion_error(depth):
    text = GOOD + "title = " + "[" * depth + "]" * depth + "\n"
    with pytest.raises(StudyError, match="nest"):
        parse_study(text, "deep.toml")


@pytest.mark.parametrize("where, text", [
    ("experiment 'a' > learning_rate is inf", GOOD + "learning_rate = inf\n"),
    ("experiment 'a' > learning_rate is nan", GOOD + "learning_rate = nan\n"),
    ("experiment 'a' > l2 is -inf", GOOD + "l2 = -inf\n"),
    ("experiment 'a' > reference > test is inf", GOOD + "reference = { test = inf }\n"),
    ("experiment 'a' > frontend > variance is nan", GOOD + 'frontend = { kind = "pca", variance = nan }\n'),
    ("claim 'c' > margin is inf", GOOD + '[[claim]]\nname = "c"\ntext = "t"\nchecks = ["a.test > 1"]\nmargin = inf\n'),
    ("unused is nan", "unused = nan\n" + GOOD),  # refused before the unknown key: no number may be non-finite
    ("every_experiment > learning_rate is inf", 'name = "s"\nextends = "quick"\n[every_experiment]\nlearning_rate = inf\n'),
])
def test_non_finite_numbers_are_refused_naming_the_key(where, text):
    with pytest.raises(StudyError, match="numbers in a study must be finite") as caught:
        parse_study(text, "s.toml")
    assert f"s.toml: {where}" in str(caught.value)


def test_a_million_experiments_are_refused_before_any_is_built(tmp_path):
    study = tmp_path / "huge.toml"
    study.write_text('name = "huge"\n' + "".join(f'[[experiment]]\nname = "e{i}"\nhidden = 1\n'
                                                  for i in range(1_000_000)))
    start = time.perf_counter()
    result = runner.invoke(app, ["run", str(study), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "a study file may have at most" in result.stderr
    assert time.perf_counter() - start < 2


# ----------------------------------------------------------------------------- divergence

def _data(n=200, d=30, seed=0) -> Split:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    x = torch.rand(n, d, generator=g) * 0.5
    x[torch.arange(n), y] += 1.0
    return Split(x, y)


@PATHS
@pytest.mark.parametrize("keep", ["best_val_loss", "final"])
def test_a_huge_learning_rate_diverges_and_keeps_the_initial_weights(use_fused, keep):
    config = TrainConfig(hidden=6, max_epochs=5, keep=keep, early_stopping=keep == "best_val_loss",
                         optimizer=RMSpropConfig(lr=1e6))
    results = train_seeds(config, _data(), _data(60, seed=1), [0, 1], use_fused=use_fused)
    for result in results:
        assert result.diverged_epoch == 1 and result.epochs_run == 0 and result.best_epoch == 0
        assert result.history["loss"] == []
        for name, value in init_params(30, 6, result.seed).items():
            torch.testing.assert_close(result.params[name], value)  # the weights before epoch 1


class PoisonedTrainer(StackedTrainer):
    """Reports a NaN training loss for one seed in one epoch, as a blown-up network would."""

    def __init__(self, *args, poison: tuple[int, int], **kwargs):
        super().__init__(*args, **kwargs)
        self.poison, self.epoch = poison, 0

    def train_epoch(self, train):
        loss, accuracy = super().train_epoch(train)
        self.epoch += 1
        seed, epoch = self.poison
        if self.epoch == epoch:
            loss = loss.clone()
            loss[[s.seed for s in self.active].index(seed)] = math.nan
        return loss, accuracy


@PATHS
@pytest.mark.parametrize("keep", ["best_val_loss", "final"])
def test_a_seed_that_diverges_later_keeps_its_last_finite_weights_and_the_rest_train_on(use_fused, keep):
    train, val = _data(), _data(60, seed=1)
    config = TrainConfig(hidden=6, max_epochs=5, keep=keep, early_stopping=False)
    trainer = PoisonedTrainer(config, 30, [0, 1, 2], torch.device("cpu"), use_fused, poison=(1, 3))
    poisoned = trainer.fit(train, val)
    clean = train_seeds(config, train, val, [0, 1, 2], use_fused=use_fused)
    two_epochs = train_seeds(TrainConfig(hidden=6, max_epochs=2, keep=keep, early_stopping=False), train, val,
                             [0, 1, 2], use_fused=use_fused)
    diverged = poisoned[1]
    assert diverged.diverged_epoch == 3 and diverged.epochs_run == 2
    assert diverged.history == two_epochs[1].history  # the finite epochs, and nothing of epoch 3
    assert diverged.best_epoch == two_epochs[1].best_epoch <= 2
    for name, value in two_epochs[1].params.items():
        torch.testing.assert_close(diverged.params[name], value, rtol=1e-5, atol=1e-6)
    for index in (0, 2):  # the others never notice
        assert poisoned[index].diverged_epoch is None and poisoned[index].epochs_run == 5
        np.testing.assert_allclose(poisoned[index].history["val_loss"], clean[index].history["val_loss"], rtol=1e-5)
    record = divergence(diverged)
    assert record == {"epoch": 3, "last_finite_epoch": 2,
                      "last_finite": {key: values[-1] for key, values in two_epochs[1].history.items()}}
    assert divergence(poisoned[0]) is None


WILD_STUDY = """
name = "wild"

[[experiment]]
name = "wild"
hidden = 8
learning_rate = 1000.0
max_epochs = 3
validation_size = 200

[[experiment]]
name = "calm"
hidden = 8
max_epochs = 2
validation_size = 200
"""

METRICS_FIELDS = {"experiment", "seed", "accuracy", "loss", "epochs_run", "best_epoch", "train_seconds",
                  "evaluate_seconds", "seeds_trained_together", "device"}


def test_a_diverging_network_is_recorded_and_shown_not_a_crashed_run(tmp_path, tiny_data):
    study = tmp_path / "wild.toml"
    study.write_text(WILD_STUDY)
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", str(study), "--out", str(out), "--data-dir", str(tiny_data), "--workers", "0",
                                 "--no-report", "--seeds", "2"])
    assert result.exit_code == 0, result.output
    assert "0 (diverged)" in result.stdout  # the epochs cell (no_wrap); the caption may wrap:
    assert "diverged: the loss became NaN or infinite" in " ".join(result.stdout.split())
    metrics = json.loads((out / "experiments" / "wild" / "seed-0" / "metrics.json").read_text())
    assert METRICS_FIELDS <= set(metrics)  # the fields a run always had are all still there
    assert metrics["diverged"] == {"epoch": 1, "last_finite_epoch": 0, "last_finite": None}
    assert metrics["epochs_run"] == 0 and metrics["best_epoch"] == 0
    assert all(math.isfinite(v) for v in metrics["loss"].values())  # the kept (initial) weights evaluate
    calm = json.loads((out / "experiments" / "calm" / "seed-0" / "metrics.json").read_text())
    assert calm["diverged"] is None and calm["epochs_run"] == 2
    shown = json.loads(runner.invoke(app, ["show", str(out), "--format", "json"]).stdout)
    assert {row["experiment"]: row["diverged"] for row in shown["experiments"]} == {"wild": [1, 1],
                                                                                     "calm": [None, None]}
    rows = {row.experiment: row for row in accuracy_rows(load_run(out))}
    assert rows["wild"].epochs_text == "0 (diverged)" and rows["calm"].epochs_text == "2"
    assert "DIVERGED in epoch 1" in _training_summary(metrics)
    assert "DIVERGED" not in _training_summary(calm)


def test_runs_made_before_divergence_was_recorded_still_show():
    old = {"epochs_run": 4, "best_epoch": 3}
    assert _training_summary(old) == "4 epochs, weights of epoch 3 kept"
