"""The convolutional stem of the "cnn" model: convolution layers in front of network.py's Dense ones.

Each convolution layer is a k x k convolution (stride 1, 'same' zero padding, k odd), ReLU, then
2 x 2 max pooling (a side of odd length loses its last row and column, as PyTorch floors it). The
last layer's maps are flattened, channel then row then column, into the first Dense layer:

    conv1.kernel (S, C1, 1, k, k)    conv1.bias (S, C1)
    conv2.kernel (S, C2, C1, k, k)   conv2.bias (S, C2)      ... up to MAX_CONV_LAYERS

(without the leading seed axis S for one network). A stack of S networks, each on its own batch,
runs as one grouped convolution (groups = S): the seeds' images side by side as input channels, so
that seed s only ever reads its own images and its own kernels.

Kernels are drawn like a Dense layer from Cin * k * k inputs to Cout outputs, by the network's
initialiser; for the He and LeCun initialisers, which depend on the fan-in only, that is exactly
Keras' Conv2D. Biases start at zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from mnist_study.data.digits import IMAGE_SIDE, N_PIXELS

MAX_CONV_LAYERS = 3
CONV_LAYERS = tuple(f"conv{i}" for i in range(1, MAX_CONV_LAYERS + 1))
EVAL_CHUNK = 2048  # images per pass when no gradient is wanted: bounds the feature maps' memory


def conv_names(n_layers: int) -> tuple[str, ...]:
    """The convolution parameters of a stem of `n_layers` layers, kernel then bias, from the input."""
    if not 0 <= n_layers <= MAX_CONV_LAYERS:
        raise ValueError(f"a network has 0 to {MAX_CONV_LAYERS} convolution layers, not {n_layers}")
    return tuple(f"{layer}.{part}" for layer in CONV_LAYERS[:n_layers] for part in ("kernel", "bias"))


def conv_depth(params: Mapping[str, object]) -> int:
    """How many convolution layers the parameters describe (conv1, conv2, ... present in order)."""
    depth = 0
    while depth < MAX_CONV_LAYERS and f"{CONV_LAYERS[depth]}.kernel" in params:
        depth += 1
    return depth


def conv_channels(params: Mapping[str, torch.Tensor]) -> tuple[int, ...]:
    """Each convolution layer's output channels, from the input."""
    return tuple(int(params[f"{layer}.kernel"].shape[-4]) for layer in CONV_LAYERS[:conv_depth(params)])


def output_side(n_layers: int, side: int = IMAGE_SIDE) -> int:
    """The side of the last layer's maps: each layer's pooling halves it, rounding down."""
    for _ in range(n_layers):
        side //= 2
    return side


def n_features(channels: Sequence[int], side: int = IMAGE_SIDE) -> int:
    """What the stem hands the first Dense layer: the last layer's channels times its map's area."""
    return channels[-1] * output_side(len(channels), side) ** 2 if channels else side * side


def check_stem(channels: Sequence[int], kernel_size: int) -> None:
    """ValueError naming what is wrong with a stem's shape."""
    if not 1 <= len(channels) <= MAX_CONV_LAYERS or not all(isinstance(c, int) and c >= 1 for c in channels):
        raise ValueError(f"conv lists 1 to {MAX_CONV_LAYERS} positive channel counts, not {list(channels)}")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd (3, 5, 7, ...) so that 'same' padding keeps the map's size; "
                         f"got {kernel_size}")


def init_stem(channels: Sequence[int], kernel_size: int, draw, generator: torch.Generator
              ) -> dict[str, torch.Tensor]:
    """One network's stem (no seed axis): kernels by `draw(fan_in, fan_out, generator)`, zero biases."""
    check_stem(channels, kernel_size)
    params, inputs = {}, 1
    for layer, out in zip(CONV_LAYERS, channels):
        fan_in = inputs * kernel_size * kernel_size
        kernel = draw(fan_in, out, generator)  # (Cin * k * k, Cout), as a Dense layer
        params[f"{layer}.kernel"] = kernel.T.reshape(out, inputs, kernel_size, kernel_size).contiguous()
        params[f"{layer}.bias"] = torch.zeros(out)
        inputs = out
    return params


def stem(params: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The features the first Dense layer sees; x itself for a network without convolutions.

    x : (N, 784) images for one network, or, for a stack of S networks, (S, N, 784) (each seed its
        own images) or (N, 784) (the same images for all).
    Returns (N, F) for one network, (S, N, F) for a stack.
    """
    n_layers = conv_depth(params)
    if n_layers == 0:
        return x
    if x.shape[-1] != N_PIXELS:
        raise ValueError(f"a convolutional network takes {N_PIXELS}-pixel images, not {x.shape[-1]} inputs")
    n = x.shape[-2]
    if not torch.is_grad_enabled() and n > EVAL_CHUNK:
        return torch.cat([stem(params, part) for part in x.split(EVAL_CHUNK, dim=-2)], dim=-2)
    layers = CONV_LAYERS[:n_layers]
    if params["conv1.kernel"].ndim == 4:  # one network
        h = x.reshape(n, 1, IMAGE_SIDE, IMAGE_SIDE)
        for layer in layers:
            w = params[f"{layer}.kernel"]
            h = F.max_pool2d(torch.relu(F.conv2d(h, w, params[f"{layer}.bias"], padding=w.shape[-1] // 2)), 2)
        return h.flatten(1)
    n_seeds = params["conv1.kernel"].shape[0]
    if x.ndim == 2:
        x = x.expand(n_seeds, n, N_PIXELS)
    h = x.transpose(0, 1).reshape(n, n_seeds, IMAGE_SIDE, IMAGE_SIDE)  # seed s's images are channel s
    for layer in layers:
        w = params[f"{layer}.kernel"]  # (S, Cout, Cin, k, k): group s is seed s's Cout output channels
        h = F.conv2d(h, w.flatten(0, 1), params[f"{layer}.bias"].flatten(), padding=w.shape[-1] // 2, groups=n_seeds)
        h = F.max_pool2d(torch.relu(h), 2)
    return h.reshape(n, n_seeds, -1).transpose(0, 1)
