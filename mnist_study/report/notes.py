"""The study's notes in the report: each note's text, and beside it what this run measured.

A study carries its authors' notes as data (`[[note]]` in its TOML: title, plain text, and the
exhibits to `show`); the report prints them in order, so nothing about any one study is written
into the page. The exhibits (see `mnist_study.study.NOTE_EXHIBITS`):

    first_epoch                 each experiment's first-epoch training loss and accuracy (mean over
                                seeds) beside its reference.first_epoch_loss / first_epoch_accuracy
    pattern:<experiment>        the digit that experiment's network gives the activation-maximisation
                                pattern of its first hidden node, with probability and activation
    figure:<experiment>:<key>   one figure of that experiment's front-end, by key

An exhibit whose data this run lacks (an unfinished experiment, a figure the front-end does not
draw) says so in a line instead of failing the report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import groupby
from typing import ClassVar

import numpy as np

from mnist_study.results import RunResults
from mnist_study.study import Study


@dataclass(frozen=True)
class FirstEpochRow:
    """One experiment's first epoch: our mean over seeds beside the study's reference figures."""

    experiment: str
    network: str
    l2: float
    train_size: int | None
    loss: float | None
    accuracy: float | None  # fraction
    reference_loss: float | None
    reference_accuracy: float | None


@dataclass(frozen=True)
class FirstEpochTable:
    kind: ClassVar[str] = "first_epoch"
    rows: list[FirstEpochRow]
    source: str  # whose the reference figures are, e.g. "paper"


@dataclass(frozen=True)
class PatternExhibit:
    kind: ClassVar[str] = "pattern"
    experiment: str
    node: int
    digit: int
    proba: float
    activation: float


@dataclass(frozen=True)
class NoteFigure:
    experiment: str
    key: str
    img: str  # PNG data URI
    alt: str


@dataclass(frozen=True)
class FigureRow:
    """Consecutive `figure:` exhibits, set side by side."""

    kind: ClassVar[str] = "figures"
    figures: list[NoteFigure]


@dataclass(frozen=True)
class Unavailable:
    """An exhibit this run cannot show, and why."""

    kind: ClassVar[str] = "unavailable"
    text: str


@dataclass(frozen=True)
class NoteView:
    title: str
    paragraphs: list[str]
    exhibits: list = field(default_factory=list)


def paragraphs(text: str) -> list[str]:
    """Plain text split at blank lines; the lines of a paragraph are joined with spaces."""
    return [" ".join(part.split()) for part in re.split(r"\n\s*\n", text.strip()) if part.strip()]


def figure_experiments(study: Study) -> set[str]:
    """The experiments whose front-end figures some note shows (their front-ends must be drawn)."""
    return {parts[1] for note in study.note for parts in note.exhibits() if parts[0] == "figure"}


def pattern_experiments(study: Study) -> list[str]:
    """The experiments whose node patterns some note shows (their networks must be analysed)."""
    return list(dict.fromkeys(parts[1] for note in study.note for parts in note.exhibits() if parts[0] == "pattern"))


def first_epoch_rows(run: RunResults) -> list[FirstEpochRow]:
    """Every finished experiment whose reference gives a first-epoch loss or accuracy."""
    rows = []
    for e in run.experiments:
        results = run.results(e.name)
        ref = e.reference
        if not results or ref is None or (ref.first_epoch_loss is None and ref.first_epoch_accuracy is None):
            continue
        loss = [r.history["loss"][0] for r in results if r.history.get("loss")]
        accuracy = [r.history["accuracy"][0] for r in results if r.history.get("accuracy")]
        rows.append(FirstEpochRow(
            experiment=e.name, network=f"{e.frontend.describe()}, {e.shape_text}", l2=e.l2, train_size=e.train_size,
            loss=float(np.mean(loss)) if loss else None, accuracy=float(np.mean(accuracy)) if accuracy else None,
            reference_loss=ref.first_epoch_loss, reference_accuracy=ref.first_epoch_accuracy))
    return rows


def note_views(run: RunResults, patterns: dict[str, dict], frontends: dict[str, dict]) -> list[NoteView]:
    """The study's notes with their exhibits filled in from this run.

    `patterns` and `frontends` map an experiment's name to its patterns and front-end sections (as
    built by `sections.py`); an experiment missing from them has no result, or no front-end figures,
    and one whose patterns are None has no hidden layer.
    """
    views = []
    for note in run.study.note:
        exhibits = [_exhibit(parts, run, patterns, frontends) for parts in note.exhibits()]
        views.append(NoteView(note.title, paragraphs(note.text), _side_by_side(exhibits)))
    return views


def _exhibit(parts: tuple[str, ...], run: RunResults, patterns: dict, frontends: dict):
    what, *args = parts
    if what == "first_epoch":
        rows = first_epoch_rows(run)
        if not rows:
            return Unavailable("No finished experiment of this run has first-epoch reference figures to set "
                               "beside its own.")
        return FirstEpochTable(rows, run.study.reference_source)
    name = args[0]
    if not run.results(name):
        return Unavailable(f"{name} has no finished result in this run yet.")
    if what == "pattern":
        if not patterns.get(name):
            return Unavailable(f"{name} has no hidden layer, so no node patterns.")
        first = patterns[name]["first"]
        return PatternExhibit(name, first["node"], first["digit"], first["proba"], first["activation"])
    key = args[1]
    drawn = (frontends.get(name) or {}).get("by_key", {})
    if key not in drawn:
        has = f"; it draws: {', '.join(drawn)}" if drawn else ""
        return Unavailable(f"{name}'s front-end ({run.study.get(name).frontend.kind}) draws no figure "
                           f"“{key}”{has}.")
    figure = drawn[key]
    return NoteFigure(name, key, figure["img"], figure["alt"])


def _side_by_side(exhibits: list) -> list:
    """Consecutive figures merged into one `FigureRow`, so that the page sets them side by side."""
    merged: list = []
    for is_figure, group in groupby(exhibits, key=lambda x: isinstance(x, NoteFigure)):
        merged.extend([FigureRow(list(group))] if is_figure else group)
    return merged
