"""Any network of the design space: 0 to 4 Dense hidden layers, then Dense(10); parameters by name.

Parameters are plain tensors in a dict, Keras-style kernels of shape (inputs, outputs); a stack of
S networks is the same dict with a leading seed axis. Layer by layer from the input:

    hidden.kernel  (S, D, H1)    hidden.bias  (S, 1, H1)
    hidden2.kernel (S, H1, H2)   hidden2.bias (S, 1, H2)     ... up to hidden4
    output.kernel  (S, H, C)     output.bias  (S, 1, C)

A network of depth 0 has only the output layer (multinomial logistic regression). Optionally,
"input.mean" and "input.scale" (1, D), not trained, standardise the inputs first: the network
computes (x - mean) / scale before its first layer. A convolutional network ("cnn") has conv1 ...
in front of the Dense layers (conv.py): its first Dense layer sees the stem's features.

Initialisers (INITIALIZERS) are Keras' definitions; biases start at zero. Activations
(ACTIVATIONS) pair the function with its derivative, for the hand-written backward pass in
general.py: the same aten kernels autograd calls, so that the two agree to the last bit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Callable

import torch

from mnist_study.training import conv
from mnist_study.training.config import ACTIVATIONS as ACTIVATION_NAMES
from mnist_study.training.config import INITS, MAX_HIDDEN_LAYERS

N_CLASSES = 10
HIDDEN_LAYERS = ("hidden", "hidden2", "hidden3", "hidden4")[:MAX_HIDDEN_LAYERS]
STANDARDIZE_NAMES = ("input.mean", "input.scale")


# ------------------------------------------------------------------------------------------ names

def layer_names(depth: int) -> list[str]:
    """The Dense layers of a network with `depth` hidden layers, from the input: hidden, hidden2, ..., output."""
    if not 0 <= depth <= len(HIDDEN_LAYERS):
        raise ValueError(f"a network has 0 to {len(HIDDEN_LAYERS)} hidden layers, not {depth}")
    return [*HIDDEN_LAYERS[:depth], "output"]


def param_names(depth: int) -> tuple[str, ...]:
    """The trained parameters, kernel then bias of each layer from the input."""
    return tuple(f"{layer}.{part}" for layer in layer_names(depth) for part in ("kernel", "bias"))


def trained_names(params: Mapping[str, object]) -> tuple[str, ...]:
    """Every trained parameter a network's dict holds, from the input: its convolutions (if any),
    then its Dense layers; not the standardisation buffers."""
    return conv.conv_names(conv.conv_depth(params)) + param_names(depth_of(params))


def count_parameters(shapes: Mapping[str, Sequence[int]]) -> int:
    """The trained parameters of one network (no seed axis): every kernel and bias, from the first
    convolution or hidden layer to the output, given each tensor's shape by name. The
    standardisation buffers input.mean and input.scale are fitted to the data, not trained, and
    are not counted.

    784 inputs -> 130 -> 10 has 784 * 130 + 130 + 130 * 10 + 10 = 103,360.
    """
    return sum(math.prod(shapes[name]) for name in trained_names(shapes))


def n_inputs_of(params: Mapping[str, torch.Tensor]) -> int:
    """The inputs a network takes: 784 pixels for a convolutional one, else its first kernel's rows."""
    if conv.conv_depth(params):
        return conv.N_PIXELS
    return int(params[param_names(depth_of(params))[0]].shape[-2])


def penalised_kernels(depth: int, scope: str) -> tuple[str, ...]:
    """The kernels the L2 penalty covers: "hidden" the hidden layers' (none at depth 0), "all" every one."""
    if scope not in ("hidden", "all"):
        raise ValueError(f"unknown l2_scope {scope!r}; expected hidden or all")
    layers = layer_names(depth) if scope == "all" else layer_names(depth)[:-1]
    return tuple(f"{layer}.kernel" for layer in layers)


def depth_of(params: Mapping[str, object]) -> int:
    """How many hidden layers the parameters describe (hidden, hidden2, ... present in order)."""
    depth = 0
    while depth < len(HIDDEN_LAYERS) and f"{HIDDEN_LAYERS[depth]}.kernel" in params:
        depth += 1
    return depth


# ------------------------------------------------------------------------------------ initialisers
# Keras' VarianceScaling family: a variance of scale / n, n = fan_in or (fan_in + fan_out) / 2, drawn
# uniform on [-limit, limit] (limit = sqrt(3 * scale / n)) or from a normal truncated at two standard
# deviations, whose spread is corrected by .87962566103423978 (the standard deviation of a unit
# normal truncated there) so that the drawn values have the variance asked for.
# https://keras.io/api/layers/initializers/

_TRUNCATED_STD = 0.87962566103423978


def glorot_uniform(fan_in: int, fan_out: int, generator: torch.Generator) -> torch.Tensor:
    """Keras' default kernel initialiser: U(-a, a) with a = sqrt(6 / (fan_in + fan_out))."""
    limit = (6.0 / (fan_in + fan_out)) ** 0.5
    return (torch.rand(fan_in, fan_out, generator=generator, dtype=torch.float32) * 2 - 1) * limit


def _uniform(fan_in: int, fan_out: int, generator: torch.Generator, variance: float) -> torch.Tensor:
    limit = (3.0 * variance) ** 0.5
    return (torch.rand(fan_in, fan_out, generator=generator, dtype=torch.float32) * 2 - 1) * limit


def _truncated_normal(fan_in: int, fan_out: int, generator: torch.Generator, variance: float) -> torch.Tensor:
    """N(0, std) truncated at +-2 std, std = sqrt(variance) / .8796..., by the inverse CDF of uniform
    draws (one draw per value, so the stream of the generator never depends on rejections)."""
    u = torch.rand(fan_in, fan_out, generator=generator, dtype=torch.float64)
    z = math.sqrt(2.0) * torch.special.erfinv((2 * u - 1) * math.erf(2 / math.sqrt(2.0)))  # in [-2, 2)
    return (z * (variance ** 0.5 / _TRUNCATED_STD)).float()


def glorot_normal(fan_in: int, fan_out: int, generator: torch.Generator) -> torch.Tensor:
    return _truncated_normal(fan_in, fan_out, generator, 2.0 / (fan_in + fan_out))


def he_uniform(fan_in: int, fan_out: int, generator: torch.Generator) -> torch.Tensor:
    return _uniform(fan_in, fan_out, generator, 2.0 / fan_in)


def he_normal(fan_in: int, fan_out: int, generator: torch.Generator) -> torch.Tensor:
    return _truncated_normal(fan_in, fan_out, generator, 2.0 / fan_in)


def lecun_normal(fan_in: int, fan_out: int, generator: torch.Generator) -> torch.Tensor:
    return _truncated_normal(fan_in, fan_out, generator, 1.0 / fan_in)


INITIALIZERS: dict[str, Callable[[int, int, torch.Generator], torch.Tensor]] = {
    "glorot_uniform": glorot_uniform,
    "glorot_normal": glorot_normal,
    "he_uniform": he_uniform,
    "he_normal": he_normal,
    "lecun_normal": lecun_normal,
}
assert tuple(INITIALIZERS) == INITS


def init_network(n_inputs: int, layers: tuple[int, ...] | list[int], seed: int, init: str = "glorot_uniform",
                 n_classes: int = N_CLASSES, *, conv_channels: Sequence[int] = (), kernel_size: int = 5
                 ) -> dict[str, torch.Tensor]:
    """One network's parameters (no seed axis): kernels drawn by `init` from one generator seeded
    `seed`, layer by layer from the input to the output (a convolutional stem's first); zero
    biases. For one layer and glorot_uniform this is model.init_params."""
    if init not in INITIALIZERS:
        raise ValueError(f"unknown init {init!r}; expected one of {', '.join(INITIALIZERS)}")
    draw = INITIALIZERS[init]
    generator = torch.Generator().manual_seed(seed)
    params = {}
    if conv_channels:
        if n_inputs != conv.N_PIXELS:
            raise ValueError(f"a convolutional network takes {conv.N_PIXELS}-pixel images, not {n_inputs} inputs")
        params.update(conv.init_stem(conv_channels, kernel_size, draw, generator))
        n_inputs = conv.n_features(conv_channels)
    widths = [n_inputs, *layers, n_classes]
    for layer, fan_in, fan_out in zip(layer_names(len(layers)), widths[:-1], widths[1:]):
        params[f"{layer}.kernel"] = draw(fan_in, fan_out, generator)
        params[f"{layer}.bias"] = torch.zeros(1, fan_out)
    return params


# ------------------------------------------------------------------------------------- activations

@dataclass(frozen=True)
class Activation:
    """forward(z, out) -> h into `out`; backward(grad, z, h) -> dL/dz, written over `grad`."""

    function: Callable[[torch.Tensor], torch.Tensor]
    forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    backward: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


_aten = torch.ops.aten
ACTIVATIONS: dict[str, Activation] = {
    "relu": Activation(torch.relu, lambda z, out: torch.clamp_min(z, 0.0, out=out),
                       lambda g, z, h: _aten.threshold_backward.grad_input(g, h, 0.0, grad_input=g)),
    "tanh": Activation(torch.tanh, lambda z, out: torch.tanh(z, out=out),
                       lambda g, z, h: _aten.tanh_backward.grad_input(g, h, grad_input=g)),
    "sigmoid": Activation(torch.sigmoid, lambda z, out: torch.sigmoid(z, out=out),
                          lambda g, z, h: _aten.sigmoid_backward.grad_input(g, h, grad_input=g)),
    # torch's exact GELU, x * Phi(x) (approximate="none")
    "gelu": Activation(torch.nn.functional.gelu, lambda z, out: _aten.gelu.out(z, out=out),
                       lambda g, z, h: _aten.gelu_backward.grad_input(g, z, grad_input=g)),
}
assert tuple(ACTIVATIONS) == ACTIVATION_NAMES


def find_activation(name: str) -> Activation:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


# ----------------------------------------------------------------------------------------- forward

def standardize(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """(x - input.mean) / input.scale where the network carries them, else x."""
    if STANDARDIZE_NAMES[0] in params:
        return (x - params["input.mean"]) / params["input.scale"]
    return x


def forward(params: dict[str, torch.Tensor], x: torch.Tensor, activation: str = "relu"
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """The first hidden layer's activations (..., N, H1) and the outputs (..., N, C) of inputs x (N, D).

    Works for a single network and, by broadcasting, for a stack of S networks. A network of depth 0
    has no hidden layer: its "activations" are (..., N, 0). Outputs are logits for cross-entropy
    networks and the raw outputs for squared-error ones; probabilities are their softmax.
    """
    f = find_activation(activation).function
    h = conv.stem(params, standardize(params, x))
    first = None
    for layer in HIDDEN_LAYERS[:depth_of(params)]:
        h = f(torch.matmul(h, params[f"{layer}.kernel"]) + params[f"{layer}.bias"])
        first = h if first is None else first
    outputs = torch.matmul(h, params["output.kernel"]) + params["output.bias"]
    if first is None:
        first = outputs.new_zeros(*outputs.shape[:-1], 0)
    return first, outputs


def attach_standardization(params: dict[str, torch.Tensor], mean, scale) -> dict[str, torch.Tensor]:
    """A copy of a network's parameters (no seed axis) that standardises its inputs first.

    mean and scale: (D,) or (1, D), tensors or arrays, scale non-zero (constant inputs: scale 1).
    The network was trained on (x - mean) / scale; with them attached it takes raw x.
    """
    mean = torch.as_tensor(mean, dtype=torch.float32).detach().cpu().reshape(1, -1).clone()
    scale = torch.as_tensor(scale, dtype=torch.float32).detach().cpu().reshape(1, -1).clone()
    n_inputs = n_inputs_of(params)
    if mean.shape[1] != n_inputs or scale.shape[1] != n_inputs:
        raise ValueError(f"standardisation for {mean.shape[1]} and {scale.shape[1]} inputs; the network has "
                         f"{n_inputs}")
    if not (torch.isfinite(mean).all() and torch.isfinite(scale).all() and (scale != 0).all()):
        raise ValueError("standardisation needs finite means and finite, non-zero scales")
    return {**params, STANDARDIZE_NAMES[0]: mean, STANDARDIZE_NAMES[1]: scale}


def first_pre_activation(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The first hidden layer's pre-activations (N, H1) of raw inputs x (N, D): what its nodes sum
    before their activation, through the standardisation and the convolutional stem, if any."""
    return conv.stem(params, standardize(params, x)) @ params["hidden.kernel"] + params["hidden.bias"]
