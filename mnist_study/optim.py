"""RMSprop exactly as Keras defines it.

    v <- rho * v + (1 - rho) * g^2
    w <- w - lr * g / (sqrt(v) + epsilon)

with v starting at zero and epsilon added *outside* the square root (Keras' defaults:
lr = 1e-3, rho = 0.9, epsilon = 1e-7). torch.optim.RMSprop(alpha=rho, eps=epsilon) computes the
same update; this version works on lists of tensors with torch._foreach_* kernels so that one
optimiser step over all parameters is a handful of fused calls instead of a Python loop.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

# Above this many elements a tensor's optimiser state no longer fits in cache, and the six
# memory passes of the eager update cost more than the matrix products; one compiled, fused
# pass is then 2.5x faster (benchmarks/epoch_speed.py). Below it, the compiled call's own
# overhead does not pay.
FUSE_MIN_NUMEL = 200_000

_fused_update = None  # compiled lazily, once per process; False when compiling failed


def _rmsprop_update(p: torch.Tensor, g: torch.Tensor, v: torch.Tensor, lr: float, rho: float, eps: float,
                    penalty: float) -> None:
    g = g + penalty * p
    v.copy_(rho * v + (1 - rho) * g * g)
    p.sub_(lr * g / (v.sqrt() + eps))


def _compiled_update():
    global _fused_update
    if _fused_update is None:
        try:
            _fused_update = torch.compile(_rmsprop_update, dynamic=True)
        except Exception as error:  # no compiler toolchain: the eager path is exact, only slower
            warnings.warn(f"torch.compile unavailable ({error}); using the eager RMSprop update")
            _fused_update = False
    return _fused_update


@dataclass(frozen=True)
class RMSpropConfig:
    lr: float = 1e-3
    rho: float = 0.9
    epsilon: float = 1e-7


class KerasRMSprop:
    """In-place RMSprop over a fixed list of parameter tensors."""

    def __init__(self, params: list[torch.Tensor], config: RMSpropConfig = RMSpropConfig(), fuse: bool = True):
        self.params = params
        self.config = config
        self.velocity = [torch.zeros_like(p) for p in params]
        self.fuse = fuse

    def step(self, grads: list[torch.Tensor], penalty: float = 0.0) -> None:
        """One update; `penalty` adds the L2 gradient penalty * params[0] to grads[0] first."""
        c = self.config
        fused = (_compiled_update() if self.fuse and self.params[0].device.type == "cpu"
                 and self.params[0].numel() >= FUSE_MIN_NUMEL else None)
        if fused:
            try:
                fused(self.params[0], grads[0], self.velocity[0], c.lr, c.rho, c.epsilon, penalty)
            except Exception as error:  # a compiler that fails at run time: fall back for good
                global _fused_update
                warnings.warn(f"fused RMSprop failed ({error}); using the eager update")
                _fused_update = False
                fused = None
                grads[0].add_(self.params[0], alpha=penalty)
            else:
                params, grads, velocity = self.params[1:], grads[1:], self.velocity[1:]
        if not fused:
            if penalty:
                grads[0].add_(self.params[0], alpha=penalty)
            params, velocity = self.params, self.velocity
        torch._foreach_mul_(velocity, c.rho)
        torch._foreach_addcmul_(velocity, grads, grads, value=1 - c.rho)
        denom = torch._foreach_sqrt(velocity)
        torch._foreach_add_(denom, c.epsilon)
        torch._foreach_addcdiv_(params, grads, denom, value=-c.lr)

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the seeds at `index` along the leading axis (the others have stopped)."""
        self.velocity = [v.index_select(0, index) for v in self.velocity]
