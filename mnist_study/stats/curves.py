"""Curves: a metric against a number (parameters, training images, ...) over seeds, one line per
value of another field, and a power law fitted to each line.

The input is one `Record` per trained network: its line (a value of the field that splits the
curve into lines; None for a single line), its x, its seed, its y (the metric: an error in percent,
a loss) and whether it diverged. Nothing here knows about files or studies.

A point (line, x) is summarised over seeds: the networks of one seed at that point (experiments
that differ in a field the curve does not show) are averaged first, then the per-seed numbers get
their mean and Student-t interval (`inference.summarize`), as a sweep's cells do (`stats.sweep`).
Diverged networks (and non-finite metrics) are left out of every number and counted.

The power law, y = c * x^(-alpha), is fitted per line by least squares of log y on log x over the
per-x means (each x one point, however many seeds it has). Its interval is a percentile bootstrap
over seeds: the seeds are drawn with replacement, jointly across x (a seed drawn twice counts twice
at every x), the per-x means recomputed and the line refitted, `n_resamples` times with a fixed RNG
seed, so that the same run gives the same interval. With few seeds the resamples take few distinct
values and the interval is too narrow (on synthetic lines it covers alpha about 82% of the time
with 4 seeds, 89% with 8, 95% with 32): read it as a lower bound. Points where the mean or x is 0 or less have
no logarithm (a training error of exactly 0, a label-noise level of 0): they are left out of the
fit and counted.

    points = lines(records)                    # one Line per value of the line field
    fit = fit_power_law(points[0])             # PowerLaw: alpha, c, the interval of alpha
    fit.describe()                             # "α = 0.42 [0.38, 0.47]"
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mnist_study.stats import sweep
from mnist_study.stats.inference import Summary, summarize

N_RESAMPLES = 2000
RESAMPLE_SEED = 0


@dataclass(frozen=True)
class Record:
    """One trained network on a curve.

    line : the value of the field that makes the lines (None for a curve of one line).
    x : where the network sits along the curve, e.g. its number of parameters.
    seed : the network's seed; networks of different points with the same seed are resampled together.
    y : the metric, e.g. test error in percent.
    diverged : the training loss became NaN or infinite; such networks are left out and counted.
    """

    line: Any
    x: float
    seed: int
    y: float
    diverged: bool = False

    @property
    def usable(self) -> bool:
        return not self.diverged and math.isfinite(self.y)


@dataclass(frozen=True)
class Point:
    """One x of one line, over seeds.

    summary : mean and t interval of `per_seed`; n is the number of seeds (0: no network here).
    per_seed : seed -> the mean metric of that seed's networks at this point (diverged left out).
    n_networks : networks averaged; n_diverged : networks here that diverged.
    """

    x: float
    summary: Summary
    per_seed: dict[int, float]
    n_networks: int
    n_diverged: int


@dataclass(frozen=True)
class Line:
    """A line of the curve: `points` has one Point per x of the whole curve, in increasing x."""

    level: Any
    points: list[Point]

    @property
    def n_diverged(self) -> int:
        return sum(p.n_diverged for p in self.points)


@dataclass(frozen=True)
class PowerLaw:
    """y = c * x^(-alpha) fitted to a line's per-x means.

    alpha, c : the fit; nan when there is none (see `reason`).
    ci_low, ci_high : percentile bootstrap interval of alpha at `confidence`; nan without one.
    n_points : x values fitted; n_left_out : points left out because the mean or x is 0 or less.
    n_seeds : seeds resampled; n_resamples : resamples that gave a fit.
    reason : why there is no fit or no interval ("" when there are both).
    """

    alpha: float
    c: float
    ci_low: float
    ci_high: float
    confidence: float
    n_points: int
    n_left_out: int
    n_seeds: int
    n_resamples: int
    x_low: float
    x_high: float
    reason: str = ""

    @property
    def fitted(self) -> bool:
        return math.isfinite(self.alpha)

    def predict(self, x) -> np.ndarray:
        """c * x^(-alpha) at `x` (any shape)."""
        return self.c * np.asarray(x, dtype=float) ** (-self.alpha)

    def describe(self) -> str:
        """"α = 0.42 [0.38, 0.47]"; "α = 0.42 (one seed, so no interval)"; "no fit: ..."."""
        if not self.fitted:
            return f"no fit: {self.reason}"
        if math.isnan(self.ci_low):
            return f"α = {self.alpha:.2f} ({self.reason})"
        return f"α = {self.alpha:.2f} [{self.ci_low:.2f}, {self.ci_high:.2f}]"


# ------------------------------------------------------------------------------------------ points

def lines(records: Sequence[Record], levels: Sequence[Any] | None = None, confidence: float = 0.95) -> list[Line]:
    """One Line per value of the line field, each with a Point at every x of the curve.

    Parameters
    ----------
    records : the curve's networks.
    levels : the lines' values in the order wanted (default: as first seen); a value without any
        network is listed with empty points.
    """
    # A point is a cell of (line, x), summarised over seeds exactly as a sweep's cells are.
    as_cells = [sweep.Record("", {"line": r.line, "x": float(r.x)}, r.seed, r.y, r.diverged) for r in records]
    if levels is None:
        levels = sweep.levels_of(as_cells, "line")
    xs = sorted({float(r.x) for r in records})
    grid = sweep.cells(as_cells, ["line", "x"], [list(levels), xs], confidence)  # line by line, x fastest
    return [Line(level, [Point(c.levels[1], c.summary, c.per_seed, c.n_networks, c.n_diverged)
                         for c in grid[i * len(xs):(i + 1) * len(xs)]])
            for i, level in enumerate(levels)]


# --------------------------------------------------------------------------------------- power law

def _slopes(log_x: np.ndarray, log_y: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Least-squares slopes of log_y on log_x, row by row, over the entries `valid` marks.

    log_x (K,); log_y, valid (B, K). Rows with fewer than two distinct valid x give nan.
    """
    w = valid.astype(float)
    y = np.where(valid, log_y, 0.0)
    n = w.sum(axis=1)
    sx, sy = w @ log_x, y.sum(axis=1)
    sxx, sxy = w @ (log_x ** 2), y @ log_x
    denominator = n * sxx - sx ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = (n * sxy - sx * sy) / denominator
    return np.where((n >= 2) & (denominator > 1e-12 * np.maximum(n * sxx, 1e-300)), slope, np.nan)


def fit_power_law(line: Line, n_resamples: int = N_RESAMPLES, seed: int = RESAMPLE_SEED,
                  confidence: float = 0.95) -> PowerLaw:
    """Fit y = c * x^(-alpha) to a line's per-x means; alpha's interval by bootstrapping seeds.

    Points without a network, and those where the mean or x is 0 or less (no logarithm), are
    left out; the latter are counted in `n_left_out`. A fit needs two x values left; an interval
    needs two seeds.
    """
    had = [p for p in line.points if p.summary.n > 0]
    kept = [p for p in had if p.x > 0 and p.summary.mean > 0]
    left_out = len(had) - len(kept)
    seeds = sorted({s for p in kept for s in p.per_seed})
    nothing = dict(alpha=math.nan, c=math.nan, ci_low=math.nan, ci_high=math.nan, confidence=confidence,
                   n_points=len(kept), n_left_out=left_out, n_seeds=len(seeds), n_resamples=0,
                   x_low=math.nan, x_high=math.nan)
    why_out = (f"; {left_out} point{'s' if left_out != 1 else ''} with a mean or x of 0 or less left out "
               "(no logarithm)") if left_out else ""
    if len({p.x for p in kept}) < 2:
        return PowerLaw(**nothing, reason=f"needs at least 2 x values with a positive mean, has {len(kept)}{why_out}")
    log_x = np.log([p.x for p in kept])
    log_mean = np.log([[p.summary.mean for p in kept]])
    alpha = -float(_slopes(log_x, log_mean, np.ones_like(log_mean, dtype=bool))[0])
    c = float(np.exp(np.mean(log_mean[0]) + alpha * np.mean(log_x)))
    found = dict(nothing, alpha=alpha, c=c, x_low=float(min(p.x for p in kept)), x_high=float(max(p.x for p in kept)))
    if len(seeds) < 2:
        return PowerLaw(**found, reason="one seed, so no interval" + why_out)
    # y[k, s]: seed s's mean at point k (nan where it has none); each resample weighs the seeds by
    # how often it drew them, the same weights at every x.
    y = np.array([[p.per_seed.get(s, np.nan) for s in seeds] for p in kept])
    have = np.isfinite(y)
    draws = np.random.default_rng(seed).integers(0, len(seeds), (n_resamples, len(seeds)))
    weights = np.zeros((n_resamples, len(seeds)))
    np.add.at(weights, (np.arange(n_resamples)[:, None], draws), 1.0)
    counts = weights @ have.T
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (weights @ np.where(have, y, 0.0).T) / counts
        valid = (counts > 0) & (means > 0)
        alphas = -_slopes(log_x, np.log(np.where(valid, means, 1.0)), valid)
    alphas = alphas[np.isfinite(alphas)]
    if alphas.size == 0:
        return PowerLaw(**found, reason="no resample could be fitted" + why_out)
    tail = 50 * (1 - confidence)
    low, high = np.percentile(alphas, [tail, 100 - tail])
    return PowerLaw(**dict(found, ci_low=float(low), ci_high=float(high), n_resamples=int(alphas.size)),
                    reason=why_out.removeprefix("; "))
