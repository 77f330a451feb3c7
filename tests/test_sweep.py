"""[[sweep]] tables: the grid they expand to, the names they give, every mistake named, and claims
that select experiments by their swept values."""

import re

import pytest

from mnist_study.errors import StudyError
from mnist_study.stats.claims import Claim, evaluate_claims, parse_check
from mnist_study.studies import load_study, parse_study, study_to_dict
from mnist_study.studies import sweep as sweep_module
from mnist_study.studies.schema import schema_text
from mnist_study.study import LARGE_SWEEP, Experiment, Study

BRIEF = """
name = "s"

[[sweep]]
name = "width-optimiser"
max_epochs = 20
train_size = 10000
zip = [["optimizer", "learning_rate"]]
baseline = { optimizer = "rmsprop" }
[sweep.vary]
hidden = [10, 30, 130]
optimizer = ["rmsprop", "adam", "sgd"]
learning_rate = [0.001, 0.001, 0.01]
"""


def sweep_study(vary: str, extra: str = "", head: str = 'name = "s"\n') -> str:
    """A study with one [[sweep]]: `extra` keys of the sweep, then its [sweep.vary] lines."""
    return f"{head}\n[[sweep]]\n{extra}\n[sweep.vary]\n{vary}\n"


def names(study) -> list[str]:
    return [e.name for e in study.experiments]


def mistake(text: str, source: str = "s.toml") -> str:
    with pytest.raises(StudyError) as info:
        parse_study(text, source)
    message = str(info.value)
    assert message.startswith(source)
    return message


# --- the grid --------------------------------------------------------------------------------------

def test_the_product_first_field_outermost_zip_groups_moving_together():
    study = parse_study(BRIEF)
    assert names(study) == ["w10-rmsprop-lr0.001", "w10-adam-lr0.001", "w10-sgd-lr0.01",
                            "w30-rmsprop-lr0.001", "w30-adam-lr0.001", "w30-sgd-lr0.01",
                            "w130-rmsprop-lr0.001", "w130-adam-lr0.001", "w130-sgd-lr0.01"]
    for e in study.experiments:
        assert (e.max_epochs, e.train_size, e.sweep) == (20, 10000, "width-optimiser")
        assert e.swept == {"hidden": e.hidden, "optimizer": e.optimizer, "learning_rate": e.learning_rate}
        assert e.learning_rate == (0.01 if e.optimizer == "sgd" else 0.001)
    [kept] = study.sweep
    assert (kept.name, kept.zip, kept.baseline) == ("width-optimiser", [["optimizer", "learning_rate"]],
                                                    {"optimizer": "rmsprop"})
    assert kept.fixed == {"max_epochs": 20, "train_size": 10000}
    assert kept.vary["hidden"] == [10, 30, 130]


def test_a_product_without_zip_and_beside_written_experiments():
    text = ('name = "s"\n[[experiment]]\nname = "base"\nhidden = 5\n'
            + sweep_study("hidden = [1, 2]\nl2 = [0, 0.001, 0.01]\n", head="")) 
    study = parse_study(text)
    assert names(study) == ["base", "w1-l20", "w1-l20.001", "w1-l20.01", "w2-l20", "w2-l20.001", "w2-l20.01"]
    assert study.get("base").sweep is None and study.get("base").swept == {}
    assert [(e.hidden, e.l2) for e in study.experiments[1:]] == [(h, l2) for h in (1, 2) for l2 in (0, 0.001, 0.01)]


def test_layers_are_swept_as_lists_of_lists():
    study = parse_study(sweep_study("layers = [[100], [50, 50], []]\n"))
    assert names(study) == ["l100", "l50x50", "l0"]
    assert [e.widths for e in study.experiments] == [(100,), (50, 50), ()]


@pytest.mark.parametrize("vary, expected", [
    ("learning_rate = [0.001, 1e-05, 0.0003, 1.0]", ["lr0.001", "lr1e-05", "lr0.0003", "lr1"]),
    ("train_size = [10000, 500]", ["n10000", "n500"]),
    ("batch_size = [64]\nlabel_noise = [0.2]\ndropout = [0.5]\nmax_epochs = [20]\ndata_seed = [3]\nshift = [2]",
     ["bs64-noise0.2-drop0.5-ep20-ds3-shift2"]),
    ("warmup_epochs = [1]\nlabel_smoothing = [0.1]", ["warm1-ls0.1"]),
    ('optimizer = ["sgd"]\nmomentum = [0.9]', ["sgd-m0.9"]),
    ('optimizer = ["adamw"]\nweight_decay = [0.01]', ["adamw-wd0.01"]),
    ('activation = ["tanh", "relu"]\nloss = ["squared_error"]\nschedule = ["cosine"]',
     ["tanh-squared_error-cosine", "relu-squared_error-cosine"]),
    ('dataset = ["mnist", "/data/sets/kmnist", "fashion-mnist"]', ["mnist", "kmnist", "fashion-mnist"]),
    ("early_stopping = [true, false]", ["early_stopping", "no-early_stopping"]),
    ("patience = [2, 5]", ["patience2", "patience5"]),
    ('frontend = [{ kind = "raw" }, { kind = "pca", variance = 0.95 }, { kind = "pca", variance = 0.9 }]',
     ["raw", "pca-variance0.95", "pca-variance0.9"]),
    ('dataset = ["my data/set one"]', ["set_one"]),
])
def test_generated_names_are_short_and_readable(vary, expected):
    assert names(parse_study(sweep_study("hidden = [8]\n" * ("hidden" not in vary) + vary)))[:len(expected)] == \
        [f"w8-{n}" for n in expected]


def test_several_sweeps_prefix_their_names_with_their_own():
    text = sweep_study("hidden = [1, 2]", 'name = "wide"') + sweep_study("layers = [[4, 4]]", 'name = "deep"', head="")
    study = parse_study(text)
    assert names(study) == ["wide-w1", "wide-w2", "deep-l4x4"]
    assert [s.name for s in study.sweep] == ["wide", "deep"]


def test_a_names_template_uses_swept_and_fixed_fields():
    text = sweep_study('hidden = [10, 130]\noptimizer = ["adam", "sgd"]\nlearning_rate = [0.001, 0.01]',
                       'max_epochs = 7\nzip = [["optimizer", "learning_rate"]]\n'
                       'names = "{sweep}/w{hidden}-{optimizer}-{learning_rate:.0e}-ep{max_epochs}"')
    assert names(parse_study(text)) == ["sweep_w10-adam-1e-03-ep7", "sweep_w10-sgd-1e-02-ep7",
                                        "sweep_w130-adam-1e-03-ep7", "sweep_w130-sgd-1e-02-ep7"]
    layers = sweep_study("layers = [[100, 100], [30]]", 'names = "net-{layers}"')
    assert names(parse_study(layers)) == ["net-100x100", "net-30"]


# --- names that collide ----------------------------------------------------------------------------

def test_a_template_that_leaves_a_field_out_names_both_experiments():
    message = mistake(sweep_study('hidden = [10, 30]\noptimizer = ["adam", "sgd"]', 'name = "g"\nnames = "w{hidden}"'))
    assert "sweep 'g' names its experiment {hidden = 10, optimizer = \"sgd\"} 'w10'" in message
    assert 'and its experiment {hidden = 10, optimizer = "adam"} too' in message
    assert "leaves out optimizer" in message


def test_a_generated_name_taken_by_a_written_experiment_is_an_error():
    text = 'name = "s"\n[[experiment]]\nname = "w10"\nhidden = 3\n' + sweep_study("hidden = [10]", head="")
    assert "the name of an [[experiment]] of the study" in mistake(text)


def test_two_unnamed_sweeps_are_told_to_name_themselves():
    text = sweep_study("hidden = [1]") + sweep_study("hidden = [2]", head="")
    assert "sweep #2 > name: 'sweep' is already the name of another sweep; give each [[sweep]] its own `name`" \
        in mistake(text)


# --- every mistake, named --------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    (sweep_study("hiden = [1, 2]", 'name = "g"'), "sweep 'g' > vary > hiden: unknown key; did you mean 'hidden'?"),
    (sweep_study("hidden = []", 'name = "g"'), "sweep 'g' > vary > hidden: has no values"),
    (sweep_study("hidden = 10", 'name = "g"'), "sweep 'g' > vary > hidden: must be a list of the values it takes, "
                                               "e.g. hidden = [10]"),
    (sweep_study("name = ['a']"), "sweep #1 > vary > name: a sweep names its experiments itself"),
    (sweep_study("hidden = [1]", "swept = {}"), "sweep #1 > swept: swept is set by the sweep"),
    (sweep_study("hidden = [1]", "max_epoch = 3"), "sweep #1 > max_epoch: unknown key; did you mean 'max_epochs'?"),
    (sweep_study("hidden = [1]", "hidden = 3"), "sweep #1 > hidden: is both fixed (hidden = 3) and in [sweep.vary]"),
    (sweep_study("hidden = [1, 2]\nl2 = [0.1]", 'zip = [["hiden", "l2"]]'),
     "sweep #1 > zip: 'hiden' is not a field in [sweep.vary]; did you mean 'hidden'?"),
    (sweep_study("hidden = [1, 2]\nl2 = [0.1]", 'zip = [["hidden", "l2"]]'),
     "sweep #1 > zip: the group ['hidden', 'l2'] moves together, so its fields need as many values each; "
     "they have hidden: 2, l2: 1"),
    (sweep_study("hidden = [1, 2]\nl2 = [0.1, 0.2]", 'zip = [["hidden", "l2"], ["l2"]]'),
     "'l2' is in more than one group"),
    (sweep_study("hidden = [1, 2]", 'zip = "hidden"'), "sweep #1 > zip: must be a list of lists of field names"),
    (sweep_study("hidden = [1, 2]", "baseline = { hiden = 1 }"),
     "sweep #1 > baseline > hiden: is not a swept field; did you mean 'hidden'?"),
    (sweep_study("hidden = [1, 2]", "baseline = { hidden = 3 }"),
     "sweep #1 > baseline > hidden: 3 is not one of its values: 1, 2"),
    (sweep_study("hidden = [1, 2, 1]"), "sweep #1 > vary > hidden: 1 is listed twice"),
    (sweep_study("hidden = [1]", "names = 5"), "sweep #1 > names: must be a template string"),
    (sweep_study("hidden = [1]", 'names = "w{hiden}"'),
     "sweep #1 > names: {hiden} is not a field this sweep sets; did you mean 'hidden'?; it sets: hidden, sweep"),
    (sweep_study("hidden = [1]", 'names = "w{}"'), "sweep #1 > names: name each placeholder"),
    (sweep_study("hidden = [1]", 'names = "w{hidden"'), "sweep #1 > names: 'w{hidden' is not a template"),
    ('name = "s"\n[[sweep]]\nname = "g"\nhidden = 3\n', "sweep 'g': needs a [sweep.vary] table"),
    ('name = "s"\nsweep = 3\n', "s.toml: sweep must be a list of tables ([[sweep]])"),
    ('name = "s"\nsweep = [3]\n', "sweep #1: must be a table ([[sweep]])"),
    ('name = "s"\n[[experiment]]\nname = "a"\nhidden = 1\nswept = { hidden = 1 }\n',
     "experiment 'a' > swept: is set by a [[sweep]] for the experiments it makes"),
    ('name = "s"\n[[experiment]]\nname = "a"\nhidden = 1\n[[claim]]\nname = "c"\ntext = "t"\nchecks = ["a.test > 1"]\n'
     'written_checks = ["a.test > 1"]\n', "claim 'c' > written_checks: is set when a study is read"),
])
def test_sweep_mistakes_name_the_file_the_sweep_and_the_key(text, expected):
    assert expected in mistake(text)


def test_a_wrong_fixed_value_is_named_once_at_the_sweep_not_per_experiment():
    message = mistake(sweep_study("hidden = [1, 2, 3]", 'name = "g"\nl2 = -1'))
    assert message == "s.toml is not a valid study: sweep 'g' > l2: Input should be greater than or equal to 0"
    swept = mistake(sweep_study("hidden = [1, 0]", 'name = "g"'))
    assert "experiment 'w0' (sweep 'g') > hidden: Input should be greater than or equal to 1" in swept


# --- sizes, checked before anything is built --------------------------------------------------------

def _grid(size_log10: int, large: bool = False) -> str:
    fields = ("hidden", "batch_size", "max_epochs", "patience", "data_seed", "step_every", "shift")[:size_log10]
    vary = "\n".join(f"{field} = {list(range(1, 11))}" for field in fields)
    vary = vary.replace("shift = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]", "shift = [0, 1, 2, 3, 4, 5, 6, 7]")
    return sweep_study(vary, head='name = "s"\n' + ("large_sweep = true\n" if large else ""))


def test_a_sweep_over_large_sweep_is_refused_before_one_experiment_is_built(monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("experiments were built")

    monkeypatch.setattr(sweep_module._Plan, "experiments", never)
    message = mistake(_grid(6))
    assert f"1,000,000 experiments in all (sweep #1: 10 x 10 x 10 x 10 x 10 x 10), more than {LARGE_SWEEP:,}" in message
    assert "add `large_sweep = true` to the study" in message
    capped = mistake(_grid(7, large=True))
    assert "8,000,000 experiments in all" in capped and "a study may have at most 1,000,000" in capped


def test_large_sweep_true_lets_a_grid_over_the_threshold_through(monkeypatch):
    monkeypatch.setattr(sweep_module, "LARGE_SWEEP", 50)
    monkeypatch.setattr("mnist_study.study.LARGE_SWEEP", 50)
    assert "add `large_sweep = true`" in mistake(_grid(2))
    assert len(parse_study(_grid(2, large=True)).experiments) == 100


# --- studies that extend studies with sweeps --------------------------------------------------------

BASE = BRIEF + """
[[claim]]
name = "adam-wins"
text = "adam beats rmsprop at every width"
checks = ["{optimizer=adam}.test > {optimizer=rmsprop}.test"]

[[claim]]
name = "w10-sgd"
text = "sgd learns something at width 10"
checks = ["w10-sgd-lr0.01.test > 50"]
"""


def test_every_experiment_sets_inherited_swept_experiments_but_not_their_swept_fields(tmp_path):
    (tmp_path / "base.toml").write_text(BASE)
    (tmp_path / "quick.toml").write_text('name = "quick"\nextends = "base.toml"\n[every_experiment]\n'
                                         "max_epochs = 4\nhidden = 999\ntrain_size = 500\n")
    quick = load_study(tmp_path / "quick.toml")
    assert names(quick) == names(parse_study(BASE))
    assert {(e.max_epochs, e.train_size) for e in quick.experiments} == {(4, 500)}
    assert [e.hidden for e in quick.experiments] == [10] * 3 + [30] * 3 + [130] * 3  # swept values stay
    assert quick.sweep[0].fixed == {"max_epochs": 4, "train_size": 500}


def test_only_keeps_swept_experiments_and_the_claims_that_still_expand(tmp_path):
    (tmp_path / "base.toml").write_text(BASE)
    (tmp_path / "child.toml").write_text("""
name = "child"
extends = "base.toml"
only = ["w10-adam-lr0.001", "w10-rmsprop-lr0.001", "w30-adam-lr0.001"]

[[experiment]]
name = "w10-adam-lr0.001"
patience = 5

[[sweep]]
name = "depth"
[sweep.vary]
layers = [[20, 20], [20, 20, 20]]
""")
    child = load_study(tmp_path / "child.toml")
    assert names(child) == ["w10-rmsprop-lr0.001", "w10-adam-lr0.001", "w30-adam-lr0.001",  # the base's order
                            "depth-l20x20", "depth-l20x20x20"]  # two sweeps now: the new one is prefixed
    assert child.get("w10-adam-lr0.001").patience == 5
    assert [s.name for s in child.sweep] == ["width-optimiser", "depth"]
    [claim] = child.claim  # w10-sgd-lr0.01 was dropped, so its claim is; the selector claim is re-expanded
    assert claim.checks == ["w10-adam-lr0.001.test > w10-rmsprop-lr0.001.test"]
    assert claim.written_checks == ["{optimizer=adam}.test > {optimizer=rmsprop}.test"]


def test_a_derived_study_cannot_reuse_a_base_sweep_name_or_change_a_swept_value(tmp_path):
    (tmp_path / "base.toml").write_text(BRIEF)
    (tmp_path / "a.toml").write_text('name = "a"\nextends = "base.toml"\n[[sweep]]\nname = "width-optimiser"\n'
                                     "[sweep.vary]\nhidden = [1]\n")
    with pytest.raises(StudyError, match="'width-optimiser' is already the name of a base study's sweep"):
        load_study(tmp_path / "a.toml")
    (tmp_path / "b.toml").write_text('name = "b"\nextends = "base.toml"\n[[experiment]]\nname = "w10-adam-lr0.001"\n'
                                     "hidden = 11\n")
    with pytest.raises(StudyError, match=re.escape("experiment 'w10-adam-lr0.001' > hidden: is a value of sweep "
                                                   "'width-optimiser'")):
        load_study(tmp_path / "b.toml")


def test_a_base_sweep_that_only_drops_entirely_is_dropped(tmp_path):
    (tmp_path / "base.toml").write_text('name = "b"\n[[experiment]]\nname = "a"\nhidden = 1\n'
                                        + sweep_study("hidden = [2, 3]", head=""))
    (tmp_path / "c.toml").write_text('name = "c"\nextends = "base.toml"\nonly = ["a"]\n')
    study = load_study(tmp_path / "c.toml")
    assert names(study) == ["a"] and study.sweep == []


# --- claims over swept fields ------------------------------------------------------------------------

def claim_study(*checks: str, base: str = BRIEF) -> Study:
    quoted = ", ".join(f'"{c}"' for c in checks)
    return parse_study(base + f'\n[[claim]]\nname = "c"\ntext = "t"\nchecks = [{quoted}]\n', "s.toml")


def test_a_selector_pair_expands_at_every_other_setting_zip_partners_moving_along():
    [claim] = claim_study("{optimizer=sgd}.test < {optimizer=adam}.test by more than 1 points").claim
    assert claim.checks == [f"w{w}-sgd-lr0.01.test < w{w}-adam-lr0.001.test by more than 1 points"
                            for w in (10, 30, 130)]
    assert claim.written_checks == ["{optimizer=sgd}.test < {optimizer=adam}.test by more than 1 points"]
    assert claim.parsed_checks[0].experiments == {"w10-sgd-lr0.01", "w10-adam-lr0.001"}


def test_selector_values_may_be_written_as_toml_or_as_names_write_them():
    for selector in ("{hidden=130}", "{hidden=w130}", "{hidden = 130, optimizer = \\\"adam\\\"}",
                     "{optimizer=adam, hidden=130}"):
        [claim] = claim_study(f"{selector}.train >= 95").claim
        expected = (["w130-adam-lr0.001.train >= 95"] if "adam" in selector
                    else [f"w130-{o}.train >= 95" for o in ("rmsprop-lr0.001", "adam-lr0.001", "sgd-lr0.01")])
        assert claim.checks == expected, selector
    layers = sweep_study("layers = [[100, 100], [30]]\nl2 = [0, 0.01]")
    [claim] = claim_study("{layers=100x100}.test > {layers=[30]}.test", base=layers).claim
    assert claim.checks == ["l100x100-l20.test > l30-l20.test", "l100x100-l20.01.test > l30-l20.01.test"]


def test_a_selector_against_a_named_experiment_and_one_experiment_against_itself():
    [claim] = claim_study("{hidden=130}.test > w10-rmsprop-lr0.001.test",
                          "{optimizer=adam}.train > {optimizer=adam}.test").claim
    assert claim.checks == ["w130-rmsprop-lr0.001.test > w10-rmsprop-lr0.001.test",
                            "w130-adam-lr0.001.test > w10-rmsprop-lr0.001.test",
                            "w130-sgd-lr0.01.test > w10-rmsprop-lr0.001.test",
                            "w10-adam-lr0.001.train > w10-adam-lr0.001.test",
                            "w30-adam-lr0.001.train > w30-adam-lr0.001.test",
                            "w130-adam-lr0.001.train > w130-adam-lr0.001.test"]


def test_pairs_stay_within_one_sweep():
    two = (sweep_study('hidden = [1, 2]\noptimizer = ["adam", "sgd"]', 'name = "a"\nmax_epochs = 3')
           + sweep_study('hidden = [1, 2]\noptimizer = ["adam", "sgd"]', 'name = "b"\nmax_epochs = 9', head=""))
    [claim] = claim_study("{optimizer=adam}.test > {optimizer=sgd}.test", base=two).claim
    assert claim.checks == ["a-w1-adam.test > a-w1-sgd.test", "a-w2-adam.test > a-w2-sgd.test",
                            "b-w1-adam.test > b-w1-sgd.test", "b-w2-adam.test > b-w2-sgd.test"]


@pytest.mark.parametrize("check, expected", [
    ("{optimiser=adam}.test > 90", "{optimiser=adam}: optimiser is not a swept field of this study; did you mean "
                                   "'optimizer'?; the sweeps vary: hidden, learning_rate, optimizer"),
    ("{optimizer=adamw}.test > 90", "{optimizer=adamw}: optimizer = adamw matches no experiment; optimizer takes: "
                                    "rmsprop, adam, sgd"),
    ("{optimizer=adam, learning_rate=0.01}.test > 90", "matches no experiment: no sweep has that combination"),
    ("{hidden=10}.test > {hidden=30, optimizer=adam}.test > 1", "unexpected '>' after the comparison"),
    ("{optimizer=adam}.test > w10-adam-lr0.001.test", None),
])
def test_selectors_that_match_nothing_name_the_claim_and_the_selector(check, expected):
    if expected is None:  # matches more than the other side itself: fine
        assert len(claim_study(check).claim[0].checks) == 2
        return
    message = mistake(BRIEF + f'\n[[claim]]\nname = "c"\ntext = "t"\nchecks = ["{check}"]\n')
    assert "claim 'c' > checks" in message and expected in message


def test_selectors_that_pair_nothing_are_an_error():
    two = (sweep_study("hidden = [1, 2]", 'name = "a"')
           + sweep_study('optimizer = ["adam", "sgd"]', 'name = "b"\nhidden = 4', head=""))
    claim = '\n[[claim]]\nname = "c"\ntext = "t"\nchecks = ["{hidden=2}.test > {optimizer=sgd}.test"]\n'
    message = mistake(two + claim)
    assert "claim 'c' > checks: check '{hidden=2}.test > {optimizer=sgd}.test': no experiment matching {hidden=2} " \
           "is of the same sweep as one matching {optimizer=sgd}" in message


def test_a_claim_built_in_python_cannot_hold_selectors_and_expanded_claims_are_tested_together():
    import pydantic

    with pytest.raises(pydantic.ValidationError, match="only a study can expand it"):
        Claim(name="c", text="", checks=["{optimizer=adam}.test > 90"])
    [claim] = claim_study("{optimizer=adam}.test > {optimizer=rmsprop}.test").claim
    values = {(e, "test"): [97.0 + 0.1 * i for i in range(5)] if "adam" in e else [96.0 + 0.1 * i for i in range(5)]
              for e in ("w10-adam-lr0.001", "w30-adam-lr0.001", "w130-adam-lr0.001",
                        "w10-rmsprop-lr0.001", "w30-rmsprop-lr0.001", "w130-rmsprop-lr0.001")}
    [verdict] = evaluate_claims([claim], values)
    assert verdict.verdict == "supported" and len(verdict.checks) == 3


# --- dotted names in checks ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, left, right", [
    ("w130-lr0.001.test > w130-lr0.01.test + 0.5", ("w130-lr0.001", "test", 0), ("w130-lr0.01", "test", 0.5)),
    ("w130-lr0.001.TRAIN-1 >= 99.5", ("w130-lr0.001", "train", -1.0), (None, None, 99.5)),
    ("lr1e-05.validation < a.b.c.test", ("a.b.c", "test", 0), ("lr1e-05", "validation", 0)),
])
def test_experiment_names_with_dots_split_at_the_last_dot(text, left, right):
    check = parse_check(text)
    assert (check.left.experiment, check.left.split, check.left.offset) == left
    assert (check.right.experiment, check.right.split, check.right.offset) == right


def test_a_dotted_name_without_a_split_is_named_as_such():
    from mnist_study.stats.checks import CheckSyntaxError

    with pytest.raises(CheckSyntaxError, match=r"'w130-lr0\.001' is not EXPERIMENT\.SPLIT"):
        parse_check("w130-lr0.001 > 90")
    with pytest.raises(CheckSyntaxError, match="unknown split 'tset'"):
        parse_check("w130-lr0.001.tset > 90")
    with pytest.raises(CheckSyntaxError, match=r"the selector \{optimizer=adam\} needs a split"):
        parse_check("{optimizer=adam} > 90")
    with pytest.raises(CheckSyntaxError, match="needs FIELD=VALUE pairs"):
        parse_check("{adam}.test > 90")


def test_claims_in_a_study_name_dotted_experiments():
    study = claim_study("w130-adam-lr0.001.test > w10-adam-lr0.001.test")
    assert study.claim[0].parsed_checks[0].experiments == {"w130-adam-lr0.001", "w10-adam-lr0.001"}
    assert study.claim[0].written_checks == []


# --- what a run directory stores, read back ------------------------------------------------------------

def test_a_parsed_study_round_trips_through_its_json():
    study = claim_study("{optimizer=adam}.test > {optimizer=rmsprop}.test", base=BRIEF + """
[[experiment]]
name = "plain"
hidden = 3

[[sweep]]
name = "shapes"
frontend = { kind = "pca", variance = 0.9 }
[sweep.vary]
layers = [[100, 100], [30]]
early_stopping = [true, false]
""")
    again = Study.model_validate(study.model_dump(mode="json"))
    assert again.experiments == study.experiments
    assert again == study and study_to_dict(again) == study_to_dict(study)
    assert Study.model_validate(study_to_dict(study)) == study


# --- the reference --------------------------------------------------------------------------------------

def test_the_schema_documents_sweeps_selectors_and_every_experiment_field():
    text = schema_text()
    assert "[[sweep]]" in text and "zip:" in text and "baseline:" in text and "{optimizer=adam}" in text
    table = text.split("\n[[experiment]]\n")[1].split("\n\n")[0]
    for field in Experiment.model_fields:
        [line] = [line for line in table.splitlines() if line.startswith(f"  {field}: ")]
        assert not line.startswith(f"  {field}: front-end;"), line  # every type is named, none guessed
        assert Experiment.model_fields[field].description, field


def test_every_experiment_without_extends_is_the_default_of_the_studys_own_tables():
    study = parse_study("""
name = "fashion-study"
[every_experiment]
dataset = "fashion-mnist"
max_epochs = 3
[[experiment]]
name = "a"
hidden = 8
[[experiment]]
name = "b"
hidden = 8
max_epochs = 9
[[sweep]]
dataset = "mnist"
[sweep.vary]
hidden = [4, 16]
max_epochs = [1, 2]
""")
    by_name = {e.name: e for e in study.experiments}
    assert (by_name["a"].dataset, by_name["a"].max_epochs) == ("fashion-mnist", 3)
    assert by_name["b"].max_epochs == 9  # a table's own key wins
    swept = [e for e in study.experiments if e.sweep]
    assert {e.dataset for e in swept} == {"mnist"} and {e.max_epochs for e in swept} == {1, 2}
