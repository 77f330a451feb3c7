"""Progress that logs, pipes and small terminals can read."""

import io
import re

from rich.console import Console

from mnist_study.progress import StepProgress, TrainingProgress
from mnist_study.schedule import make_plan
from mnist_study.studies import parse_study

STUDY = parse_study("""
name = "progress"
[[experiment]]
name = "wide"
hidden = 200
[[experiment]]
name = "pca"
hidden = 8
frontend = { kind = "pca" }
""")


def _plan(tmp_path):
    return make_plan(STUDY, [0, 1], tmp_path)  # wide: one task per seed; pca: both seeds in one task


def _epoch(task, active, epoch=3, name="wide"):
    return {"kind": "epoch", "experiment": name, "task": task, "epoch": epoch, "active": active, "seeds": 1,
            "val_accuracy": 0.2296}


def test_plain_lines_when_output_is_not_a_terminal(tmp_path, monkeypatch):
    monkeypatch.setattr("mnist_study.progress.EPOCH_LINE_EVERY_S", 0.0)
    out = io.StringIO()
    display = TrainingProgress(STUDY, _plan(tmp_path), Console(file=out, width=80))
    display.start()
    display.update({"kind": "frontend-start", "experiment": "pca", "frontend": "pca"})
    display.update({"kind": "frontend-done", "experiment": "pca", "frontend": "pca", "seconds": 1.25})
    display.update(_epoch("wide/seeds-0", 1))
    display.update(_epoch("wide/seeds-1", 1))
    display.update({"kind": "seed-done", "experiment": "wide", "seed": 0, "test_accuracy": 0.9655, "epochs": 4})
    display.stop()
    lines = out.getvalue().splitlines()
    assert all(re.match(r"\d\d:\d\d:\d\d ", line) for line in lines)
    text = out.getvalue()
    assert "fit pca front-end (pca): done in 1.2 s" in text
    assert "train wide: epoch 3 (0 of 2 seeds done), best val acc 22.96%" in text  # the experiment's seeds, not a task's
    assert re.search(r"train wide: seed 0 done \(1 of 2; 1 of \d+ networks\), test acc 96.55%, 4 epochs", text)
    assert "…" not in text


def test_an_80_column_terminal_keeps_the_bar_count_and_time(tmp_path):
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=True, color_system=None)
    display = TrainingProgress(STUDY, _plan(tmp_path), console)
    display.update(_epoch("wide/seeds-0", 1))
    display.update({"kind": "seed-done", "experiment": "wide", "seed": 1, "test_accuracy": 0.9, "epochs": 4})
    rendered = Console(file=io.StringIO(), width=80, record=True, color_system=None)
    rendered.print(display.bars)
    line = next(line for line in rendered.export_text().splitlines() if "train wide" in line)
    assert "1/2" in line and re.search(r"\d:\d\d:\d\d", line)
    assert len(line) <= 80


def test_report_steps_print_lines_in_a_pipe():
    out = io.StringIO()
    steps = StepProgress("report", total=2, console=Console(file=out, width=80))
    with steps.step("data"):
        pass
    steps.advance("exp1 done")
    steps.close()
    text = out.getvalue()
    assert "report: data in 0.0 s (1 of 2" in text and "report: exp1 done (2 of 2" in text
    assert set(steps.timings) == {"data"}


def test_a_sweep_gets_one_row_and_rows_only_for_what_trains_now(tmp_path):
    sweep = parse_study('name = "many"\n[[sweep]]\n[sweep.vary]\nhidden = [' + ", ".join(map(str, range(1, 41))) + "]\n")
    display = TrainingProgress(sweep, make_plan(sweep, [0], tmp_path), Console(file=io.StringIO(), force_terminal=True))
    descriptions = lambda: [t.description for t in display.bars.tasks if not t.description.startswith("fit")]  # noqa: E731
    assert descriptions() == ["train 40 experiments"]  # not 40 rows
    display.update({"kind": "epoch", "experiment": "w7", "task": "w7/seeds-0", "epoch": 1, "active": 1, "seeds": 1,
                    "val_accuracy": 0.5})
    assert descriptions() == ["train 40 experiments", "train w7 (H=7)"]
    display.update({"kind": "seed-done", "experiment": "w7", "seed": 0, "test_accuracy": 0.5, "epochs": 1})
    assert descriptions() == ["train 40 experiments"] and next(t for t in display.bars.tasks if t.id == display.overall).completed == 1


def test_a_resume_that_only_refits_a_front_end_says_so(tmp_path):
    from mnist_study.schedule import Plan

    out = io.StringIO()
    fit = STUDY.get("pca")
    TrainingProgress(STUDY, Plan(frontends=[(fit, ["pca"])], training=[]), Console(file=out, width=80)).start()
    assert "fitting 1 front-end; every network is trained" in out.getvalue()
