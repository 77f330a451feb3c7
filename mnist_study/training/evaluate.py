"""Full-pass evaluation of a trained network: plain numbers and arrays, no side effects."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import classification_report, confusion_matrix

from mnist_study.data.digits import DIGITS
from mnist_study.training.model import MLP



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


def evaluate(model: MLP, splits: dict[str, tuple[np.ndarray, np.ndarray]], l2: float = 0.0) -> Evaluation:
    """Evaluate on every split in `splits` (name -> (inputs (N, D), labels (N,))).

    The loss includes the L2 penalty, as Keras' `model.evaluate` reports it.
    """
    penalty = l2 * float((model.params["hidden.kernel"].double() ** 2).sum())
    accuracy, loss, test_proba = {}, {}, None
    for name, (x, y) in splits.items():
        proba = model.predict_proba(x)
        accuracy[name] = float((proba.argmax(1) == y).mean())
        loss[name] = cross_entropy(proba, y) + penalty
        if name == "test":
            test_proba = proba
    x_test, y_test = splits["test"]
    predicted = test_proba.argmax(1)
    return Evaluation(
        accuracy=accuracy,
        loss=loss,
        confusion=confusion_matrix(y_test, predicted, labels=list(DIGITS)).astype(np.int64),
        report=classification_report(y_test, predicted, labels=list(DIGITS), output_dict=True, zero_division=0),
        test_proba=test_proba.astype(np.float32),
    )
