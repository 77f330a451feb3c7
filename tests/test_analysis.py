"""Analyses on constructed inputs whose answers are known."""

import sys

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from mnist_study.report import analysis as A
from mnist_study.training.frontends import ForestPixels, PCAFrontend, RawPixels
from mnist_study.training.model import MLP

rng = np.random.default_rng(0)


# ------------------------------------------------------------------------------ confusions

def test_most_confused_pair_adds_both_directions():
    c = np.diag(np.full(10, 100))
    c[4, 9] = 7      # 4 read as 9
    c[9, 4] = 6      # 9 read as 4: 13 in all
    c[3, 5] = 12     # one direction only: 12 < 13
    c[7, 7] = 1000   # the diagonal never counts
    assert A.most_confused_pair(c) == (4, 9, 13)


def test_most_confused_pair_is_ordered_and_breaks_ties_by_row():
    c = np.zeros((10, 10), int)
    c[8, 2] = 5
    c[6, 1] = 5
    assert A.most_confused_pair(c) == (1, 6, 5)


def test_most_confused_pair_refuses_non_square():
    with pytest.raises(ValueError, match="square"):
        A.most_confused_pair(np.zeros((10, 9)))


def test_confusion_examples_pick_each_group_in_order():
    labels = np.array([3, 5, 3, 5, 3, 1])
    predicted = np.array([3, 3, 5, 5, 3, 3])
    groups = A.confusion_examples(labels, predicted, 3, 5, limit=1)
    assert {k: v.tolist() for k, v in groups.items()} == {(3, 3): [0], (3, 5): [2], (5, 3): [1], (5, 5): [3]}


# -------------------------------------------------------------------- activation maximisation

def plus_minus_network(mask: np.ndarray, digit: int = 4) -> MLP:
    """One hidden node with weight +1 on the pixels of `mask` and -1 elsewhere; the output layer
    maps the node to `digit`. Its most exciting image in [0, 1] is exactly the mask."""
    w = np.where(mask.ravel(), 1.0, -1.0).astype(np.float32)
    out = torch.zeros(1, 10)
    out[0, digit] = 1.0
    return MLP({"hidden.kernel": torch.tensor(w)[:, None], "hidden.bias": torch.zeros(1, 1),
                "output.kernel": out, "output.bias": torch.zeros(1, 10)})


def bar_mask() -> np.ndarray:
    mask = np.zeros((28, 28), bool)
    mask[6:22, 11:16] = True
    return mask


def test_activation_maximization_finds_the_known_optimum():
    mask = bar_mask()
    patterns = A.activation_maximization(plus_minus_network(mask), l2=0.05, tv=0.05, steps=300)
    image = patterns.images[0].reshape(28, 28)
    assert np.abs(image - mask).max() < 0.05
    assert patterns.nodes.tolist() == [0]
    assert patterns.activation[0] == pytest.approx(mask.sum(), rel=0.02)  # the largest possible
    assert patterns.predicted.tolist() == [4]
    assert patterns.images.min() >= 0 and patterns.images.max() <= 1


def test_default_penalties_keep_the_shape_of_the_optimum():
    # Total variation charges the bar's edge, so the default penalties dim it (to about
    # 1 - tv * perimeter / area); its shape must stay exactly the mask.
    mask = bar_mask()
    image = A.activation_maximization(plus_minus_network(mask)).images[0].reshape(28, 28)
    np.testing.assert_array_equal(image > image.max() / 2, mask)
    assert image[mask].min() > 0.6 and image[~mask].max() < 0.05


def test_activation_maximization_is_seeded():
    model = MLP({"hidden.kernel": torch.randn(784, 3), "hidden.bias": torch.zeros(1, 3),
                 "output.kernel": torch.randn(3, 10), "output.bias": torch.zeros(1, 10)})
    a = A.activation_maximization(model, steps=20, seed=1)
    b = A.activation_maximization(model, steps=20, seed=1)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.images.shape == (3, 784) and a.proba.shape == (3, 10)


def test_wide_layers_keep_the_most_active_nodes():
    width = 200
    kernel = torch.zeros(784, width)
    bias = torch.full((1, width), -1.0)
    favourite = [17, 150, 3]
    for rank, node in enumerate(favourite):
        bias[0, node] = 10.0 - rank   # always on, with distinct means
    model = MLP({"hidden.kernel": kernel, "hidden.bias": bias,
                 "output.kernel": torch.zeros(width, 10), "output.bias": torch.zeros(1, 10)})
    sample = rng.random((50, 784)).astype(np.float32)
    patterns = A.activation_maximization(model, sample=sample, n_top=3, steps=5)
    assert patterns.nodes.tolist() == favourite
    with pytest.raises(ValueError, match="sample"):
        A.activation_maximization(model, steps=5)


@pytest.fixture(scope="module")
def fitted():
    """Pixels (120, 784) and the three front-ends fitted on them."""
    x = np.random.default_rng(1).random((120, 784)).astype(np.float32)
    y = np.arange(120) % 10
    with threadpool_limits(1):  # a 120 x 784 SVD only slows down with more BLAS threads
        frontends = [RawPixels().fit(x), PCAFrontend(0.9).fit(x), ForestPixels(n_pixels=20, n_trees=3).fit(x, y)]
    return x, frontends


def test_frontend_ops_agree_with_the_fitted_front_ends(fitted):
    x, frontends = fitted
    for fe in frontends:
        ours = A.frontend_op(fe)(torch.as_tensor(x)).numpy()
        np.testing.assert_allclose(ours, fe.transform(x), atol=1e-4, err_msg=type(fe).__name__)


def test_patterns_through_front_ends_are_images(fitted):
    x, frontends = fitted
    for fe in frontends[1:]:
        d = fe.transform(x[:1]).shape[1]
        model = MLP({"hidden.kernel": torch.randn(d, 4), "hidden.bias": torch.zeros(1, 4),
                     "output.kernel": torch.randn(4, 10), "output.bias": torch.zeros(1, 10)})
        patterns = A.activation_maximization(model, fe, steps=30)
        assert patterns.images.shape == (4, 784)
        # the activation reported is the network's own on the pattern, through the front-end
        hidden, _ = model.hidden_and_proba(fe.transform(patterns.images))
        np.testing.assert_allclose(patterns.activation, hidden[np.arange(4), patterns.nodes], rtol=1e-4, atol=1e-4)


def test_forest_pattern_moves_only_the_chosen_pixels(fitted):
    _, (_, _, forest) = fitted
    model = MLP({"hidden.kernel": torch.ones(20, 1), "hidden.bias": torch.zeros(1, 1),
                 "output.kernel": torch.ones(1, 10), "output.bias": torch.zeros(1, 10)})
    image = A.activation_maximization(model, forest, l2=0.05, tv=0.0).images[0]
    chosen = np.zeros(784, bool)
    chosen[forest.pixels_] = True
    assert image[chosen].min() > 0.95
    assert image[~chosen].max() < 0.05  # no gain there, so the L2 penalty empties them


# ------------------------------------------------------------------------------------ t-SNE

def blobs(n=300, k=4, dim=10, seed=0):
    r = np.random.default_rng(seed)
    centres = r.normal(0, 6, (k, dim))
    labels = r.integers(0, k, n)
    return centres[labels] + r.normal(0, 1, (n, dim)), labels


def test_tsne_separates_blobs():
    x, labels = blobs()
    embedding = A.tsne_embedding(x, seed=0)
    assert embedding.shape == (300, 2) and np.isfinite(embedding).all()
    assert A.knn_accuracy(embedding, labels) > 0.95


def test_tsne_falls_back_to_scikit_learn(monkeypatch):
    monkeypatch.setitem(sys.modules, "openTSNE", None)  # makes `import openTSNE` fail
    x, labels = blobs(n=120)
    embedding = A.tsne_embedding(x, seed=0)
    assert embedding.shape == (120, 2)
    assert A.knn_accuracy(embedding, labels) > 0.9


def test_tsne_handles_tiny_inputs_and_dead_nodes():
    x, _ = blobs(n=12)
    x[:, 3] = 0.0  # a ReLU node that never fires
    assert A.tsne_embedding(x, seed=0).shape == (12, 2)
    with pytest.raises(ValueError):
        A.tsne_embedding(x[:3], seed=0)


def test_sample_indices_are_seeded_sorted_and_distinct():
    a = A.sample_indices(1000, 100, seed=3)
    assert len(np.unique(a)) == 100 and (np.diff(a) > 0).all()
    np.testing.assert_array_equal(a, A.sample_indices(1000, 100, seed=3))
    assert not np.array_equal(a, A.sample_indices(1000, 100, seed=4))
    np.testing.assert_array_equal(A.sample_indices(50, "all", 0), np.arange(50))
    np.testing.assert_array_equal(A.sample_indices(50, 10_000, 0), np.arange(50))


def test_knn_accuracy_of_perfect_and_random_maps():
    labels = np.repeat(np.arange(3), 30)
    separated = np.c_[labels * 100.0, np.arange(90) % 30]
    assert A.knn_accuracy(separated, labels) == 1.0
    assert A.knn_accuracy(rng.random((90, 2)), labels) < 0.7
