"""The run's headline numbers as typed rows: their JSON, the `show` tables, and one epochs cell."""

import io
import json
from dataclasses import asdict

from rich.console import Console
from typer.testing import CliRunner

from mnist_study.cli import app
from mnist_study.report.summary import (AccuracyRow, CheckRow, ClaimRow, SplitSummary, accuracy_rows,
                                        accuracy_table, claims_table, format_epochs, has_reference_figures)
from mnist_study.results import load_run

runner = CliRunner()


def rendered(table) -> str:
    console = Console(file=io.StringIO(), width=120, record=True)
    console.print(table)
    return console.export_text()


def split(mean: float, reference: float | None = None) -> SplitSummary:
    return SplitSummary(values=[mean - 0.5, mean + 0.5], mean=mean, std=0.7, ci=[mean - 6.4, mean + 6.4],
                        reference=reference, difference=None if reference is None else mean - reference)


def row(name: str, epochs: list[int], test_reference: float | None = None) -> AccuracyRow:
    return AccuracyRow(experiment=name, title="", hidden=130, frontend="raw", seeds=[0, 1], train=split(98.0),
                       validation=split(97.5), test=split(97.0, test_reference), epochs=epochs,
                       train_seconds=[10.0, 12.0])


def test_epochs_cell_is_one_number_when_every_seed_ran_as_long():
    assert format_epochs([5, 5]) == "5"
    assert format_epochs([7]) == "7"
    assert format_epochs([4, 6, 5]) == "4–6"
    assert format_epochs([]) == "—"
    assert row("a", [5, 5]).epochs_text == "5"  # the property the report's table reads


def test_rows_of_a_run_are_typed_and_their_json_keeps_its_keys(tiny_run):
    rows = accuracy_rows(load_run(tiny_run))
    assert [r.experiment for r in rows] == ["raw8", "pca8", "forest8"]
    first = rows[0]
    assert isinstance(first, AccuracyRow) and isinstance(first.test, SplitSummary)
    assert first.split("test") is first.test and first.seeds == [0, 1]
    assert first.test.mean == sum(first.test.values) / 2
    assert first.test.ci[0] <= first.test.mean <= first.test.ci[1]
    assert first.test.reference is None and first.test.difference is None  # the tiny study gives none
    assert not has_reference_figures(rows)
    data = asdict(first)
    assert list(data) == ["experiment", "title", "hidden", "frontend", "seeds", "train", "validation", "test",
                          "epochs", "train_seconds", "diverged", "shape", "swept", "parameters"]
    assert data["parameters"] == 784 * 8 + 8 + 8 * 10 + 10  # raw8: 784 -> 8 -> 10, weights and biases
    assert data["diverged"] == [None, None]  # per seed: the epoch its loss became NaN or infinite
    assert data["shape"] == "8" and data["hidden"] == 8  # the hidden widths, "100-100" for two layers
    assert list(data["test"]) == ["values", "mean", "std", "ci", "reference", "difference"]


def test_show_json_is_the_rows_as_plain_data(tiny_run):
    result = runner.invoke(app, ["show", str(tiny_run), "--format", "json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    rows = accuracy_rows(load_run(tiny_run))
    assert shown["experiments"] == json.loads(json.dumps([asdict(r) for r in rows]))
    assert shown["claims"] == [] and shown["missing"] == [] and shown["study"] == "tiny"


def test_show_of_a_study_without_references_names_none(tiny_run):
    result = runner.invoke(app, ["show", str(tiny_run)])
    assert result.exit_code == 0, result.output
    assert "tiny: accuracy (%)" in result.output
    for word in ("paper", "reference", "Δ", "["):
        assert word not in result.output, word
    rows = accuracy_rows(load_run(tiny_run))
    for r in rows:  # every row's epochs cell as the report prints it
        assert any(line.split()[0] == r.experiment and line.split()[-2] == r.epochs_text
                   for line in result.output.splitlines() if line.split())


def test_table_with_references_names_their_source():
    rows = [row("exp6", [5, 5], test_reference=97.1), row("exp7", [3, 5])]
    assert has_reference_figures(rows)
    text = rendered(accuracy_table(rows, "paper: accuracy (%)", reference_source="paper"))
    assert "paper: accuracy (%), ours beside the paper's" in text
    assert "[paper's figure]; Δ = ours − paper" in text and "mean ± 95% CI half-width over seeds" in text
    assert "[97.1]" in text and "-0.10" in text  # Δ test = 97.0 − 97.1
    lines = {line.split()[0]: line.split() for line in text.splitlines() if line.split()[:1] in (["exp6"], ["exp7"])}
    assert lines["exp6"][-2] == "5" and lines["exp7"][-2] == "3–5"
    assert lines["exp6"][-1] == "11"  # mean training seconds


def test_table_without_references_has_no_difference_column():
    text = rendered(accuracy_table([row("exp6", [5, 5])], "mine: accuracy (%)", reference_source="paper"))
    assert "Δ" not in text and "paper" not in text and "mine: accuracy (%)" in text


def test_claims_table_shows_each_check_with_its_numbers():
    claim = ClaimRow(name="wide", text="Wider is better", verdict="supported", checks=[
        CheckRow(check="b.test > a.test", verdict="supported", difference=1.5, ci=[0.5, 2.5], p_holm=0.01,
                 explanation="", reason=""),
        CheckRow(check="c.test > a.test", verdict="not resolved", difference=None, ci=None, p_holm=None,
                 explanation="", reason="needs 2 seeds")])
    text = rendered(claims_table([claim]))
    assert "✓ b.test > a.test: +1.50 [+0.50, +2.50] p=0.01" in text
    assert "? c.test > a.test: needs 2 seeds" in text and "Wider is better" in text
