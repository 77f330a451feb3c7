"""The paper's splits: 5,000 training images held out for validation, pixels scaled to [0, 1].

Experiments 1-8 use Keras' `validation_split`, which holds out the LAST 5,000 training images;
experiments 9-10 slice off the FIRST 5,000 by hand (`train_images[:5000]`).

Beyond the paper, an experiment may train on fewer images (`train_size`: a class-stratified random
subset of what is left after holding out validation, drawn with `data_seed`) and on noisy labels
(`label_noise`: that fraction of the training labels replaced by another class, drawn with
`(data_seed, 1)`). Validation and test are never subsampled nor made noisy, so that every
experiment is judged against the same true labels. `split_record` returns what was drawn, to save
beside results. With `train_size=None` and `label_noise=0` the splits are exactly the paper's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mnist_study.data.sources import Dataset
from mnist_study.data.subsets import flip_labels, stratified_subset
from mnist_study.errors import OptionError

SPLITS = ("train", "validation", "test")  # every experiment's three splits, in this order
Splits = dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (pixels (N, 784) float32, labels (N,) int64)
NOISE_STREAM = 1  # label noise is drawn with default_rng((data_seed, 1)): apart from the subset's draw


def flatten_scaled(images: np.ndarray) -> np.ndarray:
    """uint8 images (N, 28, 28) -> float32 (N, 784) in [0, 1], as `x.astype('float32') / 255`."""
    return images.reshape(len(images), -1).astype(np.float32) / np.float32(255)


@dataclass(frozen=True)
class _Choice:
    train: slice | np.ndarray   # which of the dataset's training images train
    validation: slice
    train_labels: np.ndarray    # int64, with the noise
    flipped: np.ndarray         # int64 positions in the training split whose labels were replaced


def _choose(labels: np.ndarray, validation: str, validation_size: int, train_size: int | None,
            label_noise: float, data_seed: int) -> _Choice:
    y = labels.astype(np.int64)
    n = len(y)
    if not 0 < validation_size < n:
        raise ValueError(f"validation_size must be between 1 and {n - 1}, got {validation_size}")
    if validation == "last":
        train, val = slice(0, n - validation_size), slice(n - validation_size, n)
    elif validation == "first":
        train, val = slice(validation_size, n), slice(0, validation_size)
    else:
        raise ValueError(f"validation must be 'last' or 'first', got {validation!r}")
    if train_size is not None:
        available = train.stop - train.start
        if not 0 < train_size <= available:
            raise OptionError(f"train_size must be between 1 and the {available:,} training images left after "
                              f"holding out {validation_size:,} for validation, got {train_size:,}")
        train = train.start + stratified_subset(y[train], train_size, data_seed)
    y_train, flipped = y[train], np.zeros(0, np.int64)
    if label_noise:
        y_train, flipped = flip_labels(y_train, label_noise, (data_seed, NOISE_STREAM))
    return _Choice(train, val, y_train, flipped)


def make_splits(dataset: Dataset, validation: str = "last", validation_size: int = 5000,
                train_size: int | None = None, *, label_noise: float = 0.0, data_seed: int = 0) -> Splits:
    """Train / validation / test splits of `dataset` for one experiment.

    Parameters
    ----------
    dataset : Dataset
    validation : "last" or "first"
        Which of the training images are held out for validation.
    validation_size : int
        How many are held out.
    train_size : int, optional
        Train on a class-stratified random subset of this many of the rest (drawn with
        `data_seed`; see `subsets.stratified_subset`), kept in the dataset's order. None: all.
    label_noise : float
        Fraction of the training labels replaced by a different class, in [0, 1) (see
        `subsets.flip_labels`). Validation and test labels are untouched.
    data_seed : int
        Seeds the subset and the noise; the same arguments always give the same splits.

    Returns
    -------
    Splits
        "train", "validation", "test" -> (pixels (N, 784) float32 in [0, 1], labels (N,) int64).
    """
    choice = _choose(dataset.train_labels, validation, validation_size, train_size, label_noise, data_seed)
    x = flatten_scaled(dataset.train_images)
    y = dataset.train_labels.astype(np.int64)
    return {
        "train": (x[choice.train], choice.train_labels),
        "validation": (x[choice.validation], y[choice.validation]),
        "test": (flatten_scaled(dataset.test_images), dataset.test_labels.astype(np.int64)),
    }


def split_record(dataset: Dataset, validation: str = "last", validation_size: int = 5000,
                 train_size: int | None = None, *, label_noise: float = 0.0,
                 data_seed: int = 0) -> dict[str, np.ndarray]:
    """What `make_splits` with the same arguments chose, as int64 arrays to save beside results.

    Returns
    -------
    dict
        "train_indices": (n_train,) the dataset's training images that form the training split, in
        its order; "validation_indices": (n_validation,) likewise for validation;
        "flipped_indices": (n_flipped,) ascending, the training images whose labels were replaced
        (also indices into the dataset's training images); "flipped_labels": (n_flipped,) the
        labels they were given. `np.savez(path, **split_record(...))` stores it.
    """
    choice = _choose(dataset.train_labels, validation, validation_size, train_size, label_noise, data_seed)
    indices = np.arange(len(dataset.train_labels), dtype=np.int64)
    train = indices[choice.train]
    return {
        "train_indices": train,
        "validation_indices": indices[choice.validation],
        "flipped_indices": train[choice.flipped],
        "flipped_labels": choice.train_labels[choice.flipped],
    }
