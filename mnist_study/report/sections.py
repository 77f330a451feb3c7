"""The report's sections, each built from the saved run: plain data plus figures as PNG data URIs.

`build.py` decides what is built where (the per-experiment sections run in worker processes) and
renders the template; each function here builds one section and knows nothing of the others.

    section = experiment_section(experiment, result, inputs, n_seeds=5)   # a dict the template reads
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from mnist_study.data.sources import Dataset
from mnist_study.report import analysis, figures, maps
from mnist_study.report.summary import AccuracyRow, accuracy_rows, diverged_epoch, has_reference_figures
from mnist_study.report.sweep import sweep_views, value_label
from mnist_study.results import SPLITS, RunResults, SeedResult
from mnist_study.study import Experiment

SAMPLE_FOR_NODE_RANKING = 2000  # training images used to rank nodes of wide layers by mean activation


def uri(fig) -> str:
    return figures.figure_to_data_uri(fig)


def num(value, digits: int = 2) -> str:
    """A number for a table cell ("—" when there is none); also the template's `num` filter."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def signed(value, digits: int = 2) -> str:
    return "—" if value is None else f"{value:+.{digits}f}"


def agreement(difference) -> str:
    """CSS class of a difference from a reference figure, in points: within 1, 1–3, more than 3."""
    if difference is None:
        return ""
    return "good" if abs(difference) <= 1 else ("warn" if abs(difference) <= 3 else "bad")


@dataclass
class ExperimentInputs:
    """One experiment's data as its network sees it."""

    x_train: np.ndarray       # (N, 784) pixels in [0, 1]
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    frontend: object

    def features(self, x: np.ndarray) -> np.ndarray:
        return self.frontend.transform(x)


# ---------------------------------------------------------------------------- data and accuracy

def data_section(dataset: Dataset, run: RunResults) -> dict:
    shapes = [
        {"name": "training images", "shape": dataset.train_images.shape, "dtype": str(dataset.train_images.dtype)},
        {"name": "training labels", "shape": dataset.train_labels.shape, "dtype": str(dataset.train_labels.dtype)},
        {"name": "test images", "shape": dataset.test_images.shape, "dtype": str(dataset.test_images.dtype)},
        {"name": "test labels", "shape": dataset.test_labels.shape, "dtype": str(dataset.test_labels.dtype)},
    ]
    # Experiments with the same split share a row: a sweep of 1,000 networks may use one split.
    grouped: dict[tuple, list[str]] = {}
    n = len(dataset.train_labels)
    for e in run.experiments:
        train = min(n - e.validation_size, e.train_size or n)
        grouped.setdefault((train, e.validation, e.validation_size), []).append(e.name)
    splits = [{"experiment": _names_text(names), "train": train, "validation": size,
               "held_out": f"{where} {size:,}", "test": len(dataset.test_labels)}
              for (train, where, size), names in grouped.items()]
    return {
        "source": dataset.source, "verified": dataset.verified, "shapes": shapes, "splits": splits,
        "counts_img": uri(figures.label_counts(dataset.train_labels, dataset.test_labels)),
        "train_img": uri(figures.digit_grid(dataset.train_images[:50], dataset.train_labels[:50],
                                            title="First 50 training images")),
        "test_img": uri(figures.digit_grid(dataset.test_images[:50], dataset.test_labels[:50],
                                           title="First 50 test images")),
    }


def _names_text(names: list[str], shown: int = 3) -> str:
    """A few names, and how many more: "a, b, c and 997 more"."""
    if len(names) <= shown + 1:
        return ", ".join(names)
    return f"{', '.join(names[:shown])} and {len(names) - shown:,} more"


COMPACT_ROWS = 30  # a longer accuracy table scrolls inside a box of its own


def accuracy_section(run: RunResults, analysed: set[str] | frozenset[str] = frozenset()) -> dict:
    """The accuracy table's rows and the accuracy-against-width figure with its caption.

    Each item of "table" holds the row (`AccuracyRow`), its experiment, its swept settings as text
    and whether the report analyses its network (`analysed`: then its name links to that section).
    Reference columns, markers and wording appear only when the study gives reference figures,
    named by `study.reference_source`. The width figure shows the networks of one hidden layer that
    no sweep made (a sweep's own plots show its fields); the table lists every experiment.
    """
    rows = accuracy_rows(run)
    references = has_reference_figures(rows)
    several = any(len(r.seeds) > 1 for r in rows)
    source = run.study.reference_source
    points = [_width_point(row, e) for row, e in zip(rows, run.experiments)
              if row.test.mean is not None and e.sweep is None and len(e.widths) == 1]
    # One set of swept fields (one sweep, say) names them once, in the header, and lists values only.
    keys = {tuple(e.swept) for e in run.experiments if e.swept}
    shared = list(next(iter(keys))) if len(keys) == 1 else None
    items = [{"row": row, "e": e, "linked": e.name in analysed,
              "settings": (" · ".join(value_label(v) for v in e.swept.values()) if shared
                           else ", ".join(f"{k} = {value_label(v)}" for k, v in e.swept.items()))}
             for row, e in zip(rows, run.experiments)]
    return {
        "rows": rows, "table": items, "several_seeds": several, "references": references, "source": source,
        "swept": bool(keys), "swept_header": " · ".join(shared) if shared else "swept",
        "compact": len(rows) > COMPACT_ROWS,
        "width_img": uri(figures.accuracy_vs_width(points, reference_label=source)) if points else None,
        "width_caption": width_caption(points, several, references, source) if points else "",
    }


def _width_point(row: AccuracyRow, e: Experiment) -> dict:
    return {"label": e.name, "width": e.width, "kind": e.frontend.kind,
            "ours": {s: (row.split(s).mean, *(row.split(s).ci or (math.nan, math.nan)))
                     for s in SPLITS if row.split(s).mean is not None},
            "reference": {s: row.split(s).reference for s in SPLITS}}


def width_caption(points: list[dict], several_seeds: bool, references: bool, source: str) -> str:
    """How to read the accuracy-against-width figure, naming the front-ends that are in it."""
    markers = figures.plot_markers(points)
    lines = [m.label for m in markers.values() if m.symbol is None]
    separate = [f"{m.label} ({figures.marker_glyph(m.symbol)})" for m in markers.values() if m.symbol is not None]
    text = "Accuracy against the width of the hidden layer (log scale)."
    if lines:
        text += f" Lines join the networks on {' and '.join(lines)}."
    if separate:
        listed = ", ".join(separate[:-1]) + (" and " if len(separate) > 1 else "") + separate[-1]
        text += f" Networks on {listed} are separate points at their width."
    text += " Filled markers are ours" + (" with 95% confidence intervals over seeds" if several_seeds else "")
    return text + (f"; hollow markers are the {source}'s." if references else ".")


# ------------------------------------------------------------------------------------ sweeps

def sweep_section(run: RunResults) -> list[dict]:
    """Per sweep: its view (`report.sweep.SweepView`), a plot per field and one per pair of fields.

    The figures number (fields + pairs of fields) per sweep, however many experiments it has.
    """
    from mnist_study.report import sweep_figures

    out = []
    for view in sweep_views(run):
        ylabel = view.metric
        effects = []
        for f in view.levels:
            levels = f.levels
            baseline = next((i for i, r in enumerate(levels) if r.baseline), None)
            fig = sweep_figures.effect_plot(
                [r.label for r in levels], [r.value for r in levels], [_mean(r.mean) for r in levels],
                [_low(r.ci) for r in levels], [_high(r.ci) for r in levels], f.axis, baseline,
                title=f"{view.name}: {f.name} (mean over the other fields)", xlabel=f.name, ylabel=ylabel)
            effects.append({"name": f.name, "img": uri(fig)})
        interactions = []
        for x in view.interactions:
            grid = [[(_mean(c.mean), _low(c.ci), _high(c.ci)) for c in line] for line in x.cells]
            means, lows, highs = (np.array([[cell[k] for cell in line] for line in grid], dtype=float) for k in range(3))
            fig = sweep_figures.interaction_plot(
                x.x_labels, x.x_values, x.x_axis, x.line_labels, means, lows, highs,
                title=f"{view.name}: {x.x} by {x.lines}", xlabel=x.x, legend_title=x.lines, ylabel=ylabel)
            interactions.append({"x": x.x, "lines": x.lines, "img": uri(fig)})
        out.append({"view": view, "effects": effects, "interactions": interactions})
    return out


def _mean(value: float | None) -> float:
    return math.nan if value is None else value


def _low(ci: list[float] | None) -> float:
    return math.nan if ci is None else ci[0]


def _high(ci: list[float] | None) -> float:
    return math.nan if ci is None else ci[1]


# --------------------------------------------------------------------------- each experiment

def _report_table(report: dict) -> list[dict]:
    rows = []
    for key in [str(d) for d in range(10)] + ["macro avg", "weighted avg"]:
        if key in report:
            r = report[key]
            rows.append({"label": key, "precision": num(r["precision"], 3), "recall": num(r["recall"], 3),
                         "f1": num(r["f1-score"], 3), "support": int(r["support"])})
    return rows


def experiment_section(e: Experiment, result: SeedResult, inputs: ExperimentInputs, n_seeds: int) -> dict:
    y_test = inputs.y_test
    predicted = result.test_proba.argmax(1)
    a, b, count = analysis.most_confused_pair(result.confusion)
    images = inputs.x_test.reshape(-1, 28, 28)
    m = result.metrics
    return {
        "name": e.name, "title": e.title or ", ".join(f"{k} = {value_label(v)}" for k, v in e.swept.items()),
        "anchor": f"exp-{e.name}", "seed": result.seed, "n_seeds": n_seeds,
        "summary": (f"{e.frontend.describe()}, {network_text(e)}, "
                    f"λ = {e.l2:g}; seed {result.seed}: test accuracy {result.accuracy('test'):.2f}%, "
                    + _training_summary(m)),
        "confusion_img": uri(figures.confusion_heatmap(result.confusion, f"{e.name}: test-set confusion matrix")),
        "report_rows": _report_table(result.classification_report),
        "report_accuracy": num(result.classification_report.get("accuracy"), 4),
        "curves_img": uri(figures.training_curves(result.history, f"{e.name}: accuracy and loss per epoch",
                                                  m.get("best_epoch"))),
        "grid_img": uri(figures.digit_grid(images[:25], y_test[:25], predicted[:25],
                                           title=f"{e.name}: first 25 test images", ncols=13)),
        "proba_img": uri(figures.probability_table(result.test_proba[:20], y_test[:20],
                                                   f"{e.name}: probabilities of the first 20 test images")),
        "pair": {"a": a, "b": b, "count": count,
                 "img": uri(figures.confused_pair(images, y_test, predicted, a, b,
                                                  title=f"{e.name}: {a} and {b} are confused {count} times "
                                                        f"({a} as {b}: {int(result.confusion[a, b])}, "
                                                        f"{b} as {a}: {int(result.confusion[b, a])})"))},
    }


def network_text(e: Experiment) -> str:
    """The hidden layers in words: "130 hidden nodes", "hidden layers 100-100", "no hidden layer"."""
    if not e.widths:
        return "no hidden layer (softmax regression)"
    if len(e.widths) == 1:
        return f"{e.width} hidden node{'s' if e.width != 1 else ''}"
    return f"hidden layers {e.shape_text}"


def layer_text(e: Experiment) -> str:
    """Which layer the hidden-node analyses look at, when there is more than one: " (first of 2 hidden layers)"."""
    return f" (first of {len(e.widths)} hidden layers)" if len(e.widths) > 1 else ""


def _training_summary(metrics: dict) -> str:
    """How a seed's training ended: its epochs and kept weights, and, when it diverged, where."""
    kept = "the initial weights kept" if metrics["best_epoch"] == 0 else f"weights of epoch {metrics['best_epoch']} kept"
    epoch = diverged_epoch(metrics)
    if epoch is None:
        return f"{metrics['epochs_run']} epochs, {kept}"
    return (f"DIVERGED in epoch {epoch} (its loss was NaN or infinite) after {metrics['epochs_run']} finite "
            f"epoch{'s' if metrics['epochs_run'] != 1 else ''}; training stopped there, {kept}")


def hidden_section(e: Experiment, result: SeedResult, inputs: ExperimentInputs, tsne_points,
                   tsne_jobs: int | None) -> dict | None:
    """What the (first) hidden layer does with the training images; None for a network without one."""
    model = result.model()
    width = model.hidden_width
    if width == 0:
        return None
    layer = layer_text(e)
    if width <= 2:
        hidden, _ = model.hidden_and_proba(inputs.features(inputs.x_train))
        if width == 1:
            fig = maps.activation_boxplot(hidden[:, 0], inputs.y_train,
                                          f"{e.name}: activation of the single hidden node{layer} per digit")
            what = (f"The single node's activation on all {len(inputs.y_train):,} training images, by digit, "
                    "with each digit's full range.")
        else:
            fig = maps.activation_scatter(hidden, inputs.y_train, f"{e.name}: the two hidden nodes' activations{layer}")
            what = f"Both nodes' activations on all {len(inputs.y_train):,} training images, one colour per digit."
        return {"name": e.name, "kind": "boxplot" if width == 1 else "scatter", "img": uri(fig), "what": what,
                "layer": layer}
    index = analysis.sample_indices(len(inputs.y_train), tsne_points, result.seed)
    hidden, _ = model.hidden_and_proba(inputs.features(inputs.x_train[index]))
    start = time.perf_counter()
    embedding = analysis.tsne_embedding(hidden, seed=result.seed, n_jobs=tsne_jobs)
    seconds = time.perf_counter() - start
    knn = analysis.knn_accuracy(embedding, inputs.y_train[index])
    fig = maps.tsne_map(embedding, inputs.y_train[index], inputs.x_train[index],
                        f"{e.name}: t-SNE map of the {width} hidden activations{layer} of {len(index):,} training images")
    what = (f"t-SNE (perplexity 40, 300 iterations, PCA initialisation) of the {width} "
            f"hidden activations{layer} of {len(index):,} training images "
            f"({'all' if len(index) == len(inputs.y_train) else f'a seeded sample of {len(inputs.y_train):,}'}). "
            f"A 10-nearest-neighbour vote on the map recovers the digit for {knn:.1%} of the points.")
    return {"name": e.name, "kind": "tsne", "img": uri(fig), "what": what, "knn": knn,
            "points": len(index), "tsne_seconds": seconds, "layer": layer}


def patterns_section(e: Experiment, result: SeedResult, inputs: ExperimentInputs) -> dict | None:
    """The activation-maximisation patterns of the (first) hidden layer's nodes; "first" is what the
    network makes of the first pattern shown (for the notes' `pattern:<experiment>` exhibit). None
    for a network without a hidden layer."""
    model = result.model()
    if model.hidden_width == 0:
        return None
    layer = layer_text(e)
    sample = inputs.x_train[analysis.sample_indices(len(inputs.y_train), SAMPLE_FOR_NODE_RANKING, result.seed)]
    start = time.perf_counter()
    patterns = analysis.activation_maximization(model, inputs.frontend, sample=sample, seed=result.seed)
    seconds = time.perf_counter() - start
    chosen = (f"every hidden node{layer}" if len(patterns.nodes) == model.hidden_width
              else f"the {len(patterns.nodes)} most active of {model.hidden_width} nodes{layer} (by mean "
                   f"activation on {len(sample):,} training images)")
    counts = np.bincount(patterns.predicted, minlength=10)
    fig = maps.pattern_grid(patterns.images, patterns.nodes, patterns.predicted,
                            f"{e.name}: patterns that maximise {chosen}")
    return {"name": e.name, "img": uri(fig), "chosen": chosen, "seconds": seconds,
            "digits": ", ".join(f"{d}: {c}" for d, c in enumerate(counts) if c),
            "first": {"node": int(patterns.nodes[0]), "digit": int(patterns.predicted[0]),
                      "activation": float(patterns.activation[0]), "proba": float(patterns.proba[0].max())}}


def frontend_section(e: Experiment, inputs: ExperimentInputs) -> dict | None:
    """The front-end's own section (its `report()`), or None when it has nothing to say.

    `figures` are those the section shows; `by_key` holds every figure the front-end drew, shown or
    not, for the notes' `figure:<experiment>:<key>` exhibits.
    """
    shown = inputs.frontend.report(e.name, inputs.x_train)
    if shown is None:
        return None
    by_key = {f.key: {"key": f.key, "img": uri(f.figure), "caption": f.caption, "alt": f.alt or f"{e.name} {f.key}",
                      "shown": f.shown} for f in shown.figures}
    return {"name": e.name, "kind": e.frontend.kind, "heading": shown.heading, "text": shown.text,
            "figures": [f for f in by_key.values() if f["shown"]], "by_key": by_key}


def has_content(frontend: dict | None) -> bool:
    """Whether a front-end section has anything to show (text or a shown figure)."""
    return bool(frontend and (frontend["text"] or frontend["figures"]))


# ---------------------------------------------------------------------------- reproducibility

def _command(run: RunResults) -> str:
    """The command line that reproduces the run: as recorded, or rebuilt when it was started from Python."""
    from mnist_study.studies import BUILTIN_STUDIES

    recorded = (run.manifest.get("command") or "").split()
    if recorded[1:2] == ["run"]:
        return " ".join(recorded)
    name = run.study.name
    study = name if name in BUILTIN_STUDIES else f"{name}.toml"
    seeds = " ".join(f"--seed {s}" for s in run.manifest.get("seeds", [0]))
    source = (run.manifest.get("data") or {}).get("source")
    data = f" --data-dir {source}" if source else ""
    return f"mnist-study run {study} {seeds}{data} --out {run.path}"


def _missing(run: RunResults) -> list[tuple[str, int]]:
    """The (experiment, seed) pairs of the manifest's seeds that the loaded run lacks.

    `load_run` has already checked every finished seed it loaded; `run.missing()` would check them
    all again, which a sweep of thousands of networks feels.
    """
    seeds = run.manifest.get("seeds", [0])
    found = {(name, r.seed) for name, results in run.seeds.items() for r in results}
    return [(e.name, s) for e in run.experiments for s in seeds if (e.name, s) not in found]


def reproducibility_section(run: RunResults) -> dict:
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
        "missing": [f"{name} seed {seed}" for name, seed in _missing(run)],
    }
