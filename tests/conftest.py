"""Shared fixtures: a tiny learnable dataset in MNIST's layout, and the real MNIST when present."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from mnist_study.data.idx import write_idx

# A copy of MNIST beside the checkout, when there is one; otherwise tests find it as the product does.
SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"

TINY_STUDY = """
name = "tiny"
description = "three small networks on synthetic digits"

[[experiment]]
name = "raw8"
hidden = 8
l2 = 0.001
max_epochs = 6
validation_size = 200

[[experiment]]
name = "pca8"
hidden = 8
frontend = { kind = "pca", variance = 0.9 }
max_epochs = 3
early_stopping = false
validation = "first"
validation_size = 200

[[experiment]]
name = "forest8"
hidden = 8
frontend = { kind = "forest_pixels", n_pixels = 20, n_trees = 5 }
max_epochs = 3
early_stopping = false
validation = "first"
validation_size = 200
"""


# The tiny study with one wide, longer-training experiment: a training stage long enough to kill.
KILLABLE_STUDY = TINY_STUDY + """
[[experiment]]
name = "raw64"
hidden = 64
max_epochs = 25
early_stopping = false
validation_size = 200
"""

def synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 28, 28) uint8 where digit k is a bright bar on rows 2k+3..2k+5, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, 28, 28)).astype(np.float64)
    for i, k in enumerate(labels):
        start = rng.integers(4, 10)
        images[i, 2 * k + 3: 2 * k + 6, start:start + 14] += 190
    return np.clip(images, 0, 255).astype(np.uint8), labels


def write_dataset(directory: Path, n_train: int = 2200, n_test: int = 300) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    train_x, train_y = synthetic_digits(n_train, 0)
    test_x, test_y = synthetic_digits(n_test, 1)
    write_idx(directory / "train-images-idx3-ubyte.gz", train_x, compress=True)
    write_idx(directory / "train-labels-idx1-ubyte.gz", train_y, compress=True)
    write_idx(directory / "t10k-images-idx3-ubyte.gz", test_x, compress=True)
    write_idx(directory / "t10k-labels-idx1-ubyte.gz", test_y, compress=True)
    return directory


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A folder with a small synthetic dataset in MNIST's IDX layout (not MNIST: unverified)."""
    return write_dataset(tmp_path_factory.mktemp("tiny-data"))


@pytest.fixture(scope="session")
def tiny_study():
    from mnist_study.studies import parse_study

    return parse_study(TINY_STUDY, "tiny.toml")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_data, tiny_study) -> Path:
    """A finished run of the tiny study (two seeds), made once per session."""
    from mnist_study.runner import run_study

    out = tmp_path_factory.mktemp("runs") / "tiny-run"
    return run_study(tiny_study, seeds=[0, 1], device="cpu", data_dir=tiny_data, out=out, workers=0,
                     progress=False)


@pytest.fixture(scope="session")
def mnist(real_mnist):
    """The real MNIST, loaded once per session."""
    from mnist_study.data.sources import load_dataset

    return load_dataset(real_mnist, download=False, progress=False)


@pytest.fixture(scope="session")
def real_mnist() -> Path:
    """The folder holding the real MNIST, found the way `mnist-study data` finds it ($MNIST_STUDY_DATA,
    the user cache, /usr/share/datasets/mnist) and fetched into the cache when it is nowhere."""
    from mnist_study.data.sources import load_dataset
    from mnist_study.errors import DataError

    given = None if os.environ.get("MNIST_STUDY_DATA") or not SHARED_MNIST.is_dir() else SHARED_MNIST
    try:
        return Path(load_dataset(given, download=True, progress=False).source)
    except DataError as error:  # no copy here and no network to fetch one
        pytest.skip(f"MNIST is not on this machine and could not be fetched: {error}")


def train_study(study_text: str, seeds: list[int], data_dir: Path, out: Path) -> Path:
    """Train a small study in this process (for tests that need real trained networks)."""
    from mnist_study.runner import run_study
    from mnist_study.studies import parse_study

    return run_study(parse_study(study_text), seeds=seeds, device="cpu", data_dir=data_dir, out=out, workers=0,
                     progress=False)


@pytest.fixture
def fresh_fused(monkeypatch):
    """No compiled kernel settled yet in this process, and no decision inherited from a parent."""
    from mnist_study.training import fused

    monkeypatch.setattr(fused, "_outcomes", {})
    monkeypatch.setattr(fused, "_warned", set())
    monkeypatch.setenv(fused.DECISION_VAR, "")
    monkeypatch.delenv(fused.ENV_SWITCH, raising=False)
