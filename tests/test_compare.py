"""Tests for mnist_study.stats.compare on runs whose differences are known by construction."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from mnist_study.stats import inference as stats
from mnist_study.stats.compare import compare_values


def noisy(mean: float, n: int = 10, sd: float = 0.1, seed: int = 0) -> list[float]:
    return list(mean + sd * np.random.default_rng(seed).standard_normal(n))


RUN_A = {
    ("exp1", "test"): noisy(97.0, seed=1),  # A clearly higher
    ("exp2", "test"): noisy(95.0, seed=2),  # B clearly higher
    ("exp3", "test"): noisy(96.0, n=4, sd=0.3, seed=3),  # same distribution, few seeds
    ("exp4", "test"): [96.0],  # a single seed
    ("exp1", "train"): noisy(99.0, seed=4),
    ("only_a", "test"): noisy(90.0, seed=5),
}
RUN_B = {
    ("exp1", "test"): noisy(96.0, seed=11),
    ("exp2", "test"): noisy(96.0, seed=12),
    ("exp3", "test"): noisy(96.0, n=4, sd=0.3, seed=13),
    ("exp4", "test"): noisy(96.0, seed=14),
    ("exp1", "train"): noisy(99.0, seed=15),
    ("only_b", "test"): noisy(90.0, seed=16),
}


@pytest.mark.parametrize("method", ["welch", "bootstrap"])
def test_verdicts_per_experiment(method):
    result = compare_values(RUN_A, RUN_B, alpha=0.05, method=method)
    by_key = {(c.experiment, c.split): c for c in result}
    # Shared keys only, in A's order.
    assert list(by_key) == [("exp1", "test"), ("exp2", "test"), ("exp3", "test"),
                            ("exp4", "test"), ("exp1", "train")]
    assert by_key["exp1", "test"].verdict == "A higher"
    assert by_key["exp2", "test"].verdict == "B higher"
    assert by_key["exp3", "test"].verdict == "no detectable difference"
    assert by_key["exp4", "test"].verdict == "needs ≥ 2 seeds"
    assert math.isnan(by_key["exp4", "test"].p_holm)
    first = by_key["exp1", "test"]
    expected = np.mean(RUN_A["exp1", "test"]) - np.mean(RUN_B["exp1", "test"])
    assert first.difference == pytest.approx(expected)
    assert first.ci_low < first.difference < first.ci_high
    assert first.a.n == first.b.n == 10


def test_welch_p_values_match_scipy_and_holm_runs_across_experiments():
    result = compare_values(RUN_A, RUN_B)
    tested = [c for c in result if c.verdict != "needs ≥ 2 seeds"]
    for c in tested:
        key = (c.experiment, c.split)
        ref = sps.ttest_ind(RUN_A[key], RUN_B[key], equal_var=False)
        assert c.p_value == pytest.approx(ref.pvalue, rel=1e-12)
    # The untestable entry is left out of the family: m = 4, not 5.
    assert [c.p_holm for c in tested] == pytest.approx(stats.holm([c.p_value for c in tested]))
    assert all(c.p_holm >= c.p_value for c in tested)


def test_splits_filter_narrows_the_family():
    only_test = compare_values(RUN_A, RUN_B, splits={"test"})
    assert {c.split for c in only_test} == {"test"}
    assert len(only_test) == 4


def test_identical_deterministic_runs_show_no_difference():
    same = {("exp1", "test"): [97.0, 97.0, 97.0]}
    (c,) = compare_values(same, same)
    assert c.method == "exact" and c.p_value == 1.0
    assert c.verdict == "no detectable difference"
    shifted = {("exp1", "test"): [97.5, 97.5, 97.5]}
    assert compare_values(shifted, same)[0].verdict == "A higher"


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="method"):
        compare_values(RUN_A, RUN_B, method="mann-whitney")
    with pytest.raises(ValueError, match="alpha"):
        compare_values(RUN_A, RUN_B, alpha=5)
