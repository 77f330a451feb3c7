"""Training-set augmentation, drawn anew every epoch: random shifts and elastic distortions.

Both work on a whole set at once, as flattened images (N, 784) with values in [0, 1], in chunks of
``CHUNK`` images so that memory stays bounded (a chunk's displacement fields and sampling grid
take about 100 MB), with no Python loop over images.

- :func:`random_shift` moves each image by whole pixels, dx and dy uniform in [-k, k], filling
  with zeros (black) what moves in from outside.
- :func:`elastic_distort` is Simard, Steinkraus & Platt (2003), "Best practices for convolutional
  neural networks applied to visual document analysis", section 2: two fields of displacements
  uniform in [-1, 1], each smoothed by a Gaussian of standard deviation ``sigma`` pixels, scaled by
  ``alpha`` pixels, then the image resampled bilinearly at the displaced positions. alpha=34 and
  sigma=4 are the values commonly used for MNIST. The smoothing is scipy's
  ``gaussian_filter(mode="constant", truncate=4)`` written as one 28x28 matrix applied on both
  sides (G @ U @ G.T: exact, and on a CPU some twenty times faster than the same smoothing as
  ``conv2d``); the resampling is ``grid_sample``, equal to scipy's
  ``map_coordinates(order=1, mode="grid-constant")``. The tests check both against scipy.
- :func:`augment_epoch` seeds its own generator from (seed, epoch), so that each epoch's draw
  can be made again and depends on nothing else (not on torch's global generator, nor on how
  many epochs ran before in this process).

Random numbers are drawn on the generator's device (the CPU unless one passes another), and the
arithmetic runs on the images' device: a set on a GPU is augmented there, from the same draws.

Example
-------
>>> x = torch.rand(55000, 784)
>>> augmented = augment_epoch(x, epoch=3, seed=0, shift=2, elastic=True)
>>> augmented.shape, augmented.dtype
(torch.Size([55000, 784]), torch.float32)
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from mnist_study.data.digits import IMAGE_SIDE, N_PIXELS
from mnist_study.errors import OptionError

CHUNK = 4096  # images per chunk; the draws depend on it, so changing it changes every epoch's images
TRUNCATE = 4.0  # the Gaussian is cut off at this many standard deviations, as scipy's gaussian_filter
GRID_SCALE = 2.0 / (IMAGE_SIDE - 1)  # one pixel in grid_sample's coordinates (align_corners=True)


def _as_images(images: torch.Tensor) -> torch.Tensor:
    images = torch.as_tensor(images)
    if images.ndim != 2 or images.shape[1] != N_PIXELS:
        raise OptionError(f"images must be flattened, shape (N, {N_PIXELS}); got {tuple(images.shape)}")
    return images.to(torch.float32)


def _default(generator: torch.Generator | None) -> torch.Generator:
    return torch.default_generator if generator is None else generator


# --- Shifts -------------------------------------------------------------------------------------


def shift_images(images: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Move image i right by dx[i] and down by dy[i] whole pixels (negative: left, up), zero-filled.

    Parameters
    ----------
    images : torch.Tensor, float, shape (N, 784)
    dx, dy : torch.Tensor, integer, shape (N,)

    Returns
    -------
    torch.Tensor, float32, shape (N, 784)
        out[i, y, x] = images[i, y - dy[i], x - dx[i]], or 0 where that lies outside the image.
    """
    images = _as_images(images)
    dx, dy = dx.to(images.device, torch.int64), dy.to(images.device, torch.int64)
    k = int(max(dx.abs().max(), dy.abs().max())) if len(images) else 0
    if k == 0:
        return images.clone()
    if k >= IMAGE_SIDE:
        raise OptionError(f"a shift of {k} pixels moves a {IMAGE_SIDE}x{IMAGE_SIDE} image out of sight")
    # Images that move alike are moved together: one crop-and-pad per distinct (dx, dy), at most
    # (2k + 1)^2 of them, each over whole rows of images (a gather per pixel is 2-4 times slower).
    width = 2 * k + 1
    code = (dy + k) * width + (dx + k)
    order = torch.argsort(code)
    side = IMAGE_SIDE
    square = images.reshape(-1, side, side)
    out = torch.empty_like(images)
    start = 0
    for group, count in enumerate(torch.bincount(code, minlength=width * width).tolist()):
        down, right = group // width - k, group % width - k
        rows = slice(max(-down, 0), side - max(down, 0))
        cols = slice(max(-right, 0), side - max(right, 0))
        pad = (max(right, 0), max(-right, 0), max(down, 0), max(-down, 0))
        for first in range(start, start + count, CHUNK):
            chosen = order[first:min(first + CHUNK, start + count)]
            moved = F.pad(square.index_select(0, chosen)[:, rows, cols], pad)
            out.index_copy_(0, chosen, moved.reshape(-1, N_PIXELS))
        start += count
    return out


def random_shift(images: torch.Tensor, max_shift: int,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift each image by dx, dy drawn uniformly from the integers in [-max_shift, max_shift].

    dx (right) for every image is drawn first, then dy (down), with ``torch.randint`` from
    ``generator`` (torch's default one when None). Returns float32 (N, 784); see :func:`shift_images`.
    """
    if not 0 <= max_shift < IMAGE_SIDE:
        raise OptionError(f"max_shift must be between 0 and {IMAGE_SIDE - 1} pixels, got {max_shift}")
    images = _as_images(images)
    generator = _default(generator)
    draw = torch.randint(-max_shift, max_shift + 1, (2, len(images)), generator=generator, device=generator.device)
    return shift_images(images, draw[0], draw[1])


# --- Elastic distortions ------------------------------------------------------------------------


def gaussian_matrix(sigma: float, size: int = IMAGE_SIDE) -> torch.Tensor:
    """G (size, size) such that G @ u smooths the columns of u as scipy's ``gaussian_filter1d``
    (mode="constant", cval=0, truncate=4) does, and G @ u @ G.T smooths both ways.

    The kernel, exp(-t^2 / 2 sigma^2) for |t| up to int(4 sigma + 0.5), is normalised to sum to 1
    over its full width, and what falls beyond the image is dropped (zeros outside).
    """
    radius = int(TRUNCATE * sigma + 0.5)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (t / sigma) ** 2)
    kernel /= kernel.sum()
    offset = np.arange(size)[:, None] - np.arange(size)[None, :]
    matrix = np.where(np.abs(offset) <= radius, kernel[np.clip(offset + radius, 0, 2 * radius)], 0.0)
    return torch.from_numpy(matrix.astype(np.float32))


def _pixel_grid(device: torch.device) -> torch.Tensor:
    """(28, 28, 2): where each pixel centre lies in grid_sample's coordinates, (x, y) last.

    With align_corners=True, -1 and 1 are the centres of the first and the last pixel, so pixel p
    sits at p * GRID_SCALE - 1.
    """
    at = torch.arange(IMAGE_SIDE, dtype=torch.float32, device=device) * GRID_SCALE - 1
    return torch.stack(torch.broadcast_tensors(at[None, :], at[:, None]), dim=-1)


def _resample(images: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Images (n, 784) read bilinearly at ``grid`` (n, 28, 28, 2), zeros outside."""
    sampled = F.grid_sample(images.reshape(-1, 1, IMAGE_SIDE, IMAGE_SIDE), grid, mode="bilinear",
                            padding_mode="zeros", align_corners=True)
    return sampled.reshape(-1, N_PIXELS)


def warp(images: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Resample each image bilinearly at its displaced pixel positions, zeros outside.

    Parameters
    ----------
    images : torch.Tensor, float, shape (N, 784)
    dx, dy : torch.Tensor, float, shape (N, 28, 28)
        Displacements in pixels: out[i, y, x] = images[i] read at (y + dy[i, y, x], x + dx[i, y, x]),
        interpolated between the four nearest pixels, each outside the image counting as 0.

    Returns
    -------
    torch.Tensor, float32, shape (N, 784)
    """
    images = _as_images(images)
    moves = torch.stack((dx, dy), dim=-1).to(images.device, torch.float32)
    return _resample(images, _pixel_grid(images.device) + moves * GRID_SCALE)


def elastic_distort(images: torch.Tensor, alpha: float = 34.0, sigma: float = 4.0,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Elastic distortions (Simard et al. 2003): smoothed random displacements, bilinear resampling.

    Image i is ``warp``ed by dx = alpha * G @ (2 U_x - 1) @ G.T and likewise dy, where U_x, U_y
    are uniform in [0, 1] and G = ``gaussian_matrix(sigma)``.

    Parameters
    ----------
    images : torch.Tensor, float in [0, 1], shape (N, 784)
    alpha : float
        Scale of the displacements, pixels (0: the identity).
    sigma : float
        Standard deviation of the Gaussian smoothing the fields, pixels: larger is smoother.
    generator : torch.Generator, optional
        Draws U, for each chunk of ``CHUNK`` images in turn, as ``torch.rand((chunk, 2, 28, 28))``
        (U_x, then U_y); torch's default generator when None.

    Returns
    -------
    torch.Tensor, float32 in [0, 1], shape (N, 784)
    """
    if alpha < 0 or not math.isfinite(alpha):
        raise OptionError(f"alpha must be a finite number of pixels, 0 or more; got {alpha}")
    if not sigma > 0 or not math.isfinite(sigma):
        raise OptionError(f"sigma must be a finite number of pixels above 0; got {sigma}")
    images = _as_images(images)
    generator = _default(generator)
    device = images.device
    # alpha G (2U - 1) G.T, in grid units, is A U A.T - C with A = sqrt(2 alpha GRID_SCALE) G and
    # C = alpha GRID_SCALE G 1 G.T: two passes over the fields fewer than scaling them as drawn.
    smooth = gaussian_matrix(sigma).to(device)
    a = smooth * math.sqrt(2 * alpha * GRID_SCALE)
    c = (smooth @ torch.ones_like(smooth) @ smooth.T) * (alpha * GRID_SCALE)
    pixels = _pixel_grid(device)
    out = torch.empty_like(images)
    for start in range(0, len(images), CHUNK):
        part = images[start:start + CHUNK]
        uniform = torch.rand((len(part), 2, IMAGE_SIDE, IMAGE_SIDE), generator=generator, device=generator.device)
        moves = a @ uniform.to(device) @ a.T - c
        grid = moves.permute(0, 2, 3, 1) + pixels
        # Bilinear weights sum to at most 1, so only float rounding could leave [0, 1].
        out[start:start + CHUNK] = _resample(part, grid).clamp_(0, 1)
    return out


# --- One epoch's draw ---------------------------------------------------------------------------


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator seeded from (seed, epoch) alone, through numpy's SeedSequence, so that nearby
    pairs such as (0, 1) and (1, 0) give unrelated streams."""
    if seed < 0 or epoch < 0:
        raise OptionError(f"seed and epoch must be 0 or more, got seed={seed}, epoch={epoch}")
    high, low = np.random.SeedSequence([seed, epoch]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed((int(high) << 32) | int(low))


def augment_epoch(images: torch.Tensor, epoch: int, seed: int, shift: int = 0, elastic: bool = False,
                  alpha: float = 34.0, sigma: float = 4.0) -> torch.Tensor:
    """The training images as epoch ``epoch`` of a network trained with ``seed`` sees them.

    Elastic distortion first (when ``elastic``), then a random shift of up to ``shift`` pixels
    (when above 0), both drawn from :func:`epoch_generator` (seed, epoch): the same arguments give
    the same images, in any process, whatever ran before.

    Parameters
    ----------
    images : torch.Tensor, float in [0, 1], shape (N, 784)
        The un-augmented training images (on any device; the result is on the same one).
    epoch, seed : int
        0 or more.
    shift : int
        Largest shift, pixels (0: none).
    elastic : bool
        Whether to distort elastically, with ``alpha`` and ``sigma`` (pixels).

    Returns
    -------
    torch.Tensor, float32, shape (N, 784)
        New images; ``images`` itself (as float32) when neither augmentation is asked for.
    """
    generator = epoch_generator(seed, epoch)
    images = _as_images(images)
    if elastic:
        images = elastic_distort(images, alpha, sigma, generator)
    if shift:
        images = random_shift(images, shift, generator)
    return images
