"""One training epoch of a stack of convolutional networks ("cnn"), seeds side by side, by autograd.

The Dense networks train in general.py with a hand-written backward pass, because for them the
per-operation overhead of autograd is most of a step. A convolutional network's step is dominated
by its convolutions, so here autograd computes the gradients: the stack's forward pass (conv.py's
grouped convolutions, then a torch.bmm per Dense layer) and one backward pass for all seeds. The
summed loss is the sum of the seeds' own batch losses, so each seed's gradient is its own.

The rest is general.py's protocol: each seed its own permutation, dropout masks on the Dense
hidden layers from its own generator (inverted dropout), the loss of config.loss plus l2 * sum(W^2)
over the kernels of l2_scope (Dense kernels only: the convolutions are not penalised), and the
optimiser of the stack stepping every seed's slice on its own.
"""

from __future__ import annotations

import torch

from mnist_study.training import conv
from mnist_study.training.config import TrainConfig
from mnist_study.training.losses import check_loss, per_example
from mnist_study.training.network import find_activation, layer_names, penalised_kernels, trained_names


class ConvEpoch:
    """Trains a stack of convolutional networks of one design, one epoch per call of `run`."""

    def __init__(self, config: TrainConfig, n_inputs: int, device: torch.device):
        check_loss(config.loss)
        if n_inputs != conv.N_PIXELS:
            raise ValueError(f"a convolutional network takes {conv.N_PIXELS}-pixel images, not {n_inputs} inputs; "
                             "use the raw-pixel front-end")
        self.config = config
        self.device = device
        self.depth = len(config.layers)
        self.activation = find_activation(config.activation).function
        self.rates = tuple(config.dropout) or (0.0,) * self.depth
        self.penalised = penalised_kernels(self.depth, config.l2_scope) if config.l2 else ()

    def clear(self) -> None:
        """Nothing is kept between epochs (the interface of general.GeneralEpoch)."""

    def run(self, params: dict[str, torch.Tensor], optimizer, x: torch.Tensor, y: torch.Tensor,
            perms: torch.Tensor, dropout_generators: list[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass over (x (N, 784), y (N,)) in each seed's order perms (S, N), updating params in place.

        Returns Keras' epoch metrics per seed: the batch-size-weighted mean of the batch losses
        (penalty included), float64 (S,), and the fraction classified right during the epoch (S,).
        """
        c = self.config
        names = trained_names(params)
        # Leaves that share the parameters' memory: autograd reads the values the optimiser writes in place.
        leaves = {name: params[name].detach().requires_grad_(True) for name in names}
        ordered = [leaves[name] for name in names]
        n_seeds, n = perms.shape
        loss_sum = torch.zeros(n_seeds, dtype=torch.float64, device=self.device)
        correct = torch.zeros(n_seeds, dtype=torch.int64, device=self.device)
        for start in range(0, n, c.batch_size):
            idx = perms[:, start:start + c.batch_size]  # (S, B): each seed's own images
            labels = y[idx]
            outputs = self._forward(leaves, x[idx], dropout_generators)
            loss = per_example(outputs, labels, c.loss, c.label_smoothing).mean(dim=1)  # (S,)
            for name in self.penalised:
                loss = loss + c.l2 * leaves[name].pow(2).sum(dim=(1, 2))
            grads = torch.autograd.grad(loss.sum(), ordered)
            optimizer.step(list(grads))
            with torch.no_grad():
                loss_sum += loss.detach().double() * idx.shape[1]
                correct += (outputs.argmax(-1) == labels).sum(dim=1)
        return loss_sum / n, correct.double() / n

    def _forward(self, params: dict[str, torch.Tensor], x: torch.Tensor,
                 dropout_generators: list[torch.Generator]) -> torch.Tensor:
        """Outputs (S, B, C) of each seed's batch x (S, B, 784), with dropout."""
        h = conv.stem(params, x)
        for layer, rate in zip(layer_names(self.depth)[:-1], self.rates):
            h = self.activation(torch.baddbmm(params[f"{layer}.bias"], h, params[f"{layer}.kernel"]))
            if rate:
                h = h * self._mask(dropout_generators, h.shape[1:], rate)
        return torch.baddbmm(params["output.bias"], h, params["output.kernel"])

    def _mask(self, generators: list[torch.Generator], shape: torch.Size, rate: float) -> torch.Tensor:
        """Inverted-dropout multipliers (S, B, H): 0 for a dropped unit, 1 / (1 - rate) for a kept one,
        each seed's drawn (on the CPU) from its own generator."""
        draws = torch.stack([torch.rand(shape, generator=g) for g in generators])
        return (draws >= rate).to(self.device, torch.float32).mul_(1.0 / (1.0 - rate))
