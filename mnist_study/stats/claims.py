"""A paper's claims as data, and their verdicts on per-seed results.

A study file lists claims; each claim is a sentence from the paper plus checks that a
reproduction can test::

    [[claim]]
    name = "width-peak-130"
    text = "Test accuracy rises with width up to 130 nodes, then declines"
    checks = ["exp5.test < exp6.test", "exp6.test > exp7.test"]
    margin = 0.5            # optional, points; used by >=, <= and ~ without "within"

In a study with a [[sweep]], a side of a check may be a selector instead of an experiment's name:
``"{optimizer=adam}.test > {optimizer=rmsprop}.test"`` reads "at every other swept setting".
When the study is read (`mnist_study.studies.selectors.expand_claims`) it becomes one check per pair
of experiments of one sweep that match the two selectors and agree on every swept field that
neither selector names (nor moves in a zip group with one it names), so a Claim holds concrete
checks only, and ``written_checks`` keeps the checks as written. The expanded checks are tested
like any others, in the same Holm family.

The grammar of a check is in `mnist_study.stats.checks`. Numbers are accuracies in percent, or
percentage points for offsets and bounds. Write ``D = left - right`` (offsets included). Each check is two one-sided hypotheses, one that would
support it and one that would contradict it:

``A > B [by more than d]`` (d = 0 if absent)
    supported when the test rejects ``D <= d``; contradicted when it rejects ``D >= d``
    (A is significantly on the wrong side of the bound). ``A < B`` is ``B > A``.
``A >= B [within m]`` — non-inferiority with margin m (default: the claim's ``margin``)
    supported when the test rejects ``D <= -m`` (A is not worse than B by m or more);
    contradicted when it rejects ``D >= -m`` (A is worse than B by more than m). This mirrors
    ``>`` with the bound moved to ``-m``, so the two verdicts cannot both hold. ``A <= B`` is
    ``B >= A``.
``A ~ B [within m]`` — equivalence, m > 0
    supported by TOST: both ``D <= -m`` and ``D >= m`` are rejected (p = the larger of the two);
    contradicted when ``|D| > m`` significantly: ``D <= m`` or ``D >= -m`` is rejected, with a
    Bonferroni factor 2 since either tail may be the one that rejects.

Which samples are compared. Two terms of the same experiment come from the same seeds, so
their per-seed differences form one sample (paired; e.g. ``exp9.train`` vs ``exp9.test``; if the
two splits hold different numbers of seeds they fall back to independent samples).
Terms of different experiments are independent samples (Welch's test, or the bootstrap). A
number is a known constant (one-sample test). A side with fewer than 2 seeds cannot be tested:
the check is "not resolved" with the reason "needs ≥ 2 seeds", unless both sides are constants.
When neither side has any spread the decision is exact (see `mnist_study.stats.inference`).

Multiplicity. Holm's correction runs over every one-sided hypothesis of every check of every
claim evaluated together (two per check). Exact decisions are facts rather than tests and stay
out of the family. A check is decided when its Holm-adjusted p is below alpha.

A claim is supported when all its checks are supported, contradicted when any is contradicted,
and not resolved otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import pydantic

from mnist_study.errors import OptionError
from mnist_study.stats import inference as stats
from mnist_study.stats.checks import Check, CheckSyntaxError, Term, parse_check  # noqa: F401 (re-exported)

Verdict = Literal["supported", "contradicted", "not resolved"]
NEEDS_SEEDS = "needs ≥ 2 seeds"

# ---------------------------------------------------------------------------------------------
# claims


class Claim(pydantic.BaseModel):
    """One claim of the paper: a name, the sentence, and the checks that test it.

    ``margin`` (percentage points, >= 0) is the non-inferiority / equivalence margin used by
    ``>=``, ``<=`` and ``~`` checks that do not give their own ``within``.
    """

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid", strict=True)

    name: str = pydantic.Field(min_length=1, description="a short identifier for tables")
    text: str = pydantic.Field(description="the claim as a sentence")
    checks: list[str] = pydantic.Field(min_length=1, description="comparisons that must all hold (grammar below)")
    margin: float = pydantic.Field(default=0.5, ge=0, description="percentage points: the margin of >=, <= "
                                                                  "and ~ checks that give no `within`")
    written_checks: list[str] = pydantic.Field(
        default=[], description="the checks as written when selectors such as {optimizer=adam} were expanded "
                                "into `checks` (set when the study is read)")

    @pydantic.field_validator("checks")
    @classmethod
    def _checks_parse(cls, checks: list[str]) -> list[str]:
        for check in checks:
            # its CheckSyntaxError names the check; pydantic adds the field
            if parse_check(check).has_selectors:
                raise ValueError(f"check {check!r}: a selector picks experiments of the study's sweeps, so only "
                                 "a study can expand it (mnist_study.studies.parse_study does)")
        return checks

    @pydantic.field_validator("written_checks")
    @classmethod
    def _written_checks_parse(cls, checks: list[str]) -> list[str]:
        for check in checks:
            parse_check(check)
        return checks

    @pydantic.model_validator(mode="after")
    def _equivalence_has_margin(self) -> Claim:
        if self.margin == 0:
            for check in self.parsed_checks:
                if check.op == "~" and check.within is None:
                    raise ValueError(f"check {check.text!r}: '~' needs a margin above 0 points")
        return self

    @property
    def parsed_checks(self) -> list[Check]:
        return [parse_check(c) for c in self.checks]


def validate_claim_experiments(claims: Iterable[Claim], experiment_names: Iterable[str]) -> None:
    """Raise ValueError if any check names an experiment outside ``experiment_names``.

    The message lists every offending check (with its claim) and the known experiments.
    """
    known = list(dict.fromkeys(experiment_names))
    known_set = set(known)
    problems = []
    for claim in claims:
        for check in claim.parsed_checks:
            unknown = sorted(check.experiments - known_set)
            if unknown:
                problems.append(f"claim {claim.name!r}, check {check.text!r}: {', '.join(unknown)}")
    if problems:
        raise ValueError(
            "unknown experiment(s) in claims: "
            + "; ".join(problems)
            + f". Known experiments: {_listed(known)}"
        )


def _listed(names: list[str], limit: int = 20) -> str:
    """Names for a message: all of a few, the first `limit` of a sweep's thousands."""
    if len(names) <= limit:
        return ", ".join(names) or "(none)"
    return f"{', '.join(names[:limit])}, … ({len(names) - limit:,} more)"


@dataclass(frozen=True)
class CheckResult:
    """Verdict on one check, with the numbers behind it.

    Attributes
    ----------
    text : the check as written.
    verdict : "supported", "contradicted" or "not resolved".
    left, right : labels of the terms after normalisation (see `Check`).
    left_summary, right_summary : mean and CI of each experiment's raw per-seed values (percent,
        offset not applied); None for a constant.
    difference : D = left - right, offsets included, in percentage points; nan if untestable.
    ci_low, ci_high : two-sided (1 - alpha) interval for D.
    hypothesis : what "supported" means, e.g. "exp6 − exp10 > +2.00".
    pairing : "paired", "independent", "one-sample", "exact" or "" when untestable.
    p_support, p_contradict : raw one-sided p-values (nan if untestable).
    p_support_holm, p_contradict_holm : the same after Holm across all checks evaluated.
    explanation : one line with the numbers, for reports.
    reason : why the check could not be tested (e.g. "needs ≥ 2 seeds"), else "".
    """

    text: str
    verdict: Verdict
    left: str
    right: str
    left_summary: stats.Summary | None
    right_summary: stats.Summary | None
    difference: float
    ci_low: float
    ci_high: float
    hypothesis: str
    pairing: str
    p_support: float
    p_contradict: float
    p_support_holm: float
    p_contradict_holm: float
    explanation: str
    reason: str = ""

    @property
    def p_value(self) -> float:
        """Raw p of the direction that decided the verdict (the closer one if undecided)."""
        return _deciding(self.verdict, *self._pairs())[0]

    @property
    def p_holm(self) -> float:
        """Holm-adjusted p matching `p_value`."""
        return _deciding(self.verdict, *self._pairs())[1]

    def _pairs(self):
        return (self.p_support, self.p_support_holm), (self.p_contradict, self.p_contradict_holm)


@dataclass(frozen=True)
class ClaimVerdict:
    """A claim, its overall verdict and one `CheckResult` per check (in the claim's order)."""

    claim: Claim
    verdict: Verdict
    checks: list[CheckResult]


@dataclass
class _Tested:
    """Intermediate state of one check between testing and Holm's correction."""

    check: Check
    left_summary: stats.Summary | None
    right_summary: stats.Summary | None
    difference: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    pairing: str = ""
    p_support: float = math.nan
    p_contradict: float = math.nan
    bound: float = math.nan
    exact: bool = False
    reason: str = ""
    detail: str = ""


def evaluate_claims(
    claims: Sequence[Claim],
    values: Mapping[tuple[str, str], Sequence[float]],
    *,
    alpha: float = 0.05,
    method: Literal["welch", "bootstrap"] = "welch",
) -> list[ClaimVerdict]:
    """Test every check of every claim and return one verdict per claim, in order.

    Parameters
    ----------
    claims : the claims to evaluate together (Holm's family is all of their checks).
    values : (experiment, split) -> per-seed accuracies in percent, shape (n_seeds,) each, in
        the same seed order for every split of one experiment.
    alpha : family-wise error rate.
    method : "welch" (t-tests) or "bootstrap" (percentile bootstrap, see `stats.bootstrap_diff`).

    Raises
    ------
    ValueError : a check names an unknown experiment, or a split with no entry in ``values``.
    """
    if method not in ("welch", "bootstrap"):
        raise OptionError(f"method must be 'welch' or 'bootstrap', got {method!r}")
    if not 0 < alpha < 1:
        raise OptionError(f"alpha must lie in (0, 1), got {alpha!r}")
    validate_claim_experiments(claims, (exp for exp, _ in values))
    confidence = 1 - alpha

    tested = [
        [_test_check(c, claim.margin, values, method, confidence) for c in claim.parsed_checks]
        for claim in claims
    ]
    # Holm over every one-sided hypothesis that is a real test; exact and untestable checks
    # enter as NaN, which `stats.holm` leaves out of the family.
    flat = [t for per_claim in tested for t in per_claim]
    raw = [p for t in flat for p in ((math.nan,) * 2 if t.exact else (t.p_support, t.p_contradict))]
    adjusted = stats.holm(raw)

    verdicts = []
    position = 0
    for claim, per_claim in zip(claims, tested):
        results = []
        for t in per_claim:
            if t.exact:
                p_sup_holm, p_con_holm = t.p_support, t.p_contradict
            else:
                p_sup_holm, p_con_holm = adjusted[2 * position], adjusted[2 * position + 1]
            position += 1
            results.append(_result(t, p_sup_holm, p_con_holm, alpha))
        if all(r.verdict == "supported" for r in results):
            overall: Verdict = "supported"
        elif any(r.verdict == "contradicted" for r in results):
            overall = "contradicted"
        else:
            overall = "not resolved"
        verdicts.append(ClaimVerdict(claim, overall, results))
    return verdicts


def _test_check(check: Check, margin: float, values, method: str, confidence: float) -> _Tested:
    """Compute D, its interval, and the raw support / contradict p-values of one check."""
    sides = [_term_values(term, values) for term in (check.left, check.right)]
    summaries = [None if s is None else stats.summarize(s, confidence) for s in sides]
    tested = _Tested(check, *summaries, bound=_bound(check, margin))
    left, right = check.left, check.right

    if all(s is None for s in sides):  # two constants: nothing random to test
        tested.difference = tested.ci_low = tested.ci_high = left.offset - right.offset
        tested.pairing, tested.exact = "exact", True
    else:
        few = [(t, s) for t, s in zip((left, right), sides) if s is not None and len(s) < 2]
        if few:
            tested.reason = NEEDS_SEEDS
            tested.detail = ", ".join(
                f"{t.experiment}.{t.split} has {len(s)} seed{'' if len(s) == 1 else 's'}"
                for t, s in few
            )
            return tested

    bound = tested.bound
    if tested.exact:
        tested.p_support, tested.p_contradict = _exact_p(tested.difference, check.op, bound)
        return tested

    sample, other, pairing = _as_one_test(left, right, sides)
    run = stats.welch_test if method == "welch" else stats.bootstrap_diff

    def test(alternative: str, delta: float) -> stats.TestResult:
        return run(sample, other, alternative=alternative, delta=delta, confidence=confidence)

    if check.op == "~":
        # TOST for support; either outer tail, Bonferroni x2, for contradiction.
        lower, upper = test("greater", -bound), test("less", bound)
        above, below = test("greater", bound), test("less", -bound)
        tested.p_support = max(lower.p_value, upper.p_value)
        tested.p_contradict = min(1.0, 2 * min(above.p_value, below.p_value))
        first = lower
    else:
        # > and >= alike: support lies above the bound, contradiction below it.
        first, second = test("greater", bound), test("less", bound)
        tested.p_support, tested.p_contradict = first.p_value, second.p_value
    tested.difference, tested.ci_low, tested.ci_high = first.difference, first.ci_low, first.ci_high
    tested.exact = first.method == "exact"
    tested.pairing = "exact" if tested.exact else pairing
    return tested


def _bound(check: Check, margin: float) -> float:
    """The number D is compared with: d for >, -m for >=, m (symmetric) for ~."""
    if check.op == ">":
        return check.by_more_than or 0.0
    m = check.within if check.within is not None else margin
    return -m if check.op == ">=" else m


def _exact_p(diff: float, op: str, bound: float) -> tuple[float, float]:
    """Deterministic (support, contradict) p-values when D is known exactly."""
    if op == "~":
        return (0.0 if abs(diff) < bound else 1.0), (0.0 if abs(diff) > bound else 1.0)
    return (0.0 if diff > bound else 1.0), (0.0 if diff < bound else 1.0)


def _as_one_test(left: Term, right: Term, sides) -> tuple[list[float], list[float] | float, str]:
    """Reduce a check to ``sample - constant_or_sample`` whose mean difference is D."""
    a, b = sides
    if a is not None and b is not None:
        if left.experiment == right.experiment and len(a) == len(b):
            # Same seeds on both sides: test the per-seed differences against 0.
            return [x + left.offset - y - right.offset for x, y in zip(a, b)], 0.0, "paired"
        return [x + left.offset for x in a], [y + right.offset for y in b], "independent"
    if b is None:  # right is a constant
        return [x + left.offset for x in a], right.offset, "one-sample"
    # left is a constant: D = c - B = (-B) - (-c), so negate to keep the sample on the left.
    return [-(y + right.offset) for y in b], -left.offset, "one-sample"


def _term_values(term: Term, values) -> list[float] | None:
    if term.is_constant:
        return None
    key = (term.experiment, term.split)
    if key not in values:
        have = sorted(split for exp, split in values if exp == term.experiment)
        raise ValueError(
            f"no values for {term.experiment}.{term.split}; "
            f"{term.experiment} has: {', '.join(have) or '(no splits)'}"
        )
    return [float(v) for v in values[key]]


def _result(t: _Tested, p_sup_holm: float, p_con_holm: float, alpha: float) -> CheckResult:
    check = t.check
    # Drop the split from labels only when it is the same on both sides ("exp6 − exp8").
    with_split = not (
        not check.left.is_constant
        and not check.right.is_constant
        and check.left.split == check.right.split
    )
    d_label = f"{check.left.label(with_split)} − {_parenthesise(check.right, with_split)}"
    if check.op == "~":
        needs = f"within ±{t.bound:.2f}"
        hypothesis = f"|{d_label}| < {t.bound:.2f}"
    else:
        needs = f"> {t.bound:+.2f}"
        hypothesis = f"{d_label} > {t.bound:+.2f}"

    if t.reason:
        verdict: Verdict = "not resolved"
        explanation = f"{t.detail}; {t.reason}"
    else:
        if p_sup_holm < alpha:
            verdict = "supported"
        elif p_con_holm < alpha:
            verdict = "contradicted"
        else:
            verdict = "not resolved"
        if t.exact:
            explanation = (
                f"{d_label} = {t.difference:+.2f} points exactly (no spread across seeds), "
                f"needs {needs}"
            )
        else:
            level = f"{100 * (1 - alpha):g}%"
            p = _deciding(verdict, (t.p_support, p_sup_holm), (t.p_contradict, p_con_holm))[1]
            explanation = (
                f"{d_label} = {t.difference:+.2f} points ({level} CI {t.ci_low:+.2f} … "
                f"{t.ci_high:+.2f}), needs {needs}; p_holm = {_fmt_p(p)}"
            )
    return CheckResult(
        text=check.text,
        verdict=verdict,
        left=check.left.label(),
        right=check.right.label(),
        left_summary=t.left_summary,
        right_summary=t.right_summary,
        difference=t.difference,
        ci_low=t.ci_low,
        ci_high=t.ci_high,
        hypothesis=hypothesis,
        pairing=t.pairing,
        p_support=t.p_support,
        p_contradict=t.p_contradict,
        p_support_holm=p_sup_holm,
        p_contradict_holm=p_con_holm,
        explanation=explanation,
        reason=t.reason,
    )


def _deciding(verdict: str, support: tuple[float, float], contradict: tuple[float, float]):
    """(raw, Holm) p of the direction that decided the verdict, or of the closer one if none."""
    if verdict == "supported":
        return support
    if verdict == "contradicted":
        return contradict
    return contradict if contradict[1] < support[1] else support


def _parenthesise(term: Term, with_split: bool) -> str:
    label = term.label(with_split)
    return f"({label})" if term.offset and not term.is_constant else label


def _fmt_p(p: float) -> str:
    if math.isnan(p):
        return "n/a"
    return f"{p:.1e}" if 0 < p < 1e-4 else f"{p:.3g}" if p < 0.01 else f"{p:.3f}"
