"""Each figure function on tiny inputs: the right axes, labels, counts and colours."""

import base64

import numpy as np
import pytest
from matplotlib.collections import PathCollection
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.offsetbox import AnnotationBbox
from matplotlib.patches import Rectangle

from mnist_study.report import figures as F
from mnist_study.report import frontend_figures as FF
from mnist_study.report import maps as M

rng = np.random.default_rng(0)


def images(n):
    return rng.random((n, 28, 28)).astype(np.float32)


def red_frames(ax):
    return [p for p in ax.patches if isinstance(p, Rectangle) and not p.get_fill()
            and to_hex(p.get_edgecolor()) == F.WRONG]


def test_digit_colors_are_ten_distinct_colours():
    assert len(F.DIGIT_COLORS) == 10
    assert len(set(F.DIGIT_COLORS)) == 10


def test_label_counts_one_bar_per_digit_in_the_digit_colours():
    train, test = rng.integers(0, 10, 500), rng.integers(0, 10, 100)
    fig = F.label_counts(train, test)
    assert isinstance(fig, Figure)
    axes = fig.axes
    assert len(axes) == 2
    for ax, labels, name in zip(axes, (train, test), ("training", "test")):
        assert name in ax.get_title()
        assert ax.get_xlabel() == "digit" and ax.get_ylabel() == "images"
        assert len(ax.patches) == 10
        assert [int(p.get_height()) for p in ax.patches] == list(np.bincount(labels, minlength=10))
        assert [to_hex(p.get_facecolor()) for p in ax.patches] == list(F.DIGIT_COLORS)


def test_digit_grid_marks_exactly_the_wrong_predictions():
    labels = np.array([1, 2, 3, 4, 5, 6])
    predicted = np.array([1, 7, 3, 4, 0, 6])
    fig = F.digit_grid(images(6), labels, predicted, title="grid", ncols=4)
    (ax,) = fig.axes
    captions = [t.get_text() for t in ax.texts]
    assert captions == ["1/1", "7/2", "3/3", "4/4", "0/5", "6/6"]
    assert [to_hex(t.get_color()) == F.WRONG for t in ax.texts] == [False, True, False, False, True, False]
    assert len(red_frames(ax)) == 2
    assert "2 of 6 wrong" in ax.get_title()
    assert len(ax.images) == 1  # one mosaic, however many digits


def test_digit_grid_without_predictions_shows_labels_and_no_marks():
    fig = F.digit_grid(images(5).reshape(5, 784), np.arange(5), title="first five")
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.texts] == ["0", "1", "2", "3", "4"]
    assert not red_frames(ax)
    assert ax.get_title() == "first five"


def width_points():
    def ours(m):
        return {s: (m, m - 1.0, m + 1.0) for s in ("train", "validation", "test")}
    return [
        {"label": "w1", "width": 1, "kind": "raw", "ours": ours(40.0), "reference": {"test": 38.3}},
        {"label": "w10", "width": 10, "kind": "raw", "ours": ours(92.0), "reference": {"test": 92.7}},
        {"label": "w130", "width": 130, "kind": "raw", "ours": ours(97.0), "reference": {}},
        {"label": "pca", "width": 130, "kind": "pca", "ours": ours(97.5), "reference": {"test": 97.8}},
        {"label": "forest", "width": 130, "kind": "forest_pixels",
         "ours": {"test": (94.0, float("nan"), float("nan"))}, "reference": {"test": 94.2}},
    ]


def test_accuracy_vs_width_log_axis_error_bars_and_reference_points():
    fig = F.accuracy_vs_width(width_points(), reference_label="paper")
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert ax.get_xscale() == "log"
        assert "width" in ax.get_xlabel() and "accuracy" in ax.get_ylabel()
        assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "10", "130"]
        # the raw-pixel test line passes through its three widths
        test_line = [l for l in ax.get_lines() if to_hex(l.get_color()) == F.SPLIT_STYLES["test"]["color"]
                     and len(l.get_xdata()) == 3]
        assert test_line and list(test_line[0].get_ydata()) == [40.0, 92.0, 97.0]
        # hollow reference markers: 2 raw + 1 PCA + 1 forest references, all on the test split
        hollow = [c for c in ax.collections if isinstance(c, PathCollection) and c.get_facecolors().size == 0]
        assert sum(len(c.get_offsets()) for c in hollow) == 4
        assert {t.get_text() for t in ax.texts} >= {"pca", "forest"}
    assert "paper (hollow)" in [t.get_text() for t in fig.legends[0].get_texts()]


def test_accuracy_vs_width_without_references_draws_no_hollow_markers():
    points = [{**p, "reference": {}} for p in width_points()]
    fig = F.accuracy_vs_width(points)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert not any("hollow" in label for label in labels)
    assert {"PCA inputs", "forest-chosen pixels"} <= set(labels)  # each front-end's plot_marker
    for ax in fig.axes:
        assert not [c for c in ax.collections if isinstance(c, PathCollection) and c.get_facecolors().size == 0]


def test_confusion_heatmap_annotates_every_cell():
    c = rng.integers(0, 50, (10, 10))
    fig = F.confusion_heatmap(c, "cm")
    ax = fig.axes[0]
    assert ax.get_title() == "cm"
    assert ax.get_xlabel() == "predicted digit" and ax.get_ylabel() == "true digit"
    assert [t.get_text() for t in ax.texts] == [str(v) for v in c.ravel()]
    assert [to_hex(t.get_color()) for t in ax.get_xticklabels()] == list(F.DIGIT_COLORS)


def test_training_curves_train_and_validation_per_epoch():
    history = {"loss": [1.0, 0.5, 0.4], "accuracy": [0.6, 0.8, 0.85],
               "val_loss": [0.8, 0.6, 0.65], "val_accuracy": [0.7, 0.82, 0.81]}
    fig = F.training_curves(history, "curves", best_epoch=2)
    assert len(fig.axes) == 2
    acc, loss = fig.axes
    for ax, key in ((acc, "accuracy"), (loss, "loss")):
        assert ax.get_xlabel() == "epoch" and key in ax.get_ylabel()
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels[:2] == ["train", "validation"] and "epoch 2" in labels[2]
        lines = ax.get_lines()
        assert list(lines[0].get_xdata()) == [1, 2, 3]
    assert list(acc.get_lines()[1].get_ydata()) == history["val_accuracy"]


def test_probability_table_shades_and_flags_wrong_rows():
    proba = rng.dirichlet(np.ones(10), 20)
    labels = proba.argmax(1).copy()
    labels[[3, 7]] = (labels[[3, 7]] + 1) % 10
    fig = F.probability_table(proba, labels, "p")
    ax = fig.axes[0]
    assert len(ax.texts) == 200
    assert len(ax.images) == 1 and ax.images[0].get_array().shape == (20, 10)
    red = [i for i, t in enumerate(ax.get_yticklabels()) if to_hex(t.get_color()) == F.WRONG]
    assert red == [3, 7]
    assert len(ax.patches) == 20  # one box around each row's predicted class


def test_confused_pair_four_panels_of_at_most_25():
    labels = np.array([3] * 30 + [5] * 30)
    predicted = np.array([3] * 26 + [5] * 4 + [5] * 20 + [3] * 10)
    fig = F.confused_pair(images(60), labels, predicted, 3, 5)
    axes = fig.axes
    assert len(axes) == 4
    titles = [ax.get_title() for ax in axes]
    assert titles == ["true 3, predicted 3 (25 of 26)", "true 3, predicted 5 (4 of 4)",
                      "true 5, predicted 3 (10 of 10)", "true 5, predicted 5 (20 of 20)"]
    assert [len(red_frames(ax)) for ax in axes] == [0, 4, 10, 0]


def test_activation_boxplot_one_box_per_digit_with_ranges():
    labels = np.repeat(np.arange(10), 20)
    activation = rng.random(200) * (labels + 1)
    fig = M.activation_boxplot(activation, labels)
    ax = fig.axes[0]
    boxes = [p for p in ax.patches]
    assert len(boxes) == 10
    assert [to_hex(b.get_facecolor()) for b in boxes] == list(F.DIGIT_COLORS)
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    low, high = activation[labels == 9].min(), activation[labels == 9].max()
    assert ticks[9] == f"9\n[{low:.2f}, {high:.2f}]"
    assert "activation" in ax.get_ylabel() and "digit" in ax.get_xlabel()


def test_scatter_and_tsne_colour_points_by_digit():
    labels = rng.integers(0, 10, 300)
    xy = rng.normal(size=(300, 2))
    for fig in (M.activation_scatter(np.abs(xy), labels), M.tsne_map(xy, labels, images(300))):
        ax = fig.axes[0]
        points = ax.collections[0]
        assert len(points.get_offsets()) == 300
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert legend == [str(d) for d in range(10)]
        assert [to_hex(h.get_facecolor()[0]) for h in ax.get_legend().legend_handles] == list(F.DIGIT_COLORS)


def test_scatter_point_colours_follow_labels():
    labels = np.array([0, 3, 3, 9])
    hidden = np.array([[0.0, 1.0], [1.0, 2.0], [2.0, 3.0], [3.0, 4.0]])
    ax = M.activation_scatter(hidden, labels).axes[0]
    points = ax.collections[0]
    by_x = {float(x): to_hex(c) for (x, _), c in zip(points.get_offsets(), points.get_facecolors())}
    assert by_x == {0.0: F.DIGIT_COLORS[0], 1.0: F.DIGIT_COLORS[3], 2.0: F.DIGIT_COLORS[3], 3.0: F.DIGIT_COLORS[9]}


def test_tsne_thumbnails_only_where_the_map_is_sparse():
    labels = rng.integers(0, 10, 400)
    xy = rng.random((400, 2))
    fig = M.tsne_map(xy, labels, images(400), min_distance=0.2)
    ax = fig.axes[0]
    boxes = [a for a in ax.artists if isinstance(a, AnnotationBbox)]
    chosen = M.place_thumbnails(xy, 0.2, 80)
    assert 5 <= len(boxes) == len(chosen) < 60
    placed = xy[chosen]
    distances = np.sqrt(((placed[:, None] - placed[None]) ** 2).sum(-1))
    assert distances[np.triu_indices(len(chosen), 1)].min() > 0.2
    assert [to_hex(b.patch.get_edgecolor()) for b in boxes] == [F.DIGIT_COLORS[labels[i]] for i in chosen]


def test_pattern_grid_captions_node_and_digit():
    fig = M.pattern_grid(rng.random((3, 784)), [4, 17, 99], [6, 7, 0])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == ["4→6", "17→7", "99→0"]
    assert [to_hex(t.get_color()) for t in ax.texts] == [F.DIGIT_COLORS[6], F.DIGIT_COLORS[7], F.DIGIT_COLORS[0]]
    assert "node" in ax.get_title() and "digit" in ax.get_title()


def test_forest_importance_colour_bar_is_labelled():
    fig = FF.forest_importance(rng.random(784))
    assert len(fig.axes) == 2  # the map and its colour bar
    bar = fig.axes[1]
    assert [t.get_text() for t in bar.get_yticklabels()] == ["not important", "very important"]
    assert fig.axes[0].images[0].get_array().shape == (28, 28)


def test_chosen_pixels_are_drawn_at_column_row():
    pixel = 3 * 28 + 20  # row 3, column 20
    ax = FF.chosen_pixels(np.zeros(784), [pixel, 27]).axes[0]
    offsets = ax.collections[0].get_offsets().tolist()
    assert offsets == [[20, 3], [27, 0]]  # (x = column, y = row)
    assert ax.get_xlabel() == "column" and ax.get_ylabel() == "row"
    swapped = FF.chosen_pixels(np.zeros(784), [pixel], transposed=True).axes[0]
    assert swapped.collections[0].get_offsets().tolist() == [[3, 20]]  # the notebook's drawing
    assert "swapped" in swapped.get_title()


def test_pca_variance_marks_threshold_and_component_count():
    ratios = np.sort(rng.random(50))[::-1]
    ratios /= ratios.sum()
    ax = FF.pca_variance(ratios, 37).axes[0]
    curve = ax.get_lines()[0]
    np.testing.assert_allclose(curve.get_ydata(), np.cumsum(ratios))
    assert list(ax.get_lines()[1].get_ydata()) == [0.95, 0.95]
    assert list(ax.get_lines()[2].get_xdata()) == [37, 37]
    assert any("37 components" in t.get_text() for t in ax.get_legend().get_texts())
    assert ax.get_xlabel().startswith("number of components")


def test_pca_components_sixteen_images():
    fig = FF.pca_components(rng.normal(size=(20, 784)))
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 16
    assert [ax.get_title() for ax in shown[:3]] == ["PC 1", "PC 2", "PC 3"]


def test_same_digit_same_colour_across_figures():
    labels = np.repeat(np.arange(10), 5)
    bars = F.label_counts(labels, labels).axes[0].patches
    boxes = M.activation_boxplot(rng.random(50), labels).axes[0].patches
    legend = M.activation_scatter(rng.random((50, 2)), labels).axes[0].get_legend().legend_handles
    for d in range(10):
        assert to_hex(bars[d].get_facecolor()) == to_hex(boxes[d].get_facecolor()) \
            == to_hex(legend[d].get_facecolor()[0]) == F.DIGIT_COLORS[d]


def test_figure_to_data_uri_is_a_png():
    uri = F.figure_to_data_uri(FF.pca_variance(np.full(10, 0.1), 3))
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


def test_images_of_the_wrong_shape_are_refused():
    with pytest.raises(ValueError, match="28, 28"):
        F.digit_grid(np.zeros((3, 10)), np.zeros(3))
