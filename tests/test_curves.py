"""Curves a study declares: the [[curve]] table and its errors, the statistics on synthetic
records whose answers are known, the parameter count, and a tiny trained run read by `show` and the
report."""

from __future__ import annotations

import io
import json
import math
import re

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from mnist_study.cli import app
from mnist_study.errors import StudyError
from mnist_study.stats.curves import Record, fit_power_law, lines
from mnist_study.studies import parse_study
from mnist_study.training.network import attach_standardization, count_parameters, init_network

BASE = """
name = "c"

[[sweep]]
name = "widths"
max_epochs = 3
validation_size = 200
[sweep.vary]
hidden = [4, 16]
label_noise = [0.0, 0.2]
"""


def curve(text: str):
    return parse_study(BASE + "\n[[curve]]\n" + text, "c.toml")


# ------------------------------------------------------------------------------------- the table

def test_a_curve_is_read_with_its_defaults():
    study = curve('name = "dd"\nx = "parameters"\ny = ["test_error", "train_loss"]\nby = "label_noise"\n'
                  'sweep = "widths"\nmarks = [{ x = 40000, label = "n·K" }, { x = 100 }]')
    (c,) = study.curve
    assert (c.x, c.y, c.by, c.sweep, c.log_x, c.log_y, c.fit) == (
        "parameters", ["test_error", "train_loss"], "label_noise", "widths", None, False, None)
    assert [(m.x, m.label) for m in c.marks] == [(40000.0, "n·K"), (100.0, "")]
    assert curve('name = "one"\nx = "hidden"\ny = "test_error"\nfit = "power_law"').curve[0].y == ["test_error"]


@pytest.mark.parametrize("text, expected", [
    ('name = "a"\nx = "hidden"\ny = ["test_eror"]', "Input should be 'train_error'"),
    ('name = "a"\nx = "hiden"\ny = ["test_error"]', "x = 'hiden' is not a number an experiment has (did you mean 'hidden'?)"),
    ('name = "a"\nx = "optimizer"\ny = ["test_error"]', "use 'parameters' or a numeric experiment field: validation_size"),
    ('name = "a"\nx = "hidden"\ny = ["test_error"]\nby = "noise"', "by = 'noise' is not an experiment field"),
    ('name = "a"\nx = "hidden"\ny = ["test_error"]\nby = "hidden"', "by = 'hidden' is x too"),
    ('name = "a"\nx = "hidden"\ny = ["test_error"]\nsweep = "widht"', "'widht' names no [[sweep]] of this study (it has: widths)"),
    ('name = "a"\nx = "hidden"\ny = ["test_error", "test_loss"]\nfit = "power_law"',
     "fit = 'power_law' fits one metric, and y lists 2 (test_error, test_loss); give one y"),
    ('name = "a"\nx = "hidden"\ny = ["test_error"]\n[[curve]]\nname = "a"\nx = "hidden"\ny = ["test_loss"]',
     "curve names must be unique; repeated: a"),
    ('name = "a"\nx = "hidden"\ny = []', "at least 1 item"),
    ('name = "a b"\nx = "hidden"\ny = ["test_error"]', "should match pattern"),
    ('name = "a"\nx = "hidden"\ny = ["test_error"]\nlogx = true', "unknown key; did you mean 'log_x'?"),
    ('name = "a"\nx = "hidden"\ny = ["test_error"]\nmarks = [{ x = 1, lable = "t" }]', "did you mean 'label'?"),
])
def test_a_wrong_curve_is_refused_naming_the_problem(text, expected):
    with pytest.raises(StudyError) as error:
        curve(text)
    assert expected in str(error.value)
    assert "c.toml" in str(error.value)


def test_curves_are_inherited_and_go_with_a_sweep_that_only_drops(tmp_path):
    (tmp_path / "base.toml").write_text(BASE + """
[[experiment]]
name = "solo"
hidden = 8
max_epochs = 3

[[curve]]
name = "of-sweep"
x = "parameters"
y = ["test_error"]
sweep = "widths"

[[curve]]
name = "of-all"
x = "hidden"
y = ["test_error"]
""")
    derived = parse_study('name = "d"\nextends = "base.toml"\n', "d.toml", tmp_path)
    assert [c.name for c in derived.curve] == ["of-sweep", "of-all"]
    solo = parse_study('name = "d"\nextends = "base.toml"\nonly = ["solo"]\n', "d.toml", tmp_path)
    assert [c.name for c in solo.curve] == ["of-all"]  # its sweep has no experiment left
    own = parse_study('name = "d"\nextends = "base.toml"\n[[curve]]\nname = "mine"\nx = "hidden"\ny = "test_loss"\n',
                      "d.toml", tmp_path)
    assert [c.name for c in own.curve] == ["mine"]  # a top-level list replaces the base's, as claims do


def test_the_schema_describes_curves():
    from mnist_study.study import Curve, Mark

    text = CliRunner().invoke(app, ["studies", "--schema"]).stdout
    assert "[[curve]]" in text and 'fit = "power_law"' in text
    for model in (Curve, Mark):
        for key, field in model.model_fields.items():
            assert f"  {key}: " in text and field.description, key


# ------------------------------------------------------------------------------------- statistics

XS = [100, 300, 1_000, 3_000, 10_000, 30_000]


def power_law(seeds: int, alpha: float, rng, noise: float = 0.03, luck: float = 0.1, line=None,
              c: float = 200.0) -> list[Record]:
    """Networks whose y is c * x^-alpha, times a seed's own factor (`luck`: a seed lucky at one x
    tends to be lucky at all) and a factor of each network's own (`noise`), both log-normal."""
    out = []
    for s in range(seeds):
        factor = np.exp(rng.normal(0, luck))
        out += [Record(line, x, s, c * x ** -alpha * factor * np.exp(rng.normal(0, noise))) for x in XS]
    return out


def test_a_known_power_law_is_recovered_within_its_interval():
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(20):
        (line,) = lines(power_law(8, 0.42, rng))
        fit = fit_power_law(line, n_resamples=500)
        assert fit.n_points == 6 and fit.n_seeds == 8 and fit.n_left_out == 0
        assert fit.alpha == pytest.approx(0.42, abs=0.05) and fit.ci_low < fit.alpha < fit.ci_high
        hits += fit.ci_low <= 0.42 <= fit.ci_high
    assert hits >= 15  # a percentile bootstrap over 8 seeds covers a little under 95%
    assert fit.predict(1_000) == pytest.approx(line.points[2].summary.mean, rel=0.1)
    assert re.fullmatch(r"α = 0\.\d\d \[0\.\d\d, 0\.\d\d\]", fit.describe())


def test_the_interval_shrinks_with_more_seeds_and_is_the_same_each_time():
    rng = np.random.default_rng(1)
    widths = {}
    for seeds in (4, 32):
        found = []
        for _ in range(10):
            (line,) = lines(power_law(seeds, 0.3, rng, noise=0.3))
            fit = fit_power_law(line, n_resamples=500)
            found.append(fit.ci_high - fit.ci_low)
        widths[seeds] = np.mean(found)
        again = fit_power_law(line, n_resamples=500)
        assert (again.ci_low, again.ci_high) == (fit.ci_low, fit.ci_high)  # a fixed RNG seed
    assert widths[32] < widths[4] / 1.5


def test_a_flat_curve_has_alpha_near_zero():
    (line,) = lines(power_law(5, 0.0, np.random.default_rng(2)))
    fit = fit_power_law(line)
    assert abs(fit.alpha) < 0.02 and fit.ci_low <= 0 + 0.02 and fit.ci_high >= -0.02
    assert fit.c == pytest.approx(200, rel=0.15)


def test_points_without_a_logarithm_are_left_out_and_counted():
    rng = np.random.default_rng(3)
    recs = power_law(4, 0.5, rng) + [Record(None, 100_000, s, 0.0) for s in range(4)]  # error 0: no log
    recs += [Record(None, 0, s, 5.0) for s in range(4)]                              # x = 0: no log
    (line,) = lines(recs)
    fit = fit_power_law(line)
    assert fit.n_points == 6 and fit.n_left_out == 2 and fit.alpha == pytest.approx(0.5, abs=0.06)
    assert "2 points with a mean or x of 0 or less left out (no logarithm)" in fit.reason
    (few,) = lines([Record(None, 10, 0, 0.0), Record(None, 100, 0, 3.0)])
    nothing = fit_power_law(few)
    assert math.isnan(nothing.alpha) and not nothing.fitted
    assert nothing.describe().startswith("no fit: needs at least 2 x values with a positive mean, has 1")
    (one_seed,) = lines(power_law(1, 0.5, rng))
    assert fit_power_law(one_seed).describe().endswith("(one seed, so no interval)")


def test_points_average_a_seed_first_and_leave_diverged_networks_out():
    recs = [Record("a", 10, 0, 10.0), Record("a", 10, 0, 20.0), Record("a", 10, 1, 17.0),
            Record("a", 10, 1, 99.0, diverged=True), Record("a", 10, 2, float("nan")),
            Record("b", 20, 0, 5.0)]
    a, b = lines(recs)
    assert [p.x for p in a.points] == [10.0, 20.0]  # every line has every x of the curve
    point = a.points[0]
    assert point.per_seed == {0: 15.0, 1: 17.0} and point.summary.mean == 16.0 and point.summary.n == 2
    assert point.n_networks == 3 and point.n_diverged == 2 and a.n_diverged == 2
    assert a.points[1].summary.n == 0 and b.points[1].summary.mean == 5.0
    assert [line.level for line in lines(recs, ["b", "a", "c"])] == ["b", "a", "c"]


# ------------------------------------------------------------------------------- parameter count

def test_the_parameters_are_the_trained_weights_and_biases():
    shapes = {k: tuple(v.shape) for k, v in init_network(784, (130,), seed=0).items()}
    assert count_parameters(shapes) == 784 * 130 + 130 + 130 * 10 + 10 == 103_360
    standardised = attach_standardization(init_network(784, (130,), seed=0), np.zeros(784), np.ones(784))
    assert count_parameters({k: tuple(v.shape) for k, v in standardised.items()}) == 103_360
    assert count_parameters({k: tuple(v.shape) for k, v in init_network(30, (), seed=0).items()}) == 310
    deep = init_network(50, (20, 5), seed=0)
    assert count_parameters({k: tuple(v.shape) for k, v in deep.items()}) == 50 * 20 + 20 + 20 * 5 + 5 + 5 * 10 + 10


# ------------------------------------------------------------------------------------ a tiny run

TINY_CURVES = BASE.replace('name = "c"', 'name = "tiny-curves"') + """
[[experiment]]
name = "pca8"
hidden = 8
frontend = { kind = "pca", variance = 0.9 }
max_epochs = 3
validation_size = 200

[[curve]]
name = "by-parameters"
x = "parameters"
y = ["test_error", "train_loss"]
by = "label_noise"
sweep = "widths"
marks = [{ x = 1000, label = "n·K" }]

[[curve]]
name = "width-law"
title = "Test error against width"
x = "hidden"
y = "test_error"
fit = "power_law"
"""


@pytest.fixture(scope="module")
def curve_run(tmp_path_factory, tiny_data):
    from mnist_study.runner import run_study

    study = parse_study(TINY_CURVES, "tiny-curves.toml")
    return run_study(study, seeds=[0, 1], device="cpu", data_dir=tiny_data, out=tmp_path_factory.mktemp("c") / "run",
                     workers=0, progress=False)


def test_a_run_counts_each_networks_parameters(curve_run):
    from mnist_study.results import load_run

    run = load_run(curve_run)
    for e in run.experiments:
        (first, *_) = run.results(e.name)
        n_inputs = run.frontend(e.name).transform(np.zeros((1, 784), np.float32)).shape[1]
        assert first.n_parameters == n_inputs * e.hidden + e.hidden + e.hidden * 10 + 10
    assert run.results("pca8")[0].n_parameters < 784 * 8  # PCA's kept components are the inputs


def test_show_prints_each_curve_and_its_json_has_them(curve_run):
    from mnist_study.report.curves import curve_tables, curve_views
    from mnist_study.results import load_run

    result = CliRunner().invoke(app, ["show", str(curve_run), "--format", "json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output, parse_constant=lambda c: pytest.fail(f"{c} in show's JSON"))
    by_name = {c["name"]: c for c in shown["curves"]}
    dd, law = by_name["by-parameters"], by_name["width-law"]
    assert dd["x_values"] == [4 * 795 + 10, 16 * 795 + 10]  # 784 -> h -> 10, weights and biases
    assert [p["metric"] for p in dd["panels"]] == ["test_error", "train_loss"]
    assert [line["label"] for line in dd["panels"][0]["lines"]] == ["0", "0.2"]
    assert dd["n_networks"] == 8 and dd["log_x"] is False and dd["marks"] == [{"x": 1000.0, "label": "n·K"}]
    point = dd["panels"][0]["lines"][0]["points"][0]
    assert point["n_seeds"] == 2 and 0 <= point["mean"] <= 100 and point["ci"][0] <= point["mean"] <= point["ci"][1]
    # every experiment of the study, the PCA one at hidden = 8 too; one line; alpha fitted
    assert law["x_values"] == [4.0, 8.0, 16.0] and law["n_networks"] == 10
    (line,) = law["panels"][0]["lines"]
    assert line["points"][0]["n_networks"] == 4  # both noise levels at hidden = 4, averaged per seed
    assert line["fit"]["text"].startswith("α = ") or line["fit"]["text"].startswith("no fit")
    console = Console(file=io.StringIO(), width=200, record=True)
    for table in curve_tables(load_run(curve_run), curve_views(load_run(curve_run))):
        console.print(table)
    text = console.export_text()
    assert "by-parameters: test error (%), train loss against trained parameters" in text
    assert re.search(r"test error \(%\)\s+test error \(%\)\s+train loss\s+train loss\s*\n\s*trained parameters\s+"
                     r"label_noise = 0\s+"
                     r"label_noise = 0.2\s+label_noise = 0\s+label_noise = 0.2", text) and "3,190" in text
    assert re.search(r"\d+\.\d\d ± \d+\.\d\d", text)
    assert "width-law: Test error against width" in text and "α" in text and "marks: n·K at 1,000" in text
    plain = CliRunner().invoke(app, ["show", str(curve_run)])
    assert plain.exit_code == 0 and "width-law" in plain.output


def test_the_report_draws_each_curve(curve_run):
    from mnist_study.report.build import build_report

    page = build_report(curve_run, tsne_points=50, progress=False, workers=0, analyse=["pca8"]).read_text()
    section = page[page.index('<section id="curves">'):page.index('<section id="sweep">')]
    for name in ("by-parameters", "width-law"):
        article = section[section.index(f'<article id="curve-{name}">'):]
        article = article[:article.index("</article>")]
        assert '<img src="data:image/png;base64,' in article and "<table" in article
    assert 'href="#curves"' in page and "dotted: n·K at 1,000" in section
    assert "α = " in section or "no fit" in section


def test_show_views_of_curves_do_not_load_matplotlib():
    import subprocess
    import sys

    code = "import sys, mnist_study.report.curves; print('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
