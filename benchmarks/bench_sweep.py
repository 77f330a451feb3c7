"""How long reading a study with a large [[sweep]] takes: expanding it, validating it, in all.

    python benchmarks/bench_sweep.py                      # 1,000, 10,000 and 100,000 experiments
    python benchmarks/bench_sweep.py --sizes 1000 10000   # fewer
    python benchmarks/bench_sweep.py --repeats 5          # the best of 5 (default 3; 1 above 10,000)

Each sweep crosses fields of 10 values each (hidden, learning_rate, batch_size, data_seed,
label_noise), so 10^k experiments, and claims one selector check at every other setting. Three
times per size, the best of `--repeats`: "expand" (`expand_sweeps` on the parsed TOML), "validate"
(`Study.model_validate` of the expanded data, the pydantic models), and "parse" (`parse_study` from
the text: TOML, expansion, claim expansion, validation). No time is asserted anywhere: these are
figures to read, on a quiet machine.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fmt_seconds, machine, machine_line, markdown_table, publish  # noqa: E402

from mnist_study.studies import parse_study  # noqa: E402
from mnist_study.studies.selectors import expand_claims  # noqa: E402
from mnist_study.studies.sweep import expand_sweeps  # noqa: E402
from mnist_study.schedule import make_plan  # noqa: E402
from mnist_study.study import Study  # noqa: E402

SIZES = (1_000, 10_000, 100_000)
PLAN_SEEDS = 5  # the plan of a fresh run of the sweep: every (experiment, seed) still to train
FIELDS = {  # 10 values each: a sweep of 10^k experiments crosses the first k
    "hidden": [10 * (i + 1) for i in range(10)],
    "learning_rate": [round(0.0005 * (i + 1), 4) for i in range(10)],
    "batch_size": [16 * (i + 1) for i in range(10)],
    "data_seed": list(range(10)),
    "label_noise": [round(0.05 * i, 2) for i in range(10)],
}


def study_text(size: int) -> str:
    """A study with one sweep of `size` (a power of 10) experiments and one selector claim."""
    k = round(len(str(size)) - 1)
    if 10 ** k != size or not 1 <= k <= len(FIELDS):
        raise SystemExit(f"--sizes: {size} is not a power of 10 between 10 and 10^{len(FIELDS)}")
    vary = "\n".join(f"{field} = {values}" for field, values in list(FIELDS.items())[:k])
    return (f'name = "sweep-{size}"\nlarge_sweep = {"true" if size > 100_000 else "false"}\n\n'
            '[[sweep]]\nname = "grid"\nmax_epochs = 20\ntrain_size = 10000\n'
            f"[sweep.vary]\n{vary}\n\n"
            '[[claim]]\nname = "wider"\ntext = "100 nodes beat 10 at every other setting"\n'
            'checks = ["{hidden=100}.test > {hidden=10}.test"]\n')


def best_of(repeats: int, work) -> float:
    times = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(size: int, repeats: int) -> dict:
    text = study_text(size)
    raw = tomllib.loads(text)
    expanded = expand_claims(expand_sweeps(raw, "bench"), "bench")
    study = parse_study(text, "bench")
    assert len(study.experiments) == size
    with tempfile.TemporaryDirectory() as run_dir:  # an empty run: every seed still to train
        plan = best_of(repeats, lambda: make_plan(study, list(range(PLAN_SEEDS)), Path(run_dir)))
    return {"experiments": size, "checks": len(study.claim[0].checks),
            "expand": best_of(repeats, lambda: expand_claims(expand_sweeps(raw, "bench"), "bench")),
            "validate": best_of(repeats, lambda: Study.model_validate(expanded)),
            "parse": best_of(repeats, lambda: parse_study(text, "bench")), "plan": plan}


def run(sizes: list[int], repeats: int | None) -> dict:
    rows = []
    for size in sizes:
        print(f"{size:,} experiments ...", file=sys.stderr, flush=True)
        rows.append(measure(size, repeats or (3 if size <= 10_000 else 1)))
    return {"machine": machine(), "rows": rows}


def markdown(results: dict) -> str:
    rows = [[f"{r['experiments']:,}", f"{r['checks']:,}", fmt_seconds(r["expand"]), fmt_seconds(r["validate"]),
             fmt_seconds(r["parse"]), f"{1e6 * r['parse'] / r['experiments']:.0f}", fmt_seconds(r["plan"])]
            for r in results["rows"]]
    table = markdown_table(["experiments", "claim checks", "expand s", "validate s", "parse s", "µs / experiment",
                            f"plan s ({PLAN_SEEDS} seeds)"], rows)
    return f"### Reading a study with a sweep\n\n{table}\n\n{machine_line(results['machine'])}\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="experiments per sweep: powers of 10")
    parser.add_argument("--repeats", type=int, default=None, help="take the best of this many (default 3; 1 "
                                                                   "above 10,000)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    publish(run(args.sizes, args.repeats), args.json, markdown)


if __name__ == "__main__":
    main()
