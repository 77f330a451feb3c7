"""RMSprop exactly as Keras defines it.

    v <- rho * v + (1 - rho) * g^2
    w <- w - lr * g / (sqrt(v) + epsilon)

with v starting at zero and epsilon added *outside* the square root (Keras' defaults:
lr = 1e-3, rho = 0.9, epsilon = 1e-7). torch.optim.RMSprop(alpha=rho, eps=epsilon) computes the
same update; this version works on lists of tensors with torch._foreach_* kernels so that one
optimiser step over all parameters is a handful of calls instead of a Python loop. (On the CPU,
training normally runs the compiled epoch of kernels/fused_epoch.cpp, which applies the same update.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RMSpropConfig:
    lr: float = 1e-3
    rho: float = 0.9
    epsilon: float = 1e-7


class KerasRMSprop:
    """In-place RMSprop over a fixed list of parameter tensors."""

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
