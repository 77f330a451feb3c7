"""What a report says comes from its study: the paper's notes render with their exhibits, and a
user's study without notes or references gets a page with nothing of the paper on it."""

import re
import shutil

import pytest
from markupsafe import escape

from mnist_study.report.build import build_report
from mnist_study.report.notes import paragraphs
from mnist_study.runner import run_study
from mnist_study.studies import load_study, study_to_dict
from mnist_study.study import Study

PAPER_WORDS = re.compile(r"paper|appendix|notebook|keras", re.IGNORECASE)


def without_images(page: str) -> str:
    return re.sub(r'data:image/png;base64,[^"]+', "IMG", page)  # base64 can spell anything


def section(page: str, name: str) -> str:
    start = page.index(f'<section id="{name}">')
    return page[start:page.index("</section>", start)]


def test_report_of_a_user_study_has_nothing_of_the_paper(tiny_run, tmp_path):
    run_dir = shutil.copytree(tiny_run, tmp_path / "run")
    page = without_images(build_report(run_dir, tsne_points=100, progress=False, workers=0).read_text())
    assert PAPER_WORDS.findall(page) == []
    assert 'id="notes"' not in page and ">Notes</a>" not in page
    # no reference columns, differences or hollow reference markers
    assert "Δ" not in page and "hollow" not in page and "<th>reference</th>" not in page
    assert "<th>ours</th><th>ours</th>" in page.replace("\n", "")


@pytest.fixture(scope="module")
def paper_notes_run(tmp_path_factory, tiny_data):
    """A run of the paper study's notes over four of its experiments, made tiny."""
    paper = study_to_dict(load_study("paper"))
    experiments = []
    for e in paper["experiment"]:
        if e["name"] in ("exp1", "exp5", "exp9", "exp10"):
            e = dict(e, train_size=500, validation_size=100, max_epochs=1)
            if e["name"] == "exp10":
                e["frontend"] = dict(e["frontend"], n_trees=5)
            experiments.append(e)
    study = Study.model_validate({**paper, "experiment": experiments, "claim": []})
    assert len(study.note) == 4
    out = tmp_path_factory.mktemp("paper-notes") / "run"
    run_dir = run_study(study, seeds=[0], device="cpu", data_dir=tiny_data, out=out, workers=0, progress=False)
    return study, build_report(run_dir, tsne_points=100, progress=False, workers=0).read_text()


def test_the_paper_notes_render_their_text_and_exhibits(paper_notes_run):
    study, page = paper_notes_run
    notes = section(page, "notes")
    for note in study.note:
        assert f"<h3>{escape(note.title)}</h3>" in notes
        for paragraph in paragraphs(note.text):
            assert f"<p>{escape(paragraph)}</p>" in notes
    # first_epoch: every experiment, ours beside the paper's log
    assert "<th>paper's loss</th>" in notes
    assert re.findall(r'<tr><td class="left">(\w+)</td>', notes) == ["exp1", "exp5", "exp9", "exp10"]
    assert '<td class="muted">1.971</td>' in notes and '<td class="muted">0.583</td>' in notes
    # figure:exp10:pixels and figure:exp10:swapped; figure:exp9:variance; pattern:exp1
    assert re.findall(r'<img src="data:image/png;base64,[^"]+" alt="([^"]+)">', notes) == [
        "exp10 chosen pixels on a training digit", "exp10 swapped", "exp9 cumulative explained variance"]
    assert re.search(r"Our exp1 network calls the pattern of its hidden node 0 a <strong>\d</strong>", notes)
    assert "unavailable" not in notes and "draws no figure" not in notes


def test_the_paper_study_names_its_reference_figures(paper_notes_run):
    _, page = paper_notes_run
    accuracy = section(page, "accuracy")
    assert "<th>ours</th><th>paper</th><th>Δ</th>" in accuracy
    assert "The “paper” columns hold the study's reference figures" in accuracy
    assert "Networks on PCA inputs (★) and forest-chosen pixels (◆) are separate points" in accuracy
    assert "hollow markers are the paper&#39;s" in accuracy
    assert '<a href="#notes">Notes</a>' in page
