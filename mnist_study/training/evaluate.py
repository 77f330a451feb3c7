"""Full-pass evaluation of a trained network: plain numbers and arrays, no side effects."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import classification_report, confusion_matrix

from mnist_study.data.digits import DIGITS
from mnist_study.training.losses import check_loss, per_example
from mnist_study.training.model import MLP
from mnist_study.training.network import penalised_kernels


@dataclass
class Evaluation:
    """Accuracy (fraction) and loss per split; test-set details for the report."""

    accuracy: dict[str, float]
    loss: dict[str, float]
    confusion: np.ndarray          # (10, 10) int64, rows = true digit, columns = predicted
    report: dict                   # scikit-learn's classification_report(output_dict=True)
    test_proba: np.ndarray         # (N_test, 10) float32


def cross_entropy(proba: np.ndarray, labels: np.ndarray) -> float:
    """Mean categorical cross-entropy of probabilities (N, 10) against integer labels (N,)."""
    picked = proba[np.arange(len(labels)), labels].astype(np.float64)
    return float(-np.log(np.maximum(picked, 1e-12)).mean())


def penalty(model: MLP, l2: float, l2_scope: str = "hidden") -> float:
    """l2 * sum(W^2) over the kernels of `l2_scope`: the hidden layers' ("hidden") or every one ("all")."""
    total = 0.0
    for name in penalised_kernels(model.depth, l2_scope):
        total += float((model.params[name].double() ** 2).sum())
    return l2 * total


def trained_loss(outputs: np.ndarray, labels: np.ndarray, loss: str = "cross_entropy",
                 label_smoothing: float = 0.0) -> float:
    """Mean loss (losses.py) of raw outputs (N, 10) against integer labels (N,), in float64."""
    values = per_example(torch.from_numpy(np.asarray(outputs)).double(), torch.from_numpy(np.asarray(labels)),
                         loss, label_smoothing)
    return float(values.mean()) if len(values) else float("nan")


def evaluate(model: MLP, splits: dict[str, tuple[np.ndarray, np.ndarray]], l2: float = 0.0, *,
             loss: str = "cross_entropy", label_smoothing: float = 0.0, l2_scope: str = "hidden") -> Evaluation:
    """Evaluate on every split in `splits` (name -> (inputs (N, D), labels (N,))).

    The loss is the one the network was trained with (`loss`, `label_smoothing`: squared error for
    a squared-error network) plus the L2 penalty over the kernels of `l2_scope`, as Keras'
    `model.evaluate` reports it. The defaults are the paper's. Probabilities are the softmax of
    the outputs, whatever the loss.
    """
    check_loss(loss)
    extra = penalty(model, l2, l2_scope)
    accuracy, losses, test_proba = {}, {}, None
    for name, (x, y) in splits.items():
        outputs = model.outputs(x)
        proba = torch.softmax(torch.from_numpy(outputs), dim=-1).numpy()  # as model.predict_proba
        accuracy[name] = float((proba.argmax(1) == y).mean())
        if loss == "cross_entropy" and not label_smoothing:
            losses[name] = cross_entropy(proba, y) + extra  # the paper's, as it always was computed
        else:
            losses[name] = trained_loss(outputs, y, loss, label_smoothing) + extra
        if name == "test":
            test_proba = proba
    x_test, y_test = splits["test"]
    predicted = test_proba.argmax(1)
    return Evaluation(
        accuracy=accuracy,
        loss=losses,
        confusion=confusion_matrix(y_test, predicted, labels=list(DIGITS)).astype(np.int64),
        report=classification_report(y_test, predicted, labels=list(DIGITS), output_dict=True, zero_division=0),
        test_proba=test_proba.astype(np.float32),
    )
