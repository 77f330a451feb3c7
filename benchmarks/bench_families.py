"""Seconds per training epoch per network, on one thread: our general path beside the plain PyTorch loop.

    python benchmarks/bench_families.py            # 26 families, 10,000 images, 3 repeats (~10 min)
    python benchmarks/bench_families.py --quick    # 6 families, 3,000 images, 1 repeat (~1 min)
    python benchmarks/bench_families.py --json families.json

A family is one design outside the paper's: depth 1, 2 or 3 (hidden widths 130 / 100-100 /
100-100-100), dropout 0.2 after every hidden layer (and two more: no dropout; dropout with random shifts
of up to 2 pixels, drawn per epoch for ours, per image in the DataLoader's Dataset for PyTorch), one optimiser (RMSprop with tanh units; SGD
with momentum 0.9, Adam, AdamW with ReLU) and one loss (cross-entropy, squared error). For each,
measured side by side in the same run:

  ours     mnist_study.training.trainer.StackedTrainer.train_epoch on a stack of 5 seeds (the
           general path, general.py), its time divided by 5: seconds per network
  PyTorch  the plain loop on one network: TensorDataset + DataLoader(batch_size=32, shuffle=True),
           nn.Sequential(Linear, activation, Dropout, ..., Linear), torch.optim, and
           F.cross_entropy or the summed squared error against one-hot targets (F.mse_loss)

Both see the same synthetic data: random 784-pixel images in [0, 1] with random labels. Each round
times one epoch of each in turn, so that drift in the machine's load hits both alike; the table
gives medians and the ratio PyTorch / ours (how many times faster ours is per network).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (fmt_seconds, interleaved_times, machine, machine_line, markdown_table,  # noqa: E402
                    publish, single_thread)

from mnist_study.data.augment import augment_epoch  # noqa: E402
from mnist_study.training.config import AdamConfig, RMSpropConfig, SGDConfig, TrainConfig  # noqa: E402
from mnist_study.training.trainer import Split, StackedTrainer  # noqa: E402

N_INPUTS = 784
BATCH = 32
SEEDS = 5      # networks in our stack
DROPOUT = 0.2
DEPTHS = {1: (130,), 2: (100, 100), 3: (100, 100, 100)}
OPTIMIZERS = {  # name -> (settings, activation)
    "rmsprop": (RMSpropConfig(), "tanh"),
    "sgd": (SGDConfig(lr=0.01, momentum=0.9), "relu"),
    "adam": (AdamConfig(), "relu"),
    "adamw": (AdamConfig(kind="adamw", weight_decay=0.01), "relu"),
}
LOSSES = ("cross_entropy", "squared_error")


@dataclass(frozen=True)
class Settings:
    images: int = 10_000
    repeats: int = 3
    warmup: int = 1
    families: tuple[tuple, ...] = (tuple((d, o, loss) for d in DEPTHS for o in OPTIMIZERS for loss in LOSSES)
                                   + ((1, "adam", "cross_entropy", "no dropout"),
                                      (1, "adam", "cross_entropy", "shifts")))


QUICK = Settings(images=3_000, repeats=1, families=((1, "adam", "cross_entropy"), (2, "sgd", "squared_error"),
                                                    (3, "rmsprop", "cross_entropy"), (1, "adamw", "squared_error"),
                                                    (2, "adam", "cross_entropy"), (3, "adamw", "squared_error"),
                                                    (1, "adam", "cross_entropy", "shifts")))


VARIANTS = ("dropout", "no dropout", "shifts")  # the last: dropout, and random shifts of up to SHIFT pixels
SHIFT = 2


def family_config(depth: int, optimizer: str, loss: str, variant: str = "dropout") -> TrainConfig:
    settings, activation = OPTIMIZERS[optimizer]
    layers = DEPTHS[depth]
    rate = 0.0 if variant == "no dropout" else DROPOUT
    return TrainConfig(layers=layers, activation=activation, dropout=(rate,) * len(layers), optimizer=settings,
                       loss=loss)


def ours_epoch(x: torch.Tensor, y: torch.Tensor, config: TrainConfig, variant: str = "dropout") -> Callable[[], None]:
    trainer = StackedTrainer(config, x.shape[1], list(range(SEEDS)), x.device)
    assert not trainer.paper  # every family here is outside the paper's: the general path
    split = Split(x, y)
    if variant != "shifts":
        return lambda: trainer.train_epoch(split)
    epochs = iter(range(1, 1_000_000))

    def epoch() -> None:  # one shifted copy per epoch, shared by the stack (as a run does it)
        trainer.train_epoch(Split(augment_epoch(x, next(epochs), 0, shift=SHIFT), y))

    return epoch


class ShiftedImages(torch.utils.data.Dataset):
    """The plain way to augment: each image shifted by up to SHIFT pixels as the DataLoader fetches it."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x.view(-1, 28, 28), y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        dx, dy = torch.randint(-SHIFT, SHIFT + 1, (2,)).tolist()
        image = torch.zeros(28, 28)
        src = self.x[i][max(0, -dy):28 - max(0, dy), max(0, -dx):28 - max(0, dx)]
        image[max(0, dy):max(0, dy) + src.shape[0], max(0, dx):max(0, dx) + src.shape[1]] = src
        return image.view(-1), self.y[i]


def torch_optimizer(params, config: TrainConfig) -> torch.optim.Optimizer:
    o = config.optimizer
    if o.kind == "rmsprop":  # Keras' RMSprop: rho 0.9, epsilon 1e-7
        return torch.optim.RMSprop(params, lr=o.lr, alpha=o.rho, eps=o.epsilon)
    if o.kind == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov)
    cls = torch.optim.AdamW if o.kind == "adamw" else torch.optim.Adam
    return cls(params, lr=o.lr, betas=o.betas, eps=o.epsilon, weight_decay=o.weight_decay)


def plain_epoch(x: torch.Tensor, y: torch.Tensor, config: TrainConfig, variant: str = "dropout") -> Callable[[], None]:
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    act = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}[config.activation]
    layers, width = [], x.shape[1]
    for h, p in zip(config.layers, config.dropout):
        layers += [nn.Linear(width, h), act(), nn.Dropout(p)]
        width = h
    model = nn.Sequential(*layers, nn.Linear(width, 10))
    optimizer = torch_optimizer(model.parameters(), config)
    data = ShiftedImages(x, y) if variant == "shifts" else TensorDataset(x, y)
    loader = DataLoader(data, batch_size=BATCH, shuffle=True)

    def loss_fn(out: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        if config.loss == "cross_entropy":
            return F.cross_entropy(out, yb)
        return F.mse_loss(out, F.one_hot(yb, 10).float(), reduction="sum") / len(yb)

    def epoch() -> None:
        model.train()
        for xb, yb in loader:
            loss = loss_fn(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return epoch


def synthetic(images: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(images, N_INPUTS, generator=g), torch.randint(0, 10, (images,), generator=g)


def run(settings: Settings = Settings()) -> dict:
    rows = []
    with single_thread():
        x, y = synthetic(settings.images)
        for depth, optimizer, loss, *rest in settings.families:
            variant = rest[0] if rest else "dropout"
            config = family_config(depth, optimizer, loss, variant)
            times = interleaved_times({"ours": ours_epoch(x, y, config, variant),
                                       "plain": plain_epoch(x, y, config, variant)}, settings.repeats, settings.warmup)
            ours = statistics.median(times["ours"]) / SEEDS
            plain = statistics.median(times["plain"])
            rows.append({"depth": depth, "layers": list(config.layers), "optimizer": optimizer,
                         "activation": config.activation, "loss": loss, "variant": variant, "ours": ours,
                         "plain": plain, "ratio": plain / ours})
            print(f"{'-'.join(map(str, config.layers))} {optimizer} {loss} {variant}: ours {ours:.3f} s, "
                  f"PyTorch {plain:.3f} s, {plain / ours:.1f}x", file=sys.stderr, flush=True)
        m = machine()
    return {"machine": m, "settings": {"images": settings.images, "repeats": settings.repeats, "seeds": SEEDS,
                                       "dropout": DROPOUT, "batch": BATCH}, "rows": rows}


def markdown(results: dict) -> str:
    s = results["settings"]
    body = [["-".join(map(str, r["layers"])), f"{r['optimizer']} ({r['activation']})", r["loss"],
             r.get("variant", "dropout"), fmt_seconds(r["ours"]), fmt_seconds(r["plain"]), f"{r['ratio']:.1f}×"]
            for r in results["rows"]]
    table = markdown_table(["hidden", "optimiser", "loss", "regularisation", "ours s/epoch/net", "PyTorch s/epoch",
                            "PyTorch / ours"], body, align="llllrrr")
    return (f"### Seconds per epoch per network, by family ({s['images']:,} images, batches of {s['batch']}, "
            f"dropout {s['dropout']}, one thread)\n\n"
            f"Ours: a stack of {s['seeds']} seeds, time / {s['seeds']}; PyTorch: DataLoader + nn.Sequential + "
            f"torch.optim, one network. Medians of {s['repeats']}.\n\n{table}\n\n{machine_line(results['machine'])}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="6 families, 3,000 images, one repeat: a smoke run")
    parser.add_argument("--images", type=int, default=None, help="training images per epoch (default 10,000)")
    parser.add_argument("--repeats", type=int, default=None, help="timed epochs per family and peer (default 3)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args()
    settings = QUICK if args.quick else Settings()
    if args.images or args.repeats:
        settings = Settings(images=args.images or settings.images, repeats=args.repeats or settings.repeats,
                            families=settings.families)
    results = run(settings)
    publish(results, args.json, markdown)
    slow = [r for r in results["rows"] if r["ratio"] < 2.0]
    if slow:
        print(f"{len(slow)} families below 2x: " + ", ".join(f"{'-'.join(map(str, r['layers']))} {r['optimizer']} "
                                                           f"{r['loss']}" for r in slow), file=sys.stderr)


if __name__ == "__main__":
    main()
