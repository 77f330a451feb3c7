"""The work of a run, as tasks that can run in any process: fit a front-end, train seeds.

Each task is a frozen dataclass (picklable, so an executor can send it to a worker) whose
`run(emit)` does the work, writes its results into the run directory atomically and returns
how long it took. Progress goes out through `emit` as plain dict events:

    frontend-start, frontend-progress (done, total, unit), frontend-done (seconds),
    epoch (task, epoch, active, seeds, val_accuracy), seed-done (seed, test_accuracy, epochs, diverged)

Events name their experiment; an experiment's seeds may be split over several tasks (`task`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file

from mnist_study.data.sources import Dataset, load_dataset
from mnist_study.data.augment import augment_epoch
from mnist_study.data.splits import make_splits, split_record
from mnist_study.executor import EventFn
from mnist_study.files import atomic_path, write_json
from mnist_study.results import experiment_dir, seed_dir
from mnist_study.study import Experiment
from mnist_study.training.evaluate import evaluate
from mnist_study.training.frontends import FRONTENDS, load_frontend, save_frontend
from mnist_study.training.model import MLP
from mnist_study.training.trainer import Split, TrainResult, train_seeds


@dataclass(frozen=True)
class StageTime:
    """What a task reports back: the stage it ran (as the manifest names it) and its seconds."""

    stage: str
    seconds: float


@dataclass(frozen=True)
class FitFrontend:
    """Fit `experiment`'s front-end on its training split; save it for each experiment in `targets`."""

    run_dir: str
    experiment: dict          # the resolved Experiment, as JSON
    targets: tuple[str, ...]  # experiments that share this front-end (same kind, parameters and split)
    data_dir: str

    @property
    def name(self) -> str:
        return self.experiment["name"]

    @property
    def inputs(self) -> tuple[str, ...]:
        """The files of the run directory this task reads (relative paths): none."""
        return ()

    def run(self, emit: EventFn) -> StageTime:
        return fit_frontend_task(self.run_dir, self.experiment, list(self.targets), self.data_dir, emit)


@dataclass(frozen=True)
class TrainSeeds:
    """Train `seeds` of `experiment` together, evaluate each, write its results."""

    run_dir: str
    experiment: dict
    seeds: tuple[int, ...]
    data_dir: str
    device: str

    @property
    def name(self) -> str:
        return self.experiment["name"]

    @property
    def inputs(self) -> tuple[str, ...]:
        """The files of the run directory this task reads (relative paths; the split record only
        where the experiment draws one): its experiment's fitted front-end."""
        folder = experiment_dir(Path(), self.name)
        return tuple(str(folder / name) for name in ("split.safetensors", "frontend.safetensors", "frontend.json"))

    def run(self, emit: EventFn) -> StageTime:
        return train_task(self.run_dir, self.experiment, list(self.seeds), self.data_dir, self.device, emit)


_DATASET_CACHE: dict[str, Dataset] = {}  # per process: a worker loads the data once for all its tasks


def _emit(event: dict, on_event: EventFn | None = None) -> None:
    if on_event is not None:
        on_event(event)


def _dataset(data_dir: str) -> Dataset:
    if data_dir not in _DATASET_CACHE:
        _DATASET_CACHE[data_dir] = load_dataset(data_dir, download=False, progress=False)
    return _DATASET_CACHE[data_dir]


def fit_frontend_task(run_dir: str, experiment: dict, targets: list[str], data_dir: str,
                      on_event: EventFn | None = None) -> StageTime:
    """Fit one front-end on an experiment's training split; save it for every experiment in `targets`."""
    exp = Experiment.model_validate(experiment)
    start = time.perf_counter()
    _emit({"kind": "frontend-start", "experiment": exp.name, "frontend": exp.frontend.kind}, on_event)
    dataset = _dataset(data_dir)
    x, y = make_splits(dataset, **exp.split_args())["train"]
    frontend = FRONTENDS[exp.frontend.kind].from_config(exp.frontend)
    frontend.fit(x, y, on_progress=lambda done, total: _emit(
        {"kind": "frontend-progress", "experiment": exp.name, "done": done, "total": total,
         "unit": frontend.progress_unit}, on_event))
    record = split_record(dataset, **exp.split_args()) if exp.train_size or exp.label_noise else None
    for name in targets:
        directory = experiment_dir(Path(run_dir), name)
        if record is not None:  # which images and labels were drawn: before the front-end, which marks it done
            with atomic_path(directory / "split.safetensors") as tmp:
                save_file(record, str(tmp))
        save_frontend(frontend, directory)
    seconds = time.perf_counter() - start
    _emit({"kind": "frontend-done", "experiment": exp.name, "frontend": exp.frontend.kind, "seconds": seconds}, on_event)
    return StageTime(f"frontend/{exp.frontend.kind}:{exp.name}", seconds)


def standardization(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-input mean and scale (N, D) -> (D,), (D,) over the training split; a constant input
    (a border pixel) gets scale 1 rather than a division by zero."""
    mean = x.mean(axis=0, dtype=np.float64)
    std = x.std(axis=0, dtype=np.float64)
    return mean.astype(np.float32), np.where(std > 1e-6, std, 1.0).astype(np.float32)


def divergence(result: TrainResult) -> dict | None:
    """metrics.json's `diverged`: None for a network that trained normally; else the epoch whose loss
    was NaN or infinite, and the last epoch with finite metrics (0 and None when it was the first)."""
    if result.diverged_epoch is None:
        return None
    last = result.epochs_run  # the diverging epoch is not in the history: the last one there is finite
    finite = {key: values[-1] for key, values in result.history.items()} if last else None
    return {"epoch": result.diverged_epoch, "last_finite_epoch": last, "last_finite": finite}


def train_task(run_dir: str, experiment: dict, seeds: list[int], data_dir: str, device: str,
               on_event: EventFn | None = None) -> StageTime:
    """Train the given seeds of one experiment together, evaluate each, write its results."""
    # Tiny RMSprop accumulators otherwise slow every step; the setting is process-wide, so it is
    # undone afterwards for whatever else runs in this process.
    torch.set_flush_denormal(True)
    try:
        return _train(run_dir, experiment, seeds, data_dir, device, on_event)
    finally:
        torch.set_flush_denormal(False)


def _train(run_dir: str, experiment: dict, seeds: list[int], data_dir: str, device: str,
           on_event: EventFn | None) -> dict:
    exp = Experiment.model_validate(experiment)
    start = time.perf_counter()
    splits = make_splits(_dataset(data_dir), **exp.split_args())
    frontend = load_frontend(experiment_dir(Path(run_dir), exp.name))
    inputs = {name: (frontend.transform(x), y) for name, (x, y) in splits.items()}
    scaling = standardization(inputs["train"][0]) if exp.standardize else None
    dev = torch.device(device)

    def network_inputs(x: np.ndarray) -> torch.Tensor:
        """What the network trains on: front-end features, standardised when asked for."""
        if scaling is not None:
            x = (x - scaling[0]) / scaling[1]
        return torch.as_tensor(x, device=dev)

    as_split = lambda name: Split(network_inputs(inputs[name][0]), torch.as_tensor(inputs[name][1], device=dev))  # noqa: E731
    epoch_inputs = None
    if exp.augmented:
        images = torch.as_tensor(splits["train"][0])

        def epoch_inputs(epoch: int) -> torch.Tensor:
            # One draw per epoch for every seed of the experiment (it depends on data_seed and the
            # epoch only), so a seed's result does not depend on which seeds train beside it.
            drawn = augment_epoch(images, epoch, exp.data_seed, exp.shift, exp.elastic, exp.elastic_alpha,
                                  exp.elastic_sigma)
            return network_inputs(frontend.transform(drawn.numpy()))

    task = f"{exp.name}/seeds-{'-'.join(map(str, seeds))}"  # this task's part of the experiment's seeds

    def on_epoch(epoch, states):
        active = [s for s in states if not s.stopped]
        # A seed that diverged in its first epoch has no finite epoch to show.
        best = max((s.history["val_accuracy"][-1] for s in states if s.history["val_accuracy"]), default=0.0)
        _emit({"kind": "epoch", "experiment": exp.name, "task": task, "epoch": epoch, "active": len(active),
               "seeds": len(states), "val_accuracy": best}, on_event)

    results = train_seeds(exp.train_config(), as_split("train"), as_split("validation"), seeds, dev, on_epoch,
                          epoch_inputs=epoch_inputs, standardize=scaling)
    train_seconds = time.perf_counter() - start
    for result in results:
        t0 = time.perf_counter()
        model = MLP(result.params, exp.activation)
        ev = evaluate(model, inputs, exp.l2, loss=exp.loss, label_smoothing=exp.label_smoothing,
                      l2_scope=exp.l2_scope)
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
            "diverged": divergence(result),
        })
        _emit({"kind": "seed-done", "experiment": exp.name, "seed": result.seed,
               "test_accuracy": ev.accuracy["test"], "epochs": result.epochs_run,
               "diverged": result.diverged_epoch}, on_event)
    return StageTime(f"train/{exp.name}", time.perf_counter() - start)
