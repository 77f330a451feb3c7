"""Damaged run directories: every reader names the file and what is wrong; a resume redoes just that.

A result file can be cut short (a full disk before atomic writes, a copy interrupted, a sync tool)
or garbled (edited by hand, bad storage). Readers must say which file and what is wrong, in one
line and without a traceback; `--resume` must treat the seed or front-end it belongs to as missing
and redo only that, giving back the same bytes.
"""

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from mnist_study.cli import app
from mnist_study.errors import RunError
from mnist_study.integrity import file_problem, safetensors_problem
from mnist_study.results import is_finished, load_run
from mnist_study.runner import resume_run

runner = CliRunner()

SEED = "experiments/pca8/seed-1"
DAMAGEABLE = [f"{SEED}/metrics.json", f"{SEED}/history.json", f"{SEED}/classification_report.json",
              f"{SEED}/model.safetensors", f"{SEED}/evaluation.safetensors",
              "experiments/pca8/frontend.json", "experiments/pca8/frontend.safetensors"]


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def garble(path: Path) -> None:
    """Overwrite the start of the file: a JSON document, or a safetensors header, that no longer parses."""
    data = bytearray(path.read_bytes())
    data[8:40] = b"\x00\xff garbled by a bad disk \xfe\x01"[:32].ljust(32, b"#")
    path.write_bytes(bytes(data))


def empty(path: Path) -> None:
    path.write_bytes(b"")


DAMAGES = {"truncated": truncate, "garbled": garble, "empty": empty}


@pytest.fixture
def damaged_copy(tmp_path, tiny_run):
    """Copy the session's tiny run, to damage one file of the copy."""
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    return copy


# What metrics.json records about how a seed was computed rather than what it learnt: how long it
# took, and how many seeds shared its training (a resume trains only the missing ones).
NOT_RESULTS = {"train_seconds", "evaluate_seconds", "seeds_trained_together"}


def same_result(a: Path, b: Path) -> bool:
    """Byte-identical files; metrics.json identical but for NOT_RESULTS."""
    if a.name != "metrics.json":
        return a.read_bytes() == b.read_bytes()
    strip = lambda path: {k: v for k, v in json.loads(path.read_text()).items() if k not in NOT_RESULTS}  # noqa: E731
    return strip(a) == strip(b)


def one_line_error(result, path: str) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    message = " ".join(result.output.split())  # the console wraps long lines
    assert path in message and "is damaged" in message, message
    return message


def test_intact_files_have_no_problem(tiny_run):
    for relative in DAMAGEABLE:
        assert file_problem(tiny_run / relative) is None, relative
    assert is_finished(tiny_run, "pca8", 1)


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("relative", DAMAGEABLE)
def test_the_checks_say_what_is_wrong(damaged_copy, relative, damage):
    path = damaged_copy / relative
    DAMAGES[damage](path)
    problem = file_problem(path)
    assert problem is not None
    if damage == "empty":
        assert "empty" in problem or "too short" in problem
    if damage == "truncated":
        assert "cut short" in problem
    assert not is_finished(damaged_copy, "pca8", 1) or "frontend" in relative


def test_a_safetensors_file_lacking_a_tensor_is_named(damaged_copy, tiny_run):
    from safetensors.numpy import load_file, save_file

    path = damaged_copy / SEED / "model.safetensors"
    tensors = load_file(str(path))
    del tensors["output.bias"]
    save_file(tensors, str(path))
    assert "output.bias" in safetensors_problem(path, ("output.bias",))
    with pytest.raises(RunError, match="model.safetensors is damaged: it lacks the tensors output.bias"):
        load_run(damaged_copy)


@pytest.mark.timeout(120)  # `serve` would listen forever if the damage went unnoticed
@pytest.mark.parametrize("relative", DAMAGEABLE)
def test_every_reader_names_the_damaged_file(damaged_copy, relative, tmp_path):
    truncate(damaged_copy / relative)
    run = str(damaged_copy)
    image = tmp_path / "digit.png"
    Image.new("L", (28, 28), 255).save(image)
    for args in (["show", run], ["show", run, "--format", "json"], ["compare", run, run],
                 ["report", run, "--workers", "0"], ["predict", run, str(image)], ["serve", run, "--port", "1"]):
        message = one_line_error(runner.invoke(app, args), relative)
        assert f"mnist-study run --resume {run}" in message, args
    with pytest.raises(RunError, match="is damaged"):
        load_run(damaged_copy)


@pytest.mark.parametrize("damage", ["truncated", "garbled"])
@pytest.mark.parametrize("relative", [f"{SEED}/history.json", f"{SEED}/evaluation.safetensors",
                                      f"{SEED}/metrics.json", "experiments/pca8/frontend.safetensors"])
def test_resume_redoes_just_the_damaged_part(damaged_copy, tiny_run, relative, damage):
    others = {p: p.stat().st_mtime_ns for p in (damaged_copy / "experiments").rglob("*")
              if p.is_file() and p.parent != (damaged_copy / relative).parent}
    DAMAGES[damage](damaged_copy / relative)
    resume_run(damaged_copy, device="cpu", workers=0, progress=False)
    run = load_run(damaged_copy)
    assert run.missing() == [] and run.manifest["complete"]
    # The damaged file is back, byte for byte; every other seed and front-end was left alone.
    assert same_result(damaged_copy / relative, tiny_run / relative)
    assert {p: p.stat().st_mtime_ns for p in others} == others
    for path in (tiny_run / SEED).iterdir():
        assert same_result(damaged_copy / SEED / path.name, path), path.name


def test_a_damaged_study_or_manifest_is_named(damaged_copy):
    (damaged_copy / "manifest.json").write_text('{"seeds": [0, 1')
    result = runner.invoke(app, ["show", str(damaged_copy)])
    assert result.exit_code == 2 and "manifest.json" in result.output and "Traceback" not in result.output


def test_a_file_that_passes_the_cheap_checks_but_not_loading_is_still_named(damaged_copy):
    """Readers that load a file turn any failure into a RunError naming it (here: valid JSON of the wrong shape)."""
    path = damaged_copy / SEED / "history.json"
    path.write_text(json.dumps({"loss": [0.5], "val_loss": [0.4]}))  # passes the checks; figures read on
    run = load_run(damaged_copy)
    assert run.results("pca8")[1].history == {"loss": [0.5], "val_loss": [0.4]}
    (damaged_copy / "experiments/pca8/frontend.json").write_text(json.dumps({"kind": "pca", "params": {}}))
    with pytest.raises(RunError, match="frontend.json is damaged: it cannot be loaded"):
        run.frontend("pca8")
