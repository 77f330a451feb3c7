"""Read and write the IDX format that MNIST ships in, gzipped or raw.

An IDX file is a 4-byte magic number ``00 00 <dtype code> <ndim>``, then ``ndim`` big-endian
uint32 dimensions, then the values in C order (http://yann.lecun.com/exdb/mnist/, bottom of the
page). We only handle dtype code 0x08 (unsigned byte), which is all MNIST and its drop-in
replacements (Fashion-MNIST, KMNIST, EMNIST) use.

Whether a file is gzipped is decided by the gzip magic bytes, not by its name: mirrors and
distributions disagree about the ``.gz`` suffix, and a wrongly named file should still load.

Files are streamed, never read whole: the header is checked first, the payload it declares is
checked against what the file can hold before anything is allocated, and then only the declared
bytes (plus one, to notice trailing data) are decompressed, hashing them on the way. So a gzip
bomb (a few MB that expand to gigabytes) or a header with lying dimensions costs no more memory
than the data the header honestly describes.

Every problem raises :class:`~mnist_study.errors.DataError` with a message that names the file,
says exactly what is wrong, and ends with ``hint`` (how to fix it), which callers that know where
the file came from (a cache, a download, a user's directory) can tailor.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import struct
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from mnist_study.errors import DataError
from mnist_study.files import write_bytes

GZIP_MAGIC = b"\x1f\x8b"
UINT8_CODE = 0x08
# Codes of the other IDX dtypes, only so that an unsupported file gets a precise message.
OTHER_DTYPE_NAMES = {0x09: "int8", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32", 0x0E: "float64"}
DEFAULT_HINT = "Replace it with an intact copy."
# Deflate emits at most 258 bytes per 2-bit code, so a gzip file never expands more than 1032-fold
# (zlib's FAQ); a header declaring more than that is lying, whatever the stream holds.
MAX_DEFLATE_RATIO = 1032
CHUNK = 1 << 20  # bytes decompressed (and hashed) at a time; what a read may allocate at most
TRAILING_COUNT_LIMIT = 1 << 20  # trailing bytes counted for the message before we stop counting

_GZIP_ERRORS = (OSError, EOFError, zlib.error)  # what a damaged gzip stream raises as it is read


@dataclass(frozen=True)
class IdxFile:
    """A checked IDX file: its values, and the SHA-256 of its uncompressed bytes (hex)."""

    array: np.ndarray
    sha256: str


class _Stream:
    """The uncompressed bytes of one IDX file, read in order and hashed on the way.

    ``capacity`` is the most uncompressed bytes the file can hold (its size when raw, 1032 times it
    when gzipped); ``exact`` says whether that is also exactly what it holds (raw files).
    """

    def __init__(self, raw: BinaryIO, size: int, source: str | Path, hint: str):
        self.source, self.hint = source, hint
        self.gzipped = raw.read(2) == GZIP_MAGIC
        raw.seek(0)
        self.file = gzip.GzipFile(fileobj=raw, mode="rb") if self.gzipped else raw
        self.capacity = size * MAX_DEFLATE_RATIO if self.gzipped else size
        self.exact = not self.gzipped
        self.offset = 0  # uncompressed bytes read so far
        self.hasher = hashlib.sha256()

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes (fewer only at the end of the file), hashed."""
        try:
            data = self.file.read(n)
        except _GZIP_ERRORS as error:
            if not self.gzipped:
                raise DataError(f"cannot read {self.source}: {error}. {self.hint}") from None
            raise DataError(
                f"{self.source} is a damaged gzip stream ({error}); it was probably cut short "
                f"while downloading. {self.hint}"
            ) from None
        self.offset += len(data)
        self.hasher.update(data)
        return data

    def skip(self, limit: int) -> int:
        """Read and discard up to ``limit`` bytes, in chunks; return how many there were."""
        skipped = 0
        while skipped < limit and (data := self.read(min(CHUNK, limit - skipped))):
            skipped += len(data)
        return skipped


@contextmanager
def _open(path: str | Path, hint: str, source: str | Path | None = None) -> Iterator[_Stream]:
    source = path if source is None else source
    try:
        raw = open(path, "rb")
    except OSError as error:
        raise DataError(f"cannot read {source}: {error.strerror or error}. {hint}") from None
    with raw:
        yield _Stream(raw, os.fstat(raw.fileno()).st_size, source, hint)


def _read_header(stream: _Stream, ndim: int | None) -> tuple[int, ...]:
    """Check the magic number and dimensions at the start of ``stream``; return the shape."""
    source, hint = stream.source, stream.hint
    magic = stream.read(4)
    if len(magic) < 4:
        raise DataError(
            f"{source} is too short to be an IDX file: {len(magic)} bytes, but the magic number "
            f"alone takes 4. {hint}"
        )
    zero, dtype_code, file_ndim = struct.unpack(">HBB", magic)
    if zero != 0:
        raise DataError(
            f"{source} is not an IDX file: it starts with bytes {magic.hex(' ')}, but an IDX "
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
    dims = stream.read(4 * file_ndim)
    if len(dims) < 4 * file_ndim:
        raise DataError(
            f"{source} is truncated inside its header: {file_ndim} dimensions need "
            f"{4 + 4 * file_ndim} header bytes, found {4 + len(dims)}. {hint}"
        )
    return struct.unpack(f">{file_ndim}I", dims)


def _describe(shape: tuple[int, ...]) -> str:
    return f"{'x'.join(map(str, shape))} = {math.prod(shape)} bytes of data"


def _check_capacity(stream: _Stream, shape: tuple[int, ...]) -> None:
    """Refuse, before allocating, a header that declares more (or, raw, other) than the file holds."""
    expected = math.prod(shape)  # a Python int: 255 dimensions of 2**32 - 1 cannot overflow it
    available = stream.capacity - stream.offset
    source, hint = stream.source, stream.hint
    if stream.exact and expected < available:
        raise DataError(
            f"{source} has {available - expected} bytes of trailing garbage: header says "
            f"{_describe(shape)}, found {available}. {hint}"
        )
    if expected > available:
        if stream.exact:
            raise DataError(f"{source} is truncated: header says {_describe(shape)}, found {available}. {hint}")
        raise DataError(
            f"{source} is truncated or its header lies: it says {_describe(shape)}, but a gzip "
            f"file of {stream.capacity // MAX_DEFLATE_RATIO} bytes expands to at most {available} "
            f"(deflate expands at most {MAX_DEFLATE_RATIO}-fold). {hint}"
        )


def _read_payload(stream: _Stream, shape: tuple[int, ...]) -> np.ndarray:
    """The values the header declares, read in chunks; one byte more means trailing data."""
    expected = math.prod(shape)
    # Grown as the data arrives (realloc, not copies), so a header that lies within the gzip bound
    # costs only the bytes that are really there.
    buffer = bytearray()
    while len(buffer) <= expected and (data := stream.read(min(CHUNK, expected + 1 - len(buffer)))):
        buffer += data
    source, hint = stream.source, stream.hint
    if len(buffer) < expected:
        raise DataError(f"{source} is truncated: header says {_describe(shape)}, found {len(buffer)}. {hint}")
    if len(buffer) > expected:
        more = 1 + stream.skip(TRAILING_COUNT_LIMIT)
        if more > TRAILING_COUNT_LIMIT:
            raise DataError(
                f"{source} has more than {TRAILING_COUNT_LIMIT} bytes of trailing garbage after the "
                f"{_describe(shape)} its header declares. {hint}"
            )
        raise DataError(
            f"{source} has {more} bytes of trailing garbage: header says {_describe(shape)}, "
            f"found {expected + more}. {hint}"
        )
    try:
        # A bytearray is writable, so callers may normalise in place, as with an array of their own.
        return np.frombuffer(buffer, dtype=np.uint8).reshape(shape)
    except ValueError:  # e.g. 0 x 4294967295 x 4294967295 x 4294967295: empty, yet too big for numpy
        raise DataError(f"{source} declares a shape numpy cannot hold, {'x'.join(map(str, shape))}; "
                        f"is it an IDX file? {hint}") from None


def _read(stream: _Stream, ndim: int | None) -> IdxFile:
    shape = _read_header(stream, ndim)
    _check_capacity(stream, shape)
    array = _read_payload(stream, shape)
    return IdxFile(array, stream.hasher.hexdigest())


def read_idx_header(path: str | Path, *, ndim: int | None = None, hint: str = DEFAULT_HINT) -> tuple[int, ...]:
    """The shape the header of the IDX file at ``path`` declares, checked against what the file can
    hold, without reading the payload (so that files can be checked against each other first)."""
    with _open(path, hint) as stream:
        shape = _read_header(stream, ndim)
        _check_capacity(stream, shape)
        return shape


def read_idx_file(path: str | Path, *, ndim: int | None = None, hint: str = DEFAULT_HINT,
                  source: str | Path | None = None) -> IdxFile:
    """Read a gzipped or raw IDX file: its uint8 array and the SHA-256 of its uncompressed bytes.

    Parameters
    ----------
    path : str or Path
        The file, gzipped or not (decided by its first bytes).
    ndim : int, optional
        The number of dimensions the caller expects (3 for images, 1 for labels).
    hint : str
        How to fix a bad file; appended to every error message.
    source : str or Path, optional
        How error messages name the file (default: ``path``), e.g. the URL a download came from.

    Returns
    -------
    IdxFile
        ``array``: uint8, of the shape the header declares, e.g. (60000, 28, 28), writable;
        ``sha256``: hex digest of the uncompressed file, so gzipped and raw copies hash the same.
    """
    with _open(path, hint, source) as stream:
        return _read(stream, ndim)


def read_idx(path: str | Path, *, ndim: int | None = None, hint: str = DEFAULT_HINT) -> np.ndarray:
    """Read a gzipped or raw IDX file into a uint8 array of the shape its header declares."""
    return read_idx_file(path, ndim=ndim, hint=hint).array


def parse_idx(
    data: bytes, source: str | Path, *, ndim: int | None = None, hint: str = DEFAULT_HINT
) -> np.ndarray:
    """Decode IDX bytes already in memory (gzipped or raw) into a uint8 array, checking every field.

    ``source`` (a path or URL) is used only in error messages; ``ndim`` and ``hint`` are as for
    :func:`read_idx_file`.
    """
    return _read(_Stream(io.BytesIO(data), len(data), source, hint), ndim).array


def decompress_if_gzipped(raw: bytes, source: str | Path, *, hint: str = DEFAULT_HINT) -> bytes:
    """Return ``raw`` gunzipped when it starts with the gzip magic, else ``raw`` unchanged.

    For small trusted payloads only: the whole result is held in memory (IDX files go through
    :func:`read_idx_file`, which streams). A damaged gzip stream raises ``DataError`` (rather than
    ``zlib.error``, ``EOFError`` or ``gzip.BadGzipFile``, whose messages do not say which file was bad).
    """
    if not raw.startswith(GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except _GZIP_ERRORS as error:
        raise DataError(
            f"{source} is a damaged gzip stream ({error}); it was probably cut short while "
            f"downloading. {hint}"
        ) from None


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


def sha256_uncompressed(path: str | Path, *, hint: str = DEFAULT_HINT) -> str:
    """Hex SHA-256 of the file's uncompressed bytes, so gzipped and raw copies hash the same.

    Streamed in chunks: any file, valid IDX or not, is hashed in constant memory.
    """
    with _open(path, hint) as stream:
        while stream.read(CHUNK):
            pass
        return stream.hasher.hexdigest()
