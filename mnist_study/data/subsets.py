"""Smaller and noisier training sets: class-stratified subsets, and labels flipped at random.

Both are pure functions of the labels and a seed (numpy's ``default_rng``), return new arrays and
change nothing in place, so that what was drawn can be drawn again from the seed, or recorded
(:func:`mnist_study.data.splits.split_record`).

Example
-------
>>> labels = np.repeat(np.arange(10), 100)
>>> idx = stratified_subset(labels, 50, seed=0)
>>> np.bincount(labels[idx]).tolist()
[5, 5, 5, 5, 5, 5, 5, 5, 5, 5]
>>> noisy, flipped = flip_labels(labels, 0.1, seed=0)
>>> len(flipped), bool((noisy[flipped] != labels[flipped]).all())
(100, True)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mnist_study.data.digits import N_CLASSES
from mnist_study.errors import OptionError

Seed = int | Sequence[int]  # anything np.random.default_rng takes as entropy


def class_quotas(labels: np.ndarray, size: int) -> dict[int, int]:
    """How many of each class a stratified subset of ``size`` takes: class -> count.

    Class c, with n_c of the n labels, gets its quota size * n_c / n rounded down, and the classes
    with the largest fractional parts get one more each (the largest-remainder method; ties go to
    the smaller class label), so that the counts sum to exactly ``size``. Every count is the quota
    rounded down or up, and equals the quota rounded to nearest wherever that alone sums to size.
    Integer arithmetic throughout, so no quota is off by a float's rounding.
    """
    classes, counts = np.unique(np.asarray(labels), return_counts=True)
    n = int(counts.sum())
    scaled = [size * int(count) for count in counts]
    quotas = [s // n for s in scaled]
    remainders = [s % n for s in scaled]
    short = size - sum(quotas)
    for i in sorted(range(len(classes)), key=lambda i: -remainders[i])[:short]:  # sorted() is stable
        quotas[i] += 1
    return {int(c): q for c, q in zip(classes, quotas)}


def stratified_subset(labels: np.ndarray, size: int, seed: Seed) -> np.ndarray:
    """Sorted indices of a random subset of ``size`` labels, each class in its proportion.

    Parameters
    ----------
    labels : np.ndarray, integer, shape (n,)
    size : int
        How many to take, 0 to n; each class gets the count :func:`class_quotas` gives.
    seed : int or sequence of int
        Seeds ``np.random.default_rng``; the same seed gives the same subset.

    Returns
    -------
    np.ndarray, int64, shape (size,)
        Indices into ``labels``, ascending (so a subset keeps the data's order).
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise OptionError(f"labels must be one-dimensional, got shape {labels.shape}")
    if not 0 <= size <= len(labels):
        raise OptionError(f"a subset of {size:,} cannot be drawn from {len(labels):,} labels; "
                          f"size must be between 0 and {len(labels):,}")
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(labels == c), quota, replace=False)
              for c, quota in class_quotas(labels, size).items()]
    return np.sort(np.concatenate(chosen)).astype(np.int64) if chosen else np.zeros(0, np.int64)


def flip_labels(labels: np.ndarray, fraction: float, seed: Seed,
                n_classes: int = N_CLASSES) -> tuple[np.ndarray, np.ndarray]:
    """Replace a random ``fraction`` of the labels, each by a different class drawn uniformly.

    Exactly ``round(fraction * n)`` labels (Python's ``round``) are chosen uniformly without
    replacement, and label y at each becomes y + k mod n_classes, k uniform in 1..n_classes-1:
    uniform over the other classes, never y itself (symmetric label noise).

    Parameters
    ----------
    labels : np.ndarray, integer, shape (n,)
        Values in 0..n_classes-1; not modified.
    fraction : float
        In [0, 1).
    seed : int or sequence of int
        Seeds ``np.random.default_rng``; the same seed flips the same labels the same way.
    n_classes : int
        How many classes there are (at least 2).

    Returns
    -------
    new_labels : np.ndarray, shape (n,), the dtype of ``labels``
        A copy with the flipped labels replaced.
    flipped : np.ndarray, int64, shape (round(fraction * n),)
        The positions flipped, ascending.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise OptionError(f"labels must be one-dimensional, got shape {labels.shape}")
    if not 0 <= fraction < 1:
        raise OptionError(f"the fraction of labels to flip must be in [0, 1), got {fraction}")
    if n_classes < 2:
        raise OptionError(f"flipping a label needs at least 2 classes, got n_classes={n_classes}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise OptionError(f"labels must lie in 0..{n_classes - 1}, got {labels.min()}..{labels.max()}")
    rng = np.random.default_rng(seed)
    flipped = np.sort(rng.choice(len(labels), round(fraction * len(labels)), replace=False)).astype(np.int64)
    offsets = rng.integers(1, n_classes, len(flipped))
    new_labels = labels.copy()
    new_labels[flipped] = ((labels[flipped].astype(np.int64) + offsets) % n_classes).astype(labels.dtype)
    return new_labels, flipped
