"""Seconds per training epoch on one core: our step beside the usual ways, as multiples of a floor.

    python benchmarks/epoch_speed.py                       # every width, 5 repeats (~15 min)
    python benchmarks/epoch_speed.py --quick               # a smoke run (~30 s), numbers indicative only
    python benchmarks/epoch_speed.py --widths 10 130 --repeats 3 --json epoch.json

One epoch = 55,000 training images (MNIST's, or random ones of that shape when MNIST is not found)
in batches of 32 with RMSprop, on one thread. Peers, measured side by side in the same run:

  floor        the step's matrix products alone (forward x@W1, h@W2; backward hᵀG2, G2@W2ᵀ, xᵀdH)
               on pre-sliced batches, into preallocated outputs: what no implementation beats
  ours         mnist_study.training.trainer.StackedTrainer.train_epoch, one seed: the compiled CPU epoch
  ours, no zero pixels   the same on the same images with every zero pixel set to 0.001, so that
               no pixel can be skipped: what the kernel costs without MNIST's sparsity
  ours, eager step       StackedTrainer with the compiled kernel off (the per-step PyTorch path)
  slices       nn.Sequential + autograd + torch.optim.RMSprop, batches by randperm + indexing
  DataLoader   the same model and optimiser fed by DataLoader(TensorDataset, shuffle=True)
  sklearn      MLPClassifier(solver="adam", batch_size=32, max_iter=1).fit: one epoch

Every peer computes the paper's loss (cross-entropy + 0.001 * sum(W1**2)), scikit-learn its own
L2. Each round times one epoch of every peer in turn, so drift in the machine's load hits all
alike; the tables give medians. Two scaling tables follow: epoch time against the number of
training images, and against the number of seeds trained together in one stacked step.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (NOT_MEASURED, fmt_seconds, growth, interleaved_times, machine,  # noqa: E402
                    machine_line, markdown_table, peak_memory, publish, single_thread)

from mnist_study.training import fused  # noqa: E402
from mnist_study.training.trainer import Split, StackedTrainer, TrainConfig  # noqa: E402

L2 = 0.001       # the paper's penalty on the hidden kernel (experiments 1-8)
BATCH = 32
N_INPUTS = 784
PEERS = {        # key -> column title, in table order
    "floor": "floor s/epoch",
    "ours": "ours",
    "ours_dense": "ours, no zero pixels",
    "ours_eager": "ours, eager step",
    "slices": "PyTorch, slices",
    "dataloader": "PyTorch, DataLoader",
    "sklearn": "scikit-learn",
}
WIDE = 1000      # widths from here on take seconds per epoch: fewer repeats


@dataclass(frozen=True)
class Settings:
    widths: tuple[int, ...] = (1, 2, 10, 30, 80, 130, 200, 500, 1000, 2000, 4096)
    peer_widths: tuple[int, ...] = (10, 130, 500)   # where DataLoader and scikit-learn also run
    repeats: int = 5
    wide_repeats: int = 3                            # repeats at widths >= WIDE
    warmup: int = 1
    images: int = 55_000
    size_width: int = 130
    sizes: tuple[int, ...] = (5_000, 10_000, 20_000, 40_000, 55_000)
    seed_widths: tuple[int, ...] = (10, 130)
    seed_counts: tuple[int, ...] = (1, 2, 5, 10)
    data_dir: str | None = None
    synthetic: bool = False                          # random data of MNIST's shape, even if MNIST is there
    device: str = "cpu"                              # "cuda": the eager step and the PyTorch peers on the GPU


QUICK = Settings(widths=(10, 130), peer_widths=(130,), repeats=3, images=10_000, sizes=(2_500, 5_000, 10_000),
                 seed_widths=(130,), seed_counts=(1, 2, 4))


# --------------------------------------------------------------------------------------- the data

def training_data(settings: Settings) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The first `images` training images (N, 784) float32 in [0, 1], labels (N,) int64, and their source."""
    n = max((settings.images, *settings.sizes))
    if not settings.synthetic:
        from mnist_study.data.sources import load_dataset
        from mnist_study.errors import DataError
        from mnist_study.data.splits import make_splits

        try:
            dataset = load_dataset(settings.data_dir, download=False, progress=False)
            x, y = make_splits(dataset, "last")["train"]
            if len(y) >= n:
                return torch.from_numpy(x[:n]).contiguous(), torch.from_numpy(y[:n]), "MNIST"
        except DataError as error:
            print(f"MNIST not found ({str(error).splitlines()[0]}); timing on random data", file=sys.stderr)
    # Random pixels are never zero, so ours skips nothing here: slower than on MNIST; peers time the same.
    rng = np.random.default_rng(0)
    x = rng.random((n, N_INPUTS), dtype=np.float32)
    y = rng.integers(0, 10, n).astype(np.int64)
    return torch.from_numpy(x), torch.from_numpy(y), "random data of MNIST's shape"


# -------------------------------------------------------------------------- the peers: epoch makers
# Each takes the training data and a width, builds its model once, and returns a function that
# runs one epoch (training continues from epoch to epoch, as it would in a real run).

def floor_epoch(x: torch.Tensor, y: torch.Tensor, width: int) -> Callable[[], None]:
    g = torch.Generator().manual_seed(0)
    w1 = (torch.randn(x.shape[1], width, generator=g) * 0.05).to(x.device)
    w2 = (torch.randn(width, 10, generator=g) * 0.1).to(x.device)
    batches = list(x.split(BATCH))  # contiguous views: no gather, no copy
    buffers: dict[int, tuple[torch.Tensor, ...]] = {}

    def outputs(b: int) -> tuple[torch.Tensor, ...]:
        if b not in buffers:
            new = lambda *shape: torch.empty(*shape, device=x.device)  # noqa: E731
            buffers[b] = (new(b, width), new(b, 10), torch.randn(b, 10, generator=g).to(x.device),
                          new(width, 10), new(b, width), new(x.shape[1], width))
        return buffers[b]

    def epoch() -> None:
        for xb in batches:
            z1, z2, g2, g_w2, dh, g_w1 = outputs(len(xb))
            torch.mm(xb, w1, out=z1)         # forward
            torch.mm(z1, w2, out=z2)
            torch.mm(z1.T, g2, out=g_w2)     # backward
            torch.mm(g2, w2.T, out=dh)
            torch.mm(xb.T, dh, out=g_w1)

    return epoch


def ours_epoch(x: torch.Tensor, y: torch.Tensor, width: int, seeds: int = 1, use_fused: bool = True) -> Callable[[], None]:
    trainer = StackedTrainer(TrainConfig(hidden=width, l2=L2), x.shape[1], list(range(seeds)), x.device, use_fused)
    if use_fused and x.device.type == "cpu":  # off the CPU "ours" is the eager step: the kernel is CPU-only
        if not trainer.use_fused:
            raise SystemExit(f"the compiled kernel is switched off ({fused.ENV_SWITCH}=0): nothing to time as 'ours'")
        if fused.load() is None:
            raise SystemExit(f"the compiled kernel is unavailable here: {fused.unavailable_reason()}")
    split = Split(x, y)
    return lambda: trainer.train_epoch(split)


def ours_dense_epoch(x: torch.Tensor, y: torch.Tensor, width: int) -> Callable[[], None]:
    return ours_epoch(torch.where(x == 0, torch.tensor(1e-3), x), y, width)


def ours_eager_epoch(x: torch.Tensor, y: torch.Tensor, width: int) -> Callable[[], None]:
    return ours_epoch(x, y, width, use_fused=False)


def _torch_model(width: int, n_inputs: int, device: torch.device = torch.device("cpu")
                 ) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(n_inputs, width), nn.ReLU(), nn.Linear(width, 10)).to(device)
    # Keras' RMSprop: rho = 0.9, epsilon = 1e-7 (torch's defaults are 0.99 and 1e-8).
    return model, torch.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.9, eps=1e-7)


def slices_epoch(x: torch.Tensor, y: torch.Tensor, width: int) -> Callable[[], None]:
    model, optimizer = _torch_model(width, x.shape[1], x.device)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(0)

    def epoch() -> None:
        perm = torch.randperm(len(y), generator=generator).to(x.device)
        for start in range(0, len(y), BATCH):
            idx = perm[start:start + BATCH]
            loss = loss_fn(model(x[idx]), y[idx]) + L2 * model[0].weight.pow(2).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return epoch


def dataloader_epoch(x: torch.Tensor, y: torch.Tensor, width: int) -> Callable[[], None]:
    from torch.utils.data import DataLoader, TensorDataset

    model, optimizer = _torch_model(width, x.shape[1])
    loss_fn = nn.CrossEntropyLoss()
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True)

    def epoch() -> None:
        for xb, yb in loader:
            loss = loss_fn(model(xb), yb) + L2 * model[0].weight.pow(2).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return epoch


def sklearn_epoch(x: torch.Tensor, y: torch.Tensor, width: int) -> Callable[[], None]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    x_np, y_np = x.numpy(), y.numpy()

    def epoch() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter=1 never converges
            MLPClassifier(hidden_layer_sizes=(width,), solver="adam", batch_size=BATCH, max_iter=1,
                          random_state=0).fit(x_np, y_np)

    return epoch


MAKERS = {"floor": floor_epoch, "ours": ours_epoch, "ours_dense": ours_dense_epoch, "ours_eager": ours_eager_epoch,
          "slices": slices_epoch,
          "dataloader": dataloader_epoch, "sklearn": sklearn_epoch}


CPU_ONLY = {"ours_dense", "ours_eager", "dataloader", "sklearn"}  # off the CPU: "ours" is the eager step


def _synchronised(fn: Callable[[], None], device: torch.device) -> Callable[[], None]:
    """An epoch that ends when the device has finished its work, not when the last kernel is queued."""
    if device.type != "cuda":
        return fn

    def epoch() -> None:
        fn()
        torch.cuda.synchronize(device)

    return epoch


# ---------------------------------------------------------------------------------- the measurements

def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def by_width(x: torch.Tensor, y: torch.Tensor, s: Settings) -> list[dict]:
    rows = []
    for width in s.widths:
        peers = [p for p in PEERS if (p not in ("dataloader", "sklearn") or width in s.peer_widths)
                 and (x.device.type == "cpu" or p not in CPU_ONLY)]
        repeats = s.repeats if width < WIDE else min(s.repeats, s.wide_repeats)
        times = interleaved_times({p: _synchronised(MAKERS[p](x, y, width), x.device) for p in peers},
                                  repeats, s.warmup)
        seconds = {p: statistics.median(times[p]) if p in times else None for p in PEERS}
        ratio = {p: t / seconds["floor"] if t is not None else None for p, t in seconds.items()}
        rows.append({"width": width, "repeats": repeats, "seconds": seconds, "ratio": ratio, "times": times})
        _log(f"width {width:>5}: " + ", ".join(f"{p} {seconds[p]:.3f} s" for p in peers))
    return rows


def by_size(x: torch.Tensor, y: torch.Tensor, s: Settings) -> dict:
    fns = {n: _synchronised(ours_epoch(x[:n], y[:n], s.size_width), x.device) for n in s.sizes}
    times = interleaved_times(fns, s.repeats, s.warmup)
    rows = [{"images": n, "seconds": statistics.median(times[n])} for n in s.sizes]
    _log(f"sizes at width {s.size_width}: " + ", ".join(f"{r['images']} {r['seconds']:.3f} s" for r in rows))
    return {"width": s.size_width, "rows": rows,
            "growth": growth([r["images"] for r in rows], [r["seconds"] for r in rows]) if len(rows) > 1 else None}


def by_seeds(x: torch.Tensor, y: torch.Tensor, s: Settings) -> list[dict]:
    tables = []
    for width in s.seed_widths:
        times = interleaved_times({k: _synchronised(ours_epoch(x, y, width, seeds=k), x.device)
                                   for k in s.seed_counts}, s.repeats, s.warmup)
        seconds = {k: statistics.median(times[k]) for k in s.seed_counts}
        one = seconds[s.seed_counts[0]] / s.seed_counts[0]
        rows = [{"seeds": k, "seconds": seconds[k], "per_seed": seconds[k] / k,
                 "per_seed_vs_first": seconds[k] / k / one} for k in s.seed_counts]
        _log(f"seeds at width {width}: " + ", ".join(f"{r['seeds']} {r['seconds']:.3f} s" for r in rows))
        tables.append({"width": width, "rows": rows,
                       "growth": growth(list(s.seed_counts), [r["seconds"] for r in rows])
                       if len(rows) > 1 else None})
    return tables


def run(settings: Settings = Settings()) -> dict:
    """Measure every table; a JSON-able dict that `markdown` renders."""
    with single_thread():
        x, y, source = training_data(settings)
        x, y = x.to(settings.device), y.to(settings.device)
        m = machine()
        results = {
            "machine": m,
            "settings": asdict(settings),
            "data": source,
            "images": settings.images,
            "device_name": torch.cuda.get_device_name(x.device) if x.device.type == "cuda" else str(x.device),
            "widths": by_width(x[:settings.images], y[:settings.images], settings),
            "sizes": by_size(x, y, settings) if settings.sizes else None,
            "seeds": by_seeds(x[:settings.images], y[:settings.images], settings) if settings.seed_counts else [],
        }
    results["peak_memory"] = peak_memory()
    return results


# -------------------------------------------------------------------------------------- the report

def _cell(row: dict, peer: str) -> str:
    if row["seconds"][peer] is None:
        return NOT_MEASURED
    return f"{row['ratio'][peer]:.2f}× ({fmt_seconds(row['seconds'][peer])} s)"


def width_table(rows: list[dict]) -> str:
    headers = ["hidden", *PEERS.values()]
    body = [[r["width"], fmt_seconds(r["seconds"]["floor"]),
             *[_cell(r, p) for p in PEERS if p != "floor"]] for r in rows]
    return markdown_table(headers, body)


def size_table(sizes: dict) -> str:
    body = [[f"{r['images']:,}", fmt_seconds(r["seconds"]), f"{1e6 * r['seconds'] / r['images']:.1f}"]
            for r in sizes["rows"]]
    return markdown_table(["training images", "s/epoch", "µs/image"], body)


def seeds_table(tables: list[dict]) -> str:
    body = [[t["width"], r["seeds"], fmt_seconds(r["seconds"]), fmt_seconds(r["per_seed"]),
             f"{r['per_seed_vs_first']:.2f}×"] for t in tables for r in t["rows"]]
    return markdown_table(["hidden", "seeds", "s/epoch, all seeds", "s/epoch per seed", "per seed vs 1 seed"], body)


def markdown(results: dict) -> str:
    """The tables as markdown, with what was measured and how."""
    s = results["settings"]
    n = results["images"]
    batches = -(-n // BATCH)
    repeats = f"medians of {s['repeats']} epochs"
    if any(r["width"] >= WIDE for r in results["widths"]):
        repeats += f" ({min(s['repeats'], s['wide_repeats'])} at widths ≥ {WIDE:,})"
    parts = [
        f"Machine: {machine_line(results['machine'])}",
        "",
        f"One epoch = {n:,} training images ({results['data']}), {batches:,} batches of {BATCH}, RMSprop, "
        + (f"on {s['device']} ({results.get('device_name')}), the data resident there, synchronised at the end "
           "of each epoch; " if s.get("device", "cpu") != "cpu" else "")
        + f"one thread (`torch.set_num_threads(1)`, BLAS limited to one thread, flush-to-zero on); "
        f"{repeats} after {s['warmup']} warm-up, every peer timed in turn in each round. "
        "Cells are multiples of the floor, with seconds per epoch in brackets; "
        f"{NOT_MEASURED} = not measured (too slow to repeat at every width).",
        "",
        "- **floor**: the five matrix products of a step (x@W1, h@W2, hᵀG2, G2@W2ᵀ, xᵀdH) on pre-sliced "
        "batches into preallocated outputs; no activation, loss, optimiser or indexing.",
        "- **ours**: `StackedTrainer.train_epoch`, one seed: the compiled CPU epoch (`kernels/fused_epoch.cpp`): "
        "one call per epoch, products by PyTorch's BLAS over the pixels that are non-zero in some image of the "
        "batch, RMSprop in one pass over each parameter (penalty gradient and ΣW1² folded in), Keras' metrics.",
        "- **ours, no zero pixels**: the same kernel on the same images with every zero pixel set to 0.001, so "
        "no pixel can be skipped: its cost without MNIST's sparsity (the products are then as large as the floor's).",
        "- **ours, eager step**: `StackedTrainer` with the kernel off (`use_fused=False`): the hand-written "
        "PyTorch step, ~30 operator calls per batch, `torch._foreach_*` RMSprop.",
        "- **PyTorch, slices**: `nn.Sequential(Linear, ReLU, Linear)`, autograd, `torch.optim.RMSprop`, "
        "batches by `randperm` + indexing.",
        "- **PyTorch, DataLoader**: the same, fed by `DataLoader(TensorDataset, batch_size=32, shuffle=True)`.",
        "- **scikit-learn**: `MLPClassifier(hidden_layer_sizes=(H,), solver='adam', batch_size=32, "
        "max_iter=1).fit` (it has no RMSprop).",
        "",
        "PyTorch peers and ours add the paper's L2 penalty (0.001 · ΣW1²) to the loss.",
        "",
        "### Seconds per epoch, by hidden width",
        "",
        width_table(results["widths"]),
    ]
    against = [(r["width"], r["seconds"]["dataloader"] / r["seconds"]["ours"]) for r in results["widths"]
               if r["seconds"]["dataloader"] is not None]
    if against:
        parts += ["", "Ours against the usual DataLoader loop: "
                  + ", ".join(f"{speedup:.1f}× as fast at width {width}" for width, speedup in against) + "."]
    eager = [(r["width"], r["seconds"]["ours_eager"] / r["seconds"]["ours"]) for r in results["widths"]
             if r["seconds"].get("ours_eager") is not None]
    if eager:
        parts += ["", "The compiled epoch against the eager step: "
                  + ", ".join(f"{speedup:.1f}× at width {width}" for width, speedup in eager) + "."]
    bound = [r for r in results["widths"] if 80 <= r["width"] <= 500]
    if bound:
        worst = max(bound, key=lambda r: r["ratio"]["ours"])
        narrow = [r for r in results["widths"] if r["width"] < 80]
        parts += ["", f"Widths 80–500: ours is at most {worst['ratio']['ours']:.2f}× the floor (width {worst['width']})"
                  + (f"; below width 80 at most {fmt_seconds(max(r['seconds']['ours'] for r in narrow))} s an epoch"
                     if narrow else "") + "."]
    if results.get("sizes"):
        sizes = results["sizes"]
        parts += ["", f"### Ours against the number of training images (width {sizes['width']})", "",
                  size_table(sizes)]
        if sizes["growth"]:
            parts += ["", f"Growth of epoch time with the number of images (log-log fit): {sizes['growth']}."]
    if results.get("seeds"):
        parts += ["", f"### Ours against the number of seeds trained together ({n:,} images)", "",
                  "One trainer holds all seeds; the kernel trains them one after another within each epoch's "
                  "call (each seed's weights stay in cache while it trains). Each keeps its own initialisation "
                  "and shuffling.", "", seeds_table(results["seeds"]), ""]
        parts += [f"- width {t['width']}: growth of epoch time with the number of seeds (log-log fit): {t['growth']}."
                  for t in results["seeds"] if t["growth"]]
    if results.get("command"):
        parts = [f"Command: `{results['command']}`", "", *parts]
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------------- CLI

def settings_from_args(args: argparse.Namespace) -> Settings:
    base = QUICK if args.quick else Settings()
    given = {"widths": args.widths, "peer_widths": args.peer_widths, "repeats": args.repeats,
             "images": args.images, "data_dir": args.data_dir, "device": args.device}
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in given.items() if v is not None}
    return replace(base, **given, synthetic=args.synthetic)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", type=int, nargs="+", help="hidden widths to time (default: 1 to 4096)")
    p.add_argument("--peer-widths", type=int, nargs="+",
                   help="widths at which the DataLoader loop and scikit-learn also run (default: 10 130 500)")
    p.add_argument("--repeats", type=int, help="timed epochs per cell (default 5; 3 at widths >= 1000)")
    p.add_argument("--images", type=int, help="training images per epoch (default 55000)")
    p.add_argument("--data-dir", default=os.environ.get("MNIST_STUDY_DATA"),
                   help="where MNIST is (default: $MNIST_STUDY_DATA, else the usual places); random data if absent")
    p.add_argument("--synthetic", action="store_true", help="time on random data of MNIST's shape")
    p.add_argument("--device", help="cpu (default) or cuda: on a GPU, ours is the eager step and the "
                                    "CPU-only peers (DataLoader, scikit-learn, the compiled epoch) are left out")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: widths 10 and 130, 10,000 images, 3 repeats (numbers indicative only)")
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    return p


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    results = run(settings_from_args(args))
    results["command"] = " ".join(["python benchmarks/epoch_speed.py", *argv])
    publish(results, args.json, markdown)


if __name__ == "__main__":
    main()
