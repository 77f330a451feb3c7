"""Optimisers over a stack of seeds: each parameter is one tensor with a leading seed axis.

Every optimiser works on lists of tensors with torch._foreach_* kernels, so that one step over all
parameters is a handful of calls instead of a Python loop, and each is elementwise: the update of
one seed's slice never reads another's, so a stack of S networks steps exactly as S networks
stepped one by one.

RMSprop exactly as Keras defines it (the paper's):

    v <- rho * v + (1 - rho) * g^2
    w <- w - lr * g / (sqrt(v) + epsilon)

with v starting at zero and epsilon added *outside* the square root (Keras' defaults:
lr = 1e-3, rho = 0.9, epsilon = 1e-7). torch.optim.RMSprop(alpha=rho, eps=epsilon) computes the
same update. (On the CPU, the paper's network normally trains in the compiled epoch of
kernels/fused_epoch.cpp, which applies the same update.)

SGD, Adam and AdamW are torch.optim.SGD / Adam / AdamW (dampening 0, no amsgrad). Where PyTorch
has its fused multi-tensor kernels for the parameters' device (the CPU and CUDA, float32), they run
those (torch._fused_sgd_, _fused_adam_, _fused_adamw_): one pass over memory per parameter instead of
the five to seven of the foreach formulas, which for Adam is most of a small network's step. That
is torch.optim's `fused=True` to the last bit, and within a rounding error of its default (the
per-tensor formulas, which SGD's fused kernel matches exactly); elsewhere, or with `fused=False`,
the same formulas run as foreach calls in torch's order (tests/test_train_design.py holds every
variant to torch.optim).

Optimisers are registered by name in OPTIMIZERS, each with its settings as a frozen dataclass
(config.py) whose `kind` is that name; the trainer builds one with `make_optimizer(params, config)`.
Adding an optimiser is one class (constructed from the parameter list and its config, with a
mutable `lr`, `step(grads, penalty)` and `keep(index)`) plus one entry here. `lr` starts at the
config's and is what the step uses: the trainer sets it each epoch from the schedule.
"""

from __future__ import annotations

from typing import Protocol

import torch

from mnist_study.training.config import AdamConfig, RMSpropConfig, SGDConfig

__all__ = ["OPTIMIZERS", "Adam", "AdamConfig", "AdamW", "KerasRMSprop", "Optimizer", "RMSpropConfig", "SGD",
           "SGDConfig", "fused_kernels_for", "make_optimizer"]


class Optimizer(Protocol):
    """What the trainer needs of an optimiser over a stack of seeds (leading axis of each tensor)."""

    params: list[torch.Tensor]
    lr: float

    def step(self, grads: list[torch.Tensor], penalty: float = 0.0) -> None: ...

    def keep(self, index: torch.Tensor) -> None: ...


def _add_penalty(params: list[torch.Tensor], grads: list[torch.Tensor], penalty: float) -> None:
    """The paper's L2 gradient: `penalty` * params[0] added to grads[0] (the hidden kernel)."""
    if penalty:
        grads[0].add_(params[0], alpha=penalty)


def _keep(tensors: list[torch.Tensor] | None, index: torch.Tensor) -> list[torch.Tensor] | None:
    return None if tensors is None else [t.index_select(0, index) for t in tensors]


def fused_kernels_for(params: list[torch.Tensor]) -> bool:
    """Whether PyTorch has its fused optimiser kernels for these parameters (device and dtype)."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:  # an older or newer PyTorch without it: the foreach formulas
        return False
    devices = _get_fused_kernels_supported_devices()
    return all(p.device.type in devices and p.dtype == torch.float32 for p in params)


class KerasRMSprop:
    """In-place RMSprop over a fixed list of parameter tensors."""

    config_class = RMSpropConfig  # its settings: what a config names by `kind`

    def __init__(self, params: list[torch.Tensor], config: RMSpropConfig = RMSpropConfig()):
        self.params = params
        self.config = config
        self.lr = config.lr
        self.velocity = [torch.zeros_like(p) for p in params]

    def step(self, grads: list[torch.Tensor], penalty: float = 0.0) -> None:
        """One update; `penalty` adds the L2 gradient penalty * params[0] to grads[0] first."""
        c = self.config
        _add_penalty(self.params, grads, penalty)
        torch._foreach_mul_(self.velocity, c.rho)
        torch._foreach_addcmul_(self.velocity, grads, grads, value=1 - c.rho)
        denom = torch._foreach_sqrt(self.velocity)
        torch._foreach_add_(denom, c.epsilon)
        torch._foreach_addcdiv_(self.params, grads, denom, value=-self.lr)

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the seeds at `index` along the leading axis (the others have stopped)."""
        self.velocity = _keep(self.velocity, index)


class SGD:
    """torch.optim.SGD(lr, momentum, nesterov): buf <- momentum * buf + g (buf = g at the first step);
    w <- w - lr * (g + momentum * buf if nesterov else buf); plain SGD without momentum."""

    config_class = SGDConfig

    def __init__(self, params: list[torch.Tensor], config: SGDConfig = SGDConfig(), fused: bool | None = None):
        if config.nesterov and config.momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0 (as torch.optim.SGD)")
        self.params = params
        self.config = config
        self.lr = config.lr
        self.fused = fused_kernels_for(params) if fused is None else fused
        self.momentum_buffer: list[torch.Tensor] | None = None  # made at the first step, as torch does

    def step(self, grads: list[torch.Tensor], penalty: float = 0.0) -> None:
        c = self.config
        _add_penalty(self.params, grads, penalty)
        if self.fused and c.momentum:
            first = self.momentum_buffer is None
            if first:
                self.momentum_buffer = [torch.empty_like(g) for g in grads]
            torch._fused_sgd_(self.params, grads, self.momentum_buffer, weight_decay=0.0, momentum=c.momentum,
                              lr=self.lr, dampening=0.0, nesterov=c.nesterov, maximize=False, is_first_step=first)
            return
        update = grads
        if c.momentum:
            if self.momentum_buffer is None:
                self.momentum_buffer = [g.detach().clone() for g in grads]
            else:
                torch._foreach_mul_(self.momentum_buffer, c.momentum)
                torch._foreach_add_(self.momentum_buffer, grads)
            if c.nesterov:
                torch._foreach_add_(grads, self.momentum_buffer, alpha=c.momentum)
            else:
                update = self.momentum_buffer
        torch._foreach_add_(self.params, update, alpha=-self.lr)

    def keep(self, index: torch.Tensor) -> None:
        self.momentum_buffer = _keep(self.momentum_buffer, index)


class Adam:
    """torch.optim.Adam(lr, betas, eps, weight_decay): m <- lerp(m, g, 1 - b1), v <- b2 v + (1 - b2) g^2,
    w <- w - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps). Its weight_decay adds
    weight_decay * w to the gradient first (coupled, like `l2`)."""

    config_class = AdamConfig
    decoupled = False  # AdamW: weight decay applied to the weights, not the gradient

    def __init__(self, params: list[torch.Tensor], config: AdamConfig = AdamConfig(), fused: bool | None = None):
        self.params = params
        self.config = config
        self.lr = config.lr
        self.fused = fused_kernels_for(params) if fused is None else fused
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        self.steps = 0  # every seed of the stack has taken the same number of steps
        self._step_count = torch.zeros((), device=params[0].device if params else None)  # the fused kernels read it
        self._denom = None if self.fused else [torch.empty_like(p) for p in params]

    def step(self, grads: list[torch.Tensor], penalty: float = 0.0) -> None:
        c = self.config
        beta1, beta2 = c.betas
        _add_penalty(self.params, grads, penalty)
        self.steps += 1
        if self.fused:
            self._step_count.fill_(float(self.steps))  # one count, read (never written) for every tensor
            kernel = torch._fused_adamw_ if self.decoupled else torch._fused_adam_
            kernel(self.params, grads, self.exp_avg, self.exp_avg_sq, [], [self._step_count] * len(self.params),
                   lr=self.lr, beta1=beta1, beta2=beta2, weight_decay=c.weight_decay, eps=c.epsilon, amsgrad=False,
                   maximize=False)
            return
        if c.weight_decay:
            if self.decoupled:
                torch._foreach_mul_(self.params, 1 - self.lr * c.weight_decay)
            else:
                grads = torch._foreach_add(grads, self.params, alpha=c.weight_decay)
        torch._foreach_lerp_(self.exp_avg, grads, 1 - beta1)
        torch._foreach_mul_(self.exp_avg_sq, beta2)
        torch._foreach_addcmul_(self.exp_avg_sq, grads, grads, 1 - beta2)
        t = float(self.steps)  # torch keeps the step count as a float tensor
        step_size = (self.lr / (1 - beta1 ** t)) * -1
        for v, d in zip(self.exp_avg_sq, self._denom):
            torch.sqrt(v, out=d)
        torch._foreach_div_(self._denom, (1 - beta2 ** t) ** 0.5)
        torch._foreach_add_(self._denom, c.epsilon)
        torch._foreach_addcdiv_(self.params, self.exp_avg, self._denom, step_size)

    def keep(self, index: torch.Tensor) -> None:
        self.exp_avg = _keep(self.exp_avg, index)
        self.exp_avg_sq = _keep(self.exp_avg_sq, index)
        self._denom = None if self._denom is None else [torch.empty_like(v) for v in self.exp_avg]


class AdamW(Adam):
    """torch.optim.AdamW: Adam with decoupled weight decay, w <- w * (1 - lr * weight_decay) before the
    update (AdamConfig's weight_decay; torch's default is 1e-2, ours 0)."""

    decoupled = True


OPTIMIZERS: dict[str, type] = {"rmsprop": KerasRMSprop, "sgd": SGD, "adam": Adam, "adamw": AdamW}


def make_optimizer(params: list[torch.Tensor], config) -> Optimizer:
    """The optimiser that `config.kind` names in OPTIMIZERS, over `params`.

    The settings must be of the class that optimiser takes (its `config_class`): an AdamConfig for
    "adam" and "adamw", and so on.
    """
    names = ", ".join(OPTIMIZERS)
    kind = getattr(config, "kind", None)
    if kind not in OPTIMIZERS:
        raise ValueError(f"unknown optimiser {kind!r}; expected one of {names}")
    cls = OPTIMIZERS[kind]
    expected = getattr(cls, "config_class", None)
    if expected is not None and not isinstance(config, expected):
        raise ValueError(f"unknown optimiser {kind!r}; expected one of {names}, each set by its own settings "
                         f"class: {kind!r} by {expected.__name__}, not {type(config).__name__}")
    return cls(params, config)
