"""The `mnist-study` command: a thin layer over the library.

    mnist-study run                      # the paper's ten experiments, then the table and report
    mnist-study run --seeds 5            # five seeds each: means, confidence intervals, claims
    mnist-study run my-study.toml        # any study you write (see `mnist-study studies --help`)
    mnist-study show runs/paper-...      # the accuracy table of a finished run, and its claims
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from mnist_study.errors import OptionError, UserError

app = typer.Typer(
    help="Study how neural-network design shapes MNIST digit classification: train the paper's "
         "networks (or your own study), look inside them, test claims over seeds, and use them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rich panels cut long defaults and paths with "…" at 80 columns
)
console = Console()
err = Console(stderr=True)

USER_ERRORS = (UserError,)  # anything else is a bug, and keeps its traceback


class Format(str, Enum):
    table = "table"
    json = "json"


class DeviceChoice(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class ExecutorChoice(str, Enum):
    local = "local"
    ray = "ray"


def _fail(error: Exception) -> None:
    from rich.markup import escape

    err.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


MAX_SEEDS = 1000  # far beyond what any comparison needs; a typo (--seeds 50000) must not start a week of work
DATA_DIR_HELP = ("Folder holding the four MNIST-layout IDX files (gzipped or not). Default: $MNIST_STUDY_DATA, "
                 "then ~/.cache/mnist-study/mnist, then /usr/share/datasets/mnist, else download into the cache.")


@app.command(short_help='Fetch and verify the data; show where it is, and its digests.')
def data(
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    refetch: bool = typer.Option(False, "--refetch", help="Download MNIST into the cache again, even if present."),
    dataset_name: str = typer.Option("mnist", "--dataset", help="mnist, fashion-mnist (apt-get install "
                                     "dataset-fashion-mnist), or a folder of IDX files."),
) -> None:
    """Fetch MNIST if needed (or find another dataset), verify it, and show where it is and its SHA-256 digests."""
    from mnist_study.data.download import fetch_mnist
    from mnist_study.data.sources import default_cache_dir, load_named_dataset

    try:
        if refetch:
            fetch_mnist(default_cache_dir(), force=True, progress=True)
        dataset = load_named_dataset(dataset_name, data_dir, download=True, progress=True)
    except USER_ERRORS as e:
        _fail(e)
    # One file a line, digest whole: a digest cut to fit the terminal cannot be checked.
    label = "Data" if dataset.name == dataset.source else dataset.name
    console.print(f"{label} in [bold]{dataset.source}[/] (SHA-256 of each uncompressed file):", soft_wrap=True)
    for name, digest in dataset.digests.items():
        console.print(f"  {name}  {digest}", soft_wrap=True, highlight=False)
    console.print(f"train {dataset.train_images.shape}, test {dataset.test_images.shape}; "
                  + ("verified: the digests are the pinned ones" if dataset.verified
                     else "not a dataset we know: digests reported, not required"))


@app.command(short_help='The built-in studies; how to write your own.')
def studies(
    show: Optional[str] = typer.Option(None, "--show", metavar="NAME",
                                       help="Print a built-in study's TOML file (to copy and edit)."),
    schema: bool = typer.Option(False, "--schema", help="Print every key of a study file: type, default, "
                                                        "meaning; and the grammar of claim checks."),
) -> None:
    """List the built-in studies, and show how to write your own."""
    from importlib import resources

    from mnist_study.studies import BUILTIN_STUDIES, load_study

    if schema:
        from mnist_study.studies.schema import schema_text

        sys.stdout.write(schema_text())
        return
    if show is not None:
        if show not in BUILTIN_STUDIES:
            _fail(OptionError(f"no built-in study {show!r}; there are: {', '.join(BUILTIN_STUDIES)}"))
        sys.stdout.write(resources.files("mnist_study.studies").joinpath(f"{show}.toml").read_text())
        return
    for name in BUILTIN_STUDIES:
        s = load_study(name)
        console.print(f"[bold]{name}[/]: {s.description} ({len(s.experiments)} experiments, {len(s.claim)} claims)")
    console.print("\nA study file is TOML. Start from a built-in one, or extend it (`extends = \"paper\"`):")
    # One unbroken line (soft_wrap), so that it can be copied and pasted whole.
    console.print("  mnist-study studies --show paper > my-study.toml", soft_wrap=True, highlight=False, markup=False)
    console.print("then run it with [bold]mnist-study run my-study.toml[/]. Every key: "
                  "[bold]mnist-study studies --schema[/].", soft_wrap=True)


@app.command(short_help='Train and evaluate a study, then the table and the report.')
def run(
    study: Optional[str] = typer.Argument(None, show_default=False, help="A built-in study (paper, quick, "
                                          "fashion, ...: `mnist-study studies` lists them) or a TOML study "
                                          "file. Default: paper."),
    seeds: Optional[int] = typer.Option(None, "--seeds", min=1, max=MAX_SEEDS, help="Train N seeds of every experiment (seeds 0..N-1)."),
    seed: Optional[list[int]] = typer.Option(None, "--seed", min=0, help="Train this seed (repeatable). Default: 0."),
    device: DeviceChoice = typer.Option(DeviceChoice.auto, "--device", help="auto uses CUDA when PyTorch sees a GPU."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Finish an interrupted run: only what is missing is done."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory. Default: runs/<study>-<timestamp>."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0,
                                          help="Worker processes (one thread each). Default: one per core on the CPU, 0 = in this process."),
    report: bool = typer.Option(True, "--report/--no-report", help="Build report.html after training."),
    tsne_points: str = typer.Option("10000", "--tsne-points", help="Training images in each t-SNE map: a number or 'all'."),
    mlflow: bool = typer.Option(False, "--mlflow", help="When the run ends, log it to MLflow (pip install "
                                "'mnist-study[mlflow]'): one run per study run, one nested run per network."),
    mlflow_uri: Optional[str] = typer.Option(None, "--mlflow-uri", help="MLflow tracking URI (implies --mlflow). "
                                             "Default: sqlite:///<runs folder>/mlruns.db beside the run."),
    mlflow_experiment: Optional[str] = typer.Option(None, "--mlflow-experiment", help="MLflow experiment (implies "
                                                    "--mlflow). Default: the study's name."),
    executor: ExecutorChoice = typer.Option(ExecutorChoice.local, "--executor", help="local: worker processes on "
                                            "this machine. ray: tasks on a Ray cluster (pip install "
                                            "'mnist-study[ray]'); --workers then caps the tasks at once."),
    address: str = typer.Option("local", "--address", help="With --executor ray: local (a private Ray instance "
                                "here), auto (the cluster `ray start` joined) or ray://HOST:PORT (Ray Client)."),
    cpus_per_unit: float = typer.Option(1, "--cpus-per-unit", min=0, help="With --executor ray: CPUs each unit "
                                        "of work asks for (a front-end fit; an experiment's seeds)."),
    gpus_per_unit: float = typer.Option(0, "--gpus-per-unit", min=0, help="With --executor ray: the share of a "
                                        "GPU each unit asks for; 0.25 lets four small networks share one GPU."),
) -> None:
    """Train and evaluate every experiment of a study, then print the accuracy table and build the report.

    Results go to runs/<study>-<timestamp>/ and survive interruption: rerun with --resume RUN_DIR (on
    either executor). On a Ray cluster: --executor ray --address auto.
    """
    from mnist_study.runner import executor_options, new_run_dir, resume_run, run_study
    from mnist_study.studies import load_study

    command = " ".join(["mnist-study", *sys.argv[1:]])
    run_dir = resume or out
    try:
        # Every option is checked before any work starts: a typo must not cost a training run.
        points = parse_tsne_points(tsne_points)
        if seeds and seed:
            raise OptionError(f"give --seeds N or --seed S (repeatable), not both (got --seeds {seeds} and "
                              f"--seed {' --seed '.join(map(str, seed))})")
        seed_list = list(range(seeds)) if seeds else (list(seed) if seed else None)
        placement = {"executor": executor.value, "address": address, "cpus_per_unit": cpus_per_unit,
                     "gpus_per_unit": gpus_per_unit}
        executor_options(**placement)  # Ray installed, options that fit the executor
        tracked = mlflow or mlflow_uri is not None or mlflow_experiment is not None
        if tracked:
            from mnist_study.tracking import require_mlflow

            require_mlflow()
        if resume is not None:
            if out is not None and out.resolve() != resume.resolve():
                raise OptionError(f"--resume {resume} and --out {out} name different run directories; give one")
            if study is not None:
                _check_resumed_study(resume, study)
            run_dir = resume_run(resume, device=device.value, data_dir=data_dir, workers=workers,
                                 seeds=seed_list, command=command, **placement)
        else:
            chosen = load_study(study or "paper")
            run_dir = out or new_run_dir(chosen)
            run_dir = run_study(chosen, seeds=seed_list or [0], device=device.value, data_dir=data_dir,
                                out=run_dir, workers=workers, command=command, study_source=study or "paper",
                                **placement)
        _show(run_dir, Format.table, per_seed=False, every_row=False)
        if report:
            from mnist_study.runlock import run_lock

            with run_lock(run_dir, command):
                _report(run_dir, points, data_dir, workers)
        if tracked:
            from mnist_study.tracking import log_run

            # replace: a resumed run's record replaces the one logged when it stopped
            run_id = log_run(run_dir, mlflow_uri, mlflow_experiment, progress=True, replace=True)
            console.print(f"MLflow run: [bold]{run_id}[/]", soft_wrap=True)
    except KeyboardInterrupt:
        if run_dir is not None and (Path(run_dir) / "study.json").is_file():
            err.print(f"[yellow]interrupted[/]: finished results are on disk; continue with "
                      f"[bold]mnist-study run --resume {run_dir}[/]", soft_wrap=True)
        else:
            err.print("[yellow]interrupted[/] before any result was written; run the same command again",
                      soft_wrap=True)
        raise typer.Exit(130)
    except USER_ERRORS as e:
        _fail(e)
    console.print(f"\nResults: [bold]{run_dir}[/]", soft_wrap=True)


def _check_resumed_study(run_dir: Path, study: str) -> None:
    """`run STUDY --resume RUN_DIR`: STUDY must be the study the run holds, not silently ignored."""
    from mnist_study.results import read_study
    from mnist_study.studies import load_study, study_to_dict

    held = read_study(run_dir)
    if study_to_dict(load_study(study)) != study_to_dict(held):
        raise OptionError(f"{run_dir} holds a run of study {held.name!r}, not of {study!r}; "
                          f"resume it with `mnist-study run --resume {run_dir}` (no study argument)")


SHOW_ROWS = 40  # a sweep's accuracy table beyond this shows its best rows unless --all


def _show(run_dir: Path, fmt: Format, per_seed: bool, every_row: bool = True) -> None:
    from dataclasses import asdict

    from mnist_study.results import load_run
    from mnist_study.report.summary import accuracy_rows, accuracy_table, claim_rows, claims_table

    run = load_run(run_dir)
    rows, claims = accuracy_rows(run), claim_rows(run)
    views = []
    if run.study.sweep:
        from mnist_study.report.sweep import sweep_summary, sweep_tables, sweep_views

        views = sweep_views(run)
    curves = []
    if run.study.curve:
        from mnist_study.report.curves import curve_summary, curve_tables, curve_views

        curves = curve_views(run)
    if fmt == Format.json:
        print(json.dumps({"run": str(run_dir), "study": run.study.name, "experiments": [asdict(r) for r in rows],
                          "claims": [asdict(c) for c in claims], "missing": run.missing(),
                          **({"sweeps": sweep_summary(run, views)["sweeps"]} if views else {}),
                          **({"curves": curve_summary(run, curves)["curves"]} if curves else {})}, indent=2))
        return
    shown = rows
    if not every_row and not per_seed and len(rows) > SHOW_ROWS:
        shown = sorted(rows, key=lambda r: -(r.validation.mean if r.validation.mean is not None else -1))[:10]
    title = f"{run.study.name}: accuracy (%)" + (", the 10 best by validation accuracy" if shown is not rows else "")
    console.print(accuracy_table(shown, title, run.study.reference_source))
    if shown is not rows:
        console.print(f"... and {len(rows) - len(shown)} more experiments: mnist-study show {run_dir} --all",
                      soft_wrap=True)
    for table in sweep_tables(run, views) if views else []:
        console.print(table)
    for table in curve_tables(run, curves) if curves else []:
        console.print(table)
    if per_seed:
        for r in rows:
            console.print(f"{r.experiment}: " + ", ".join(
                f"seed {s}: {tr:.2f}/{va:.2f}/{te:.2f}" for s, tr, va, te in
                zip(r.seeds, r.train.values, r.validation.values, r.test.values)))
    if claims and max(len(r.seeds) for r in rows) < 2:
        console.print(f"The study states {len(claims)} claims; testing them needs at least 2 seeds "
                      f"(e.g. mnist-study run {run.manifest.get('study_source') or run.study.name} --seeds 5).",
                      soft_wrap=True)
    elif claims:
        console.print(claims_table(claims))
    if run.missing():
        console.print(f"[yellow]{len(run.missing())} experiment/seed results are missing[/]: "
                      f"finish them with mnist-study run --resume {run_dir}")


@app.command(short_help="A run's accuracy table, its sweeps' effects, its curves and its claims' verdicts.")
def show(
    run_dir: Path = typer.Argument(..., help="A run directory written by `mnist-study run`."),
    format: Format = typer.Option(Format.table, "--format", help="table for people, json for scripts."),
    per_seed: bool = typer.Option(False, "--per-seed", help="Also list every seed's train/validation/test accuracy."),
    every_row: bool = typer.Option(False, "--all", help=f"Every experiment's row, also when there are more than "
                                                        f"{SHOW_ROWS} (default: the 10 best by validation accuracy)."),
) -> None:
    """Print a run's accuracy table (mean ± 95% CI over seeds, beside the study's reference figures); for a
    sweep, each swept field's effect with confidence intervals and the best configuration; each curve the study
    declares, as a table of mean ± half the 95% CI per x; the claims' verdicts."""
    try:
        _show(run_dir, format, per_seed, every_row)
    except USER_ERRORS as e:
        _fail(e)


@app.command(short_help="Log a run directory (finished or not) to MLflow.")
def log(
    run_dir: Path = typer.Argument(..., help="A run directory, e.g. runs/paper-20260101-120000."),
    mlflow_uri: Optional[str] = typer.Option(None, "--mlflow-uri", help="MLflow tracking URI. Default: "
                                             "sqlite:///<runs folder>/mlruns.db beside the run."),
    experiment: Optional[str] = typer.Option(None, "--mlflow-experiment", help="MLflow experiment. Default: the "
                                             "study's name."),
    replace: bool = typer.Option(False, "--replace", help="If the run is already logged, log it anew and delete "
                                 "the earlier record."),
    artifacts: bool = typer.Option(True, "--artifacts/--no-artifacts", help="Copy weights, front-ends, study, "
                                   "manifest and report into MLflow's artifact store."),
) -> None:
    """Log a run to MLflow (pip install 'mnist-study[mlflow]'): one MLflow run for the study run, one nested run
    per network with its settings as parameters, its per-epoch curves, final metrics and weights.
    Browse with: mlflow ui --backend-store-uri sqlite:///runs/mlruns.db"""
    try:
        from mnist_study.tracking import log_run

        run_id = log_run(run_dir, mlflow_uri, experiment, artifacts=artifacts, progress=True, replace=replace)
    except USER_ERRORS as e:
        _fail(e)
    console.print(f"MLflow run: [bold]{run_id}[/]", soft_wrap=True)


def parse_tsne_points(text: str) -> int | str:
    """--tsne-points: 'all' or a whole number of at least 4, checked before any work starts."""
    if text.strip().lower() == "all":
        return "all"
    try:
        points = int(text)
    except ValueError:
        raise OptionError(f"--tsne-points must be a number of at least 4 or 'all', got {text!r}") from None
    if points < 4:
        raise OptionError(f"--tsne-points must be at least 4 (a t-SNE map needs points), got {points}")
    return points


def _report(run_dir: Path, tsne_points: int | str, data_dir: Optional[Path], workers: Optional[int] = None,
            analyse: Optional[list[str]] = None) -> None:
    from mnist_study.report.build import build_report

    path = build_report(run_dir, tsne_points=tsne_points, data_dir=data_dir, workers=workers, analyse=analyse)
    console.print(f"Report: [bold]{path}[/]")


@app.command(short_help="Rebuild a run's report.html, without retraining.")
def report(
    run_dir: Path = typer.Argument(..., help="A run directory written by `mnist-study run`."),
    tsne_points: str = typer.Option("10000", "--tsne-points", help="Training images in each t-SNE map: a number or 'all'."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="Processes for the per-experiment "
                                          "analyses. Default: one per core; 0 = in this process."),
    analyse: Optional[list[str]] = typer.Option(None, "--analyse", help="Look inside this experiment's networks "
                                                "(repeatable). Default: the study's `analyse`, else all of a small "
                                                "study, else a sweep's 3 best on validation."),
) -> None:
    """(Re)build RUN_DIR/report.html from the saved results, without retraining."""
    from mnist_study.results import load_run
    from mnist_study.runlock import run_lock

    try:
        points = parse_tsne_points(tsne_points)
        load_run(run_dir)  # a folder that is not a run (or is damaged) is named before a lock file is made
        with run_lock(run_dir, " ".join(["mnist-study", *sys.argv[1:]])):
            _report(run_dir, points, data_dir, workers, analyse)
    except KeyboardInterrupt:
        err.print(f"[yellow]interrupted[/]: {run_dir}/report.html is as it was; build it again with "
                  f"[bold]mnist-study report {run_dir}[/]", soft_wrap=True)
        raise typer.Exit(130)
    except USER_ERRORS as e:
        _fail(e)


class SplitChoice(str, Enum):
    train = "train"
    validation = "validation"
    test = "test"
    all = "all"


class MethodChoice(str, Enum):
    welch = "welch"
    bootstrap = "bootstrap"


def _finite_or_none(value):
    """JSON has no NaN: an undefined figure (e.g. the CI of one seed) is written as null."""
    return None if value is None or (isinstance(value, float) and value != value) else value


@app.command(short_help='Do two runs differ? Experiment by experiment.')
def compare(
    run_a: Path = typer.Argument(..., help="First run directory (A)."),
    run_b: Path = typer.Argument(..., help="Second run directory (B)."),
    split: SplitChoice = typer.Option(SplitChoice.test, "--split", help="The split compared, or all three."),
    method: MethodChoice = typer.Option(MethodChoice.welch, "--method",
                                        help="welch (Welch's t-test) or bootstrap (percentile interval)."),
    alpha: float = typer.Option(0.05, "--alpha", min=0.0001, max=0.5, help="Family-wise error rate (Holm)."),
    format: Format = typer.Option(Format.table, "--format", help="table for people, json for scripts."),
) -> None:
    """Do two runs differ? Experiment by experiment, with confidence intervals and Holm's correction."""
    from rich.table import Table

    from mnist_study.results import load_run
    from mnist_study.stats.compare import compare_values
    from mnist_study.study import protocol_differences

    try:
        a, b = load_run(run_a), load_run(run_b)
        splits = None if split is SplitChoice.all else [split.value]
        rows = compare_values(a.accuracy_table(), b.accuracy_table(), alpha=alpha, method=method.value,
                              splits=splits)
    except USER_ERRORS as e:
        _fail(e)
    differences = protocol_differences(a.study, b.study)
    if differences:
        err.print("[yellow]warning:[/] the two runs are of different protocols, so a difference may come from "
                  "the protocol rather than chance: " + "; ".join(differences), soft_wrap=True)
    if not rows:
        err.print(f"[yellow]warning:[/] the runs share no experiment with results on the {split.value} split; "
                  "nothing to compare", soft_wrap=True)
    if format == Format.json:
        print(json.dumps([{"experiment": c.experiment, "split": c.split, "mean_a": c.a.mean, "mean_b": c.b.mean,
                           "difference": _finite_or_none(c.difference),
                           "ci": [_finite_or_none(c.ci_low), _finite_or_none(c.ci_high)],
                           "p": _finite_or_none(c.p_value), "p_holm": _finite_or_none(c.p_holm),
                           "verdict": c.verdict} for c in rows], indent=2, allow_nan=False))
        return
    table = Table(title=f"A = {run_a}   B = {run_b}   ({method.value}, Holm at alpha = {alpha})")
    for col in ("experiment", "split", "A mean", "B mean", "A − B", "95% CI", "p (Holm)", "verdict"):
        table.add_column(col)
    for c in rows:
        table.add_row(c.experiment, c.split, f"{c.a.mean:.2f}", f"{c.b.mean:.2f}", f"{c.difference:+.2f}",
                      f"{c.ci_low:+.2f} … {c.ci_high:+.2f}", f"{c.p_holm:.3g}", c.verdict)
    console.print(table)


class PredictFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


@app.command(short_help='Read digits from photos, scans or drawings.')
def predict(
    run_dir: Path = typer.Argument(..., help="A run directory written by `mnist-study run`."),
    images: list[Path] = typer.Argument(..., help="Image files, or folders (searched recursively for images: .png, .jpg, .webp and more)."),
    experiment: Optional[str] = typer.Option(None, "--experiment", "-e",
                                             help="Experiment whose network answers. Default: best mean validation accuracy."),
    format: PredictFormat = typer.Option(PredictFormat.table, "--format", help="table for people; csv or json for scripts."),
    show_input: Optional[Path] = typer.Option(None, "--show-input",
                                              help="Save the 28x28 image the network saw for each file, as PNG, in this folder."),
    min_confidence: float = typer.Option(0.5, "--min-confidence", min=0.0, max=1.0,
                                         help="Flag answers whose probability is below this as uncertain (?)."),
) -> None:
    """Read digits from photos, scans or drawings, preprocessed the way MNIST's digits were.

    Each image is made greyscale, inverted when the paper is light, cropped to the ink, scaled to fit 20x20 and centred by its centre of mass in 28x28; then the network gives every class a probability.
    """
    from rich.markup import escape

    from mnist_study.serving.predict import as_table, predict_files, render

    try:
        rows = predict_files(run_dir, images, experiment=experiment, show_input=show_input,
                             min_confidence=min_confidence)
    except USER_ERRORS as e:
        _fail(e)
    if format is PredictFormat.table:
        console.print(as_table(rows))
        for row in rows:
            if not row.ok:
                err.print(f"[red]{escape(row.error)}[/]", highlight=False, soft_wrap=True)
    else:
        sys.stdout.write(render(rows, format.value))
    if not all(row.ok for row in rows):
        raise typer.Exit(1)


@app.command(short_help='A draw-a-digit page and a JSON API.')
def serve(
    run_dir: Path = typer.Argument(..., help="A run directory written by `mnist-study run`."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on; 0.0.0.0 opens it to your network."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    max_requests_per_minute: int = typer.Option(
        1200, "--max-requests-per-minute", min=0,
        help="Requests a minute one client address may make (bursts of 10 s worth); 0: no limit."),
) -> None:
    """Serve a page to draw digits and watch every network answer as you draw, plus a JSON API (docs at /docs)."""
    from mnist_study.serving.server import Limits, serve as serve_app

    try:
        serve_app(run_dir, host=host, port=port, limits=Limits(requests_per_minute=max_requests_per_minute))
    except USER_ERRORS as e:
        _fail(e)


if __name__ == "__main__":
    app()
