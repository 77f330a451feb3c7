"""Analyses behind the report's figures: confusions, node patterns, t-SNE maps.

Everything here takes and returns plain arrays (or small dataclasses of arrays); drawing them is
`figures.py`'s job. The paper's notebook does each of these once per experiment in a copied cell;
here each is one function.

    from mnist_study.report.analysis import activation_maximization, tsne_embedding
    patterns = activation_maximization(model, frontend, sample=x_train[:2000])
    xy = tsne_embedding(hidden, seed=0)
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
import torch

from mnist_study.data.digits import IMAGE_SIDE, N_PIXELS
from mnist_study.executor import single_threaded
from mnist_study.training.model import MLP
from mnist_study.training.network import first_pre_activation



# ---------------------------------------------------------------------------------- confusions

def most_confused_pair(confusion: np.ndarray) -> tuple[int, int, int]:
    """The two digits mixed up most often, in either direction.

    Parameters
    ----------
    confusion : (10, 10) counts, rows = true digit, columns = predicted digit.

    Returns
    -------
    (a, b, count) with a < b and count = C[a, b] + C[b, a], the largest off-diagonal entry of
    C + Cᵀ (the first such pair in row order on ties).
    """
    c = np.asarray(confusion, dtype=np.int64)
    if c.ndim != 2 or c.shape[0] != c.shape[1] or c.shape[0] < 2:
        raise ValueError(f"confusion must be a square matrix of at least 2 classes, got shape {c.shape}")
    both = c + c.T
    upper = np.triu(both, k=1).astype(float)
    upper[np.tril_indices_from(upper)] = -1  # only pairs a < b compete
    a, b = np.unravel_index(int(np.argmax(upper)), upper.shape)
    return int(a), int(b), int(both[a, b])


def confusion_examples(labels: np.ndarray, predicted: np.ndarray, a: int, b: int,
                       limit: int = 25) -> dict[tuple[int, int], np.ndarray]:
    """Indices of up to `limit` images for each of (a as a), (a as b), (b as a), (b as b).

    Keys are (true, predicted); values are indices into `labels` in their original order, as the
    notebook's `X_train[(y == a) & (y_pred == b)][:25]` picks them.
    """
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    return {(t, p): np.flatnonzero((labels == t) & (predicted == p))[:limit]
            for t, p in ((a, a), (a, b), (b, a), (b, b))}


# ---------------------------------------------------------------------- activation maximisation

@dataclass
class NodePatterns:
    """The input each hidden node responds to most.

    Attributes
    ----------
    images : (K, 784) float32 in [0, 1], one 28 x 28 pattern per node, row-major.
    nodes : (K,) indices of the hidden nodes, in the order of `images`.
    activation : (K,) each node's (ReLU) activation on its own pattern.
    predicted : (K,) the digit the network assigns each pattern.
    proba : (K, 10) the network's class probabilities for each pattern.
    """

    images: np.ndarray
    nodes: np.ndarray
    activation: np.ndarray
    predicted: np.ndarray
    proba: np.ndarray


def frontend_op(frontend) -> Callable[[torch.Tensor], torch.Tensor]:
    """A fitted front-end (None: raw pixels) as a differentiable torch function of pixels
    (N, 784) -> inputs (N, D), so that gradients reach all 784 pixels: its own `torch_op()`."""
    return (lambda x: x) if frontend is None else frontend.torch_op()


def _total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation per image: x (K, 784) -> (K,)."""
    img = x.view(-1, IMAGE_SIDE, IMAGE_SIDE)
    return ((img[:, 1:, :] - img[:, :-1, :]).abs().sum((1, 2))
            + (img[:, :, 1:] - img[:, :, :-1]).abs().sum((1, 2)))


def choose_nodes(model: MLP, transform: Callable, sample: np.ndarray | None, max_nodes: int,
                 n_top: int) -> np.ndarray:
    """All nodes when the layer has at most `max_nodes`, else the `n_top` with the highest mean
    activation on `sample` (N, 784), most active first."""
    width = model.hidden_width
    if width <= max_nodes:
        return np.arange(width)
    if sample is None or len(sample) == 0:
        raise ValueError(f"the layer has {width} nodes (> {max_nodes}); pass `sample` images to pick "
                         f"the {n_top} most active")
    with torch.no_grad():
        x = transform(torch.as_tensor(np.asarray(sample, dtype=np.float32))).numpy()
    hidden, _ = model.hidden_and_proba(x)
    return np.argsort(-hidden.mean(0), kind="stable")[:n_top]


def activation_maximization(model: MLP, transform=None, *, sample: np.ndarray | None = None,
                            max_nodes: int = 130, n_top: int = 64, steps: int = 300,
                            learning_rate: float = 0.2, l2: float = 0.5, tv: float = 0.5,
                            seed: int = 0) -> NodePatterns:
    """Find, for each hidden node, the 28 x 28 image in [0, 1] that drives it hardest.

    Projected gradient ascent on the node's pre-activation, starting from seeded grey noise and
    clipping pixels to [0, 1] after each step. The pre-activation rather than the ReLU output is
    climbed so that a node that is off on grey noise still gets a gradient. The objective is
    normalised per node by its mean absolute pixel gradient at the start, so the penalties
    `l2 * sum(x²)` (pulls unhelpful pixels to the black background) and `tv` * total variation
    (keeps strokes connected) mean the same for every node and network.

    Parameters
    ----------
    model : the trained network.
    transform : None for raw pixels, a fitted front-end (training/frontends/) or
        a torch function pixels (N, 784) -> network inputs (N, D).
    sample : (N, 784) training images in [0, 1]; needed to rank nodes when the layer is wider than
        `max_nodes` (then the `n_top` nodes with the highest mean activation are kept).
    steps, learning_rate : the ascent's length and step size (pixels per unit of normalised gain),
        cosine-decayed to 0 so that the total-variation term settles instead of oscillating.
    l2, tv : penalty weights, relative to the node's normalised gain (see above).
    seed : seeds the starting noise.
    """
    op = transform if callable(transform) and not hasattr(transform, "transform") else frontend_op(transform)
    nodes = choose_nodes(model, op, sample, max_nodes, n_top)
    # The tensors are tiny (K x 784): one thread avoids the cost of waking the others on every
    # small op, which dominates (10-50x slower) when other processes load the machine.
    with single_threaded():
        return _ascend(model, op, nodes, steps, learning_rate, l2, tv, seed)


def _ascend(model: MLP, op: Callable, nodes: np.ndarray, steps: int, learning_rate: float, l2: float,
            tv: float, seed: int) -> NodePatterns:
    # The ascent climbs the first hidden layer's pre-activation, whatever the layers after it (every
    # activation offered rises with it, GELU's above -0.75).
    generator = torch.Generator().manual_seed(seed)
    x0 = 0.5 + 0.05 * torch.randn(len(nodes), N_PIXELS, generator=generator)
    x = x0.clamp(0, 1).requires_grad_(True)
    node_index = torch.as_tensor(nodes, dtype=torch.long)
    rows = torch.arange(len(nodes))

    def pre_activation(images: torch.Tensor) -> torch.Tensor:
        # through the network's own input scaling and convolutions, where it has them
        return first_pre_activation(model.params, op(images))[rows, node_index]  # (K,)

    # Gain per unit pixel change at the start: exact for the linear front-ends, the slope at x0 for a CNN.
    (grad,) = torch.autograd.grad(pre_activation(x).sum(), x)
    scale = grad.abs().mean(1).clamp_min(1e-12).detach()

    optimizer = torch.optim.SGD([x], lr=learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1))
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        objective = pre_activation(x) / scale - l2 * (x ** 2).sum(1) - tv * _total_variation(x)
        (-objective.sum()).backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            x.clamp_(0, 1)

    images = x.detach().numpy().astype(np.float32)
    with torch.no_grad():
        inputs = op(torch.as_tensor(images)).numpy()
    hidden, proba = model.hidden_and_proba(inputs)
    return NodePatterns(images=images, nodes=nodes.astype(np.int64),
                        activation=hidden[np.arange(len(nodes)), nodes].astype(np.float32),
                        predicted=proba.argmax(1).astype(np.int64), proba=proba.astype(np.float32))


# ----------------------------------------------------------------------------------------- t-SNE

def sample_indices(n_total: int, n: int | Literal["all"] | None, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random sample of `n` of `n_total` items (all for "all"/None/n >= total)."""
    if n is None or n == "all" or int(n) >= n_total:
        return np.arange(n_total)
    if int(n) < 1:
        raise ValueError(f"sample size must be at least 1, got {n}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_total, size=int(n), replace=False))


def tsne_embedding(hidden: np.ndarray, seed: int, perplexity: float = 40.0, n_iter: int = 300,
                   n_jobs: int | None = None) -> np.ndarray:
    """Two-dimensional t-SNE map (N, 2) of hidden activations (N, H), with the paper's settings.

    The notebook calls scikit-learn's `TSNE(init='pca', learning_rate='auto', perplexity=40,
    n_iter=300)`: 300 iterations in all, of which the first 250 use early exaggeration 12. We run
    the same schedule in openTSNE (FFT-accelerated, much faster at 10,000+ points) and fall back to
    scikit-learn when openTSNE is missing. Perplexity is lowered for tiny inputs (it must stay
    below N / 3). `n_jobs` defaults to every core for maps of 5,000 points or more and to one
    thread below that, where waking threads costs more than it saves (100x on a busy machine).
    """
    x = np.asarray(hidden, dtype=np.float64)
    if x.ndim != 2 or len(x) < 4:
        raise ValueError(f"t-SNE needs a 2-D array of at least 4 points, got shape {x.shape}")
    perplexity = float(min(perplexity, max(1.0, (len(x) - 1) / 3.0)))
    exaggeration_iter = min(250, n_iter)
    if n_jobs is None:
        n_jobs = -1 if len(x) >= 5000 else 1
    try:
        from openTSNE import TSNE
    except ImportError:
        return _sklearn_tsne(x, seed, perplexity, n_iter)
    # Constant columns (dead ReLU nodes) carry nothing and make PCA initialisation degenerate.
    x = x[:, x.std(0) > 0] if (x.std(0) > 0).any() else x
    # Exact neighbours are one BLAS distance matrix: 3x faster than Annoy's index at 10,000
    # points, and the affinities are then exact; past ~20,000 the N^2 matrix stops paying.
    neighbors = "exact" if len(x) <= 20_000 else "auto"
    tsne = TSNE(n_components=2, perplexity=perplexity, learning_rate="auto", early_exaggeration=12,
                early_exaggeration_iter=exaggeration_iter, n_iter=max(n_iter - exaggeration_iter, 0),
                initialization="pca", random_state=seed, n_jobs=n_jobs, verbose=False, neighbors=neighbors)
    return np.asarray(tsne.fit(x), dtype=np.float32)


def _sklearn_tsne(x: np.ndarray, seed: int, perplexity: float, n_iter: int) -> np.ndarray:
    from sklearn.manifold import TSNE

    iterations = "max_iter" if "max_iter" in inspect.signature(TSNE.__init__).parameters else "n_iter"
    tsne = TSNE(n_components=2, init="pca", learning_rate="auto", perplexity=perplexity,
                random_state=seed, **{iterations: max(n_iter, 250)})
    return tsne.fit_transform(x).astype(np.float32)


def knn_accuracy(embedding: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    """Leave-one-out k-nearest-neighbour accuracy of `labels` on `embedding`: how well a map keeps
    classes apart (openTSNE's tests use the same measure)."""
    from sklearn.neighbors import KNeighborsClassifier

    labels = np.asarray(labels)
    k = min(k, len(labels) - 1)
    knn = KNeighborsClassifier(n_neighbors=k + 1).fit(embedding, labels)
    neighbours = knn.kneighbors(embedding, return_distance=False)[:, 1:]  # drop each point itself
    votes = np.array([np.bincount(labels[row]).argmax() for row in neighbours])
    return float((votes == labels).mean())
