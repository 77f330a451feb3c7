"""Read and write the IDX format that MNIST ships in, gzipped or raw.

An IDX file is a 4-byte magic number ``00 00 <dtype code> <ndim>``, then ``ndim`` big-endian
uint32 dimensions, then the values in C order (http://yann.lecun.com/exdb/mnist/, bottom of the
page). We only handle dtype code 0x08 (unsigned byte), which is all MNIST and its drop-in
replacements (Fashion-MNIST, KMNIST, EMNIST) use.

Whether a file is gzipped is decided by the gzip magic bytes, not by its name: mirrors and
distributions disagree about the ``.gz`` suffix, and a wrongly named file should still load.

Every problem raises :class:`~mnist_study.errors.DataError` with a message that names the file,
says exactly what is wrong, and ends with ``hint`` (how to fix it), which callers that know where
the file came from (a cache, a download, a user's directory) can tailor.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
import zlib
from pathlib import Path

import numpy as np

from mnist_study.errors import DataError
from mnist_study.files import write_bytes

GZIP_MAGIC = b"\x1f\x8b"
UINT8_CODE = 0x08
# Codes of the other IDX dtypes, only so that an unsupported file gets a precise message.
OTHER_DTYPE_NAMES = {0x09: "int8", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32", 0x0E: "float64"}
DEFAULT_HINT = "Replace it with an intact copy."


def decompress_if_gzipped(raw: bytes, source: str | Path, *, hint: str = DEFAULT_HINT) -> bytes:
    """Return ``raw`` gunzipped when it starts with the gzip magic, else ``raw`` unchanged.

    A damaged gzip stream raises ``DataError`` (rather than ``zlib.error``, ``EOFError`` or
    ``gzip.BadGzipFile``, whose messages do not say which file was bad).
    """
    if not raw.startswith(GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(
            f"{source} is a damaged gzip stream ({error}); it was probably cut short while "
            f"downloading. {hint}"
        ) from None


def read_idx_bytes(path: str | Path, *, hint: str = DEFAULT_HINT) -> bytes:
    """Return the uncompressed bytes of the IDX file at ``path`` (gzipped or raw)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or error}. {hint}") from None
    return decompress_if_gzipped(raw, path, hint=hint)


def parse_idx(
    data: bytes, source: str | Path, *, ndim: int | None = None, hint: str = DEFAULT_HINT
) -> np.ndarray:
    """Decode uncompressed IDX bytes into a uint8 array, checking every header field.

    Parameters
    ----------
    data : bytes
        The whole uncompressed file.
    source : str or Path
        Where ``data`` came from (a path or URL), used only in error messages.
    ndim : int, optional
        The number of dimensions the caller expects (3 for images, 1 for labels).
    hint : str
        How to fix a bad file; appended to every error message.

    Returns
    -------
    np.ndarray
        uint8 array of the shape the header declares, e.g. (60000, 28, 28). It owns its memory
        and is writable.
    """
    if len(data) < 4:
        raise DataError(
            f"{source} is too short to be an IDX file: {len(data)} bytes, but the magic number "
            f"alone takes 4. {hint}"
        )
    zero, dtype_code, file_ndim = struct.unpack(">HBB", data[:4])
    if zero != 0:
        raise DataError(
            f"{source} is not an IDX file: it starts with bytes {data[:4].hex(' ')}, but an IDX "
            f"file starts with 00 00, then a dtype code and a dimension count. {hint}"
        )
    if dtype_code != UINT8_CODE:
        name = OTHER_DTYPE_NAMES.get(dtype_code, "unknown")
        raise DataError(
            f"{source} has IDX dtype code 0x{dtype_code:02X} ({name}); only 0x08 (uint8) is "
            f"supported, as used by MNIST. {hint}"
        )
    if ndim is not None and file_ndim != ndim:
        raise DataError(
            f"{source} has {file_ndim} dimensions, expected {ndim} (images have 3: count, "
            f"rows, columns; labels have 1); is it the right file? {hint}"
        )
    header_size = 4 + 4 * file_ndim
    if len(data) < header_size:
        raise DataError(
            f"{source} is truncated inside its header: {file_ndim} dimensions need "
            f"{header_size} header bytes, found {len(data)}. {hint}"
        )
    shape = struct.unpack(f">{file_ndim}I", data[4:header_size])
    expected = int(np.prod(shape, dtype=np.int64))
    found = len(data) - header_size
    described = f"{'x'.join(map(str, shape))} = {expected} bytes of data"
    if found < expected:
        raise DataError(f"{source} is truncated: header says {described}, found {found}. {hint}")
    if found > expected:
        raise DataError(
            f"{source} has {found - expected} bytes of trailing garbage: header says "
            f"{described}, found {found}. {hint}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape).copy()


def read_idx(path: str | Path, *, ndim: int | None = None, hint: str = DEFAULT_HINT) -> np.ndarray:
    """Read a gzipped or raw IDX file into a uint8 array of the shape its header declares."""
    return parse_idx(read_idx_bytes(path, hint=hint), path, ndim=ndim, hint=hint)


def encode_idx(array: np.ndarray) -> bytes:
    """Return the uncompressed IDX bytes of ``array``.

    ``array`` may have any integer dtype as long as every value fits in a uint8 (labels often
    arrive as int64); anything else raises ``ValueError``.
    """
    array = np.asarray(array)
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"IDX here stores uint8 only; got dtype {array.dtype}")
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError(
                f"values must fit in uint8 to be written as IDX; got range "
                f"[{array.min()}, {array.max()}]"
            )
        array = array.astype(np.uint8)
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"IDX needs 1 to 255 dimensions; got {array.ndim}")
    if max(array.shape) >= 2**32:
        raise ValueError(f"IDX dimensions are uint32; shape {array.shape} does not fit")
    header = struct.pack(f">HBB{array.ndim}I", 0, UINT8_CODE, array.ndim, *array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def write_idx(path: str | Path, array: np.ndarray, compress: bool) -> None:
    """Write ``array`` as an IDX file, gzipped when ``compress`` is true.

    The file is written to a temporary name in the same directory and moved into place, so a
    reader (or a crash) never sees a half-written file. The gzip header carries no timestamp, so
    the same array always gives the same bytes.
    """
    payload = encode_idx(array)
    if compress:
        payload = gzip.compress(payload, compresslevel=6, mtime=0)
    write_bytes(path, payload)


def sha256_uncompressed(path: str | Path) -> str:
    """Hex SHA-256 of the file's uncompressed bytes, so gzipped and raw copies hash the same."""
    return hashlib.sha256(read_idx_bytes(path)).hexdigest()
