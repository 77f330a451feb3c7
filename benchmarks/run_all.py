"""Run the training benchmarks and write their sections of BENCHMARKS.md (`make bench`).

    python benchmarks/run_all.py                          # epoch speed, whole study, many seeds -> BENCHMARKS.md (~35 min)
    python benchmarks/run_all.py --only training-speed    # redo one section, keep the other
    python benchmarks/run_all.py --seeds 5 --compare-vectorised --compare-workers --tsne-full
    python benchmarks/run_all.py --quick                  # a smoke run: prints the sections, writes nothing
    python benchmarks/run_all.py --quick --output /tmp/BENCHMARKS.md
    python benchmarks/run_all.py --device cuda --output BENCHMARKS-gpu.md   # on a machine with a GPU

Each benchmark runs as its own process (so peak memory is its own) and hands back JSON, which is
rendered here. Only the text between a section's markers, e.g.

    <!-- training-speed:start --> ... <!-- training-speed:end -->

is replaced; everything else in the file (the hand-written sections on server load and prediction
throughput) stays as it is. A section not yet in the file is appended; a missing file is created.
Run it on a quiet machine: the figures are wall-clock times.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_OUTPUT = REPO / "BENCHMARKS.md"
SECTIONS = {  # marker name -> (heading, script)
    "training-speed": ("Training speed: one epoch on one core", "epoch_speed.py"),
    "study-time": ("Whole-study time: training, report, t-SNE", "study_time.py"),
    "many-seeds": ("Many seeds: the paper study with 1, 5 and 10 seeds", "many_seeds.py"),
}
NEW_FILE = """# Benchmarks

Measured figures for mnist-study. The sections between `<!-- NAME:start -->` and `<!-- NAME:end -->`
markers are written by `python benchmarks/run_all.py` (`make bench`), which replaces only them:
edit outside the markers.
"""


# ------------------------------------------------------------------------------------ the sections

def _markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def replace_section(text: str, name: str, body: str) -> str:
    """`text` with the section `name` (markers included) holding `body`; appended when absent.

    Raises ValueError when the markers are unpaired, repeated or out of order, rather than guess
    which text is generated and risk deleting hand-written text.
    """
    start, end = _markers(name)
    n_start, n_end = text.count(start), text.count(end)
    block = f"{start}\n{body.strip()}\n{end}"
    if n_start == 0 and n_end == 0:
        return (text.rstrip("\n") + "\n\n" if text.strip() else "") + block + "\n"
    i, j = text.find(start), text.find(end)
    if n_start != 1 or n_end != 1 or j < i:
        raise ValueError(f"the markers {start} / {end} must appear once each, in that order "
                         f"(found {n_start} and {n_end}); fix the file by hand")
    return text[:i] + block + text[j + len(end):]


def write_sections(path: Path, sections: dict[str, str]) -> None:
    """Replace (or add) each named section of the markdown file at `path`, creating it if missing."""
    text = path.read_text() if path.exists() else NEW_FILE
    for name, body in sections.items():
        text = replace_section(text, name, body)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # readers never see a half-written file


# ---------------------------------------------------------------------------------- the benchmarks

def benchmark_args(name: str, args: argparse.Namespace) -> list[str]:
    """The command-line arguments run_all forwards to one benchmark."""
    out = ["--quick"] if args.quick else []
    if args.data_dir:
        out += ["--data-dir", args.data_dir]
    if args.device:
        out += ["--device", args.device]
    if name == "training-speed":
        if args.repeats:
            out += ["--repeats", str(args.repeats)]
        if args.widths:
            out += ["--widths", *map(str, args.widths)]
    elif name == "study-time":
        if args.seeds != 1:
            out += ["--seeds", str(args.seeds)]
        for flag in ("compare_workers", "compare_vectorised", "tsne_full", "no_report", "no_tsne"):
            if getattr(args, flag):
                out.append("--" + flag.replace("_", "-"))
    return out


def run_benchmark(name: str, args: argparse.Namespace) -> tuple[str | None, str | None]:
    """Run one benchmark in its own process; (section body, None) or (None, why it failed).

    A benchmark that measured something but failed part of the way still gives its section: the
    part that failed is listed in it.
    """
    import importlib

    heading, script = SECTIONS[name]
    forwarded = benchmark_args(name, args)
    command = " ".join(["python", f"benchmarks/{script}", *forwarded])
    print(f"== {command}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="mnist-bench-") as tmp:
        out = Path(tmp) / "results.json"
        done = subprocess.run([sys.executable, str(HERE / script), *forwarded, "--json", str(out)],
                              cwd=REPO, stdout=subprocess.DEVNULL)
        if not out.is_file():
            return None, f"{command} exited with status {done.returncode} and wrote no results"
        results = json.loads(out.read_text())
    results["command"] = command
    module = importlib.import_module(script.removesuffix(".py"))
    title = f"## {heading}" + (" (quick smoke run: indicative only)" if args.quick else "")
    regenerate = " ".join(["python benchmarks/run_all.py", "--only", name, *benchmark_args(name, args)])
    body = f"{title}\n\n*Written by `{regenerate}`.*\n\n{module.markdown(results)}"
    return body, None if done.returncode == 0 else f"{command} exited with status {done.returncode}"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=list(SECTIONS), nargs="+", help="run only these benchmarks (default: all)")
    p.add_argument("--output", type=Path,
                   help=f"markdown file to update (default: {DEFAULT_OUTPUT.name} at the repository root; "
                        "with --quick, print the sections instead)")
    p.add_argument("--quick", action="store_true", help="smoke runs of every benchmark (numbers indicative only)")
    p.add_argument("--data-dir", help="where MNIST is (default: $MNIST_STUDY_DATA, else the usual places)")
    p.add_argument("--device", help="cpu (default) or cuda, for every benchmark: on a GPU, `--device cuda --output "
                                    "BENCHMARKS-gpu.md` keeps the CPU figures")
    group = p.add_argument_group("training-speed (epoch_speed.py)")
    group.add_argument("--repeats", type=int, help="timed epochs per cell")
    group.add_argument("--widths", type=int, nargs="+", help="hidden widths")
    group = p.add_argument_group("study-time (study_time.py)")
    group.add_argument("--seeds", type=int, default=1, help="seeds trained together (default 1)")
    group.add_argument("--compare-workers", action="store_true", help="also time the study with 1 and 2 workers")
    group.add_argument("--compare-vectorised", action="store_true",
                       help="also time each seed run on its own (needs --seeds 2 or more)")
    group.add_argument("--tsne-full", action="store_true", help="also compare t-SNE on all 60,000 images")
    group.add_argument("--no-report", action="store_true", help="do not time the HTML report")
    group.add_argument("--no-tsne", action="store_true", help="skip the openTSNE / scikit-learn comparison")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.compare_vectorised and args.seeds < 2:
        parser().error("--compare-vectorised needs --seeds 2 or more")
    output = args.output or (None if args.quick else DEFAULT_OUTPUT)
    sections, failures = {}, []
    for name in args.only or SECTIONS:
        body, failure = run_benchmark(name, args)
        if body is not None:
            sections[name] = body
        if failure:
            failures.append(failure)
    if output is None:
        for name, body in sections.items():
            start, end = _markers(name)
            print(f"{start}\n{body.strip()}\n{end}\n")
    elif sections:
        write_sections(output, sections)
        print(f"wrote {', '.join(sections)} to {output}", file=sys.stderr)
    for failure in failures:
        print(f"failed: {failure}", file=sys.stderr)
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
