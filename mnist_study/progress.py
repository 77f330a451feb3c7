"""Progress of long work, readable wherever the output goes.

On a terminal: Rich bars, one line per front-end and per experiment, with the bar, the count and
the elapsed time first and the status text last, so that an 80-column terminal cuts the status,
never the numbers. Elsewhere (a log file, a pipe, a cluster job): plain timestamped lines, one per
event worth keeping (what started, what ended, its key figure, its time), never a redrawn bar.

    display = TrainingProgress(study, plan)     # fed by the tasks' events (tasks.py)
    steps = StepProgress("report", total=14)    # a count of named steps
"""

from __future__ import annotations

import contextlib
import time
from datetime import datetime
from typing import Iterator

from rich.console import Console
from rich.table import Column
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

EPOCH_LINE_EVERY_S = 30.0  # in plain mode, an experiment's epoch progress at most this often


def _stderr() -> Console:
    return Console(stderr=True)


def _bars(console: Console, description_width: int) -> Progress:
    # Fixed, unwrapped columns first; the status takes what is left and is cut at its end.
    fixed = lambda width=None: Column(no_wrap=True, min_width=width)  # noqa: E731
    return Progress(
        SpinnerColumn(table_column=fixed()),
        TextColumn(f"{{task.description:<{description_width}}}", table_column=fixed(description_width)),
        BarColumn(bar_width=12, table_column=fixed(12)), MofNCompleteColumn(table_column=fixed(5)),
        TimeElapsedColumn(table_column=fixed(7)),
        TextColumn("{task.fields[status]}", markup=False,
                   table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1)),
        console=console, transient=False, expand=True,
    )


class PlainLines:
    """Timestamped lines on a console that is not a terminal."""

    def __init__(self, console: Console):
        self.console = console

    def line(self, text: str) -> None:
        self.console.print(f"{datetime.now():%H:%M:%S} {text}", markup=False, highlight=False, soft_wrap=True)


MAX_ROWS = 12  # more experiments than this get one progress row between them


class TrainingProgress:
    """Front-end fitting and, per experiment, its epochs and finished seeds."""

    def __init__(self, study, plan, console: Console | None = None):
        self.console = console or _stderr()
        self.plain = None if self.console.is_terminal else PlainLines(self.console)
        self.seeds = plan.seeds_missing()                        # experiment -> seeds to train in this run
        self.frontends = [fit.name for fit, _ in plan.frontends]
        self.done: dict[str, int] = {name: 0 for name in self.seeds}
        self.widths = {e.name: e.shape_text for e in study.experiments}
        self.started: dict[str, float] = {}
        self.last_line: dict[str, float] = {}
        self.total = sum(self.seeds.values())
        self.finished = 0
        self.bars = None if self.plain else _bars(self.console, 22)
        self.rows = {}
        # A sweep of hundreds of experiments: one row for all of them, and rows only for those training now.
        self.compact = len(self.seeds) > MAX_ROWS
        if self.bars is not None:
            for fit, _ in plan.frontends:
                self.rows[("frontend", fit.name)] = self.bars.add_task(
                    f"fit {fit.frontend.kind} ({fit.name})", total=1, status="waiting")
            if self.compact:
                self.overall = self.bars.add_task(f"train {len(self.seeds)} experiments", total=self.total,
                                                  status="waiting")
            else:
                for name in self.seeds:
                    self._add_row(name)

    def _add_row(self, name: str) -> None:
        self.rows[("train", name)] = self.bars.add_task(
            f"train {name} (H={self.widths[name]})", total=self.seeds[name], status="waiting")

    def start(self) -> None:
        if self.bars is not None:
            self.bars.start()
        else:
            total, fits = sum(self.seeds.values()), len(self.frontends)
            if total:
                self.plain.line(f"training {total} network{'s' if total != 1 else ''} of {len(self.seeds)} "
                                f"experiment{'s' if len(self.seeds) != 1 else ''}")
            elif fits:  # a resume that only refits a front-end
                self.plain.line(f"fitting {fits} front-end{'s' if fits != 1 else ''}; every network is trained")

    def stop(self) -> None:
        if self.bars is not None:
            self.bars.stop()

    def update(self, event: dict) -> None:
        kind, name = event["kind"], event.get("experiment")
        if self.plain is not None:
            self._line(kind, name, event)
            return
        if kind.startswith("frontend") and ("frontend", name) in self.rows:
            row = self.rows[("frontend", name)]
            if kind == "frontend-start":
                self.bars.update(row, status="fitting")
            elif kind == "frontend-progress":
                self.bars.update(row, total=event["total"], completed=event["done"],
                                 status=f"{event['done']} of {event['total']} {event.get('unit', 'steps')}")
            elif kind == "frontend-done":
                self.bars.update(row, completed=self.bars.tasks[row].total, status=f"done, {event['seconds']:.1f} s")
        elif kind == "epoch" and name in self.seeds:
            if ("train", name) not in self.rows and self.done[name] < self.seeds[name]:
                self._add_row(name)  # compact: a row while it trains
            # An experiment's seeds may train in several tasks at different epochs: the bar counts
            # the seeds done; the status is the latest epoch reported and its best validation accuracy.
            self.bars.update(self.rows[("train", name)],
                             status=f"epoch {event['epoch']}, best val {100 * event['val_accuracy']:.2f}%")
        elif kind == "seed-done" and name in self.seeds:
            self.done[name] += 1
            self.finished += 1
            if self.compact:
                self.bars.update(self.overall, completed=self.finished, status=f"{self.finished} of {self.total} "
                                                                               "networks done")
            row = self.rows.get(("train", name))
            if row is not None:
                self.bars.advance(row)
                if self.compact and self.done[name] >= self.seeds[name]:
                    self.bars.remove_task(self.rows.pop(("train", name)))

    def _line(self, kind: str, name: str, event: dict) -> None:
        now = time.monotonic()
        if kind == "frontend-start":
            self.plain.line(f"fit {event.get('frontend', '')} front-end ({name}): started")
        elif kind == "frontend-done":
            self.plain.line(f"fit {event.get('frontend', '')} front-end ({name}): done in {event['seconds']:.1f} s")
        elif kind == "epoch" and name in self.seeds:
            self.started.setdefault(name, now)
            if now - self.last_line.get(name, self.started[name]) >= EPOCH_LINE_EVERY_S:
                self.last_line[name] = now
                self.plain.line(f"train {name}: epoch {event['epoch']} ({self.done[name]} of {self.seeds[name]} "
                                f"seeds done), best val acc {100 * event['val_accuracy']:.2f}%")
        elif kind == "seed-done" and name in self.seeds:
            self.started.setdefault(name, now)
            self.done[name] += 1
            self.finished += 1
            diverged = f", diverged in epoch {event['diverged']}" if event.get("diverged") else ""
            self.plain.line(f"train {name}: seed {event['seed']} done ({self.done[name]} of {self.seeds[name]}; "
                            f"{self.finished} of {self.total} networks), test acc {100 * event['test_accuracy']:.2f}%, "
                            f"{event['epochs']} epochs{diverged}, {now - self.started[name]:.1f} s")


class StepProgress:
    """A count of named steps (the report's analyses): a bar on a terminal, lines elsewhere."""

    def __init__(self, label: str, total: int, enabled: bool = True, console: Console | None = None):
        self.label, self.total, self.count = label, total, 0
        self.timings: dict[str, float] = {}
        console = console or _stderr()
        self.plain = PlainLines(console) if enabled and not console.is_terminal else None
        self._bar = None
        if enabled and self.plain is None:
            self._bar = Progress(TextColumn(f"[bold]{label}[/]"), BarColumn(bar_width=16), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.description}"), console=console,
                                 transient=True)
            self._task = self._bar.add_task("", total=total)
            self._bar.start()
        self.started = time.perf_counter()

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time the block as step `name` and count it done."""
        self.describe(name)
        start = time.perf_counter()
        try:
            yield
        finally:
            seconds = time.perf_counter() - start
            self.timings[name] = self.timings.get(name, 0.0) + seconds
            self.advance(name, seconds)

    def describe(self, text: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=text)

    def advance(self, text: str, seconds: float | None = None) -> None:
        """One step done (timed here by `step`, or elsewhere)."""
        self.count += 1
        if self._bar is not None:
            self._bar.update(self._task, description=text, advance=1)
        elif self.plain is not None:
            took = f" in {seconds:.1f} s" if seconds is not None else ""
            self.plain.line(f"{self.label}: {text}{took} ({self.count} of {self.total}, "
                            f"{time.perf_counter() - self.started:.0f} s so far)")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
