"""Tests for mnist_study.stats.claims: the check grammar, and verdicts on data whose answer is known."""

import math

import numpy as np
import pydantic
import pytest

from mnist_study.stats import inference as stats
from mnist_study.stats.claims import (
    Claim,
    CheckSyntaxError,
    evaluate_claims,
    parse_check,
    validate_claim_experiments,
)


def noisy(mean: float, n: int = 10, sd: float = 0.1, seed: int = 0) -> list[float]:
    """n per-seed accuracies (percent) around `mean`, reproducibly."""
    return list(mean + sd * np.random.default_rng(seed).standard_normal(n))


def verdicts_of(checks, values, **kwargs):
    """Evaluate one claim per check (all in one Holm family); return the check results."""
    claims = [Claim(name=f"c{i}", text="", checks=[c]) for i, c in enumerate(checks)]
    return [v.checks[0] for v in evaluate_claims(claims, values, **kwargs)]


# --- grammar ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, left, op, right, by_more_than, within",
    [
        ("exp6.test > exp8.test", ("exp6", "test", 0), ">", ("exp8", "test", 0), None, None),
        ("exp9.test >= exp6.test", ("exp9", "test", 0), ">=", ("exp6", "test", 0), None, None),
        # "<" is stored as ">" with the sides swapped, so D = exp6 - exp10.
        ("exp10.test < exp6.test by more than 2 points",
         ("exp6", "test", 0), ">", ("exp10", "test", 0), 2.0, None),
        ("exp10.test ~ exp6.test - 3 within 1 points",
         ("exp10", "test", 0), "~", ("exp6", "test", -3.0), None, 1.0),
        ("exp9.train >= 99.9", ("exp9", "train", 0), ">=", (None, None, 99.9), None, None),
        ("exp9.train > exp9.test by more than 1 points",
         ("exp9", "train", 0), ">", ("exp9", "test", 0), 1.0, None),
        ("  EXP_a-1.Validation>=exp2.TEST+0.25   WITHIN 0.1 PTS",
         ("EXP_a-1", "validation", 0), ">=", ("exp2", "test", 0.25), None, 0.1),
        ("99.5% <= exp9.train within 0 points",
         ("exp9", "train", 0), ">=", (None, None, 99.5), None, 0.0),
    ],
)
def test_parser_accepts_the_documented_forms(text, left, op, right, by_more_than, within):
    check = parse_check(text)
    assert (check.left.experiment, check.left.split, check.left.offset) == left
    assert (check.right.experiment, check.right.split, check.right.offset) == right
    assert (check.op, check.by_more_than, check.within) == (op, by_more_than, within)
    assert check.text == text


@pytest.mark.parametrize(
    "text, problem",
    [
        ("exp6.tset > exp8.test", "unknown split 'tset'"),
        ("exp6.test >> exp8", "unknown operator '>>'"),
        ("exp6.test > exp8", "'exp8' is not EXPERIMENT.SPLIT"),
        ("exp6.test == exp8.test", "unknown operator '=='"),
        ("exp6.test exp8.test", "expected a comparison"),
        ("exp6.test > exp8.test by 2 points", "expected 'more'"),
        ("exp6.test ~ exp8.test by more than 2", "'by more than' goes with < or >"),
        ("exp6.test > exp8.test within 1", "'within' goes with ~, >= or <="),
        ("exp6.test ~ exp8.test within 0", "needs a margin above 0"),
        ("exp6.test >", "unexpected end"),
        ("exp6.test > exp8.test please", "unexpected 'please'"),
        ("exp6.test > exp8.test - x", "expected a number of points"),
        ("exp6.test ; exp8.test", "unexpected character ';'"),
    ],
)
def test_parser_rejects_garbage_naming_the_problem(text, problem):
    with pytest.raises(CheckSyntaxError) as err:
        parse_check(text)
    assert problem in str(err.value)
    assert repr(text) in str(err.value)  # the message names the check itself


def test_claim_validates_its_checks_at_load_time():
    with pytest.raises(pydantic.ValidationError, match=r"check 'exp6.tset > exp8.test'.*'tset'"):
        Claim(name="x", text="", checks=["exp1.test < exp2.test", "exp6.tset > exp8.test"])
    with pytest.raises(pydantic.ValidationError, match="at least 1"):
        Claim(name="x", text="", checks=[])
    with pytest.raises(pydantic.ValidationError, match="Extra inputs"):
        Claim(name="x", text="", checks=["a.test > b.test"], alpha=0.1)
    with pytest.raises(pydantic.ValidationError, match="needs a margin"):
        Claim(name="x", text="", checks=["a.test ~ b.test"], margin=0)
    claim = Claim(name="x", text="t", checks=["a.test > b.test"])
    assert claim.margin == 0.5
    with pytest.raises(pydantic.ValidationError):
        claim.name = "y"  # frozen


def test_unknown_experiments_are_listed_with_the_known_ones():
    claims = [Claim(name="peak", text="", checks=["exp6.test > exp8.test", "exp66.test > 90"])]
    expected = r"'peak'.*exp66\.test > 90.*exp66.*Known experiments: exp6, exp8"
    with pytest.raises(ValueError, match=expected):
        validate_claim_experiments(claims, ["exp6", "exp8"])
    validate_claim_experiments(claims[:0], ["exp6"])  # nothing to complain about
    with pytest.raises(ValueError, match="Known experiments: exp6"):
        evaluate_claims(claims, {("exp6", "test"): noisy(97), ("exp8", "test"): noisy(96)})


def test_missing_split_of_a_known_experiment_is_an_error():
    claims = [Claim(name="gap", text="", checks=["exp9.train > exp9.test"])]
    with pytest.raises(ValueError, match="no values for exp9.train; exp9 has: test"):
        evaluate_claims(claims, {("exp9", "test"): noisy(98)})


# --- verdicts --------------------------------------------------------------------------------

HIGH, LOW = noisy(97.0, seed=1), noisy(96.0, seed=2)


@pytest.mark.parametrize("method", ["welch", "bootstrap"])
def test_greater_is_supported_and_its_reverse_contradicted(method):
    values = {("a", "test"): HIGH, ("b", "test"): LOW}
    right, wrong, wrong_lt = verdicts_of(
        ["a.test > b.test", "b.test > a.test", "a.test < b.test"], values, method=method
    )
    assert right.verdict == "supported"
    assert wrong.verdict == wrong_lt.verdict == "contradicted"
    assert right.difference == pytest.approx(np.mean(HIGH) - np.mean(LOW))
    assert right.ci_low < right.difference < right.ci_high
    assert right.pairing == "independent"
    assert right.p_holm < 0.05 and right.p_holm >= right.p_value


def test_identical_distributions_with_few_seeds_are_not_resolved():
    values = {
        ("a", "test"): noisy(97, n=3, sd=0.3, seed=3),
        ("b", "test"): noisy(97, n=3, sd=0.3, seed=4),
    }
    (result,) = verdicts_of(["a.test > b.test"], values)
    assert result.verdict == "not resolved"
    assert result.reason == ""  # it was tested; the data just do not decide


def test_by_more_than_moves_the_bound():
    values = {("exp6", "test"): noisy(97.0, seed=5), ("exp10", "test"): noisy(94.0, seed=6)}
    two, four = verdicts_of(
        ["exp10.test < exp6.test by more than 2 points", "exp10.test < exp6.test by more than 4"],
        values,
    )
    assert two.verdict == "supported"
    assert four.verdict == "contradicted"  # the gap is significantly below 4 points
    assert two.hypothesis == "exp6 − exp10 > +2.00"


def test_non_inferiority_uses_the_margin():
    values = {
        ("raw", "test"): noisy(97.0, seed=7),
        ("pca", "test"): noisy(96.9, seed=8),  # 0.1 worse: inside the default 0.5 margin
        ("bad", "test"): noisy(95.5, seed=9),  # 1.5 worse: outside it
    }
    close, mirrored, far, tight = verdicts_of(
        ["pca.test >= raw.test", "raw.test <= pca.test", "bad.test >= raw.test",
         "bad.test >= raw.test within 2 points"],
        values,
    )
    assert close.verdict == mirrored.verdict == "supported"
    assert close.difference == pytest.approx(mirrored.difference)
    assert far.verdict == "contradicted"  # worse than raw by significantly more than 0.5
    assert tight.verdict == "supported"  # but within a 2-point margin
    assert close.hypothesis == "pca − raw > -0.50"


def test_claim_margin_applies_when_a_check_has_no_within():
    values = {("raw", "test"): noisy(97.0, seed=7), ("bad", "test"): noisy(95.5, seed=9)}
    claim = Claim(name="lenient", text="", checks=["bad.test >= raw.test"], margin=2.0)
    assert evaluate_claims([claim], values)[0].verdict == "supported"


def test_equivalence_with_an_offset():
    values = {
        ("exp6", "test"): noisy(97.0, seed=10),
        ("near", "test"): noisy(94.1, seed=11),  # exp6 - 2.9: within 1 point of exp6 - 3
        ("far", "test"): noisy(92.0, seed=12),   # exp6 - 5: 2 points off
    }
    near, far, unsure = verdicts_of(
        ["near.test ~ exp6.test - 3 within 1 points", "far.test ~ exp6.test - 3 within 1 points",
         "near.test ~ exp6.test - 3 within 0.05 points"],
        values,
    )
    assert near.verdict == "supported"
    assert far.verdict == "contradicted"
    assert unsure.verdict == "not resolved"  # a 0.05 margin is below what 10 seeds resolve
    assert near.hypothesis == "|near − (exp6 − 3)| < 1.00"
    expected = np.mean(values["near", "test"]) - (np.mean(values["exp6", "test"]) - 3)
    assert near.difference == pytest.approx(expected)


def test_same_experiment_is_compared_seed_by_seed():
    # Large spread between seeds, but every seed's train accuracy is 1.2 points above its test
    # accuracy: only the paired test sees that the gap exceeds 1 point.
    test = noisy(97.0, sd=1.0, seed=13)
    train = [t + 1.2 + d for t, d in zip(test, noisy(0.0, sd=0.05, seed=14))]
    values = {("exp9", "train"): train, ("exp9", "test"): test, ("copy", "test"): test}
    paired, unpaired = verdicts_of(
        ["exp9.train > exp9.test by more than 1 points", "exp9.train > copy.test by more than 1"],
        values,
    )
    assert paired.pairing == "paired" and paired.verdict == "supported"
    assert unpaired.pairing == "independent" and unpaired.verdict == "not resolved"
    assert paired.hypothesis == "exp9.train − exp9.test > +1.00"


def test_one_seed_is_not_resolved_with_a_reason():
    values = {("a", "test"): [97.0], ("b", "test"): LOW}
    against_sample, against_constant = verdicts_of(["a.test > b.test", "a.test > 90"], values)
    for result in (against_sample, against_constant):
        assert result.verdict == "not resolved"
        assert result.reason == "needs ≥ 2 seeds"
        assert "a.test has 1 seed" in result.explanation
        assert math.isnan(result.p_value) and math.isnan(result.p_holm)


def test_constants_and_zero_spread_are_decided_exactly():
    values = {("exp9", "train"): [100.0] * 5, ("exp9", "test"): noisy(98.0, n=5)}
    results = verdicts_of(
        ["exp9.train > 99.9", "99.9 > exp9.train", "exp9.train >= 100 within 0 points",
         "100 > 99", "99.9 < exp9.test"],
        values,
    )
    assert [r.verdict for r in results] == [
        "supported", "contradicted", "not resolved", "supported", "contradicted"
    ]
    assert [r.pairing for r in results] == ["exact", "exact", "exact", "exact", "one-sample"]
    assert "exactly" in results[0].explanation
    assert results[4].difference == pytest.approx(np.mean(values["exp9", "test"]) - 99.9)


def test_claim_verdict_combines_its_checks():
    values = {("a", "test"): HIGH, ("b", "test"): LOW, ("c", "test"): [97.0]}
    claims = [
        Claim(name="all", text="", checks=["a.test > b.test", "a.test > 95"]),
        Claim(name="one-wrong", text="",
              checks=["a.test > b.test", "b.test > a.test", "c.test > b.test"]),
        Claim(name="one-open", text="", checks=["a.test > b.test", "c.test > b.test"]),
    ]
    result = evaluate_claims(claims, values)
    assert [v.verdict for v in result] == ["supported", "contradicted", "not resolved"]
    assert [v.claim.name for v in result] == ["all", "one-wrong", "one-open"]
    assert [c.text for c in result[1].checks] == claims[1].checks


def test_holm_runs_over_all_checks_of_all_claims():
    values = {
        ("a", "test"): noisy(97.0, n=5, sd=0.5, seed=15),
        ("b", "test"): noisy(96.4, n=5, sd=0.5, seed=16),
        ("c", "test"): noisy(96.0, seed=17),
    }
    checks = ["a.test > b.test", "a.test > c.test", "b.test ~ c.test within 1", "c.test >= a.test"]
    alone = verdicts_of(checks[:1], values)[0]
    together = verdicts_of(checks, values)
    raw = [p for r in together for p in (r.p_support, r.p_contradict)]
    adjusted = [p for r in together for p in (r.p_support_holm, r.p_contradict_holm)]
    assert adjusted == pytest.approx(stats.holm(raw))
    assert together[0].p_support == pytest.approx(alone.p_support)
    assert together[0].p_support_holm > alone.p_support_holm


def test_explanation_gives_the_numbers():
    values = {("exp6", "test"): HIGH, ("exp8", "test"): LOW}
    (result,) = verdicts_of(["exp6.test > exp8.test"], values)
    d = np.mean(HIGH) - np.mean(LOW)
    ci = f"{result.ci_low:+.2f} … {result.ci_high:+.2f}"
    expected = f"exp6 − exp8 = {d:+.2f} points (95% CI {ci})"
    assert result.explanation.startswith(expected)
    assert "p_holm = " in result.explanation
    assert result.left_summary.mean == pytest.approx(np.mean(HIGH))
    assert result.right_summary.n == 10
