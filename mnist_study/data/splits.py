"""The paper's splits: 5,000 training images held out for validation, pixels scaled to [0, 1].

Experiments 1-8 use Keras' `validation_split`, which holds out the LAST 5,000 training images;
experiments 9-10 slice off the FIRST 5,000 by hand (`train_images[:5000]`).
"""

from __future__ import annotations

import numpy as np

from mnist_study.data.sources import Dataset

SPLITS = ("train", "validation", "test")  # every experiment's three splits, in this order
Splits = dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (pixels (N, 784) float32, labels (N,) int64)


def flatten_scaled(images: np.ndarray) -> np.ndarray:
    """uint8 images (N, 28, 28) -> float32 (N, 784) in [0, 1], as `x.astype('float32') / 255`."""
    return images.reshape(len(images), -1).astype(np.float32) / np.float32(255)


def make_splits(dataset: Dataset, validation: str = "last", validation_size: int = 5000,
                train_size: int | None = None) -> Splits:
    """Train / validation / test splits of `dataset` for one experiment."""
    x = flatten_scaled(dataset.train_images)
    y = dataset.train_labels.astype(np.int64)
    n = len(y)
    if not 0 < validation_size < n:
        raise ValueError(f"validation_size must be between 1 and {n - 1}, got {validation_size}")
    if validation == "last":
        train, val = slice(0, n - validation_size), slice(n - validation_size, n)
    elif validation == "first":
        train, val = slice(validation_size, n), slice(0, validation_size)
    else:
        raise ValueError(f"validation must be 'last' or 'first', got {validation!r}")
    x_train, y_train = x[train], y[train]
    if train_size is not None:
        x_train, y_train = x_train[:train_size], y_train[:train_size]
    return {
        "train": (x_train, y_train),
        "validation": (x[val], y[val]),
        "test": (flatten_scaled(dataset.test_images), dataset.test_labels.astype(np.int64)),
    }
