"""Turn any picture of a digit into the 28x28 input an MNIST network expects.

MNIST's own recipe (http://yann.lecun.com/exdb/mnist/): each digit was "size normalized to fit in a
20x20 pixel box while preserving their aspect ratio", anti-aliased, then "centered in a 28x28 image
by computing the center of mass of the pixels, and translating the image so as to position this
point at the center of the 28x28 field". On the training set the centre of mass lies within half
a pixel of (14, 14) in row/column index coordinates, so the translation is by whole pixels.

Steps, for a photo, a scan or a canvas drawing:

1. read it (PIL image, numpy array, path or bytes), refusing non-images and decompression bombs;
2. greyscale in [0, 1] (transparent pixels become paper), inverted when the border is light, so
   that ink is bright on a dark background as in MNIST;
3. subtract the paper level, stretch the ink to full scale, and crop to the bounding box of the
   pixels above a small threshold (which ignores paper texture and JPEG noise);
4. scale to fit 20x20 keeping the aspect ratio (Lanczos, antialiased), and paste it into 28x28 so
   that its centre of mass lands on pixel (14, 14).

Example
-------
>>> from mnist_study.serving.preprocess import preprocess
>>> x = preprocess("my_digit.jpg")        # float32 (28, 28) in [0, 1], white ink on black
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mnist_study.data.digits import IMAGE_SIDE
from mnist_study.errors import UserError

SIZE = IMAGE_SIDE  # side of the network's input
BOX = 20  # side of the box the digit is scaled to fit
CENTRE = 14.0  # where MNIST puts the centre of mass (row and column, index coordinates)
INK_THRESHOLD = 0.2  # fraction of full ink below which a pixel counts as paper for the bounding box
MIN_CONTRAST = 0.08  # ink must stand this far above the paper level, else there is no digit
MAX_PIXELS = 25_000_000  # larger images are refused (5000 x 5000, a 25-megapixel photo)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm")

ImageSource = Union[Image.Image, np.ndarray, str, Path, bytes, bytearray]


class ImageError(UserError, ValueError):
    """A file or upload cannot be used as a digit image: not an image, unreadable, or too large."""


class ImageTooLargeError(ImageError):
    """The image has more pixels than allowed: a decompression bomb, or a photo to shrink first."""


class NoDigitError(ImageError):
    """The image holds no ink: it is blank, or its contrast is too low to find a digit."""


def _describe(source: object) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, (bytes, bytearray)):
        return f"the uploaded data ({len(source):,} bytes)"
    return "the image"


def load_image(source: ImageSource, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open `source` as a PIL image (first frame, EXIF orientation applied), with limits.

    Raises
    ------
    ImageError
        When the file is missing or not an image, or has more than `max_pixels` pixels (checked
        from the header, before anything is decoded).
    """
    if isinstance(source, Image.Image):
        image = source
    else:
        name = _describe(source)
        stream = io.BytesIO(bytes(source)) if isinstance(source, (bytes, bytearray)) else source
        try:
            # PIL warns above MAX_IMAGE_PIXELS and raises above twice that; make both an error, and
            # apply our own (lower) limit from the header, before anything is decoded. Its other
            # warnings ("Truncated File Read") are about files it still reads, or fails to with an error.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(stream) as opened:
                    width, height = opened.size
                    if width * height > max_pixels:
                        raise ImageTooLargeError(f"{name}: refused, {width}x{height} pixels is more than the limit "
                                         f"of {max_pixels:,} (a decompression bomb, or a photo to shrink first)")
                    opened.load()
                    image = ImageOps.exif_transpose(opened)  # a decoded copy, independent of the file
        except ImageError:
            raise
        except FileNotFoundError:
            raise ImageError(f"{name}: no such file") from None
        except IsADirectoryError:
            raise ImageError(f"{name}: is a folder, not an image") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise ImageTooLargeError(f"{name}: refused, the image is too large to decode safely ({error})") from None
        except UnidentifiedImageError:
            raise ImageError(f"{name}: not an image, or a format Pillow cannot read") from None
        except Exception as error:  # noqa: BLE001 -- Pillow's decoders raise OSError, SyntaxError,
            # struct.error, IndexError and more on damaged files: each means "cannot be read"
            raise ImageError(f"{name}: cannot be read ({type(error).__name__}: {error})") from None
    if image.width * image.height > max_pixels:
        raise ImageTooLargeError(f"{_describe(source)}: refused, {image.width}x{image.height} pixels is more "
                         f"than the limit of {max_pixels:,}")
    if image.width == 0 or image.height == 0:
        raise NoDigitError(f"{_describe(source)}: the image is empty (0 pixels)")
    return image


def to_grey(image: Image.Image) -> np.ndarray:
    """Greyscale float32 (H, W) in [0, 1]; transparent pixels are composited onto paper.

    The paper colour for transparency is the opposite of the opaque pixels' mean, so dark ink on a
    transparent background (a typical drawing export) lands on white, and light ink on black.

    Raises ImageError for a mode Pillow cannot make grey, or a float image holding NaN or infinity.
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        grey = np.asarray(image, dtype=np.float32)
        if not np.isfinite(grey).all():
            raise ImageError("the image holds NaN or infinite values")
        top = 1.0 if image.mode == "F" and grey.max(initial=0) <= 1 else (255.0 if grey.max(initial=0) <= 255 else 65535.0)
        return np.clip(grey / top, 0, 1)
    if image.mode == "LAB":  # Pillow converts LAB to nothing else; its first band is the lightness
        return np.asarray(image.getchannel(0), dtype=np.float32) / np.float32(255)
    has_alpha = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (image.mode == "P" and "transparency" in image.info)
    try:
        if not has_alpha:  # PIL's convert("L") is ITU-R 601-2 luma, computed on uint8: a quarter the memory
            return np.asarray(image.convert("L"), dtype=np.float32) / np.float32(255)
        # The premultiplied modes (La, RGBa) convert only to their straight twins first.
        straight = image.convert({"La": "LA", "RGBa": "RGBA"}.get(image.mode, image.mode))
        la = np.asarray(straight.convert("LA"), dtype=np.float32) / np.float32(255)
    except ValueError as error:  # "conversion from <mode> to L not supported"
        raise ImageError(f"images in Pillow's mode {image.mode!r} cannot be made greyscale ({error})") from None
    grey, alpha = la[..., 0], la[..., 1]
    opaque = alpha > 0.5
    ink_level = grey[opaque].mean() if opaque.any() else 0.0
    paper = 1.0 if ink_level < 0.5 else 0.0
    return (grey * alpha + paper * (1 - alpha)).astype(np.float32)


LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601-2, as PIL's convert("L")


def _unit_range(array: np.ndarray) -> np.ndarray:
    """An image array's values as float32 in [0, 1], by its dtype: bool, uint8 0-255, uint16
    0-65535, other integers 0-255, floats 0-1. Anything else is an ImageError that says what was found."""
    kind = array.dtype.kind
    if kind == "b":
        return array.astype(np.float32)
    if array.dtype in (np.uint8, np.uint16):
        return array.astype(np.float32) / np.float32(np.iinfo(array.dtype).max)
    if kind in "iu":
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise ImageError(f"an integer image array must hold 0-255 (or be uint16, 0-65535); got values in "
                             f"[{low}, {high}] of dtype {array.dtype}")
        return array.astype(np.float32) / np.float32(255)
    if kind == "f":
        with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, refused below
            values = array.astype(np.float32)
        if not np.isfinite(values).all():
            raise ImageError("the image array holds NaN or infinite values")
        if values.min() < 0 or values.max() > 1:
            raise ImageError(f"a float image array must lie in [0, 1]; got values in [{values.min():g}, "
                             f"{values.max():g}] (pass uint8 for 0-255)")
        return values
    raise ImageError(f"an image array must hold numbers (bool, integers or floats); got dtype {array.dtype}")


def as_grey(source: ImageSource, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Any accepted source -> greyscale float32 (H, W) in [0, 1]."""
    if not isinstance(source, np.ndarray):
        return to_grey(load_image(source, max_pixels))
    array = np.asarray(source)  # a plain array, whatever subclass came in
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))):
        raise ImageError(f"expected an image array of shape (H, W) or (H, W, 3|4), got {source.shape}")
    height, width = array.shape[:2]
    if height * width > max_pixels:
        raise ImageTooLargeError(f"refused, {width}x{height} pixels is more than the limit of {max_pixels:,}")
    if height * width == 0:
        raise NoDigitError("the image is empty (0 pixels)")
    if array.ndim == 3 and array.dtype == np.uint8:
        return to_grey(Image.fromarray(np.ascontiguousarray(array)))  # RGBA: transparency becomes paper
    values = _unit_range(array)
    return values[..., :3] @ LUMA if values.ndim == 3 else values


def _border(grey: np.ndarray) -> np.ndarray:
    """The outer ring of pixels, about 3% of the shorter side wide (at least one pixel)."""
    k = max(1, round(0.03 * min(grey.shape)))
    return np.concatenate([grey[:k].ravel(), grey[-k:].ravel(), grey[:, :k].ravel(), grey[:, -k:].ravel()])


def paper_surface(grey: np.ndarray, keep: float = 0.6, rounds: int = 3) -> np.ndarray:
    """The paper's brightness at every pixel (H, W): a plane fitted to the paper, not the ink.

    A photo's paper is rarely even: a shadow or the light's falloff makes a gradient, which a
    single paper level would leave in as "ink" and the crop would take whole. Ink covers a small
    part of the page, so a least-squares plane refitted, a few times, to the `keep` fraction of
    pixels closest to it lands on the paper. (On MNIST's black ground it is the flat 0.)
    """
    h, w = grey.shape
    step = max(1, int(np.sqrt(h * w / 4_000)))  # a plane needs few points: fit on ~4,000 of them
    rows, cols = np.mgrid[0:h:step, 0:w:step]
    values = grey[::step, ::step].ravel().astype(np.float64)
    design = np.column_stack([np.ones(values.size), rows.ravel() / h, cols.ravel() / w])
    chosen = np.ones(values.size, bool)
    for _ in range(rounds):
        coef, *_ = np.linalg.lstsq(design[chosen], values[chosen], rcond=None)
        distance = np.abs(values - design @ coef)
        chosen = distance <= np.quantile(distance, keep)
    row_term = (coef[0] + coef[1] * np.arange(h) / h).astype(np.float32)
    col_term = (coef[2] * np.arange(w) / w).astype(np.float32)
    return row_term[:, None] + col_term[None, :]


def majority_3x3(mask: np.ndarray) -> np.ndarray:
    """A 3x3 median filter of a boolean mask: True where at least 5 of the 9 pixels are (edges padded False)."""
    padded = np.pad(mask, 1).astype(np.uint8)
    h, w = mask.shape
    count = sum(padded[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3))
    return count >= 5


def ink_bounding_box(ink: np.ndarray, threshold: float = INK_THRESHOLD) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right), bottom/right exclusive, of pixels above `threshold`; None if none.

    On large images, isolated specks (dust, JPEG artefacts) are ignored by taking the box of a 3x3
    median-filtered mask, as long as that still leaves some ink.
    """
    mask = ink > threshold
    if min(ink.shape) >= 64:
        smooth = majority_3x3(mask)
        if smooth.any():
            mask = smooth
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    """(row, column) of the intensity-weighted mean position, in index coordinates."""
    total = image.sum()
    rows = np.arange(image.shape[0], dtype=np.float64)
    cols = np.arange(image.shape[1], dtype=np.float64)
    return float(image.sum(axis=1) @ rows / total), float(image.sum(axis=0) @ cols / total)


def preprocess(source: ImageSource, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """MNIST-style input from any digit image.

    Parameters
    ----------
    source : PIL image, numpy array, path or bytes
        Any size, colour or greyscale, dark ink on light paper or light ink on dark. A numpy array
        is (H, W), (H, W, 3) or (H, W, 4), uint8 0-255 or float in [0, 1].
    max_pixels : int
        Larger images are refused.

    Returns
    -------
    np.ndarray, float32, shape (28, 28)
        Ink in [0, 1] on a 0 background, the digit fitted to 20x20 and centred by mass.

    Raises
    ------
    NoDigitError
        When the image holds no ink.
    ImageError
        When the source is not a readable image, or is too large; the message names the file.
    """
    grey = as_grey(source, max_pixels)
    paper = float(np.median(_border(grey)))
    if paper > 0.5:  # light paper, dark ink: invert so that ink is bright as in MNIST
        grey, paper = 1.0 - grey, 1.0 - paper
    ink = np.clip(grey - paper_surface(grey), 0, None)
    peak = float(ink.max())
    if peak < MIN_CONTRAST:
        raise NoDigitError(f"{_describe(source)}: no digit found, the image is blank "
                           f"(no pixel stands {MIN_CONTRAST:.0%} away from the paper)")
    ink /= peak
    top, bottom, left, right = ink_bounding_box(ink)  # never None here: the peak pixel is 1.0
    crop = np.where(ink[top:bottom, left:right] > INK_THRESHOLD / 2, ink[top:bottom, left:right], 0)

    height, width = crop.shape
    scale = BOX / max(height, width)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    scaled = Image.fromarray(crop.astype(np.float32)).resize(new_size, Image.Resampling.LANCZOS)
    digit = np.clip(np.asarray(scaled, dtype=np.float32), 0, None)
    if digit.max() <= 0:
        raise NoDigitError(f"{_describe(source)}: no digit found")
    digit = np.minimum(digit / digit.max(), 1.0)  # thin strokes lose contrast when shrunk; MNIST ink saturates

    cy, cx = centre_of_mass(digit)
    h, w = digit.shape
    top = min(max(round(CENTRE - cy), 0), SIZE - h)  # keep the whole digit inside the field
    left = min(max(round(CENTRE - cx), 0), SIZE - w)
    out = np.zeros((SIZE, SIZE), dtype=np.float32)
    out[top:top + h, left:left + w] = digit
    return out


def to_png(image: np.ndarray) -> bytes:
    """PNG bytes of a float image in [0, 1] (e.g. the 28x28 input the network saw)."""
    buffer = io.BytesIO()
    Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()
