"""End to end on the real MNIST (and Fashion-MNIST): a study file that uses every option of the design
language, a sweep and a claim over swept fields, run from the CLI, shown, reported and opened in Chromium."""

import json
from pathlib import Path

import numpy as np
import pytest
from browser import check_report, needs_chromium
from safetensors.numpy import load_file
from typer.testing import CliRunner

from mnist_study.cli import app
from mnist_study.data.datasets import FASHION_SYSTEM_DIR
from mnist_study.results import load_run
from mnist_study.training.model import MLP

pytestmark = pytest.mark.slow

EVERY_OPTION = Path(__file__).parent / "studies" / "every_option.toml"


@pytest.fixture(scope="module")
def every_option_run(tmp_path_factory, real_mnist):
    if not FASHION_SYSTEM_DIR.is_dir():
        pytest.skip("needs Fashion-MNIST (apt-get install dataset-fashion-mnist)")
    out = tmp_path_factory.mktemp("every") / "run"
    result = CliRunner().invoke(app, ["run", str(EVERY_OPTION), "--seeds", "2", "--data-dir", str(real_mnist),
                                      "--out", str(out), "--workers", "2", "--tsne-points", "300"])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_every_option_trains_and_is_recorded(every_option_run):
    out, output = every_option_run
    run = load_run(out)
    assert run.manifest["complete"] and not run.missing()
    assert run.manifest["datasets"]["fashion-mnist"]["verified"] is True
    assert run.manifest["datasets"]["mnist"]["verified"] is True
    test = {name: np.mean(values) for name, values in run.values("test").items()}
    assert all(value > 20 for value in test.values()), test  # chance is 10%: every network learned something

    deep = MLP.load(out / "experiments" / "deep-tanh-adam" / "seed-0" / "model.safetensors")
    assert (deep.layers, deep.activation) == ((32, 16), "tanh") and "input.mean" in deep.params
    flat = MLP.load(out / "experiments" / "softmax-regression" / "seed-0" / "model.safetensors")
    assert flat.depth == 0 and flat.n_inputs == 70  # softmax regression on the forest's 70 pixels
    cnn = MLP.load(out / "experiments" / "cnn" / "seed-0" / "model.safetensors")
    assert (cnn.conv, cnn.layers, cnn.n_inputs) == ((4, 8), (16,), 784)
    assert cnn.params["conv2.kernel"].shape == (8, 4, 3, 3)

    # label noise: exactly 20% of the 2,000 training labels replaced, each by another class, recorded
    split = load_file(out / "experiments" / "sgd-squared-noisy" / "split.safetensors")
    assert len(split["train_indices"]) == 2000 and len(split["flipped_indices"]) == 400
    from mnist_study.data.sources import load_dataset

    labels = load_dataset(run.manifest["datasets"]["mnist"]["source"], download=False, progress=False).train_labels
    assert (labels[split["flipped_indices"]] != split["flipped_labels"]).all()
    # validation = "first": the training subset is drawn from images 1,000 onwards
    assert split["train_indices"].min() >= 1000
    # class-stratified: each digit's share of the subset within one image of its share of the pool
    pool = labels[1000:]
    counts = np.bincount(labels[split["train_indices"]], minlength=10)
    assert np.all(np.abs(counts - 2000 * np.bincount(pool, minlength=10) / len(pool)) <= 1)

    # the squared-error network reports the loss it was trained with: far below cross-entropy's scale
    metrics = json.loads((out / "experiments" / "sgd-squared-noisy" / "seed-0" / "metrics.json").read_text())
    assert metrics["diverged"] is None and 0 < metrics["loss"]["test"] < 1.0
    history = json.loads((out / "experiments" / "fashion" / "seed-0" / "history.json").read_text())
    assert len(history["loss"]) == 2  # keep = "final", no early stopping cut


def test_the_sweep_and_its_claim_are_shown(every_option_run):
    out, output = every_option_run
    assert "effects on test accuracy" in output and "best configuration" in output
    shown = json.loads(CliRunner().invoke(app, ["show", str(out), "--format", "json"]).output)
    swept = {r["experiment"]: r["swept"] for r in shown["experiments"]}
    assert swept["w24-adam-lr0.002"] == {"hidden": 24, "optimizer": "adam", "learning_rate": 0.002}
    assert swept["deep-tanh-adam"] == {}
    (sweep,) = shown["sweeps"]
    assert sweep["name"] == "grid" and sweep["n_networks"] == 8
    (claim,) = shown["claims"]
    assert len(claim["checks"]) == 2  # one per width: w8 and w24
    assert {c["check"].split(" ")[0] for c in claim["checks"]} == {"w8-adam-lr0.002.test", "w24-adam-lr0.002.test"}


def test_the_report_shows_the_sweep(every_option_run):
    out, _ = every_option_run
    html = (out / "report.html").read_text()
    assert 'id="sweep"' in html and "Only some networks are looked inside" in html
    assert "first of 2 hidden layers" in html or "deep-tanh-adam" in html


@pytest.mark.browser
@needs_chromium
def test_the_sweep_report_renders_in_headless_chromium(every_option_run, tmp_path):
    out, _ = every_option_run
    check_report(out / "report.html", tmp_path, min_sweep_images=2)  # a plot per swept field at least


def test_the_report_looks_inside_the_experiments_picked(every_option_run):
    out, _ = every_option_run
    result = CliRunner().invoke(app, ["report", str(out), "--analyse", "softmax-regression", "--analyse", "fashion",
                                      "--tsne-points", "300", "--workers", "0"])
    assert result.exit_code == 0, result.output
    html = (out / "report.html").read_text()
    assert "picked with <code>--analyse</code>" in html and 'id="exp-fashion"' in html
    typo = CliRunner().invoke(app, ["report", str(out), "--analyse", "fashon"])
    assert typo.exit_code == 2 and "no such experiment" in typo.output
