"""How the paper study's time grows with the number of seeds: 1, 5 and 10, from data to report.

    python benchmarks/many_seeds.py                     # the paper study, 1, 5 and 10 seeds (~5 min)
    python benchmarks/many_seeds.py --seed-counts 1 5   # fewer
    python benchmarks/many_seeds.py --quick             # the `quick` study, 1 and 2 seeds: a smoke run

Each study trains and evaluates every experiment for seeds 0..N-1 in one run (default workers),
in a fresh process so that its peak memory is its own. The report is built once, on the one-seed
run: its per-experiment figures use the first seed whatever the number of seeds, so it costs the
same for every N, and "data to report.html" adds it to each training time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fmt_seconds, machine, machine_line, markdown_table, publish, run_in_child  # noqa: E402
from study_time import measure_report, measure_study  # noqa: E402

SEED_COUNTS = (1, 5, 10)
QUICK_SEED_COUNTS = (1, 2)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(study: str, seed_counts: list[int], data_dir: str | None, tsne_points: int, work: Path,
        device: str = "cpu") -> dict:
    """Time the study at each number of seeds, and the report once; a JSON-able dict."""
    results: dict = {"machine": machine(), "study": study, "runs": []}
    for n in seed_counts:
        _log(f"study {study}, {n} seed(s) ...")
        measured, memory = run_in_child(measure_study, study, list(range(n)), None, data_dir, str(work / f"seeds-{n}"),
                                        device)
        measured["peak_memory"] = memory
        results["runs"].append(measured)
        _log(f"  {measured['wall_seconds']:.1f} s")
    first = results["runs"][0]
    _log("report ...")
    report, memory = run_in_child(measure_report, first["run_dir"], tsne_points, data_dir)
    report["peak_memory"] = memory
    results["report"] = report
    _log(f"  {report['wall_seconds']:.1f} s")
    return results


def markdown(results: dict) -> str:
    runs, report = results["runs"], results["report"]
    one = runs[0]["wall_seconds"] / len(runs[0]["seeds"])
    with_report = [r["wall_seconds"] + report["wall_seconds"] for r in runs]
    rows = [[len(r["seeds"]), r["workers"], fmt_seconds(r["wall_seconds"]),
             fmt_seconds(r["wall_seconds"] / len(r["seeds"])), f"{r['wall_seconds'] / len(r['seeds']) / one:.2f}×",
             fmt_seconds(total), f"{total / with_report[0]:.2f}×", f"{r['peak_memory']['total_mib']:,.0f}"]
            for r, total in zip(runs, with_report)]
    table = markdown_table(["seeds", "workers", "training + evaluation s", "per seed s", "per seed vs first",
                            "data to report.html s", "vs first", "peak MiB, all processes"], rows)
    parts = [f"Command: `{results['command']}`", ""] if results.get("command") else []
    parts += [
        f"Machine: {machine_line(results['machine'])}", "",
        f"The `{results['study']}` study, seeds 0..N-1 in one run each, trained on "
        f"{results['runs'][0].get('device') or 'the CPU'}. The report "
        f"(`build_report(tsne_points={report['tsne_points']:,})`, built once on the {len(runs[0]['seeds'])}-seed "
        f"run: its figures use the first seed) took {fmt_seconds(report['wall_seconds'])} s, peak "
        f"{report['peak_memory']['total_mib']:,.0f} MiB in all processes; \"data to report.html\" adds it to "
        "each run's training and evaluation.", "",
        table,
    ]
    return "\n".join(parts) + "\n"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed-counts", type=int, nargs="+", help="numbers of seeds to time (default: 1 5 10)")
    p.add_argument("--data-dir", default=os.environ.get("MNIST_STUDY_DATA"),
                   help="where MNIST is (default: $MNIST_STUDY_DATA, else the usual places)")
    p.add_argument("--quick", action="store_true", help="the quick study with 1 and 2 seeds: a smoke run")
    p.add_argument("--device", default="cpu", help="where training runs: cpu (default) or cuda")
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    return p


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    counts = sorted(set(args.seed_counts or (QUICK_SEED_COUNTS if args.quick else SEED_COUNTS)))
    if counts[0] < 1:
        parser().error("--seed-counts must be at least 1")
    work = Path(tempfile.mkdtemp(prefix="mnist-study-seeds-"))
    try:
        results = run("quick" if args.quick else "paper", counts, args.data_dir, 1_000 if args.quick else 10_000,
                      work, args.device)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["command"] = " ".join(["python benchmarks/many_seeds.py", *argv])
    publish(results, args.json, markdown)


if __name__ == "__main__":
    main()
