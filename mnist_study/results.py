"""A run directory on disk, and how to read it back.

    RUN_DIR/
      study.json                     the resolved study
      manifest.json                  versions, data digests, device, git commit, seeds, stage times
      experiments/<name>/
        frontend.json, frontend.safetensors     the fitted front-end
        seed-<k>/
          model.safetensors          hidden.kernel (D, H), hidden.bias (1, H), output.kernel (H, 10), output.bias (1, 10)
          evaluation.safetensors     confusion (10, 10) int64, test_proba (N_test, 10) float32
          history.json               per-epoch loss, accuracy, val_loss, val_accuracy (Keras' names)
          classification_report.json per-class precision / recall / F1 / support
          metrics.json               accuracy and loss per split, epochs; written last: its presence
                                     marks the seed as finished
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from mnist_study.data.splits import SPLITS
from mnist_study.errors import RunError
from mnist_study.files import read_json
from mnist_study.training.model import MLP
from mnist_study.study import Experiment, Study



def experiment_dir(run_dir: Path, experiment: str) -> Path:
    return Path(run_dir) / "experiments" / experiment


def seed_dir(run_dir: Path, experiment: str, seed: int) -> Path:
    return experiment_dir(run_dir, experiment) / f"seed-{seed}"


def is_finished(run_dir: Path, experiment: str, seed: int) -> bool:
    return (seed_dir(run_dir, experiment, seed) / "metrics.json").is_file()


@dataclass
class SeedResult:
    """One trained network of one experiment."""

    experiment: str
    seed: int
    path: Path
    metrics: dict

    def accuracy(self, split: str) -> float:
        """Accuracy in percent on `split` (train, validation or test)."""
        return 100.0 * self.metrics["accuracy"][split]

    @cached_property
    def history(self) -> dict[str, list[float]]:
        return read_json(self.path / "history.json")

    @cached_property
    def _evaluation(self) -> dict[str, np.ndarray]:
        return load_file(str(self.path / "evaluation.safetensors"))

    @property
    def confusion(self) -> np.ndarray:
        return self._evaluation["confusion"]

    @property
    def test_proba(self) -> np.ndarray:
        return self._evaluation["test_proba"]

    @cached_property
    def classification_report(self) -> dict:
        return read_json(self.path / "classification_report.json")

    def model(self) -> MLP:
        return MLP.load(self.path / "model.safetensors")


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
        """(experiment, split) -> per-seed accuracies in percent: the input of claims and comparisons."""
        return {(e.name, s): [r.accuracy(s) for r in self.results(e.name)]
                for e in self.experiments for s in SPLITS if self.results(e.name)}

    def frontend(self, experiment: str):
        from mnist_study.training.frontends import load_frontend

        return load_frontend(experiment_dir(self.path, experiment))

    def missing(self) -> list[tuple[str, int]]:
        seeds = self.manifest.get("seeds", [0])
        return [(e.name, s) for e in self.experiments for s in seeds if not is_finished(self.path, e.name, s)]


def load_run(run_dir: str | Path) -> RunResults:
    """Read a run directory written by `run_study`."""
    from mnist_study.study import Study

    run_dir = Path(run_dir)
    if not (run_dir / "study.json").is_file():
        raise RunError(f"{run_dir} is not a run directory (no study.json); "
                       f"give the folder that `mnist-study run` printed, e.g. runs/paper-20260101-120000")
    try:
        study = Study.model_validate(read_json(run_dir / "study.json"))
        manifest = read_json(run_dir / "manifest.json") if (run_dir / "manifest.json").is_file() else {}
    except ValueError as error:  # json.JSONDecodeError and pydantic's ValidationError are ValueErrors
        raise RunError(f"{run_dir} is damaged: its study.json or manifest.json cannot be read ({error})") from None
    run = RunResults(run_dir, study, manifest)
    for e in study.experiments:
        found = []
        for path in sorted(experiment_dir(run_dir, e.name).glob("seed-*"), key=lambda p: int(p.name[5:])):
            if (path / "metrics.json").is_file():
                found.append(SeedResult(e.name, int(path.name[5:]), path, read_json(path / "metrics.json")))
        run.seeds[e.name] = found
    return run
