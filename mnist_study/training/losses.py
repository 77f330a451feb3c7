"""The losses a network can be trained with, per example, for one network or a stack of them.

    cross_entropy   -log softmax(outputs)[label]; with label smoothing e, as
                    torch.nn.functional.cross_entropy(label_smoothing=e) defines it:
                    (1 - e) * that + e * mean over the C classes of -log softmax(outputs)
    squared_error   sum over the C classes of (output - target)^2, on the raw outputs (no softmax),
                    target the one-hot label, smoothed to (1 - e) * one-hot + e / C when e > 0

A batch's loss is the mean over its examples; the L2 penalty (`penalty`) is added to it. The
gradient of the batch loss with respect to the outputs is (softmax(outputs) - target) / B for
cross-entropy and 2 * (outputs - target) / B for squared error, with the smoothed target in both:
general.py computes it so, and the tests hold it to autograd of torch's own losses.
"""

from __future__ import annotations

import torch

from mnist_study.training.config import LOSSES


def check_loss(loss: str) -> None:
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; expected one of {', '.join(LOSSES)}")


def targets(labels: torch.Tensor, n_classes: int, label_smoothing: float = 0.0) -> torch.Tensor:
    """Float targets (..., C) for integer labels (...): one-hot, smoothed to (1 - e) * one-hot + e / C."""
    onehot = torch.nn.functional.one_hot(labels.long(), n_classes).float()
    if label_smoothing:
        onehot = onehot * (1.0 - label_smoothing) + label_smoothing / n_classes
    return onehot


def per_example(outputs: torch.Tensor, labels: torch.Tensor, loss: str = "cross_entropy",
                label_smoothing: float = 0.0) -> torch.Tensor:
    """The loss of each example: outputs (..., N, C), labels broadcastable to (..., N) -> (..., N)."""
    check_loss(loss)
    labels = labels.long().expand(outputs.shape[:-1])
    if loss == "squared_error":
        return (outputs - targets(labels, outputs.shape[-1], label_smoothing)).pow(2).sum(-1)
    logp = torch.log_softmax(outputs, dim=-1)
    nll = -logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    if label_smoothing:
        nll = (1.0 - label_smoothing) * nll - label_smoothing * logp.mean(-1)
    return nll


def loss_sum(outputs: torch.Tensor, labels: torch.Tensor, loss: str = "cross_entropy",
             label_smoothing: float = 0.0) -> torch.Tensor:
    """Summed loss per network: outputs (S, N, C), labels (N,) or (S, N) -> (S,)."""
    if loss == "cross_entropy" and not label_smoothing:  # the paper's: as it always was computed
        logp = torch.log_softmax(outputs, dim=-1)
        index = labels.long().expand(outputs.shape[:-1]).unsqueeze(-1)
        return -logp.gather(-1, index).sum(dim=(1, 2))
    return per_example(outputs, labels, loss, label_smoothing).sum(dim=1)


def penalty(params: dict[str, torch.Tensor], kernels: tuple[str, ...]) -> torch.Tensor:
    """sum(W^2) over the named kernels, per network, in float64: (S,) for a stack, () for one network."""
    total = None
    for name in kernels:
        w = params[name].double()
        term = w.pow(2).sum(dim=(-2, -1))
        total = term if total is None else total + term
    if total is None:
        first = next(iter(params.values()))
        return torch.zeros(first.shape[:-2], dtype=torch.float64, device=first.device)
    return total
