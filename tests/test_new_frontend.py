"""Adding a front-end is one new class and one registration.

A 14 x 14 average-pooling front-end, defined here and registered with one call, goes through the
whole pipeline with no other edit: the study file accepts it, the runner fits and saves it, the
network trains on it, a saved run loads it, and the report describes it, draws it on the accuracy
plot, runs activation maximisation through it and renders its own section.
"""

import json
import re
from typing import ClassVar, Literal

import numpy as np
import pytest
import torch

from mnist_study.errors import StudyError
from mnist_study.results import load_run
from mnist_study.runner import run_study
from mnist_study.studies import parse_study
from mnist_study.training.frontends import (FRONTENDS, Frontend, FrontendConfigBase, FrontendReport, PlotMarker,
                                            ReportFigure, register_frontend)


class AveragePoolingConfig(FrontendConfigBase):
    kind: Literal["avg_pool"] = "avg_pool"
    short_name: ClassVar[str] = "pooled"

    def describe(self) -> str:
        return "14 x 14 averages of 2 x 2 pixels"


class AveragePooling(Frontend):
    """Each input is the mean of a 2 x 2 block of pixels: (N, 784) -> (N, 196)."""

    kind = "avg_pool"
    Config = AveragePoolingConfig
    progress_unit = "blocks"
    plot_marker = PlotMarker("P", "pooled inputs", nudge=1.25)

    def fit(self, x, y=None, on_progress=None):
        self.n_features_in_ = x.shape[1]
        if on_progress is not None:
            on_progress(196, 196)
        return self

    def transform(self, x):
        return np.asarray(x, dtype=np.float32).reshape(-1, 14, 2, 14, 2).mean((2, 4)).reshape(-1, 196)

    def params(self):
        return {"n_features_in": self.n_features_in_}

    @classmethod
    def restore(cls, arrays, params):
        frontend = cls()
        frontend.n_features_in_ = params["n_features_in"]
        return frontend

    def torch_op(self):
        return lambda x: x.reshape(-1, 14, 2, 14, 2).mean((2, 4)).reshape(-1, 196)

    def report(self, name, x_train):
        from matplotlib.figure import Figure

        fig = Figure(figsize=(3, 3))
        fig.add_subplot().imshow(self.transform(x_train[:1]).reshape(14, 14), cmap="binary")
        return FrontendReport("2 x 2 average pooling", "Each input is the mean of a 2 x 2 block of pixels.",
                              [ReportFigure("pooled", fig, "The first training image as the network sees it.",
                                            f"{name} pooled digit")])


STUDY = """
name = "pooled"

[[experiment]]
name = "pooled8"
hidden = 8
frontend = { kind = "avg_pool" }
max_epochs = 4
early_stopping = false
validation_size = 200
"""


@pytest.fixture
def pooling():
    register_frontend(AveragePooling)  # the one registration
    yield AveragePooling
    del FRONTENDS[AveragePooling.kind]


def test_a_study_names_the_new_kind_only_once_it_is_registered(pooling):
    del FRONTENDS["avg_pool"]
    with pytest.raises(StudyError, match="avg_pool"):
        parse_study(STUDY, "pooled.toml")
    register_frontend(AveragePooling)
    frontend = parse_study(STUDY, "pooled.toml").get("pooled8").frontend
    assert isinstance(frontend, AveragePoolingConfig) and frontend.describe().startswith("14 x 14")
    with pytest.raises(StudyError, match="experiment .pooled8. > frontend > avg_pool > size"):
        parse_study(STUDY.replace('kind = "avg_pool"', 'kind = "avg_pool", size = 3'), "pooled.toml")


def test_torch_op_agrees_with_transform():
    x = np.random.default_rng(0).random((5, 784)).astype(np.float32)
    fe = AveragePooling().fit(x)
    np.testing.assert_allclose(fe.torch_op()(torch.as_tensor(x)).numpy(), fe.transform(x), atol=1e-6)


def test_registration_checks_the_config_names_the_same_kind():
    class Mislabelled(AveragePooling):
        kind = "other"

    with pytest.raises(TypeError, match="Literal\\['other'\\]"):
        register_frontend(Mislabelled)
    assert "other" not in FRONTENDS


def test_new_frontend_trains_saves_loads_and_reports(pooling, tiny_data, tmp_path):
    from mnist_study.report.build import build_report
    from mnist_study.report.summary import accuracy_rows, accuracy_table

    events = []
    run_dir = run_study(parse_study(STUDY), seeds=[0], device="cpu", data_dir=tiny_data, out=tmp_path / "run",
                        workers=0, progress=False, on_event=events.append)
    progress = [e for e in events if e["kind"] == "frontend-progress"]
    assert progress == [{"kind": "frontend-progress", "experiment": "pooled8", "done": 196, "total": 196,
                         "unit": "blocks"}]

    saved = run_dir / "experiments" / "pooled8"
    assert json.loads((saved / "frontend.json").read_text()) == {"kind": "avg_pool", "params": {"n_features_in": 784}}
    run = load_run(run_dir)  # study.json validated again, the front-end rebuilt from disk
    assert isinstance(run.frontend("pooled8"), AveragePooling)
    result = run.results("pooled8")[0]
    assert result.model().params["hidden.kernel"].shape == (196, 8)
    assert result.accuracy("test") > 50  # bars on synthetic digits survive 2 x 2 pooling; chance is 10

    table = accuracy_table(accuracy_rows(run))
    assert "pooled" in list(table.columns[1].cells)

    page = build_report(run_dir, tsne_points=100, progress=False, workers=0).read_text()
    assert "14 x 14 averages of 2 x 2 pixels, 8 hidden nodes" in page  # described from its config
    section = page[page.index('<section id="frontends">'):page.index('<section id="claims">')]
    assert "<h3>pooled8: 2 x 2 average pooling</h3>" in section
    assert "<p>Each input is the mean of a 2 x 2 block of pixels.</p>" in section
    assert re.findall(r'<img src="data:image/png;base64,[^"]+" alt="([^"]+)">'
                      r'<figcaption>([^<]+)</figcaption>', section) == [
        ("pooled8 pooled digit", "The first training image as the network sees it.")]
    assert 'alt="pooled8 activation-maximisation patterns"' in page  # the ascent ran through torch_op


def test_accuracy_plot_marks_the_new_frontend(pooling):
    from mnist_study.report.figures import accuracy_vs_width

    points = [{"label": label, "width": 8, "kind": kind, "ours": {"test": (90.0, 89.0, 91.0)}, "reference": {}}
              for label, kind in (("raw8", "raw"), ("pooled8", "avg_pool"))]
    fig = accuracy_vs_width(points, splits=("test",))
    assert "pooled inputs" in [t.get_text() for t in fig.legends[0].get_texts()]
    ax = fig.axes[0]
    pooled = [line for line in ax.get_lines() if line.get_marker() == "P"]
    assert pooled and pooled[0].get_xdata()[0] == pytest.approx(8 * 1.25)
