"""The run's headline numbers: each experiment's accuracy with its uncertainty, and the claims' verdicts.

Typed rows first (`accuracy_rows` -> `AccuracyRow`, `claim_rows` -> `ClaimRow`), rendering second
(`accuracy_table`, `claims_table`), so the CLI's `show`, its JSON output (`dataclasses.asdict` of
the rows) and the HTML report all read the same numbers, formatted by the same functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from rich import box
from rich.markup import escape
from rich.table import Table

from mnist_study.results import SPLITS, RunResults
from mnist_study.stats.claims import evaluate_claims
from mnist_study.stats.inference import summarize
from mnist_study.training.frontends import frontend_short_name


@dataclass(frozen=True)
class SplitSummary:
    """One experiment's accuracy (percent) on one split, over its seeds.

    `values` has every seed; `mean`, `std` and `ci` ([low, high], Student t) are over the seeds that
    did not diverge, None with fewer than two of them; `reference` is the study's figure for
    comparison (None when it gives none) and `difference` is mean − reference.
    """

    values: list[float]
    mean: float | None
    std: float | None
    ci: list[float] | None
    reference: float | None
    difference: float | None

    @property
    def half_width(self) -> float | None:
        return None if self.ci is None else (self.ci[1] - self.ci[0]) / 2


@dataclass(frozen=True)
class AccuracyRow:
    """One experiment's line of the accuracy table: every split, the epochs run and the training time."""

    experiment: str
    title: str
    hidden: int
    frontend: str  # the front-end's kind
    seeds: list[int]
    train: SplitSummary
    validation: SplitSummary
    test: SplitSummary
    epochs: list[int]  # epochs run, per seed
    train_seconds: list[float]  # per seed
    diverged: list[int | None] = field(default_factory=list)  # per seed: the epoch its loss became NaN
    # or infinite (training stopped there, keeping the weights from before it), None if it did not
    shape: str = ""  # the hidden widths, "130", "100-100" or "0" (`hidden` is the first one's, 0 if none)
    swept: dict = field(default_factory=dict)  # the values of the fields its [[sweep]] varies (empty if none)
    parameters: int | None = None  # the network's trained weights and biases (None without a seed on disk)

    @property
    def diverged_seeds(self) -> list[int]:
        return [seed for seed, epoch in zip(self.seeds, self.diverged) if epoch is not None]

    def split(self, name: str) -> SplitSummary:
        if name not in SPLITS:
            raise KeyError(f"no split {name!r}; the splits are {', '.join(SPLITS)}")
        return getattr(self, name)

    @property
    def epochs_text(self) -> str:
        """The epochs cell; a seed that diverged is counted after it, e.g. "2–5 (1 diverged)"."""
        text = format_epochs(self.epochs)
        count = len(self.diverged_seeds)
        if count:
            text += " (diverged)" if count == len(self.seeds) else f" ({count} diverged)"
        return text

    @property
    def mean_train_seconds(self) -> float | None:
        return sum(self.train_seconds) / len(self.train_seconds) if self.train_seconds else None


@dataclass(frozen=True)
class CheckRow:
    """One check of a claim: its verdict and the numbers behind it (None where undefined)."""

    check: str
    verdict: str
    difference: float | None
    ci: list[float] | None
    p_holm: float | None
    explanation: str
    reason: str


@dataclass(frozen=True)
class ClaimRow:
    name: str
    text: str
    verdict: str
    checks: list[CheckRow]


def format_epochs(epochs: Sequence[int]) -> str:
    """The epochs cell: "5" when every seed ran the same number, "min–max" otherwise, "—" for none."""
    if not epochs:
        return "—"
    low, high = min(epochs), max(epochs)
    return str(low) if low == high else f"{low}–{high}"


def has_reference_figures(rows: Sequence[AccuracyRow]) -> bool:
    """Whether any split of any row has a reference figure: only then do tables show the columns."""
    return any(row.split(s).reference is not None for row in rows for s in SPLITS)


def _split_summary(values: list[float], reference: float | None, confidence: float,
                   counted: list[bool] | None = None) -> SplitSummary:
    """`values` per seed; the statistics over those `counted` (all by default)."""
    kept = values if counted is None else [v for v, keep in zip(values, counted) if keep]
    s = summarize(kept, confidence) if kept else None
    return SplitSummary(
        values=values,
        mean=s.mean if s else None,
        std=None if not s or math.isnan(s.std) else s.std,
        ci=None if not s or math.isnan(s.ci_low) else [s.ci_low, s.ci_high],
        reference=reference,
        difference=(s.mean - reference) if s and reference is not None else None,
    )


def accuracy_rows(run: RunResults, confidence: float = 0.95) -> list[AccuracyRow]:
    """One row per experiment: per split mean / std / CI over seeds (percent), reference, epochs, time."""
    rows = []
    for e in run.experiments:
        results = run.results(e.name)
        # Diverged seeds are listed (and counted) but left out of the statistics.
        splits = {split: _split_summary([r.accuracy(split) for r in results],
                                        getattr(e.reference, split) if e.reference else None, confidence,
                                        [not r.diverged for r in results])
                  for split in SPLITS}
        rows.append(AccuracyRow(
            experiment=e.name, title=e.title, hidden=e.width, frontend=e.frontend.kind,
            seeds=[r.seed for r in results], **splits,
            epochs=[r.metrics["epochs_run"] for r in results],
            train_seconds=[r.metrics["train_seconds"] for r in results],
            diverged=[diverged_epoch(r.metrics) for r in results], shape=e.shape_text, swept=dict(e.swept),
            parameters=results[0].n_parameters if results else None,
        ))
    return rows


def diverged_epoch(metrics: dict) -> int | None:
    """The epoch a seed's loss became NaN or infinite (metrics.json's `diverged`), or None."""
    diverged = metrics.get("diverged")  # absent in runs made before divergence was recorded
    return diverged["epoch"] if isinstance(diverged, dict) else None


def claim_rows(run: RunResults, alpha: float = 0.05) -> list[ClaimRow]:
    """Each claim of the study with its verdict and the numbers behind every check."""
    table = run.accuracy_table()
    if not run.study.claim or not table:
        return []
    names = {e for e, _ in table}
    usable = [c for c in run.study.claim if all(t in names for t in _experiments_of(c))]
    return [
        ClaimRow(name=v.claim.name, text=v.claim.text, verdict=v.verdict, checks=[
            CheckRow(check=c.text, verdict=c.verdict, difference=_num(c.difference),
                     ci=None if math.isnan(c.ci_low) else [c.ci_low, c.ci_high], p_holm=_num(c.p_holm),
                     explanation=c.explanation, reason=c.reason)
            for c in v.checks])
        for v in evaluate_claims(usable, table, alpha=alpha)
    ]


def _num(x: float) -> float | None:
    return None if x is None or math.isnan(x) else x


def _experiments_of(claim) -> set[str]:
    found = set()
    for check in claim.parsed_checks:
        for term in (check.left, check.right):
            if term.experiment:
                found.add(term.experiment)
    return found


# ------------------------------------------------------------------------------ terminal tables

def _cell(split: SplitSummary, digits: int = 1) -> str:
    if split.mean is None:
        return "—"
    text = f"{split.mean:.{digits}f}"
    if split.half_width is not None:
        text += f"±{split.half_width:.{digits}f}"
    return text


def accuracy_table(rows: list[AccuracyRow], title: str = "Accuracy (%)",
                   reference_source: str = "reference") -> Table:
    """Rich table, narrow enough for an 80-column terminal: each split's accuracy, the epochs and
    the training time. When the rows carry reference figures, each is shown in brackets under ours,
    with the test difference, and the title says whose they are (`reference_source`, e.g. "paper")."""
    several = any(len(r.seeds) > 1 for r in rows)
    references = has_reference_figures(rows)
    source = escape(reference_source)
    diverged = any(r.diverged_seeds for r in rows)
    caption = "; ".join(([("mean ± 95% CI half-width over seeds")] if several else [])
                        + ([f"\\[{source}'s figure]; Δ = ours − {source}"] if references else [])
                        + (["[red]diverged[/]: the loss became NaN or infinite and training stopped, "
                            "keeping the weights from before; diverged seeds are left out of the means, "
                            "intervals and claims"] if diverged else []))
    table = Table(title=title + (f", ours beside the {source}'s" if references else ""), box=box.SIMPLE_HEAD,
                  pad_edge=False, collapse_padding=True, caption=caption or None, padding=(0, 1))
    table.add_column("exp", no_wrap=True)
    table.add_column("input", style="dim", no_wrap=True, min_width=6)
    table.add_column("H", justify="right", no_wrap=True)
    for split in SPLITS:
        table.add_column(split, justify="right", no_wrap=True)
    if references:
        table.add_column("Δ test", justify="right", no_wrap=True)
    table.add_column("epochs", justify="right", no_wrap=True)
    table.add_column("s", justify="right")
    for r in rows:
        cells = [r.experiment, frontend_short_name(r.frontend), r.shape or str(r.hidden)]
        for split in SPLITS:
            s = r.split(split)
            cells.append(_cell(s, 2) + ("" if s.reference is None else f"\n[dim]\\[{s.reference:.1f}][/]"))
        if references:
            d = r.test.difference
            cells.append("—" if d is None else f"[{'green' if abs(d) <= 2 else 'yellow'}]{d:+.2f}[/]")
        cells.append(f"[red]{r.epochs_text}[/]" if r.diverged_seeds else r.epochs_text)
        cells.append("—" if r.mean_train_seconds is None else f"{r.mean_train_seconds:.0f}")
        table.add_row(*cells)
    return table


MARKS = {"supported": "[green]✓[/]", "contradicted": "[red]✗[/]", "not resolved": "[yellow]?[/]"}


def _evidence(check: CheckRow) -> str:
    """One line per check: mark, the check, the difference with its CI and Holm's p."""
    line = f"{MARKS.get(check.verdict, '?')} {check.check}"
    if check.ci is not None:
        line += f": {check.difference:+.2f} [{check.ci[0]:+.2f}, {check.ci[1]:+.2f}]"
        if check.p_holm is not None:
            line += f" p={check.p_holm:.2g}"
    elif check.reason:
        line += f": {check.reason}"
    return line


def claims_table(claims: list[ClaimRow]) -> Table:
    colour = {"supported": "green", "contradicted": "red", "not resolved": "yellow"}
    table = Table(title="Claims, tested over seeds (✓ supported, ✗ contradicted, ? not resolved; "
                        "difference in points [95% CI], Holm-adjusted p)")
    table.add_column("claim")
    table.add_column("verdict")
    table.add_column("evidence")
    for c in claims:
        evidence = "\n".join(_evidence(ch) for ch in c.checks)
        table.add_row(c.text, f"[{colour.get(c.verdict, 'white')}]{c.verdict}[/]", evidence)
    return table
