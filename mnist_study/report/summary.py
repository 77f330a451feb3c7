"""The run's headline numbers: the Appendix A table, with uncertainty, and the claims' verdicts.

Plain data first (`accuracy_rows`, `claim_rows`), rendering second (`accuracy_table`), so the
CLI's `show`, its JSON output and the HTML report all read the same numbers.
"""

from __future__ import annotations

import math

from rich import box
from rich.table import Table

from mnist_study.stats.claims import evaluate_claims
from mnist_study.results import SPLITS, RunResults
from mnist_study.stats.inference import summarize


def accuracy_rows(run: RunResults, confidence: float = 0.95) -> list[dict]:
    """One row per experiment: per split mean / std / CI over seeds (percent), reference, epochs, time."""
    rows = []
    for e in run.experiments:
        results = run.results(e.name)
        row = {"experiment": e.name, "title": e.title, "hidden": e.hidden, "frontend": e.frontend.kind,
               "seeds": [r.seed for r in results]}
        for split in SPLITS:
            values = [r.accuracy(split) for r in results]
            s = summarize(values, confidence) if values else None
            ref = getattr(e.reference, split) if e.reference else None
            row[split] = {
                "values": values,
                "mean": s.mean if s else None,
                "std": None if not s or math.isnan(s.std) else s.std,
                "ci": None if not s or math.isnan(s.ci_low) else [s.ci_low, s.ci_high],
                "reference": ref,
                "difference": (s.mean - ref) if s and ref is not None else None,
            }
        row["epochs"] = [r.metrics["epochs_run"] for r in results]
        row["train_seconds"] = [r.metrics["train_seconds"] for r in results]
        rows.append(row)
    return rows


def claim_rows(run: RunResults, alpha: float = 0.05) -> list[dict]:
    """Each claim of the study with its verdict and the numbers behind every check."""
    table = run.accuracy_table()
    if not run.study.claim or not table:
        return []
    names = {e for e, _ in table}
    usable = [c for c in run.study.claim if all(t in names for t in _experiments_of(c))]
    return [
        {"name": v.claim.name, "text": v.claim.text, "verdict": v.verdict,
         "checks": [{"check": c.text, "verdict": c.verdict, "difference": _num(c.difference),
                     "ci": None if math.isnan(c.ci_low) else [c.ci_low, c.ci_high], "p_holm": _num(c.p_holm),
                     "explanation": c.explanation, "reason": c.reason}
                    for c in v.checks]}
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


def _cell(split: dict, digits: int = 1) -> str:
    if split["mean"] is None:
        return "—"
    text = f"{split['mean']:.{digits}f}"
    if split["ci"] is not None:
        half = (split["ci"][1] - split["ci"][0]) / 2
        text += f"±{half:.{digits}f}"
    return text


def accuracy_table(rows: list[dict], title: str = "Accuracy (%)") -> Table:
    """Rich table, narrow enough for an 80-column terminal: each split's accuracy with the
    paper's figure in brackets, the test difference, epochs and training time."""
    several = any(len(r["seeds"]) > 1 for r in rows)
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, caption=("mean ± 95% CI half-width over seeds; " if several else "")
                  + "\\[paper's figure]; Δ = ours − paper", padding=(0, 1))
    table.add_column("exp", no_wrap=True)
    table.add_column("input", style="dim", no_wrap=True, min_width=6)
    table.add_column("H", justify="right", no_wrap=True)
    for split in SPLITS:
        table.add_column(split, justify="right", no_wrap=True)
    table.add_column("Δ test", justify="right", no_wrap=True)
    table.add_column("epochs", justify="right", no_wrap=True)
    table.add_column("s", justify="right")
    for r in rows:
        cells = [r["experiment"], FRONTEND_SHORT.get(r["frontend"], r["frontend"]), str(r["hidden"])]
        for split in SPLITS:
            s = r[split]
            cells.append(_cell(s, 2) + ("" if s["reference"] is None else f"\n[dim]\\[{s['reference']:.1f}][/]"))
        d = r["test"]["difference"]
        cells.append("—" if d is None else f"[{'green' if abs(d) <= 2 else 'yellow'}]{d:+.2f}[/]")
        epochs = r["epochs"]
        cells.append("—" if not epochs else (str(epochs[0]) if len(epochs) == 1 else f"{min(epochs)}–{max(epochs)}"))
        cells.append("—" if not r["train_seconds"] else f"{sum(r['train_seconds']) / len(r['train_seconds']):.0f}")
        table.add_row(*cells)
    return table


FRONTEND_SHORT = {"raw": "raw", "pca": "PCA", "forest_pixels": "forest"}


MARKS = {"supported": "[green]✓[/]", "contradicted": "[red]✗[/]", "not resolved": "[yellow]?[/]"}


def _evidence(check: dict) -> str:
    """One line per check: mark, the check, the difference with its CI and Holm's p."""
    line = f"{MARKS.get(check['verdict'], '?')} {check['check']}"
    if check["ci"] is not None:
        line += f": {check['difference']:+.2f} [{check['ci'][0]:+.2f}, {check['ci'][1]:+.2f}]"
        if check["p_holm"] is not None:
            line += f" p={check['p_holm']:.2g}"
    elif check["reason"]:
        line += f": {check['reason']}"
    return line


def claims_table(claims: list[dict]) -> Table:
    colour = {"supported": "green", "contradicted": "red", "not resolved": "yellow"}
    table = Table(title="Claims, tested over seeds (✓ supported, ✗ contradicted, ? not resolved; "
                        "difference in points [95% CI], Holm-adjusted p)")
    table.add_column("claim")
    table.add_column("verdict")
    table.add_column("evidence")
    for c in claims:
        evidence = "\n".join(_evidence(ch) for ch in c["checks"])
        table.add_row(c["text"], f"[{colour.get(c['verdict'], 'white')}]{c['verdict']}[/]", evidence)
    return table
