"""Reading a sweep: main effects, interactions, effects against a baseline, and the best configuration.

A sweep crosses the values of a few fields; every combination is an experiment, trained with
several seeds. The input here is one `Record` per trained network: its experiment, the experiment's
swept values (field -> value), its seed, the metric (percent, e.g. test accuracy) and whether it
diverged. Nothing here knows about files or studies.

How a value of a field is summarised (a main effect). For field F and value v, each seed s gives one
number: the mean metric over the experiments with F = v at seed s, i.e. the marginal mean over the
other swept fields (they were crossed, so each value of F sees every combination of the others).
The interval is Student's t over those per-seed numbers (`inference.summarize`): it says how much
the marginal mean moves from one set of seeds to another. An interaction cell (F = a, G = b) is
summarised the same way, averaging over the remaining fields.

Diverged networks (training loss NaN or infinite) are left out of every average and counted; a
seed whose networks at a value all diverged gives that value no number. So a combination that
always diverges drops out of its marginal mean at every seed alike, and the count says so.

Effects against a baseline. Each value v of F against the baseline value b: the difference of
their marginal means, with a confidence interval and a p-value, paired by seed when both have the
same seeds (the per-seed differences, tested against 0) and by Welch's test otherwise. The p-values
of the whole table are Holm-corrected together (`inference.holm`).

    records = [Record("lr0.01-adam", {"lr": 0.01, "opt": "adam"}, seed=0, value=97.9), ...]
    main_effects(records, "lr")                    # one Cell per value of lr
    effects_table(records, ["lr", "opt"], baselines={"opt": "rmsprop"})
    best_configuration(records, select=validation_records).describe("test accuracy", "validation accuracy")
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mnist_study.stats.inference import Summary, TestResult, holm, summarize, welch_test


@dataclass(frozen=True)
class Record:
    """One trained network of a sweep.

    experiment : its experiment's name.
    swept : the experiment's swept values, field -> value.
    seed : the network's seed; networks of different experiments with the same seed are paired.
    value : the metric, e.g. test accuracy in percent.
    diverged : the training loss became NaN or infinite; such networks are left out and counted.
    """

    experiment: str
    swept: Mapping[str, Any]
    seed: int
    value: float
    diverged: bool = False

    @property
    def usable(self) -> bool:
        return not self.diverged and math.isfinite(self.value)


@dataclass(frozen=True)
class Cell:
    """One value of a field (or a combination of values of several fields), over seeds.

    fields, levels : the fields and their values, in the same order.
    summary : mean and t interval of `per_seed`; n is the number of seeds.
    per_seed : seed -> the mean metric over this cell's experiments at that seed (diverged left out).
    n_experiments : experiments with these values (with at least one network, diverged or not).
    n_networks : networks averaged (diverged ones not included).
    n_diverged : networks of these experiments that diverged.
    """

    fields: tuple[str, ...]
    levels: tuple[Any, ...]
    summary: Summary
    per_seed: dict[int, float]
    n_experiments: int
    n_networks: int
    n_diverged: int

    @property
    def level(self) -> Any:
        """The value, for a cell of one field."""
        return self.levels[0]


@dataclass(frozen=True)
class Effect:
    """A value of a field against the field's baseline value: mean(level) - mean(baseline).

    difference, ci_low, ci_high : in the metric's unit (percentage points); nan without a test.
    p_value, p_holm : two-sided, raw and Holm-adjusted over the whole table; nan without a test.
    method : "paired" (per-seed differences), "welch", "exact" (no spread anywhere) or "" (no test).
    n_level, n_baseline : seeds behind each side.
    reason : why there is no test ("" when there is one).
    """

    field: str
    level: Any
    baseline: Any
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    p_holm: float
    method: str
    n_level: int
    n_baseline: int
    reason: str = ""

    @property
    def significant(self) -> bool:
        """Whether the Holm-adjusted p-value is below 0.05."""
        return not math.isnan(self.p_holm) and self.p_holm < 0.05


@dataclass(frozen=True)
class Best:
    """The experiment ranked first, and how it compares with the one ranked second.

    experiment, summary : the first, and its metric over its seeds (diverged left out).
    runner_up, runner_up_summary : the second (None when only one experiment has results).
    comparison : mean(best) - mean(runner_up) on the metric; None with fewer than 2 seeds a side.
    paired : whether `comparison` pairs the seeds (both have the same seeds) or is Welch's.
    n_ranked : experiments ranked (those with at least one usable network).
    """

    experiment: str
    summary: Summary
    runner_up: str | None
    runner_up_summary: Summary | None
    comparison: TestResult | None
    paired: bool
    n_ranked: int
    confidence: float = 0.95

    @property
    def distinguishable(self) -> bool | None:
        """Whether the interval of the difference excludes 0 (None without a comparison)."""
        if self.comparison is None:
            return None
        return not (self.comparison.ci_low <= 0 <= self.comparison.ci_high)

    def describe(self, metric: str = "the metric", chosen_by: str | None = None) -> str:
        """The finding in one sentence, e.g. "... indistinguishable from w256 at 95%: difference
        0.12 points, CI [-0.30, 0.50] (paired by seed)." `chosen_by` names what ranked the
        experiments when it is not `metric` itself (say, validation accuracy)."""
        level = f"{self.confidence:.0%}"
        s = self.summary
        first = (f"{self.experiment} has the highest mean {chosen_by or metric} of {self.n_ranked:,} "
                 f"experiment{'s' if self.n_ranked != 1 else ''}: {metric} {s.mean:.2f}%")
        first += (f" ({level} CI [{s.ci_low:.2f}, {s.ci_high:.2f}], {s.n} seeds)" if s.n >= 2
                  else " (one seed, so no interval)")
        if self.runner_up is None:
            return first + "; no other experiment has results to compare it with."
        c = self.comparison
        if c is None:
            return (first + f"; the runner-up {self.runner_up} has {self.runner_up_summary.mean:.2f}%, and telling "
                    "them apart needs at least 2 seeds of each.")
        numbers = (f"difference {c.difference:+.2f} points, CI [{c.ci_low:+.2f}, {c.ci_high:+.2f}] "
                   f"({'paired by seed' if self.paired else 'Welch'})")
        if not self.distinguishable:
            return first + f"; indistinguishable from the runner-up {self.runner_up} at {level}: {numbers}."
        if c.difference > 0:
            return first + f"; ahead of the runner-up {self.runner_up} at {level}: {numbers}."
        return first + f"; the runner-up {self.runner_up} does better on {metric} at {level}: {numbers}."


# ------------------------------------------------------------------------------------------ levels

def level_key(value: Any) -> Hashable:
    """A hashable key under which equal swept values meet: 1 and 1.0 are one value, lists and
    dicts (layers = [100, 100], a front-end table) compare by content; True stays apart from 1."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return (type(value).__name__, value)
    if isinstance(value, (int, float)):
        return ("number", float(value))
    if isinstance(value, (list, tuple)):
        return ("list", tuple(level_key(v) for v in value))
    if isinstance(value, Mapping):
        return ("dict", tuple(sorted((str(k), level_key(v)) for k, v in value.items())))
    return ("other", repr(value))


def levels_of(records: Sequence[Record], field_name: str) -> list[Any]:
    """The distinct values of `field_name` among the records, in the order first seen."""
    seen: dict[Hashable, Any] = {}
    for r in records:
        if field_name in r.swept:
            seen.setdefault(level_key(r.swept[field_name]), r.swept[field_name])
    return list(seen.values())


# ------------------------------------------------------------------------------------------- cells

def cells(records: Sequence[Record], fields: Sequence[str], levels: Sequence[Sequence[Any]] | None = None,
          confidence: float = 0.95) -> list[Cell]:
    """Each combination of values of `fields`, summarised over seeds (see the module docstring).

    Parameters
    ----------
    records : the sweep's networks; records lacking one of `fields` are ignored.
    fields : one field (main effect) or more (interaction).
    levels : per field, the values in the order wanted (e.g. the sweep's `vary` lists); by default
        those present, in the order first seen. Combinations are listed field by field, the last
        varying fastest; a combination without any network is listed with n = 0.
    """
    fields = tuple(fields)
    if levels is None:
        levels = [levels_of(records, f) for f in fields]
    if len(levels) != len(fields):
        raise ValueError(f"levels gives {len(levels)} lists for {len(fields)} fields")
    sums: dict[tuple, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    experiments: dict[tuple, set[str]] = defaultdict(set)
    diverged: dict[tuple, int] = defaultdict(int)
    for r in records:
        if not all(f in r.swept for f in fields):
            continue
        key = tuple(level_key(r.swept[f]) for f in fields)
        experiments[key].add(r.experiment)
        if r.usable:
            sums[key][r.seed].append(float(r.value))
        else:
            diverged[key] += 1
    out = []
    for combination in _product(levels):
        key = tuple(level_key(v) for v in combination)
        per_seed = {seed: sum(v) / len(v) for seed, v in sorted(sums[key].items())} if key in sums else {}
        out.append(Cell(fields=fields, levels=tuple(combination),
                        summary=summarize(list(per_seed.values()), confidence), per_seed=per_seed,
                        n_experiments=len(experiments.get(key, ())),
                        n_networks=sum(len(v) for v in sums[key].values()) if key in sums else 0,
                        n_diverged=diverged.get(key, 0)))
    return out


def main_effects(records: Sequence[Record], field_name: str, levels: Sequence[Any] | None = None,
                 confidence: float = 0.95) -> list[Cell]:
    """One `Cell` per value of `field_name`: its marginal mean over seeds, with a t interval."""
    return cells(records, (field_name,), None if levels is None else [levels], confidence)


def interaction(records: Sequence[Record], a: str, b: str, levels_a: Sequence[Any] | None = None,
                levels_b: Sequence[Any] | None = None, confidence: float = 0.95) -> list[Cell]:
    """One `Cell` per (value of a, value of b), b varying fastest: the marginal means over the
    remaining fields. Parallel profiles across b mean no interaction."""
    levels = [levels_a if levels_a is not None else levels_of(records, a),
              levels_b if levels_b is not None else levels_of(records, b)]
    return cells(records, (a, b), levels, confidence)


def _product(levels: Sequence[Sequence[Any]]) -> list[tuple]:
    combos: list[tuple] = [()]
    for values in levels:
        combos = [c + (v,) for c in combos for v in values]
    return combos


# ----------------------------------------------------------------------------------------- effects

def compare(a: Mapping[int, float], b: Mapping[int, float], confidence: float = 0.95) -> tuple[TestResult | None, str]:
    """mean(a) - mean(b) for per-seed values (seed -> value): paired by seed when both have the
    same seeds, else Welch. Returns (result, "paired" | "welch"), or (None, reason) when a side has
    fewer than 2 seeds."""
    if len(a) < 2 or len(b) < 2:
        return None, f"needs at least 2 seeds a side (has {len(a)} and {len(b)})"
    if set(a) == set(b):
        differences = [a[s] - b[s] for s in sorted(a)]
        return welch_test(differences, 0.0, confidence=confidence), "paired"
    return welch_test(list(a.values()), list(b.values()), confidence=confidence), "welch"


def effects_table(records: Sequence[Record], fields: Sequence[str], baselines: Mapping[str, Any] | None = None,
                  levels: Mapping[str, Sequence[Any]] | None = None, confidence: float = 0.95) -> list[Effect]:
    """Every value of every field against that field's baseline value, Holm-corrected together.

    Parameters
    ----------
    fields : the swept fields, in the order the table lists them.
    baselines : field -> baseline value; a field not given (or whose baseline is not among its
        values) is measured against its first value.
    levels : field -> its values in order (default: as first seen in the records).
    """
    baselines, levels = baselines or {}, levels or {}
    rows: list[dict] = []
    for f in fields:
        found = main_effects(records, f, levels.get(f), confidence)
        if not found:
            continue
        keys = [level_key(c.level) for c in found]
        wanted = level_key(baselines[f]) if f in baselines else None
        base = found[keys.index(wanted)] if wanted in keys else found[0]
        for cell in found:
            if cell is base:
                continue
            result, how = compare(cell.per_seed, base.per_seed, confidence)
            row = {"field": f, "level": cell.level, "baseline": base.level, "n_level": cell.summary.n,
                   "n_baseline": base.summary.n}
            if result is None:
                row.update(difference=cell.summary.mean - base.summary.mean, ci_low=math.nan, ci_high=math.nan,
                           p_value=math.nan, method="", reason=how)
            else:
                row.update(difference=result.difference, ci_low=result.ci_low, ci_high=result.ci_high,
                           p_value=result.p_value, method="exact" if result.method == "exact" else how)
            rows.append(row)
    adjusted = holm([r["p_value"] for r in rows])
    return [Effect(**r, p_holm=p) for r, p in zip(rows, adjusted)]


# -------------------------------------------------------------------------------- the best network

def experiment_means(records: Sequence[Record]) -> dict[str, dict[int, float]]:
    """experiment -> {seed: value} of its usable networks (diverged left out), in record order."""
    found: dict[str, dict[int, float]] = {}
    for r in records:
        found.setdefault(r.experiment, {})
        if r.usable:
            found[r.experiment][r.seed] = float(r.value)
    return found


def best_configuration(records: Sequence[Record], *, select: Sequence[Record] | None = None,
                       confidence: float = 0.95) -> Best | None:
    """The experiment with the highest mean metric, and whether the runner-up can be told from it.

    Parameters
    ----------
    records : the metric reported (say, test accuracy), one record per network.
    select : the metric that ranks the experiments, when it should not be `records`' own (say,
        validation accuracy, so that the test set plays no part in choosing); default `records`.
        Ranking on the reported metric itself favours the lucky: the winner's margin is then
        biased upwards.

    Returns None when no experiment has a usable network. Ties go to the experiment seen first.
    """
    reported = experiment_means(records)
    ranking = experiment_means(select if select is not None else records)
    means = {name: sum(v.values()) / len(v) for name, v in ranking.items() if v and reported.get(name)}
    if not means:
        return None
    order = sorted(means, key=lambda name: -means[name])  # stable: ties keep the order seen
    best = order[0]
    runner_up = order[1] if len(order) > 1 else None
    comparison, how = (None, "")
    if runner_up is not None:
        comparison, how = compare(reported[best], reported[runner_up], confidence)
    return Best(experiment=best, summary=summarize(list(reported[best].values()), confidence),
                runner_up=runner_up,
                runner_up_summary=summarize(list(reported[runner_up].values()), confidence) if runner_up else None,
                comparison=comparison, paired=how == "paired", n_ranked=len(order), confidence=confidence)
