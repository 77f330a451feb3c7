"""Figures of the curves a study declares, and the report's "Curves" section.

One panel per metric, side by side; per line (a value of the curve's `by` field) the mean over
seeds with its 95% interval as a band, in viridis colours (never read as digits), a legend of the
lines; the study's marks as labelled vertical lines; a fitted power law drawn dashed over the x it
was fitted on, its alpha and interval in the legend. Conventions are `figures.py`'s: a Figure
without pyplot, titles and axis labels on every axes.

    from mnist_study.report.curve_figures import curve_figure
    fig = curve_figure(view)          # view: report.curves.CurveView
"""

from __future__ import annotations

import math

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from mnist_study.report.curves import CurveView, counts_text, curve_views, fit_lines, table_cells
from mnist_study.report.figures import figure_to_data_uri
from mnist_study.results import RunResults

PANEL_WIDTH = 4.6  # inches per metric


def _series(line) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x, mean, low, high of a LineView's points with a result (nan bounds with one seed)."""
    shown = [p for p in line.points if p.mean is not None]
    x = np.array([p.x for p in shown], dtype=float)
    mean = np.array([p.mean for p in shown], dtype=float)
    low = np.array([p.ci[0] if p.ci else math.nan for p in shown], dtype=float)
    high = np.array([p.ci[1] if p.ci else math.nan for p in shown], dtype=float)
    return x, mean, low, high


def curve_figure(view: CurveView) -> Figure:
    """The curve's panels side by side (one per metric), sharing the x axis's scale and legend."""
    n = len(view.panels)
    fig = Figure(figsize=(PANEL_WIDTH * n + 1.4, 3.9), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    n_lines = max(len(p.lines) for p in view.panels) if view.panels else 0
    colors = matplotlib.colormaps["viridis"](np.linspace(0, 0.85, max(n_lines, 1)))
    for ax, panel in zip(axes, view.panels):
        for i, line in enumerate(panel.lines):
            x, mean, low, high = _series(line)
            if not x.size:
                continue
            label = line.label or "mean, 95% CI over seeds"
            ax.plot(x, mean, color=colors[i], marker="o", markersize=3.5, linewidth=1.4, label=label)
            banded = np.isfinite(low) & np.isfinite(high)
            if banded.any():
                ax.fill_between(x, np.where(banded, low, mean), np.where(banded, high, mean), color=colors[i],
                                alpha=0.2, linewidth=0)
            fit = line.fit
            if fit is not None and fit.alpha is not None:
                grid = (np.geomspace(*fit.x_range, 100) if fit.x_range[0] > 0 else np.linspace(*fit.x_range, 100))
                prefix = f"{line.label}: " if line.label else ""
                ax.plot(grid, fit.c * grid ** (-fit.alpha), color=colors[i], linestyle="--", linewidth=1.1,
                        label=prefix + fit.text)
        if view.log_x:
            ax.set_xscale("log")
        if view.log_y:
            ax.set_yscale("log")
        for mark in view.marks:
            ax.axvline(mark["x"], color="#555555", linestyle=":", linewidth=1.0)
            if mark["label"]:
                ax.annotate(mark["label"], (mark["x"], 1.0), xycoords=("data", "axes fraction"),
                            xytext=(3, -3), textcoords="offset points", ha="left", va="top", fontsize=7,
                            color="#333333")
        ax.set_xlabel(view.x_label + (" (log scale)" if view.log_x else ""))
        ax.set_ylabel(panel.label)
        ax.set_title(panel.label, fontsize=10)
        ax.grid(True, alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes[1:]:  # a fit is drawn in one panel only (fit needs one metric); gather every label
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    if handles:
        fig.legend(handles, labels, title=view.by, fontsize=7, title_fontsize=8, loc="outside right center",
                   ncols=1 if len(labels) <= 14 else 2)
    fig.suptitle(f"{view.name}: {view.title}", fontsize=11)
    return fig


def curve_section(run: RunResults) -> list[dict]:
    """Per [[curve]]: its view (`report.curves.CurveView`), the figure as a PNG data URI, its table
    (header and rows, as `show` prints them), the fits and the counts, in one sentence each."""
    out = []
    for view in curve_views(run):
        header, rows = table_cells(view)
        img = figure_to_data_uri(curve_figure(view)) if view.n_networks else None
        out.append({"view": view, "img": img, "header": header, "rows": rows, "fits": fit_lines(view),
                    "counts": counts_text(view)})
    return out
