"""IDX reading and writing: round trips, and a precise DataError for every kind of damage."""

import gzip
import hashlib
import struct
import zlib

import numpy as np
import pytest

from mnist_study.errors import DataError
from mnist_study.data.idx import encode_idx, read_idx, sha256_uncompressed, write_idx

rng = np.random.default_rng(0)
IMAGES = rng.integers(0, 256, size=(12, 28, 28), dtype=np.uint8)
LABELS = rng.integers(0, 10, size=12, dtype=np.uint8)


def header(ndim: int, *dims: int, dtype_code: int = 0x08) -> bytes:
    return struct.pack(f">HBB{len(dims)}I", 0, dtype_code, ndim, *dims)


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("array", [IMAGES, LABELS], ids=["images", "labels"])
def test_write_then_read_round_trips(tmp_path, array, compress):
    path = tmp_path / "file"
    write_idx(path, array, compress=compress)
    assert path.read_bytes().startswith(b"\x1f\x8b") == compress
    loaded = read_idx(path, ndim=array.ndim)
    assert loaded.dtype == np.uint8
    np.testing.assert_array_equal(loaded, array)
    loaded[0] = 1  # callers may normalise in place: the array must own writable memory


def test_gzip_is_detected_by_content_not_by_name(tmp_path):
    gzipped_without_suffix = tmp_path / "train-images-idx3-ubyte"
    raw_with_suffix = tmp_path / "t10k-images-idx3-ubyte.gz"
    write_idx(gzipped_without_suffix, IMAGES, compress=True)
    write_idx(raw_with_suffix, IMAGES, compress=False)
    np.testing.assert_array_equal(read_idx(gzipped_without_suffix), IMAGES)
    np.testing.assert_array_equal(read_idx(raw_with_suffix), IMAGES)


def test_header_matches_mnist_layout():
    # MNIST's label file starts 00 00 08 01 then the count (0x00002710 = 10000 for t10k).
    labels = np.zeros(10000, dtype=np.uint8)
    assert encode_idx(labels)[:8] == bytes.fromhex("00000801 00002710")


def test_sha256_is_of_uncompressed_bytes(tmp_path):
    write_idx(tmp_path / "a.gz", IMAGES, compress=True)
    write_idx(tmp_path / "a", IMAGES, compress=False)
    expected = hashlib.sha256(encode_idx(IMAGES)).hexdigest()
    assert sha256_uncompressed(tmp_path / "a.gz") == sha256_uncompressed(tmp_path / "a") == expected


def test_gzipped_output_is_deterministic(tmp_path):
    write_idx(tmp_path / "a", IMAGES, compress=True)
    write_idx(tmp_path / "b", IMAGES, compress=True)
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()


def test_write_accepts_int64_labels_that_fit_and_rejects_the_rest(tmp_path):
    write_idx(tmp_path / "labels", LABELS.astype(np.int64), compress=False)
    np.testing.assert_array_equal(read_idx(tmp_path / "labels"), LABELS)
    with pytest.raises(ValueError, match="uint8"):
        write_idx(tmp_path / "x", np.array([0, 256]), compress=False)
    with pytest.raises(ValueError, match="dtype float"):
        write_idx(tmp_path / "x", IMAGES / 255.0, compress=False)
    assert not (tmp_path / "x").exists()


def write_bytes(path, data: bytes, compress: bool = False):
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@pytest.mark.parametrize("compress", [True, False])
def test_bad_magic(tmp_path, compress):
    path = write_bytes(tmp_path / "bad", b"\x01\x02\x08\x01" + b"\x00" * 8, compress)
    with pytest.raises(DataError, match="is not an IDX file: it starts with bytes 01 02 08 01"):
        read_idx(path)


def test_unsupported_dtype_is_named(tmp_path):
    path = write_bytes(tmp_path / "floats", header(1, 1, dtype_code=0x0D) + b"\x00" * 4)
    with pytest.raises(DataError, match=r"dtype code 0x0D \(float32\); only 0x08"):
        read_idx(path)


def test_wrong_ndim(tmp_path):
    write_idx(tmp_path / "images", IMAGES, compress=True)
    with pytest.raises(DataError, match="has 3 dimensions, expected 1"):
        read_idx(tmp_path / "images", ndim=1)


def test_header_cut_short(tmp_path):
    path = write_bytes(tmp_path / "short", header(3, 12)[:8])
    with pytest.raises(DataError, match="truncated inside its header: 3 dimensions need 16"):
        read_idx(path)
    with pytest.raises(DataError, match="too short to be an IDX file"):
        read_idx(write_bytes(tmp_path / "tiny", b"\x00\x00"))


@pytest.mark.parametrize("compress", [True, False])
def test_truncated_payload_names_file_sizes_and_fix(tmp_path, compress):
    path = write_bytes(tmp_path / "images.gz", encode_idx(IMAGES)[: 16 + 100], compress)
    with pytest.raises(DataError) as caught:
        read_idx(path, hint="Delete it and fetch it again.")
    message = str(caught.value)
    assert str(path) in message
    assert "is truncated: header says 12x28x28 = 9408 bytes of data, found 100." in message
    assert message.endswith("Delete it and fetch it again.")


def test_trailing_bytes(tmp_path):
    path = write_bytes(tmp_path / "labels", encode_idx(LABELS) + b"junk", compress=True)
    with pytest.raises(DataError, match="4 bytes of trailing garbage: header says 12 = 12 bytes"):
        read_idx(path)


def test_corrupt_gzip_streams_raise_data_error(tmp_path):
    stream = gzip.compress(encode_idx(IMAGES))
    cut_short = write_bytes(tmp_path / "cut.gz", stream[: len(stream) // 2])
    flipped = bytearray(stream)
    flipped[len(stream) // 2] ^= 0xFF
    scrambled = write_bytes(tmp_path / "scrambled.gz", bytes(flipped))
    for path in (cut_short, scrambled):
        with pytest.raises(DataError, match="is a damaged gzip stream") as caught:
            read_idx(path)
        # The message replaces zlib's/gzip's own exception instead of chaining a traceback to it.
        assert not isinstance(caught.value.__cause__, (zlib.error, EOFError, OSError))
        assert str(path) in str(caught.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="cannot read .*nothing"):
        read_idx(tmp_path / "nothing")
