"""Logging a run directory to MLflow, read back through MLflow's own client from a SQLite store."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_study.errors import OptionError, RunError
from mnist_study.files import read_json, write_json
from mnist_study.results import load_run
from mnist_study.tracking import PARENT_TAG, RUN_DIR_TAG, batches, flatten, log_run, require_mlflow

mlflow = pytest.importorskip("mlflow")
MlflowClient = mlflow.tracking.MlflowClient
# MLflow's SQL store uses an SQLAlchemy loader strategy that SQLAlchemy 2 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:.*noload.*:DeprecationWarning")


def as_params(experiment: dict) -> dict[str, str]:
    """study.json's experiment as MLflow params: one level of nesting dotted, non-strings as JSON."""
    found = {}
    for key, value in experiment.items():
        items = value.items() if isinstance(value, dict) else [(None, value)]
        found.update({f"{key}.{sub}" if sub else key: v if isinstance(v, str) else json.dumps(v) for sub, v in items})
    return found


def children(client: MlflowClient, parent_id: str) -> list:
    experiment_id = client.get_run(parent_id).info.experiment_id
    return client.search_runs([experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}'",
                              max_results=1000)


def artifact_names(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    return {Path(a.path).name for a in client.list_artifacts(run_id, path)}


@pytest.fixture(scope="module")
def logged(tiny_run, tmp_path_factory):
    """The tiny run (3 experiments x 2 seeds) logged once to a fresh SQLite store."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlruns.db"
    return MlflowClient(uri), log_run(tiny_run, uri), tiny_run


def test_one_parent_and_a_nested_child_per_network(logged):
    client, parent_id, run_dir = logged
    parent = client.get_run(parent_id)
    assert parent.info.run_name == run_dir.name and parent.info.status == "FINISHED"
    assert client.get_experiment(parent.info.experiment_id).name == "tiny"  # named after the study
    manifest = read_json(run_dir / "manifest.json")
    assert parent.data.params["study"] == "tiny"
    assert json.loads(parent.data.params["seeds"]) == [0, 1]
    assert parent.data.params.get("git_commit") == manifest.get("git_commit")
    assert parent.data.params["device"] == manifest["device"]
    digests = manifest["datasets"][next(iter(manifest["datasets"]))]["digests"]
    assert all(f"{file}={digest[:12]}" in " ".join(v for k, v in parent.data.params.items() if k.endswith(".digests"))
               for file, digest in digests.items())
    assert parent.data.tags[RUN_DIR_TAG] == str(run_dir.resolve())
    assert parent.data.tags["mnist_study.command"] == manifest["command"]
    assert parent.data.tags["mnist_study.version"] == manifest["versions"]["mnist-study"]
    assert parent.data.metrics["networks_logged"] == 6

    kids = children(client, parent_id)
    assert sorted(r.info.run_name for r in kids) == sorted(f"{e}/seed-{s}" for e in ("raw8", "pca8", "forest8")
                                                             for s in (0, 1))
    assert all(r.info.status == "FINISHED" for r in kids)


def test_each_child_holds_its_settings_curves_metrics_and_weights(logged):
    client, parent_id, run_dir = logged
    run = load_run(run_dir)
    saved = {e["name"]: e for e in read_json(run_dir / "study.json")["experiment"]}  # the resolved study
    kids = {(r.data.tags["mnist_study.experiment"], int(r.data.tags["mnist_study.seed"])): r
            for r in children(client, parent_id)}
    for e in run.experiments:
        for result in run.results(e.name):
            child = kids[(e.name, result.seed)]
            assert child.data.params == {**as_params(saved[e.name]), "seed": str(result.seed)}
            # per-epoch curves: step = epoch, 1..n, the values of history.json
            for key, values in result.history.items():
                points = sorted(client.get_metric_history(child.info.run_id, key), key=lambda m: m.step)
                assert [m.step for m in points] == list(range(1, len(values) + 1))
                assert [m.value for m in points] == pytest.approx(values, rel=1e-12)
            final = child.data.metrics
            for split in ("train", "validation", "test"):
                assert final[f"accuracy_{split}"] == pytest.approx(result.metrics["accuracy"][split], rel=1e-12)
                assert final[f"loss_{split}"] == pytest.approx(result.metrics["loss"][split], rel=1e-12)
            assert final["epochs_run"] == result.metrics["epochs_run"]
            assert final["best_epoch"] == result.metrics["best_epoch"]
            assert final["train_seconds"] == pytest.approx(result.metrics["train_seconds"])
            assert "diverged_epoch" not in final and child.data.tags["mnist_study.diverged"] == "false"
            assert artifact_names(client, child.info.run_id) >= {"model.safetensors", "metrics.json", "history.json"}
    # The weights logged are the weights on disk.
    child = kids[("raw8", 1)]
    copy = mlflow.artifacts.download_artifacts(run_id=child.info.run_id, artifact_path="model.safetensors",
                                               tracking_uri=client.tracking_uri)
    assert Path(copy).read_bytes() == (run_dir / "experiments/raw8/seed-1/model.safetensors").read_bytes()


def test_nested_fields_are_flattened_and_front_ends_logged_on_the_parent(logged):
    client, parent_id, run_dir = logged
    pca = next(r for r in children(client, parent_id) if r.data.tags["mnist_study.experiment"] == "pca8")
    assert pca.data.params["frontend.kind"] == "pca" and pca.data.params["frontend.variance"] == "0.9"
    assert pca.data.params["hidden"] == "8" and pca.data.params["early_stopping"] == "false"
    assert "frontend" not in pca.data.params and "train_size" not in pca.data.params  # unset: left out
    assert artifact_names(client, parent_id) >= {"study.json", "manifest.json", "experiments"}
    for name in ("raw8", "pca8", "forest8"):
        fitted = {p.name for p in (run_dir / "experiments" / name).glob("*.*")} & {
            "frontend.json", "frontend.safetensors", "split.safetensors"}
        assert fitted and artifact_names(client, parent_id, f"experiments/{name}") == fitted


def test_flatten_and_batches_keep_within_mlflow_limits():
    assert flatten({"frontend": {"kind": "pca", "variance": 0.95}, "layers": [100, 100], "keep": None,
                    "swept": {}, "nesterov": True}) == {
        "frontend.kind": "pca", "frontend.variance": "0.95", "layers": "[100, 100]", "nesterov": "true"}
    metrics, params, tags = list(range(2500)), [f"p{i}" for i in range(250)], [f"t{i}" for i in range(30)]
    calls = list(batches(metrics, params, tags))
    assert all(len(p) <= 100 and len(t) <= 100 and len(m) <= 1000 and len(m) + len(p) + len(t) <= 1000
               for m, p, t in calls)
    assert [x for m, _, _ in calls for x in m] == metrics and [x for _, p, _ in calls for x in p] == params
    assert [x for _, _, t in calls for x in t] == tags


@pytest.fixture
def copied_run(tiny_run, tmp_path) -> Path:
    """A copy of the tiny run in tmp_path/runs/, to change without touching the session's run."""
    return Path(shutil.copytree(tiny_run, tmp_path / "runs" / "tiny-copy"))


def test_default_store_beside_the_runs_and_relogging(copied_run, tmp_path, monkeypatch, capsys):
    (copied_run / "report.html").write_text("<html>report</html>")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    first = log_run(copied_run)
    assert (tmp_path / "runs" / "mlruns.db").is_file() and (tmp_path / "runs" / "mlartifacts").is_dir()
    assert list(elsewhere.iterdir()) == []  # nothing lands in the working directory
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlruns.db'}")
    assert "report.html" in artifact_names(client, first)

    # Logged again: not duplicated, and said so.
    capsys.readouterr()
    assert log_run(copied_run) == first
    assert "already logged" in capsys.readouterr().err
    experiment_id = client.get_run(first).info.experiment_id
    assert len(client.search_runs([experiment_id])) == 1 + 6

    # replace=True: a new record, the earlier one (parent and children) deleted.
    second = log_run(copied_run, replace=True)
    assert second != first
    assert client.get_run(first).info.lifecycle_stage == "deleted"
    assert all(client.get_run(r.info.run_id).info.lifecycle_stage == "deleted"
               for r in client.search_runs([experiment_id], f"tags.`{PARENT_TAG}` = '{first}'",
                                           run_view_type=mlflow.entities.ViewType.DELETED_ONLY))
    active = client.search_runs([experiment_id])
    assert len(active) == 1 + 6 and {r.data.tags.get(PARENT_TAG) for r in active} == {None, second}


def test_a_partly_finished_swept_run_with_a_diverged_network(copied_run, tmp_path, capsys):
    # raw8 seed 1 unfinished (no metrics.json); raw8 seed 0 diverged; raw8 made a swept experiment.
    (copied_run / "experiments/raw8/seed-1/metrics.json").unlink()
    metrics_path = copied_run / "experiments/raw8/seed-0/metrics.json"
    write_json(metrics_path, {**read_json(metrics_path), "diverged": {"epoch": 4, "last_finite_epoch": 3}})
    study = read_json(copied_run / "study.json")
    study["experiment"][0].update(sweep="width", swept={"hidden": 8, "frontend": {"kind": "raw"}})
    write_json(copied_run / "study.json", study)
    manifest = read_json(copied_run / "manifest.json")
    write_json(copied_run / "manifest.json", {**manifest, "complete": False})

    uri = f"sqlite:///{tmp_path}/mlruns.db"
    parent_id = log_run(copied_run, uri, experiment_name="mine", artifacts=False)
    client = MlflowClient(uri)
    parent = client.get_run(parent_id)
    assert client.get_experiment(parent.info.experiment_id).name == "mine"
    assert parent.data.tags["mnist_study.complete"] == "false"
    assert parent.data.metrics["networks_logged"] == 5 and parent.data.metrics["networks_diverged"] == 1
    assert client.list_artifacts(parent_id) == []
    kids = {r.info.run_name: r for r in children(client, parent_id)}
    assert "raw8/seed-1" not in kids and len(kids) == 5
    diverged = kids["raw8/seed-0"]
    assert diverged.data.metrics["diverged_epoch"] == 4 and diverged.data.tags["mnist_study.diverged"] == "true"
    assert diverged.data.tags["mnist_study.sweep"] == "width"
    assert diverged.data.tags["swept.hidden"] == "8" and diverged.data.tags["swept.frontend.kind"] == "raw"
    assert "swept.hidden" not in kids["pca8/seed-0"].data.tags

    # Logged again, the message says the record lags behind the run directory.
    capsys.readouterr()
    (copied_run / "manifest.json").touch()
    shutil.copy(copied_run / "experiments/raw8/seed-0/metrics.json", copied_run / "experiments/raw8/seed-1/")
    assert log_run(copied_run, uri, experiment_name="mine") == parent_id
    assert "6 finished networks now and the record 5" in capsys.readouterr().err


def test_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(RunError, match="not a run directory"):
        log_run(tmp_path, f"sqlite:///{tmp_path}/mlruns.db")


def test_without_mlflow_says_how_to_install_it(tiny_run, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` now raises ImportError
    for call in (require_mlflow, lambda: log_run(tiny_run)):
        with pytest.raises(OptionError, match=r"pip install 'mnist-study\[mlflow\]'"):
            call()


def test_importing_the_package_does_not_import_mlflow():
    code = ("import sys, mnist_study, mnist_study.cli, mnist_study.tracking; "
            "assert 'mlflow' not in sys.modules, 'mlflow imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_run_and_log_from_the_command_line(tmp_path, tiny_data):
    from mlflow.tracking import MlflowClient
    from typer.testing import CliRunner

    from mnist_study.cli import app

    study = tmp_path / "two.toml"
    study.write_text('name = "two"\n[[sweep]]\nvalidation_size = 200\nmax_epochs = 2\n[sweep.vary]\nhidden = [4, 8]\n')
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(study), "--seeds", "2", "--data-dir", str(tiny_data), "--out",
                                      str(out), "--workers", "0", "--no-report", "--mlflow-uri", uri])
    assert result.exit_code == 0, result.output
    assert "MLflow run: " in result.output
    client = MlflowClient(uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "two"]
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and len(runs) == 1 + 2 * 2  # one per (experiment, seed)
    again = CliRunner().invoke(app, ["log", str(out), "--mlflow-uri", uri])
    assert again.exit_code == 0 and "already logged" in again.output + (again.stderr if again.stderr_bytes else "")
    assert len(client.search_runs([experiment.experiment_id])) == 5  # nothing logged twice
