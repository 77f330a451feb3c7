"""RMSprop exactly as Keras defines it.

    v <- rho * v + (1 - rho) * g^2
    w <- w - lr * g / (sqrt(v) + epsilon)

with v starting at zero and epsilon added *outside* the square root (Keras' defaults:
lr = 1e-3, rho = 0.9, epsilon = 1e-7). torch.optim.RMSprop(alpha=rho, eps=epsilon) computes the
same update; this version works on lists of tensors with torch._foreach_* kernels so that one
optimiser step over all parameters is a handful of calls instead of a Python loop. (On the CPU,
training normally runs the compiled epoch of kernels/fused_epoch.cpp, which applies the same update.)

Optimisers are registered by name in OPTIMIZERS, each with its settings as a frozen dataclass whose
`kind` is that name; the trainer builds one with `make_optimizer(params, config)`. Adding an
optimiser is one class (constructed from the parameter list and its config, with
`step(grads, penalty)` and `keep(index)`) plus one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import torch


class Optimizer(Protocol):
    """What the trainer needs of an optimiser over a stack of seeds (leading axis of each tensor)."""

    params: list[torch.Tensor]

    def step(self, grads: list[torch.Tensor], penalty: float = 0.0) -> None: ...

    def keep(self, index: torch.Tensor) -> None: ...


@dataclass(frozen=True, kw_only=True)
class RMSpropConfig:
    """Keras' RMSprop and its defaults: learning rate, decay of the squared-gradient average, epsilon."""

    kind: Literal["rmsprop"] = "rmsprop"  # the name in OPTIMIZERS
    lr: float = 1e-3
    rho: float = 0.9
    epsilon: float = 1e-7


class KerasRMSprop:
    """In-place RMSprop over a fixed list of parameter tensors."""

    config_class = RMSpropConfig  # its settings: what a config names by `kind`

    def __init__(self, params: list[torch.Tensor], config: RMSpropConfig = RMSpropConfig()):
        self.params = params
        self.config = config
        self.velocity = [torch.zeros_like(p) for p in params]

    def step(self, grads: list[torch.Tensor], penalty: float = 0.0) -> None:
        """One update; `penalty` adds the L2 gradient penalty * params[0] to grads[0] first."""
        c = self.config
        if penalty:
            grads[0].add_(self.params[0], alpha=penalty)
        torch._foreach_mul_(self.velocity, c.rho)
        torch._foreach_addcmul_(self.velocity, grads, grads, value=1 - c.rho)
        denom = torch._foreach_sqrt(self.velocity)
        torch._foreach_add_(denom, c.epsilon)
        torch._foreach_addcdiv_(self.params, grads, denom, value=-c.lr)

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the seeds at `index` along the leading axis (the others have stopped)."""
        self.velocity = [v.index_select(0, index) for v in self.velocity]


OPTIMIZERS: dict[str, type] = {"rmsprop": KerasRMSprop}


def make_optimizer(params: list[torch.Tensor], config) -> Optimizer:
    """The optimiser that `config.kind` names in OPTIMIZERS, over `params`."""
    if config.kind not in OPTIMIZERS:
        raise ValueError(f"unknown optimiser {config.kind!r}; expected one of {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[config.kind](params, config)
