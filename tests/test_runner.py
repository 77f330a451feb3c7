"""Running a study: results on disk, provenance, and nothing lost to an interruption."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mnist_study.errors import OptionError, RunError
from mnist_study.results import load_run
from mnist_study.runner import resume_run, run_study
from mnist_study.studies import parse_study

from conftest import KILLABLE_STUDY, TINY_STUDY

SEED_FILES = {"model.safetensors", "evaluation.safetensors", "history.json", "classification_report.json",
              "metrics.json"}


def test_run_writes_every_result(tiny_run):
    run = load_run(tiny_run)
    assert run.missing() == []
    for e in run.experiments:
        assert (tiny_run / "experiments" / e.name / "frontend.safetensors").is_file()
        results = run.results(e.name)
        assert [r.seed for r in results] == [0, 1]
        for r in results:
            assert {p.name for p in r.path.iterdir()} == SEED_FILES
            assert r.confusion.shape == (10, 10) and r.confusion.sum() == 300
            assert r.test_proba.shape == (300, 10)
            np.testing.assert_allclose(r.test_proba.sum(1), 1, rtol=1e-5)
            assert r.metrics["epochs_run"] == len(r.history["loss"])
            assert set(r.classification_report) >= {"0", "9", "accuracy", "macro avg"}
            # the saved model reproduces the saved test accuracy
            x, y = _test_inputs(run, e.name)
            assert (r.model().predict(x) == y).mean() == pytest.approx(r.metrics["accuracy"]["test"])
        assert results[0].metrics["accuracy"]["test"] > 0.4  # the tiny data is learnable (chance: 0.1)
    # seeds differ
    a, b = run.results("raw8")
    assert a.history != b.history


def _test_inputs(run, experiment):
    from mnist_study.data.sources import load_dataset
    from mnist_study.data.splits import flatten_scaled

    data = load_dataset(run.manifest["data"]["source"], download=False, progress=False)
    return run.frontend(experiment).transform(flatten_scaled(data.test_images)), data.test_labels


def test_manifest_records_provenance(tiny_run):
    manifest = json.loads((tiny_run / "manifest.json").read_text())
    assert manifest["complete"] is True
    assert manifest["seeds"] == [0, 1]
    assert manifest["data"]["verified"] is False  # synthetic data: digests reported, not required
    assert set(manifest["data"]["digests"]) == {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                                "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}
    assert {"torch", "numpy", "scikit-learn", "python"} <= set(manifest["versions"])
    assert manifest["device"].startswith("cpu")
    assert "data" in manifest["stages"] and "train/raw8" in manifest["stages"]
    assert any(k.startswith("frontend/pca") for k in manifest["stages"])
    study = json.loads((tiny_run / "study.json").read_text())
    assert [e["name"] for e in study["experiment"]] == ["raw8", "pca8", "forest8"]


def test_resume_of_a_finished_run_does_nothing(tiny_run):
    before = {p: p.stat().st_mtime_ns for p in tiny_run.rglob("metrics.json")}
    resume_run(tiny_run, device="cpu", workers=0, progress=False)
    assert {p: p.stat().st_mtime_ns for p in tiny_run.rglob("metrics.json")} == before


def test_worker_processes_give_the_same_results(tmp_path, tiny_data, tiny_study, tiny_run):
    parallel = run_study(tiny_study, seeds=[0, 1], device="cpu", data_dir=tiny_data, out=tmp_path / "p",
                         workers=2, progress=False)
    _assert_same_results(load_run(parallel), load_run(tiny_run))


def _assert_same_results(a, b):
    for e in a.experiments:
        for ra, rb in zip(a.results(e.name), b.results(e.name), strict=True):
            assert ra.metrics["accuracy"] == rb.metrics["accuracy"]
            assert ra.metrics["loss"] == rb.metrics["loss"]
            assert ra.history == rb.history


def test_a_killed_run_resumes_to_the_same_results(tmp_path, tiny_data):
    study_text = KILLABLE_STUDY
    (tmp_path / "s.toml").write_text(study_text)
    out = tmp_path / "killed"
    code = ("from mnist_study.runner import run_study; "
            f"run_study({str(tmp_path / 's.toml')!r}, seeds=[0, 1], device='cpu', data_dir={str(tiny_data)!r}, "
            f"out={str(out)!r}, workers=0, progress=False)")
    process = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    deadline = time.time() + 120
    while not list(out.glob("experiments/*/seed-*/metrics.json")) and time.time() < deadline:
        assert process.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    interrupted = load_run(out)
    assert 0 < len(interrupted.missing()) < 8, interrupted.missing()

    resume_run(out, device="cpu", workers=0, progress=False)
    reference = run_study(parse_study(study_text), seeds=[0, 1], device="cpu", data_dir=tiny_data,
                          out=tmp_path / "whole", workers=0, progress=False)
    resumed = load_run(out)
    assert resumed.missing() == [] and resumed.manifest["complete"]
    _assert_same_results(resumed, load_run(reference))
    assert not list(out.rglob("*.tmp"))


def test_out_dir_must_be_a_run_or_empty(tmp_path, tiny_data, tiny_study):
    (tmp_path / "stuff.txt").write_text("mine")
    with pytest.raises(RunError, match="not a run directory"):
        run_study(tiny_study, out=tmp_path, data_dir=tiny_data, workers=0, progress=False)
    with pytest.raises(RunError, match="not a run directory"):
        resume_run(tmp_path / "nothing-here", workers=0, progress=False)


def test_resume_refuses_a_different_study(tiny_run, tiny_data):
    other = parse_study(TINY_STUDY.replace('name = "tiny"', 'name = "other"'))
    with pytest.raises(RunError, match="different study"):
        run_study(other, out=tiny_run, data_dir=tiny_data, workers=0, progress=False)


def test_bad_seeds_and_device(tiny_study, tmp_path):
    with pytest.raises(OptionError, match="seeds"):
        run_study(tiny_study, seeds=[1, 1], out=tmp_path / "x", workers=0, progress=False)
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(RunError, match="no CUDA"):
            run_study(tiny_study, device="cuda", out=tmp_path / "y", workers=0, progress=False)
