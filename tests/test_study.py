"""Study files: built-ins load, and every mistake is named with the file, the key and the reason."""

import re

import pytest

from mnist_study.errors import StudyError
from mnist_study.studies import BUILTIN_STUDIES, load_study, parse_study

GOOD = """
name = "mine"
[[experiment]]
name = "a"
hidden = 10
"""


PAPER_FAMILY = [name for name in BUILTIN_STUDIES if name.startswith(("paper", "quick"))]


@pytest.mark.parametrize("name", PAPER_FAMILY)
def test_the_paper_family_of_builtin_studies_has_its_ten_experiments(name):
    study = load_study(name)
    assert [e.name for e in study.experiments] == [f"exp{i}" for i in range(1, 11)]


def test_the_width_optimiser_sweep_is_ten_widths_by_four_optimisers():
    study = load_study("width-optimiser")
    assert len(study.experiments) == 40 and study.experiments[0].name == "w1-rmsprop"
    assert {e.swept["optimizer"] for e in study.experiments} == {"rmsprop", "adam", "adamw", "sgd"}
    assert {e.learning_rate for e in study.experiments if e.optimizer == "sgd"} == {0.1}
    assert all(e.train_size == 10_000 for e in study.experiments)


def test_paper_study_is_the_papers_protocol():
    paper = load_study("paper")
    widths = [e.hidden for e in paper.experiments]
    assert widths == [1, 2, 10, 30, 80, 130, 200, 500, 130, 130]
    for e in paper.experiments[:8]:
        assert (e.l2, e.max_epochs, e.early_stopping, e.patience, e.validation) == (0.001, 200, True, 2, "last")
        assert e.kept_weights == "best_val_loss"
    for e in paper.experiments[8:]:
        assert (e.l2, e.max_epochs, e.early_stopping, e.validation) == (0.0, 30, False, "first")
        assert e.kept_weights == "final"
    assert paper.get("exp9").frontend.kind == "pca" and paper.get("exp9").frontend.variance == 0.95
    assert paper.get("exp10").frontend.n_pixels == 70 and paper.get("exp10").frontend.n_trees == 100
    assert paper.get("exp6").reference.test == 97.1
    assert len(paper.claim) >= 5
    printed = load_study("paper-as-printed")
    assert all(e.l2 == 0.01 for e in printed.experiments[:8])


def test_defaults_follow_the_paper():
    e = parse_study(GOOD).experiments[0]
    assert (e.frontend.kind, e.batch_size, e.learning_rate, e.validation_size) == ("raw", 32, 1e-3, 5000)


@pytest.mark.parametrize("text, key, reason", [
    (GOOD + "hiden = 3\n", "experiment 'a' > hiden", "unknown key; did you mean 'hidden'?"),
    (GOOD.replace("hidden = 10", "hidden = 'ten'"), "experiment 'a' > hidden", "integer"),
    (GOOD.replace("hidden = 10", "hidden = '64'"), "experiment 'a' > hidden", "integer (got '64')"),
    (GOOD.replace("hidden = 10", "hidden = 0"), "experiment 'a' > hidden", "greater than or equal to 1"),
    (GOOD + "l2 = -1\n", "experiment 'a' > l2", "greater than or equal to 0"),
    (GOOD + "early_stopping = 'yes'\n", "experiment 'a' > early_stopping", "boolean"),
    (GOOD + "validation = 'middle'\n", "experiment 'a' > validation", "'last' or 'first'"),
    (GOOD + "frontend = { kind = 'pca', variance = 1.5 }\n", "experiment 'a' > frontend > pca > variance",
     "less than 1"),
    (GOOD + "frontend = { kind = 'pca', varience = 0.9 }\n", "experiment 'a' > frontend > pca > varience",
     "did you mean 'variance'?"),
    (GOOD + "frontend = { kind = 'wavelets' }\n", "experiment 'a' > frontend", "wavelets"),
    (GOOD + "[[claim]]\nname = 'c'\ntext = 't'\nchecks = ['a.test > 90']\nmargn = 1\n", "claim 'c' > margn",
     "did you mean 'margin'?"),
    ("nmae = 'x'\n" + GOOD, "nmae", "did you mean 'name'?"),
    (GOOD + "[[experiment]]\nname = 'a'\nhidden = 3\n", "(top level)", "unique"),
])
def test_mistakes_name_file_key_and_reason(text, key, reason):
    with pytest.raises(StudyError) as info:
        parse_study(text, "my-study.toml")
    message = str(info.value)
    assert "my-study.toml" in message and key in message and reason in message


def test_claims_must_name_known_experiments():
    text = GOOD + '[[claim]]\nname = "c"\ntext = "t"\nchecks = ["a.test > b.test"]\n'
    with pytest.raises(StudyError, match="'b'|b"):
        parse_study(text, "s.toml")


def test_not_toml_and_missing_file(tmp_path):
    with pytest.raises(StudyError, match="not valid TOML"):
        parse_study("name = ", "broken.toml")
    with pytest.raises(StudyError, match="no such file"):
        load_study(tmp_path / "absent.toml")


# --- a study that extends another --------------------------------------------------------------

def test_builtin_studies_write_each_figure_once():
    """quick and paper-as-printed extend paper: the same experiments and references, a few settings apart."""
    paper, quick, printed = load_study("paper"), load_study("quick"), load_study("paper-as-printed")
    for p, q, r in zip(paper.experiments, quick.experiments, printed.experiments):
        assert q.reference == p.reference == r.reference and q.hidden == p.hidden and q.title == p.title
        assert (q.train_size, q.max_epochs) == (10000, 4)
    assert quick.get("exp10").frontend.n_trees == 10 and paper.get("exp10").frontend.n_trees == 100
    assert [e.l2 for e in printed.experiments] == [0.01] * 8 + [0.0, 0.0]
    assert quick.claim == paper.claim and printed.claim == [] and printed.note == paper.note


def test_extends_a_file_with_overrides_only_and_new_experiments(tmp_path):
    (tmp_path / "base.toml").write_text(GOOD.replace("hidden = 10", "hidden = 10\nl2 = 0.001") + """
[[experiment]]
name = "b"
hidden = 20

[[claim]]
name = "b-beats-a"
text = "b beats a"
checks = ["b.test > a.test"]

[[claim]]
name = "a-is-good"
text = "a is good"
checks = ["a.test > 90"]
""")
    (tmp_path / "child.toml").write_text("""
name = "child"
extends = "base.toml"
only = ["a"]

[every_experiment]
max_epochs = 3

[[experiment]]
name = "a"
hidden = 12

[[experiment]]
name = "c"
hidden = 5
""")
    child = load_study(tmp_path / "child.toml")
    assert [(e.name, e.hidden, e.max_epochs) for e in child.experiments] == [("a", 12, 3), ("c", 5, 200)]
    assert child.get("a").l2 == 0.001  # inherited where not overridden
    assert [c.name for c in child.claim] == ["a-is-good"]  # the claim naming the dropped b is dropped


@pytest.mark.parametrize("child, reason", [
    ('name = "x"\nextends = "nope"\n', "no study 'nope'"),
    ('name = "x"\nextends = "papr"\n', "did you mean 'paper'?"),
    ('name = "x"\nextends = "paper"\nonly = ["exp99"]\n', "'exp99', which the base study does not have"),
    ('name = "x"\nextends = "paper"\n[every_experiment]\nmax_epoch = 3\n', "every_experiment.max_epoch: unknown key; did you mean 'max_epochs'?"),
    ('name = "x"\nonly = ["a"]\n[[experiment]]\nname = "a"\nhidden = 1\n', "only make sense with `extends"),
])
def test_extending_mistakes_are_named(child, reason):
    with pytest.raises(StudyError, match=re.escape(reason)):
        parse_study(child, "child.toml")


def test_a_study_that_extends_itself_is_refused(tmp_path):
    (tmp_path / "a.toml").write_text('name = "a"\nextends = "b.toml"\n')
    (tmp_path / "b.toml").write_text('name = "b"\nextends = "a.toml"\n')
    with pytest.raises(StudyError, match="extends it back"):
        load_study(tmp_path / "a.toml")


# --- sizes that only the data can check, checked before any work --------------------------------

@pytest.mark.parametrize("setting, reason", [
    ("validation_size = 60000", "experiment 'a' > validation_size: 60,000 must be below the 2,200 training images"),
    ("train_size = 80000", "experiment 'a' > train_size: 80,000 is more than the 1,200 training images of "),
])
def test_splits_that_do_not_fit_the_data_fail_before_any_work(tmp_path, tiny_data, setting, reason):
    from mnist_study.runner import run_study

    text = GOOD + ("validation_size = 1000\n" if "train_size" in setting else "") + setting + "\n"
    out = tmp_path / "run"
    with pytest.raises(StudyError, match=re.escape(reason)) as info:
        run_study(parse_study(text), data_dir=tiny_data, out=out, workers=0, progress=False,
                  study_source="mine.toml")
    assert str(info.value).startswith("mine.toml does not fit this dataset")
    assert not out.exists()  # nothing was written
