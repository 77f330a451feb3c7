"""A sweep in which some networks diverge: they are results, not crashes (tiny synthetic data)."""

import json

from conftest import train_study
from typer.testing import CliRunner

from mnist_study.cli import app
from mnist_study.report.summary import accuracy_rows
from mnist_study.report.sweep import sweep_summary
from mnist_study.results import load_run

STUDY = """
name = "blow-up"
[[sweep]]
name = "rates"
validation_size = 200
max_epochs = 3
optimizer = "sgd"
momentum = 0.9
loss = "squared_error"
baseline = { learning_rate = 0.05 }
[sweep.vary]
hidden = [8, 16]
learning_rate = [0.05, 1e9]
"""


def test_diverging_networks_are_recorded_and_left_out_of_the_statistics(tmp_path, tiny_data):
    out = train_study(STUDY, [0, 1], tiny_data, tmp_path / "run")
    run = load_run(out)
    assert run.manifest["complete"]  # the rest of the sweep went on
    blown = [e.name for e in run.experiments if e.learning_rate == 1e9]
    assert blown == ["w8-lr1000000000", "w16-lr1000000000"]
    for name in blown:
        for seed in run.results(name):
            assert seed.diverged and seed.metrics["diverged"]["epoch"] >= 1
    assert run.diverged_counts() == {"w8-lr0.05": 0, "w8-lr1000000000": 2, "w16-lr0.05": 0, "w16-lr1000000000": 2}
    # the statistics leave diverged seeds out: no mean for an experiment whose every seed diverged
    rows = {r.experiment: r for r in accuracy_rows(run)}
    assert rows["w8-lr1000000000"].test.mean is None and len(rows["w8-lr1000000000"].test.values) == 2
    assert rows["w8-lr0.05"].test.mean is not None
    assert all(run.accuracy_table()[(name, "test")] == [] for name in blown)
    (sweep,) = sweep_summary(run)["sweeps"]
    assert sweep["n_diverged"] == 4 and sweep["n_networks"] == 8
    assert "w8-lr1000000000" not in sweep["best"]["experiment"]
    shown = CliRunner().invoke(app, ["show", str(out)], env={"COLUMNS": "120"})
    assert shown.exit_code == 0 and "diverged" in shown.output
    data = json.loads(CliRunner().invoke(app, ["show", str(out), "--format", "json"]).output)
    assert [r["diverged"] for r in data["experiments"] if r["experiment"] == "w16-lr1000000000"][0][0] >= 1
