"""Seconds per epoch of the paper's network (the compiled epoch) in one source tree: to compare two commits.

    git worktree add /tmp/before ac88a44
    for i in 1 2 3 4 5 6; do
        python benchmarks/epoch_by_tree.py /tmp/before 16,130,500
        python benchmarks/epoch_by_tree.py .            16,130,500
    done

Each call imports `mnist_study` from the tree given, trains one seed of width H for one warm-up
epoch and three timed epochs on MNIST's 55,000 training images (one thread, flush-to-zero on, the
paper's L2 of 0.001) and prints "H:seconds" for the fastest epoch. Alternate the trees, so that
drift in the machine's load hits both alike, and compare medians.
"""

import sys
import time
from pathlib import Path

tree = Path(sys.argv[1]).resolve()
sys.path.insert(0, str(tree))

import torch  # noqa: E402

from mnist_study.data.sources import load_dataset  # noqa: E402
from mnist_study.data.splits import make_splits  # noqa: E402
from mnist_study.training import trainer  # noqa: E402

assert Path(trainer.__file__).resolve().is_relative_to(tree), f"imported {trainer.__file__}, not from {tree}"
torch.set_num_threads(1)
torch.set_flush_denormal(True)
x, y = make_splits(load_dataset(download=False, progress=False))["train"]
split = trainer.Split(torch.as_tensor(x), torch.as_tensor(y))
timings = []
for width in (int(w) for w in sys.argv[2].split(",")):
    fit = trainer.StackedTrainer(trainer.TrainConfig(hidden=width, l2=0.001), x.shape[1], [0], torch.device("cpu"),
                                 use_fused=True)
    fit.train_epoch(split)
    seconds = []
    for _ in range(3):
        start = time.perf_counter()
        fit.train_epoch(split)
        seconds.append(time.perf_counter() - start)
    timings.append(f"{width}:{min(seconds):.3f}")
print(" ".join(timings))
