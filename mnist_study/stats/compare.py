"""Compare two runs of a study experiment by experiment.

Typical use: a reproduction against an earlier one, or the same study before and after a code
change. Each (experiment, split) present in both runs gets a two-sided test of
``mean(A) - mean(B)`` (Welch's t-test or the percentile bootstrap, see `mnist_study.stats.inference`), and
Holm's correction runs across all of them so that "A higher" / "B higher" hold jointly at alpha.
The seeds of two runs are separate trainings, so the samples are treated as independent even
when both runs used the same seed numbers.

This module works on plain mappings; reading run directories is the caller's job.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from mnist_study.errors import OptionError
from mnist_study.stats import inference as stats

ComparisonVerdict = Literal["A higher", "B higher", "no detectable difference", "needs ≥ 2 seeds"]


@dataclass(frozen=True)
class Comparison:
    """One (experiment, split) compared between run A and run B.

    Attributes
    ----------
    experiment, split : which values were compared.
    a, b : per-run summaries (mean, std, CI) of the per-seed values, in percent.
    difference : mean(A) - mean(B) in percentage points.
    ci_low, ci_high : two-sided (1 - alpha) interval for the difference; nan if untestable.
    p_value, p_holm : two-sided p, raw and after Holm across all comparisons; nan if untestable.
    method : "welch", "bootstrap" or "exact" (no spread in either run), "" if untestable.
    verdict : "A higher", "B higher", "no detectable difference" or "needs ≥ 2 seeds".
    """

    experiment: str
    split: str
    a: stats.Summary
    b: stats.Summary
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    p_holm: float
    method: str
    verdict: ComparisonVerdict


def compare_values(
    a: Mapping[tuple[str, str], Sequence[float]],
    b: Mapping[tuple[str, str], Sequence[float]],
    *,
    alpha: float = 0.05,
    method: Literal["welch", "bootstrap"] = "welch",
    splits: Collection[str] | None = None,
) -> list[Comparison]:
    """Compare run A with run B for every (experiment, split) key they share.

    Parameters
    ----------
    a, b : (experiment, split) -> per-seed accuracies in percent, shape (n_seeds,) each.
    alpha : family-wise error rate across all comparisons returned.
    method : "welch" (Welch's t-test) or "bootstrap" (percentile bootstrap).
    splits : compare only these splits (e.g. ``{"test"}``); all shared splits when None.

    Returns
    -------
    One `Comparison` per shared key, in A's key order. Keys present in only one run are left
    out; compare the key sets beforehand if that matters.
    """
    if method not in ("welch", "bootstrap"):
        raise OptionError(f"method must be 'welch' or 'bootstrap', got {method!r}")
    if not 0 < alpha < 1:
        raise OptionError(f"alpha must lie in (0, 1), got {alpha!r}")
    confidence = 1 - alpha
    keys = [k for k in a if k in b and (splits is None or k[1] in splits)]

    tests: list[stats.TestResult | None] = []
    for key in keys:
        if len(a[key]) < 2 or len(b[key]) < 2:
            tests.append(None)
        elif method == "welch":
            tests.append(stats.welch_test(a[key], b[key], confidence=confidence))
        else:
            tests.append(stats.bootstrap_diff(a[key], b[key], confidence=confidence))
    adjusted = stats.holm([math.nan if t is None else t.p_value for t in tests])

    comparisons = []
    for (experiment, split), test, p_holm in zip(keys, tests, adjusted):
        summary_a = stats.summarize(a[experiment, split], confidence)
        summary_b = stats.summarize(b[experiment, split], confidence)
        if test is None:
            verdict: ComparisonVerdict = "needs ≥ 2 seeds"
            diff = summary_a.mean - summary_b.mean
            ci_low = ci_high = p_value = math.nan
            test_method = ""
        else:
            diff, ci_low, ci_high = test.difference, test.ci_low, test.ci_high
            p_value, test_method = test.p_value, test.method
            if p_holm < alpha:
                verdict = "A higher" if diff > 0 else "B higher"
            else:
                verdict = "no detectable difference"
        comparisons.append(
            Comparison(
                experiment, split, summary_a, summary_b, diff, ci_low, ci_high,
                p_value, p_holm, test_method, verdict,
            )
        )
    return comparisons
