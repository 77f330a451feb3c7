"""The command line: thin, helpful, and clear about mistakes."""

import json

import pytest
from typer.testing import CliRunner

from mnist_study.cli import app

from conftest import TINY_STUDY

runner = CliRunner()


def test_help_teaches():
    result = runner.invoke(app, ["run", "--help"])
    assert result.exit_code == 0
    for flag in ("--seeds", "--resume", "--device", "--data-dir", "--out", "--workers"):
        assert flag in result.output


def test_run_show_and_json(tmp_path, tiny_data):
    study = tmp_path / "tiny.toml"
    study.write_text(TINY_STUDY)
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", str(study), "--data-dir", str(tiny_data), "--out", str(out),
                                 "--workers", "0", "--no-report", "--seed", "0"])
    assert result.exit_code == 0, result.output
    assert "raw8" in result.output and "forest8" in result.output
    shown = runner.invoke(app, ["show", str(out), "--format", "json"])
    data = json.loads(shown.output)
    assert [e["experiment"] for e in data["experiments"]] == ["raw8", "pca8", "forest8"]
    assert 0 <= data["experiments"][0]["test"]["mean"] <= 100
    assert data["missing"] == []


def test_study_typo_is_a_clear_error(tmp_path):
    study = tmp_path / "typo.toml"
    study.write_text(TINY_STUDY.replace("max_epochs = 6", "max_epoch = 6"))
    result = runner.invoke(app, ["run", str(study), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "typo.toml" in result.output and "max_epoch" in result.output and "unknown key" in result.output
    assert not (tmp_path / "r").exists()  # rejected before any work


def test_show_of_a_non_run_says_what_to_give(tmp_path):
    result = runner.invoke(app, ["show", str(tmp_path)])
    assert result.exit_code == 2 and "not a run directory" in result.output


def test_data_command_reports_digests(tiny_data):
    result = runner.invoke(app, ["data", "--data-dir", str(tiny_data)])
    assert result.exit_code == 0, result.output
    assert "train-images-idx3-ubyte" in result.output and "not a dataset we know" in result.output


def test_compare_two_runs(tiny_run):
    result = runner.invoke(app, ["compare", str(tiny_run), str(tiny_run), "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert {r["experiment"] for r in rows} == {"raw8", "pca8", "forest8"}
    assert all(r["difference"] == 0 for r in rows)


def test_predict_files_as_json(tmp_path, tiny_run):
    from PIL import Image

    from conftest import synthetic_digits

    images, labels = synthetic_digits(4, seed=5)
    for i, image in enumerate(images):
        Image.fromarray(255 - image).resize((112, 112)).save(tmp_path / f"digit{i}.png")  # dark ink on white
    (tmp_path / "notes.png").write_bytes(b"not an image at all")
    result = runner.invoke(app, ["predict", str(tiny_run), str(tmp_path), "--format", "json", "-e", "raw8"])
    assert result.exit_code == 1  # one file failed; the others are still answered
    rows = json.loads(result.stdout)
    good = [r for r in rows if r["digit"] is not None]
    assert len(good) == 4
    assert any("notes.png" in json.dumps(r) for r in rows)


def test_data_command_finds_fashion_mnist_by_name():
    from mnist_study.data.datasets import FASHION_SYSTEM_DIR

    if not FASHION_SYSTEM_DIR.is_dir():
        pytest.skip("needs Fashion-MNIST (apt-get install dataset-fashion-mnist)")
    result = runner.invoke(app, ["data", "--dataset", "fashion-mnist"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("fashion-mnist in ") and "verified" in result.output
    typo = runner.invoke(app, ["data", "--dataset", "fasion-mnist"])
    assert typo.exit_code == 2 and "Did you mean 'fashion-mnist'?" in typo.output


def test_a_runaway_seed_count_is_refused_before_any_work(tmp_path):
    result = runner.invoke(app, ["run", "quick", "--seeds", "50000", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "--seeds" in result.output and "1000" in result.output
    assert not (tmp_path / "r").exists()
