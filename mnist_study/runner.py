"""Run a study end to end: data, front-ends, training, evaluation, results on disk.

    from mnist_study import run_study
    run_dir = run_study("paper", seeds=[0, 1, 2])

Work is split into tasks (tasks.py) -- fit a front-end, train the missing seeds of an experiment --
planned in schedule.py and run by an executor (executor.py): worker processes, one thread each, or
with workers=0 this process, or with executor="ray" a Ray cluster (executors/ray.py). Every result
file is written atomically and a seed's metrics.json is written last, so an interrupted run loses
nothing that finished: `resume_run(run_dir)` (on any executor) does only what is missing. Nothing
else is lost either way a run can end early:

- killed (kill -9, the OOM killer, a power cut): its workers die with it, and the temporary files
  of writes cut short are removed when the run is resumed;
- a full or read-only disk: a `WriteError` naming the file ends the run, finished results intact;
- a damaged result file (truncated, edited): that seed or front-end is redone on resume;
- two processes on one run directory: the second is refused, naming the first (runlock.py).
"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from mnist_study.data.sources import Dataset
from mnist_study.errors import OptionError, RunError, WriteError
from mnist_study.executor import EXECUTORS, EventFn, make_executor
from mnist_study.files import TMP_SUFFIX, make_dir, read_json, remove_partial_writes, write_json
from mnist_study.provenance import git_commit, package_versions
from mnist_study.results import is_finished, read_study
from mnist_study.runlock import LOCK_NAME, run_lock
from mnist_study.schedule import discard_damaged, make_plan, run_plan
from mnist_study.studies import load_study
from mnist_study.study import Study, study_to_dict
from mnist_study.training import fused

def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> CUDA when present, else the CPU; 'cuda' without CUDA is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RunError("--device cuda was asked for, but PyTorch sees no CUDA device; use --device cpu or auto")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise RunError(f"unknown device {device!r}; use auto, cpu or cuda")
    return torch.device(device)


def default_workers(device: torch.device) -> int:
    """One single-threaded worker per core on the CPU; one process drives a GPU."""
    return 1 if device.type == "cuda" else max(1, os.cpu_count() or 1)


# ---------------------------------------------------------------- provenance

def _device_name(device: torch.device) -> str:
    if device.type == "cuda" and not torch.cuda.is_available():
        return "cuda (the Ray cluster's GPUs)"
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


# ---------------------------------------------------------------- the entry points

def _prepare_fused_kernel(stages: dict[str, float]) -> str:
    """Build (or load the cached) compiled CPU epoch here, before workers start: they inherit the
    decision and only load it. Returns which training step the run uses, for the manifest."""
    t0 = time.perf_counter()
    step = fused.decide()  # says so on stderr when it has to build (once per machine and environment)
    stages["kernel"] = time.perf_counter() - t0
    return step


def new_run_dir(study: Study, runs_dir: str | Path = "runs") -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(runs_dir) / f"{study.name}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = Path(runs_dir) / f"{study.name}-{stamp}-{n}"
    return path


def run_study(study: Study | str | Path = "paper", *, seeds: list[int] | int = (0,), device: str = "auto",
              data_dir: str | Path | None = None, out: str | Path | None = None, runs_dir: str | Path = "runs",
              workers: int | None = None, progress: bool = True, on_event: EventFn | None = None,
              command: str | None = None, study_source: str | None = None, executor: str = "local",
              address: str = "local", cpus_per_unit: float = 1, gpus_per_unit: float = 0) -> Path:
    """Train and evaluate every experiment of `study` for every seed; return the run directory.

    `study` is a Study, a built-in study's name or a TOML file's path. `seeds` is a list of seeds or
    a count N (seeds 0..N-1). Results go to `out`, by default `runs/<study>-<timestamp>/`. An
    existing `out` that holds a run of the same study is resumed. Unlike `mnist-study run`, this
    builds no report: call `build_report(run_dir)` for report.html. `study_source` (default: the
    name or path given as `study`) is recorded so that suggested commands name the study as typed.
    `executor="ray"` runs the tasks on a Ray cluster (executors/ray.py): `address` "local" (a private
    instance here), "auto" or a cluster's address, each task with `cpus_per_unit` CPUs and
    `gpus_per_unit` GPUs; `workers` then caps the tasks running at once.
    """
    choice = {"executor": executor, "address": address, "cpus_per_unit": cpus_per_unit,
              "gpus_per_unit": gpus_per_unit}
    if not isinstance(study, Study):
        study_source = study_source or str(study)
        study = load_study(study)
    seeds = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise OptionError(f"seeds must be distinct non-negative integers, got {seeds}")
    run_dir = Path(out) if out is not None else new_run_dir(study, runs_dir)
    if (run_dir / "study.json").is_file():
        return resume_run(run_dir, device=device, data_dir=data_dir, workers=workers, progress=progress,
                          on_event=on_event, seeds=seeds, expected_study=study, command=command, **choice)
    if run_dir.exists() and not _only_startup_files(run_dir):
        raise RunError(f"{run_dir} exists and is not a run directory; choose an empty or new --out")
    setup = _prepare(study, device, data_dir, workers, progress, study_source, choice)  # before any file is written
    make_dir(run_dir)
    with run_lock(run_dir, command):
        if (run_dir / "study.json").is_file():
            raise RunError(f"{run_dir} was started by another process meanwhile; "
                           f"continue it with `mnist-study run --resume {run_dir}`")
        # The seeds and the data first, then study.json, which makes the folder a run: a run killed
        # between the two is resumed with all its seeds on its own data, never with defaults.
        manifest = {"study_source": study_source} if study_source else {}
        write_json(run_dir / "manifest.json", {**manifest, "study": study.name, "seeds": seeds,
                                               **_data_records(setup.datasets), "complete": False})
        write_json(run_dir / "study.json", study_to_dict(study))
        return _execute(run_dir, study, seeds, setup, progress, on_event, command, manifest)


def _only_startup_files(run_dir: Path) -> bool:
    """Whether `run_dir` holds nothing but what a run killed before its study.json leaves behind."""
    return all(p.name in (LOCK_NAME, "manifest.json") or (p.name.startswith(".") and p.name.endswith(TMP_SUFFIX))
               for p in run_dir.iterdir())


def resume_run(run_dir: str | Path, *, device: str = "auto", data_dir: str | Path | None = None,
               workers: int | None = None, progress: bool = True, on_event: EventFn | None = None,
               seeds: list[int] | None = None, expected_study: Study | None = None,
               command: str | None = None, executor: str = "local", address: str = "local",
               cpus_per_unit: float = 1, gpus_per_unit: float = 0) -> Path:
    """Finish an interrupted run: only the front-ends and seeds that are missing (or damaged) are computed.

    On any executor (as run_study's), whichever the run started on. Raises RunInUseError when
    another process is running or reporting on `run_dir`.
    """
    choice = {"executor": executor, "address": address, "cpus_per_unit": cpus_per_unit,
              "gpus_per_unit": gpus_per_unit}
    run_dir = Path(run_dir)
    if not (run_dir / "study.json").is_file():
        raise RunError(f"cannot resume {run_dir}: it has no study.json, so it is not a run directory")
    with run_lock(run_dir, command):
        return _resume_locked(run_dir, device, data_dir, workers, progress, on_event, seeds, expected_study,
                              command, choice)


def _resume_locked(run_dir: Path, device: str, data_dir, workers: int | None, progress: bool,
                   on_event: EventFn | None, seeds: list[int] | None, expected_study: Study | None,
                   command: str | None, choice: dict) -> Path:
    study = read_study(run_dir)
    if expected_study is not None and study_to_dict(expected_study) != study_to_dict(study):
        raise RunError(f"{run_dir} holds a run of a different study ({study.name}); choose another --out")
    manifest = read_json(run_dir / "manifest.json") if (run_dir / "manifest.json").is_file() else {}
    recorded = manifest.get("seeds", [])
    seeds = sorted(set(recorded) | set(seeds or recorded or [0]))
    recorded = manifest.get("datasets") or {"mnist": manifest.get("data", {})}  # older runs: MNIST only
    if data_dir is None and recorded.get("mnist", {}).get("source"):
        data_dir = recorded["mnist"]["source"]  # finish on the data the run started with
    setup = _prepare(study, device, data_dir, workers, progress, manifest.get("study_source"), choice)
    for name, dataset in setup.datasets.items():
        digests = recorded.get(name, {}).get("digests")
        if digests and digests != dataset.digests:
            hint = "--data-dir pointing at the data it was started on" if name == "mnist" else "that data"
            raise RunError(f"{run_dir} was started on other {name} data (digests differ from those of "
                           f"{dataset.source}); resume it with {hint}")
    return _execute(run_dir, study, seeds, setup, progress, on_event, command, manifest)


@dataclass
class _Setup:
    """What a run needs before its first task, checked before anything is written."""

    device: torch.device
    workers: int | None  # None: as many as the Ray cluster holds
    datasets: dict[str, Dataset]  # by the name experiments give (`dataset = ...`)
    data_seconds: float
    executor: dict  # make_executor's options beyond the workers: {} for the local executors


def executor_options(executor: str = "local", address: str = "local", cpus_per_unit: float = 1,
                     gpus_per_unit: float = 0) -> dict:
    """make_executor's options for the executor a run asked for: {} for the local ones. Checked
    (Ray installed, resources that make sense) before anything is written."""
    if executor not in EXECUTORS:
        raise OptionError(f"unknown executor {executor!r}; use one of {', '.join(EXECUTORS)}")
    if executor == "local":
        if (address, cpus_per_unit, gpus_per_unit) != ("local", 1, 0):
            raise OptionError("--address, --cpus-per-unit and --gpus-per-unit are options of --executor ray")
        return {}
    from mnist_study.executors.ray import import_ray

    import_ray()  # says how to install Ray where it is missing
    if cpus_per_unit < 0 or gpus_per_unit < 0 or cpus_per_unit + gpus_per_unit <= 0:
        raise OptionError(f"each unit needs some CPUs or GPUs; got --cpus-per-unit {cpus_per_unit} "
                          f"--gpus-per-unit {gpus_per_unit}")
    return {"kind": "ray", "address": address, "cpus_per_unit": cpus_per_unit, "gpus_per_unit": gpus_per_unit}


def _ray_device(device: str, gpus_per_unit: float) -> torch.device:
    """The device of units on Ray, which need not be this machine's: CUDA where units get GPUs."""
    if device == "auto":
        return torch.device("cuda" if gpus_per_unit > 0 else "cpu")
    if device.startswith("cuda") and gpus_per_unit <= 0:
        raise OptionError("--device cuda on Ray needs --gpus-per-unit (the share of a GPU each unit gets)")
    return torch.device(device) if device.startswith("cuda") else resolve_device(device)


def _prepare(study: Study, device: str, data_dir, workers: int | None, progress: bool,
             source: str | None, choice: dict | None = None) -> _Setup:
    options = executor_options(**(choice or {}))
    dev = _ray_device(device, options["gpus_per_unit"]) if options else resolve_device(device)
    if workers is not None and workers < (1 if options else 0):
        raise OptionError(f"workers must be {'1' if options else '0 (this process)'} or more, got {workers}")
    t0 = time.perf_counter()
    from mnist_study.data.sources import load_named_dataset

    # --data-dir names where MNIST is; other datasets are found by their name (or are a path).
    datasets = {name: load_named_dataset(name, data_dir if name == "mnist" else None, download=True,
                                         progress=progress)
                for name in study.datasets}
    study.check_split_sizes({name: len(d.train_labels) for name, d in datasets.items()}, source)
    if workers is None and not options:
        workers = default_workers(dev)
    return _Setup(dev, workers, datasets, time.perf_counter() - t0, options)


def _data_record(dataset: Dataset) -> dict:
    return {"name": dataset.name, "source": dataset.source, "verified": dataset.verified, "digests": dataset.digests}


def _data_records(datasets: dict[str, Dataset]) -> dict:
    """The manifest's record of the data: `datasets` by name, and `data`, the first (MNIST's in most runs)."""
    records = {name: _data_record(d) for name, d in datasets.items()}
    return {"data": next(iter(records.values())), "datasets": records}


def _execute(run_dir: Path, study: Study, seeds: list[int], setup: _Setup, progress: bool,
             on_event: EventFn | None, command: str | None, manifest: dict) -> Path:
    """Do what is missing, under the run's lock. A write that fails names its file and the resume command."""
    try:
        return _execute_plan(run_dir, study, seeds, setup, progress, on_event, command, manifest)
    except WriteError as error:
        raise WriteError(f"{error}, then continue with `mnist-study run --resume {run_dir}` "
                         "(every finished result is intact)") from None


def _say(progress: bool, text: str) -> None:
    if progress:
        print(text, file=sys.stderr, flush=True)


def _tidy(run_dir: Path, study: Study, seeds: list[int], progress: bool) -> None:
    """Clear what an earlier, interrupted process left half done, so that it is redone."""
    remove_partial_writes(run_dir)  # temporary files of writes cut short; no one else writes here now
    for path, problem in discard_damaged(study, seeds, run_dir):
        _say(progress, f"{path} is damaged ({problem}); redoing it")


def _execute_plan(run_dir: Path, study: Study, seeds: list[int], setup: _Setup, progress: bool,
                  on_event: EventFn | None, command: str | None, manifest: dict) -> Path:
    started = time.perf_counter() - setup.data_seconds
    _tidy(run_dir, study, seeds, progress)
    dev, workers = setup.device, setup.workers
    stages = dict(manifest.get("stages", {}))
    stages["data"] = setup.data_seconds
    manifest.update({
        "study": study.name,
        "created": manifest.get("created", datetime.now(timezone.utc).isoformat(timespec="seconds")),
        "command": manifest.get("command", command or " ".join(["mnist-study", *sys.argv[1:]])),
        "seeds": seeds,
        "device": _device_name(dev),
        "workers": workers,
        "versions": package_versions(),
        "git_commit": git_commit(),
        **_data_records(setup.datasets),
        "stages": stages,
        "complete": False,
    })
    if manifest.get("wall_seconds") is not None:
        manifest.setdefault("resumed", []).append(datetime.now(timezone.utc).isoformat(timespec="seconds"))
    write_json(run_dir / "manifest.json", manifest)

    plan = make_plan(study, seeds, run_dir)
    if dev.type == "cpu" and plan.training:
        manifest["training_step"] = _prepare_fused_kernel(stages)
    elif plan.training:
        manifest["training_step"] = "eager step"  # the compiled epoch is CPU-only
    events = on_event
    bar = None
    if progress and on_event is None:
        from mnist_study.progress import TrainingProgress

        bar = TrainingProgress(study, plan)
        events = bar.update
    ended = False
    try:
        if bar:
            bar.start()
        options = dict(setup.executor)
        if options:  # Ray: the data loaded here goes to the object store as it is
            options["datasets"] = {d.source: d for d in setup.datasets.values()}
        # Every task with one BLAS thread, on every executor: results then do not depend on where it ran.
        with make_executor(workers, events, limit_blas=True, **options) as executor:
            if options:
                manifest["workers"] = executor.workers
                manifest["executor"] = {key: options[key] for key in ("kind", "address", "cpus_per_unit",
                                                                      "gpus_per_unit")}
            else:
                manifest.pop("executor", None)
            data_dirs = {name: d.source for name, d in setup.datasets.items()}
            stages.update(run_plan(plan, run_dir, data_dirs, str(dev), executor))
        ended = True
    finally:
        if bar:
            bar.stop()
        manifest["wall_seconds"] = manifest.get("wall_seconds", 0.0) + time.perf_counter() - started
        manifest["stages"] = stages
        missing = [(e.name, s) for e in study.experiments for s in seeds if not is_finished(run_dir, e.name, s)]
        manifest["complete"] = not missing
        try:
            write_json(run_dir / "manifest.json", manifest)
        except WriteError:
            if ended:
                raise
            # Already ending on an error, which says more; the resume writes the manifest again.
    return run_dir
