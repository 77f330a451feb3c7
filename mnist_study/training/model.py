"""The network of the paper, Dense(H, ReLU) -> Dense(10, softmax), and the MLP family around it.

Parameters are plain tensors in a dict, Keras-style kernels of shape (inputs, outputs), so that a
stack of S independently initialised networks is the same dict with a leading seed axis:

    hidden.kernel (S, D, H)   hidden.bias (S, 1, H)   output.kernel (S, H, C)   output.bias (S, 1, C)

Deeper networks add hidden2 ... hidden4, a network of depth 0 has only the output layer, and a
network may carry input.mean and input.scale to standardise its inputs (network.py names them all).

Models are registered by name in MODELS. A model class names the paper's parameters
(`param_names`), initialises one paper network (`init_params(n_inputs, hidden, seed)`) or one of
any depth (`init_network(n_inputs, layers, seed, init)`), and, built from trained parameters, is
the network for inference; the trainer finds it with `model_class(name)`. The hand-written eager
step and the compiled epoch in trainer.py are the paper's "mlp"'s; general.py trains the rest.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mnist_study.data.digits import N_CLASSES
from mnist_study.errors import RunError
from mnist_study.training.conv import conv_channels, conv_names
from mnist_study.training.network import (STANDARDIZE_NAMES, depth_of, find_activation, glorot_uniform, init_network,
                                          n_inputs_of, param_names, trained_names)
from mnist_study.training.network import forward as network_forward

PARAM_NAMES = ("hidden.kernel", "hidden.bias", "output.kernel", "output.bias")
FORMAT = "mnist_study.mlp/1"  # the "format" in a saved MLP's metadata
METADATA_KEY = "mnist_study"  # the one safetensors metadata key, holding JSON

__all__ = ["MLP", "MODELS", "PARAM_NAMES", "forward", "glorot_uniform", "init_network", "init_params", "model_class",
           "stack_params", "unstack_params"]


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
    """Stack single networks (with the same parameter names) along a new leading seed axis."""
    return {name: torch.stack([p[name] for p in params]) for name in params[0]}


def unstack_params(stacked: dict[str, torch.Tensor], index: int) -> dict[str, torch.Tensor]:
    """Copy network `index` out of a stack, on the CPU."""
    return {name: value[index].detach().cpu().clone() for name, value in stacked.items()}


def forward(params: dict[str, torch.Tensor], x: torch.Tensor, activation: str = "relu"
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """First hidden layer's activations (..., N, H) and class logits (..., N, C) of inputs x (N, D).

    Works for a single network and, by broadcasting, for a stack of S networks; any depth
    (network.forward).
    """
    return network_forward(params, x, activation)


class MLP:
    """A trained network of any depth, for inference: numpy in, numpy out.

    Built from its parameters (network.py's names; input.mean and input.scale, where present,
    standardise the inputs first; conv1 ..., where present, are a convolutional stem before the
    Dense layers: the "cnn" model is this class too) and its hidden layers' activation.
    """

    param_names = PARAM_NAMES
    init_params = staticmethod(init_params)
    init_network = staticmethod(init_network)

    def __init__(self, params: dict[str, torch.Tensor], activation: str = "relu"):
        find_activation(activation)  # a known one, or ValueError
        names = trained_names(params) + tuple(n for n in STANDARDIZE_NAMES if n in params)
        self.params = {name: params[name].detach().cpu().float() for name in names}
        self.activation = activation

    @property
    def depth(self) -> int:
        """How many hidden layers (0 to 4)."""
        return depth_of(self.params)

    @property
    def layers(self) -> tuple[int, ...]:
        """The hidden layers' widths, from the input."""
        return tuple(self.params[name].shape[1] for name in param_names(self.depth)[:-2:2])

    @property
    def conv(self) -> tuple[int, ...]:
        """The convolution layers' channels, from the input; () for a Dense-only network."""
        return conv_channels(self.params)

    @property
    def n_inputs(self) -> int:
        return n_inputs_of(self.params)

    @property
    def hidden_width(self) -> int:
        """The first hidden layer's width (0 for a network without hidden layers)."""
        return self.layers[0] if self.layers else 0

    @torch.no_grad()
    def _batches(self, x: np.ndarray, batch_size: int):
        """(first hidden layer (n, H), outputs (n, 10)) for each slice of `batch_size` inputs."""
        for start in range(0, len(x), batch_size):
            inputs = torch.as_tensor(np.asarray(x[start:start + batch_size], np.float32))
            hidden, outputs = network_forward(self.params, inputs, self.activation)
            yield hidden, outputs

    def hidden_and_proba(self, x: np.ndarray, batch_size: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
        """First hidden layer's activations (N, H), (N, 0) at depth 0, and class probabilities (N, 10)
        for inputs x (N, D) in [0, 1]."""
        parts = [(h.numpy(), torch.softmax(o, dim=-1).numpy()) for h, o in self._batches(x, batch_size)]
        if not parts:
            return np.zeros((0, self.hidden_width), np.float32), np.zeros((0, N_CLASSES), np.float32)
        return np.concatenate([h for h, _ in parts]), np.concatenate([p for _, p in parts])

    def outputs(self, x: np.ndarray, batch_size: int = 10_000) -> np.ndarray:
        """The output layer's raw values (N, 10): logits, or what a squared-error network fits to one-hot."""
        parts = [o.numpy() for _, o in self._batches(x, batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, N_CLASSES), np.float32)

    def predict_proba(self, x: np.ndarray, batch_size: int = 10_000) -> np.ndarray:
        """Class probabilities (N, 10), the softmax of the outputs; keeps no (N, H) activations."""
        parts = [torch.softmax(o, dim=-1).numpy() for _, o in self._batches(x, batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, N_CLASSES), np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.predict_proba(x).argmax(axis=1)

    def metadata(self) -> dict[str, str]:
        """What the tensors alone do not say, saved as safetensors string metadata: one key holding
        sorted JSON, because safetensors writes several keys in an order that varies between
        processes, and the same network must give the same bytes wherever it was trained."""
        described = {"format": FORMAT, "activation": self.activation, "layers": ",".join(map(str, self.layers))}
        if self.conv:
            described["conv"] = ",".join(map(str, self.conv))
        return {METADATA_KEY: json.dumps(described, sort_keys=True)}

    def save(self, path: str | Path) -> None:
        from mnist_study.files import atomic_path

        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in self.params.items()}, str(tmp), metadata=self.metadata())

    @classmethod
    def load(cls, path: str | Path) -> "MLP":
        """A saved network. A file without metadata is the paper's (one ReLU layer), as saved before
        networks carried it."""
        with safe_open(str(path), framework="pt") as f:
            metadata = _described(f.metadata() or {}, path)
            tensors = {name: f.get_tensor(name) for name in f.keys()}
        if "layers" in metadata:
            layers = [w for w in metadata["layers"].split(",") if w]
            convolutions = [c for c in metadata.get("conv", "").split(",") if c]
            required = conv_names(len(convolutions)) + param_names(len(layers))
        else:
            required = PARAM_NAMES
        missing = [name for name in required if name not in tensors]
        if missing:
            raise RunError(f"{path} is not a saved network: it lacks {', '.join(missing)}; "
                           f"delete its seed folder and finish the run with `mnist-study run --resume RUN_DIR`")
        name = metadata.get("activation", "relu")
        try:
            find_activation(name)
        except ValueError as error:
            raise RunError(f"{path} is not a network this version can run: {error}") from None
        return cls(tensors, name)


def _described(metadata: dict[str, str], path) -> dict[str, str]:
    """A saved network's description from its safetensors metadata ({} for the paper's older files)."""
    if METADATA_KEY not in metadata:
        return {}
    try:
        described = json.loads(metadata[METADATA_KEY])
    except ValueError:
        described = None
    if not isinstance(described, dict):
        raise RunError(f"{path} is not a saved network: its metadata is not valid; delete its seed folder and "
                       f"finish the run with `mnist-study run --resume RUN_DIR`")
    return {str(k): str(v) for k, v in described.items()}


# A convolutional network is its stem and then an MLP: one class runs both.
MODELS: dict[str, type] = {"mlp": MLP, "cnn": MLP}


def model_class(name: str) -> type:
    """The model registered as `name` in MODELS."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")
    return MODELS[name]
