"""One sweep of small networks on each executor: local worker processes, Ray here, Ray on a cluster.

    python benchmarks/bench_executors.py                  # 200 networks on 10,000 MNIST images, 3 ways
    python benchmarks/bench_executors.py --quick          # 8 networks on synthetic digits, local and Ray here (< 1 min)
    python benchmarks/bench_executors.py --no-cluster     # without the loopback cluster
    python benchmarks/bench_executors.py --repeats 3      # each executor 3 times, in turn: medians
    python benchmarks/bench_executors.py --json out.json  # the figures as JSON too

The sweep: hidden [1, 2, 4, 8, 16] x optimiser [rmsprop, adam, adamw, sgd] x batch size [32, 128],
5 seeds each (200 networks: 40 training units of 5 seeds, as schedule.py stacks narrow networks,
plus one front-end unit), 3 epochs on a 10,000-image subset of MNIST's training images. Each is run
in a fresh process (its own peak memory) on `--workers` units at a time:

- local: worker processes, one thread each (`run_study(workers=N)`);
- Ray here: a private Ray instance of N CPUs (`run_study(executor="ray")`), started and stopped by the run;
- Ray cluster: a head without CPUs and N nodes of 1 CPU on this machine (`loopback_cluster`), started
  before the run and stopped after it, through `address`.

Figures: wall (the whole run_study call, starting and stopping the executor included); span (from
the first unit's first event to the last seed's completion: the work, without start-up); compute
(the units' own seconds, summed from the manifest); overhead per unit ((wall x slots - compute) /
units: slot time not spent computing); CPU of the driver (this process: getrusage) and of every
process it started (sampled from /proc, so the Ray services and workers count too); peak RSS of the
driver and of all processes together.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, fmt_seconds, machine, machine_line, markdown_table, publish, run_in_child  # noqa: E402

SWEEP = """
name = "executors"
description = "width x optimiser x batch size on 10,000 images, 3 epochs: many short units"

[[sweep]]
name = "bench"
train_size = {train_size}
validation_size = {validation_size}
max_epochs = {epochs}
early_stopping = false
zip = [["optimizer", "learning_rate"]]
names = "w{{hidden}}-{{optimizer}}-bs{{batch_size}}"

[sweep.vary]
hidden = {widths}
optimizer = {optimizers}
learning_rate = {rates}
batch_size = {batch_sizes}
"""
RATES = {"rmsprop": 0.001, "adam": 0.001, "adamw": 0.001, "sgd": 0.1}
FULL = {"widths": [1, 2, 4, 8, 16], "optimizers": ["rmsprop", "adam", "adamw", "sgd"], "batch_sizes": [32, 128],
        "seeds": 5, "train_size": 10_000, "validation_size": 5_000, "epochs": 3}
QUICK = {"widths": [1, 2], "optimizers": ["rmsprop", "adam"], "batch_sizes": [32], "seeds": 2, "train_size": 1_000,
         "validation_size": 200, "epochs": 2}
EXECUTORS = ("local", "ray-here", "ray-cluster")
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"  # a copy beside the checkout, where there is one


def study_text(sweep: dict) -> str:
    opt = sweep["optimizers"]
    return SWEEP.format(train_size=sweep["train_size"], validation_size=sweep["validation_size"],
                        epochs=sweep["epochs"], widths=sweep["widths"], batch_sizes=sweep["batch_sizes"],
                        optimizers="[" + ", ".join(f'"{o}"' for o in opt) + "]", rates=[RATES[o] for o in opt])


def synthetic_data(directory: Path, n_train: int = 2_000, n_test: int = 300) -> Path:
    """Digits as bright bars (digit k on rows 2k+3..2k+5) on noise, in MNIST's IDX layout."""
    import numpy as np

    from mnist_study.data.idx import write_idx

    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(labels):
            images[i, 2 * k + 3: 2 * k + 6, 6:20] = 250
        write_idx(directory / f"{prefix}-images-idx3-ubyte", images, compress=False)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte", labels, compress=False)
    return directory


class CpuSampler:
    """CPU seconds (user + system) of every process below this one while in a `with`, read from
    /proc every `interval` s: the last reading of each process, less what it had used when first seen."""

    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self._stop = threading.Event()

    def sample(self) -> None:
        from mnist_study.processes import descendants

        tick = os.sysconf("SC_CLK_TCK")
        for pid in descendants(os.getpid()):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                seconds = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
            except (OSError, ValueError, IndexError):
                continue
            self.first.setdefault(pid, seconds)
            self.last[pid] = seconds

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> "CpuSampler":
        self.sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def seconds(self) -> float:
        return sum(self.last[pid] - self.first[pid] for pid in self.last)


def measure(executor: str, text: str, seeds: int, data_dir: str, workers: int, out: str) -> dict:
    """One run of the sweep on `executor`, in this (fresh) process."""
    import contextlib
    import json

    from mnist_study.executors.loopback import loopback_cluster
    from mnist_study.runner import run_study
    from mnist_study.schedule import make_plan
    from mnist_study.studies import parse_study

    study = parse_study(text, "bench-executors.toml")
    plan = make_plan(study, list(range(seeds)), Path(out))
    units = len(plan.frontends) + len(plan.training)
    options = {"workers": workers} if executor == "local" else {"executor": "ray", "workers": workers}
    times: list[float] = []
    cluster = loopback_cluster(worker_nodes=workers, cpus_per_node=1) if executor == "ray-cluster" \
        else contextlib.nullcontext()
    with cluster as nodes:
        if nodes is not None:
            options["address"] = nodes.address

        def on_event(event: dict) -> None:
            if event["kind"] in ("frontend-start", "epoch", "seed-done"):
                times.append(time.perf_counter())

        with CpuSampler() as cpu:
            before = resource.getrusage(resource.RUSAGE_SELF)
            start = time.perf_counter()
            run_dir = run_study(study, seeds=seeds, device="cpu", data_dir=data_dir, out=out, progress=False,
                                on_event=on_event, **options)
            wall = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_SELF)
    manifest = json.loads((Path(run_dir) / "manifest.json").read_text())
    compute = sum(s for stage, s in manifest["stages"].items() if stage.startswith(("train/", "frontend/")))
    slots = manifest["workers"]
    return {"executor": executor, "networks": len(study.experiments) * seeds, "units": units, "slots": slots,
            "wall_s": wall, "span_s": times[-1] - times[0], "compute_s": compute,
            "overhead_per_unit_s": (wall * slots - compute) / units,
            "span_overhead_per_unit_s": ((times[-1] - times[0]) * slots - compute) / units,
            "driver_cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "all_cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime) + cpu.seconds(),
            "complete": manifest["complete"]}


def run(quick: bool, cluster: bool, workers: int, data_dir: str | None, repeats: int = 1) -> dict:
    """Every executor `repeats` times, in turn (a drift in the machine's load then touches all alike);
    each figure is the median over the repeats."""
    sweep = QUICK if quick else FULL
    text = study_text(sweep)
    executors = [e for e in EXECUTORS if cluster or e != "ray-cluster"]
    runs: dict[str, list[dict]] = {e: [] for e in executors}
    with tempfile.TemporaryDirectory(prefix="bench-executors-") as tmp:
        if quick:
            data_dir = str(synthetic_data(Path(tmp) / "data"))
        elif data_dir is None and SHARED_MNIST.is_dir():
            data_dir = str(SHARED_MNIST)
        for repeat in range(repeats):
            for executor in executors:
                print(f"{executor} ({repeat + 1} of {repeats}) ...", file=sys.stderr, flush=True)
                value, memory = run_in_child(measure, executor, text, sweep["seeds"], data_dir, workers,
                                             str(Path(tmp) / f"{executor}-{repeat}"))
                runs[executor].append({**value, "driver_peak_mib": memory["self_mib"],
                                       "all_peak_mib": memory["total_mib"]})
    rows = [{key: statistics.median(r[key] for r in results) if isinstance(results[0][key], float) else results[0][key]
             for key in results[0]} for results in runs.values()]
    for row, results in zip(rows, runs.values()):
        row["wall_s_each"] = [r["wall_s"] for r in results]
        row["vs_local"] = row["wall_s"] / rows[0]["wall_s"]
    return {"machine": machine(), "quick": quick, "sweep": sweep, "repeats": repeats, "rows": rows}


def markdown(results: dict) -> str:
    sweep = results["sweep"]
    networks = len(sweep["widths"]) * len(sweep["optimizers"]) * len(sweep["batch_sizes"]) * sweep["seeds"]
    repeats = results.get("repeats", 1)
    head = (f"### Executors: {networks} networks, {sweep['train_size']:,} images, {sweep['epochs']} epochs"
            f"{' (quick: synthetic digits)' if results['quick'] else ''}"
            f"{f', medians of {repeats} runs each' if repeats > 1 else ''}\n\n{machine_line(results['machine'])}\n\n")
    headers = ["executor", "units", "slots", "wall s", "vs local", "span s", "compute s", "overhead/unit s",
               "overhead/unit in span s", "driver CPU s", "all CPU s", "driver peak MiB", "all peak MiB"]
    rows = [[r["executor"], r["units"], r["slots"], fmt_seconds(r["wall_s"]), f"{r['vs_local']:.2f}x",
             fmt_seconds(r["span_s"]), fmt_seconds(r["compute_s"]), f"{r['overhead_per_unit_s']:.3f}",
             f"{r['span_overhead_per_unit_s']:.3f}", fmt_seconds(r["driver_cpu_s"]), fmt_seconds(r["all_cpu_s"]),
             f"{r['driver_peak_mib']:.0f}", f"{r['all_peak_mib']:.0f}"] for r in results["rows"]]
    return head + markdown_table(headers, rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="8 networks on synthetic digits, no cluster: a smoke run")
    p.add_argument("--no-cluster", action="store_true", help="skip the loopback cluster (about 30 s to start)")
    p.add_argument("--repeats", type=int, default=1, help="runs of each executor, in turn; figures are medians")
    p.add_argument("--workers", type=int, default=2, help="units at a time: worker processes, Ray CPUs, cluster nodes")
    p.add_argument("--data-dir", default=None, help="where MNIST is (default: found as `mnist-study data` finds it)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args()
    results = run(args.quick, not (args.quick or args.no_cluster), args.workers, args.data_dir, args.repeats)
    publish(results, args.json, markdown)


if __name__ == "__main__":
    main()
