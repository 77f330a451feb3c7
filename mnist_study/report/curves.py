"""The curves a study declares ([[curve]]): metrics against a number, over seeds, read from a run.

Typed views first (`curve_views` -> `CurveView`), rendering second (`curve_tables` for `show`,
`curve_summary` for its JSON, `table_cells` for the report's tables and `curve_figures` for its
figures), so every reader sees the same numbers. The statistics are `stats.curves`'; this module
only gathers the run's networks into its records. No matplotlib here: `show` imports this module.

    from mnist_study.report.curves import curve_tables
    for table in curve_tables(run):
        console.print(table)

x is an experiment field, or "parameters": the trained weights and biases of the experiment's
network, counted from a finished seed's model.safetensors (so a PCA front-end's kept components
are its inputs). An experiment whose x is not set (train_size left at its default, say) is left out
and counted. y is a split's error (100 - accuracy, percent), accuracy (percent) or loss.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import BaseModel
from rich import box
from rich.markup import escape
from rich.table import Table

from mnist_study.report.summary import diverged_epoch
from mnist_study.report.sweep import LOG_SPAN, value_label
from mnist_study.results import RunResults, SeedResult
from mnist_study.stats import curves as stats
from mnist_study.stats.sweep import level_key
from mnist_study.study import PARAMETERS, Curve, Experiment


# ------------------------------------------------------------------------------------- records

def metric_label(metric: str) -> str:
    """"test_error" -> "test error (%)"; "train_loss" -> "train loss"."""
    split, kind = metric.rsplit("_", 1)
    return f"{split} {kind}" + (" (%)" if kind != "loss" else "")


def metric_value(result: SeedResult, metric: str) -> float:
    """A seed's metric: error or accuracy in percent, or the loss; nan when the run did not record it."""
    split, kind = metric.rsplit("_", 1)
    if kind == "loss":
        value = (result.metrics.get("loss") or {}).get(split)
        return math.nan if value is None else float(value)
    accuracy = result.accuracy(split)
    return 100.0 - accuracy if kind == "error" else accuracy


def x_label(curve: Curve) -> str:
    return "trained parameters" if curve.x == PARAMETERS else curve.x


def x_of(run: RunResults, e: Experiment, x: str) -> float | None:
    """The experiment's x: its parameters (from a finished seed) or its field's value; None if it has none."""
    if x == PARAMETERS:
        results = run.results(e.name)
        return float(results[0].n_parameters) if results else None
    value = getattr(e, x)
    return None if value is None or isinstance(value, bool) else float(value)


def line_of(e: Experiment, by: str | None) -> Any:
    if by is None:
        return None
    value = getattr(e, by)
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def curve_experiments(run: RunResults, curve: Curve) -> list[Experiment]:
    return [e for e in run.experiments if curve.sweep is None or e.sweep == curve.sweep]


def records(run: RunResults, curve: Curve, metric: str) -> tuple[list[stats.Record], int]:
    """One record per finished network of the curve's experiments, and how many experiments with
    results were left out for having no x."""
    out, without_x = [], 0
    for e in curve_experiments(run, curve):
        results = run.results(e.name)
        if not results:
            continue
        x = x_of(run, e, curve.x)
        if x is None:
            without_x += 1
            continue
        line = line_of(e, curve.by)
        for r in results:
            out.append(stats.Record(line, x, r.seed, metric_value(r, metric), diverged_epoch(r.metrics) is not None))
    return out, without_x


def _ordered(values: list[Any]) -> list[Any]:
    """Numbers in increasing order; anything else as first seen."""
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    return sorted(values) if numbers else values


# --------------------------------------------------------------------------------------- views

@dataclass(frozen=True)
class PointRow:
    """One x of one line: the metric's mean over seeds, its 95% interval (None with one seed)."""

    x: float
    mean: float | None
    ci: list[float] | None
    n_seeds: int
    n_networks: int
    diverged: int


@dataclass(frozen=True)
class FitView:
    """y = c * x^(-alpha) fitted to a line: alpha with its 95% bootstrap interval over seeds."""

    alpha: float | None
    ci: list[float] | None
    c: float | None
    x_range: list[float] | None    # the lowest and highest x fitted
    n_points: int
    n_left_out: int                # points whose mean or x is 0 or less (no logarithm)
    n_seeds: int
    text: str                      # "α = 0.42 [0.38, 0.47]"
    reason: str


@dataclass(frozen=True)
class LineView:
    value: Any
    label: str
    points: list[PointRow]
    fit: FitView | None


@dataclass(frozen=True)
class PanelView:
    metric: str                    # e.g. "test_error"
    label: str                     # e.g. "test error (%)"
    lines: list[LineView]


@dataclass(frozen=True)
class CurveView:
    name: str
    title: str
    x: str
    x_label: str
    by: str | None
    sweep: str | None
    log_x: bool
    log_y: bool
    marks: list[dict]              # {"x": ..., "label": ...}
    fit: str | None
    x_values: list[float]
    panels: list[PanelView]
    n_experiments: int             # the curve's experiments with results
    n_networks: int
    n_diverged: int                # left out of every number
    n_without_x: int               # experiments with results but no x: left out


def _none(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _fit_view(fit: stats.PowerLaw) -> FitView:
    return FitView(alpha=_none(fit.alpha), ci=None if math.isnan(fit.ci_low) else [fit.ci_low, fit.ci_high],
                   c=_none(fit.c), x_range=[fit.x_low, fit.x_high] if fit.fitted else None, n_points=fit.n_points,
                   n_left_out=fit.n_left_out, n_seeds=fit.n_seeds, text=fit.describe(), reason=fit.reason)


def _log_x(curve: Curve, xs: list[float]) -> bool:
    if curve.log_x is not None:
        return curve.log_x
    return len(xs) > 1 and min(xs) > 0 and max(xs) / min(xs) > LOG_SPAN


def curve_view(run: RunResults, curve: Curve, confidence: float = 0.95) -> CurveView:
    """One [[curve]] of the run's study, read from its finished networks."""
    panels, xs, first = [], [], None
    for metric in curve.y:
        recs, without_x = records(run, curve, metric)
        first = first or (recs, without_x)
        levels = _ordered(list({level_key(r.line): r.line for r in recs}.values()))
        found = stats.lines(recs, levels, confidence)
        xs = sorted({float(r.x) for r in recs})
        views = []
        for line in found:
            rows = [PointRow(p.x, _none(p.summary.mean), None if math.isnan(p.summary.ci_low) else
                             [p.summary.ci_low, p.summary.ci_high], p.summary.n, p.n_networks, p.n_diverged)
                    for p in line.points]
            fit = _fit_view(stats.fit_power_law(line, confidence=confidence)) if curve.fit == "power_law" else None
            views.append(LineView(line.level, "" if curve.by is None else value_label(line.level), rows, fit))
        panels.append(PanelView(metric, metric_label(metric), views))
    recs, without_x = first
    return CurveView(
        name=curve.name, title=curve.title or f"{', '.join(metric_label(m) for m in curve.y)} against {x_label(curve)}",
        x=curve.x, x_label=x_label(curve), by=curve.by, sweep=curve.sweep, log_x=_log_x(curve, xs),
        log_y=curve.log_y, marks=[m.model_dump() for m in curve.marks], fit=curve.fit, x_values=xs, panels=panels,
        n_experiments=sum(1 for e in curve_experiments(run, curve) if run.results(e.name)) - without_x,
        n_networks=len(recs), n_diverged=sum(r.diverged for r in recs), n_without_x=without_x)


def curve_views(run: RunResults, confidence: float = 0.95) -> list[CurveView]:
    """Every [[curve]] of the run's study (none when it declares none)."""
    return [curve_view(run, c, confidence) for c in run.study.curve]


def curve_summary(run: RunResults, views: list[CurveView] | None = None) -> dict:
    """The curves as plain JSON-ready data: {"curves": [CurveView as a dict, ...]}."""
    views = curve_views(run) if views is None else views
    return {"curves": [asdict(v) for v in views]}


# ---------------------------------------------------------------------------------- table cells

def x_text(x: float) -> str:
    """An x as tables print it: 103,360; 0.2; 1e-05."""
    return f"{int(x):,}" if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def cell_text(row: PointRow, metric: str) -> str:
    """"12.34 ± 0.56" (mean ± half the 95% interval); "12.34" with one seed; "—" with none."""
    if row.mean is None:
        return "—"
    show = (lambda v: f"{v:.4g}") if metric.endswith("_loss") else (lambda v: f"{v:.2f}")
    if row.ci is None:
        return show(row.mean)
    return f"{show(row.mean)} ± {show((row.ci[1] - row.ci[0]) / 2)}"


def table_cells(view: CurveView) -> tuple[list[str], list[list[str]]]:
    """The curve as a table: a column per (metric, line), a row per x. (header, rows); a header
    of a curve with lines has two lines of text, the metric and the line's value."""
    header, columns = [view.x_label], []
    for panel in view.panels:
        for line in panel.lines:
            name = panel.label if view.by is None else f"{panel.label}\n{view.by} = {line.label}"
            header.append(name)
            columns.append([cell_text(r, panel.metric) for r in line.points])
    rows = [[x_text(x)] + [column[i] for column in columns] for i, x in enumerate(view.x_values)]
    return header, rows


def fit_lines(view: CurveView) -> list[str]:
    """One line of text per fitted line: "label_noise = 0.2: α = 0.42 [0.38, 0.47]"."""
    out = []
    for panel in view.panels:
        for line in panel.lines:
            if line.fit is None:
                continue
            name = f"{view.by} = {line.label}: " if view.by is not None else ""
            extra = f"; {line.fit.reason}" if line.fit.ci is not None and line.fit.reason else ""
            out.append(f"{name}{line.fit.text}{extra}")
    return out


def counts_text(view: CurveView) -> str:
    text = f"{view.n_networks:,} networks"
    if view.n_diverged:
        text += f", {view.n_diverged:,} diverged and left out"
    if view.n_without_x:
        text += f"; {view.n_without_x:,} experiments without a value of {view.x} left out"
    return text


# ------------------------------------------------------------------------------ terminal tables

def curve_table(view: CurveView) -> Table:
    """Rows x, a column per metric and line: mean ± half the 95% interval over seeds."""
    title = f"{view.name}: {view.title}"
    table = Table(title=escape(title), box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), min_width=len(title) + 2,
                  caption="mean ± half the 95% CI over seeds (t); diverged networks left out")
    header, rows = table_cells(view)
    for i, name in enumerate(header):
        table.add_column(escape(name), justify="right", no_wrap=i > 0, overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


def findings_table(view: CurveView) -> Table:
    """Under a curve's table: what it counts, each line's alpha (with a fit) and the marks."""
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column("finding")
    table.add_row(escape(f"{view.name}: {counts_text(view)}."))
    if view.fit:
        table.add_row("power law y = c·x^(−α) per line, α's 95% CI by bootstrapping seeds:")
        for line in fit_lines(view):
            table.add_row(escape(f"  {line}"))
    if view.marks:
        table.add_row(escape("marks: " + ", ".join(f"{m['label'] or 'mark'} at {x_text(m['x'])}" for m in view.marks)))
    return table


def curve_tables(run: RunResults, views: list[CurveView] | None = None) -> list[Table]:
    """For `show`: per curve, its table and the findings under it."""
    views = curve_views(run) if views is None else views
    return [t for v in views for t in (curve_table(v), findings_table(v))]
