"""Statistics on per-seed results: summaries, two-sample tests, and Holm's correction.

Every function here takes plain sequences of numbers, one value per seed (for this study,
accuracies in percent), and returns small frozen dataclasses of plain floats. Nothing here knows
about experiments, claims or files; `claims.py` and `compare.py` build on it.

Conventions shared by `welch_test` and `bootstrap_diff`:

* The quantity tested is ``D = mean(a) - mean(b)`` and the null hypothesis is stated against a
  bound ``delta``: ``alternative="greater"`` tests H0: D <= delta against H1: D > delta,
  ``"less"`` tests H0: D >= delta against H1: D < delta, ``"two-sided"`` tests H0: D == delta.
* ``b`` may be a single number instead of a sequence: a known constant (say a target accuracy of
  99.9 %), which turns the test into a one-sample test of ``a`` against it. Paired data are tested
  the same way: pass the per-seed differences as ``a`` and ``0.0`` as ``b``.
* Zero spread. When neither side has any spread (every seed gave the same value, or ``b`` is a
  constant and ``a`` has no spread), ``D`` is known exactly and no sampling model applies. The
  decision is then deterministic: the p-value is 0 when the exact ``D`` lies strictly inside the
  alternative (``D > delta`` for "greater", ``D < delta`` for "less", ``D != delta`` for
  "two-sided") and 1 otherwise, and the interval collapses to ``[D, D]``. Such results carry
  ``method="exact"`` so that callers can tell them apart from real tests.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats as sps

Alternative = Literal["two-sided", "greater", "less"]
ALTERNATIVES: tuple[str, ...] = ("two-sided", "greater", "less")


@dataclass(frozen=True)
class Summary:
    """Mean and Student-t confidence interval of per-seed values.

    Attributes
    ----------
    n : number of values (seeds).
    mean : arithmetic mean, same unit as the values (percent for accuracies); nan when n == 0.
    std : sample standard deviation (ddof=1); nan when n < 2.
    ci_low, ci_high : two-sided Student-t interval for the mean at ``confidence``; nan when n < 2.
    confidence : the interval's confidence level, e.g. 0.95.
    values : the values themselves, in the order given.
    """

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float
    confidence: float
    values: tuple[float, ...]


@dataclass(frozen=True)
class TestResult:
    """Outcome of a test on the difference of means ``D = mean(a) - mean(b)``.

    Attributes
    ----------
    difference : observed D, in the values' unit (percentage points for accuracies).
    ci_low, ci_high : two-sided interval for D at ``confidence`` (independent of
        ``alternative``, so that it can be shown beside any test).
    p_value : p-value of H0 against ``alternative`` with bound ``delta`` (see module docstring).
    alternative, delta : the hypothesis tested.
    statistic, df : t statistic and (Welch–Satterthwaite) degrees of freedom; nan for the
        bootstrap and for exact results.
    method : "welch", "one-sample", "bootstrap" or "exact" (no spread on either side).
    n_a, n_b : sample sizes; n_b is 0 when b is a constant.
    """

    __test__ = False  # keep pytest from collecting this class because of its name

    difference: float
    ci_low: float
    ci_high: float
    confidence: float
    p_value: float
    alternative: str
    delta: float
    statistic: float
    df: float
    method: str
    n_a: int
    n_b: int


def summarize(values: Sequence[float], confidence: float = 0.95) -> Summary:
    """Mean, sample std (ddof=1) and Student-t interval of per-seed values.

    Parameters
    ----------
    values : sequence of float, shape (n_seeds,), e.g. test accuracies in percent.
    confidence : level of the two-sided interval, in (0, 1).
    """
    _check_confidence(confidence)
    x = _as_array(values, "values")
    n = x.size
    mean = float(x.mean()) if n else math.nan
    if n < 2:
        return Summary(n, mean, math.nan, math.nan, math.nan, confidence, tuple(map(float, x)))
    std = float(x.std(ddof=1))
    half = float(sps.t.ppf(0.5 + confidence / 2, df=n - 1)) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half, confidence, tuple(map(float, x)))


def welch_test(
    a: Sequence[float],
    b: Sequence[float] | float,
    *,
    alternative: Alternative = "two-sided",
    delta: float = 0.0,
    confidence: float = 0.95,
) -> TestResult:
    """Welch's unequal-variance t-test of ``mean(a) - mean(b)`` against ``delta``.

    When ``b`` is a number it is a known constant and this is the one-sample t-test of ``a``
    against ``b + delta``. See the module docstring for the zero-spread rule.

    Parameters
    ----------
    a : sequence of float, shape (n_a,), n_a >= 2.
    b : sequence of float, shape (n_b,), n_b >= 2, or a float constant.
    alternative : "two-sided", "greater" (H1: D > delta) or "less" (H1: D < delta).
    delta : bound on the difference, in the values' unit.
    confidence : level of the two-sided interval reported for D.

    Raises
    ------
    ValueError : fewer than 2 values on a sampled side (no variance can be estimated), or an
        unknown ``alternative``.
    """
    _check_alternative(alternative)
    _check_confidence(confidence)
    x, y = _two_sides(a, b)
    diff = float(x.mean() - (y.mean() if y is not None else b))
    n_b = y.size if y is not None else 0
    if _no_spread(x, y):
        return _exact_result(diff, alternative, delta, confidence, x.size, n_b)

    with warnings.catch_warnings():
        # scipy flags a group whose values are all equal as "catastrophic cancellation"; here
        # that is a legitimate zero spread on one side, and Welch's test handles it.
        warnings.filterwarnings("ignore", message="Precision loss", category=RuntimeWarning)
        if y is None:
            # One-sample t-test of a against the constant b + delta.
            res = sps.ttest_1samp(x, float(b) + delta, alternative=alternative)
        else:
            # Shifting a by delta turns "D vs delta" into scipy's "D vs 0".
            res = sps.ttest_ind(x - delta, y, equal_var=False, alternative=alternative)
    if y is None:
        se = float(x.std(ddof=1)) / math.sqrt(x.size)
        df = float(x.size - 1)
        method = "one-sample"
    else:
        var_a, var_b = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
        se = math.sqrt(var_a + var_b)
        df = float((var_a + var_b) ** 2 / (var_a**2 / (x.size - 1) + var_b**2 / (y.size - 1)))
        method = "welch"
    half = float(sps.t.ppf(0.5 + confidence / 2, df=df)) * se
    return TestResult(
        difference=diff,
        ci_low=diff - half,
        ci_high=diff + half,
        confidence=confidence,
        p_value=float(res.pvalue),
        alternative=alternative,
        delta=float(delta),
        statistic=float(res.statistic),
        df=df,
        method=method,
        n_a=x.size,
        n_b=n_b,
    )


def bootstrap_diff(
    a: Sequence[float],
    b: Sequence[float] | float,
    *,
    alternative: Alternative = "two-sided",
    delta: float = 0.0,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> TestResult:
    """Percentile bootstrap of ``mean(a) - mean(b)``: an interval and a p-value-like quantity.

    Each side is resampled independently (``b`` stays fixed when it is a constant). The interval
    is the percentile interval from ``scipy.stats.bootstrap``. The p-value is the share of the
    bootstrap distribution on the null side of ``delta``, ``(#{D* <= delta} + 1) / (B + 1)`` for
    "greater" (mirrored for "less", doubled and capped at 1 for "two-sided"). It is the
    inversion of the same percentile interval, so "p < alpha" agrees with "delta lies outside the
    one-sided 1 - alpha interval". With few seeds the bootstrap under-covers; prefer Welch there.

    Parameters
    ----------
    a : sequence of float, shape (n_a,), n_a >= 2.
    b : sequence of float, shape (n_b,), n_b >= 2, or a float constant.
    alternative, delta, confidence : as in `welch_test`.
    n_resamples : number of bootstrap resamples B.
    seed : seed of the resampling generator, so that results are reproducible.
    """
    _check_alternative(alternative)
    _check_confidence(confidence)
    x, y = _two_sides(a, b)
    diff = float(x.mean() - (y.mean() if y is not None else b))
    n_b = y.size if y is not None else 0
    if _no_spread(x, y):
        return _exact_result(diff, alternative, delta, confidence, x.size, n_b)

    if y is None:
        data: tuple[np.ndarray, ...] = (x,)
        const = float(b)

        def statistic(xs, axis=-1):
            return np.mean(xs, axis=axis) - const
    else:
        data = (x, y)

        def statistic(xs, ys, axis=-1):
            return np.mean(xs, axis=axis) - np.mean(ys, axis=axis)

    res = sps.bootstrap(
        data,
        statistic,
        n_resamples=n_resamples,
        vectorized=True,
        confidence_level=confidence,
        method="percentile",
        **_rng_kwarg(seed),
    )
    dist = np.asarray(res.bootstrap_distribution)
    p_greater = (np.count_nonzero(dist <= delta) + 1) / (dist.size + 1)
    p_less = (np.count_nonzero(dist >= delta) + 1) / (dist.size + 1)
    p_two_sided = min(1.0, 2 * min(p_greater, p_less))
    p = {"greater": p_greater, "less": p_less, "two-sided": p_two_sided}[alternative]
    return TestResult(
        difference=diff,
        ci_low=float(res.confidence_interval.low),
        ci_high=float(res.confidence_interval.high),
        confidence=confidence,
        p_value=float(p),
        alternative=alternative,
        delta=float(delta),
        statistic=math.nan,
        df=math.nan,
        method="bootstrap",
        n_a=x.size,
        n_b=n_b,
    )


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni step-down adjusted p-values, in the input order.

    The i-th smallest of m p-values is multiplied by (m - i + 1); a running maximum keeps the
    adjusted values monotone in the raw ones, and they are capped at 1. Rejecting where the
    adjusted value is below alpha controls the family-wise error rate at alpha.

    NaN entries (tests that could not be run) are passed through as NaN and do not count
    towards m, so that an unresolvable check does not weaken the others.

    Parameters
    ----------
    p_values : sequence of float in [0, 1] or NaN, shape (m,).
    """
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, math.nan)
    finite = np.flatnonzero(~np.isnan(p))
    if np.any((p[finite] < 0) | (p[finite] > 1)):
        raise ValueError(f"p-values must lie in [0, 1], got {p_values!r}")
    m = finite.size
    order = finite[np.argsort(p[finite], kind="stable")]
    running = 0.0
    for rank, idx in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[idx]))
        out[idx] = running
    return [float(v) for v in out]


# ---------------------------------------------------------------------------------------------
# helpers


def _as_array(values: Sequence[float], name: str) -> np.ndarray:
    x = np.asarray(values, dtype=float).reshape(-1)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} must be finite numbers, got {list(values)!r}")
    return x


def _two_sides(a, b) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate both sides; b comes back as None when it is a scalar constant."""
    x = _as_array(a, "a")
    if x.size < 2:
        raise ValueError(f"a needs >= 2 values to estimate its spread, got {x.size}")
    if np.ndim(b) == 0:
        if not math.isfinite(float(b)):
            raise ValueError(f"constant b must be finite, got {b!r}")
        return x, None
    y = _as_array(b, "b")
    if y.size < 2:
        raise ValueError(
            f"b needs >= 2 values to estimate its spread, got {y.size}; "
            "pass a float to compare against a constant"
        )
    return x, y


def _no_spread(x: np.ndarray, y: np.ndarray | None) -> bool:
    # Exact equality, not a tolerance: accuracies are ratios of counts, so equal seeds give
    # bit-identical floats, and any real spread, however small, is left to the t-test.
    return bool(np.all(x == x[0]) and (y is None or np.all(y == y[0])))


def _exact_result(diff, alternative, delta, confidence, n_a, n_b) -> TestResult:
    inside = {"greater": diff > delta, "less": diff < delta, "two-sided": diff != delta}
    inside = inside[alternative]
    return TestResult(
        difference=diff,
        ci_low=diff,
        ci_high=diff,
        confidence=confidence,
        p_value=0.0 if inside else 1.0,
        alternative=alternative,
        delta=float(delta),
        statistic=math.nan,
        df=math.nan,
        method="exact",
        n_a=n_a,
        n_b=n_b,
    )


def _check_alternative(alternative: str) -> None:
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")


def _rng_kwarg(seed: int) -> dict:
    # scipy >= 1.15 names the generator `rng`; older releases only know `random_state`.
    name = "rng" if "rng" in inspect.signature(sps.bootstrap).parameters else "random_state"
    return {name: np.random.default_rng(seed)}
