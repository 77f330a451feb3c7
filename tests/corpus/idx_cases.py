"""Bad data folders for `mnist-study data --data-dir FOLDER`: one damaged or hostile file each,
beside three good ones (a tiny dataset: 20 training and 10 test images)."""

from __future__ import annotations

import gzip
import struct
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np

from corpus.cases import Case
from mnist_study.data.idx import encode_idx

TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"
BOMB_BYTES = 64 << 20  # zeros behind a header: 64 MiB that gzip to under 300 kB

_rng = np.random.default_rng(7)
GOOD = {
    TRAIN_IMAGES: _rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
    TRAIN_LABELS: np.arange(20, dtype=np.uint8) % 10,
    TEST_IMAGES: _rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
    TEST_LABELS: np.arange(10, dtype=np.uint8),
}


def header(*dims: int, dtype_code: int = 0x08, ndim: int | None = None) -> bytes:
    """An IDX header: 00 00 <dtype> <ndim> and the dimensions (ndim may lie about their count)."""
    return struct.pack(f">HBB{len(dims)}I", 0, dtype_code, len(dims) if ndim is None else ndim, *dims)


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


@lru_cache(maxsize=None)
def zeros_gz(prefix: bytes, n_zeros: int) -> bytes:
    """`prefix` then `n_zeros` zero bytes, gzipped, made without ever holding the zeros whole."""
    packer = zlib.compressobj(1, zlib.DEFLATED, 31)  # wbits 31: a gzip container; level 1: fast to make
    block = bytes(1 << 20)
    parts = [packer.compress(prefix)]
    for start in range(0, n_zeros, len(block)):
        parts.append(packer.compress(block[: min(len(block), n_zeros - start)]))
    parts.append(packer.flush())
    return b"".join(parts)


def good_bytes(name: str) -> bytes:
    return encode_idx(GOOD[name])


def write_dataset(folder: Path, bad: dict[str, bytes] | None = None) -> Path:
    """The tiny good dataset in `folder`, gzipped, with each file in `bad` replaced by its bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    bad = bad or {}
    for name in GOOD:
        if name in bad:
            (folder / name).write_bytes(bad[name])  # gzipped or not, readers go by the content
        else:
            (folder / f"{name}.gz").write_bytes(gz(good_bytes(name)))
    return folder


def _case(name: str, file: str, payload: Callable[[], bytes], expect: str) -> Case:
    return Case(f"idx-{name}", "idx", lambda folder: write_dataset(folder, {file: payload()}), expect)


def _flip_middle(data: bytes) -> bytes:
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    return bytes(flipped)


def _bad_crc(data: bytes) -> bytes:
    """A gzip stream whose deflate data is intact but whose CRC-32 trailer is wrong."""
    stream = bytearray(gz(data))
    stream[-8] ^= 0xFF
    return bytes(stream)


def _folder_case(name: str, make: Callable[[Path], Path], expect: str) -> Case:
    return Case(f"idx-{name}", "idx", make, expect)


def _directory_as_file(folder: Path) -> Path:
    write_dataset(folder)
    (folder / f"{TRAIN_IMAGES}.gz").unlink()
    (folder / TRAIN_IMAGES).mkdir()
    return folder


def _missing_file(folder: Path) -> Path:
    write_dataset(folder)
    (folder / f"{TEST_LABELS}.gz").unlink()
    return folder


def _symlink_loop(folder: Path) -> Path:
    write_dataset(folder)
    (folder / f"{TEST_IMAGES}.gz").unlink()
    (folder / TEST_IMAGES).symlink_to(folder / TEST_IMAGES)
    return folder


def _not_a_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "data").write_text("not a folder")
    return folder / "data"


def _no_such_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    return folder / "nowhere"


def _empty_split(folder: Path) -> Path:
    return write_dataset(folder, {TEST_IMAGES: header(0, 28, 28), TEST_LABELS: header(0)})


TRAIN_IMAGES_BYTES = lambda: good_bytes(TRAIN_IMAGES)  # noqa: E731
TRAIN_LABELS_BYTES = lambda: good_bytes(TRAIN_LABELS)  # noqa: E731

IDX_CASES: list[Case] = [
    # not IDX at all
    _case("bad-magic-ff", TRAIN_IMAGES, lambda: b"\xff\xff\x08\x03" + bytes(12 + 20 * 784), "is not an IDX file"),
    _case("bad-magic-png", TRAIN_IMAGES, lambda: b"\x89PNG\r\n\x1a\n" + bytes(100), "is not an IDX file"),
    _case("bad-magic-text", TRAIN_LABELS, lambda: b"label,digit\n0,5\n1,3\n", "is not an IDX file"),
    _case("bad-magic-zip", TRAIN_LABELS, lambda: b"PK\x03\x04" + bytes(60), "is not an IDX file"),
    _case("bad-magic-gzipped", TEST_IMAGES, lambda: gz(b"\x01\x02\x08\x03" + bytes(100)), "is not an IDX file"),
    _case("bad-magic-one-zero", TEST_LABELS, lambda: b"\x00\x01\x08\x01" + bytes(14), "is not an IDX file"),
    # a dtype other than uint8
    *[_case(f"dtype-{code:02x}", TRAIN_IMAGES, lambda code=code: header(20, 28, 28, dtype_code=code) + bytes(20 * 784),
            f"dtype code 0x{code:02X}") for code in (0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0x42, 0xFF)],
    # the wrong number of dimensions
    _case("images-ndim-0", TRAIN_IMAGES, lambda: header(ndim=0), "has 0 dimensions, expected 3"),
    _case("images-ndim-2", TRAIN_IMAGES, lambda: header(20, 784) + bytes(20 * 784), "has 2 dimensions, expected 3"),
    _case("images-ndim-4", TRAIN_IMAGES, lambda: header(20, 28, 28, 1) + bytes(20 * 784), "has 4 dimensions, expected 3"),
    _case("labels-ndim-3", TRAIN_LABELS, lambda: header(20, 1, 1) + bytes(20), "has 3 dimensions, expected 1"),
    _case("labels-ndim-255", TEST_LABELS, lambda: header(ndim=255) + bytes(8), "has 255 dimensions, expected 1"),
    # too short for a header
    _case("empty-file", TRAIN_IMAGES, lambda: b"", "too short to be an IDX file"),
    _case("three-bytes", TRAIN_LABELS, lambda: b"\x00\x00\x08", "too short to be an IDX file"),
    _case("empty-gzip", TEST_LABELS, lambda: gz(b""), "too short to be an IDX file"),
    _case("header-cut", TRAIN_IMAGES, lambda: header(20, 28, 28)[:9], "truncated inside its header"),
    _case("header-cut-gzipped", TEST_IMAGES, lambda: gz(header(10, 28, 28)[:12]), "truncated inside its header"),
    _case("header-magic-only", TRAIN_IMAGES, lambda: header(20, 28, 28)[:4], "truncated inside its header"),
    # a payload shorter than the header says
    _case("payload-truncated", TRAIN_IMAGES, lambda: TRAIN_IMAGES_BYTES()[:5000], "is truncated: header says 20x28x28"),
    _case("payload-truncated-gzipped", TRAIN_IMAGES, lambda: gz(TRAIN_IMAGES_BYTES()[:5000]),
          "is truncated: header says 20x28x28"),
    _case("payload-missing", TEST_IMAGES, lambda: header(10, 28, 28), "is truncated: header says 10x28x28"),
    _case("labels-truncated-gzipped", TRAIN_LABELS, lambda: gz(TRAIN_LABELS_BYTES()[:15]), "is truncated: header says 20"),
    # dimensions that lie: refused before anything the size of the lie is allocated
    _case("lying-count-raw", TRAIN_IMAGES, lambda: header(2**32 - 1, 28, 28) + bytes(784),
          "is truncated: header says 4294967295x28x28"),
    _case("lying-count-gzipped", TRAIN_IMAGES, lambda: gz(header(2**32 - 1, 28, 28) + bytes(784)),
          "truncated or its header lies"),
    _case("lying-sides-gzipped", TEST_IMAGES, lambda: gz(header(10, 65535, 65535) + bytes(7840)),
          "truncated or its header lies"),
    _case("lying-labels-raw", TRAIN_LABELS, lambda: header(2**32 - 1) + bytes(20), "is truncated: header says 4294967295"),
    _case("lying-labels-gzipped", TEST_LABELS, lambda: gz(header(2**31) + bytes(10)), "truncated or its header lies"),
    _case("lying-255-dims", TEST_LABELS, lambda: gz(header(*[2**32 - 1] * 255)), "has 255 dimensions, expected 1"),
    # more data than the header says
    _case("trailing-raw", TRAIN_LABELS, lambda: TRAIN_LABELS_BYTES() + b"junk", "4 bytes of trailing garbage"),
    _case("trailing-gzipped", TRAIN_LABELS, lambda: gz(TRAIN_LABELS_BYTES() + b"junk"), "4 bytes of trailing garbage"),
    _case("trailing-second-gzip-member", TEST_LABELS, lambda: gz(good_bytes(TEST_LABELS)) + gz(b"more"),
          "4 bytes of trailing garbage"),
    # gzip bombs: megabytes of zeros behind a valid header
    _case("bomb-behind-labels", TRAIN_LABELS, lambda: zeros_gz(TRAIN_LABELS_BYTES(), BOMB_BYTES),
          "more than 1048576 bytes of trailing garbage"),
    _case("bomb-behind-images", TRAIN_IMAGES, lambda: zeros_gz(TRAIN_IMAGES_BYTES(), BOMB_BYTES),
          "more than 1048576 bytes of trailing garbage"),
    _case("bomb-honest-labels", TRAIN_LABELS, lambda: zeros_gz(header(BOMB_BYTES), BOMB_BYTES),
          f"has {BOMB_BYTES} labels but"),
    _case("bomb-honest-images", TEST_IMAGES, lambda: zeros_gz(header(BOMB_BYTES // 784, 28, 28), BOMB_BYTES // 784 * 784),
          "has 10 labels but"),
    _case("bomb-beyond-deflate", TEST_LABELS, lambda: zeros_gz(header(2**32 - 1), 1 << 20), "truncated or its header lies"),
    _case("bomb-second-member", TEST_LABELS, lambda: gz(good_bytes(TEST_LABELS)) + zeros_gz(b"", BOMB_BYTES),
          "more than 1048576 bytes of trailing garbage"),
    # damaged gzip streams
    _case("gzip-cut", TRAIN_IMAGES, lambda: gz(TRAIN_IMAGES_BYTES())[:3000], "damaged gzip stream"),
    _case("gzip-flipped", TRAIN_IMAGES, lambda: _flip_middle(gz(TRAIN_IMAGES_BYTES())), "damaged gzip stream"),
    _case("gzip-magic-only", TEST_LABELS, lambda: b"\x1f\x8b", "damaged gzip stream"),
    _case("gzip-bad-header", TEST_LABELS, lambda: b"\x1f\x8b\x09\x00" + bytes(20), "damaged gzip stream"),
    _case("gzip-bad-crc", TRAIN_LABELS, lambda: _bad_crc(TRAIN_LABELS_BYTES()), "damaged gzip stream"),
    _case("gzip-trailing-junk", TEST_LABELS, lambda: gz(good_bytes(TEST_LABELS)) + b"junk!", "damaged gzip stream"),
    # values and shapes that do not fit MNIST's layout
    _case("label-200", TRAIN_LABELS, lambda: header(20) + bytes([1] * 7 + [200] + [2] * 12),
          "outside the classes 0-9: 1 of them, the first at index 7 (value 200)"),
    _case("label-10", TRAIN_LABELS, lambda: gz(header(20) + bytes([10] * 20)), "the first at index 0 (value 10)"),
    _case("label-255-test", TEST_LABELS, lambda: header(10) + bytes(9) + b"\xff", "the first at index 9 (value 255)"),
    _case("images-27x27", TRAIN_IMAGES, lambda: header(20, 27, 27) + bytes(20 * 27 * 27), "holds 27x27 images"),
    _case("images-28x29", TEST_IMAGES, lambda: gz(header(10, 28, 29) + bytes(10 * 28 * 29)), "holds 28x29 images"),
    _case("labels-one-short", TRAIN_LABELS, lambda: header(19) + bytes(19), "has 19 labels but"),
    _case("images-one-more", TEST_IMAGES, lambda: header(11, 28, 28) + bytes(11 * 784), "has 10 labels but"),
    _folder_case("empty-split", _empty_split, "holds no images"),
    # the folder itself
    _folder_case("file-is-a-folder", _directory_as_file, "lacks train-images-idx3-ubyte"),
    _folder_case("file-missing", _missing_file, "lacks t10k-labels-idx1-ubyte"),
    _folder_case("file-symlink-loop", _symlink_loop, "lacks t10k-images-idx3-ubyte"),
    _folder_case("data-dir-is-a-file", _not_a_folder, "is not a directory"),
    _folder_case("data-dir-missing", _no_such_folder, "does not exist"),
]
