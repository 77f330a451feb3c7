"""Properties that hold for any input, checked on inputs hypothesis generates (bounded in number,
so that the whole file runs in seconds):

- the IDX reader: any bytes parse to the shape the header declares, or raise DataError; never
  another exception, and never an allocation the size of a lying header;
- image preprocessing: any array, any PIL image (every mode, size and bit depth) and any encoded
  file give a 28x28 float32 input in [0, 1], or an ImageError;
- the study parser: any TOML-shaped data (nested tables, arrays, scalars) gives a Study, or a
  StudyError that names the file;
- the claim grammar: any string parses to a Check, or raises CheckSyntaxError.
"""

from __future__ import annotations

import gzip
import io
import math
import struct
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from mnist_study.data.idx import CHUNK, parse_idx, read_idx_file
from mnist_study.errors import DataError, StudyError
from mnist_study.serving.preprocess import ImageError, preprocess
from mnist_study.stats.checks import CheckSyntaxError, parse_check
from mnist_study.study import Study
from mnist_study.studies import parse_study, study_from_data

MIB = 1 << 20
# Examples per property (also quoted in BENCHMARKS.md). deadline=None: the first examples pay for
# imports and caches, and timing is not what these tests are about.
IDX_EXAMPLES = 400
IDX_FILE_EXAMPLES = 100
ARRAY_EXAMPLES = 250
PIL_EXAMPLES = 200
ENCODED_EXAMPLES = 120
STUDY_DATA_EXAMPLES = 300
STUDY_TEXT_EXAMPLES = 200
CHECK_TEXT_EXAMPLES = 400
CHECK_TOKEN_EXAMPLES = 400

quick = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ------------------------------------------------------------------------------------------ IDX

@st.composite
def idx_files(draw) -> tuple[bytes, bytes]:
    """(the file's bytes, its uncompressed bytes): mostly IDX-shaped, with every field able to lie."""
    if draw(st.integers(0, 5)) == 0:
        plain = draw(st.binary(max_size=300))
    else:
        zero = draw(st.sampled_from([0, 0, 0, 0, 1, 0x1F8B]))
        dtype = draw(st.sampled_from([0x08, 0x08, 0x08, 0x08, 0x09, 0x0D, 0x00, 0xFF]))
        dims = draw(st.lists(st.one_of(st.integers(0, 5), st.integers(0, 40), st.integers(0, 2**32 - 1)),
                             max_size=5))
        ndim = draw(st.sampled_from([len(dims)] * 6 + [0, 1, 3, 255]))
        head = struct.pack(f">HBB{len(dims)}I", zero, dtype, ndim, *dims)
        declared = math.prod(dims) if dims else 1
        size = draw(st.sampled_from(["exact", "exact", "short", "long", "any"]))
        n = {"exact": declared, "short": declared - 1, "long": declared + draw(st.integers(1, 50)),
             "any": draw(st.integers(0, 400))}[size]
        n = max(0, min(n, 5000))  # a lying header is given a small payload
        body = draw(st.binary(min_size=n, max_size=n)) if n <= 64 else bytes(range(256)) * (n // 256) + bytes(n % 256)
        plain = head[:draw(st.integers(0, len(head)))] + body if draw(st.integers(0, 9)) == 0 else head + body
    data = gzip.compress(plain, mtime=0) if draw(st.booleans()) else plain
    if data is not plain and draw(st.integers(0, 4)) == 0:
        data = data[:draw(st.integers(0, len(data)))]  # a cut gzip stream
    return data, plain


def _expected(plain: bytes, ndim: int | None) -> np.ndarray | None:
    """What a correct reader returns for uncompressed `plain`, or None where it must refuse it."""
    if len(plain) < 4 or plain[:2] != b"\0\0" or plain[2] != 0x08 or (ndim is not None and plain[3] != ndim):
        return None
    shape = struct.unpack(f">{plain[3]}I", plain[4:4 + 4 * plain[3]]) if len(plain) >= 4 + 4 * plain[3] else None
    if shape is None or len(plain) - 4 - 4 * len(shape) != math.prod(shape):
        return None
    try:
        return np.frombuffer(plain, np.uint8, offset=4 + 4 * len(shape)).reshape(shape)
    except ValueError:  # a shape numpy cannot hold (0 x 2**32-1 x ...): the reader must refuse it too
        return None


@settings(max_examples=IDX_EXAMPLES, **quick)
@given(idx_files(), st.sampled_from([None, 1, 3]))
def test_idx_bytes_parse_to_their_shape_or_raise_data_error(file, ndim):
    data, plain = file
    tracemalloc.start()
    try:
        try:
            array = parse_idx(data, "prop.idx", ndim=ndim)
        except DataError as error:
            array = None
            assert str(error).startswith("prop.idx")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    content = _content(data)
    expected = None if content is None else _expected(content, ndim)
    if expected is None:
        assert array is None
    else:
        assert array is not None and array.shape == expected.shape and array.dtype == np.uint8
        assert array.tobytes() == expected.tobytes()
    # A read may allocate a chunk however little it returns; beyond that, only what is really there.
    assert peak < 3 * CHUNK + 4 * len(plain), f"allocated {peak} bytes for a {len(plain)}-byte file"


def _content(data: bytes) -> bytes | None:
    """What the reader must see in `data`: gunzipped when it starts like gzip (None if damaged)."""
    if not data.startswith(b"\x1f\x8b"):
        return data
    try:
        return gzip.decompress(data)
    except Exception:  # noqa: BLE001 -- any failure means the stream is damaged
        return None


@settings(max_examples=IDX_FILE_EXAMPLES, **quick)
@given(idx_files())
def test_idx_files_read_as_their_bytes_parse(file):
    """Reading from disk (streamed) agrees with parsing the same bytes in memory."""
    data, _ = file
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "f"
        path.write_bytes(data)
        try:
            from_disk = read_idx_file(path, ndim=None).array
        except DataError as error:
            from_disk = type(error)
        try:
            in_memory = parse_idx(data, path)
        except DataError as error:
            in_memory = type(error)
    if isinstance(in_memory, np.ndarray):
        assert isinstance(from_disk, np.ndarray) and np.array_equal(from_disk, in_memory)
    else:
        assert from_disk is DataError


# --------------------------------------------------------------------------------------- images

def _check_input(source) -> None:
    try:
        x = preprocess(source)
    except ImageError as error:
        assert str(error)  # says something
        return
    assert x.shape == (28, 28) and x.dtype == np.float32
    assert np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1
    assert x.max() == 1  # the ink is stretched to full scale


DTYPES = [np.bool_, np.uint8, np.uint16, np.uint32, np.int8, np.int16, np.int32, np.int64, np.float16,
          np.float32, np.float64, np.complex64, np.dtype("U2"), np.dtype("S2"), np.dtype("M8[s]")]
SHAPES = st.one_of(
    hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=40),
    st.tuples(st.integers(0, 30), st.integers(0, 30), st.sampled_from([1, 2, 3, 4, 5])),
    hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6),
)


@st.composite
def image_arrays(draw) -> np.ndarray:
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    # No subnormal floats: training in this process (tiny_run) turns on flush-to-zero, under which
    # hypothesis cannot make them.
    elements = hnp.from_dtype(dtype, allow_subnormal=False) if dtype.kind in "fc" else None
    return draw(hnp.arrays(dtype, SHAPES, elements=elements))


@settings(max_examples=ARRAY_EXAMPLES, **quick)
@given(image_arrays())
def test_any_array_gives_an_input_or_an_image_error(array):
    _check_input(array)


@settings(max_examples=ARRAY_EXAMPLES // 5, **quick)
@given(st.integers(3, 40), st.integers(1, 40), st.sampled_from([np.uint8, np.uint16, np.float32, np.bool_]))
def test_a_drawn_bar_is_found_in_any_array_type(height, width, dtype):
    """Not only no crash: a bright bar with black above and below it, in any dtype and at any size,
    comes out as ink on the input."""
    array = np.zeros((height, width), dtype=np.float64)
    array[height // 3: height // 3 + max(1, height // 4), :] = 1
    scale = {np.uint8: 255, np.uint16: 65535}.get(dtype, 1)
    x = preprocess((array * scale).astype(dtype))
    assert x.max() == 1 and x.sum() > 5


MODES = ["1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "I", "F", "LA", "PA", "RGBX", "RGBa", "La",
         "I;16", "I;16L", "I;16B", "I;16N"]


@st.composite
def pil_images(draw) -> Image.Image:
    mode = draw(st.sampled_from(MODES))
    size = (draw(st.integers(0, 40)), draw(st.integers(0, 40)))
    n_bytes = len(Image.new(mode, size).tobytes())
    raw = draw(st.binary(min_size=n_bytes, max_size=n_bytes)) if n_bytes <= 512 else \
        np.random.default_rng(draw(st.integers(0, 2**32 - 1))).integers(0, 256, n_bytes, dtype=np.uint8).tobytes()
    image = Image.frombytes(mode, size, raw)
    if mode == "P" and draw(st.booleans()):
        image.info["transparency"] = draw(st.integers(0, 255))
    return image


@settings(max_examples=PIL_EXAMPLES, **quick)
@given(pil_images())
def test_any_pil_image_gives_an_input_or_an_image_error(image):
    _check_input(image)


FORMATS = {"PNG": ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"], "JPEG": ["L", "RGB", "CMYK"], "GIF": ["L", "P"],
           "BMP": ["1", "L", "P", "RGB"], "TIFF": ["1", "L", "RGB", "RGBA", "CMYK", "I;16", "F"],
           "WEBP": ["RGB", "RGBA"], "PPM": ["L", "RGB"]}


@st.composite
def encoded_images(draw) -> bytes:
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    mode = draw(st.sampled_from(FORMATS[fmt]))
    size = (draw(st.integers(1, 48)), draw(st.integers(1, 48)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    image = Image.new(mode, size)
    image.frombytes(rng.integers(0, 256, len(image.tobytes()), dtype=np.uint8).tobytes())
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    data = buffer.getvalue()
    cut = draw(st.sampled_from(["whole", "whole", "cut", "flipped"]))
    if cut == "cut":
        data = data[:draw(st.integers(0, len(data)))]
    elif cut == "flipped":
        index = draw(st.integers(0, len(data) - 1))
        data = data[:index] + bytes([data[index] ^ 0xFF]) + data[index + 1:]
    return data


@settings(max_examples=ENCODED_EXAMPLES, **quick)
@given(st.one_of(encoded_images(), st.binary(max_size=200)))
def test_any_file_gives_an_input_or_an_image_error(data):
    _check_input(data)


# -------------------------------------------------------------------------------------- studies

KEYS = ["name", "description", "reference_source", "experiment", "claim", "note", "extends", "only",
        "every_experiment", "title", "hidden", "frontend", "kind", "variance", "n_pixels", "n_trees", "l2",
        "max_epochs", "early_stopping", "patience", "keep", "validation", "validation_size", "train_size",
        "batch_size", "learning_rate", "reference", "train", "test", "text", "checks", "margin", "show"]
WORDS = ["a", "b", "s", "exp1", "raw", "pca", "forest_pixels", "last", "first", "final", "best_val_loss", "quick",
         "paper", "a.test > 1", "a.test ~ b.test", "first_epoch", "pattern:a", "", "../x", "nowhere.toml"]
scalars = st.one_of(st.booleans(), st.integers(-2**63, 2**63 - 1), st.integers(-3, 300), st.floats(allow_subnormal=False),
                    st.text(max_size=12), st.sampled_from(WORDS), st.dates(), st.datetimes(), st.times())
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=6))
toml_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
                           max_leaves=25)


@st.composite
def near_studies(draw) -> dict:
    """A valid study with some of its values and keys replaced: reaches the deeper checks."""
    experiments = [{"name": f"e{i}", "hidden": draw(st.integers(1, 20))} for i in range(draw(st.integers(1, 3)))]
    study = {"name": "s", "experiment": experiments}
    for _ in range(draw(st.integers(0, 4))):
        target = draw(st.sampled_from([study, *experiments]))
        target[draw(keys)] = draw(toml_values)
    if draw(st.booleans()):
        study["claim"] = [{"name": "c", "text": "t", "checks": [draw(st.sampled_from(WORDS)), "e0.test > 1"]}]
    return study


@settings(max_examples=STUDY_DATA_EXAMPLES, **quick)
@given(st.one_of(st.dictionaries(keys, toml_values, max_size=6), near_studies()))
def test_any_toml_data_gives_a_study_or_a_study_error_naming_the_file(data):
    with tempfile.TemporaryDirectory() as folder:  # where a relative `extends` is looked for: empty
        try:
            study = study_from_data(data, "prop.toml", Path(folder))
        except StudyError as error:
            assert "prop.toml" in str(error)
            return
    assert isinstance(study, Study) and study.experiments


@settings(max_examples=STUDY_TEXT_EXAMPLES, **quick)
@given(st.one_of(st.text(max_size=200), st.lists(st.sampled_from(
    ['name = "s"\n', "[[experiment]]\n", 'name = "a"\n', "hidden = 3\n", "hidden = inf\n", "x = [[[1]]]\n",
     "learning_rate = nan\n", "[every_experiment]\n", 'extends = "quick"\n', "[", "]", "{", "}", "=", '"', "\n"]),
    max_size=30).map("".join)))
def test_any_text_gives_a_study_or_a_study_error(text):
    try:
        parse_study(text, "prop.toml")
    except StudyError as error:
        assert "prop.toml" in str(error)


# ---------------------------------------------------------------------------------------- claims

def _check_parsed(text: str) -> None:
    try:
        check = parse_check(text)
    except CheckSyntaxError as error:
        assert str(error).startswith(f"check {text!r}")
        return
    assert check.text == text and check.op in (">", ">=", "~")
    for value in (check.left.offset, check.right.offset, check.by_more_than, check.within):
        assert value is None or math.isfinite(value)
    assert check.by_more_than is None or check.op == ">"


@settings(max_examples=CHECK_TEXT_EXAMPLES, **quick)
@given(st.text(max_size=80))
def test_any_string_is_a_check_or_a_check_syntax_error(text):
    _check_parsed(text)


TOKENS = ["a.test", "exp-1.train", "b.validation", "x.TEST", "a.foo", "a.", ".test", "<", ">", "<=", ">=", "~", "≤",
          "≥", "≈", "!=", "==", "=>", "by", "more", "than", "within", "points", "pt", "+", "-", "−", "%", "1", "2.5",
          ".5", "99%", "9" * 400, "1e5", "٣", "test", "", " "]


@settings(max_examples=CHECK_TOKEN_EXAMPLES, **quick)
@given(st.lists(st.sampled_from(TOKENS), max_size=9), st.sampled_from([" ", ""]))
def test_any_sequence_of_grammar_tokens_is_a_check_or_a_check_syntax_error(tokens, separator):
    _check_parsed(separator.join(tokens))


def test_well_formed_checks_still_parse():
    """The properties above would hold for a parser that refused everything: it does not."""
    for text in ["a.test > b.test by more than 2 points", "a.test >= 90%", "a.train ~ b.train within 0.5",
                 "a.test - 3 < b.test + 1.5", "x.validation ≈ 97.5"]:
        assert parse_check(text).text == text
    assert parse_study('name = "s"\n[[experiment]]\nname = "a"\nhidden = 3\n').experiments[0].hidden == 3


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_of_a_drawn_bar_is_read(mode):
    """Every PIL mode of an image with ink in it gives an input with that ink: none is refused for
    its mode (LAB and the premultiplied La and RGBa once were)."""
    grey = np.zeros((30, 30), np.uint8)
    grey[5:25, 12:18] = 255
    plain = Image.fromarray(grey)
    try:
        image = plain.convert(mode)
    except ValueError:  # Pillow reaches some modes only from RGB
        image = plain.convert("RGB").convert(mode)
    assert image.mode == mode
    x = preprocess(image)
    assert x.max() == 1 and x.sum() > 5
    assert np.abs(x - preprocess(plain)).mean() < 0.02  # the same bar, whatever the mode
