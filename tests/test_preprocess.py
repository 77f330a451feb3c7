"""Tests for mnist_study.serving.preprocess: MNIST's own recipe, whatever the picture looks like."""

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mnist_study.serving.preprocess import (
    ImageError,
    ImageTooLargeError,
    NoDigitError,
    centre_of_mass,
    preprocess,
    to_png,
)



def seven(scale: int = 4, canvas: tuple[int, int] = (200, 160), at: tuple[int, int] = (30, 20),
          ink: int = 0, paper: int = 255, mode: str = "L") -> Image.Image:
    """A hand-drawn-looking 7 on a canvas: a bar and a slanted stroke, `scale` px per MNIST pixel."""
    image = Image.new(mode, canvas, paper if mode == "L" else (paper,) * len(mode))
    draw = ImageDraw.Draw(image)
    x, y, s = at[0], at[1], scale
    fill = ink if mode == "L" else (ink,) * len(mode)
    draw.line([(x, y), (x + 14 * s, y)], fill=fill, width=3 * s)
    draw.line([(x + 14 * s, y), (x + 5 * s, y + 20 * s)], fill=fill, width=3 * s)
    return image


def ink_box(x: np.ndarray, threshold: float = 0.0) -> tuple[int, int]:
    rows, cols = np.flatnonzero((x > threshold).any(1)), np.flatnonzero((x > threshold).any(0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def test_output_is_mnist_shaped_fitted_to_20_and_centred_by_mass():
    x = preprocess(seven())
    assert x.shape == (28, 28) and x.dtype == np.float32
    assert x.min() == 0 and x.max() == pytest.approx(1.0)
    assert max(ink_box(x)) == 20  # the longer side fills the 20x20 box
    cy, cx = centre_of_mass(x)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5  # whole-pixel shift, as in MNIST


def test_position_on_the_canvas_does_not_matter():
    a = preprocess(seven(at=(10, 10)))
    b = preprocess(seven(at=(120, 70), canvas=(300, 250)))
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_polarity_does_not_matter():
    dark_on_light = preprocess(seven(ink=0, paper=255))
    light_on_dark = preprocess(seven(ink=255, paper=0))
    np.testing.assert_allclose(dark_on_light, light_on_dark, atol=1e-5)


def test_size_does_not_matter_much():
    small, large = preprocess(seven(scale=2)), preprocess(seven(scale=6, canvas=(400, 400)))
    assert np.abs(small - large).mean() < 0.03


def test_aspect_ratio_is_kept():
    bar = Image.new("L", (100, 200), 255)
    ImageDraw.Draw(bar).rectangle([40, 20, 51, 139], fill=0)  # 12 x 120 px: 1:10
    height, width = ink_box(preprocess(bar), threshold=0.5)
    assert height == 20 and width == 2


def test_grey_paper_faint_ink_and_specks_are_handled():
    clean = preprocess(seven())
    noisy = np.asarray(seven(ink=110, paper=200), dtype=np.float32)  # grey paper, pencil-grey ink
    rng = np.random.default_rng(0)
    noisy = noisy + rng.normal(0, 4, noisy.shape)  # paper texture
    noisy[150, 190] = noisy[5, 180] = 0  # two specks of dust, far from the digit
    noisy = np.clip(noisy, 0, 255).astype(np.uint8)
    assert np.abs(preprocess(noisy) - clean).mean() < 0.03


def test_every_kind_of_source_gives_the_same_input(tmp_path):
    image = seven()
    expected = preprocess(image)
    path = tmp_path / "seven.png"
    image.save(path)
    rgba = Image.new("RGBA", image.size, (0, 0, 0, 0))  # dark ink on a transparent background
    rgba.putalpha(Image.eval(image, lambda v: 255 - v))
    sources = {
        "path": path, "str": str(path), "bytes": path.read_bytes(), "rgb": image.convert("RGB"),
        "uint8 array": np.asarray(image), "float array": np.asarray(image) / 255.0,
        "rgb array": np.asarray(image.convert("RGB")), "transparent png": rgba,
    }
    for name, source in sources.items():
        np.testing.assert_allclose(preprocess(source), expected, atol=2e-3, err_msg=name)


def test_jpeg_artefacts_barely_change_the_input(tmp_path):
    buffer = io.BytesIO()
    seven().convert("RGB").save(buffer, format="JPEG", quality=70)
    assert np.abs(preprocess(buffer.getvalue()) - preprocess(seven())).mean() < 0.02


@pytest.mark.parametrize("paper", [255, 0, 128])
def test_blank_images_have_no_digit(paper):
    with pytest.raises(NoDigitError, match="no digit"):
        preprocess(Image.new("L", (80, 60), paper))


def test_paper_texture_alone_is_no_digit():
    texture = np.clip(np.random.default_rng(1).normal(240, 3, (120, 120)), 0, 255).astype(np.uint8)
    with pytest.raises(NoDigitError):
        preprocess(texture)


def test_non_images_are_errors_that_name_the_file(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    with pytest.raises(ImageError, match="notes.png: not an image"):
        preprocess(text)
    with pytest.raises(ImageError, match="missing.jpg: no such file"):
        preprocess(tmp_path / "missing.jpg")
    truncated = tmp_path / "truncated.png"
    seven().save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(ImageError, match="truncated.png"):
        preprocess(truncated)
    with pytest.raises(ImageError, match="not an image"):
        preprocess(b"\x89PNG but not really")


def test_bad_arrays_are_refused():
    with pytest.raises(ImageError, match=r"\[0, 1\]"):
        preprocess(np.full((28, 28), 3.0))
    with pytest.raises(ImageError, match="shape"):
        preprocess(np.zeros((2, 28, 28)))


def test_decompression_bombs_are_refused(tmp_path, monkeypatch):
    # A 6000x6000 1-bit PNG is a few kB on disk and 36 megapixels decoded: over our limit.
    bomb = tmp_path / "bomb.png"
    Image.new("1", (6000, 6000), 1).save(bomb, optimize=True)
    assert bomb.stat().st_size < 100_000
    with pytest.raises(ImageTooLargeError, match="bomb.png: refused"):
        preprocess(bomb)
    with pytest.raises(ImageTooLargeError):
        preprocess(seven(), max_pixels=1000)
    # Pillow's own guard (a warning above MAX_IMAGE_PIXELS, an error above twice that) is an error too.
    small = io.BytesIO()
    seven().save(small, format="PNG")  # 200 x 160 = 32,000 pixels
    for limit in (20_000, 10_000):
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
        with pytest.raises(ImageTooLargeError, match="too large to decode safely"):
            preprocess(small.getvalue())


def test_to_png_round_trips_the_input():
    x = preprocess(seven())
    back = np.asarray(Image.open(io.BytesIO(to_png(x))), dtype=np.float32) / 255
    assert back.shape == (28, 28) and np.abs(back - x).max() <= 0.5 / 255 + 1e-6


def test_mnist_digits_are_nearly_fixed_points(mnist):
    """MNIST was made by this recipe, so its digits should come back almost unchanged."""
    images = mnist.test_images[:300]
    changed = np.array([np.abs(preprocess(im) - im / 255.0).mean() for im in images])
    assert np.median(changed) < 0.005 and changed.mean() < 0.01


def test_arrays_of_any_integer_dtype_and_either_polarity_are_read_alike():
    from conftest import synthetic_digits

    from mnist_study.serving.classifier import as_inputs
    from mnist_study.serving.preprocess import ImageError

    digits, _ = synthetic_digits(3, seed=2)           # light ink on black, as MNIST
    digits[:, 0, :] = digits[:, -1, :] = 0             # a clean border
    digits[:, :, 0] = digits[:, :, -1] = 0
    expected = as_inputs(digits)
    np.testing.assert_array_equal(as_inputs(digits.astype(np.int64)), expected)
    np.testing.assert_allclose(as_inputs(255 - digits), expected, atol=1e-6)   # dark on light: inverted
    np.testing.assert_allclose(as_inputs(1.0 - digits / 255.0), expected, atol=1e-6)
    with pytest.raises(ImageError, match="0-255"):
        as_inputs(np.full((28, 28), 300))
    with pytest.raises(ImageError, match="divide 0-255 values by 255"):
        as_inputs(np.full((28, 28), 200.0))


def test_a_shadow_gradient_is_flattened_before_the_ink_is_found():
    """A dark digit on paper that darkens from 95% to 45% across the photo: the crop must hold the
    digit only, so the result matches the same digit on even paper."""
    from PIL import ImageDraw

    def photo(shadow: bool) -> np.ndarray:
        page = Image.new("L", (400, 300), 255)
        ImageDraw.Draw(page).line([(180, 80), (230, 80), (200, 220)], fill=20, width=14)  # a 7
        paper = np.asarray(page, np.float32) / 255
        if shadow:
            paper = paper * np.linspace(0.95, 0.45, 400, dtype=np.float32)[None, :]
        return paper

    even, shaded = preprocess(photo(False)), preprocess(photo(True))
    assert np.abs(even - shaded).mean() < 0.02
    assert shaded[:, :3].max() < 0.05 and shaded[:, -3:].max() < 0.05  # no gradient left at the edges
