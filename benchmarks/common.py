"""Helpers shared by the benchmarks: the machine, timing, peak memory, growth fits, markdown.

The benchmark scripts import this as `common` (they run as `python benchmarks/<name>.py`, which
puts this folder on the path).
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Sequence

from mnist_study.processes import descendants
from mnist_study.provenance import git_commit, package_versions

REPO = Path(__file__).resolve().parents[1]
NOT_MEASURED = "—"


# ------------------------------------------------------------------------------------- the machine

def cpu_model() -> str:
    """The CPU's name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ram_gib() -> float | None:
    """Total memory in GiB, from /proc/meminfo or sysconf."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20  # kB
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def machine() -> dict:
    """What the numbers were measured on: CPU, cores, memory, versions, threads, load."""
    import torch

    cores = os.cpu_count() or 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu": cpu_model(),
        "cores": cores,
        "usable_cores": usable,
        "ram_gib": round(ram_gib() or 0.0, 1),
        "os": f"{platform.system()} {platform.release()}",
        "versions": package_versions(("torch", "numpy", "scikit-learn", "openTSNE", "mnist-study")),
        "torch_threads": torch.get_num_threads(),
        # A busy machine makes every figure slower; the load when measuring tells the reader.
        "load_average": [round(x, 2) for x in load] if load else None,
        "git_commit": git_commit(REPO, short=True),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def machine_line(m: dict) -> str:
    """One markdown line describing `machine()`'s result."""
    v = m["versions"]
    libs = ", ".join(f"{name} {v[name]}" for name in ("python", "torch", "numpy", "scikit-learn", "openTSNE")
                     if name in v)
    load = f"; load average {m['load_average'][0]:.2f} when started" if m.get("load_average") else ""
    commit = f"; commit `{m['git_commit']}`" if m.get("git_commit") else ""
    return (f"{m['cpu']}, {m['usable_cores']} of {m['cores']} cores usable, {m['ram_gib']:.1f} GiB RAM, "
            f"{m['os']}; {libs}{load}{commit}; measured {m['date']}.")


# ------------------------------------------------------------------------------------------ timing

@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """One thread for torch and for the BLAS / OpenMP pools numpy and scikit-learn use.

    Every peer then runs on one core, as the runner's training tasks do; flush-to-zero keeps
    RMSprop's tiny accumulators from slowing steps down (the runner sets it too).
    """
    import torch
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(threads)


def time_once(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_runs(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Seconds of each of `repeats` calls of fn(), after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    return [time_once(fn) for _ in range(repeats)]


def median_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median seconds of one call of fn() over `repeats` calls, after `warmup` untimed ones."""
    return statistics.median(time_runs(fn, repeats, warmup))


def interleaved_times(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of each fn over `repeats` rounds; every round calls each fn once, in turn.

    Interleaving spreads any drift in the machine's load over all peers alike, so their ratios
    stay fair even when their absolute times move.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(time_once(fn))
    return times


# ------------------------------------------------------------------------------------------ growth

def loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of log(y) on log(x): y ~ x^slope."""
    if len(xs) != len(ys) or len(xs) < 2:
        raise ValueError("need at least two (x, y) points")
    lx = [math.log(x) for x in xs]
    ly = [math.log(y) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    sxx = sum((a - mx) ** 2 for a in lx)
    if sxx == 0:
        raise ValueError("the x values must not all be equal")
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sxx


def growth(xs: Sequence[float], ys: Sequence[float]) -> str:
    """How cost grows, in words with the fitted exponent: 'linear (slope 1.02)'."""
    slope = loglog_slope(xs, ys)
    if slope < 0.15:
        word = "flat"
    elif slope < 0.85:
        word = "sublinear"
    elif slope <= 1.15:
        word = "linear"
    elif slope < 1.85:
        word = "superlinear"
    elif slope <= 2.15:
        word = "quadratic"
    else:
        word = "faster than quadratic"
    return f"{word} (slope {slope:.2f})"


# ------------------------------------------------------------------------------------------ memory

def _rss_mib(who: int) -> float:
    rss = resource.getrusage(who).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


def _status_mib(pid: int | str, field: str) -> float | None:
    """VmHWM (peak) or VmRSS (now) of a process from /proc, in MiB; None where unreadable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 2**10  # kB
    except (OSError, ValueError):
        pass
    return None


class MemorySampler:
    """Peak resident memory (MiB) of this process and of the processes it starts, while in a `with`.

    Linux's getrusage(RUSAGE_CHILDREN).ru_maxrss is no help for workers: a child started by fork
    or vfork + exec inherits its parent's peak as its own starting value, so every helper process a
    large parent starts reports at least the parent's size. Instead this reads /proc every
    `interval` seconds: VmHWM (a process's own peak since exec) of each descendant, and the sum of
    VmRSS over this process and its descendants. A worker's last instants before exiting can be
    missed, never over-counted. Without /proc (macOS) it falls back to getrusage.
    """

    def __init__(self, interval: float = 0.25):
        self.interval = interval
        self.workers_mib = 0.0   # the largest descendant's own peak
        self.total_mib = 0.0     # the largest sum of RSS over this process and its descendants
        self._stop = None
        self._proc = os.path.exists(f"/proc/{os.getpid()}/status")

    def sample(self) -> None:
        me = os.getpid()
        total = _status_mib(me, "VmRSS") or 0.0
        for pid in descendants(me):
            self.workers_mib = max(self.workers_mib, _status_mib(pid, "VmHWM") or 0.0)
            total += _status_mib(pid, "VmRSS") or 0.0
        self.total_mib = max(self.total_mib, total)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> "MemorySampler":
        if self._proc:
            import threading

            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._stop is not None:
            self._stop.set()
            self._thread.join()
            self.sample()

    def result(self) -> dict[str, float]:
        """self_mib: this process's peak; workers_mib: the largest worker's; total_mib: all together."""
        if not self._proc:
            return {"self_mib": round(_rss_mib(resource.RUSAGE_SELF), 1),
                    "workers_mib": round(_rss_mib(resource.RUSAGE_CHILDREN), 1), "total_mib": None}
        own = _status_mib(os.getpid(), "VmHWM") or _rss_mib(resource.RUSAGE_SELF)
        return {"self_mib": round(own, 1), "workers_mib": round(self.workers_mib, 1),
                "total_mib": round(max(self.total_mib, own), 1)}


def peak_memory() -> dict[str, float]:
    """Peak resident memory (MiB) of this process since it started (VmHWM, else ru_maxrss)."""
    own = _status_mib(os.getpid(), "VmHWM")
    return {"self_mib": round(own if own is not None else _rss_mib(resource.RUSAGE_SELF), 1)}


def _child_main(fn: Callable[..., dict], args: tuple, result_path: str) -> None:
    import json

    try:
        with MemorySampler() as memory:
            value = fn(*args)
        result = {"ok": True, "value": value, "peak_memory": memory.result()}
    except BaseException:  # noqa: BLE001 -- handed back to the parent, which raises it
        result = {"ok": False, "error": traceback.format_exc()}
    Path(result_path).write_text(json.dumps(result))


def run_in_child(fn: Callable[..., dict], *args) -> tuple[dict, dict[str, float]]:
    """fn(*args) in a fresh (spawned) process; its JSON-able result and its `MemorySampler.result()`.

    A process's peak only ever grows, so each measurement gets its own process: one measurement's
    memory then cannot hide inside another's, nor inside this process's.
    """
    import json

    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="mnist-bench-") as tmp:
        path = os.path.join(tmp, "result.json")
        process = ctx.Process(target=_child_main, args=(fn, args, path))
        process.start()
        process.join()
        if not os.path.exists(path):
            raise RuntimeError(f"benchmark process for {fn.__name__} died (exit code {process.exitcode})")
        result = json.loads(Path(path).read_text())
    if not result["ok"]:
        raise RuntimeError(f"benchmark {fn.__name__}{args} failed:\n{result['error']}")
    return result["value"], result["peak_memory"]


# ---------------------------------------------------------------------------------------- markdown

def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return NOT_MEASURED
    if seconds >= 100:
        return f"{seconds:,.0f}"
    if seconds >= 10:
        return f"{seconds:.1f}"
    if seconds >= 0.1:
        return f"{seconds:.2f}"
    if seconds >= 0.001:
        return f"{seconds:.3f}"
    return f"{seconds:.2g}"  # tiny smoke-test timings keep a significant digit instead of 0.000


def publish(results: dict, json_path: str | None, render: Callable[[dict], str]) -> None:
    """A benchmark's ending: its results as JSON where asked (run_all.py reads them), its tables on stdout."""
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=1))
    print(render(results))


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None) -> str:
    """A GitHub markdown table; `align` has one letter per column: l(eft), r(ight), c(entre).

    By default the first column is left-aligned and the others right-aligned (numbers).
    """
    align = align or "l" + "r" * (len(headers) - 1)
    if len(align) != len(headers) or any(len(row) != len(headers) for row in rows):
        raise ValueError("every row, and align, needs one entry per header")
    rule = {"l": ":---", "r": "---:", "c": ":---:"}
    cells = [[str(c) for c in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, widths, align)) + " |"

    separator = "| " + " | ".join(rule[a].rjust(w, "-") if a == "r" else rule[a].ljust(w, "-")
                                  for a, w in zip(align, widths)) + " |"
    return "\n".join([line(cells[0]), separator, *[line(row) for row in cells[1:]]])

