"""Images per second through a trained network: in batches, one at a time, and from pictures.

    python benchmarks/predict_throughput.py RUN_DIR [--experiment exp6] [--n 10000]
    python benchmarks/predict_throughput.py            # trains a quick 130-node network first (~5 s)

Rows:
  batch             predict(uint8 (N, 28, 28)) in one call: the network and front-end alone
  single            predict(one (28, 28) array) per call: per-call overhead dominates
  preprocess only   preprocess(280x280 drawing): crop, scale, centre
  picture, single   predict(PIL drawing): preprocessing and the network, one image per call
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mnist_study.serving.classifier import load_classifier
from mnist_study.serving.preprocess import preprocess

QUICK_STUDY = """
name = "bench"
[[experiment]]
name = "raw130"
title = "784 raw pixels, 130 hidden nodes"
hidden = 130
l2 = 0.001
max_epochs = 5
early_stopping = false
train_size = 20000
"""


def test_images(data_dir: str | None, n: int) -> np.ndarray:
    """MNIST test digits, uint8 (n, 28, 28)."""
    from mnist_study.data.sources import load_dataset

    images = load_dataset(data_dir, download=False, progress=False).test_images
    return np.resize(images, (n, 28, 28)) if n > len(images) else images[:n]


def quick_run(data_dir: str | None) -> Path:
    """Train the quick study into a temporary folder and return the run directory."""
    from mnist_study.runner import run_study
    from mnist_study.studies import parse_study

    out = Path(tempfile.mkdtemp(prefix="mnist-bench-")) / "run"
    return run_study(parse_study(QUICK_STUDY), seeds=[0], device="cpu", data_dir=data_dir, out=out,
                     workers=0, progress=False)


def drawing(image: np.ndarray) -> Image.Image:
    """A digit as the drawing page sends it: dark ink on a white 280x280 canvas."""
    return Image.fromarray(255 - image).resize((280, 280), Image.Resampling.BICUBIC).convert("RGB")


def rate(fn, items, min_seconds: float = 1.0) -> float:
    """Items per second of fn(item) over `items`, repeated until at least `min_seconds` have passed."""
    done, start = 0, time.perf_counter()
    while True:
        for item in items:
            fn(item)
        done += len(items)
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return done / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", nargs="?", help="a run directory; default: train a quick network first")
    parser.add_argument("--experiment", help="experiment name; default: the best on validation")
    parser.add_argument("--data-dir", default=os.environ.get("MNIST_STUDY_DATA"), help="where MNIST is")
    parser.add_argument("--n", type=int, default=10_000, help="images in the batch")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    run_dir = args.run_dir or quick_run(args.data_dir)
    clf = load_classifier(run_dir, args.experiment)
    images = test_images(args.data_dir, args.n)
    pictures = [drawing(im) for im in images[:200]]
    clf.predict(images[:100])  # warm up

    start = time.perf_counter()
    clf.predict(images)
    batch = len(images) / (time.perf_counter() - start)
    rows = [
        ("batch", batch),
        ("single", rate(clf.predict, list(images[:500]))),
        ("preprocess only", rate(preprocess, pictures)),
        ("picture, single", rate(clf.predict, pictures)),
    ]
    print(f"{clf!r}")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads")
    print(f"{'mode':<18}{'images/s':>12}{'ms/image':>11}")
    for name, per_second in rows:
        print(f"{name:<18}{per_second:>12,.0f}{1000 / per_second:>11.3f}")


if __name__ == "__main__":
    main()
