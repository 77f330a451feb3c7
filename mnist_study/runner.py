"""Run a study end to end: data, front-ends, training, evaluation, results on disk.

    from mnist_study import run_study
    run_dir = run_study("paper", seeds=[0, 1, 2])

Work is split into tasks -- fit a front-end, train all missing seeds of one experiment -- that run
in worker processes (one thread each) or, with workers=0, in this process. Every result file is
written atomically and a seed's metrics.json is written last, so an interrupted run loses nothing
that finished: `resume_run(run_dir)` does only what is missing.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing as mp
import os
import platform
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch
from safetensors.numpy import save_file

from mnist_study.training import fused
from mnist_study.data.sources import Dataset, load_dataset
from mnist_study.errors import RunError
from mnist_study.training.evaluate import evaluate
from mnist_study.training.frontends import FRONTENDS, load_frontend, save_frontend
from mnist_study.files import atomic_path, read_json, write_json
from mnist_study.training.model import MLP
from mnist_study.provenance import git_commit, package_versions
from mnist_study.results import experiment_dir, is_finished, seed_dir
from mnist_study.data.splits import make_splits
from mnist_study.study import Experiment, Study, load_study, study_to_dict
from mnist_study.training.trainer import Split, train_seeds

EventFn = Callable[[dict], None]


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


# ---------------------------------------------------------------- the work, as process-safe tasks

_DATASET_CACHE: dict[str, Dataset] = {}
_EVENTS = None  # a multiprocessing queue in workers; None in-process


def _worker_init(events, threads: int) -> None:
    global _EVENTS
    _EVENTS = events
    torch.set_num_threads(threads)


def _emit(event: dict, on_event: EventFn | None = None) -> None:
    if on_event is not None:
        on_event(event)
    elif _EVENTS is not None:
        _EVENTS.put(event)


def _dataset(data_dir: str) -> Dataset:
    if data_dir not in _DATASET_CACHE:
        _DATASET_CACHE[data_dir] = load_dataset(data_dir, download=False, progress=False)
    return _DATASET_CACHE[data_dir]


def fit_frontend_task(run_dir: str, experiment: dict, targets: list[str], data_dir: str,
                      on_event: EventFn | None = None) -> dict:
    """Fit one front-end on an experiment's training split; save it for every experiment in `targets`."""
    exp = Experiment.model_validate(experiment)
    start = time.perf_counter()
    _emit({"kind": "frontend-start", "experiment": exp.name, "frontend": exp.frontend.kind}, on_event)
    x, y = make_splits(_dataset(data_dir), exp.validation, exp.validation_size, exp.train_size)["train"]
    params = exp.frontend.model_dump(exclude={"kind"})
    frontend = FRONTENDS[exp.frontend.kind](**params)
    if exp.frontend.kind == "forest_pixels":
        frontend.fit(x, y, on_trees=lambda done, total: _emit(
            {"kind": "frontend-progress", "experiment": exp.name, "done": done, "total": total}, on_event))
    else:
        frontend.fit(x, y)
    for name in targets:
        save_frontend(frontend, experiment_dir(Path(run_dir), name))
    seconds = time.perf_counter() - start
    _emit({"kind": "frontend-done", "experiment": exp.name, "frontend": exp.frontend.kind, "seconds": seconds}, on_event)
    return {"stage": f"frontend/{exp.frontend.kind}:{exp.name}", "seconds": seconds}


@contextlib.contextmanager
def _one_thread():
    """Results must not depend on where a task runs: BLAS sums in a different order with more
    threads, so every task computes on one thread (and one thread is also fastest at these sizes)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def train_task(run_dir: str, experiment: dict, seeds: list[int], data_dir: str, device: str,
               on_event: EventFn | None = None) -> dict:
    """Train the given seeds of one experiment together, evaluate each, write its results."""
    with _one_thread():
        return _train(run_dir, experiment, seeds, data_dir, device, on_event)


def _train(run_dir: str, experiment: dict, seeds: list[int], data_dir: str, device: str,
           on_event: EventFn | None) -> dict:
    torch.set_flush_denormal(True)  # tiny RMSprop accumulators otherwise slow every step
    exp = Experiment.model_validate(experiment)
    start = time.perf_counter()
    splits = make_splits(_dataset(data_dir), exp.validation, exp.validation_size, exp.train_size)
    frontend = load_frontend(experiment_dir(Path(run_dir), exp.name))
    inputs = {name: (frontend.transform(x), y) for name, (x, y) in splits.items()}
    dev = torch.device(device)
    as_split = lambda name: Split(torch.as_tensor(inputs[name][0], device=dev),  # noqa: E731
                                  torch.as_tensor(inputs[name][1], device=dev))

    def on_epoch(epoch, states):
        active = [s for s in states if not s.stopped]
        best = max(s.history["val_accuracy"][-1] for s in states)
        _emit({"kind": "epoch", "experiment": exp.name, "epoch": epoch, "active": len(active),
               "seeds": len(states), "val_accuracy": best}, on_event)

    results = train_seeds(exp.train_config(), as_split("train"), as_split("validation"), seeds, dev, on_epoch)
    train_seconds = time.perf_counter() - start
    for result in results:
        t0 = time.perf_counter()
        model = MLP(result.params)
        ev = evaluate(model, inputs, exp.l2)
        out = seed_dir(Path(run_dir), exp.name, result.seed)
        model.save(out / "model.safetensors")
        with atomic_path(out / "evaluation.safetensors") as tmp:
            save_file({"confusion": ev.confusion, "test_proba": ev.test_proba}, str(tmp))
        write_json(out / "history.json", result.history)
        write_json(out / "classification_report.json", ev.report)
        write_json(out / "metrics.json", {  # last: marks this seed as finished
            "experiment": exp.name, "seed": result.seed, "accuracy": ev.accuracy, "loss": ev.loss,
            "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
            "train_seconds": train_seconds / len(results), "evaluate_seconds": time.perf_counter() - t0,
            "seeds_trained_together": len(results), "device": device,
        })
        _emit({"kind": "seed-done", "experiment": exp.name, "seed": result.seed,
               "test_accuracy": ev.accuracy["test"], "epochs": result.epochs_run}, on_event)
    return {"stage": f"train/{exp.name}", "seconds": time.perf_counter() - start}


# ---------------------------------------------------------------- provenance

def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


# ---------------------------------------------------------------- planning and scheduling

# Narrow networks train in a fraction of a second an epoch, so their seeds share one task (one
# trainer: one validation pass for all, one process start); wide ones are all matrix products, so
# their seeds run as separate tasks that spread over the workers.
STACK_SEEDS_BELOW_WIDTH = 64


def _cost(e: Experiment) -> float:
    """Rough relative cost of one seed: per-step overhead plus the matrix products."""
    epochs = e.max_epochs if not e.early_stopping else min(e.max_epochs, 10)
    return epochs * (1.0 + e.hidden / 50)


@dataclass
class _Plan:
    frontends: list[tuple[Experiment, list[str]]]      # (fitting experiment, experiments that share it)
    training: list[tuple[Experiment, list[int]]]       # (experiment, seeds still missing)


def _plan(study: Study, seeds: list[int], run_dir: Path) -> _Plan:
    by_key: dict[str, list[Experiment]] = {}
    for e in study.experiments:
        by_key.setdefault(e.frontend_key(), []).append(e)
    frontends = []
    for group in by_key.values():
        missing = [e.name for e in group if not (experiment_dir(run_dir, e.name) / "frontend.json").is_file()]
        if missing:
            frontends.append((group[0], missing))
    training = []
    for e in study.experiments:
        missing = [s for s in seeds if not is_finished(run_dir, e.name, s)]
        if e.hidden < STACK_SEEDS_BELOW_WIDTH:
            training += [(e, missing)] if missing else []
        else:
            training += [(e, [s]) for s in missing]
    # Longest first, so the widest networks do not start last and leave a core idle.
    training.sort(key=lambda t: -_cost(t[0]) * len(t[1]))
    return _Plan(frontends, training)


def _run_tasks(plan: _Plan, run_dir: Path, data_dir: str, device: torch.device, workers: int,
               on_event: EventFn | None) -> dict[str, float]:
    """Run the plan; training of an experiment starts as soon as its front-end is on disk."""
    stages: dict[str, float] = {}
    waiting_for = {name: fit.name for fit, names in plan.frontends for name in names}
    ready = [t for t in plan.training if t[0].name not in waiting_for]
    blocked = [t for t in plan.training if t[0].name in waiting_for]
    dev = str(device)

    if workers <= 1:
        for fit, names in plan.frontends:
            r = fit_frontend_task(str(run_dir), fit.model_dump(mode="json"), names, data_dir, on_event)
            stages[r["stage"]] = stages.get(r["stage"], 0.0) + r["seconds"]
        for exp, seeds in ready + blocked:
            r = train_task(str(run_dir), exp.model_dump(mode="json"), seeds, data_dir, dev, on_event)
            stages[r["stage"]] = stages.get(r["stage"], 0.0) + r["seconds"]
        return stages

    # Our own queue instead of the pool's FIFO: at most one task per worker is in flight, and a
    # free worker takes the costliest task that can run now, so the front-ends go first and a
    # PCA experiment unblocked late still runs before cheap raw-pixel ones.
    queue = [("frontend", fit, names) for fit, names in plan.frontends] + [("train", e, s) for e, s in ready]
    ctx = mp.get_context("spawn")  # fork after torch has started threads can deadlock
    events = ctx.Queue()
    with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=(events, 1)) as pool:
        pending: set[cf.Future] = set()

        def submit_next() -> None:
            while queue and len(pending) < workers:
                kind, exp, arg = queue.pop(0)
                task = fit_frontend_task if kind == "frontend" else train_task
                extra = () if kind == "frontend" else (dev,)
                pending.add(pool.submit(task, str(run_dir), exp.model_dump(mode="json"), arg, data_dir, *extra))

        try:
            submit_next()
            while pending:
                done, _ = cf.wait(pending, timeout=0.2, return_when=cf.FIRST_COMPLETED)
                _drain(events, on_event)
                for future in done:
                    pending.discard(future)
                    r = future.result()  # re-raises a worker's error here
                    stages[r["stage"]] = stages.get(r["stage"], 0.0) + r["seconds"]
                    if r["stage"].startswith("frontend/"):
                        fitted = r["stage"].split(":", 1)[1]
                        unblocked = [t for t in blocked if waiting_for[t[0].name] == fitted]
                        blocked[:] = [t for t in blocked if t not in unblocked]
                        queue.extend(("train", e, s) for e, s in unblocked)
                        queue.sort(key=lambda t: (t[0] != "frontend", -_cost(t[1]) * len(t[2])))
                submit_next()
            _drain(events, on_event)
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return stages


def _drain(events, on_event: EventFn | None) -> None:
    import queue

    while True:
        try:
            event = events.get_nowait()
        except queue.Empty:
            return
        if on_event is not None:
            on_event(event)


# ---------------------------------------------------------------- the entry points

def _prepare_fused_kernel(stages: dict[str, float], progress: bool) -> str:
    """Build (or load the cached) compiled CPU epoch here, before workers start, so that they only
    load it; returns which training step the run uses, for the manifest."""
    t0 = time.perf_counter()
    status = contextlib.nullcontext()
    if progress and fused.enabled():
        from rich.console import Console

        status = Console(stderr=True).status("Preparing the compiled training kernel "
                                             "(built once per machine, about 25 s; then cached)...")
    with status:
        kernel = fused.load()
    stages["kernel"] = time.perf_counter() - t0
    return "fused CPU epoch" if kernel is not None else f"eager step ({fused.unavailable_reason()})"


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
              command: str | None = None) -> Path:
    """Train and evaluate every experiment of `study` for every seed; return the run directory.

    `seeds` is a list of seeds or a count N (seeds 0..N-1). Results go to `out`, by default
    `runs/<study>-<timestamp>/`. An existing `out` that holds a run of the same study is resumed.
    """
    if not isinstance(study, Study):
        study = load_study(study)
    seeds = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise RunError(f"seeds must be distinct non-negative integers, got {seeds}")
    run_dir = Path(out) if out is not None else new_run_dir(study, runs_dir)
    if (run_dir / "study.json").is_file():
        return resume_run(run_dir, device=device, data_dir=data_dir, workers=workers, progress=progress,
                          on_event=on_event, seeds=seeds, expected_study=study)
    if run_dir.exists() and any(run_dir.iterdir()):
        raise RunError(f"{run_dir} exists and is not a run directory; choose an empty or new --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "study.json", study_to_dict(study))
    return _execute(run_dir, study, seeds, device, data_dir, workers, progress, on_event, command, {})


def resume_run(run_dir: str | Path, *, device: str = "auto", data_dir: str | Path | None = None,
               workers: int | None = None, progress: bool = True, on_event: EventFn | None = None,
               seeds: list[int] | None = None, expected_study: Study | None = None,
               command: str | None = None) -> Path:
    """Finish an interrupted run: only the front-ends and seeds that are missing are computed."""
    run_dir = Path(run_dir)
    if not (run_dir / "study.json").is_file():
        raise RunError(f"cannot resume {run_dir}: it has no study.json, so it is not a run directory")
    study = Study.model_validate(read_json(run_dir / "study.json"))
    if expected_study is not None and study_to_dict(expected_study) != study_to_dict(study):
        raise RunError(f"{run_dir} holds a run of a different study ({study.name}); choose another --out")
    manifest = read_json(run_dir / "manifest.json") if (run_dir / "manifest.json").is_file() else {}
    recorded = manifest.get("seeds", [])
    seeds = sorted(set(recorded) | set(seeds or recorded or [0]))
    if data_dir is None and manifest.get("data", {}).get("source"):
        data_dir = manifest["data"]["source"]  # finish on the data the run started with
    return _execute(run_dir, study, seeds, device, data_dir, workers, progress, on_event, command, manifest)


def _execute(run_dir: Path, study: Study, seeds: list[int], device: str, data_dir, workers, progress: bool,
             on_event: EventFn | None, command: str | None, manifest: dict) -> Path:
    started = time.perf_counter()
    dev = resolve_device(device)
    workers = default_workers(dev) if workers is None else workers
    t0 = time.perf_counter()
    dataset = load_dataset(data_dir, download=True, progress=progress)
    recorded = manifest.get("data", {}).get("digests")
    if recorded and recorded != dataset.digests:
        raise RunError(f"{run_dir} was started on other data (digests differ from those of {dataset.source}); "
                       f"resume it with --data-dir pointing at the data it was started on")
    stages = dict(manifest.get("stages", {}))
    stages["data"] = time.perf_counter() - t0
    manifest.update({
        "study": study.name,
        "created": manifest.get("created", datetime.now(timezone.utc).isoformat(timespec="seconds")),
        "command": manifest.get("command", command or " ".join(["mnist-study", *sys.argv[1:]])),
        "seeds": seeds,
        "device": _device_name(dev),
        "workers": workers,
        "versions": package_versions(),
        "git_commit": git_commit(),
        "data": {"source": dataset.source, "verified": dataset.verified, "digests": dataset.digests},
        "stages": stages,
        "complete": False,
    })
    if manifest.get("wall_seconds") is not None:
        manifest.setdefault("resumed", []).append(datetime.now(timezone.utc).isoformat(timespec="seconds"))
    write_json(run_dir / "manifest.json", manifest)

    plan = _plan(study, seeds, run_dir)
    if dev.type == "cpu" and plan.training:
        manifest["training_step"] = _prepare_fused_kernel(stages, progress)
    elif plan.training:
        manifest["training_step"] = "eager step"  # the compiled epoch is CPU-only
    events = on_event
    bar = None
    if progress and on_event is None:
        from mnist_study.progress import TrainingProgress

        bar = TrainingProgress(study, seeds, plan)
        events = bar.update
    try:
        if bar:
            bar.start()
        stages.update(_run_tasks(plan, run_dir, dataset.source, dev, workers, events))
    finally:
        if bar:
            bar.stop()
        manifest["wall_seconds"] = manifest.get("wall_seconds", 0.0) + time.perf_counter() - started
        manifest["stages"] = stages
        missing = [(e.name, s) for e in study.experiments for s in seeds if not is_finished(run_dir, e.name, s)]
        manifest["complete"] = not missing
        write_json(run_dir / "manifest.json", manifest)
    return run_dir
