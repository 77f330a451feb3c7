"""A run directory on disk, and how to read it back.

    RUN_DIR/
      study.json                     the resolved study
      manifest.json                  versions, data digests, device, git commit, seeds, stage times
      experiments/<name>/
        frontend.json, frontend.safetensors     the fitted front-end
        split.safetensors            with train_size or label_noise: the training images drawn and the
                                     labels replaced (data.splits.split_record)
        seed-<k>/
          model.safetensors          hidden.kernel (D, H1), hidden.bias (1, H1), hidden2.kernel (H1, H2) ...,
                                     output.kernel (H, 10), output.bias (1, 10); input.mean, input.scale
                                     (1, D) when standardised; the activation in its metadata
          evaluation.safetensors     confusion (10, 10) int64, test_proba (N_test, 10) float32
          history.json               per-epoch loss, accuracy, val_loss, val_accuracy (Keras' names)
          classification_report.json per-class precision / recall / F1 / support
          metrics.json               accuracy and loss per split, epochs; written last: its presence
                                     marks the seed as finished
      run.lock                       who is running or reporting on the run now (runlock.py)

A seed is finished when its metrics.json and every other file of it read back (integrity.py): a
damaged seed counts as unfinished, so `--resume` redoes it, and `load_run` names the damaged file
instead of failing later, deep inside a reader.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file

from mnist_study.data.splits import SPLITS
from mnist_study.errors import RunError
from mnist_study.files import read_json
from mnist_study.integrity import file_problem, frontend_problem, seed_problem
from mnist_study.training.model import MLP
from mnist_study.training.network import count_parameters
from mnist_study.study import Experiment, Study


def damaged(path: Path, problem: str, run_dir: Path) -> RunError:
    """The error every reader gives for a result file that does not read back."""
    redo = "refits that front-end" if path.name.startswith("frontend") else "retrains that seed"
    return RunError(f"{path} is damaged: {problem}; `mnist-study run --resume {run_dir}` {redo}")


def _read(path: Path, load, run_dir: Path):
    """`load(path)`, with any failure to read the file turned into a RunError that names it."""
    try:
        return load(path)
    except RunError:
        raise
    except Exception as error:  # json, safetensors and torch each fail in their own way
        raise damaged(path, file_problem(path) or f"it cannot be loaded ({error})", run_dir) from None


def experiment_dir(run_dir: Path, experiment: str) -> Path:
    return Path(run_dir) / "experiments" / experiment


def seed_dir(run_dir: Path, experiment: str, seed: int) -> Path:
    return experiment_dir(run_dir, experiment) / f"seed-{seed}"


def is_finished(run_dir: Path, experiment: str, seed: int) -> bool:
    """The seed's completion marker is there, and every file of the seed reads back."""
    path = seed_dir(run_dir, experiment, seed)
    return (path / "metrics.json").is_file() and seed_problem(path) is None


def frontend_ready(run_dir: Path, experiment: str) -> bool:
    """The experiment's fitted front-end is there, and both its files read back."""
    return frontend_problem(experiment_dir(run_dir, experiment)) is None


@dataclass
class SeedResult:
    """One trained network of one experiment."""

    experiment: str
    seed: int
    path: Path
    metrics: dict

    @property
    def diverged(self) -> bool:
        """Whether this seed's loss became NaN or infinite (training stopped there)."""
        return isinstance(self.metrics.get("diverged"), dict)

    def accuracy(self, split: str) -> float:
        """Accuracy in percent on `split` (train, validation or test)."""
        return 100.0 * self.metrics["accuracy"][split]

    @cached_property
    def history(self) -> dict[str, list[float]]:
        return _read(self.path / "history.json", read_json, self.run_dir)

    @cached_property
    def _evaluation(self) -> dict[str, np.ndarray]:
        return _read(self.path / "evaluation.safetensors", lambda p: load_file(str(p)), self.run_dir)

    @property
    def confusion(self) -> np.ndarray:
        return self._evaluation["confusion"]

    @property
    def test_proba(self) -> np.ndarray:
        return self._evaluation["test_proba"]

    @cached_property
    def classification_report(self) -> dict:
        return _read(self.path / "classification_report.json", read_json, self.run_dir)

    def model(self) -> MLP:
        return _read(self.path / "model.safetensors", MLP.load, self.run_dir)

    @cached_property
    def n_parameters(self) -> int:
        """The network's trained parameters (weights and biases), from model.safetensors' header alone."""
        return _read(self.path / "model.safetensors", _parameters_in, self.run_dir)

    @property
    def run_dir(self) -> Path:
        return self.path.parents[2]  # RUN_DIR/experiments/<name>/seed-<k>


def _parameters_in(path: Path) -> int:
    with safe_open(str(path), framework="numpy") as f:
        return count_parameters({name: f.get_slice(name).get_shape() for name in f.keys()})


@dataclass
class RunResults:
    """Everything a finished (or partly finished) run left on disk."""

    path: Path
    study: Study
    manifest: dict
    seeds: dict[str, list[SeedResult]] = field(default_factory=dict)

    @property
    def experiments(self) -> list[Experiment]:
        return self.study.experiments

    def results(self, experiment: str) -> list[SeedResult]:
        return self.seeds.get(experiment, [])

    def values(self, split: str = "test") -> dict[str, list[float]]:
        """Per-seed accuracies in percent, by experiment."""
        return {e.name: [r.accuracy(split) for r in self.results(e.name)] for e in self.experiments}

    def accuracy_table(self) -> dict[tuple[str, str], list[float]]:
        """(experiment, split) -> per-seed accuracies in percent: the input of claims and comparisons.

        Diverged seeds (metrics.json's `diverged`) are left out: their accuracy is that of weights
        from before the loss blew up, not of a trained network. `diverged_counts` says how many.
        """
        return {(e.name, s): [r.accuracy(s) for r in self.results(e.name) if not r.diverged]
                for e in self.experiments for s in SPLITS if self.results(e.name)}

    def diverged_counts(self) -> dict[str, int]:
        """Experiment -> how many of its finished seeds diverged."""
        return {e.name: sum(r.diverged for r in self.results(e.name)) for e in self.experiments}

    def frontend(self, experiment: str):
        from mnist_study.training.frontends import load_frontend

        directory = experiment_dir(self.path, experiment)
        problem = frontend_problem(directory)
        if problem is not None:
            raise damaged(*problem, self.path)
        return _read(directory / "frontend.json", lambda p: load_frontend(p.parent), self.path)

    def missing(self) -> list[tuple[str, int]]:
        seeds = self.manifest.get("seeds", [0])
        return [(e.name, s) for e in self.experiments for s in seeds if not is_finished(self.path, e.name, s)]


def _read_study_and_manifest(run_dir: Path) -> tuple[Study, dict]:
    if not (run_dir / "study.json").is_file():
        raise RunError(f"{run_dir} is not a run directory (no study.json); "
                       f"give the folder that `mnist-study run` printed, e.g. runs/paper-20260101-120000")
    try:
        study = Study.model_validate(read_json(run_dir / "study.json"))
        manifest = read_json(run_dir / "manifest.json") if (run_dir / "manifest.json").is_file() else {}
    except ValueError as error:  # json.JSONDecodeError and pydantic's ValidationError are ValueErrors
        raise RunError(f"{run_dir} is damaged: its study.json or manifest.json cannot be read ({error})") from None
    return study, manifest


def read_study(run_dir: str | Path) -> Study:
    """The study a run directory holds, without reading (or checking) its results."""
    return _read_study_and_manifest(Path(run_dir))[0]


def seed_dirs(run_dir: Path, experiment: str) -> list[Path]:
    """The experiment's seed-<k> folders, by seed."""
    found = [p for p in experiment_dir(run_dir, experiment).glob("seed-*") if p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def load_run(run_dir: str | Path) -> RunResults:
    """Read a run directory written by `run_study`.

    Raises RunError naming the first result file that does not read back (a finished seed's, or a
    saved front-end's), and what is wrong with it.
    """
    run_dir = Path(run_dir)
    study, manifest = _read_study_and_manifest(run_dir)
    run = RunResults(run_dir, study, manifest)
    for e in study.experiments:
        found = []
        for path in seed_dirs(run_dir, e.name):
            if not (path / "metrics.json").is_file():
                continue  # not finished yet: missing, not damaged
            problem = seed_problem(path)
            if problem is not None:
                raise damaged(*problem, run_dir)
            found.append(SeedResult(e.name, int(path.name[5:]), path, read_json(path / "metrics.json")))
        # A front-end without its frontend.json is not fitted yet (or being refitted): readers that
        # need it say so (RunResults.frontend); one that is there must read back.
        directory = experiment_dir(run_dir, e.name)
        if (directory / "frontend.json").is_file() and (problem := frontend_problem(directory)) is not None:
            raise damaged(*problem, run_dir)
        run.seeds[e.name] = found
    return run
