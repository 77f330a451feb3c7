"""Figures of what the hidden layer does: one node's activations per digit, two nodes against each
other, t-SNE maps of wider layers, and the input patterns that drive each node hardest.

Conventions are `figures.py`'s: a Figure without pyplot, one colour per digit (`DIGIT_COLORS`),
images as 28 x 28 or flat 784-vectors in [0, 1].

    from mnist_study.report.maps import tsne_map
    fig = tsne_map(embedding, labels, images, "exp6: t-SNE map")
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.offsetbox import AnnotationBbox, OffsetImage

from mnist_study.report.figures import DIGIT_COLORS, DIGITS, as_images, draw_tiles, tile_figsize


def activation_boxplot(activation: np.ndarray, labels: np.ndarray, title: str = "Activation of the hidden node") -> Figure:
    """One node's activation per digit: a box per digit, plus each digit's full min-max range."""
    activation = np.asarray(activation, dtype=float).ravel()
    labels = np.asarray(labels)
    groups = [activation[labels == d] for d in DIGITS]
    fig = Figure(figsize=(10, 5), layout="constrained")
    ax = fig.add_subplot()
    present = [d for d in DIGITS if len(groups[d])]
    boxes = ax.boxplot([groups[d] for d in present], positions=present, widths=0.5, patch_artist=True,
                       showfliers=False, medianprops={"color": "black"})
    for d, box in zip(present, boxes["boxes"]):
        box.set_facecolor(DIGIT_COLORS[d])
        box.set_alpha(0.85)
    ranges = {}
    for d in present:
        low, high = groups[d].min(), groups[d].max()
        ranges[d] = f"\n[{low:.2f}, {high:.2f}]"
        ax.vlines(d + 0.38, low, high, color=DIGIT_COLORS[d], linewidth=2)
        ax.hlines([low, high], d + 0.31, d + 0.45, color=DIGIT_COLORS[d], linewidth=2)
    ax.plot([], [], color="#555555", linewidth=2, label="min–max range (bar beside each box)")
    ax.set_xticks(DIGITS, [f"{d}{ranges.get(d, '')}" for d in DIGITS], fontsize=8)
    ax.set_xlabel("true digit [min, max activation]")
    ax.set_ylabel("activation (ReLU output)")
    ax.set_title(title + " (box: quartiles, whiskers 1.5 IQR)")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(True, axis="y", alpha=0.3)
    return fig


def _scatter_by_digit(ax, xy: np.ndarray, labels: np.ndarray, size: float, alpha: float) -> None:
    """One scatter in a seeded random order, so no digit is systematically drawn over another,
    plus one legend entry per digit present."""
    order = np.random.default_rng(0).permutation(len(labels))
    colors = np.array(DIGIT_COLORS)[labels[order].astype(int)]
    ax.scatter(xy[order, 0], xy[order, 1], s=size, c=colors, alpha=alpha, linewidths=0, rasterized=True)
    for d in DIGITS:
        if (labels == d).any():
            ax.scatter([], [], s=30, color=DIGIT_COLORS[d], label=str(d))


def activation_scatter(hidden: np.ndarray, labels: np.ndarray, title: str = "Activations of the two hidden nodes") -> Figure:
    """Two nodes' activations against each other, one colour per digit."""
    hidden = np.asarray(hidden, dtype=float)
    labels = np.asarray(labels)
    fig = Figure(figsize=(8.5, 6.5), layout="constrained")
    ax = fig.add_subplot()
    _scatter_by_digit(ax, hidden, labels, 2 if len(labels) > 5000 else 8, 0.5)
    ax.set_xlabel("activation of node 0")
    ax.set_ylabel("activation of node 1")
    ax.set_title(title)
    ax.legend(title="digit", fontsize=8, loc="upper right")
    return fig


def tsne_map(embedding: np.ndarray, labels: np.ndarray, images: np.ndarray | None = None,
             title: str = "t-SNE map of hidden activations", min_distance: float = 0.1,
             max_thumbnails: int = 80) -> Figure:
    """A t-SNE map coloured by digit, with digit thumbnails placed where the map is sparse.

    Like the notebook, the map is scaled to [0, 1] and points are visited in order; a thumbnail
    (framed in its digit's colour) goes at a point farther than `min_distance` from every thumbnail
    placed so far, which spreads them over the map instead of stacking them in dense clusters.
    """
    xy = np.asarray(embedding, dtype=float)
    labels = np.asarray(labels)
    span = xy.max(0) - xy.min(0)
    xy = (xy - xy.min(0)) / np.where(span > 0, span, 1)
    fig = Figure(figsize=(9, 7), layout="constrained")
    ax = fig.add_subplot()
    _scatter_by_digit(ax, xy, labels, 3 if len(labels) > 5000 else 10, 0.8)
    if images is not None:
        images = as_images(images)
        for index in place_thumbnails(xy, min_distance, max_thumbnails):
            box = AnnotationBbox(OffsetImage(images[index], cmap="binary", zoom=0.9), xy[index], pad=0.15,
                                 bboxprops={"edgecolor": DIGIT_COLORS[int(labels[index])], "lw": 2})
            ax.add_artist(box)
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("t-SNE 1 (scaled)")
    ax.set_ylabel("t-SNE 2 (scaled)")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    ax.legend(title="digit", fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def place_thumbnails(xy: np.ndarray, min_distance: float, limit: int) -> list[int]:
    """Greedy choice of points (in order) each at least `min_distance` from those already chosen."""
    chosen: list[int] = []
    placed = np.empty((0, 2))
    for index, position in enumerate(np.asarray(xy, dtype=float)):
        if len(chosen) >= limit:
            break
        if len(placed) == 0 or np.min(np.sum((placed - position) ** 2, axis=1)) > min_distance ** 2:
            chosen.append(index)
            placed = np.vstack([placed, position])
    return chosen


def pattern_grid(patterns: np.ndarray, nodes: Sequence[int], predicted: Sequence[int],
                 title: str = "Patterns that maximise each hidden node", ncols: int = 10) -> Figure:
    """Activation-maximisation patterns (K, 784), each captioned "node i → digit d" with the digit
    the network assigns it, the caption in that digit's colour."""
    images = as_images(patterns)
    captions = [f"{int(n)}→{int(d)}" for n, d in zip(nodes, predicted)]
    colors = [DIGIT_COLORS[int(d)] for d in predicted]
    figsize = tile_figsize(len(images), ncols, True, scale=0.95)
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.add_subplot()
    draw_tiles(ax, images, ncols, captions, colors)
    ax.set_title(title + "\n(caption: node → digit the network calls the pattern)", fontsize=10)
    return fig
