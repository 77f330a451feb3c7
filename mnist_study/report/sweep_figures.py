"""Figures of a sweep: a field's effect (mean with 95% CI error bars against its values) and two
fields' interaction (one line per value of the second).

Conventions are `figures.py`'s: a Figure without pyplot, titles and axis labels on every axes.
Values are laid out as `report.sweep.axis_kind` says: "log" (positive numbers spanning decades),
"linear", or "categorical" (evenly spaced, labelled; strings, lists, and 0 beside decades).
Lines of an interaction plot take viridis colours, so that they are never read as digits.

    fig = effect_plot(["1e-4", "1e-3"], [1e-4, 1e-3], means, lows, highs, "log", baseline=0,
                      title="learning_rate", xlabel="learning_rate", ylabel="test accuracy (%)")
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure


def _positions(values: Sequence[Any], axis: str) -> np.ndarray:
    """Where the values sit on the x axis, before any scale is applied."""
    if axis == "categorical":
        return np.arange(len(values), dtype=float)
    return np.asarray(values, dtype=float)


def _set_axis(ax, labels: Sequence[str], values: Sequence[Any], axis: str, xlabel: str) -> None:
    x = _positions(values, axis)
    if axis == "log":
        ax.set_xscale("log")
        ax.minorticks_off()
    # Labels that would run into each other (about 45 characters fit the width) are slanted.
    crowded = sum(len(label) + 2 for label in labels) > 45
    ax.set_xticks(x, labels, rotation=35 if crowded else 0, ha="right" if crowded else "center",
                  rotation_mode="anchor")
    if axis == "categorical":
        ax.set_xlim(-0.5, len(values) - 0.5)
    scale = {"log": " (log scale)", "categorical": ""}.get(axis, "")
    ax.set_xlabel(xlabel + scale)


def _bars(means, lows, highs) -> tuple[np.ndarray, np.ndarray]:
    mean = np.asarray(means, dtype=float)
    err = np.vstack([np.nan_to_num(mean - np.asarray(lows, dtype=float)),
                     np.nan_to_num(np.asarray(highs, dtype=float) - mean)])
    return mean, err


def effect_plot(labels: Sequence[str], values: Sequence[Any], means: Sequence[float], lows: Sequence[float],
                highs: Sequence[float], axis: str, baseline: int | None, title: str, xlabel: str,
                ylabel: str) -> Figure:
    """Mean (percent) against a field's values with error bars from `lows` to `highs` (nan: none).

    Parameters
    ----------
    labels, values : (K,) each value's label and the value itself (numbers unless categorical).
    means, lows, highs : (K,) the mean and its interval; nan where a value has no result.
    axis : "log", "linear" or "categorical".
    baseline : index of the baseline value (drawn hollow and named in the legend), or None.
    """
    fig = Figure(figsize=(5.4, 3.8), layout="constrained")
    ax = fig.add_subplot()
    x = _positions(values, axis)
    mean, err = _bars(means, lows, highs)
    ax.errorbar(x, mean, yerr=err, color="black", marker="o", capsize=3, linestyle="-" if axis != "categorical"
                else "none", markersize=5, label="mean, 95% CI over seeds")
    if baseline is not None and np.isfinite(mean[baseline]):
        ax.plot([x[baseline]], [mean[baseline]], marker="o", markersize=10, markerfacecolor="white",
                markeredgecolor="black", linestyle="none", label="baseline", zorder=3)
    _set_axis(ax, labels, values, axis, xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return fig


def interaction_plot(x_labels: Sequence[str], x_values: Sequence[Any], x_axis: str, line_labels: Sequence[str],
                     means: np.ndarray, lows: np.ndarray, highs: np.ndarray, title: str, xlabel: str,
                     legend_title: str, ylabel: str) -> Figure:
    """One line per value of a second field, each against the first field's values.

    Parameters
    ----------
    means, lows, highs : (L, K) per line (second field's value) and x value; nan where a cell has
        no result. Lines are nudged sideways a little so that their error bars do not hide each other.
    """
    means, lows, highs = (np.asarray(a, dtype=float) for a in (means, lows, highs))
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    x = _positions(x_values, x_axis)
    t = np.log10(x) if x_axis == "log" else x
    step = (np.ptp(t) if len(t) > 1 and np.ptp(t) > 0 else 1.0) * (0.06 if x_axis == "categorical" else 0.012)
    n = len(line_labels)
    colors = matplotlib.colormaps["viridis"](np.linspace(0, 0.9, max(n, 1)))
    for i, label in enumerate(line_labels):
        shifted = t + (i - (n - 1) / 2) * min(step, 0.6 / max(n, 1) if x_axis == "categorical" else step)
        xs = 10 ** shifted if x_axis == "log" else shifted
        mean, err = _bars(means[i], lows[i], highs[i])
        ax.errorbar(xs, mean, yerr=err, color=colors[i], marker="o", markersize=4, capsize=2, linewidth=1.2,
                    label=label)
    _set_axis(ax, x_labels, x_values, x_axis, xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(title=legend_title, fontsize=7, title_fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5),
              ncols=1 if n <= 12 else 2)
    return fig
