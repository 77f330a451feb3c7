"""Study files: built-ins load, and every mistake is named with the file, the key and the reason."""

import pytest

from mnist_study.errors import StudyError
from mnist_study.study import BUILTIN_STUDIES, load_study, parse_study

GOOD = """
name = "mine"
[[experiment]]
name = "a"
hidden = 10
"""


@pytest.mark.parametrize("name", BUILTIN_STUDIES)
def test_builtin_studies_load(name):
    study = load_study(name)
    assert [e.name for e in study.experiments] == [f"exp{i}" for i in range(1, 11)]


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
    (GOOD + "hiden = 3\n", "experiment.0.hiden", "unknown key"),
    (GOOD.replace("hidden = 10", "hidden = 'ten'"), "experiment.0.hidden", "integer"),
    (GOOD.replace("hidden = 10", "hidden = 0"), "experiment.0.hidden", "greater than or equal to 1"),
    (GOOD + "l2 = -1\n", "experiment.0.l2", "greater than or equal to 0"),
    (GOOD + "validation = 'middle'\n", "experiment.0.validation", "'last' or 'first'"),
    (GOOD + "frontend = { kind = 'pca', variance = 1.5 }\n", "experiment.0.frontend.pca.variance", "less than 1"),
    (GOOD + "frontend = { kind = 'wavelets' }\n", "experiment.0.frontend", "wavelets"),
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
