"""The HTML report of a run: one self-contained page of tables and figures.

    from mnist_study import build_report
    build_report("runs/paper-20260101-120000")            # -> runs/.../report.html

    mnist-study report runs/paper-20260101-120000 --tsne-points all

The page is rendered from the saved results (`results.py`) and the dataset; nothing is retrained.
Every figure is embedded as a PNG data URI, so the file can be mailed or archived on its own.
How long each analysis took is written to RUN_DIR/report_timings.json.

This module decides what is built where (the per-experiment analyses in worker processes, for
the networks `choose_analysed` picks) and renders `templates/report.html.j2`; `sections.py` builds
each section, `notes.py` the study's notes, `sweep.py` the reading of the study's sweeps,
`curve_figures.py` the curves the study declares.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np

from mnist_study.data.sources import Dataset, load_dataset, load_named_dataset
from mnist_study.data.splits import make_splits
from mnist_study.errors import DataError, OptionError, RunError
from mnist_study.executor import make_executor, single_threaded, worker_count
from mnist_study.files import write_json, write_text
from mnist_study.progress import StepProgress
from mnist_study.report import notes, sections
from mnist_study.report.sections import ExperimentInputs
from mnist_study.report.summary import claim_rows, diverged_epoch
from mnist_study.results import RunResults, load_run

TEMPLATE = "report.html.j2"


# ---------------------------------------------------------------------------------- entry point

def _load_data(run: RunResults, data_dir, name: str = "mnist") -> Dataset:
    """Dataset `name` of the run: from where its manifest says it was (or `data_dir`, for MNIST)."""
    recorded = run.manifest.get("datasets") or {"mnist": run.manifest.get("data") or {}}
    source = recorded.get(name, {}).get("source")
    if name != "mnist":
        candidates = [source, name] if source else [name]
    else:
        candidates = [data_dir] if data_dir is not None else [source, None]
    errors = []
    for candidate in candidates:
        if candidate is not None and not Path(candidate).is_dir() and candidate != name:
            continue
        try:
            if name == "mnist":
                return load_dataset(candidate, download=False, progress=False)
            return load_named_dataset(candidate, download=False, progress=False)
        except DataError as err:
            errors.append(str(err))
    raise DataError(f"the report needs the images the run was trained on ({name}), and they were not found"
                    + (f": {errors[-1]}" if errors else "") + " Pass --data-dir with the dataset's directory.")


class RunData:
    """The datasets of a run, each loaded when first needed."""

    def __init__(self, run: RunResults, data_dir):
        self.run, self.data_dir, self.loaded = run, data_dir, {}

    def __getitem__(self, name: str) -> Dataset:
        if name not in self.loaded:
            self.loaded[name] = _load_data(self.run, self.data_dir, name)
        return self.loaded[name]


def _analyse(run: RunResults, datasets: RunData, split_cache: dict, name: str, tsne_points, show_frontend: bool,
             tsne_jobs: int | None, full: bool = True) -> dict:
    """Every per-experiment section of experiment `name` (its first seed), and how long each took;
    with `full=False` only its front-end's (for a note that shows one of its figures)."""
    e = run.study.get(name)
    result = run.results(name)[0]
    key = e.data_key()
    if key not in split_cache:
        split_cache.clear()  # one split at a time: each is ~200 MB of float32 images
        split_cache[key] = make_splits(datasets[e.dataset], e.validation, e.validation_size, e.train_size,
                                       label_noise=e.label_noise, data_seed=e.data_seed)
    s = split_cache[key]
    inputs = ExperimentInputs(*s["train"], *s["test"], frontend=run.frontend(name))
    timings: dict[str, float] = {}

    def timed(label: str, make):
        start = time.perf_counter()
        value = make()
        timings[label] = time.perf_counter() - start
        return value

    out = {"experiment": None, "hidden": None, "patterns": None}
    if full:
        out["experiment"] = timed("figures", lambda: sections.experiment_section(e, result, inputs,
                                                                                 len(run.results(name))))
        out["hidden"] = timed("hidden activations",
                              lambda: sections.hidden_section(e, result, inputs, tsne_points, tsne_jobs))
        out["patterns"] = timed("activation maximisation", lambda: sections.patterns_section(e, result, inputs))
    out["frontend"] = timed("front-end", lambda: sections.frontend_section(e, inputs)) if show_frontend else None
    if (out["hidden"] or {}).get("tsne_seconds") is not None:
        timings["t-SNE"] = out["hidden"]["tsne_seconds"]
    if out["patterns"]:
        timings["activation maximisation (optimisation only)"] = out["patterns"]["seconds"]
    out["timings"] = timings
    return out


# A study with more experiments than this (or with sweeps) has only a few of its networks analysed.
ANALYSE_ALL_UP_TO = 12
ANALYSE_BEST = 3


def mean_validation(run: RunResults, name: str) -> float | None:
    """Mean validation accuracy (percent) of an experiment's seeds that did not diverge; None if none."""
    values = [r.accuracy("validation") for r in run.results(name) if diverged_epoch(r.metrics) is None]
    return sum(values) / len(values) if values else None


def choose_analysed(run: RunResults, done: list[str], picked: list[str] | None = None) -> tuple[list[str], str]:
    """The finished experiments whose networks the report looks inside, and how they were chosen.

    Those `picked` (the report's --analyse); else those the study names in `analyse`; else every one, for a study without sweeps of at most
    ANALYSE_ALL_UP_TO experiments; else the ANALYSE_BEST with the best mean validation accuracy
    (never the test set's, which the analyses would then flatter), best first.
    """
    study = run.study
    if picked:
        unknown = [n for n in picked if n not in {e.name for e in study.experiments}]
        if unknown:
            raise OptionError(f"--analyse {unknown[0]!r}: no such experiment in {study.name!r}; "
                              f"`mnist-study show {run.path} --all` lists them")
        return [n for n in picked if n in set(done)], "picked with <code>--analyse</code>"
    if study.analyse:
        names = [n for n in study.analyse if n in set(done)]
        return names, "named in the study's <code>analyse</code> list"
    if not study.sweep and len(study.experiments) <= ANALYSE_ALL_UP_TO:
        return list(done), ""
    ranked = sorted((n for n in done if mean_validation(run, n) is not None), key=lambda n: -mean_validation(run, n))
    names = ranked[:ANALYSE_BEST]
    return names, (f"the {len(names)} with the best mean validation accuracy, best first (chosen on validation "
                   "accuracy, never on the test set)")


_loaded: dict = {}  # per process: the run, dataset and split being analysed, loaded by the first task


@dataclass(frozen=True)
class AnalyseExperiment:
    """Every per-experiment section of one experiment: a task for an executor."""

    run_dir: str
    data_dir: str | None
    name: str
    tsne_points: int | str
    show_frontend: bool
    tsne_jobs: int | None  # None: t-SNE picks its threads (this process has the cores to itself)
    full: bool = True  # False: the front-end's figures only

    def run(self, emit) -> dict:
        if _loaded.get("run_dir") != self.run_dir:
            run = load_run(self.run_dir)
            _loaded.update(run_dir=self.run_dir, run=run, dataset=RunData(run, self.data_dir), splits={})
        return _analyse(_loaded["run"], _loaded["dataset"], _loaded["splits"], self.name, self.tsne_points,
                        self.show_frontend, self.tsne_jobs, self.full)


def _analyse_all(run: RunResults, dataset: RunData, data_dir, names: list[str], tsne_points,
                 frontend_shown_by: set[str], workers: int, on_done) -> dict[str, dict]:
    """The per-experiment analyses of `names`, and the front-end figures of the other experiments
    in `frontend_shown_by`, in `workers` processes (or here when workers <= 1).

    Each experiment's analyses are independent of the others', and most of their time is
    single-threaded (openTSNE's threads gain only ~1.3x on two cores), so one worker per core
    does the report in about 0.6x the time of one process.
    """
    if workers <= 1:  # this process has already loaded the data
        _loaded.update(run_dir=str(run.path), run=run, dataset=dataset, splits={})
    data = str(data_dir) if data_dir is not None else None  # workers find it as _load_data did here
    # With workers filling the cores, t-SNE gets one thread each too.
    extra = [n for n in sorted(frontend_shown_by) if n not in set(names)]
    tasks = [AnalyseExperiment(str(run.path), data, name, tsne_points, name in frontend_shown_by,
                               tsne_jobs=1 if workers > 1 else None, full=name in set(names))
             for name in names + extra]
    results = {}
    try:
        with make_executor(workers, limit_blas=True) as executor:
            for task, result in executor.run_all(tasks):
                results[task.name] = result
                on_done(task.name)
    finally:
        _loaded.clear()
    return results


def _render(context: dict) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(num=sections.num, signed=sections.signed, agreement=sections.agreement)
    return env.get_template(TEMPLATE).render(**context)


def build_report(run_dir: str | Path, *, tsne_points: int | Literal["all"] = 10_000,
                 data_dir: str | Path | None = None, progress: bool = True, workers: int | None = None,
                 analyse: list[str] | None = None) -> Path:
    """Write RUN_DIR/report.html (atomically) from a run's saved results; return its path.

    Parameters
    ----------
    run_dir : a run directory written by `run_study`.
    tsne_points : training images in each t-SNE map, a seeded sample (the paper used all of
        them; "all" reproduces that, at minutes per map).
    data_dir : where the dataset is; by default the directory recorded in the run's manifest.
    progress : show a progress bar over the analyses (on the terminal).
    workers : processes for the per-experiment analyses; by default one per core (at most one per
        experiment); 0 or 1 does everything in this process.
    analyse : the experiments to look inside (confusion, curves, hidden nodes, t-SNE); by default the
        study's `analyse`, else all of a small study without sweeps, else the few best on validation.

    Per-experiment figures use each experiment's first seed, and are drawn for the experiments
    `choose_analysed` picks (all of a small study without sweeps; else those the study's `analyse`
    names, or the few best on validation accuracy), so that a sweep of 1,000 networks has a page of
    a few MB: its sweep section and accuracy table cover every network. The seconds each analysis
    took go to RUN_DIR/report_timings.json.
    """
    started = time.perf_counter()
    if tsne_points != "all" and (isinstance(tsne_points, bool) or not isinstance(tsne_points, (int, np.integer))
                                 or tsne_points < 4):
        raise OptionError(f"tsne_points must be 'all' or a number of at least 4, got {tsne_points!r}")
    run = load_run(run_dir)
    done = [e for e in run.experiments if run.results(e.name)]
    if not done:
        raise RunError(f"{run.path} has no finished experiment yet; run or resume it first")
    names, chosen_how = choose_analysed(run, [e.name for e in done], analyse)
    # A note's `pattern:<experiment>` needs that network's patterns: its experiment is analysed too.
    finished = {e.name for e in done}
    names += [n for n in notes.pattern_experiments(run.study) if n in finished and n not in names]
    analysed = [run.study.get(n) for n in names]
    # Experiments sharing a front-end (same kind, parameters and split) show it once; a front-end
    # with nothing to show (raw pixels) has no section. The notes may show figures of others too.
    shown_frontends = {e.frontend_key(): e for e in reversed(analysed)}
    shown_by = {e.name for e in shown_frontends.values()}
    drawn_by = shown_by | (notes.figure_experiments(run.study) & finished)
    steps = StepProgress("report", total=5 + bool(run.study.curve) + len(names) + len(drawn_by - set(names)),
                         enabled=progress)
    workers = worker_count(workers, len(names) + len(drawn_by - set(names)))
    # Every array here is small (at most 60,000 x 784): extra BLAS and torch threads only add
    # wake-up costs, which grow 10-100x when other processes share the cores. t-SNE keeps its own
    # threads (see analysis.tsne_embedding).
    threads = contextlib.ExitStack()
    threads.enter_context(single_threaded())
    try:
        with steps.step("data"):
            datasets = RunData(run, data_dir)
            data = sections.data_section(datasets[run.study.datasets[0]], run)
        with steps.step("sweeps"):
            sweeps = sections.sweep_section(run)
        curves = []
        if run.study.curve:
            from mnist_study.report.curve_figures import curve_section

            with steps.step("curves"):
                curves = curve_section(run)
        with steps.step("accuracy table"):
            accuracy = sections.accuracy_section(run, analysed=set(names))
        steps.describe("analyses of each experiment")
        found = _analyse_all(run, datasets, data_dir, names, tsne_points, drawn_by, workers,
                             on_done=lambda name: steps.advance(f"{name} done"))
        experiments = [found[n]["experiment"] for n in names]
        hidden = [found[n]["hidden"] for n in names if found[n]["hidden"]]
        patterns = [found[n]["patterns"] for n in names if found[n]["patterns"]]
        frontends = [found[n]["frontend"] for n in names
                     if n in shown_by and sections.has_content(found[n]["frontend"])]
        per_experiment = {n: found[n]["timings"] for n in names + sorted(set(found) - set(names))}  # not as finished
        with steps.step("claims and notes"):
            claims, claims_error = [], None
            try:
                claims = claim_rows(run)
            except ValueError as err:
                claims_error = str(err)
            study_notes = notes.note_views(run, {n: found[n]["patterns"] for n in names},
                                           {n: f["frontend"] for n, f in found.items() if f["frontend"]})
        with steps.step("render"):
            shared = dict(steps.timings)
            context = {
                "study": run.study, "run_path": str(run.path),
                "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "data": data, "accuracy": accuracy, "experiments": experiments, "hidden": hidden,
                "patterns": patterns, "frontends": frontends, "claims": claims, "claims_error": claims_error,
                "notes": study_notes, "repro": sections.reproducibility_section(run), "tsne_points": tsne_points,
                "timings": {"shared": shared, "experiments": per_experiment}, "sweeps": sweeps, "curves": curves,
                "n_experiments": len(run.experiments), "n_finished": len(done), "chosen_how": chosen_how,
                "missing_experiments": [e.name for e in run.experiments if e.name not in finished],
            }
            out = run.path / "report.html"
            write_text(out, _render(context))
    finally:
        steps.close()
        threads.close()
    timings = {
        "tsne_points": tsne_points,
        "workers": workers,
        "seconds": {k: round(v, 3) for k, v in steps.timings.items()},
        "experiments": {name: {k: round(v, 3) for k, v in t.items()} for name, t in per_experiment.items()},
        "total_seconds": round(time.perf_counter() - started, 3),
    }
    write_json(run.path / "report_timings.json", timings)
    return out
