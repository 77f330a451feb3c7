"""A trained network from a run directory, ready to classify digits.

Example
-------
>>> from mnist_study.serving.classifier import load_classifier
>>> clf = load_classifier("runs/paper-20260101-120000")      # the best experiment on validation
>>> clf.predict(test_images[:5])                             # uint8 (N, 28, 28) -> digits (N,)
>>> from PIL import Image
>>> clf.predict_proba(Image.open("seven.jpg"))               # any photo: preprocessed first -> (1, 10)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from mnist_study.errors import RunError
from mnist_study.training.model import MLP
from mnist_study.serving.preprocess import SIZE, ImageError, preprocess
from mnist_study.results import RunResults, SeedResult, load_run
from mnist_study.study import Experiment


def as_inputs(x: Any) -> np.ndarray:
    """Network inputs (N, 784) float32 in [0, 1] from arrays or images.

    Accepts numpy arrays (N, 784), (N, 28, 28), (784,) or (28, 28): integers 0-255 (any integer
    dtype) or floats in [0, 1], taken as MNIST-style already (centred, 28 x 28). An image whose
    border is light (dark ink on light paper) is inverted to MNIST's light ink on black, as files
    are. PIL images, or lists of them, go through `preprocess` (any size, either polarity).

    Raises `ImageError` (a ValueError) naming what is wrong: the shape, the dtype or the range.
    """
    if isinstance(x, Image.Image):
        return preprocess(x).reshape(1, -1)
    if isinstance(x, (list, tuple)) and x and all(isinstance(item, Image.Image) for item in x):
        return np.stack([preprocess(item).reshape(-1) for item in x])
    array = np.asarray(x)
    if array.dtype.kind in "iu":
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ImageError(f"integer pixels must lie in 0-255, got {array.min()} to {array.max()}")
        array = array.astype(np.float32) / np.float32(255)
    elif array.dtype.kind in "fb":
        array = array.astype(np.float32)
        if array.size and not np.isfinite(array).all():
            raise ImageError("pixels must be finite numbers; the array holds NaN or infinity")
        if array.size and (array.min() < 0 or array.max() > 1):
            raise ImageError(f"float pixels must lie in [0, 1], got {array.min():g} to {array.max():g}; "
                             "divide 0-255 values by 255, or pass them as integers")
    else:
        raise ImageError(f"expected a numpy array or PIL image(s), got {type(x).__name__} of {array.dtype}")
    images = _as_images(array)
    light = np.median(_border(images), axis=1) > 0.5  # paper, not ink, at the edges: dark on light
    images[light] = 1.0 - images[light]
    return images.reshape(len(images), SIZE * SIZE)


def _as_images(array: np.ndarray) -> np.ndarray:
    """(N, 28, 28) float32 from any accepted shape."""
    pixels = SIZE * SIZE
    if array.shape in ((pixels,), (SIZE, SIZE)):
        return array.reshape(1, SIZE, SIZE).copy()
    if array.ndim == 2 and array.shape[1] == pixels:
        return array.reshape(len(array), SIZE, SIZE).copy()
    if array.ndim == 3 and array.shape[1:] == (SIZE, SIZE):
        return array.copy()
    raise ImageError(f"expected inputs of shape (N, 784), (N, 28, 28), (784,) or (28, 28), got {array.shape}")


def _border(images: np.ndarray) -> np.ndarray:
    """The outermost ring of pixels of each image (N, 28, 28) -> (N, 108)."""
    return np.concatenate([images[:, 0], images[:, -1], images[:, 1:-1, 0], images[:, 1:-1, -1]], axis=1)


@dataclass
class DigitClassifier:
    """One trained network of one experiment, with its fitted front-end.

    Attributes
    ----------
    name : str
        The experiment's name, e.g. "exp6".
    experiment : Experiment
        Its configuration (title, hidden width, front-end, ...).
    seed : int
    validation_accuracy : float
        Fraction in [0, 1].
    """

    experiment: Experiment
    seed: int
    model: MLP
    frontend: Any
    validation_accuracy: float

    @property
    def name(self) -> str:
        return self.experiment.name

    @property
    def title(self) -> str:
        return self.experiment.title or self.experiment.name

    @property
    def hidden_width(self) -> int:
        return self.model.hidden_width

    def hidden_and_proba(self, x: Any) -> tuple[np.ndarray, np.ndarray]:
        """Hidden activations (N, H) and class probabilities (N, 10); see `as_inputs` for x."""
        return self.model.hidden_and_proba(self.frontend.transform(as_inputs(x)))

    def predict_proba(self, x: Any) -> np.ndarray:
        """Class probabilities (N, 10)."""
        return self.hidden_and_proba(x)[1]

    def predict(self, x: Any) -> np.ndarray:
        """Predicted digits (N,) int64."""
        return self.predict_proba(x).argmax(axis=1)

    def hidden_activations(self, x: Any) -> np.ndarray:
        """Activations of the hidden ReLU nodes (N, H), >= 0."""
        return self.hidden_and_proba(x)[0]

    def __repr__(self) -> str:
        return (f"DigitClassifier({self.name!r}, seed={self.seed}, hidden={self.hidden_width}, "
                f"frontend={self.experiment.frontend.kind!r}, validation_accuracy={self.validation_accuracy:.4f})")


def mean_validation_accuracy(results: Sequence[SeedResult]) -> float:
    return float(np.mean([r.metrics["accuracy"]["validation"] for r in results]))


def best_experiment(run: RunResults) -> str:
    """The experiment with the highest mean validation accuracy over its finished seeds."""
    scored = [(mean_validation_accuracy(run.results(e.name)), e.name) for e in run.experiments if run.results(e.name)]
    if not scored:
        raise RunError(f"{run.path} holds no finished network yet; finish it with `mnist-study run --resume {run.path}`")
    return max(scored, key=lambda item: item[0])[1]  # first of equals, in study order


def classifier_from_run(run: RunResults, experiment: str | None = None, seed: int | None = None) -> DigitClassifier:
    """Like `load_classifier`, from a run already read with `load_run`."""
    name = experiment or best_experiment(run)
    names = [e.name for e in run.experiments]
    if name not in names:
        raise RunError(f"{run.path} has no experiment {name!r}; it has: {', '.join(names)}")
    results = run.results(name)
    if not results:
        raise RunError(f"experiment {name!r} in {run.path} has no finished seed yet")
    if seed is None:  # the seed that did best on validation (the first of equals)
        chosen = max(results, key=lambda r: r.metrics["accuracy"]["validation"])
    else:
        matching = [r for r in results if r.seed == seed]
        if not matching:
            raise RunError(f"experiment {name!r} in {run.path} has no finished seed {seed}; it has seeds "
                           f"{', '.join(str(r.seed) for r in results)}")
        chosen = matching[0]
    return DigitClassifier(experiment=run.study.get(name), seed=chosen.seed, model=chosen.model(),
                           frontend=run.frontend(name),
                           validation_accuracy=float(chosen.metrics["accuracy"]["validation"]))


def load_classifier(run_dir: str | Path, experiment: str | None = None, seed: int | None = None) -> DigitClassifier:
    """Load one trained network of a run for inference.

    Parameters
    ----------
    run_dir : str or Path
        A run directory written by `run_study` (`mnist-study run`).
    experiment : str, optional
        Experiment name; by default the one with the highest mean validation accuracy.
    seed : int, optional
        By default the experiment's seed with the highest validation accuracy.

    Raises
    ------
    RunError
        When the run, the experiment or the seed is missing; the message lists what there is.
    """
    return classifier_from_run(load_run(run_dir), experiment, seed)
