"""Classify image files with a trained network: the logic behind `mnist-study predict`.

    mnist-study predict runs/paper-20260101-120000 photos/ seven.jpg --format csv
    mnist-study predict runs/paper-20260101-120000 photos/ --experiment exp6 --show-input seen/

Folders are searched recursively for image files. Each file is preprocessed MNIST-style (see
`preprocess`); a file that cannot be used gets a row with its error, and the others go on.

Example
-------
>>> from mnist_study.serving.predict import predict_files, render
>>> rows = predict_files("runs/paper-20260101-120000", ["photos/"])
>>> print(render(rows, "table"))
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from mnist_study.serving.classifier import DigitClassifier, load_classifier
from mnist_study.errors import OptionError
from mnist_study.files import atomic_path
from mnist_study.serving.preprocess import IMAGE_EXTENSIONS, ImageError, preprocess, to_png

FORMATS = ("table", "csv", "json")
MIN_CONFIDENCE = 0.5  # below this probability for its digit, a prediction is flagged as uncertain


@dataclass
class Prediction:
    """One file's result: the digit and all ten probabilities, or why there are none."""

    file: str
    model: str = ""  # the network that answered: "<experiment> seed <k>"
    digit: int | None = None
    probabilities: list[float] | None = None  # 10 values summing to 1
    error: str | None = None
    shown_input: str | None = None  # where the 28x28 image the network saw was saved
    min_confidence: float = MIN_CONFIDENCE

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def confidence(self) -> float | None:
        return None if self.probabilities is None else self.probabilities[self.digit]

    @property
    def uncertain(self) -> bool:
        """The network's probability for its answer is below `min_confidence`: do not trust it blindly."""
        return self.confidence is not None and self.confidence < self.min_confidence

    def as_dict(self) -> dict:
        return {"file": self.file, "model": self.model, "digit": self.digit, "confidence": self.confidence,
                "uncertain": self.uncertain if self.ok else None, "probabilities": self.probabilities,
                "error": self.error, "shown_input": self.shown_input}


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, and the image files inside folders (recursively, sorted); order kept, no repeats.

    A path that does not exist, and a folder without images, are kept, so that their error is
    reported in their row.
    """
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            images = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            found.extend(images or [path])
        else:
            found.append(path)
    return list(dict.fromkeys(found))


def _unique_png_name(path: Path, taken: set[str]) -> str:
    name, k = f"{path.stem}.png", 1
    while name in taken:
        name, k = f"{path.stem}-{k}.png", k + 1
    taken.add(name)
    return name


def predict_with(classifier: DigitClassifier, paths: Iterable[str | Path],
                 show_input: str | Path | None = None, min_confidence: float = MIN_CONFIDENCE) -> list[Prediction]:
    """`predict_files` with a classifier already loaded."""
    files = expand_paths(paths)
    model = f"{classifier.name} seed {classifier.seed}"
    rows = [Prediction(file=str(f), model=model, min_confidence=min_confidence) for f in files]
    inputs: list[np.ndarray] = []
    good: list[int] = []
    for i, path in enumerate(files):
        if path.is_dir():
            rows[i].error = (f"{path} holds no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}); "
                             "give image files or a folder of them")
            continue
        try:
            inputs.append(preprocess(path))
            good.append(i)
        except ImageError as error:
            rows[i].error = str(error)
    if good:
        proba = classifier.predict_proba(np.stack(inputs))
        for i, p in zip(good, proba):
            rows[i].digit = int(p.argmax())
            rows[i].probabilities = [round(float(v), 6) for v in p]
    if show_input is not None and good:
        folder = Path(show_input)
        folder.mkdir(parents=True, exist_ok=True)
        taken: set[str] = set()
        for i, image in zip(good, inputs):
            target = folder / _unique_png_name(files[i], taken)
            with atomic_path(target) as tmp:
                tmp.write_bytes(to_png(image))
            rows[i].shown_input = str(target)
    return rows


def predict_files(run_dir: str | Path, paths: Iterable[str | Path], experiment: str | None = None,
                  show_input: str | Path | None = None, seed: int | None = None,
                  min_confidence: float = MIN_CONFIDENCE) -> list[Prediction]:
    """Classify image files (and the images in folders) with a network of `run_dir`.

    Parameters
    ----------
    run_dir : a run directory; experiment, seed : which network (default: best on validation).
    paths : files and folders.
    show_input : folder to save, as `<file stem>.png`, the 28x28 image the network saw.
    min_confidence : predictions whose probability is below this are flagged `uncertain`.

    Returns
    -------
    One `Prediction` per file, in order; unreadable files carry `error` instead of a digit.
    """
    return predict_with(load_classifier(run_dir, experiment, seed), paths, show_input, min_confidence)


def render(predictions: list[Prediction], fmt: str = "table") -> str:
    """The rows as a Rich table (plain text), CSV (file, model, digit, uncertain, p0..p9, error) or
    JSON (a list); every format names the network that answered, and ends with a newline."""
    if fmt == "json":
        return json.dumps([p.as_dict() for p in predictions], indent=2) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["file", "model", "digit", "uncertain", *(f"p{d}" for d in range(10)), "error"])
        for p in predictions:
            probs = [f"{v:.6f}" for v in p.probabilities] if p.probabilities else [""] * 10
            writer.writerow([p.file, p.model, "" if p.digit is None else p.digit, "" if not p.ok else int(p.uncertain),
                             *probs, p.error or ""])
        return buffer.getvalue()
    if fmt == "table":
        return _table(predictions)
    raise OptionError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def as_table(predictions: list[Prediction]):
    """A Rich table of the readable files: file, digit, and each digit's probability in percent."""
    from rich.table import Table

    model = next((p.model for p in predictions if p.model), "")
    threshold = next((p.min_confidence for p in predictions), MIN_CONFIDENCE)
    table = Table(show_edge=False, header_style="bold", title=f"network: {model}" if model else None,
                  caption=f"probability of each digit, %  (. below 0.5; ? = below {threshold:.0%} for its answer)")
    table.add_column("file", overflow="fold")
    table.add_column("digit", justify="center")
    for d in range(10):
        table.add_column(str(d), justify="right")
    for p in predictions:
        if p.ok:
            cells = [f"[bold]{100 * v:.0f}[/bold]" if d == p.digit else ("." if v < 0.005 else f"{100 * v:.0f}")
                     for d, v in enumerate(p.probabilities)]
            table.add_row(p.file, f"[bold]{p.digit}[/bold]" + ("?" if p.uncertain else ""), *cells)
    return table


def _table(predictions: list[Prediction]) -> str:
    from rich.console import Console

    console = Console(file=io.StringIO(), width=140, color_system=None, force_terminal=False)
    if any(p.ok for p in predictions):
        console.print(as_table(predictions))
    failed = [p for p in predictions if not p.ok]
    if failed:
        console.print(f"{len(failed)} of {len(predictions)} file(s) could not be classified:", markup=False)
        for p in failed:
            console.print(f"  {p.error}", markup=False, soft_wrap=True)
    return console.file.getvalue()
