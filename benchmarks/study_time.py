"""How long a whole study takes on real MNIST: training by stage, the report, and t-SNE.

    python benchmarks/study_time.py                        # the paper study, 1 seed, report, t-SNE at 10,000
    python benchmarks/study_time.py --seeds 5 --compare-vectorised   # 5 seeds in one step vs one by one
    python benchmarks/study_time.py --compare-workers --no-report --no-tsne
    python benchmarks/study_time.py --tsne-full            # t-SNE at 60,000 points too (sklearn: minutes)
    python benchmarks/study_time.py --quick                # the `quick` study, small t-SNE: a smoke run

Each measurement runs in a fresh process, so its peak memory is its own: the peak RSS of that
process, of the largest worker it started, and of all of them at once (sampled from /proc; see
common.MemorySampler for why not getrusage). Seconds per stage come from the run's manifest.json, the
report's from report_timings.json. t-SNE is timed on the hidden activations of the run's first
784-pixel, 130-node network (random 130-d data when the study has none), openTSNE (what the report
uses) beside scikit-learn's TSNE at the paper's settings: perplexity 40, 300 iterations,
init="pca", learning_rate="auto"; both on all cores.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (NOT_MEASURED, fmt_seconds, machine, machine_line, markdown_table,  # noqa: E402
                    publish, run_in_child)

TSNE_POINTS = (10_000,)
TSNE_FULL = 60_000      # every training image, as the paper's maps
QUICK_TSNE_POINTS = (2_000,)
QUICK_REPORT_TSNE = 1_000


# ------------------------------------------------------- measurements (each runs in its own process)

def _epochs(run_dir: Path) -> dict[str, float]:
    """Mean epochs run per seed, by experiment."""
    from mnist_study.results import load_run

    run = load_run(run_dir)
    return {e.name: sum(r.metrics["epochs_run"] for r in run.results(e.name)) / len(run.results(e.name))
            for e in run.experiments if run.results(e.name)}


def measure_study(study: str, seeds: list[int], workers: int | None, data_dir: str | None, out: str,
                  device: str = "cpu") -> dict:
    """Train and evaluate `study` for `seeds` into `out`; wall seconds and the manifest's stages."""
    from mnist_study.runner import run_study

    start = time.perf_counter()
    run_dir = run_study(study, seeds=seeds, device=device, data_dir=data_dir, out=out, workers=workers,
                        progress=False, command="python benchmarks/study_time.py")
    wall = time.perf_counter() - start
    manifest = json.loads((run_dir / "manifest.json").read_text())
    return {"run_dir": str(run_dir), "study": study, "seeds": seeds, "workers": manifest["workers"],
            "device": manifest.get("device"),
            "wall_seconds": wall, "stages": manifest["stages"], "epochs": _epochs(run_dir)}


def prepare_kernel() -> dict:
    """Build the compiled training epoch, or load it from its cache, before any study is timed."""
    from mnist_study.training import fused

    start = time.perf_counter()
    kernel = fused.load()
    return {"seconds": time.perf_counter() - start,
            "step": "compiled epoch" if kernel is not None else f"eager step ({fused.unavailable_reason()})"}


def measure_report(run_dir: str, tsne_points: int, data_dir: str | None) -> dict:
    """build_report on a finished run; its wall seconds and report_timings.json."""
    try:
        from mnist_study.report.build import build_report
    except ImportError as error:
        return {"skipped": f"the report cannot be imported ({error})"}
    start = time.perf_counter()
    build_report(run_dir, tsne_points=tsne_points, data_dir=data_dir, progress=False)
    wall = time.perf_counter() - start
    timings_path = Path(run_dir) / "report_timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    return {"wall_seconds": wall, "timings": timings, "tsne_points": tsne_points}


def _activations(run_dir: str | None, data_dir: str | None) -> tuple:
    """Hidden activations (60000, H) and labels of every MNIST training image, and what they are."""
    import numpy as np

    from mnist_study.data.sources import load_dataset
    from mnist_study.data.splits import flatten_scaled

    dataset = load_dataset(data_dir, download=False, progress=False)
    labels = dataset.train_labels.astype(np.int64)
    if run_dir is not None:
        from mnist_study.results import load_run

        run = load_run(run_dir)
        raw = [e for e in run.experiments if e.frontend.kind == "raw" and run.results(e.name)]
        chosen = next((e for e in raw if e.hidden == 130), raw[0] if raw else None)
        if chosen is not None:
            hidden, _ = run.results(chosen.name)[0].model().hidden_and_proba(flatten_scaled(dataset.train_images))
            return hidden, labels, f"hidden activations of {chosen.name} ({chosen.hidden} nodes)"
    rng = np.random.default_rng(0)
    return rng.standard_normal((len(labels), 130)), labels, "random 130-d data"


def measure_tsne(method: str, points: int, run_dir: str | None, data_dir: str | None) -> dict:
    """One t-SNE map of `points` training images' hidden activations; seconds and kNN accuracy."""
    import numpy as np

    from mnist_study.report.analysis import knn_accuracy, sample_indices, tsne_embedding

    hidden, labels, what = _activations(run_dir, data_dir)
    index = sample_indices(len(labels), points, seed=0)
    x = np.asarray(hidden[index], dtype=np.float64)
    x = x[:, x.std(0) > 0] if (x.std(0) > 0).any() else x  # dead nodes, as the report drops them
    start = time.perf_counter()
    if method == "openTSNE":
        embedding = tsne_embedding(x, seed=0)  # the report's call: openTSNE, 250 + 50 iterations
    else:
        from sklearn.manifold import TSNE

        iterations = "max_iter" if "max_iter" in inspect.signature(TSNE.__init__).parameters else "n_iter"
        embedding = TSNE(n_components=2, perplexity=40, init="pca", learning_rate="auto", random_state=0,
                         n_jobs=-1, **{iterations: 300}).fit_transform(x)
    seconds = time.perf_counter() - start
    return {"method": method, "points": len(index), "seconds": seconds, "data": what,
            "knn_accuracy": knn_accuracy(np.asarray(embedding), labels[index])}


# ----------------------------------------------------------------------------------- the benchmark

def _measured(fn, *args) -> dict:
    value, memory = run_in_child(fn, *args)
    value["peak_memory"] = memory
    return value


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(args: argparse.Namespace, work: Path) -> dict:
    """Every measurement the arguments ask for; a JSON-able dict that `markdown` renders.

    The study's own run must succeed; a later measurement that fails is listed under "failures"
    and the others go on, so one error does not throw away minutes of measurements.
    """
    seeds = list(range(args.seeds))
    results: dict = {"machine": machine(), "failures": []}

    def attempt(label: str, fn, *fn_args) -> dict | None:
        try:
            return _measured(fn, *fn_args)
        except RuntimeError as error:
            last = str(error).strip().splitlines()[-1]
            results["failures"].append(f"{label}: {last}")
            _log(f"  failed: {error}")
            return None
    # A first run on a new machine builds the kernel once (tens of seconds, see the README); every
    # timed study here then loads it from the cache, as later runs on that machine do.
    results["kernel"] = _measured(prepare_kernel)
    _log(f"training kernel ready in {results['kernel']['seconds']:.1f} s: {results['kernel']['step']}")
    _log(f"study {args.study}, {args.seeds} seed(s) ...")
    main = _measured(measure_study, args.study, seeds, args.workers, args.data_dir, str(work / "run"), args.device)
    results["study"] = main
    _log(f"  {main['wall_seconds']:.1f} s")
    if not args.no_report:
        _log("report ...")
        report = attempt("report", measure_report, main["run_dir"], args.report_tsne_points, args.data_dir)
        results["report"] = report or {"skipped": "build_report failed (see the failures below)"}
        _log(f"  {results['report'].get('wall_seconds', 0):.1f} s {results['report'].get('skipped', '')}")
    if not args.no_tsne:
        points = list(args.tsne_points) + ([TSNE_FULL] if args.tsne_full else [])
        results["tsne"] = []
        for n in points:
            for method in ("openTSNE", "scikit-learn"):
                _log(f"t-SNE, {method}, {n:,} points ...")
                measured = attempt(f"t-SNE, {method}, {n:,} points", measure_tsne, method, n, main["run_dir"],
                                   args.data_dir)
                if measured:
                    results["tsne"].append(measured)
                    _log(f"  {measured['seconds']:.1f} s")
    if args.compare_workers:
        results["workers"] = []
        for w in (1, 2):
            if w == main["workers"]:
                results["workers"].append(main)
                continue
            _log(f"study with {w} worker(s) ...")
            measured = attempt(f"{w} worker(s)", measure_study, args.study, seeds, w, args.data_dir,
                               str(work / f"workers-{w}"), args.device)
            if measured:
                results["workers"].append(measured)
    if args.compare_vectorised:
        one_by_one = []
        for seed in seeds:
            _log(f"study, seed {seed} alone ...")
            measured = attempt(f"seed {seed} alone", measure_study, args.study, [seed], args.workers,
                               args.data_dir, str(work / f"seed-{seed}"), args.device)
            if measured is None:
                break
            one_by_one.append(measured)
        if len(one_by_one) == len(seeds):
            results["vectorised"] = {"together": main, "one_by_one": one_by_one}
    return results


# -------------------------------------------------------------------------------------- the report

MEMORY_HEADERS = ["peak MiB: main", "largest worker", "all together"]


def _mib(memory: dict) -> list[str]:
    """Peak memory of the measuring process, of its largest worker (— without workers), of all at once."""
    cell = lambda key: f"{memory[key]:,.0f}" if memory.get(key) else NOT_MEASURED  # noqa: E731
    return [cell("self_mib"), cell("workers_mib"), cell("total_mib")]


def _stage_sum(run: dict, prefix: str) -> float:
    return sum(v for k, v in run["stages"].items() if k.startswith(prefix))


def study_tables(run: dict) -> list[str]:
    summary = markdown_table(
        ["study", "seeds", "workers", "wall s", "training stages s", "front-end stages s", *MEMORY_HEADERS],
        [[run["study"], len(run["seeds"]), run["workers"], fmt_seconds(run["wall_seconds"]),
          fmt_seconds(_stage_sum(run, "train/")), fmt_seconds(_stage_sum(run, "frontend/")),
          *_mib(run["peak_memory"])]])
    rows = []
    for stage, seconds in sorted(run["stages"].items(), key=lambda kv: -kv[1]):
        epochs = run["epochs"].get(stage.split("/", 1)[1]) if stage.startswith("train/") else None
        rows.append([stage, fmt_seconds(seconds), f"{epochs:.1f}" if epochs else NOT_MEASURED,
                     fmt_seconds(seconds / epochs) if epochs else NOT_MEASURED])
    stages = markdown_table(["stage", "seconds", "epochs per seed", "s per epoch (all seeds, with evaluation)"], rows)
    note = (f"With {run['workers']} workers the stages overlap: they add up to "
            f"{fmt_seconds(sum(run['stages'].values()))} s in {fmt_seconds(run['wall_seconds'])} s of wall time."
            if run["workers"] > 1 else "")
    return [summary, "", stages] + (["", note] if note else [])


def report_tables(report: dict) -> list[str]:
    if "skipped" in report:
        return [f"Report not timed: {report['skipped']}."]
    timings = report.get("timings", {})
    rows = [[name, fmt_seconds(seconds), "once"] for name, seconds in timings.get("seconds", {}).items()]
    totals: dict[str, list[float]] = {}
    for analyses in timings.get("experiments", {}).values():
        for name, seconds in analyses.items():
            totals.setdefault(name, []).append(seconds)
    rows += [[name, fmt_seconds(sum(seconds)), f"sum over {len(seconds)} experiments"]
             for name, seconds in sorted(totals.items(), key=lambda kv: -sum(kv[1]))]
    own, largest, together = _mib(report["peak_memory"])
    nested = " t-SNE is part of \"hidden activations\"." if "t-SNE" in totals else ""
    workers = timings.get("workers")
    spread = (f" The per-experiment analyses ran in {workers} worker processes, so their times, summed over "
              "experiments, add up to more than the wall time." if workers and workers > 1 else "")
    return [f"`build_report(tsne_points={report['tsne_points']:,})`: {fmt_seconds(report['wall_seconds'])} s "
            f"in all; peak memory {own} MiB in the calling process, {largest} MiB in the largest worker, "
            f"{together} MiB all together.{nested}{spread}", "",
            markdown_table(["analysis", "seconds", "done"], rows, align="lrl")]


def tsne_table(tsne: list[dict]) -> list[str]:
    by_points: dict[int, dict[str, dict]] = {}
    for m in tsne:
        by_points.setdefault(m["points"], {})[m["method"]] = m
    rows = []
    for points, pair in sorted(by_points.items()):
        o, s = pair.get("openTSNE"), pair.get("scikit-learn")
        knn = [f"{m['knn_accuracy']:.3f}" if m else NOT_MEASURED for m in (o, s)]
        peak = [_mib(m["peak_memory"])[0] if m else NOT_MEASURED for m in (o, s)]
        rows.append([f"{points:,}", fmt_seconds(o and o["seconds"]), fmt_seconds(s and s["seconds"]),
                     f"{s['seconds'] / o['seconds']:.1f}×" if o and s else NOT_MEASURED, *knn, *peak])
    what = tsne[0]["data"]
    return [f"On {what}; perplexity 40, 300 iterations (250 with early exaggeration 12), PCA initialisation, "
            "learning rate \"auto\", all cores. kNN accuracy = leave-one-out 10-nearest-neighbour accuracy of the "
            "digit labels on the map (how well it keeps digits apart). Peak memory includes loading MNIST and "
            "computing the activations.", "",
            markdown_table(["points", "openTSNE s", "scikit-learn s", "scikit-learn / openTSNE", "kNN acc., openTSNE",
                            "kNN acc., scikit-learn", "peak MiB, openTSNE", "peak MiB, scikit-learn"], rows)]


def workers_table(runs: list[dict]) -> list[str]:
    rows = [[r["workers"], fmt_seconds(r["wall_seconds"]), fmt_seconds(_stage_sum(r, "train/")),
             f"{runs[0]['wall_seconds'] / r['wall_seconds']:.2f}×", *_mib(r["peak_memory"])] for r in runs]
    return ["One worker runs every task in the measuring process itself.", "",
            markdown_table(["workers", "wall s", "training stages s (summed)", "speed-up", *MEMORY_HEADERS], rows)]


def vectorised_table(v: dict) -> list[str]:
    together, alone = v["together"], v["one_by_one"]
    wall_alone = sum(r["wall_seconds"] for r in alone)
    train_alone = sum(_stage_sum(r, "train/") for r in alone)
    peak_alone = {key: max(r["peak_memory"].get(key) or 0 for r in alone)
                  for key in ("self_mib", "workers_mib", "total_mib")}
    n = len(together["seeds"])
    rows = [
        [f"{n} seeds in one run", fmt_seconds(together["wall_seconds"]),
         fmt_seconds(_stage_sum(together, "train/")), *_mib(together["peak_memory"])],
        [f"{n} runs of one seed each", fmt_seconds(wall_alone), fmt_seconds(train_alone),
         *_mib(peak_alone)],
    ]
    saved = 1 - together["wall_seconds"] / wall_alone
    verdict = (f"saves {100 * saved:.0f}% of the wall time ({wall_alone / together['wall_seconds']:.2f}× as fast)"
               if saved >= 0 else f"costs {-100 * saved:.0f}% more wall time")
    return [markdown_table(["how", "wall s", "training stages s (summed)", *MEMORY_HEADERS], rows), "",
            f"One run of all seeds {verdict}; the one-by-one runs also repeat loading the data and fitting "
            "the front-ends."]


def markdown(results: dict) -> str:
    parts = []
    if results.get("command"):
        parts += [f"Command: `{results['command']}`", ""]
    parts += [f"Machine: {machine_line(results['machine'])}", ""]
    if results["study"].get("device", "cpu") != "cpu":
        parts += [f"Training device: {results['study']['device']}.", ""]
    if results.get("kernel"):
        k = results["kernel"]
        parts += [f"Training step: {k['step']}, built or loaded from its cache before the timed runs in "
                  f"{fmt_seconds(k['seconds'])} s (a first run on a new machine adds the build once).", ""]
    parts += ["### Training and evaluating the study", "", *study_tables(results["study"])]
    if "report" in results:
        parts += ["", "### The HTML report", "", *report_tables(results["report"])]
    if results.get("tsne"):
        parts += ["", "### t-SNE: openTSNE beside scikit-learn", "", *tsne_table(results["tsne"])]
    if results.get("workers"):
        parts += ["", "### Worker processes", "", *workers_table(results["workers"])]
    if results.get("vectorised"):
        parts += ["", "### Seeds in one run, or run one by one", "", *vectorised_table(results["vectorised"])]
    if results.get("failures"):
        parts += ["", "Not measured, because they failed:", "", *[f"- {f}" for f in results["failures"]]]
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------------- CLI

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", help="study name or TOML path (default: paper; quick with --quick)")
    p.add_argument("--seeds", type=int, default=1, help="number of seeds, 0..N-1, trained together (default 1)")
    p.add_argument("--workers", type=int, help="worker processes (default: the runner's, one per core)")
    p.add_argument("--device", default="cpu", help="where training runs: cpu (default) or cuda")
    p.add_argument("--data-dir", default=os.environ.get("MNIST_STUDY_DATA"),
                   help="where MNIST is (default: $MNIST_STUDY_DATA, else the usual places)")
    p.add_argument("--no-report", action="store_true", help="do not time build_report")
    p.add_argument("--report-tsne-points", type=int, help="points in each of the report's t-SNE maps (default 10000)")
    p.add_argument("--no-tsne", action="store_true", help="skip the openTSNE / scikit-learn comparison")
    p.add_argument("--tsne-points", type=int, nargs="+", help="t-SNE comparison sizes (default 10000)")
    p.add_argument("--tsne-full", action="store_true", help="also compare t-SNE on all 60,000 training images")
    p.add_argument("--compare-workers", action="store_true", help="also run the study with 1 and 2 workers")
    p.add_argument("--compare-vectorised", action="store_true",
                   help="also run each seed on its own (needs --seeds 2 or more) to show what stacking saves")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: the `quick` study, report t-SNE on 1,000 points, t-SNE comparison on 2,000")
    p.add_argument("--work-dir", help="where the runs go (default: a temporary folder, removed afterwards)")
    p.add_argument("--keep", action="store_true", help="keep the runs (with --work-dir, they are always kept)")
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    return p


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    if args.compare_vectorised and args.seeds < 2:
        parser().error("--compare-vectorised needs --seeds 2 or more")
    args.study = args.study or ("quick" if args.quick else "paper")
    args.report_tsne_points = args.report_tsne_points or (QUICK_REPORT_TSNE if args.quick else 10_000)
    args.tsne_points = args.tsne_points or (QUICK_TSNE_POINTS if args.quick else TSNE_POINTS)
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="mnist-study-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        results = run(args, work)
    finally:
        if not (args.work_dir or args.keep):
            shutil.rmtree(work, ignore_errors=True)
        elif args.keep:
            _log(f"runs kept in {work}")
    results["command"] = " ".join(["python benchmarks/study_time.py", *argv])
    publish(results, args.json, markdown)
    if results["failures"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
