"""The general path: one training epoch of a stack of networks of any design, seeds side by side.

The paper's network trains in the compiled epoch or the hand-written eager step of trainer.py;
everything else in the design space of config.TrainConfig (depth 0 to 4, any activation, dropout,
initialiser, loss, L2 scope, optimiser, schedule) trains here. S networks share each step: their
parameters are stacked on a leading seed axis and every product is one torch.baddbmm / torch.bmm
over the stack, each network with its own batch (its own permutation), its own dropout masks and
its own optimiser state.

The backward pass is written out by hand (as the paper's eager step is) rather than left to
autograd: for networks this small the per-operation overhead of autograd is most of a step. It
calls the same kernels autograd would (bmm, the aten activation backwards), and
`reference_epoch` below, plain autograd over one network at a time, is what the tests hold it to.

Dropout is inverted (kept units scaled by 1 / (1 - rate) in training, nothing at evaluation). Each
seed draws its masks from a generator of its own, for the whole epoch in chunks of CHUNK_STEPS
steps, so that what a seed draws never depends on the seeds beside it in the stack.
"""

from __future__ import annotations

import torch

from mnist_study.training.config import TrainConfig
from mnist_study.training.losses import check_loss, per_example, targets
from mnist_study.training.network import find_activation, layer_names, param_names, penalised_kernels

CHUNK_STEPS = 64  # dropout masks are drawn this many steps at a time


class GeneralEpoch:
    """Trains a stack of networks of one design, one epoch per call of `run`."""

    def __init__(self, config: TrainConfig, n_inputs: int, device: torch.device):
        check_loss(config.loss)
        self.config = config
        self.device = device
        self.depth = len(config.layers)
        self.names = param_names(self.depth)
        self.widths = [n_inputs, *config.layers]
        self.activation = find_activation(config.activation)
        self.rates = tuple(config.dropout) or (0.0,) * self.depth
        kernels = penalised_kernels(self.depth, config.l2_scope) if config.l2 else ()
        self.penalised = [self.names.index(k) for k in kernels]
        self._buffers: dict[tuple[int, int], dict] = {}

    def clear(self) -> None:
        """Forget the work buffers (seeds have stopped: the next epoch's stack is smaller)."""
        self._buffers.clear()

    def _buffers_for(self, n_seeds: int, batch: int, params: list[torch.Tensor]) -> dict:
        key = (n_seeds, batch)
        if key not in self._buffers:
            new = lambda *shape: torch.empty(*shape, device=self.device)  # noqa: E731
            hidden = self.widths[1:]
            self._buffers[key] = {
                "x": new(n_seeds * batch, self.widths[0]),
                "z": [new(n_seeds, batch, h) for h in hidden],         # pre-activations
                "h": [new(n_seeds, batch, h) for h in hidden],         # activations
                "a": [new(n_seeds, batch, h) if p else None for h, p in zip(hidden, self.rates)],  # after dropout
                "da": [new(n_seeds, batch, h) for h in hidden],        # gradients flowing back
                "out": new(n_seeds, batch, params[-1].shape[-1]),
                "g": new(n_seeds, batch, params[-1].shape[-1]),
                "grads": [new(*p.shape) for p in params],
            }
        return self._buffers[key]

    def _masks(self, generators: list[torch.Generator], steps: int, batch: int) -> list[torch.Tensor | None]:
        """Each hidden layer's dropout masks (S, steps, batch, H) for the next `steps` steps: 0 for a
        dropped unit, 1 / (1 - rate) for a kept one; None for a layer without dropout."""
        n_seeds = len(generators)
        key = ("masks", n_seeds, batch)
        if key not in self._buffers:  # drawn on the CPU (the seeds' generators), then moved
            self._buffers[key] = [torch.empty(n_seeds, CHUNK_STEPS, batch, h) if p else None
                                  for h, p in zip(self.widths[1:], self.rates)]
        masks = self._buffers[key]
        for seed, generator in enumerate(generators):  # seed by seed, layer by layer: each seed's stream is its own
            for mask, rate in zip(masks, self.rates):
                if rate:
                    mask[seed, :steps].uniform_(generator=generator)  # as torch.rand(steps, batch, H)
        for mask, rate in zip(masks, self.rates):
            if rate:
                mask.ge_(rate).mul_(1.0 / (1.0 - rate))  # uniform >= rate: kept, with probability 1 - rate
        return [m.to(self.device) if m is not None else None for m in masks]

    def run(self, params: dict[str, torch.Tensor], optimizer, x: torch.Tensor, y: torch.Tensor,
            perms: torch.Tensor, dropout_generators: list[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass over (x (N, D), y (N,)) in each seed's order perms (S, N), updating params in place.

        Returns Keras' epoch metrics per seed: the batch-size-weighted mean of the batch losses
        (penalty included), float64 (S,), and the fraction classified right during the epoch (S,).
        """
        c = self.config
        plist = [params[k] for k in self.names]
        n_seeds, n = perms.shape
        bs = c.batch_size
        n_steps = (n + bs - 1) // bs
        n_classes = plist[-1].shape[-1]
        padded = torch.zeros(n_seeds, n_steps * bs, dtype=torch.long, device=self.device)
        padded[:, :n] = y[perms]
        labels = padded.view(n_seeds, n_steps, bs).transpose(0, 1).contiguous()  # (steps, S, B)
        target = targets(labels, n_classes, c.label_smoothing)                     # (steps, S, B, C)
        outputs = torch.zeros(n_steps, n_seeds, bs, n_classes, device=self.device)
        penalty = torch.zeros(n_steps, n_seeds, 1, 1, device=self.device)
        masks: list[torch.Tensor | None] = []
        for step, start in enumerate(range(0, n, bs)):
            if step % CHUNK_STEPS == 0 and any(self.rates):
                masks = self._masks(dropout_generators, min(CHUNK_STEPS, n_steps - step), bs)
            b = min(bs, n - start)
            step_masks = [m[:, step % CHUNK_STEPS, :b] if m is not None else None for m in masks] or [None] * self.depth
            self._step(plist, optimizer, x, perms[:, start:start + b].reshape(-1), target[step, :, :b],
                       step_masks, outputs[step, :, :b], penalty[step], n_seeds, b)
        tail = n - (n_steps - 1) * bs  # the last batch may be short: its unused slots must not count
        losses = per_example(outputs, labels, c.loss, c.label_smoothing)  # (steps, S, B)
        losses[-1, :, tail:] = 0.0
        batch_sizes = torch.full((n_steps,), float(bs), device=self.device)
        batch_sizes[-1] = tail
        loss_sum = losses.double().sum(dim=(0, 2))
        if self.penalised:
            loss_sum += c.l2 * (penalty.view(n_steps, n_seeds).double() * batch_sizes[:, None].double()).sum(0)
        right = outputs.argmax(-1) == labels
        right[-1, :, tail:] = False
        return loss_sum / n, right.sum(dim=(0, 2)).double() / n

    def _step(self, plist: list[torch.Tensor], optimizer, x_all: torch.Tensor, idx: torch.Tensor,
              target: torch.Tensor, masks: list[torch.Tensor | None], outputs: torch.Tensor, penalty: torch.Tensor,
              n_seeds: int, b: int) -> None:
        """One optimiser step on batch rows `idx` (S * B,), seed-major; writes the outputs (S, B, C)
        and, with a penalty, sum(W^2) over the penalised kernels (S, 1, 1) before the update."""
        c, act = self.config, self.activation
        buf = self._buffers_for(n_seeds, b, plist)
        grads = buf["grads"]
        x = torch.index_select(x_all, 0, idx, out=buf["x"]).view(n_seeds, b, -1)
        inputs = [x]  # what each layer multiplies: the input, then each hidden layer's (dropped-out) activations
        for layer in range(self.depth):
            z = torch.baddbmm(plist[2 * layer + 1], inputs[-1], plist[2 * layer], out=buf["z"][layer])
            h = act.forward(z, buf["h"][layer])
            if masks[layer] is not None:
                h = torch.mul(h, masks[layer], out=buf["a"][layer])
            inputs.append(h)
        direct = outputs.is_contiguous()  # a full batch: straight into the epoch's record
        out = torch.baddbmm(plist[-1], inputs[-1], plist[-2], out=outputs if direct else buf["out"])
        if not direct:
            outputs.copy_(out)
        if c.loss == "cross_entropy":  # d(mean loss)/d outputs, the target smoothed where asked
            g = torch.softmax(out, dim=-1).sub_(target).mul_(1.0 / b)
        else:
            g = torch.sub(out, target, out=buf["g"]).mul_(2.0 / b)
        for i, k in enumerate(self.penalised):  # the penalty of the weights this step starts from
            w = plist[k].view(n_seeds, 1, -1)
            if i == 0:
                torch.bmm(w, w.transpose(1, 2), out=penalty)
            else:
                penalty.baddbmm_(w, w.transpose(1, 2))
        for layer in range(self.depth, -1, -1):  # the output layer, then the hidden ones back to the input
            torch.bmm(inputs[layer].transpose(1, 2), g, out=grads[2 * layer])
            torch.sum(g, dim=1, keepdim=True, out=grads[2 * layer + 1])
            if layer == 0:
                break
            da = torch.bmm(g, plist[2 * layer].transpose(1, 2), out=buf["da"][layer - 1])
            if masks[layer - 1] is not None:
                da.mul_(masks[layer - 1])
            g = act.backward(da, buf["z"][layer - 1], buf["h"][layer - 1])
        if self.penalised:  # d(l2 * sum W^2)/dW = 2 * l2 * W
            torch._foreach_add_([grads[k] for k in self.penalised], [plist[k] for k in self.penalised],
                                alpha=2 * c.l2)
        optimizer.step(grads)


def reference_epoch(params: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer, x: torch.Tensor,
                    y: torch.Tensor, perm: torch.Tensor, config: TrainConfig,
                    masks: list[torch.Tensor | None] | None = None) -> None:
    """The plain way, for one network (no seed axis): autograd, torch's own losses, torch.optim.

    `masks`, where given, are the dropout masks (N, H) of each hidden layer in the order of `perm`
    (as scaled multipliers); the loss is torch.nn.functional.cross_entropy(label_smoothing) or
    the summed squared error against smoothed one-hot targets, plus the L2 penalty.
    """
    depth = len(config.layers)
    f = find_activation(config.activation).function
    kernels = penalised_kernels(depth, config.l2_scope)
    for start in range(0, len(perm), config.batch_size):
        idx = perm[start:start + config.batch_size]
        h = x[idx]
        for i, layer in enumerate(layer_names(depth)[:-1]):
            h = f(h @ params[f"{layer}.kernel"] + params[f"{layer}.bias"])
            if masks is not None and masks[i] is not None:
                h = h * masks[i][start:start + len(idx)]
        out = h @ params["output.kernel"] + params["output.bias"]
        if config.loss == "cross_entropy":
            loss = torch.nn.functional.cross_entropy(out, y[idx], label_smoothing=config.label_smoothing)
        else:
            t = targets(y[idx], out.shape[-1], config.label_smoothing)
            loss = torch.nn.functional.mse_loss(out, t, reduction="sum") / len(idx)
        if config.l2:
            loss = loss + config.l2 * sum(params[k].pow(2).sum() for k in kernels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
