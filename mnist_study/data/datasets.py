"""Datasets by name: "mnist", "fashion-mnist", or the path of a folder holding another dataset.

All three come in MNIST's layout: four IDX files (``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each raw or
gzipped) of 28x28 uint8 images and labels 0-9.

- ``"mnist"`` is found (or downloaded) as :mod:`mnist_study.data.sources` describes.
- ``"fashion-mnist"`` (Xiao, Rasul & Vollgraf 2017, https://github.com/zalandoresearch/fashion-mnist)
  is looked for in ``data_dir`` when given, else in ``$MNIST_STUDY_DATA/fashion-mnist`` (when that
  variable is set and the folder exists), the user cache ``~/.cache/mnist-study/fashion-mnist``
  (``$XDG_CACHE_HOME`` respected) and ``/usr/share/datasets/fashion-mnist``, where Debian's
  ``dataset-fashion-mnist`` package installs it. It is never downloaded. Its files must match the
  pinned digests below on every load, as MNIST's must.
- Any other name is the path of a folder with the four files. It loads with ``verified=False``:
  nothing is known about it beyond what it holds, and its digests are recorded for provenance.

Example
-------
>>> from mnist_study.data.datasets import load_named_dataset, class_names
>>> data = load_named_dataset("fashion-mnist")
>>> data.name, data.verified, class_names(data.name)[9]
('fashion-mnist', True, 'Ankle boot')
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path

from mnist_study.data.digits import DIGITS
from mnist_study.data.sources import (
    ENV_VAR,
    MNIST_FILES,
    Dataset,
    Location,
    find_file,
    load_dataset,
    missing_files,
    read_dataset,
    user_cache_root,
)
from mnist_study.errors import DataError

# SHA-256 of the *uncompressed* files: Debian recompressed the .gz files, so the digests of the
# gzipped files published upstream do not match its copies, while the IDX bytes inside do.
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_PACKAGE = "dataset-fashion-mnist"


@dataclass(frozen=True)
class KnownDataset:
    """What we know of a dataset loadable by name."""

    title: str                     # as messages and reports write it
    classes: tuple[str, ...]       # class k's name at index k
    about: str                     # one line: what the images are, and where they come from


DIGIT_NAMES = tuple(str(digit) for digit in DIGITS)
# The order of the labels 0-9, from the dataset's README.
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                   "Bag", "Ankle boot")

DATASETS = {
    "mnist": KnownDataset("MNIST", DIGIT_NAMES, "handwritten digits (LeCun, Cortes & Burges)"),
    "fashion-mnist": KnownDataset("Fashion-MNIST", FASHION_CLASSES,
                                  "photographs of Zalando's articles (Xiao, Rasul & Vollgraf 2017)"),
}


def class_names(name: str) -> tuple[str, ...]:
    """The ten class names of dataset ``name``, label k's at index k ("0"-"9" for any folder)."""
    known = DATASETS.get(name)
    return known.classes if known else DIGIT_NAMES


def fashion_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/mnist-study/fashion-mnist``, or ``~/.cache/mnist-study/fashion-mnist``."""
    return user_cache_root() / "fashion-mnist"


def load_named_dataset(
    name: str, data_dir: str | Path | None = None, *, download: bool = True, progress: bool = True
) -> Dataset:
    """Load dataset ``name``: "mnist", "fashion-mnist", or the path of a folder with the four files.

    Parameters
    ----------
    name : str
        One of ``DATASETS``, or a folder path (which then loads with ``verified=False``).
    data_dir : str or Path, optional
        The folder holding the named dataset's four files, searched before anywhere else: for
        "mnist" exactly as :func:`~mnist_study.data.sources.load_dataset` takes it; for
        "fashion-mnist" it must hold Fashion-MNIST. Not used when ``name`` is a folder.
    download : bool
        Whether MNIST may be downloaded when found nowhere (Fashion-MNIST never is).
    progress : bool
        Whether to show download progress bars (on stderr).

    Returns
    -------
    Dataset
        With ``name`` set to ``name`` (for "mnist": "mnist" when the files are MNIST's, else the
        folder, as ``load_dataset`` records it).

    Raises
    ------
    DataError
        When the dataset is not found, a file is damaged, or a known dataset's file is not the
        one pinned; the message names the file or folder and says how to fix it.
    """
    if name == "mnist":
        return load_dataset(data_dir, download=download, progress=progress)
    if name == "fashion-mnist":
        return _load_fashion_mnist(data_dir)
    return _load_folder(name)


# --- Fashion-MNIST -----------------------------------------------------------------------------


def _where_to_put_fashion() -> str:
    places = str(fashion_cache_dir())
    if os.environ.get(ENV_VAR):
        places += f" or in ${ENV_VAR}/fashion-mnist"
    return (
        f"Put its four files ({', '.join(MNIST_FILES)}; gzipped or not) in {places}, or install Debian's "
        f"package, which puts them in {FASHION_SYSTEM_DIR}: `apt-get install {FASHION_PACKAGE}`."
    )


def _fashion_hint(origin: str) -> str:
    """How to fix a bad Fashion-MNIST file, by where it was found."""
    fix = {
        "argument": "Replace it with an intact copy of Fashion-MNIST, or pass another --data-dir.",
        "env": f"Replace it with an intact copy of Fashion-MNIST, or remove ${ENV_VAR}/fashion-mnist "
               f"to use {fashion_cache_dir()} or {FASHION_SYSTEM_DIR}.",
        "cache": f"Replace it with an intact copy of Fashion-MNIST, or delete {fashion_cache_dir()} to "
                 f"use {FASHION_SYSTEM_DIR} (`apt-get install {FASHION_PACKAGE}`).",
        "system": f"It comes from Debian's {FASHION_PACKAGE} package: reinstall it "
                  f"(`apt-get install --reinstall {FASHION_PACKAGE}`).",
    }[origin]
    return f"{fix} To train on these files anyway, name their folder as the dataset (it then loads unverified)."


def locate_fashion_mnist(data_dir: str | Path | None = None) -> Location:
    """The folder Fashion-MNIST is loaded from, in the search order of this module's docstring.

    A folder that is named (``data_dir``) or exists (``$MNIST_STUDY_DATA/fashion-mnist``) must hold
    all four files: loading another copy instead would surprise. Raises DataError when none has them.
    """
    named: list[tuple[Path, str, str]] = []  # (folder, origin, how the message names it)
    if data_dir is not None:
        directory = Path(data_dir).expanduser()
        if not directory.is_dir():
            raise DataError(f"--data-dir {directory} does not exist or is not a directory. Put "
                            f"Fashion-MNIST's four files there, or leave out --data-dir. {_where_to_put_fashion()}")
        named.append((directory, "argument", f"--data-dir {directory}"))
    elif os.environ.get(ENV_VAR):
        directory = Path(os.environ[ENV_VAR]).expanduser() / "fashion-mnist"
        if directory.is_dir():
            named.append((directory, "env", f"{directory} (${ENV_VAR}/fashion-mnist)"))
    for directory, origin, described in named:
        missing = missing_files(directory)
        if missing:
            raise DataError(f"{described} lacks {', '.join(file + '[.gz]' for file in missing)}. "
                            f"Put Fashion-MNIST's four IDX files there (gzipped or not).")
        return Location(directory, origin)
    for directory, origin in ((fashion_cache_dir(), "cache"), (FASHION_SYSTEM_DIR, "system")):
        if not missing_files(directory):
            return Location(directory, origin)
    places = [f"${ENV_VAR}/fashion-mnist"] if os.environ.get(ENV_VAR) else []
    places += [str(fashion_cache_dir()), str(FASHION_SYSTEM_DIR)]
    raise DataError(f"Fashion-MNIST is in none of {', '.join(places)}, and it is not downloaded. "
                    f"{_where_to_put_fashion()}")


def _load_fashion_mnist(data_dir: str | Path | None) -> Dataset:
    location = locate_fashion_mnist(data_dir)
    hint = _fashion_hint(location.origin)
    data = read_dataset(location.directory, hint=hint, name="fashion-mnist", pinned=FASHION_MNIST_SHA256)
    for file in MNIST_FILES:
        if data.digests[file] != FASHION_MNIST_SHA256[file]:
            raise DataError(
                f"{find_file(location.directory, file)} is not Fashion-MNIST's {file}: its uncompressed "
                f"SHA-256 is {data.digests[file]}, expected {FASHION_MNIST_SHA256[file]}. {hint}"
            )
    return data


# --- Any other folder --------------------------------------------------------------------------


def suggest_name(name: str) -> str | None:
    """The known dataset that ``name`` is probably a misspelling of, or None.

    Paths (with a directory separator) are taken as meant: only bare names are second-guessed.
    """
    if "/" in name or os.sep in name:
        return None
    normalised = name.strip().lower().replace("_", "-").replace(" ", "-")
    if normalised in DATASETS:
        return normalised
    close = difflib.get_close_matches(normalised, list(DATASETS), n=1, cutoff=0.75)
    return close[0] if close else None


def _load_folder(name: str) -> Dataset:
    directory = Path(name).expanduser()
    guess = suggest_name(name)
    did_you_mean = f" Did you mean {guess!r}?" if guess else ""
    files = f"the four IDX files ({', '.join(MNIST_FILES)}; gzipped or not)"
    if not directory.is_dir():
        raise DataError(
            f"Dataset {name!r} is neither a known name ({', '.join(DATASETS)}) nor a folder: {directory} "
            f"does not exist.{did_you_mean} A folder given as a dataset must hold {files}."
        )
    missing = missing_files(directory)
    if missing:
        raise DataError(
            f"Dataset folder {directory} lacks {', '.join(file + '[.gz]' for file in missing)}. It must "
            f"hold {files}.{did_you_mean}"
        )
    return read_dataset(directory, name=name, pinned={}, hint="Replace it with an intact copy.")
