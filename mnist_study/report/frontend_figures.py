"""Figures of the built-in front-ends' report sections: forest pixel importances and chosen
pixels, PCA's explained variance and principal axes.

The front-ends (training/frontends/) import these inside their `report()` method, so matplotlib is
loaded only when a report is built. Conventions are `figures.py`'s: a Figure without pyplot, images
as 28 x 28 or flat 784-vectors, mistakes and highlights in `WRONG` red.

    from mnist_study.report.frontend_figures import pca_variance
    fig = pca_variance(ratios, n_components=154)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from mnist_study.data.digits import IMAGE_SIDE
from mnist_study.report.figures import WRONG, as_images

def forest_importance(importances: np.ndarray, title: str = "Random-forest pixel importance") -> Figure:
    """Pixel importances (784,) as a 28 x 28 heatmap (the notebook's `cmap=hot`)."""
    imp = np.asarray(importances, dtype=float).reshape(IMAGE_SIDE, IMAGE_SIDE)
    fig = Figure(figsize=(5.6, 4.8), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(imp, cmap="hot", interpolation="nearest")
    bar = fig.colorbar(image, ax=ax, ticks=[imp.min(), imp.max()])
    bar.ax.set_yticklabels(["not important", "very important"])
    ax.set_xlabel("column")
    ax.set_ylabel("row")
    ax.set_title(title)
    return fig


def chosen_pixels(image: np.ndarray, pixels: Sequence[int], title: str | None = None,
                  transposed: bool = False) -> Figure:
    """The chosen pixels (flat indices into 784) drawn over a digit at their (row, column).

    A flat index n sits at row n // 28, column n % 28, i.e. at x = column, y = row on the image.
    `transposed=True` reproduces the notebook's plot, which scatters (row, column) as (x, y) and so
    draws every pixel mirrored across the diagonal.
    """
    pixels = np.asarray(pixels, dtype=np.int64)
    rows, cols = np.divmod(pixels, IMAGE_SIDE)
    fig = Figure(figsize=(4.8, 4.8), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(as_images(np.asarray(image).reshape(1, -1))[0], cmap="binary", interpolation="nearest")
    x, y = (rows, cols) if transposed else (cols, rows)
    ax.scatter(x, y, color=WRONG, s=18, label=f"{len(pixels)} chosen pixels")
    ax.set_xlim(-0.5, IMAGE_SIDE - 0.5)
    ax.set_ylim(IMAGE_SIDE - 0.5, -0.5)
    ax.set_xlabel("column")
    ax.set_ylabel("row")
    default = ("mirrored across the diagonal (row and column swapped)" if transposed
               else "at their true positions")
    ax.set_title(title or f"Chosen pixels {default}", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def pca_variance(ratios: np.ndarray, n_components: int, threshold: float = 0.95,
                 title: str = "PCA: cumulative explained variance") -> Figure:
    """Cumulative explained variance against the number of components, with the threshold line
    and the number of components the front-end keeps."""
    cumulative = np.cumsum(np.asarray(ratios, dtype=float))
    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(np.arange(1, len(cumulative) + 1), cumulative, color="black", label="cumulative explained variance")
    ax.axhline(threshold, color=WRONG, linestyle="--", linewidth=1, label=f"{threshold:.0%} of the variance")
    ax.axvline(n_components, color="#1f77b4", linestyle=":", linewidth=1.5,
               label=f"{n_components} components kept")
    ax.annotate(f"{n_components} components", (n_components, threshold), textcoords="offset points",
                xytext=(10, -25), fontsize=9, arrowprops={"arrowstyle": "->", "color": "#555555"})
    ax.set_xscale("log")
    ax.set_xlabel("number of components (log scale)")
    ax.set_ylabel("fraction of variance explained")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def pca_components(components: np.ndarray, n: int = 16, title: str = "First principal components") -> Figure:
    """The first `n` principal axes (K, 784) as 28 x 28 images (red positive, blue negative)."""
    comps = np.asarray(components, dtype=float)[:n].reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
    ncols = int(np.ceil(np.sqrt(len(comps)))) or 1
    nrows = int(np.ceil(len(comps) / ncols)) or 1
    fig = Figure(figsize=(1.6 * ncols + 0.4, 1.7 * nrows + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i < len(comps):
            limit = np.abs(comps[i]).max() or 1.0
            ax.imshow(comps[i], cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
            ax.set_title(f"PC {i + 1}", fontsize=9)
    fig.suptitle(title + " (red: positive, blue: negative)")
    return fig
