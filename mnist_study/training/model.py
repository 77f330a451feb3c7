"""The network of the paper: Dense(H, ReLU) -> Dense(10, softmax), with Keras' initialisation.

Parameters are plain tensors in a dict, Keras-style kernels of shape (inputs, outputs), so that a
stack of S independently initialised networks is the same dict with a leading seed axis:

    hidden.kernel (S, D, H)   hidden.bias (S, 1, H)   output.kernel (S, H, C)   output.bias (S, 1, C)

Models are registered by name in MODELS. A model class names its parameters (`param_names`),
initialises one network (`init_params(n_inputs, hidden, seed)`), and, built from trained
parameters, is the network for inference; the trainer finds it with `model_class(name)`. The
hand-written eager step and the compiled epoch in trainer.py are the "mlp"'s.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from mnist_study.data.digits import N_CLASSES
from mnist_study.errors import RunError

PARAM_NAMES = ("hidden.kernel", "hidden.bias", "output.kernel", "output.bias")


def glorot_uniform(fan_in: int, fan_out: int, generator: torch.Generator) -> torch.Tensor:
    """Keras' default kernel initialiser: U(-a, a) with a = sqrt(6 / (fan_in + fan_out))."""
    limit = (6.0 / (fan_in + fan_out)) ** 0.5
    return (torch.rand(fan_in, fan_out, generator=generator, dtype=torch.float32) * 2 - 1) * limit


def init_params(n_inputs: int, hidden: int, seed: int, n_classes: int = N_CLASSES) -> dict[str, torch.Tensor]:
    """One network's parameters (no seed axis): Glorot-uniform kernels, zero biases."""
    generator = torch.Generator().manual_seed(seed)
    return {
        "hidden.kernel": glorot_uniform(n_inputs, hidden, generator),
        "hidden.bias": torch.zeros(1, hidden),
        "output.kernel": glorot_uniform(hidden, n_classes, generator),
        "output.bias": torch.zeros(1, n_classes),
    }


def stack_params(params: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack single networks along a new leading seed axis."""
    return {name: torch.stack([p[name] for p in params]) for name in PARAM_NAMES}


def unstack_params(stacked: dict[str, torch.Tensor], index: int) -> dict[str, torch.Tensor]:
    """Copy network `index` out of a stack, on the CPU."""
    return {name: stacked[name][index].detach().cpu().clone() for name in PARAM_NAMES}


def forward(params: dict[str, torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden activations (..., N, H) and class logits (..., N, C) of inputs x (N, D).

    Works for a single network and, by broadcasting, for a stack of S networks.
    """
    hidden = torch.relu(torch.matmul(x, params["hidden.kernel"]) + params["hidden.bias"])
    logits = torch.matmul(hidden, params["output.kernel"]) + params["output.bias"]
    return hidden, logits


class MLP:
    """The one-hidden-layer network; built from trained parameters, it serves inference: numpy in, numpy out."""

    param_names = PARAM_NAMES
    init_params = staticmethod(init_params)

    def __init__(self, params: dict[str, torch.Tensor]):
        self.params = {name: params[name].detach().cpu().float() for name in PARAM_NAMES}

    @property
    def n_inputs(self) -> int:
        return self.params["hidden.kernel"].shape[0]

    @property
    def hidden_width(self) -> int:
        return self.params["hidden.kernel"].shape[1]

    @torch.no_grad()
    def _batches(self, x: np.ndarray, batch_size: int):
        """(hidden (n, H), probabilities (n, 10)) for each slice of `batch_size` inputs."""
        for start in range(0, len(x), batch_size):
            hidden, logits = forward(self.params, torch.as_tensor(np.asarray(x[start:start + batch_size], np.float32)))
            yield hidden.numpy(), torch.softmax(logits, dim=-1).numpy()

    def hidden_and_proba(self, x: np.ndarray, batch_size: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
        """Hidden activations (N, H) and class probabilities (N, 10) for inputs x (N, D) in [0, 1]."""
        parts = list(self._batches(x, batch_size))
        if not parts:
            return np.zeros((0, self.hidden_width), np.float32), np.zeros((0, N_CLASSES), np.float32)
        return np.concatenate([h for h, _ in parts]), np.concatenate([p for _, p in parts])

    def predict_proba(self, x: np.ndarray, batch_size: int = 10_000) -> np.ndarray:
        """Class probabilities (N, 10); unlike hidden_and_proba, keeps no (N, H) activations."""
        parts = [proba for _, proba in self._batches(x, batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, N_CLASSES), np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.predict_proba(x).argmax(axis=1)

    def save(self, path: str | Path) -> None:
        from mnist_study.files import atomic_path

        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in self.params.items()}, str(tmp))

    @classmethod
    def load(cls, path: str | Path) -> "MLP":
        tensors = load_file(str(path))
        missing = [name for name in PARAM_NAMES if name not in tensors]
        if missing:
            raise RunError(f"{path} is not a saved network: it lacks {', '.join(missing)}; "
                           f"delete its seed folder and finish the run with `mnist-study run --resume RUN_DIR`")
        return cls(tensors)


MODELS: dict[str, type] = {"mlp": MLP}


def model_class(name: str) -> type:
    """The model registered as `name` in MODELS."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")
    return MODELS[name]
