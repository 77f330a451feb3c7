"""Log a run directory to MLflow: one parent run per study run, one child run per trained network.

    from mnist_study.tracking import log_run
    log_run("runs/paper-20260101-120000")      # -> runs/mlruns.db, MLflow experiment "paper"

    mlflow ui --backend-store-uri sqlite:///runs/mlruns.db

What is logged, from the files a run leaves (results.py); nothing in the run directory is changed:

  parent run, named after the run directory
    params     study, seeds, experiments, networks, device, workers, git_commit, training_step,
               created, data.<dataset>.source / .verified / .digests (12 hex digits per file)
    tags       mnist_study.command, mnist_study.version, versions.<package>, mnist_study.run_dir
               (the absolute path: how a second log of the same directory is recognised),
               mnist_study.complete, mlflow.source.git.commit, mlflow.note.content (the description)
    metrics    networks_logged, networks_diverged, wall_seconds
    artifacts  study.json, manifest.json, report.html (when built), and each experiment's fitted
               front-end (frontend.json, frontend.safetensors, split.safetensors) under experiments/<name>/
  child run per finished (experiment, seed), named <experiment>/seed-<k>, tagged mlflow.parentRunId
    params     every field of the resolved experiment (nested values flattened: frontend.kind,
               frontend.variance; lists as JSON; unset optional fields left out), and seed
    tags       mnist_study.experiment, mnist_study.seed, mnist_study.diverged, mnist_study.sweep and
               swept.<field> for a swept experiment
    metrics    per epoch (step = epoch, 1..epochs_run): loss, accuracy, val_loss, val_accuracy as in
               history.json; final: accuracy_<split>, loss_<split> (train, validation, test; accuracies
               are fractions, as in metrics.json), epochs_run, best_epoch, train_seconds,
               evaluate_seconds, and diverged_epoch for a network whose loss became NaN or infinite
    artifacts  model.safetensors, metrics.json, history.json, classification_report.json

Only finished seeds are logged (a partly finished run logs what it has; its parent is tagged
mnist_study.complete = false). A run directory already logged to the experiment is not logged twice:
`log_run` says so and returns the parent run it has; `replace=True` logs it anew and then deletes the
earlier record (MLflow keeps deleted runs until `mlflow gc`). A log that failed halfway leaves a
parent marked FAILED, which the next log of that directory deletes.

By default the runs are logged beside the run directories: to the SQLite store `mlruns.db` in the run
directory's parent folder, with artifacts in `mlartifacts/` next to it (absolute paths are recorded,
so the MLflow UI finds them from any working directory, but not once the folder is moved).

MLflow is optional (`pip install 'mnist-study[mlflow]'`): it is imported only when these functions run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from mnist_study.errors import OptionError
from mnist_study.files import read_json
from mnist_study.results import experiment_dir, is_finished, read_study, seed_dirs
from mnist_study.study import Experiment, Study

RUN_DIR_TAG = "mnist_study.run_dir"
ROLE_TAG = "mnist_study.role"  # "study" on parent runs, "network" on child runs
PARENT_TAG = "mlflow.parentRunId"  # how MLflow nests runs in its UI

SEED_ARTIFACTS = ("model.safetensors", "metrics.json", "history.json", "classification_report.json")
RUN_ARTIFACTS = ("study.json", "manifest.json", "report.html")
FRONTEND_ARTIFACTS = ("frontend.json", "frontend.safetensors", "split.safetensors")

# MLflow's limits on one log_batch call and on values (mlflow.utils.validation); read from MLflow when
# it has them, so that a newer MLflow's limits apply.
_LIMITS = {"MAX_PARAMS_TAGS_PER_BATCH": 100, "MAX_METRICS_PER_BATCH": 1000, "MAX_ENTITIES_PER_BATCH": 1000,
           "MAX_PARAM_VAL_LENGTH": 500, "MAX_TAG_VAL_LENGTH": 5000, "MAX_ENTITY_KEY_LENGTH": 250}


def require_mlflow():
    """The mlflow module, or an OptionError saying how to install it: check before a run starts, so
    that a missing extra does not cost a training run."""
    try:
        import mlflow
        from mlflow.utils import validation
    except ImportError:
        raise OptionError("logging to MLflow needs MLflow, which is not installed: "
                          "pip install 'mnist-study[mlflow]'") from None
    for name, default in _LIMITS.items():
        _LIMITS[name] = getattr(validation, name, default)
    return mlflow


def default_tracking_uri(run_dir: str | Path) -> str:
    """`sqlite:///<runs folder>/mlruns.db`: the store beside the run directory, shared by its siblings."""
    return f"sqlite:///{Path(run_dir).resolve().parent / 'mlruns.db'}"


def artifact_root(tracking_uri: str) -> Path | None:
    """`mlartifacts/` beside a SQLite store's file; None for other stores (MLflow's default applies)."""
    if not tracking_uri.startswith("sqlite:///") or tracking_uri.startswith("sqlite:///:memory:"):
        return None
    return Path(tracking_uri[len("sqlite:///"):].split("?")[0]).resolve().parent / "mlartifacts"


# ---------------------------------------------------------------- values as MLflow holds them

def as_text(value: Any) -> str:
    """A param or tag value: strings as they are, anything else as JSON (true, 0.001, [100, 100])."""
    return value if isinstance(value, str) else json.dumps(value)


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """Nested dicts as dotted keys ({"frontend": {"kind": "pca"}} -> {"frontend.kind": "pca"});
    lists and scalars as text; None and empty dicts left out."""
    if isinstance(value, dict):
        found: dict[str, str] = {}
        for key, item in value.items():
            found.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return found
    return {} if value is None else {prefix: as_text(value)}


def experiment_params(experiment: Experiment) -> dict[str, str]:
    """Every field of a resolved experiment, flattened: the child runs' params."""
    return flatten(experiment.model_dump(mode="json"))


def _key(key: str) -> str:
    """A name MLflow accepts as a key: letters, digits, _ - . and spaces, at most 250 characters."""
    return re.sub(r"[^A-Za-z0-9_\-. ]", "_", key)[:_LIMITS["MAX_ENTITY_KEY_LENGTH"]]


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _params(values: dict[str, str]):
    from mlflow.entities import Param

    return [Param(_key(k), _clip(v, _LIMITS["MAX_PARAM_VAL_LENGTH"])) for k, v in values.items()]


def _tags(values: dict[str, str]) -> dict[str, str]:
    return {_key(k): _clip(v, _LIMITS["MAX_TAG_VAL_LENGTH"]) for k, v in values.items()}


def batches(metrics: list, params: list, tags: list) -> Iterator[tuple[list, list, list]]:
    """Split one run's entities into log_batch calls within MLflow's limits (100 params, 100 tags,
    1000 metrics, 1000 entities in all per call)."""
    per = _LIMITS["MAX_PARAMS_TAGS_PER_BATCH"]
    total, most_metrics = _LIMITS["MAX_ENTITIES_PER_BATCH"], _LIMITS["MAX_METRICS_PER_BATCH"]
    while metrics or params or tags:
        p, t = params[:per], tags[:per]
        params, tags = params[per:], tags[per:]
        n = max(0, min(most_metrics, total - len(p) - len(t)))
        m, metrics = metrics[:n], metrics[n:]
        yield m, p, t


def _log_batch(client, run_id: str, metrics: list, params: list, tags: dict[str, str]) -> None:
    from mlflow.entities import RunTag

    tag_list = [RunTag(k, v) for k, v in tags.items()]
    for m, p, t in batches(metrics, params, tag_list):
        client.log_batch(run_id, metrics=m, params=p, tags=t, synchronous=True)


# ---------------------------------------------------------------- what each run holds

def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def seed_metrics(metrics: dict, history: dict[str, list[float]], timestamp: int) -> list:
    """A network's per-epoch metrics (step = epoch, from 1) and its final ones, as MLflow Metrics."""
    from mlflow.entities import Metric

    found = [Metric(_key(key), float(value), timestamp, epoch)
             for key, values in history.items() if isinstance(values, list)
             for epoch, value in enumerate(values, start=1) if isinstance(value, (int, float))]
    final = {f"{name}_{split}": value for name in ("accuracy", "loss")
             for split, value in (metrics.get(name) or {}).items()}
    final.update({key: metrics.get(key) for key in ("epochs_run", "best_epoch", "train_seconds",
                                                    "evaluate_seconds")})
    if isinstance(metrics.get("diverged"), dict):
        final["diverged_epoch"] = metrics["diverged"].get("epoch")
    found += [Metric(_key(key), float(value), timestamp, 0) for key, value in final.items()
              if isinstance(value, (int, float)) and not isinstance(value, bool)]
    return found


def _data_params(manifest: dict) -> dict[str, str]:
    records = manifest.get("datasets") or ({"mnist": manifest["data"]} if manifest.get("data") else {})
    found = {}
    for name, record in records.items():
        key = f"data.{record.get('name') or name}"
        found[f"{key}.source"] = as_text(record.get("source"))
        found[f"{key}.verified"] = as_text(record.get("verified"))
        digests = record.get("digests") or {}
        found[f"{key}.digests"] = " ".join(f"{file}={digest[:12]}" for file, digest in sorted(digests.items()))
    return found


def study_params(study: Study, manifest: dict) -> dict[str, str]:
    """The parent run's params: what the study and its manifest say about the run as a whole."""
    seeds = manifest.get("seeds", [0])
    values = {"study": study.name, "seeds": as_text(seeds), "experiments": as_text(len(study.experiments)),
              "networks": as_text(len(study.experiments) * len(seeds))}
    for key in ("device", "workers", "git_commit", "training_step", "created"):
        if manifest.get(key) is not None:
            values[key] = as_text(manifest[key])
    values.update(_data_params(manifest))
    return values


def study_tags(run_dir: Path, study: Study, manifest: dict) -> dict[str, str]:
    versions = manifest.get("versions") or {}
    tags = {ROLE_TAG: "study", RUN_DIR_TAG: str(run_dir),
            "mnist_study.complete": as_text(bool(manifest.get("complete"))),
            "mnist_study.version": versions.get("mnist-study") or _installed_version(),
            **{f"versions.{package}": v for package, v in versions.items() if package != "mnist-study"}}
    if manifest.get("command"):
        tags["mnist_study.command"] = manifest["command"]
    if manifest.get("git_commit"):
        tags["mlflow.source.git.commit"] = manifest["git_commit"]
    if study.description:
        tags["mlflow.note.content"] = study.description
    return tags


def network_tags(experiment: Experiment, seed: int, metrics: dict, parent_id: str) -> dict[str, str]:
    tags = {PARENT_TAG: parent_id, ROLE_TAG: "network", "mnist_study.experiment": experiment.name,
            "mnist_study.seed": str(seed), "mnist_study.diverged": as_text(isinstance(metrics.get("diverged"), dict))}
    if experiment.sweep:
        tags["mnist_study.sweep"] = experiment.sweep
    tags.update(flatten(experiment.swept, "swept"))
    return tags


def _installed_version() -> str:
    from mnist_study import __version__

    return __version__


def _started(manifest: dict, fallback: float) -> float:
    try:
        return datetime.fromisoformat(manifest["created"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return fallback


# ---------------------------------------------------------------- the MLflow side

@contextlib.contextmanager
def _quiet_store_setup() -> Iterator[None]:
    """MLflow says at INFO level that it creates and migrates a new SQLite store; that is not news here."""
    loggers = [logging.getLogger(name) for name in ("mlflow.store.db.utils", "alembic")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _experiment_id(client, name: str, tracking_uri: str, description: str) -> str:
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        root = artifact_root(tracking_uri)
        location = (root / re.sub(r"[^A-Za-z0-9_.-]", "_", name)).as_uri() if root else None
        try:
            return client.create_experiment(name, artifact_location=location,
                                            tags={"mlflow.note.content": description} if description else None)
        except MlflowException:  # created by another process meanwhile
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage != "active":
        raise OptionError(f"the MLflow experiment {name!r} at {tracking_uri} is deleted; restore it "
                          f"(`mlflow experiments restore --experiment-id {experiment.experiment_id}`) "
                          "or log to another experiment name")
    return experiment.experiment_id


def _search(client, experiment_id: str, filter_string: str) -> list:
    found, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=1000, page_token=token)
        found += list(page)
        token = page.token
        if not token:
            return found


def logged_runs(client, experiment_id: str, run_dir: Path) -> list:
    """The parent runs in the experiment that record `run_dir` (deleted ones not included)."""
    parents = _search(client, experiment_id, f"tags.`{ROLE_TAG}` = 'study'")
    return [r for r in parents if r.data.tags.get(RUN_DIR_TAG) == str(run_dir)]


def _delete_record(client, experiment_id: str, parent_id: str) -> None:
    for child in _search(client, experiment_id, f"tags.`{PARENT_TAG}` = '{parent_id}'"):
        client.delete_run(child.info.run_id)
    client.delete_run(parent_id)


def _artifact_repo(run_info):
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    return get_artifact_repository(run_info.artifact_uri)


def _say(progress: bool, text: str) -> None:
    if progress:
        print(text, file=sys.stderr, flush=True)


def log_run(run_dir: str | Path, tracking_uri: str | None = None, experiment_name: str | None = None, *,
            artifacts: bool = True, progress: bool = False, replace: bool = False) -> str:
    """Log a finished (or partly finished) run directory to MLflow; return the parent run's id.

    tracking_uri : an MLflow tracking URI; default `sqlite:///<runs folder>/mlruns.db` beside the run.
    experiment_name : the MLflow experiment; default the study's name. Created when missing.
    artifacts : also copy the weights, front-ends, study, manifest and report into MLflow's artifacts.
    progress : say on stderr what is being logged, and where.
    replace : when this run directory is already logged to the experiment, log it anew and delete the
        earlier record; without it, nothing is logged and the earlier parent run's id is returned.

    Raises RunError when `run_dir` is not a run directory, and OptionError when MLflow is not installed.
    """
    require_mlflow()
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    run_dir = Path(run_dir).resolve()
    study = read_study(run_dir)  # RunError, naming the folder, when it is not a run directory
    manifest = read_json(run_dir / "manifest.json") if (run_dir / "manifest.json").is_file() else {}
    tracking_uri = tracking_uri or default_tracking_uri(run_dir)
    experiment_name = experiment_name or study.name
    networks = [(e, path) for e in study.experiments for path in seed_dirs(run_dir, e.name)
                if is_finished(run_dir, e.name, int(path.name[5:]))]

    with _quiet_store_setup():
        client = MlflowClient(tracking_uri)
        experiment_id = _experiment_id(client, experiment_name, tracking_uri, study.description)
    earlier = logged_runs(client, experiment_id, run_dir)
    done = [r for r in earlier if r.info.status == "FINISHED"]
    if done and not replace:
        record = done[0]
        logged = int(record.data.metrics.get("networks_logged", -1))
        changed = (f"; the run has {len(networks)} finished networks now and the record {logged}"
                   if logged != len(networks) else "")
        print(f"{run_dir} is already logged to MLflow experiment {experiment_name!r} at {tracking_uri} as run "
              f"{record.info.run_id}{changed}: not logged again (replace=True, or --replace, logs it anew)",
              file=sys.stderr, flush=True)
        return record.info.run_id

    _say(progress, f"logging {len(networks)} networks of {run_dir} to MLflow experiment {experiment_name!r} "
                   f"at {tracking_uri}")
    t0 = time.perf_counter()
    manifest_time = (run_dir / "manifest.json").stat().st_mtime if manifest else time.time()
    parent = client.create_run(experiment_id, start_time=_ms(_started(manifest, manifest_time)),
                               tags=_tags(study_tags(run_dir, study, manifest)), run_name=run_dir.name)
    parent_id = parent.info.run_id
    children: list[str] = []
    ended, diverged = manifest_time, 0
    try:
        _log_batch(client, parent_id, [], _params(study_params(study, manifest)), {})
        last_said = time.perf_counter()
        for i, (e, path) in enumerate(networks, start=1):
            run_id, seed_ended, seed_diverged = _log_network(client, experiment_id, e, path, parent_id, artifacts)
            children.append(run_id)
            ended, diverged = max(ended, seed_ended), diverged + seed_diverged
            if progress and time.perf_counter() - last_said > 5:
                _say(progress, f"  {i}/{len(networks)} networks logged")
                last_said = time.perf_counter()
        totals = {"networks_logged": len(networks), "networks_diverged": diverged,
                  "wall_seconds": manifest.get("wall_seconds")}
        _log_batch(client, parent_id, [Metric(k, float(v), _ms(ended), 0) for k, v in totals.items()
                                       if v is not None], [], {})
        if artifacts:
            _log_run_artifacts(_artifact_repo(parent.info), run_dir, study)
    except BaseException:
        for run_id in [*children, parent_id]:
            with contextlib.suppress(Exception):
                client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(parent_id, "FINISHED", end_time=_ms(ended))
    for record in earlier:  # replaced, or a log that failed halfway
        _delete_record(client, experiment_id, record.info.run_id)
    _say(progress, f"logged as MLflow run {parent_id} in {time.perf_counter() - t0:.1f} s; see it with "
                   f"`mlflow ui --backend-store-uri {tracking_uri}`")
    return parent_id


def _log_run_artifacts(repo, run_dir: Path, study: Study) -> None:
    """The parent run's artifacts: the study, the manifest, the report, and every fitted front-end."""
    for name in RUN_ARTIFACTS:
        if (run_dir / name).is_file():
            repo.log_artifact(str(run_dir / name))
    for e in study.experiments:
        directory = experiment_dir(run_dir, e.name)
        for name in FRONTEND_ARTIFACTS:
            if (directory / name).is_file():
                repo.log_artifact(str(directory / name), f"experiments/{e.name}")


def _log_network(client, experiment_id: str, experiment: Experiment, path: Path, parent_id: str,
                 artifacts: bool) -> tuple[str, float, bool]:
    """One child run: a trained network's settings, curves, final metrics and weights.

    Returns the child run's id, when the network finished (seconds since the epoch), and whether it diverged.
    """
    metrics = read_json(path / "metrics.json")
    history = read_json(path / "history.json")
    seed = int(path.name[5:])
    ended = (path / "metrics.json").stat().st_mtime
    took = metrics.get("train_seconds", 0.0) + metrics.get("evaluate_seconds", 0.0)
    run = client.create_run(experiment_id, start_time=_ms(ended - took), run_name=f"{experiment.name}/seed-{seed}",
                            tags=_tags(network_tags(experiment, seed, metrics, parent_id)))
    run_id = run.info.run_id
    params = _params({**experiment_params(experiment), "seed": str(seed)})
    _log_batch(client, run_id, seed_metrics(metrics, history, _ms(ended)), params, {})
    if artifacts:
        repo = _artifact_repo(run.info)
        for name in SEED_ARTIFACTS:
            if (path / name).is_file():
                repo.log_artifact(str(path / name))
    client.set_terminated(run_id, "FINISHED", end_time=_ms(ended))
    return run_id, ended, isinstance(metrics.get("diverged"), dict)
