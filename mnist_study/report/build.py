"""The HTML report of a run: one self-contained page of tables and figures.

    from mnist_study import build_report
    build_report("runs/paper-20260101-120000")            # -> runs/.../report.html

    mnist-study report runs/paper-20260101-120000 --tsne-points all

The page is rendered from the saved results (`results.py`) and the dataset; nothing is retrained.
Every figure is embedded as a PNG data URI, so the file can be mailed or archived on its own.
How long each analysis took is written to RUN_DIR/report_timings.json.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from mnist_study.report import analysis
from mnist_study.report import figures
from mnist_study.data.sources import Dataset, load_dataset
from mnist_study.errors import DataError, RunError
from mnist_study.files import write_json, write_text
from mnist_study.results import SPLITS, RunResults, SeedResult, load_run
from mnist_study.data.splits import make_splits
from mnist_study.study import Experiment
from mnist_study.report.summary import accuracy_rows, claim_rows

TEMPLATE = "report.html.j2"
SAMPLE_FOR_NODE_RANKING = 2000  # training images used to rank nodes of wide layers by mean activation

# Experiment 5's epoch-1 loss / accuracy in the paper's log (Appendix G); the study files carry
# every experiment's as `reference.first_epoch_loss` / `first_epoch_accuracy`.
PAPER_EXP5_EPOCH1 = (0.3918, 0.9113)
PRINTED_L2 = 0.01  # `kernel_regularizer=tf.keras.regularizers.l2(0.01)` in the printed code
# Experiment 5 (80 nodes), epoch 1, loss/accuracy from the paper's own Keras code at each lambda
# (see the comment at the top of studies/paper.toml).
KERAS_EXP5_EPOCH1 = {0.001: (0.390, 0.912), 0.01: (0.591, 0.895)}


# ------------------------------------------------------------------------------ timing, progress

@dataclass
class _Steps:
    """Times each analysis and advances a Rich progress bar over them."""

    total: int
    progress: bool
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        self._bar = None
        if self.progress:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("[bold]report[/]"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.description}"), transient=True)
            self._task = self._bar.add_task("", total=self.total)
            self._bar.start()

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        if self._bar is not None:
            self._bar.update(self._task, description=name)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start
            if self._bar is not None:
                self._bar.advance(self._task)

    def describe(self, text: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=text)

    def advance(self, text: str) -> None:
        """One step done elsewhere (timed there)."""
        if self._bar is not None:
            self._bar.update(self._task, description=text, advance=1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


# ---------------------------------------------------------------------------------- the sections

def _uri(fig) -> str:
    return figures.figure_to_data_uri(fig)


def _fmt(value, digits: int = 2, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}{suffix}"


def _signed(value, digits: int = 1) -> str:
    return "—" if value is None else f"{value:+.{digits}f}"


def _frontend_text(e: Experiment) -> str:
    f = e.frontend
    if f.kind == "pca":
        return f"PCA keeping {f.variance:.0%} of the variance"
    if f.kind == "forest_pixels":
        return f"{f.n_pixels} forest-chosen pixels ({f.n_trees} trees)"
    return "784 raw pixels"


def _data_section(dataset: Dataset, run: RunResults) -> dict:
    shapes = [
        {"name": "training images", "shape": dataset.train_images.shape, "dtype": str(dataset.train_images.dtype)},
        {"name": "training labels", "shape": dataset.train_labels.shape, "dtype": str(dataset.train_labels.dtype)},
        {"name": "test images", "shape": dataset.test_images.shape, "dtype": str(dataset.test_images.dtype)},
        {"name": "test labels", "shape": dataset.test_labels.shape, "dtype": str(dataset.test_labels.dtype)},
    ]
    splits = []
    for e in run.experiments:
        n = len(dataset.train_labels)
        train = min(n - e.validation_size, e.train_size or n)
        splits.append({"experiment": e.name, "train": train, "validation": e.validation_size,
                       "held_out": f"{e.validation} {e.validation_size:,}", "test": len(dataset.test_labels)})
    return {
        "source": dataset.source, "verified": dataset.verified, "shapes": shapes, "splits": splits,
        "counts_img": _uri(figures.label_counts(dataset.train_labels, dataset.test_labels)),
        "train_img": _uri(figures.digit_grid(dataset.train_images[:50], dataset.train_labels[:50],
                                             title="First 50 training images")),
        "test_img": _uri(figures.digit_grid(dataset.test_images[:50], dataset.test_labels[:50],
                                            title="First 50 test images")),
    }


def _accuracy_section(run: RunResults) -> dict:
    rows = accuracy_rows(run)
    several = any(len(r["seeds"]) > 1 for r in rows)
    table, points = [], []
    for row, e in zip(rows, run.experiments):
        cells = {}
        for split in SPLITS:
            s = row[split]
            ours = "—" if s["mean"] is None else f"{s['mean']:.2f}"
            ci = "" if s["ci"] is None else f"± {(s['ci'][1] - s['ci'][0]) / 2:.2f}"
            cells[split] = {"ours": ours, "ci": ci, "paper": _fmt(s["reference"], 1), "diff": _signed(s["difference"], 2),
                            "diff_class": _diff_class(s["difference"])}
        epochs = row["epochs"]
        table.append({
            "name": e.name, "title": e.title, "frontend": _frontend_text(e), "hidden": e.hidden,
            "l2": f"{e.l2:g}", "seeds": len(row["seeds"]), "cells": cells,
            "epochs": "—" if not epochs else (str(epochs[0]) if len(set(epochs)) == 1
                                              else f"{min(epochs)}–{max(epochs)}"),
            "seconds": _fmt(float(np.mean(row["train_seconds"])) if row["train_seconds"] else None, 1),
        })
        if row["test"]["mean"] is not None:
            points.append({
                "label": e.name, "width": e.hidden, "kind": e.frontend.kind,
                "ours": {split: (row[split]["mean"], *(row[split]["ci"] or (math.nan, math.nan)))
                         for split in SPLITS if row[split]["mean"] is not None},
                "reference": {split: row[split]["reference"] for split in SPLITS},
            })
    width_img = _uri(figures.accuracy_vs_width(points)) if points else None
    return {"rows": table, "several_seeds": several, "width_img": width_img}


def _diff_class(difference) -> str:
    if difference is None:
        return ""
    return "good" if abs(difference) <= 1 else ("warn" if abs(difference) <= 3 else "bad")


def _report_table(report: dict) -> list[dict]:
    rows = []
    for key in [str(d) for d in range(10)] + ["macro avg", "weighted avg"]:
        if key in report:
            r = report[key]
            rows.append({"label": key, "precision": _fmt(r["precision"], 3), "recall": _fmt(r["recall"], 3),
                         "f1": _fmt(r["f1-score"], 3), "support": int(r["support"])})
    return rows


@dataclass
class _Inputs:
    """One experiment's data as its network sees it."""

    x_train: np.ndarray       # (N, 784) pixels in [0, 1]
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    frontend: object

    def features(self, x: np.ndarray) -> np.ndarray:
        return self.frontend.transform(x)


def _experiment_section(e: Experiment, result: SeedResult, inputs: _Inputs, n_seeds: int) -> dict:
    y_test = inputs.y_test
    predicted = result.test_proba.argmax(1)
    a, b, count = analysis.most_confused_pair(result.confusion)
    images = inputs.x_test.reshape(-1, 28, 28)
    m = result.metrics
    return {
        "name": e.name, "title": e.title, "anchor": f"exp-{e.name}", "seed": result.seed, "n_seeds": n_seeds,
        "summary": (f"{_frontend_text(e)}, {e.hidden} hidden node{'s' if e.hidden != 1 else ''}, "
                    f"λ = {e.l2:g}; seed {result.seed}: test accuracy {result.accuracy('test'):.2f}%, "
                    f"{m['epochs_run']} epochs, weights of epoch {m['best_epoch']} kept"),
        "confusion_img": _uri(figures.confusion_heatmap(result.confusion, f"{e.name}: test-set confusion matrix")),
        "report_rows": _report_table(result.classification_report),
        "report_accuracy": _fmt(result.classification_report.get("accuracy"), 4),
        "curves_img": _uri(figures.training_curves(result.history, f"{e.name}: accuracy and loss per epoch",
                                                   m.get("best_epoch"))),
        "grid_img": _uri(figures.digit_grid(images[:25], y_test[:25], predicted[:25],
                                            title=f"{e.name}: first 25 test images", ncols=13)),
        "proba_img": _uri(figures.probability_table(result.test_proba[:20], y_test[:20],
                                                    f"{e.name}: probabilities of the first 20 test images")),
        "pair": {"a": a, "b": b, "count": count,
                 "img": _uri(figures.confused_pair(images, y_test, predicted, a, b,
                                                   title=f"{e.name}: {a} and {b} are confused {count} times "
                                                         f"({a} as {b}: {int(result.confusion[a, b])}, "
                                                         f"{b} as {a}: {int(result.confusion[b, a])})"))},
    }


def _hidden_section(e: Experiment, result: SeedResult, inputs: _Inputs, tsne_points, tsne_jobs: int | None) -> dict:
    model = result.model()
    width = model.hidden_width
    if width <= 2:
        hidden, _ = model.hidden_and_proba(inputs.features(inputs.x_train))
        if width == 1:
            fig = figures.activation_boxplot(hidden[:, 0], inputs.y_train,
                                             f"{e.name}: activation of the single hidden node per digit")
            what = (f"The single node's activation on all {len(inputs.y_train):,} training images, by digit, "
                    "with each digit's full range (the notebook's Out[51]).")
        else:
            fig = figures.activation_scatter(hidden, inputs.y_train, f"{e.name}: the two hidden nodes' activations")
            what = f"Both nodes' activations on all {len(inputs.y_train):,} training images, one colour per digit."
        return {"name": e.name, "kind": "boxplot" if width == 1 else "scatter", "img": _uri(fig), "what": what}
    index = analysis.sample_indices(len(inputs.y_train), tsne_points, result.seed)
    hidden, _ = model.hidden_and_proba(inputs.features(inputs.x_train[index]))
    start = time.perf_counter()
    embedding = analysis.tsne_embedding(hidden, seed=result.seed, n_jobs=tsne_jobs)
    seconds = time.perf_counter() - start
    knn = analysis.knn_accuracy(embedding, inputs.y_train[index])
    fig = figures.tsne_map(embedding, inputs.y_train[index], inputs.x_train[index],
                           f"{e.name}: t-SNE map of the {width} hidden activations of {len(index):,} training images")
    what = (f"t-SNE (perplexity 40, 300 iterations, PCA initialisation, as the notebook) of the {width} "
            f"hidden activations of {len(index):,} training images "
            f"({'all' if len(index) == len(inputs.y_train) else f'a seeded sample of {len(inputs.y_train):,}'}). "
            f"A 10-nearest-neighbour vote on the map recovers the digit for {knn:.1%} of the points.")
    return {"name": e.name, "kind": "tsne", "img": _uri(fig), "what": what, "knn": knn,
            "points": len(index), "tsne_seconds": seconds}


def _patterns_section(e: Experiment, result: SeedResult, inputs: _Inputs) -> dict:
    model = result.model()
    sample = inputs.x_train[analysis.sample_indices(len(inputs.y_train), SAMPLE_FOR_NODE_RANKING, result.seed)]
    start = time.perf_counter()
    patterns = analysis.activation_maximization(model, inputs.frontend, sample=sample, seed=result.seed)
    seconds = time.perf_counter() - start
    chosen = ("every hidden node" if len(patterns.nodes) == model.hidden_width
              else f"the {len(patterns.nodes)} most active of {model.hidden_width} nodes (by mean activation "
                   f"on {len(sample):,} training images)")
    counts = np.bincount(patterns.predicted, minlength=10)
    fig = figures.pattern_grid(patterns.images, patterns.nodes, patterns.predicted,
                               f"{e.name}: patterns that maximise {chosen}")
    out = {"name": e.name, "img": _uri(fig), "chosen": chosen, "seconds": seconds,
           "digits": ", ".join(f"{d}: {c}" for d, c in enumerate(counts) if c)}
    if model.hidden_width == 1:
        out["single"] = {"digit": int(patterns.predicted[0]), "activation": float(patterns.activation[0]),
                         "proba": float(patterns.proba[0].max())}
    return out


def _frontend_section(e: Experiment, inputs: _Inputs) -> dict | None:
    fe = inputs.frontend
    kind = e.frontend.kind
    if kind == "forest_pixels":
        digit = inputs.x_train[1]
        return {"name": e.name, "kind": kind, "n_pixels": len(fe.pixels_),
                "importance_img": _uri(figures.forest_importance(fe.importances_, f"{e.name}: random-forest pixel importance")),
                "pixels_img": _uri(figures.chosen_pixels(digit, fe.pixels_,
                                                         f"{e.name}: the {len(fe.pixels_)} chosen pixels at their true positions")),
                "swapped_img": _uri(figures.chosen_pixels(digit, fe.pixels_, transposed=True,
                                                          title=f"{e.name}: the same pixels as the notebook draws them")),
                }
    if kind == "pca":
        ratios = analysis.explained_variance_spectrum(inputs.x_train)
        n = fe.n_components_
        return {"name": e.name, "kind": kind, "n_components": n, "variance": e.frontend.variance,
                "kept_variance": float(np.sum(fe.pca_.explained_variance_ratio_)),
                "variance_img": _uri(figures.pca_variance(ratios, n, e.frontend.variance,
                                                          f"{e.name}: PCA cumulative explained variance")),
                "components_img": _uri(figures.pca_components(fe.pca_.components_, 16,
                                                              f"{e.name}: first 16 principal components"))}
    return None


def _l2_rows(run: RunResults) -> list[dict]:
    rows = []
    for e in run.experiments:
        results = run.results(e.name)
        if e.reference is None or not results:
            continue
        paper = (e.reference.first_epoch_loss, e.reference.first_epoch_accuracy)
        loss = [r.history["loss"][0] for r in results if r.history.get("loss")]
        acc = [r.history["accuracy"][0] for r in results if r.history.get("accuracy")]
        rows.append({"name": e.name, "shape": f"{_frontend_text(e)}, {e.hidden}", "l2": f"{e.l2:g}",
                     "ours_loss": _fmt(float(np.mean(loss)) if loss else None, 3),
                     "ours_acc": _fmt(float(np.mean(acc)) if acc else None, 3),
                     "paper_loss": _fmt(paper[0], 3),
                     "paper_acc": _fmt(paper[1], 3),
                     "train_size": e.train_size})
    return rows


def _command(run: RunResults) -> str:
    """The command line that reproduces the run: as recorded, or rebuilt when it was started from Python."""
    from mnist_study.study import BUILTIN_STUDIES

    recorded = (run.manifest.get("command") or "").split()
    if recorded[1:2] == ["run"]:
        return " ".join(recorded)
    name = run.study.name
    study = name if name in BUILTIN_STUDIES else f"{name}.toml"
    seeds = " ".join(f"--seed {s}" for s in run.manifest.get("seeds", [0]))
    source = (run.manifest.get("data") or {}).get("source")
    data = f" --data-dir {source}" if source else ""
    return f"mnist-study run {study} {seeds}{data} --out {run.path}"


def _reproducibility(run: RunResults) -> dict:
    m = run.manifest
    stages = sorted(((k, v) for k, v in (m.get("stages") or {}).items()), key=lambda kv: -kv[1])
    data = m.get("data") or {}
    return {
        "command": _command(run),
        "command_recorded": (m.get("command") or "").split()[1:2] == ["run"],
        "created": m.get("created"), "device": m.get("device"), "workers": m.get("workers"),
        "training_step": m.get("training_step"),
        "seeds": ", ".join(str(s) for s in m.get("seeds", [])), "git_commit": m.get("git_commit"),
        "complete": m.get("complete"), "wall_seconds": m.get("wall_seconds"),
        "versions": sorted((m.get("versions") or {}).items()),
        "data_source": data.get("source"), "data_verified": data.get("verified"),
        "digests": sorted((data.get("digests") or {}).items()),
        "stages": [(k, f"{v:.1f}") for k, v in stages],
        "missing": [f"{name} seed {seed}" for name, seed in run.missing()],
    }


# ---------------------------------------------------------------------------------- entry point

def _load_data(run: RunResults, data_dir) -> Dataset:
    candidates = [data_dir] if data_dir is not None else [(run.manifest.get("data") or {}).get("source"), None]
    errors = []
    for candidate in candidates:
        if candidate is not None and not Path(candidate).is_dir():
            continue
        try:
            return load_dataset(candidate, download=False, progress=False)
        except DataError as err:
            errors.append(str(err))
    raise DataError("the report needs the images the run was trained on, and they were not found"
                    + (f": {errors[-1]}" if errors else "") + " Pass --data-dir with the dataset's directory.")


def _analyse(run: RunResults, dataset: Dataset, split_cache: dict, name: str, tsne_points, show_frontend: bool,
             tsne_jobs: int | None) -> dict:
    """Every per-experiment section of experiment `name` (its first seed), and how long each took."""
    e = next(x for x in run.experiments if x.name == name)
    result = run.results(name)[0]
    key = (e.validation, e.validation_size, e.train_size)
    if key not in split_cache:
        split_cache.clear()  # one split at a time: each is ~200 MB of float32 images
        split_cache[key] = make_splits(dataset, e.validation, e.validation_size, e.train_size)
    s = split_cache[key]
    inputs = _Inputs(*s["train"], *s["test"], frontend=run.frontend(name))
    timings: dict[str, float] = {}

    def timed(label: str, make):
        start = time.perf_counter()
        value = make()
        timings[label] = time.perf_counter() - start
        return value

    out = {
        "experiment": timed("figures", lambda: _experiment_section(e, result, inputs, len(run.results(name)))),
        "hidden": timed("hidden activations", lambda: _hidden_section(e, result, inputs, tsne_points, tsne_jobs)),
        "patterns": timed("activation maximisation", lambda: _patterns_section(e, result, inputs)),
        "frontend": timed("front-end", lambda: _frontend_section(e, inputs)) if show_frontend else None,
    }
    if out["hidden"].get("tsne_seconds") is not None:
        timings["t-SNE"] = out["hidden"]["tsne_seconds"]
    timings["activation maximisation (optimisation only)"] = out["patterns"]["seconds"]
    out["timings"] = timings
    return out


_worker_state: dict = {}  # one worker's run, dataset and splits, loaded by its first task


def _worker_init() -> None:
    torch.set_num_threads(1)
    _worker_state["blas"] = threadpool_limits(1, user_api="blas")  # for the worker's lifetime


def _analyse_in_worker(run_dir: str, data_dir: str | None, name: str, tsne_points, show_frontend: bool) -> dict:
    if _worker_state.get("run_dir") != run_dir:
        run = load_run(run_dir)
        _worker_state.update(run_dir=run_dir, run=run, dataset=_load_data(run, data_dir), splits={})
    # The workers already fill the cores: one thread each for t-SNE too.
    return _analyse(_worker_state["run"], _worker_state["dataset"], _worker_state["splits"], name, tsne_points,
                    show_frontend, tsne_jobs=1)


def _analyse_all(run: RunResults, dataset: Dataset | None, data_dir, names: list[str], tsne_points,
                 frontend_shown_by: set[str], workers: int, on_done) -> dict[str, dict]:
    """The per-experiment analyses, in `workers` processes (or here when workers <= 1).

    Each experiment's analyses are independent of the others', and most of their time is
    single-threaded (openTSNE's threads gain only ~1.3x on two cores), so one worker per core
    does the report in about 0.6x the time of one process.
    """
    if workers <= 1:
        splits: dict = {}
        results = {}
        for name in names:
            results[name] = _analyse(run, dataset, splits, name, tsne_points, name in frontend_shown_by, None)
            on_done(name)
        return results
    import concurrent.futures as cf
    import multiprocessing as mp

    data = str(data_dir) if data_dir is not None else None  # workers find it as _load_data did here
    with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_worker_init) as pool:
        futures = {pool.submit(_analyse_in_worker, str(run.path), data, name, tsne_points,
                               name in frontend_shown_by): name for name in names}
        results = {}
        for future in cf.as_completed(futures):
            results[futures[future]] = future.result()
            on_done(futures[future])
    return results


def _render(context: dict) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.get_template(TEMPLATE).render(**context)


def build_report(run_dir: str | Path, *, tsne_points: int | Literal["all"] = 10_000,
                 data_dir: str | Path | None = None, progress: bool = True, workers: int | None = None) -> Path:
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

    Per-experiment figures use each experiment's first seed. The seconds each analysis took go to
    RUN_DIR/report_timings.json.
    """
    started = time.perf_counter()
    if tsne_points != "all" and (isinstance(tsne_points, bool) or not isinstance(tsne_points, (int, np.integer))
                                 or tsne_points < 4):
        raise ValueError(f"tsne_points must be 'all' or a number of at least 4, got {tsne_points!r}")
    run = load_run(run_dir)
    done = [e for e in run.experiments if run.results(e.name)]
    if not done:
        raise RunError(f"{run.path} has no finished experiment yet; run or resume it first")
    # Experiments sharing a front-end (same kind, parameters and split) show it once.
    shown_frontends = {e.frontend_key(): e for e in reversed(done) if e.frontend.kind != "raw"}
    steps = _Steps(total=4 + len(done), progress=progress)
    if workers is None:
        workers = min(os.cpu_count() or 1, len(done))
    # Every array here is small (at most 60,000 x 784): extra BLAS and torch threads only add
    # wake-up costs, which grow 10-100x when other processes share the cores. t-SNE keeps its own
    # threads (see analysis.tsne_embedding).
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    blas = threadpool_limits(1, user_api="blas")
    try:
        with steps.step("data"):
            dataset = _load_data(run, data_dir)
            data = _data_section(dataset, run)
        with steps.step("accuracy table"):
            accuracy = _accuracy_section(run)
        names = [e.name for e in done]
        shown_by = {e.name for e in shown_frontends.values()}
        if workers > 1:
            dataset = None  # the workers load their own; this process only renders
        steps.describe("analyses of each experiment")
        analysed = _analyse_all(run, dataset, data_dir, names, tsne_points, shown_by, workers,
                                on_done=lambda name: steps.advance(f"{name} done"))
        experiments = [analysed[n]["experiment"] for n in names]
        hidden = [analysed[n]["hidden"] for n in names]
        patterns = [analysed[n]["patterns"] for n in names]
        frontends = [analysed[n]["frontend"] for n in names if analysed[n]["frontend"]]
        per_experiment = {n: analysed[n]["timings"] for n in names}
        with steps.step("claims and notes"):
            claims, claims_error = [], None
            try:
                claims = claim_rows(run)
            except ValueError as err:
                claims_error = str(err)
            notes = {"l2_rows": _l2_rows(run), "printed_l2": PRINTED_L2, "keras": KERAS_EXP5_EPOCH1,
                     "paper_exp5": PAPER_EXP5_EPOCH1,
                     "single": next((p for p in patterns if "single" in p), None),
                     "forest": next((f for f in frontends if f["kind"] == "forest_pixels"), None)}
        with steps.step("render"):
            shared = dict(steps.timings)
            context = {
                "study": run.study, "run_path": str(run.path),
                "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "data": data, "accuracy": accuracy, "experiments": experiments, "hidden": hidden,
                "patterns": patterns, "frontends": frontends, "claims": claims, "claims_error": claims_error,
                "notes": notes, "repro": _reproducibility(run), "tsne_points": tsne_points,
                "timings": {"shared": shared, "experiments": per_experiment},
                "missing_experiments": [e.name for e in run.experiments if e not in done],
            }
            out = run.path / "report.html"
            write_text(out, _render(context))
    finally:
        steps.close()
        blas.restore_original_limits()
        torch.set_num_threads(torch_threads)
    timings = {
        "tsne_points": tsne_points,
        "workers": workers,
        "seconds": {k: round(v, 3) for k, v in steps.timings.items()},
        "experiments": {name: {k: round(v, 3) for k, v in t.items()} for name, t in per_experiment.items()},
        "total_seconds": round(time.perf_counter() - started, 3),
    }
    write_json(run.path / "report_timings.json", timings)
    return out
