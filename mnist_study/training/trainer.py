"""Training: the paper's Keras protocol, for a stack of seeds at once, for any network of config.py's space.

Which path. A config in the paper's family (`TrainConfig.is_paper_family`: one ReLU layer, Keras'
RMSprop, cross-entropy, ...) trains on the paper's paths below; every other one on the general path
(general.py: any depth, activation, dropout, loss, optimiser, schedule, with the same protocol;
conv_epoch.py for a convolutional network, by autograd).

On the CPU a whole epoch runs in one call of the compiled kernel in kernels/fused_epoch.cpp (see
fused.py): no per-step overhead, products over just the batch's non-zero pixels, RMSprop in one pass
per parameter; `use_fused=True` insists on it (an error where it cannot be had), None (the default)
takes it where it can be had, False never. Elsewhere (CUDA), or without the kernel, the eager step
below runs: written by hand (forward, analytic gradients, foreach RMSprop) instead of autograd,
because for a network this small per-operation overhead dominates. `reference_train_epoch` is the
plain autograd + torch.optim.RMSprop version that the tests hold both fast paths to.

Protocol (Keras `model.fit` with the paper's callbacks):
- batches of 32 from a fresh permutation each epoch, the last batch smaller;
- loss = categorical cross-entropy + l2 * sum(hidden.kernel ** 2); the reported training loss and
  accuracy are averages over the epoch's batches, as Keras prints them;
- after each epoch, full passes over the validation split (its loss includes the penalty);
- EarlyStopping(monitor="val_accuracy", patience): stop once it has not strictly improved for
  `patience` epochs; ModelCheckpoint(save_best_only=True) keeps the weights with the lowest
  validation loss, and those are evaluated. Without early stopping the final weights are kept.
  Beyond the paper: monitor "val_loss" (strictly lower is better), keep "best_val_accuracy"
  (strictly higher), and `stop_at_train_loss` (stop once an epoch's training loss is at or below it).
- the learning rate of each epoch follows the schedule (schedules.py), set before its first step;
- `epoch_inputs(epoch)`, where given, supplies each epoch's training inputs (augmented images, say)
  in place of train.x: the same rows, labels and shape.
- a network whose epoch loss (training or validation) is NaN or infinite has diverged (too large a
  learning rate, say): like Keras' TerminateOnNaN it stops there, and that epoch is not recorded.
  It keeps its checkpoint if it has one, else the weights it had before the diverging epoch (the
  last finite ones: the initial weights when it diverged in epoch 1), and `diverged_epoch` says
  when it happened.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from mnist_study.training import fused
from mnist_study.training.config import TrainConfig
from mnist_study.training.conv import stem
from mnist_study.training.conv_epoch import ConvEpoch
from mnist_study.training.general import GeneralEpoch
from mnist_study.training.losses import loss_sum as _loss_sum
from mnist_study.training.losses import penalty as _penalty
from mnist_study.training.model import PARAM_NAMES, model_class, stack_params, unstack_params
from mnist_study.training.network import (attach_standardization, depth_of, find_activation, param_names,
                                          penalised_kernels, trained_names)
from mnist_study.training.optimizers import RMSpropConfig, make_optimizer
from mnist_study.training.schedules import lr_multiplier

__all__ = ["Split", "StackedTrainer", "TrainConfig", "TrainResult", "RMSpropConfig", "evaluate_stack",
           "reference_train_epoch", "train_seeds"]

SHUFFLE_SEED_OFFSET = 1_000_003  # seed + this seeds a seed's shuffling generator
DROPOUT_SEED_OFFSET = 2_000_003  # and seed + this its dropout masks'
EpochInputs = Callable[[int], torch.Tensor]  # epoch (1-based) -> that epoch's training inputs (N, D) float32


@dataclass
class Split:
    """Inputs (N, D) float32 and integer labels (N,) on one device."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class TrainResult:
    seed: int
    params: dict[str, torch.Tensor]  # one network, no seed axis; input.mean and input.scale where standardised
    history: dict[str, list[float]]
    epochs_run: int  # epochs recorded in `history`; a diverged seed's diverging epoch is not one
    best_epoch: int  # the epoch whose weights `params` are (0: the initial weights)
    seconds: float = 0.0
    diverged_epoch: int | None = None  # the epoch whose loss was NaN or infinite, if any


@dataclass
class _SeedState:
    seed: int
    generator: torch.Generator
    history: dict[str, list[float]] = field(
        default_factory=lambda: {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": []}
    )
    best_val_loss: float = math.inf
    best_val_accuracy: float = -math.inf
    wait: int = 0
    best_epoch: int = 0
    best_params: dict[str, torch.Tensor] | None = None
    stopped: bool = False
    diverged_epoch: int | None = None
    dropout_generator: torch.Generator | None = None  # the general path's dropout masks

    def record(self, epoch: int, loss: float, accuracy: float, val_loss: float, val_accuracy: float,
               config: TrainConfig) -> bool:
        """Log epoch `epoch` (1-based) and apply the callbacks; True when its weights are to be kept.

        ModelCheckpoint(save_best_only=True) keeps the lowest val_loss (keep "best_val_loss") or the
        highest val_accuracy (keep "best_val_accuracy"), strictly; EarlyStopping(monitor, patience)
        stops once val_accuracy has not strictly risen (or val_loss strictly fallen) for `patience`
        epochs; `stop_at_train_loss` stops once the epoch's training loss is at or below it.
        """
        for key, value in (("loss", loss), ("accuracy", accuracy), ("val_loss", val_loss),
                           ("val_accuracy", val_accuracy)):
            self.history[key].append(value)
        lower_loss, higher_accuracy = val_loss < self.best_val_loss, val_accuracy > self.best_val_accuracy
        self.best_val_loss = min(self.best_val_loss, val_loss)
        self.best_val_accuracy = max(self.best_val_accuracy, val_accuracy)
        keep = {"best_val_loss": lower_loss, "best_val_accuracy": higher_accuracy}.get(config.keep, False)
        if config.early_stopping:
            if higher_accuracy if config.monitor == "val_accuracy" else lower_loss:
                self.wait = 0
            else:
                self.wait += 1
                self.stopped = self.wait >= config.patience
        if config.stop_at_train_loss is not None and loss <= config.stop_at_train_loss:
            self.stopped = True
        if epoch >= config.max_epochs:
            self.stopped = True
        return keep or (self.stopped and config.keep == "final")


@torch.no_grad()
def evaluate_stack(params: dict[str, torch.Tensor], split: Split, l2: float, chunk: int = 10_000, *,
                   activation: str = "relu", loss: str = "cross_entropy", label_smoothing: float = 0.0,
                   l2_scope: str = "hidden") -> tuple[torch.Tensor, torch.Tensor]:
    """Loss (with the penalty, as Keras reports it) and accuracy of each network in a stack: (S,), (S,).

    Any depth; no dropout; the loss the networks train with (losses.py) plus l2 * sum(W^2) over the
    kernels of `l2_scope`. The defaults are the paper's.
    """
    f = find_activation(activation).function
    depth = depth_of(params)
    n_seeds = params["output.kernel"].shape[0]
    total = torch.zeros(n_seeds, dtype=torch.float64, device=split.x.device)
    correct = torch.zeros(n_seeds, dtype=torch.int64, device=split.x.device)
    for start in range(0, len(split), chunk):
        x, y = split.x[start:start + chunk], split.y[start:start + chunk]
        x = stem(params, x)  # a convolutional network's features (S, n, F); x itself for the others
        hidden = x
        for name in param_names(depth)[:-2:2]:
            hidden = f(torch.matmul(hidden, params[name]) + params[name.replace("kernel", "bias")])
        if depth:
            logits = torch.baddbmm(params["output.bias"], hidden, params["output.kernel"])
        else:
            logits = torch.matmul(x, params["output.kernel"]) + params["output.bias"]
        total += _loss_sum(logits, y, loss, label_smoothing).double()
        correct += (logits.argmax(-1) == y).sum(-1)
    penalty = l2 * _penalty(params, penalised_kernels(depth, l2_scope))
    return total / len(split) + penalty, correct.double() / len(split)


class StackedTrainer:
    """Trains S networks of one design together; each keeps its own init, shuffling, dropout and stopping.

    Any TrainConfig: the paper's family on the paper's paths (`use_fused` as above), every other
    config on the general path (general.py; conv_epoch.py for a convolutional network; `use_fused=True`
    is then an error). `paper` says which.
    """

    def __init__(self, config: TrainConfig, n_inputs: int, seeds: list[int], device: torch.device,
                 use_fused: bool | None = None):
        model = model_class(config.model)
        self.config = config.validate()
        self.device = device
        self.paper = config.is_paper_family
        self.kernel = self._fused_kernel(use_fused) if device.type == "cpu" else None  # CPU-only
        self.use_fused = self.kernel is not None
        self._pixel_masks: tuple[torch.Tensor, int, torch.Tensor] | None = None  # (inputs, their version, masks)
        self.states = [_SeedState(seed, torch.Generator().manual_seed(seed + SHUFFLE_SEED_OFFSET),
                                  dropout_generator=torch.Generator().manual_seed(seed + DROPOUT_SEED_OFFSET))
                       for seed in seeds]
        if self.paper:
            self.names = PARAM_NAMES
            params = stack_params([model.init_params(n_inputs, config.hidden, seed) for seed in seeds])
            self.general = None
        else:
            params = stack_params([model.init_network(n_inputs, config.layers, seed, config.init,
                                                      conv_channels=config.conv, kernel_size=config.kernel_size)
                                   for seed in seeds])
            self.names = trained_names(params)
            epoch_class = ConvEpoch if config.conv else GeneralEpoch
            self.general = epoch_class(config, n_inputs, device)
        self.params = {k: v.to(device) for k, v in params.items()}
        self.optimizer = make_optimizer([self.params[k] for k in self.names], config.optimizer)
        self._buffers: dict[tuple[int, int], dict[str, torch.Tensor]] = {}
        self._active = list(self.states)
        self._epoch_start: dict[str, torch.Tensor] | None = None  # the weights before this epoch
        self._epochs_started = 0

    def _fused_kernel(self, use_fused: bool | None) -> fused.Kernel | None:
        """The compiled epoch where asked for (True: or an error) or wanted (None: where it can be had)."""
        if use_fused is False:
            return None
        if not self.paper:
            if use_fused:
                raise ValueError("the fused training kernel trains the mlp with rmsprop only, in the paper's family; "
                                 f"not one with {', '.join(self.config.paper_differences())}")
            return None
        return fused.require() if use_fused else fused.load()

    @property
    def loss_settings(self) -> dict:
        """How the networks' validation loss is computed: evaluate_stack's keyword arguments."""
        c = self.config
        return {"activation": c.activation, "loss": c.loss, "label_smoothing": c.label_smoothing,
                "l2_scope": c.l2_scope}

    @property
    def active(self) -> list[_SeedState]:
        """The seeds still training, in the order of the stack's leading axis."""
        return self._active

    def _buffers_for(self, n_seeds: int, batch: int, n_inputs: int) -> dict[str, torch.Tensor]:
        key = (n_seeds, batch)
        if key not in self._buffers:
            h = self.config.hidden
            new = lambda *shape: torch.empty(*shape, device=self.device)  # noqa: E731
            self._buffers[key] = {
                "x": new(n_seeds * batch, n_inputs),
                "z1": new(n_seeds, batch, h),
                "h": new(n_seeds, batch, h),
                "z2": new(n_seeds, batch, 10),
                "dh": new(n_seeds, batch, h),
                "grads": [new(*self.params[k].shape) for k in PARAM_NAMES],
                "minus_one": torch.full((n_seeds, batch, 1), -1.0, device=self.device),
            }
        return self._buffers[key]

    def _step(self, train: Split, idx: torch.Tensor, y: torch.Tensor, n_seeds: int, batch: int,
              picked: torch.Tensor, predicted: torch.Tensor, penalty: torch.Tensor) -> None:
        """One optimiser step on batch rows `idx` (S * B,), seed-major, with labels y (S, B, 1).

        Keras' running metrics are not summed here: the step writes each image's probability of
        its label into `picked` (S, B, 1), its predicted class into `predicted` (S, B) and
        sum(W1^2) into `penalty` (S, 1, 1) -- three calls instead of ten -- and the epoch adds
        them up once at its end.
        """
        c, p = self.config, self.params
        buf = self._buffers_for(n_seeds, batch, train.x.shape[1])
        g_w1, g_b1, g_w2, g_b2 = buf["grads"]
        x = torch.index_select(train.x, 0, idx, out=buf["x"]).view(n_seeds, batch, -1)
        z1 = torch.baddbmm(p["hidden.bias"], x, p["hidden.kernel"], out=buf["z1"])
        h = torch.clamp_min(z1, 0.0, out=buf["h"])
        z2 = torch.baddbmm(p["output.bias"], h, p["output.kernel"], out=buf["z2"])
        proba = torch.softmax(z2, dim=-1)
        torch.gather(proba, -1, y, out=picked)
        torch.argmax(z2, dim=-1, out=predicted)
        if c.l2:
            w1 = p["hidden.kernel"].view(n_seeds, 1, -1)
            torch.bmm(w1, w1.transpose(1, 2), out=penalty)
        # d(mean CE)/d logits = (softmax - onehot) / B
        g_z2 = proba.scatter_add_(-1, y, buf["minus_one"]).mul_(1.0 / batch)
        torch.bmm(h.transpose(1, 2), g_z2, out=g_w2)
        torch.sum(g_z2, dim=1, keepdim=True, out=g_b2)
        dh = torch.bmm(g_z2, p["output.kernel"].transpose(1, 2), out=buf["dh"])
        dh.masked_fill_(z1 <= 0, 0.0)
        torch.bmm(x.transpose(1, 2), dh, out=g_w1)
        torch.sum(dh, dim=1, keepdim=True, out=g_b1)
        self.optimizer.step(buf["grads"], penalty=2 * c.l2)  # d(l2 * sum W1^2)/dW1 = 2 * l2 * W1

    def train_epoch(self, train: Split) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass over `train` for every active seed; returns Keras' epoch loss and accuracy (S,)."""
        active = self.active
        n_seeds, n, bs = len(active), len(train), self.config.batch_size
        c = self.config
        self._epochs_started += 1
        self.optimizer.lr = c.optimizer.lr * lr_multiplier(c.schedule, self._epochs_started, c.max_epochs)
        # What a seed keeps if this epoch diverges and it has no checkpoint; a copy of a small
        # network per seed, far cheaper than the epoch itself.
        needed = self.config.keep == "final" or any(s.best_params is None for s in active)
        self._epoch_start = {k: v.clone() for k, v in self.params.items()} if needed else None
        perms = torch.stack([torch.randperm(n, generator=s.generator) for s in active]).to(self.device)
        if self.general is not None:
            return self.general.run(self.params, self.optimizer, train.x, train.y, perms,
                                    [s.dropout_generator for s in active])
        if self.kernel is not None:
            return self._fused_epoch(train, perms)
        labels = train.y[perms].unsqueeze(-1)  # (S, N, 1), in each seed's order
        n_steps = (n + bs - 1) // bs
        picked = torch.empty(n_steps, n_seeds, bs, 1, device=self.device)
        predicted = torch.empty(n_steps, n_seeds, bs, dtype=torch.long, device=self.device)
        penalty = torch.zeros(n_steps, n_seeds, 1, 1, device=self.device)
        for step, start in enumerate(range(0, n, bs)):
            b = min(bs, n - start)
            self._step(train, perms[:, start:start + b].reshape(-1), labels[:, start:start + b], n_seeds, b,
                       picked[step, :, :b], predicted[step, :, :b], penalty[step])
        tail = n - (n_steps - 1) * bs  # the last batch may be short: its unused slots must not count
        picked[-1, :, tail:] = 1.0
        batch_sizes = torch.full((n_steps,), float(bs), device=self.device)
        batch_sizes[-1] = tail
        # Keras' epoch loss: the mean over batches of (mean cross-entropy + penalty), weighted by batch size
        loss_sum = -picked.log().sum(dim=(0, 2, 3)) + self.config.l2 * (penalty.view(n_steps, n_seeds)
                                                                       * batch_sizes[:, None]).sum(0)
        flat_predicted = predicted.transpose(0, 1).reshape(n_seeds, -1)[:, :n]
        correct = (flat_predicted == labels.squeeze(-1)).sum(1)
        return loss_sum / n, correct.double() / n

    def _fused_epoch(self, train: Split, perms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = train.x.contiguous(), train.y.long().contiguous()
        cached = self._pixel_masks
        # Once per training set: again for other inputs (epoch_inputs) or the same ones written over.
        if cached is None or cached[0] is not train.x or cached[1] != train.x._version:
            self._pixel_masks = cached = (train.x, train.x._version, self.kernel.pixel_masks(x))
        c = self.config
        loss_sum, correct = self.kernel.train_epoch(
            x=x, masks=cached[2], labels=y, perms=perms.contiguous(),
            params=[self.params[k] for k in PARAM_NAMES], velocity=self.optimizer.velocity,
            batch_size=c.batch_size, lr=c.optimizer.lr, rho=c.optimizer.rho, epsilon=c.optimizer.epsilon, l2=c.l2)
        return loss_sum / len(train), correct.double() / len(train)

    def end_epoch(self, epoch: int, train_metrics: tuple[torch.Tensor, torch.Tensor], validation: Split) -> None:
        """Record epoch `epoch` (1-based), checkpoint, apply early stopping, drop the seeds that stopped
        (and those whose training or validation loss is NaN or infinite: they diverged)."""
        c = self.config
        val_loss, val_acc = evaluate_stack(self.params, validation, c.l2, **self.loss_settings)
        rows = zip(train_metrics[0].tolist(), train_metrics[1].tolist(), val_loss.tolist(), val_acc.tolist())
        for i, (state, (loss, acc, v_loss, v_acc)) in enumerate(zip(self._active, rows)):
            if not (math.isfinite(loss) and math.isfinite(v_loss)):
                self._diverge(state, i, epoch)
                continue
            checkpoint = state.record(epoch, loss, acc, v_loss, v_acc, c)
            if checkpoint:
                state.best_params, state.best_epoch = unstack_params(self.params, i), epoch
        keep = [i for i, s in enumerate(self._active) if not s.stopped]
        if len(keep) < len(self._active):
            index = torch.tensor(keep, dtype=torch.long, device=self.device)
            for name in self.names:
                self.params[name] = self.params[name].index_select(0, index)
            self.optimizer.params = [self.params[k] for k in self.names]
            self.optimizer.keep(index)
            self._active = [self._active[i] for i in keep]
            self._buffers.clear()
            if self.general is not None:
                self.general.clear()

    def _diverge(self, state: _SeedState, index: int, epoch: int) -> None:
        """Stop seed `state` (row `index` of the stack), whose loss in epoch `epoch` is not finite."""
        state.stopped, state.diverged_epoch = True, epoch
        if state.best_params is None or self.config.keep == "final":
            if self._epoch_start is None:  # end_epoch called without train_epoch: nothing finite to keep
                raise RuntimeError("a diverged seed needs the weights from before its epoch; call train_epoch first")
            state.best_params, state.best_epoch = unstack_params(self._epoch_start, index), epoch - 1

    def fit(self, train: Split, validation: Split,
            on_epoch: Callable[[int, list[_SeedState]], None] | None = None,
            epoch_inputs: EpochInputs | None = None) -> list[TrainResult]:
        """Train until every seed has stopped; return each seed's kept weights and history.

        `epoch_inputs(epoch)`, where given, returns epoch `epoch`'s training inputs (N, D) float32 on
        the training device, used in place of train.x (train.y labels them); validation is untouched.
        """
        start = time.perf_counter()
        epoch = 0
        while self._active:
            epoch += 1
            data = train if epoch_inputs is None else _epoch_split(train, epoch_inputs(epoch), epoch)
            metrics = self.train_epoch(data)
            self.end_epoch(epoch, metrics, validation)
            if on_epoch is not None:
                on_epoch(epoch, self.states)
        seconds = time.perf_counter() - start
        return [
            TrainResult(s.seed, s.best_params, s.history, len(s.history["loss"]), s.best_epoch, seconds,
                        s.diverged_epoch)
            for s in self.states
        ]


def _epoch_split(train: Split, x: torch.Tensor, epoch: int) -> Split:
    """train with the inputs epoch_inputs gave for `epoch`, once they are checked to fit."""
    if not isinstance(x, torch.Tensor) or x.shape != train.x.shape or x.dtype != torch.float32 \
            or x.device != train.x.device:
        got = f"{tuple(x.shape)} {x.dtype} on {x.device}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"epoch_inputs({epoch}) gave {got}; expected the training inputs' shape "
                         f"{tuple(train.x.shape)}, float32, on {train.x.device}")
    return Split(x, train.y)


def train_seeds(config: TrainConfig, train: Split, validation: Split, seeds: list[int],
                device: torch.device | str = "cpu",
                on_epoch: Callable[[int, list[_SeedState]], None] | None = None,
                use_fused: bool | None = None, *,
                epoch_inputs: EpochInputs | None = None,
                standardize: tuple[torch.Tensor | np.ndarray, torch.Tensor | np.ndarray] | None = None
                ) -> list[TrainResult]:
    """Train one network per seed with the config's protocol, all seeds in one trainer.

    `epoch_inputs`: see StackedTrainer.fit. `standardize=(mean, scale)`, each (D,) or (1, D): the
    inputs of `train` and `validation` are already (x - mean) / scale; every result's params then
    carry them as input.mean and input.scale, so that the saved network (model.MLP) takes raw inputs.
    """
    trainer = StackedTrainer(config, train.x.shape[1], seeds, torch.device(device), use_fused)
    results = trainer.fit(train, validation, on_epoch, epoch_inputs)
    if standardize is not None:
        for result in results:
            result.params = attach_standardization(result.params, *standardize)
    return results


def reference_train_epoch(params: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer, train: Split,
                          perm: torch.Tensor, config: TrainConfig) -> None:
    """The plain way: autograd and torch.optim.RMSprop over one network (no seed axis)."""
    for start in range(0, len(train), config.batch_size):
        idx = perm[start:start + config.batch_size]
        x, y = train.x[idx], train.y[idx]
        hidden = torch.relu(x @ params["hidden.kernel"] + params["hidden.bias"])
        logits = hidden @ params["output.kernel"] + params["output.bias"]
        loss = torch.nn.functional.cross_entropy(logits, y)
        if config.l2:
            loss = loss + config.l2 * params["hidden.kernel"].pow(2).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
