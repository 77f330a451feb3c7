"""Reading a sweep: the statistics on synthetic records whose answers are known, the views `show`
prints, and the report of a 1,000-network sweep (a run directory faked file by file)."""

from __future__ import annotations

import io
import json
import math
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from mnist_study.report import sections
from mnist_study.report.sweep import axis_kind, factors, sweep_summary, sweep_tables, sweep_views, value_label
from mnist_study.results import load_run
from mnist_study.stats.sweep import Record, best_configuration, effects_table, interaction, level_key, main_effects
from mnist_study.studies import parse_study
from mnist_study.study import Study, Sweep, study_to_dict


def grid(levels: dict[str, list], seeds: int, mean, rng, noise: float = 0.5, diverged=lambda swept, seed: False):
    """Records of a full grid: value = mean(swept) + N(0, noise) per network."""
    names = list(levels)
    combos = [{}]
    for name in names:
        combos = [dict(c, **{name: v}) for c in combos for v in levels[name]]
    out = []
    for i, swept in enumerate(combos):
        for seed in range(seeds):
            out.append(Record(f"e{i}", swept, seed, mean(swept) + rng.normal(0, noise), diverged(swept, seed)))
    return out


# ------------------------------------------------------------------------------------ statistics

def test_a_planted_effect_is_found_and_null_fields_are_not_after_holm():
    rng = np.random.default_rng(1)
    effect = {0.001: 0.0, 0.01: 1.5, 0.1: 3.0}
    recs = grid({"lr": [0.001, 0.01, 0.1], "width": [16, 32, 64, 128], "opt": ["a", "b", "c"]}, seeds=5,
                mean=lambda s: 95 + effect[s["lr"]], rng=rng)
    table = effects_table(recs, ["lr", "width", "opt"])
    assert [(e.field, e.level, e.baseline) for e in table] == [
        ("lr", 0.01, 0.001), ("lr", 0.1, 0.001), ("width", 32, 16), ("width", 64, 16), ("width", 128, 16),
        ("opt", "b", "a"), ("opt", "c", "a")]
    lr, others = table[:2], table[2:]
    assert all(e.significant and e.ci_low > 0 for e in lr)
    assert lr[0].ci_low < 1.5 < lr[0].ci_high and lr[1].ci_low < 3.0 < lr[1].ci_high
    assert not any(e.significant for e in others)
    assert all(e.method == "paired" and e.n_level == e.n_baseline == 5 for e in table)
    # Holm: every adjusted p at least its raw p, and the table corrected as one family
    assert all(e.p_holm >= e.p_value for e in table)
    smallest = min(table, key=lambda e: e.p_value)
    assert smallest.p_holm == pytest.approx(min(1.0, len(table) * smallest.p_value))


def test_main_effects_average_the_other_fields_per_seed_then_over_seeds():
    recs = [Record("a1", {"a": 1, "b": "x"}, 0, 90.0), Record("a1", {"a": 1, "b": "x"}, 1, 92.0),
            Record("a2", {"a": 1, "b": "y"}, 0, 94.0), Record("a2", {"a": 1, "b": "y"}, 1, 96.0),
            Record("b1", {"a": 2, "b": "x"}, 0, 80.0), Record("b1", {"a": 2, "b": "x"}, 1, 80.0)]
    one, two = main_effects(recs, "a", [1, 2])
    assert one.per_seed == {0: 92.0, 1: 94.0} and one.summary.mean == 93.0 and one.n_experiments == 2
    assert one.summary.n == 2 and one.n_networks == 4 and one.summary.ci_low < 93.0 < one.summary.ci_high
    assert two.per_seed == {0: 80.0, 1: 80.0} and two.summary.ci_low == two.summary.ci_high == 80.0
    cells = interaction(recs, "a", "b", [1, 2], ["x", "y"])
    assert [(c.levels, c.summary.mean, c.summary.n) for c in cells] == [
        ((1, "x"), 91.0, 2), ((1, "y"), 95.0, 2), ((2, "x"), 80.0, 2), ((2, "y"), cells[3].summary.mean, 0)]
    assert math.isnan(cells[3].summary.mean) and cells[3].n_experiments == 0  # never trained: listed, empty


def test_an_interaction_shows_in_the_cells():
    rng = np.random.default_rng(2)
    # b helps only when a is "on": the cells differ, a main effect of b alone would average it away
    recs = grid({"a": ["off", "on"], "b": [0, 1], "c": [1, 2, 3]}, seeds=4, rng=rng, noise=0.2,
                mean=lambda s: 90 + (2.0 if s["a"] == "on" and s["b"] == 1 else 0.0))
    cells = {c.levels: c.summary.mean for c in interaction(recs, "a", "b")}
    assert cells[("on", 1)] - cells[("on", 0)] == pytest.approx(2.0, abs=0.4)
    assert cells[("off", 1)] - cells[("off", 0)] == pytest.approx(0.0, abs=0.4)


def test_intervals_cover_the_true_marginal_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(3)
    truth = {(a, b): 90 + 2 * a + 0.5 * b * (a - 1) for a in range(3) for b in range(4)}
    marginal = {a: np.mean([truth[(a, b)] for b in range(4)]) for a in range(3)}
    covered = total = 0
    for _ in range(300):
        recs = grid({"a": [0, 1, 2], "b": [0, 1, 2, 3]}, seeds=4, rng=rng, noise=1.0,
                    mean=lambda s: truth[(s["a"], s["b"])])
        for cell in main_effects(recs, "a"):
            covered += cell.summary.ci_low <= marginal[cell.level] <= cell.summary.ci_high
            total += 1
    assert 0.92 <= covered / total <= 0.98


def test_diverged_networks_are_left_out_and_counted():
    rng = np.random.default_rng(4)
    levels = {"lr": [0.01, 1.0], "w": [8, 16]}
    clean = grid(levels, seeds=3, mean=lambda s: 95.0, rng=rng)
    # lr = 1.0 with w = 16 diverges for every seed; its accuracy is whatever the weights before gave
    blown = [Record(r.experiment, r.swept, r.seed, 10.0, True) if r.swept == {"lr": 1.0, "w": 16} else r
             for r in clean]
    high = main_effects(blown, "lr", [0.01, 1.0])[1]
    assert high.n_diverged == 3 and high.n_networks == 3 and high.n_experiments == 2
    assert high.summary.mean == pytest.approx(np.mean([r.value for r in clean if r.swept == {"lr": 1.0, "w": 8}]))
    # one seed of a cell wholly diverged: that cell has one seed fewer, and the effect falls back to Welch
    one_seed = [Record(r.experiment, r.swept, r.seed, r.value, r.swept["lr"] == 1.0 and r.seed == 2) for r in clean]
    cell = main_effects(one_seed, "lr", [0.01, 1.0])[1]
    assert cell.summary.n == 2 and cell.n_diverged == 2 and set(cell.per_seed) == {0, 1}
    (effect,) = effects_table(one_seed, ["lr"])
    assert effect.method == "welch" and effect.n_level == 2 and effect.n_baseline == 3
    nan_value = [Record("x", {"lr": 0.01}, 0, float("nan"))]
    assert main_effects(nan_value, "lr")[0].n_diverged == 1  # a non-finite metric is never averaged


def test_baseline_is_the_given_value_else_the_first():
    rng = np.random.default_rng(5)
    recs = grid({"opt": ["sgd", "rmsprop", "adam"]}, seeds=3, mean=lambda s: 95.0, rng=rng)
    assert {e.baseline for e in effects_table(recs, ["opt"], {"opt": "rmsprop"})} == {"rmsprop"}
    assert {e.baseline for e in effects_table(recs, ["opt"])} == {"sgd"}
    assert {e.baseline for e in effects_table(recs, ["opt"], {"opt": "nadam"})} == {"sgd"}
    one_seed = grid({"opt": ["sgd", "adam"]}, seeds=1, mean=lambda s: 95.0, rng=rng)
    (effect,) = effects_table(one_seed, ["opt"])
    assert effect.method == "" and "2 seeds" in effect.reason and math.isnan(effect.p_holm)


def test_values_meet_by_content():
    assert level_key(1) == level_key(1.0) and level_key(True) != level_key(1)
    assert level_key([100, 100]) == level_key((100, 100.0)) != level_key([100])
    assert level_key({"kind": "pca", "variance": 0.9}) == level_key({"variance": 0.9, "kind": "pca"})
    recs = [Record("a", {"layers": [100, 100]}, 0, 90.0), Record("b", {"layers": [100]}, 0, 80.0)]
    assert [c.summary.mean for c in main_effects(recs, "layers", [[100], [100, 100]])] == [80.0, 90.0]


def test_best_configuration_says_whether_the_runner_up_is_distinguishable():
    seeds = range(5)
    close = [Record("w256", {}, s, 98.0 + 0.3 * (s % 2), False) for s in seeds] + \
            [Record("w128", {}, s, 97.9 + 0.3 * ((s + 1) % 2), False) for s in seeds] + \
            [Record("w8", {}, s, 90.0 + 0.1 * s, False) for s in seeds]
    best = best_configuration(close)
    assert best.experiment == "w256" and best.runner_up == "w128" and best.paired and best.n_ranked == 3
    assert best.distinguishable is False
    text = best.describe("test accuracy")
    assert "indistinguishable from the runner-up w128 at 95%: difference +0.04 points, CI [-0.37, +0.45]" in text
    assert "(paired by seed)" in text and "w256 has the highest mean test accuracy of 3 experiments" in text
    apart = [Record("a", {}, s, 98.0 + 0.01 * s, False) for s in seeds] + \
            [Record("b", {}, s, 96.0 + 0.01 * ((s * 3) % 5), False) for s in range(1, 6)]
    best = best_configuration(apart)
    assert best.distinguishable and not best.paired  # seeds 0-4 against 1-5: Welch
    assert "ahead of the runner-up b at 95%: difference +2.00 points" in best.describe("test accuracy")


def test_best_configuration_can_be_chosen_on_another_metric():
    test = [Record("a", {}, s, 97.0 + 0.1 * s) for s in range(3)] + [Record("b", {}, s, 99.0 + 0.1 * s) for s in range(3)]
    validation = [Record("a", {}, s, 98.0) for s in range(3)] + [Record("b", {}, s, 97.0) for s in range(3)]
    best = best_configuration(test, select=validation)
    assert best.experiment == "a" and best.summary.mean == pytest.approx(97.1)  # reported on test
    text = best.describe("test accuracy", "validation accuracy")
    assert text.startswith("a has the highest mean validation accuracy of 2 experiments: test accuracy 97.10%")
    assert "the runner-up b does better on test accuracy at 95%" in text
    diverged_only = [Record("a", {}, 0, 99.0, True)]
    assert best_configuration(diverged_only) is None
    assert "one seed, so no interval" in best_configuration([Record("a", {}, 0, 99.0)]).describe("test accuracy")


# ---------------------------------------------------------------------------- a faked run directory

def write_fake_run(root: Path, data_dir: Path, study: Study, seeds: list[int], metrics) -> Path:
    """A finished run of `study` without training: every seed's files are real and read back, all but
    metrics.json shared (hard links) by every network; `metrics(experiment, seed)` gives
    (validation %, test %, diverged) for each."""
    from safetensors.numpy import save_file
    from sklearn.metrics import classification_report, confusion_matrix

    from mnist_study.data.sources import load_dataset
    from mnist_study.training.frontends.base import save_frontend
    from mnist_study.training.frontends.raw import RawPixels
    from mnist_study.training.model import MLP, init_params

    run = root / "run"
    shared = root / "shared"
    shared.mkdir(parents=True)
    labels = load_dataset(data_dir, download=False, progress=False).test_labels.astype(np.int64)
    rng = np.random.default_rng(0)
    proba = rng.random((len(labels), 10)).astype(np.float32)
    proba[np.arange(len(labels)), labels] += 2.0 * (rng.random(len(labels)) < 0.9)
    proba /= proba.sum(1, keepdims=True)
    predicted = proba.argmax(1)
    MLP(init_params(784, 8, seed=0)).save(shared / "model.safetensors")
    save_file({"confusion": confusion_matrix(labels, predicted, labels=range(10)).astype(np.int64),
               "test_proba": proba}, str(shared / "evaluation.safetensors"))
    (shared / "history.json").write_text(json.dumps({"loss": [1.0, 0.5, 0.4], "accuracy": [0.8, 0.9, 0.92],
                                                     "val_loss": [0.9, 0.6, 0.5], "val_accuracy": [0.8, 0.88, 0.9]}))
    (shared / "classification_report.json").write_text(json.dumps(
        classification_report(labels, predicted, output_dict=True, zero_division=0)))
    save_frontend(RawPixels().fit(np.zeros((1, 784), np.float32)), shared)
    (run / "experiments").mkdir(parents=True)
    (run / "study.json").write_text(json.dumps(study_to_dict(study)))
    (run / "manifest.json").write_text(json.dumps({"seeds": seeds, "data": {"source": str(data_dir)},
                                                   "complete": True}))
    for e in study.experiments:
        directory = run / "experiments" / e.name
        directory.mkdir()
        for name in ("frontend.json", "frontend.safetensors"):
            os.link(shared / name, directory / name)
        for seed in seeds:
            validation, test, diverged = metrics(e, seed)
            out = directory / f"seed-{seed}"
            out.mkdir()
            for name in ("model.safetensors", "evaluation.safetensors", "history.json", "classification_report.json"):
                os.link(shared / name, out / name)
            (out / "metrics.json").write_text(json.dumps({
                "experiment": e.name, "seed": seed, "epochs_run": 3, "best_epoch": 3, "train_seconds": 1.0,
                "accuracy": {"train": 0.99, "validation": validation / 100, "test": test / 100},
                "loss": {"train": 0.1, "validation": 0.2, "test": 0.2},
                "diverged": {"epoch": 2, "last_finite_epoch": 1, "last_finite": None} if diverged else None}))
    return run


# A 1,000-network grid: learning rate over three decades (log axis), optimiser (strings), batch size
# (a linear axis) and L2 with 0 beside decades (evenly spaced). Planted: an optimum in the learning
# rate, sgd a point worse, none from batch size or L2; sgd at the largest rate always diverges.
GRID = """
name = "big-sweep"

[[sweep]]
name = "grid"
hidden = 8
max_epochs = 3
validation_size = 200
baseline = { optimizer = "rmsprop" }

[sweep.vary]
learning_rate = [1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 1e-1]
optimizer = ["sgd", "rmsprop", "adam", "adamw"]
batch_size = [16, 32, 64, 128, 200]
l2 = [0, 1e-5, 1e-4, 1e-3, 1e-2]
"""
GRID_STUDY = parse_study(GRID, "big-sweep.toml")
INDEX = {e.name: i for i, e in enumerate(GRID_STUDY.experiments)}
OPTIMIZER_EFFECT = {"sgd": -1.0, "rmsprop": 0.0, "adam": 0.3, "adamw": 0.3}
# Best on validation only; best on test only: learning_rate 1e-3 with adam, one at each batch size
# and each L2 (so that they leave those fields' marginal means alike).
VALIDATION_FAVOURITES = tuple(GRID_STUDY.experiments[i].name for i in (105, 420, 777))
TEST_FAVOURITES = tuple(GRID_STUDY.experiments[350 + 6 * i].name for i in range(5))


def grid_metrics(e, seed):
    rng = np.random.default_rng([INDEX[e.name], seed])
    s = e.swept
    test = 95 - 0.5 * (math.log10(s["learning_rate"]) + 3) ** 2 + OPTIMIZER_EFFECT[s["optimizer"]]
    test += rng.normal(0, 0.3)
    validation = test + rng.normal(0, 0.3) + (5.0 if e.name in VALIDATION_FAVOURITES else 0.0)
    test += 5.0 if e.name in TEST_FAVOURITES else 0.0
    return validation, test, s["optimizer"] == "sgd" and s["learning_rate"] == 1e-1


@pytest.fixture(scope="module")
def big_run(tmp_path_factory, tiny_data) -> Path:
    assert len(GRID_STUDY.experiments) == 1000
    return write_fake_run(tmp_path_factory.mktemp("big"), tiny_data, GRID_STUDY, [0, 1, 2], grid_metrics)


@pytest.fixture(scope="module")
def big_report(big_run):
    from mnist_study.report.build import build_report

    start = time.perf_counter()
    path = build_report(big_run, tsne_points=150, progress=False, workers=0)
    seconds = time.perf_counter() - start
    print(f"\n1,000-network report: {seconds:.1f} s, {path.stat().st_size / 1e6:.2f} MB")
    return path, seconds


def test_the_sweep_of_a_run_reads_as_planted(big_run):
    (view,) = sweep_views(load_run(big_run))
    assert view.factors == ["learning_rate", "optimizer", "batch_size", "l2"]
    assert (view.n_experiments, view.n_networks, view.n_diverged) == (1000, 3000, 75)
    axes = {f.name: f.axis for f in view.levels}
    assert axes == {"learning_rate": "log", "optimizer": "categorical", "batch_size": "linear", "l2": "categorical"}
    lr = {r.value: r for r in view.levels[0].levels}
    assert max(lr, key=lambda v: lr[v].mean) == 1e-3 and lr[1e-1].diverged == 75
    effects = {(r.factor, r.level): r for r in view.effects}
    assert effects[("optimizer", "sgd")].baseline == "rmsprop"
    assert effects[("optimizer", "sgd")].difference == pytest.approx(-1.0, abs=0.3)
    assert effects[("optimizer", "sgd")].p_holm < 0.05 and effects[("learning_rate", "0.001")].p_holm < 0.05
    for r in view.effects:
        if r.factor in ("batch_size", "l2"):
            assert r.p_holm > 0.05, r
    assert view.best.experiment in VALIDATION_FAVOURITES  # chosen on validation, reported on test
    assert view.best.sentence.startswith(f"{view.best.experiment} has the highest mean validation accuracy")
    assert (view.interactions[0].x, view.interactions[0].lines) == ("learning_rate", "optimizer")
    assert len(view.interactions) == 6


def test_show_tables_and_json_of_a_sweep(big_run):
    run = load_run(big_run)
    summary = sweep_summary(run)
    text = json.dumps(summary, allow_nan=False)  # plain JSON: no NaN, no objects
    assert json.loads(text)["sweeps"][0]["best"]["experiment"] in VALIDATION_FAVOURITES
    console = Console(file=io.StringIO(), width=160, record=True)
    tables = sweep_tables(run)
    assert len(tables) == 3
    for table in tables:
        console.print(table)
    out = console.export_text()
    assert "grid: test accuracy (%) by value, averaged over the other swept fields" in out
    assert re.search(r"optimizer\s+sgd\s+rmsprop\s+-[01]\.\d\d\s+\[-[01]\.\d\d, -[01]\.\d\d\]\s+[\d.e-]+\s+paired", out)
    flat = " ".join(out.split())  # the sentence wraps
    assert "rmsprop *" in out and "75 of 3,000 networks diverged and are left out" in flat
    # the 25 experiments whose every network diverged are not ranked
    assert "has the highest mean validation accuracy of 975 experiments" in flat


def test_a_report_of_1000_networks_stays_small_and_analyses_only_the_best_on_validation(big_report):
    path, _ = big_report
    page = path.read_text()
    assert path.stat().st_size < 20e6
    images = re.findall(r'<img src="data:image/png;base64,', page)
    # data 3; the sweep: 4 fields + 6 pairs; per network analysed (3): 5 figures, a hidden map, patterns
    assert len(images) == 3 + 4 + 6 + 3 * 7
    analysed = re.findall(r'<article id="exp-([\w.-]+)">', page)
    assert sorted(analysed) == sorted(VALIDATION_FAVOURITES)
    assert not set(analysed) & set(TEST_FAVOURITES)
    assert "chosen on validation accuracy, never on the test set" in page
    assert page.index('id="sweep"') < page.index('id="data"') < page.index('id="accuracy"')
    accuracy = page[page.index('<section id="accuracy">'):page.index('<section id="experiments">')]
    assert accuracy.count("<tr><td class=\"left\">") == 1000 and 'class="scroll tall"' in accuracy
    assert "learning_rate · optimizer · batch_size · l2</th>" in accuracy  # the swept fields, named once
    assert '<td class="left">0.001 · adam · 16 · 0</td>' in accuracy
    assert re.search(r'class="bad">75 diverged</span>', page)
    data = page[page.index('<section id="data">'):page.index('<section id="accuracy">')]
    first = [e.name for e in GRID_STUDY.experiments[:3]]
    assert f"{', '.join(first)} and 997 more" in data  # one split, one row


def test_report_timings_of_the_big_sweep(big_report, big_run):
    _, seconds = big_report
    timings = json.loads((big_run / "report_timings.json").read_text())
    assert sorted(timings["experiments"]) == sorted(VALIDATION_FAVOURITES)
    assert 0 < timings["total_seconds"] <= seconds + 1


# ------------------------------------------------------------------------------ factors and labels

def test_zip_groups_are_one_factor_and_values_have_labels():
    sweep = Sweep(name="z", vary={"hidden": [8, 16, 32], "l2": [0.0, 1e-3, 1e-2], "optimizer": ["sgd", "adam"]},
                  zip=[["hidden", "l2"]], baseline={"l2": 1e-3})
    (pair, opt) = factors(sweep)
    assert pair.name == "hidden & l2" and pair.values == [[8, 0.0], [16, 1e-3], [32, 1e-2]]
    assert pair.baseline == [16, 1e-3] and pair.axis == "categorical" and pair.label([16, 1e-3]) == "16 & 0.001"
    assert opt.baseline == "sgd"
    assert value_label([100, 100]) == "100-100" and value_label(True) == "true"
    assert value_label({"kind": "pca", "variance": 0.9}) == "pca(variance=0.9)"
    assert axis_kind([1, 10, 100]) == "log" and axis_kind([16, 32, 64]) == "linear"
    assert axis_kind([0, 1e-4, 1e-2]) == "categorical" and axis_kind([0, 0.1, 0.2]) == "linear"
    assert axis_kind(["a", "b"]) == "categorical" and axis_kind([[8], [8, 8]]) == "categorical"


ZIPPED = """
name = "zipped"

[[sweep]]
name = "z"
max_epochs = 3
validation_size = 200
zip = [["hidden", "l2"]]

[sweep.vary]
hidden = [8, 16]
l2 = [0.0, 1e-3]
optimizer = ["sgd", "adam"]
"""


def test_a_zip_sweep_reads_through_its_group(tmp_path, tiny_data):
    study = parse_study(ZIPPED, "zipped.toml")
    run = write_fake_run(tmp_path, tiny_data, study, [0, 1],
                         lambda e, seed: (90.0 + seed, 90.0 + e.swept["hidden"] / 8 + seed, False))
    (view,) = sweep_views(load_run(run))
    assert view.factors == ["hidden & l2", "optimizer"]
    assert [(r.label, r.mean) for r in view.levels[0].levels] == [("8 & 0", 91.5), ("16 & 0.001", 92.5)]
    first, _ = view.effects
    assert (first.factor, first.level, first.baseline, first.difference) == ("hidden & l2", "16 & 0.001", "8 & 0", 1.0)


# ------------------------------------------------------------------------ networks of any depth

class _Result:
    def __init__(self, model):
        self._model, self.seed = model, 0

    def model(self):
        return self._model


class _NoHiddenLayer:
    hidden_width = 0


def test_analyses_skip_a_network_without_a_hidden_layer_and_label_the_first_of_several():
    from mnist_study.training.model import MLP, init_params

    inputs = sections.ExperimentInputs(np.random.default_rng(0).random((40, 784), dtype=np.float32),
                                       np.arange(40) % 10, None, None, frontend=_Raw())
    base = {"name": "x", "max_epochs": 3}
    none = Study.model_validate({"name": "s", "experiment": [dict(base, layers=[])]}).experiments[0]
    assert sections.hidden_section(none, _Result(_NoHiddenLayer()), inputs, 20, 1) is None
    assert sections.patterns_section(none, _Result(_NoHiddenLayer()), inputs) is None
    assert sections.network_text(none) == "no hidden layer (softmax regression)"
    deep = Study.model_validate({"name": "s", "experiment": [dict(base, layers=[8, 8])]}).experiments[0]
    first_layer = _Result(MLP(init_params(784, 8, seed=0)))  # stands for the first of the two layers
    shown = sections.hidden_section(deep, first_layer, inputs, 20, 1)
    assert "8 hidden activations (first of 2 hidden layers) of 20 training images" in shown["what"]
    assert sections.network_text(deep) == "hidden layers 8-8"


class _Raw:
    def transform(self, x):
        return np.asarray(x, np.float32)

    def torch_op(self):
        return lambda x: x


def test_the_networks_analysed_are_those_named_else_all_of_a_small_study_else_the_best_on_validation(big_run):
    from dataclasses import replace

    from mnist_study.report.build import choose_analysed

    run = load_run(big_run)
    done = [e.name for e in run.experiments]
    names, how = choose_analysed(run, done)
    assert sorted(names) == sorted(VALIDATION_FAVOURITES) and "never on the test set" in how
    means = [np.mean([r.accuracy("validation") for r in run.results(n)]) for n in names]
    assert means == sorted(means, reverse=True)  # best first
    named = replace(run, study=run.study.model_copy(update={"analyse": [done[300], done[999]]}))
    assert choose_analysed(named, done)[0] == [done[300], done[999]]
    few = run.study.model_copy(update={"sweep": [], "experiment": run.study.experiment[:5]})
    assert choose_analysed(replace(run, study=few), done[:5]) == (done[:5], "")


def test_show_views_do_not_load_matplotlib():
    import subprocess
    import sys

    code = "import sys, mnist_study.report.sweep; print('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
