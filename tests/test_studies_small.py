"""Each built-in study's reduced variant (`<name>-small`) trained in full on this machine, and its answer
compared with the full study's: every check of a claim that the full run decided (supported or
contradicted) must be decided the same way by the small one. Minutes each, up to about 20:
`make test-studies`.

The verdicts in FULL are those of the full runs summarised in the README ("What the studies find"),
made with the commands listed there. A check the full run left "not resolved" is not compared. Where
the small variant asks its question at other points (double-descent-small's threshold is at 13 units,
not 50), whole claims are compared by name instead ("claim:<name>"). One worker: the minutes hold on a
2-core machine with its other core busy.
"""

import json
import time

import pytest
from typer.testing import CliRunner

from mnist_study.cli import app

pytestmark = [pytest.mark.studies, pytest.mark.slow]

S, C = "supported", "contradicted"

# study -> (seeds of the small run, {check: the full run's verdict})
FULL = {
    "fashion": (3, {"exp9.train > exp9.test by more than 1 points": S}),
    "optimisers": (10, {"rmsprop-tuned.test > rmsprop-usual.test": S}),
    "depth": (10, {"d1-100k.test > d1-25k.test": S}),
    "data-size": (5, {"w130-n4000.test > w10-n4000.test": S, "w130-n8000.test > w10-n8000.test": S,
                      "w130-n16000.test > w10-n16000.test": S}),
    "double-descent": (3, {"claim:second-descent": S}),
    "best-one-layer": (3, {"w800.test > paper-best.test": S, "w2048.test > paper-best.test": S,
                           "w800-elastic.test > w800.test": S, "cnn.test > w2048.test": S}),
}


@pytest.mark.parametrize("study", sorted(FULL))
def test_the_small_variant_gives_the_full_studys_answer(study, tmp_path, real_mnist, capsys):
    seeds, decided = FULL[study]
    start = time.perf_counter()
    result = CliRunner().invoke(app, ["run", f"{study}-small", "--seeds", str(seeds), "--out", str(tmp_path / "run"),
                                      "--workers", "1", "--no-report", "--data-dir", str(real_mnist)])
    minutes = (time.perf_counter() - start) / 60
    assert result.exit_code == 0, result.output
    shown = CliRunner().invoke(app, ["show", str(tmp_path / "run"), "--format", "json"])
    assert shown.exit_code == 0, shown.output
    claims = json.loads(shown.output)["claims"]
    checks = {check["check"]: check["verdict"] for claim in claims for check in claim["checks"]}
    checks |= {f"claim:{claim['name']}": claim["verdict"] for claim in claims}
    with capsys.disabled():
        print(f"\n{study}-small, {seeds} seeds: {minutes:.1f} min; verdicts {checks}")
    assert set(decided) <= set(checks), f"checks of the full study missing from {study}-small"
    assert {check: checks[check] for check in decided} == decided
