"""A run's sweeps read as a whole: each swept field's effect on test accuracy, their interactions,
the effects against the baseline, and the best configuration.

Typed views first (`sweep_views` -> `SweepView`), rendering second (`sweep_tables` for `show`,
`sweep_summary` for its JSON, the report's "Sweep" section), so every reader sees the same
numbers. The statistics are `stats.sweep`'s; this module only gathers the run's networks into its
records. No matplotlib here: `show` imports this module.

    from mnist_study.report.sweep import sweep_summary, sweep_tables
    for table in sweep_tables(run):
        console.print(table)

Fields in a `zip` group move together, so they are read as one factor ("hidden & l2"), whose
values are the groups of values. Configurations are ranked by mean validation accuracy, never by
the test set; what is reported for them is test accuracy.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from rich import box
from rich.markup import escape
from rich.table import Table

from mnist_study.report.summary import diverged_epoch
from mnist_study.results import RunResults
from mnist_study.stats import sweep as stats
from mnist_study.stats.inference import Summary
from mnist_study.study import Experiment, Sweep

METRIC_SPLIT = "test"          # what the sweep's plots and tables report
CHOICE_SPLIT = "validation"    # what ranks configurations: never the test set
LOG_SPAN = 20                  # numeric values spanning more than this factor get a log axis


# ------------------------------------------------------------------------------------- factors

@dataclass(frozen=True)
class Factor:
    """A swept field, or a zip group of fields read as one.

    values : in the sweep's order; for a zip group each value is the list of the group's values.
    axis : how plots lay the values out: "log", "linear" or "categorical" (evenly spaced).
    """

    name: str
    fields: tuple[str, ...]
    values: list[Any]
    baseline: Any
    axis: str

    def value_of(self, e: Experiment) -> Any:
        if len(self.fields) == 1:
            return e.swept[self.fields[0]]
        return [e.swept[f] for f in self.fields]

    def label(self, value: Any) -> str:
        if len(self.fields) == 1:
            return value_label(value)
        return " & ".join(value_label(v) for v in value)


def value_label(value: Any) -> str:
    """A swept value as tables print it: 0.001, adam, true, 100-100 (hidden widths), pca(variance=0.9)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "-".join(value_label(v) for v in value) if value else "[]"
    if isinstance(value, dict):
        rest = ", ".join(f"{k}={value_label(v)}" for k, v in value.items() if k != "kind")
        return f"{value['kind']}({rest})" if "kind" in value else rest
    return str(value)


def axis_kind(values: list[Any]) -> str:
    """"log" for positive numbers spanning more than LOG_SPAN, "linear" for other numbers (that
    span less, or include 0 within a narrow range), "categorical" for anything else."""
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(values) < 2 or len(numbers) != len(values):
        return "categorical"
    positive = [v for v in numbers if v > 0]
    span = max(positive) / min(positive) if positive else 1.0
    if len(positive) == len(numbers):
        return "log" if span > LOG_SPAN else "linear"
    return "categorical" if span > LOG_SPAN else "linear"  # 0 beside decades: no axis shows both


def factors(sweep: Sweep) -> list[Factor]:
    """The sweep's factors in the order of `vary`; a zip group sits where its first field does."""
    grouped = {f: tuple(group) for group in sweep.zip for f in group}
    out, done = [], set()
    for name in sweep.vary:
        fields = grouped.get(name, (name,))
        if fields in done:
            continue
        done.add(fields)
        if len(fields) == 1:
            values = list(sweep.vary[name])
            wanted = sweep.baseline.get(name, values[0])
            keys = [stats.level_key(v) for v in values]
            baseline = values[keys.index(stats.level_key(wanted))] if stats.level_key(wanted) in keys else values[0]
            out.append(Factor(name, fields, values, baseline, axis_kind(values)))
            continue
        values = [list(t) for t in zip(*(sweep.vary[f] for f in fields))]
        given = [(i, sweep.baseline[f]) for i, f in enumerate(fields) if f in sweep.baseline]
        matching = [v for v in values if all(stats.level_key(v[i]) == stats.level_key(b) for i, b in given)]
        out.append(Factor(" & ".join(fields), fields, values, (matching or values)[0], "categorical"))
    return out


def sweep_experiments(run: RunResults, sweep: Sweep) -> list[Experiment]:
    return [e for e in run.experiments if e.sweep == sweep.name]


def records(run: RunResults, experiments: list[Experiment], found: list[Factor], split: str) -> list[stats.Record]:
    """One record per finished network of `experiments`: its factors' values and its accuracy on `split`."""
    out = []
    for e in experiments:
        try:
            swept = {f.name: f.value_of(e) for f in found}
        except KeyError:  # an experiment that does not carry every swept field is not this sweep's
            continue
        for r in run.results(e.name):
            out.append(stats.Record(e.name, swept, r.seed, r.accuracy(split), diverged_epoch(r.metrics) is not None))
    return out


# --------------------------------------------------------------------------------------- views

@dataclass(frozen=True)
class LevelRow:
    """One value of a factor: test accuracy (percent) averaged over the other fields, over seeds."""

    value: Any
    label: str
    baseline: bool
    mean: float | None
    ci: list[float] | None
    n_seeds: int
    n_experiments: int
    n_networks: int
    diverged: int


@dataclass(frozen=True)
class FactorView:
    name: str
    axis: str
    levels: list[LevelRow]


@dataclass(frozen=True)
class InteractionView:
    """Two factors' cells: `x` along the axis, one line per value of `lines`; cells[line][x]."""

    x: str
    lines: str
    x_axis: str
    x_values: list[Any]
    x_labels: list[str]
    line_labels: list[str]
    cells: list[list[LevelRow]]


@dataclass(frozen=True)
class EffectRow:
    """A value against its factor's baseline: difference of test accuracy in points."""

    factor: str
    level: str
    baseline: str
    difference: float | None
    ci: list[float] | None
    p: float | None
    p_holm: float | None
    method: str  # "paired", "welch", "exact", or "" without a test
    n_level: int
    n_baseline: int
    reason: str


@dataclass(frozen=True)
class BestView:
    experiment: str
    settings: str
    mean: float
    ci: list[float] | None
    n_seeds: int
    runner_up: str | None
    difference: float | None
    difference_ci: list[float] | None
    method: str
    distinguishable: bool | None
    sentence: str


@dataclass(frozen=True)
class SweepView:
    name: str
    factors: list[str]
    n_experiments: int        # the sweep's experiments
    n_finished: int           # of them, with at least one finished network
    n_networks: int           # finished networks
    n_diverged: int           # of them, diverged: left out of every number below
    metric: str
    chosen_by: str
    levels: list[FactorView]
    interactions: list[InteractionView]
    effects: list[EffectRow]
    best: BestView | None


def _none(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def _ci(s: Summary) -> list[float] | None:
    return None if math.isnan(s.ci_low) else [s.ci_low, s.ci_high]


def _row(cell: stats.Cell, label: str, baseline: bool) -> LevelRow:
    return LevelRow(value=cell.level if len(cell.levels) == 1 else list(cell.levels), label=label,
                    baseline=baseline, mean=_none(cell.summary.mean), ci=_ci(cell.summary),
                    n_seeds=cell.summary.n, n_experiments=cell.n_experiments, n_networks=cell.n_networks,
                    diverged=cell.n_diverged)


def _interaction(recs: list[stats.Record], a: Factor, b: Factor, confidence: float) -> InteractionView:
    # Along x: the numeric factor if only one is, else the one with more values (fewer lines).
    if (a.axis == "categorical") != (b.axis == "categorical"):
        x, line = (b, a) if a.axis == "categorical" else (a, b)
    else:
        x, line = (b, a) if len(b.values) > len(a.values) else (a, b)
    found = stats.interaction(recs, line.name, x.name, line.values, x.values, confidence)
    n = len(x.values)
    grid = [[_row(c, f"{line.label(c.levels[0])}, {x.label(c.levels[1])}", False) for c in found[i:i + n]]
            for i in range(0, len(found), n)]
    return InteractionView(x=x.name, lines=line.name, x_axis=x.axis, x_values=list(x.values),
                           x_labels=[x.label(v) for v in x.values], line_labels=[line.label(v) for v in line.values],
                           cells=grid)


def _best(run_best: stats.Best | None, experiments: dict[str, Experiment]) -> BestView | None:
    if run_best is None:
        return None
    c = run_best.comparison
    e = experiments[run_best.experiment]
    return BestView(
        experiment=run_best.experiment, settings=", ".join(f"{k} = {value_label(v)}" for k, v in e.swept.items()),
        mean=run_best.summary.mean, ci=_ci(run_best.summary), n_seeds=run_best.summary.n,
        runner_up=run_best.runner_up, difference=None if c is None else c.difference,
        difference_ci=None if c is None else [c.ci_low, c.ci_high],
        method="" if c is None else ("paired" if run_best.paired else "welch"),
        distinguishable=run_best.distinguishable,
        sentence=run_best.describe(f"{METRIC_SPLIT} accuracy", f"{CHOICE_SPLIT} accuracy"))


def sweep_view(run: RunResults, sweep: Sweep, confidence: float = 0.95) -> SweepView:
    """One sweep of the run, read as a whole (see the module docstring)."""
    found = factors(sweep)
    experiments = sweep_experiments(run, sweep)
    recs = records(run, experiments, found, METRIC_SPLIT)
    levels = []
    for f in found:
        base = stats.level_key(f.baseline)
        levels.append(FactorView(f.name, f.axis, [
            _row(c, f.label(c.level), stats.level_key(c.level) == base)
            for c in stats.main_effects(recs, f.name, f.values, confidence)]))
    varied = [f for f in found if len(f.values) > 1]
    interactions = [_interaction(recs, a, b, confidence) for i, a in enumerate(varied) for b in varied[i + 1:]]
    by_name = {f.name: f for f in found}
    effects = [EffectRow(factor=x.field, level=by_name[x.field].label(x.level),
                         baseline=by_name[x.field].label(x.baseline), difference=_none(x.difference),
                         ci=None if math.isnan(x.ci_low) else [x.ci_low, x.ci_high], p=_none(x.p_value),
                         p_holm=_none(x.p_holm), method=x.method, n_level=x.n_level, n_baseline=x.n_baseline,
                         reason=x.reason)
               for x in stats.effects_table(recs, [f.name for f in found], {f.name: f.baseline for f in found},
                                            {f.name: f.values for f in found}, confidence)]
    best = stats.best_configuration(recs, select=records(run, experiments, found, CHOICE_SPLIT),
                                    confidence=confidence)
    return SweepView(
        name=sweep.name, factors=[f.name for f in found], n_experiments=len(experiments),
        n_finished=len({r.experiment for r in recs}), n_networks=len(recs),
        n_diverged=sum(r.diverged for r in recs), metric=f"{METRIC_SPLIT} accuracy (%)",
        chosen_by=f"{CHOICE_SPLIT} accuracy", levels=levels, interactions=interactions, effects=effects,
        best=_best(best, {e.name: e for e in experiments}))


def sweep_views(run: RunResults, confidence: float = 0.95) -> list[SweepView]:
    """Every sweep of the run's study (none when it has no [[sweep]])."""
    return [sweep_view(run, s, confidence) for s in run.study.sweep]


def sweep_summary(run: RunResults, views: list[SweepView] | None = None) -> dict:
    """The sweeps as plain JSON-ready data: {"sweeps": [SweepView as a dict, ...]}."""
    views = sweep_views(run) if views is None else views
    return {"sweeps": [asdict(v) for v in views]}


# ------------------------------------------------------------------------------ terminal tables

def _mean(mean: float | None) -> str:
    return "—" if mean is None else f"{mean:.2f}"


def _interval(ci: list[float] | None, signed: bool = False) -> str:
    if ci is None:
        return "—"
    fmt = "{:+.2f}" if signed else "{:.2f}"
    return f"[{fmt.format(ci[0])}, {fmt.format(ci[1])}]"


def levels_table(view: SweepView) -> Table:
    """Each value of each factor: mean test accuracy over the other fields, its 95% CI, seeds, diverged."""
    table = Table(title=f"{escape(view.name)}: {view.metric} by value, averaged over the other swept fields",
                  box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1),
                  caption="* the baseline of the effects below; CI: 95% over seeds (t); diverged networks left out")
    for name, justify in (("field", "left"), ("value", "left"), ("mean", "right"), ("95% CI", "right"),
                          ("seeds", "right"), ("exps", "right"), ("diverged", "right")):
        # Names wrap; numbers never do (a cut number is a wrong number).
        table.add_column(name, justify=justify, no_wrap=justify == "right", overflow="fold")
    for f in view.levels:
        for i, r in enumerate(f.levels):
            table.add_row(escape(f.name) if i == 0 else "", escape(r.label) + (" *" if r.baseline else ""),
                          _mean(r.mean), _interval(r.ci), str(r.n_seeds), str(r.n_experiments),
                          f"[red]{r.diverged}[/]" if r.diverged else "0", end_section=i == len(f.levels) - 1)
    return table


def effects_table(view: SweepView) -> Table:
    """Each value against its factor's baseline: difference in points, 95% CI, Holm-adjusted p."""
    table = Table(title=f"{escape(view.name)}: effects on {view.metric} against each field's baseline",
                  box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1),
                  caption="difference in points; paired by seed where both have the same seeds, else Welch; "
                          "p Holm-adjusted over the whole table")
    for name, justify in (("field", "left"), ("value", "left"), ("vs", "left"), ("difference", "right"),
                          ("95% CI", "right"), ("Holm p", "right"), ("test", "left")):
        table.add_column(name, justify=justify, no_wrap=justify == "right", overflow="fold")
    for r in view.effects:
        marked = r.p_holm is not None and r.p_holm < 0.05
        p = "—" if r.p_holm is None else (f"[bold]{r.p_holm:.2g}[/]" if marked else f"{r.p_holm:.2g}")
        table.add_row(escape(r.factor), escape(r.level), escape(r.baseline),
                      "—" if r.difference is None else f"{r.difference:+.2f}", _interval(r.ci, signed=True), p,
                      r.method or escape(r.reason))
    return table


def best_table(view: SweepView) -> Table:
    """The best configuration (by validation accuracy) and the runner-up, in a sentence."""
    table = Table(title=f"{escape(view.name)}: best configuration", box=None, show_header=False, pad_edge=False)
    table.add_column("finding")
    diverged = (f"{view.n_diverged:,} of {view.n_networks:,} networks diverged and are left out."
                if view.n_diverged else f"None of the {view.n_networks:,} networks diverged.")
    if view.best is None:
        table.add_row(f"No network of this sweep has finished yet. {diverged}")
    else:
        table.add_row(escape(f"{view.best.sentence} ({view.best.settings}.) {diverged}"))
    return table


def sweep_tables(run: RunResults, views: list[SweepView] | None = None) -> list[Table]:
    """For `show`: per sweep, the values' table, the effects table and the best configuration."""
    views = sweep_views(run) if views is None else views
    return [t for v in views for t in (levels_table(v), effects_table(v), best_table(v))]
