"""Figures of the report: plain functions from arrays to matplotlib Figures.

This module holds the shared conventions and helpers (digit colours, split styles, image tiles,
PNG data URIs) and the figures of the data, accuracy and per-experiment sections; `maps.py` draws
what the hidden layer does (activations, t-SNE maps, node patterns).

Each function builds a `matplotlib.figure.Figure` directly (no pyplot: no global state, no
display, and the user's backend is left alone; PNGs are rendered by Agg) with a title, axis
labels and, where several things share an axis, a legend.
Every digit 0-9 has ONE colour, `DIGIT_COLORS`, in every figure. Images are 28 x 28 arrays or
flat 784-vectors in [0, 1], drawn dark-on-light (`cmap="binary"`).

    from mnist_study.report.figures import confusion_heatmap, figure_to_data_uri
    uri = figure_to_data_uri(confusion_heatmap(confusion, "exp6"))
"""

from __future__ import annotations

import base64
import io
from typing import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from mnist_study.data.digits import DIGITS, IMAGE_SIDE
from mnist_study.training.frontends import FRONTENDS, PlotMarker

DIGIT_COLORS: tuple[str, ...] = tuple(to_hex(matplotlib.colormaps["tab10"](d)) for d in DIGITS)
# Mistakes are marked in red (frames, bold captions, the chosen-pixel dots). tab10's red is digit
# 3's colour too, so digit colours are kept off the captions of predicted-vs-true grids.
WRONG = "#d62728"
# Splits are drawn in greys so that they never look like digits.
SPLIT_STYLES = {
    "train": {"color": "#9a9a9a", "marker": "s", "linestyle": ":"},
    "validation": {"color": "#5a5a5a", "marker": "^", "linestyle": "--"},
    "test": {"color": "#000000", "marker": "o", "linestyle": "-"},
}


def figure_to_data_uri(fig: Figure, dpi: int = 100) -> str:
    """Render `fig` as a PNG `data:` URI (for a self-contained HTML page) and release it."""
    buffer = io.BytesIO()
    try:
        FigureCanvasAgg(fig).print_figure(buffer, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        fig.clf()  # a Figure not made by pyplot is freed once unreferenced; clf drops its artists now
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def as_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 2 and images.shape[1] == IMAGE_SIDE * IMAGE_SIDE:
        images = images.reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise ValueError(f"expected images (N, 28, 28) or (N, 784), got shape {images.shape}")
    if images.max(initial=0) > 1.0:
        images = images / 255.0
    return images


def draw_tiles(ax, images: np.ndarray, ncols: int, captions: Sequence[str] | None = None,
           caption_colors: Sequence[str] | None = None, frame_colors: Sequence[str | None] | None = None,
           cmap: str = "binary", vmin: float = 0.0, vmax: float = 1.0) -> int:
    """Draw images as one mosaic on `ax`, a caption above each tile and optional coloured frames.

    One imshow for the whole grid keeps large grids (130 node patterns) fast to draw; the captions
    are `ax.texts` and the frames `ax.patches`, in image order. Returns the number of tiles.
    """
    n = len(images)
    ncols = max(1, min(ncols, n)) if n else 1
    nrows = max(1, -(-n // ncols))
    gap, band = 4, (9 if captions is not None else 0)
    cell_w, cell_h = IMAGE_SIDE + gap, IMAGE_SIDE + gap + band
    mosaic = np.full((nrows * cell_h, ncols * cell_w), np.nan, dtype=np.float32)
    for i, image in enumerate(images):
        r, c = divmod(i, ncols)
        top, left = r * cell_h + band, c * cell_w
        mosaic[top:top + IMAGE_SIDE, left:left + IMAGE_SIDE] = image
    cm = matplotlib.colormaps[cmap].with_extremes(bad="white")
    ax.imshow(np.ma.masked_invalid(mosaic), cmap=cm, vmin=vmin, vmax=vmax, interpolation="nearest")
    for i in range(n):
        r, c = divmod(i, ncols)
        top, left = r * cell_h + band, c * cell_w
        if captions is not None:
            color = caption_colors[i] if caption_colors is not None else "black"
            bold = frame_colors is not None and frame_colors[i] is not None
            ax.text(left + IMAGE_SIDE / 2 - 0.5, top - 1.5, captions[i], ha="center", va="bottom",
                    fontsize=8, color=color, fontweight="bold" if bold else "normal")
        if frame_colors is not None and frame_colors[i] is not None:
            ax.add_patch(Rectangle((left - 1.5, top - 1.5), IMAGE_SIDE + 2, IMAGE_SIDE + 2, fill=False,
                                   edgecolor=frame_colors[i], linewidth=2))
    ax.set_xlim(-2, ncols * cell_w - gap + 1)
    ax.set_ylim(nrows * cell_h - gap + 1, -1)
    ax.set_axis_off()
    return n


def tile_figsize(n: int, ncols: int, captions: bool, scale: float = 0.75) -> tuple[float, float]:
    ncols = max(1, min(ncols, n)) if n else 1
    nrows = max(1, -(-n // ncols))
    height = (IMAGE_SIDE + 4 + (9 if captions else 0)) / (IMAGE_SIDE + 4)
    return max(3.0, ncols * scale), nrows * scale * height + 0.6


# ---------------------------------------------------------------------------------------- data

def label_counts(train_labels: np.ndarray, test_labels: np.ndarray) -> Figure:
    """Two bar charts: how many images of each digit the training and test sets hold."""
    fig = Figure(figsize=(11, 3.6), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, labels, name in zip(axes, (train_labels, test_labels), ("training", "test")):
        counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=10)[:10]
        bars = ax.bar(DIGITS, counts, color=DIGIT_COLORS)
        ax.bar_label(bars, fontsize=7)
        ax.set_title(f"{name} set: {int(counts.sum()):,} images")
        ax.set_xlabel("digit")
        ax.set_ylabel("images")
        ax.set_xticks(DIGITS)
        ax.margins(y=0.12)
    fig.suptitle("Images per digit")
    return fig


def digit_grid(images: np.ndarray, labels: np.ndarray, predicted: np.ndarray | None = None,
               title: str = "Digits", ncols: int = 10) -> Figure:
    """Images with their labels; with `predicted`, each caption reads "predicted/true" and the wrong
    ones are framed and captioned in red."""
    images = as_images(images)
    labels = np.asarray(labels)
    if predicted is None:
        captions = [str(int(t)) for t in labels]
        caption_colors = None  # black: red is kept for mistakes
        frames = None
    else:
        predicted = np.asarray(predicted)
        wrong = predicted != labels
        captions = [f"{int(p)}/{int(t)}" for p, t in zip(predicted, labels)]
        caption_colors = [WRONG if w else "black" for w in wrong]
        frames = [WRONG if w else None for w in wrong]
        title = f"{title} — {int(wrong.sum())} of {len(labels)} wrong (caption: predicted/true)"
    fig = Figure(figsize=tile_figsize(len(images), ncols, True), layout="constrained")
    ax = fig.add_subplot()
    draw_tiles(ax, images, ncols, captions, caption_colors, frames)
    ax.set_title(title, fontsize=10)
    return fig


# ------------------------------------------------------------------------------------ accuracy

def accuracy_vs_width(points: Sequence[Mapping], splits: Sequence[str] = ("train", "validation", "test"),
                      reference_label: str = "reference") -> Figure:
    """Accuracy (percent) against hidden-layer width, log x axis, with reference figures overlaid.

    Parameters
    ----------
    points : one mapping per experiment with keys
        ``label`` (str), ``width`` (int), ``kind`` (a front-end's kind: "raw", "pca", ...),
        ``ours`` {split: (mean, ci_low, ci_high)} (ci nan with one seed) and
        ``reference`` {split: percent or None}.
    reference_label : whose the reference figures are, for the legend (e.g. "paper"); the hollow
        reference markers and their legend entry appear only when some point has a reference.

    Each front-end's `plot_marker` says how: raw-pixel experiments form one line per split; the
    other front-ends are separate markers, nudged sideways so that they do not hide the raw-pixel
    network of the same width. The right panel zooms on the top of the range, where most networks are.
    """
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(12, 5.2), layout="constrained")
    axes = fig.subplots(1, 2)
    tops = [p["ours"][s][0] for p in points for s in splits if s in p["ours"] and p["ours"][s][0] >= 85]
    tops += [p["reference"][s] for p in points for s in splits
             if (p.get("reference") or {}).get(s) is not None and p["reference"][s] >= 85]
    for ax, zoom in zip(axes, (False, True)):
        _draw_width(ax, points, splits)
        if zoom and tops:
            ax.set_ylim(min(tops) - 1, min(100.5, max(tops) + 1))
            wide = [p["width"] for p in points if any(s in p["ours"] and p["ours"][s][0] >= 85 for s in splits)]
            if wide:
                ax.set_xlim(min(wide) / 1.5, max(wide) * 1.5)
            ax.set_title("zoom on the top of the range")
        else:
            ax.set_title("all networks")
    handles = [Line2D([], [], color=SPLIT_STYLES[s]["color"], linestyle=SPLIT_STYLES[s]["linestyle"],
                      marker=SPLIT_STYLES[s]["marker"], label=s) for s in splits]
    handles.append(Line2D([], [], color="black", marker="o", linestyle="none", label="ours (filled; bars: 95% CI)"))
    if any(value is not None for p in points for value in (p.get("reference") or {}).values()):
        handles.append(Line2D([], [], color="black", marker="o", markerfacecolor="none", linestyle="none",
                              label=f"{reference_label} (hollow)"))
    handles += [Line2D([], [], color="black", marker=m.symbol, linestyle="none", markersize=9, label=m.label)
                for m in plot_markers(points).values() if m.symbol is not None]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8, frameon=False)
    fig.suptitle("Accuracy against hidden-layer width")
    return fig


# How the page's text shows each matplotlib marker (a marker without one is named in words).
MARKER_GLYPHS = {"*": "★", "D": "◆", "d": "◆", "P": "✚", "X": "✖", "x": "×", "+": "+", "s": "■", "o": "●",
                 "^": "▲", "v": "▼", "<": "◀", ">": "▶", "p": "⬟", "h": "⬢", "H": "⬣", "8": "⯃"}


def marker_glyph(symbol: str) -> str:
    return MARKER_GLYPHS.get(symbol, f"marker “{symbol}”")


def plot_markers(points: Sequence[Mapping]) -> dict[str, PlotMarker]:
    """The marker of each front-end kind among `points`, in the registry's order (a kind no longer
    registered, from an old run, gets a plain cross)."""
    kinds = [k for k in FRONTENDS if any(p["kind"] == k for p in points)]
    kinds += sorted({p["kind"] for p in points} - set(FRONTENDS))
    return {k: FRONTENDS[k].plot_marker if k in FRONTENDS else PlotMarker("X", k) for k in kinds}


def _draw_width(ax, points: Sequence[Mapping], splits: Sequence[str]) -> None:
    markers = plot_markers(points)
    for split in splits:
        style = SPLIT_STYLES[split]
        for kind, plot_marker in markers.items():
            rows = sorted([p for p in points if p["kind"] == kind and split in p["ours"]], key=lambda p: p["width"])
            if not rows:
                continue
            is_raw = plot_marker.symbol is None  # the baseline, joined by one line per split
            marker = style["marker"] if is_raw else plot_marker.symbol
            x = np.array([p["width"] for p in rows], dtype=float) * plot_marker.nudge
            mean = np.array([p["ours"][split][0] for p in rows], dtype=float)
            low = np.array([p["ours"][split][1] for p in rows], dtype=float)
            high = np.array([p["ours"][split][2] for p in rows], dtype=float)
            err = np.vstack([np.nan_to_num(mean - low), np.nan_to_num(high - mean)])
            ax.errorbar(x, mean, yerr=err, color=style["color"], marker=marker, capsize=3,
                        linestyle=style["linestyle"] if is_raw else "none", markersize=5 if is_raw else 9)
            refs = [(xi, p["reference"][split]) for xi, p in zip(x, rows)
                    if (p.get("reference") or {}).get(split) is not None]
            if refs:
                ax.scatter(*zip(*refs), marker=marker, s=70 if is_raw else 130, facecolors="none",
                           edgecolors=style["color"], linewidths=1.3, zorder=3)
            if not is_raw and split == splits[-1]:
                for xi, p in zip(x, rows):
                    ax.annotate(p["label"], (xi, p["ours"][split][0]), textcoords="offset points",
                                xytext=(7, -4), fontsize=8, clip_on=True)
    ax.set_xscale("log")
    widths = sorted({p["width"] for p in points})
    if widths:
        ax.set_xticks(widths, [str(w) for w in widths])
        ax.minorticks_off()
        ax.set_xlim(min(widths) / 1.5, max(widths) * 1.5)
    ax.set_xlabel("hidden-layer width (nodes, log scale)")
    ax.set_ylabel("accuracy (%)")
    ax.grid(True, alpha=0.3)


def confusion_heatmap(confusion: np.ndarray, title: str = "Confusion matrix") -> Figure:
    """The 10 x 10 test-set confusion matrix as an annotated heatmap (rows true, columns predicted)."""
    c = np.asarray(confusion)
    fig = Figure(figsize=(6.4, 5.4), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(c, cmap="Blues")
    fig.colorbar(image, ax=ax, label="test images")
    threshold = c.max() / 2 if c.size else 0
    for (i, j), value in np.ndenumerate(c):
        ax.text(j, i, f"{int(value)}", ha="center", va="center", fontsize=7,
                color="white" if value > threshold else "black")
    n = c.shape[0]
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    for ticks in (ax.get_xticklabels(), ax.get_yticklabels()):
        for d, tick in enumerate(ticks):
            tick.set_color(DIGIT_COLORS[d % 10])
            tick.set_fontweight("bold")
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("true digit")
    ax.set_title(title)
    return fig


def training_curves(history: Mapping[str, Sequence[float]], title: str = "Training",
                    best_epoch: int | None = None) -> Figure:
    """Accuracy and loss per epoch, training and validation (keys as Keras names them: "loss",
    "accuracy", "val_loss", "val_accuracy")."""
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, key, name in ((axes[0], "accuracy", "accuracy"), (axes[1], "loss", "loss")):
        for prefix, split in (("", "train"), ("val_", "validation")):
            values = list(history.get(prefix + key, []))
            if values:
                style = SPLIT_STYLES[split]
                ax.plot(range(1, len(values) + 1), values, color=style["color"], marker=style["marker"],
                        linestyle=style["linestyle"], markersize=4, label=split)
        if best_epoch:
            ax.axvline(best_epoch, color="#2ca02c", alpha=0.6, linewidth=1, label=f"kept weights (epoch {best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name + (" (fraction)" if key == "accuracy" else " (cross-entropy + L2)"))
        ax.set_title(f"{name} per epoch")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title)
    return fig


def probability_table(proba: np.ndarray, labels: np.ndarray, title: str = "Class probabilities") -> Figure:
    """Probabilities (N, 10) of the first test digits as a shaded table; each row's top class is
    boxed and rows whose prediction is wrong are labelled in red."""
    proba = np.asarray(proba, dtype=float)
    labels = np.asarray(labels)
    n = len(proba)
    fig = Figure(figsize=(7.5, 0.32 * n + 1.4), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(proba, cmap="Greens", vmin=0, vmax=1, aspect="auto")
    fig.colorbar(image, ax=ax, label="probability", fraction=0.04)
    predicted = proba.argmax(1)
    for (i, j), value in np.ndenumerate(proba):
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                color="white" if value > 0.6 else "black")
    for i, p in enumerate(predicted):
        ax.add_patch(Rectangle((p - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=1.5))
    ax.set_xticks(range(proba.shape[1]))
    for d, tick in enumerate(ax.get_xticklabels()):
        tick.set_color(DIGIT_COLORS[d % 10])
        tick.set_fontweight("bold")
    ax.set_yticks(range(n), [f"#{i}: true {int(t)}" for i, t in enumerate(labels)], fontsize=8)
    for i, tick in enumerate(ax.get_yticklabels()):
        if predicted[i] != labels[i]:
            tick.set_color(WRONG)
            tick.set_fontweight("bold")
    ax.xaxis.set_ticks_position("top")
    ax.xaxis.set_label_position("top")
    ax.set_xlabel("class")
    ax.set_ylabel("test image")
    ax.set_title(title + " (boxed: predicted class)")
    return fig


def confused_pair(images: np.ndarray, labels: np.ndarray, predicted: np.ndarray, a: int, b: int,
                  limit: int = 25, title: str | None = None) -> Figure:
    """The most confused pair a, b: up to `limit` test images each of a as a, a as b, b as a, b as b
    (the paper's Appendix C)."""
    from mnist_study.report.analysis import confusion_examples

    images = as_images(images)
    groups = confusion_examples(labels, predicted, a, b, limit)
    fig = Figure(figsize=(9, 9.4), layout="constrained")
    axes = fig.subplots(2, 2)
    side = int(np.ceil(np.sqrt(limit)))
    for ax, (t, p) in zip(axes.ravel(), ((a, a), (a, b), (b, a), (b, b))):
        index = groups[(t, p)]
        wrong = t != p
        frames = [WRONG] * len(index) if wrong else None
        draw_tiles(ax, images[index], side, frame_colors=frames)
        total = int(((np.asarray(labels) == t) & (np.asarray(predicted) == p)).sum())
        ax.set_title(f"true {t}, predicted {p} ({len(index)} of {total})",
                     color=WRONG if wrong else "black", fontsize=10)
        if len(index) == 0:
            ax.text(0.5, 0.5, "none", transform=ax.transAxes, ha="center", va="center", color="#777777")
    fig.suptitle(title or f"Most confused pair: {a} and {b}")
    return fig
