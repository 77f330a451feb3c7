"""Tests for mnist_study.stats.inference: agreement with scipy, hand-computed Holm, zero-spread rules."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from mnist_study.stats.inference import bootstrap_diff, holm, summarize, welch_test

# A fixed, unequal-variance pair (accuracies in percent) used as the reference case.
A = [97.1, 96.8, 97.4, 97.0, 96.9, 97.3, 97.2, 96.7]
B = [96.2, 96.9, 95.8, 96.5, 96.0, 96.7]


def test_summarize_matches_numpy_and_student_t():
    s = summarize(A, confidence=0.9)
    low, high = sps.t.interval(0.9, df=len(A) - 1, loc=np.mean(A), scale=sps.sem(A))
    assert s.n == len(A)
    assert s.mean == pytest.approx(np.mean(A))
    assert s.std == pytest.approx(np.std(A, ddof=1))
    assert (s.ci_low, s.ci_high) == (pytest.approx(low), pytest.approx(high))
    assert s.values == tuple(A)


@pytest.mark.parametrize("values", [[97.5], []])
def test_summarize_with_fewer_than_two_values_has_no_spread_or_interval(values):
    s = summarize(values)
    assert s.n == len(values)
    assert math.isnan(s.std) and math.isnan(s.ci_low) and math.isnan(s.ci_high)
    assert s.mean == (97.5 if values else pytest.approx(math.nan, nan_ok=True))


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_welch_agrees_with_scipy(alternative):
    res = welch_test(A, B, alternative=alternative)
    ref = sps.ttest_ind(A, B, equal_var=False, alternative=alternative)
    assert res.method == "welch"
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-12)
    assert res.statistic == pytest.approx(ref.statistic, rel=1e-12)
    assert res.df == pytest.approx(ref.df, rel=1e-12)
    assert res.difference == pytest.approx(np.mean(A) - np.mean(B))
    # The reported interval is always two-sided, whatever the alternative.
    ci = sps.ttest_ind(A, B, equal_var=False).confidence_interval(0.95)
    assert (res.ci_low, res.ci_high) == (pytest.approx(ci.low), pytest.approx(ci.high))


def test_welch_delta_shifts_the_null():
    res = welch_test(A, B, alternative="greater", delta=0.5)
    ref = sps.ttest_ind(np.subtract(A, 0.5), B, equal_var=False, alternative="greater")
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-12)
    assert res.difference == pytest.approx(np.mean(A) - np.mean(B))  # D itself is not shifted


def test_welch_against_a_constant_is_the_one_sample_t_test():
    res = welch_test(A, 96.5, alternative="greater", delta=0.2)
    ref = sps.ttest_1samp(A, 96.7, alternative="greater")
    assert res.method == "one-sample" and res.n_b == 0
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-12)
    ci = sps.ttest_1samp(A, 96.5).confidence_interval(0.95)
    assert res.ci_low == pytest.approx(ci.low - 96.5)
    assert res.ci_high == pytest.approx(ci.high - 96.5)


@pytest.mark.parametrize(
    "alternative, delta, expected_p",
    [("greater", 0.0, 0.0), ("greater", 1.0, 1.0), ("less", 1.0, 1.0), ("less", 2.0, 0.0),
     ("two-sided", 1.0, 1.0), ("two-sided", 0.0, 0.0)],
)
def test_no_spread_on_either_side_is_decided_exactly(alternative, delta, expected_p):
    for b in ([96.0, 96.0, 96.0], 96.0):
        for test in (welch_test, bootstrap_diff):
            res = test([97.0] * 4, b, alternative=alternative, delta=delta)
            assert res.method == "exact"
            assert res.p_value == expected_p
            assert res.ci_low == res.ci_high == res.difference == 1.0


@pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")  # from the scipy reference
def test_no_spread_on_one_side_only_is_an_ordinary_welch_test():
    res = welch_test([97.0] * 5, B, alternative="greater")
    ref = sps.ttest_ind([97.0] * 5, B, equal_var=False, alternative="greater")
    assert res.method == "welch"
    assert res.p_value == pytest.approx(ref.pvalue)


def test_single_value_sample_is_rejected():
    with pytest.raises(ValueError, match="a needs >= 2 values"):
        welch_test([97.0], B)
    with pytest.raises(ValueError, match="b needs >= 2 values"):
        bootstrap_diff(A, [96.0])
    with pytest.raises(ValueError, match="alternative"):
        welch_test(A, B, alternative="bigger")


def test_bootstrap_interval_and_p_on_clear_and_null_cases():
    rng = np.random.default_rng(1)
    high, low = 97 + 0.2 * rng.standard_normal(12), 96 + 0.2 * rng.standard_normal(12)
    res = bootstrap_diff(high, low, alternative="greater", n_resamples=2000)
    assert res.method == "bootstrap"
    assert res.ci_low < res.difference < res.ci_high
    assert 0.7 < res.ci_low and res.ci_high < 1.3
    assert res.p_value == pytest.approx(1 / 2001)  # no resample falls at or below 0
    assert bootstrap_diff(high, low, alternative="less", n_resamples=2000).p_value == 1.0

    same = bootstrap_diff(high, high + 0.0, n_resamples=2000)
    assert same.p_value > 0.5


def test_bootstrap_is_reproducible_and_agrees_with_welch_in_spirit():
    one = bootstrap_diff(A, B, seed=3, n_resamples=3000)
    two = bootstrap_diff(A, B, seed=3, n_resamples=3000)
    assert one == two
    welch = welch_test(A, B)
    assert one.difference == pytest.approx(welch.difference)
    assert one.ci_low == pytest.approx(welch.ci_low, abs=0.25)
    assert one.ci_high == pytest.approx(welch.ci_high, abs=0.25)
    against_constant = bootstrap_diff(A, 96.0, alternative="greater", n_resamples=3000)
    assert against_constant.n_b == 0 and against_constant.p_value < 0.001


def test_holm_on_a_hand_computed_example():
    # Sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> raised to 0.06.
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_and_skips_nan():
    assert holm([0.5, 0.6]) == [1.0, 1.0]
    adjusted = holm([0.01, math.nan, 0.04])
    assert adjusted[0] == pytest.approx(0.02) and adjusted[2] == pytest.approx(0.04)
    assert math.isnan(adjusted[1])
    assert holm([]) == []
    with pytest.raises(ValueError):
        holm([1.5])
