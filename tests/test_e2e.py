"""End to end on the real MNIST: the quick study (the paper's ten shapes, reduced) from the CLI."""

import json

import pytest
from typer.testing import CliRunner

from mnist_study.cli import app
from mnist_study.results import load_run

pytestmark = pytest.mark.slow


def test_quick_study_on_real_mnist(tmp_path, real_mnist):
    out = tmp_path / "quick"
    result = CliRunner().invoke(app, ["run", "quick", "--data-dir", str(real_mnist), "--out", str(out),
                                      "--workers", "2", "--no-report"])
    assert result.exit_code == 0, result.output
    run = load_run(out)
    assert run.manifest["data"]["verified"] is True and run.manifest["complete"]
    test = {e: v[0] for e, v in run.values("test").items()}
    # 10,000 images and 4 epochs: well above chance, and width helps as in the paper
    assert test["exp1"] > 15 and test["exp2"] > 30
    assert all(test[f"exp{i}"] > 85 for i in range(3, 11))
    assert test["exp8"] > test["exp3"]
    assert run.frontend("exp10").transform(np_zeros()).shape == (1, 70)
    shown = json.loads(CliRunner().invoke(app, ["show", str(out), "--format", "json"]).output)
    assert shown["experiments"][5]["test"]["reference"] == 97.1


def np_zeros():
    import numpy as np

    return np.zeros((1, 784), np.float32)


def test_resume_refuses_other_data(tmp_path, real_mnist, tiny_data, tiny_study):
    from mnist_study.errors import RunError
    from mnist_study.runner import resume_run, run_study

    out = run_study(tiny_study, seeds=[0], device="cpu", data_dir=tiny_data, out=tmp_path / "r", workers=0,
                    progress=False)
    with pytest.raises(RunError, match="other mnist data"):
        resume_run(out, data_dir=real_mnist, workers=0, progress=False)


FASHION = "/usr/share/datasets/fashion-mnist"


def test_fashion_mnist_runs_with_data_dir(tmp_path):
    from pathlib import Path

    from mnist_study.runner import run_study
    from mnist_study.studies import parse_study

    if not Path(FASHION).is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    study = parse_study('name = "fashion"\n[[experiment]]\nname = "h64"\nhidden = 64\nmax_epochs = 2\n'
                        'train_size = 5000\n')
    run = load_run(run_study(study, device="cpu", data_dir=FASHION, out=tmp_path / "f", workers=0,
                             progress=False))
    assert run.manifest["data"]["verified"] is False  # not MNIST: digests reported, not required
    assert len(run.manifest["data"]["digests"]) == 4
    assert run.values("test")["h64"][0] > 60  # well above chance (10%) on clothing images
