"""What a newcomer meets first: options checked before any work, output readable in a pipe at 80
columns, and nothing silently ignored. CliRunner's output is a pipe, not a terminal."""

import json
import re

import pytest
from typer.testing import CliRunner

from mnist_study.cli import app

from conftest import TINY_STUDY

runner = CliRunner(env={"COLUMNS": "80"})


@pytest.fixture
def study_file(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_STUDY)
    return path


def test_a_bad_tsne_points_is_refused_before_training(tmp_path, study_file, tiny_data):
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", str(study_file), "--data-dir", str(tiny_data), "--out", str(out),
                                 "--tsne-points", "abc"])
    assert result.exit_code == 2 and "--tsne-points" in result.output and "'abc'" in result.output
    assert not out.exists()  # nothing was trained
    assert runner.invoke(app, ["report", str(tmp_path), "--tsne-points", "2"]).exit_code == 2


def test_seeds_and_seed_together_are_refused(tmp_path, study_file):
    result = runner.invoke(app, ["run", str(study_file), "--seeds", "2", "--seed", "5", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "not both" in result.output
    assert not (tmp_path / "r").exists()


def test_a_study_named_with_resume_must_be_the_runs(tiny_run):
    result = runner.invoke(app, ["run", "quick", "--resume", str(tiny_run)])
    assert result.exit_code == 2
    assert "holds a run of study 'tiny'" in result.output and "not of 'quick'" in result.output


def test_compare_refuses_an_unknown_split(tiny_run):
    result = runner.invoke(app, ["compare", str(tiny_run), str(tiny_run), "--split", "tset"])
    assert result.exit_code == 2 and "tset" in result.output and "validation" in result.output


def test_compare_json_is_valid_json_for_one_seed_runs(tmp_path, study_file, tiny_data):
    """One seed gives no confidence interval: JSON says null, never the invalid bare NaN."""
    out = tmp_path / "one"
    assert runner.invoke(app, ["run", str(study_file), "--data-dir", str(tiny_data), "--out", str(out),
                               "--workers", "0", "--no-report"]).exit_code == 0
    result = runner.invoke(app, ["compare", str(out), str(out), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert "NaN" not in result.stdout
    rows = json.loads(result.stdout)
    assert rows and all(r["p"] is None and r["ci"] == [None, None] for r in rows)


def test_compare_of_different_protocols_warns(tmp_path, tiny_run, tiny_data):
    other = tmp_path / "other.toml"
    other.write_text(TINY_STUDY.replace("l2 = 0.001", "l2 = 0.01"))
    out = tmp_path / "other"
    assert runner.invoke(app, ["run", str(other), "--data-dir", str(tiny_data), "--out", str(out),
                               "--workers", "0", "--no-report", "--seeds", "2"]).exit_code == 0
    result = runner.invoke(app, ["compare", str(tiny_run), str(out)])
    assert result.exit_code == 0
    assert "different protocols" in result.output and "raw8: l2 0.001 vs 0.01" in result.output


def test_help_shows_defaults_whole_at_80_columns():
    result = runner.invoke(app, ["run", "--help"])
    assert result.exit_code == 0
    assert "~/.cache/mnist-study/mnist" in result.output and "…" not in result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80
    for command in ([], ["show"], ["report"], ["compare"], ["predict"], ["serve"], ["data"], ["studies"]):
        text = runner.invoke(app, [*command, "--help"]).output
        # "..." only where click marks a repeatable argument, never a cut-off text
        assert "…" not in text and "..." not in re.sub(r"(\w+|\}|\])\.\.\.( <| |$)", "", text, flags=re.M)
        assert max(len(line) for line in text.splitlines()) <= 80


def test_data_shows_whole_digests(tiny_data):
    from mnist_study.data.idx import sha256_uncompressed

    result = runner.invoke(app, ["data", "--data-dir", str(tiny_data)])
    assert result.exit_code == 0
    digest = sha256_uncompressed(tiny_data / "t10k-labels-idx1-ubyte.gz")
    assert digest in result.output


def test_the_copy_paste_command_of_studies_is_one_line_and_works(tmp_path):
    result = runner.invoke(app, ["studies"])
    line = next(line for line in result.output.splitlines() if "--show" in line)
    assert line.strip() == "mnist-study studies --show paper > my-study.toml"
    shown = runner.invoke(app, ["studies", "--show", "quick"])
    (tmp_path / "my-study.toml").write_text(shown.stdout)
    from mnist_study.studies import load_study

    assert load_study(tmp_path / "my-study.toml") == load_study("quick")


def test_the_schema_lists_every_key_of_every_table():
    from mnist_study.stats.claims import Claim
    from mnist_study.study import Experiment, Note, Reference, Study
    from mnist_study.training.frontends import FRONTENDS

    text = runner.invoke(app, ["studies", "--schema"]).stdout
    models = [Study, Experiment, Reference, Claim, Note] + [cls.Config for cls in FRONTENDS.values()]
    for model in models:
        for key, field in model.model_fields.items():
            if key != "kind":
                assert f"  {key}: " in text, key
                assert field.description, f"{model.__name__}.{key} has no description for the schema"
    for grammar in ("by more than", "within", "SPLIT := train | validation | test", "extends", "every_experiment"):
        assert grammar in text


def test_a_suggested_command_names_the_study_as_typed(tmp_path, study_file, tiny_data):
    study_file.write_text(TINY_STUDY + '[[claim]]\nname = "c"\ntext = "raw beats PCA"\nchecks = ["raw8.test > pca8.test"]\n')
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", str(study_file), "--data-dir", str(tiny_data), "--out", str(out),
                                 "--workers", "0", "--no-report", "--seed", "0"])
    assert result.exit_code == 0, result.output
    assert f"mnist-study run {study_file} --seeds 5" in result.output.replace("\n", "")


def test_a_run_in_a_pipe_prints_plain_progress_lines(tmp_path, study_file, tiny_data):
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", str(study_file), "--data-dir", str(tiny_data), "--out", str(out),
                                 "--workers", "0", "--seed", "0", "--tsne-points", "100"])
    assert result.exit_code == 0, result.output
    assert "train raw8: seed 0 done (1 of 1; 1 of 3 networks), test acc" in result.output
    assert "fit forest_pixels front-end (forest8): done in" in result.output
    assert "report: data in" in result.output and "report: render in" in result.output
    assert "…" not in result.output
