"""The HTML report, built from a tiny real run on synthetic digits.

The run trains four small networks (1 and 2 hidden nodes on raw pixels, 10 nodes behind PCA and
behind forest-chosen pixels) for two epochs on 600 synthetic images, so every kind of section
appears: box plot, scatter, t-SNE maps, node patterns, both front-ends, claims and the study's
notes with every kind of exhibit.
"""

import json
import re
import time

import numpy as np
import pytest
from browser import check_report, needs_chromium

from mnist_study.data.idx import write_idx
from mnist_study.report.build import build_report
from mnist_study.runner import run_study
from mnist_study.studies import parse_study

SECTIONS = ("data", "accuracy", "experiments", "hidden", "patterns", "frontends", "claims", "notes",
            "reproducibility")

STUDY = """
name = "tiny"
description = "four tiny networks on synthetic digits"
reference_source = "original"

[[experiment]]
name = "one"
title = "1 node"
hidden = 1
train_size = 500
validation_size = 100
max_epochs = 2
reference = { train = 39.4, validation = 40.4, test = 38.3, first_epoch_loss = 1.9729, first_epoch_accuracy = 0.1995 }

[[experiment]]
name = "two"
title = "2 nodes"
hidden = 2
train_size = 500
validation_size = 100
max_epochs = 2

[[experiment]]
name = "pca"
title = "PCA, 10 nodes"
hidden = 10
frontend = { kind = "pca", variance = 0.9 }
validation = "first"
validation_size = 100
max_epochs = 2
early_stopping = false

[[experiment]]
name = "forest"
title = "forest pixels, 10 nodes"
hidden = 10
frontend = { kind = "forest_pixels", n_pixels = 40, n_trees = 5 }
validation = "first"
validation_size = 100
max_epochs = 2
early_stopping = false
reference = { test = 94.2 }

[[claim]]
name = "pca-beats-one-node"
text = "PCA with 10 nodes beats a single node"
checks = ["pca.test > one.test"]

[[note]]
title = "First epochs"
text = '''
The first paragraph's first line
and its second line.

A second paragraph, with <b>markup</b> & an ampersand that stay text.
'''
show = ["first_epoch"]

[[note]]
title = "Pixels, a pattern and a figure that is not drawn"
text = "The forest's pixels drawn both ways, then the single node's pattern."
show = ["figure:forest:pixels", "figure:forest:swapped", "pattern:one", "figure:forest:no-such-figure"]
"""


def synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (n, 28, 28): digit d is a bright bar at a position of its own, jittered, on noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 40, (n, 28, 28)).astype(np.int32)
    for i, d in enumerate(labels):
        row, col = 4 + 2 * (d % 5) + rng.integers(-1, 2), 4 + 10 * (d // 5) + rng.integers(-1, 2)
        images[i, row:row + 8, col:col + 6] += 200
    return np.clip(images, 0, 255).astype(np.uint8), labels


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(run directory, report path, wall seconds of build_report) for the tiny study."""
    root = tmp_path_factory.mktemp("report")
    data = root / "data"
    data.mkdir()
    train, train_labels = synthetic_digits(600, 0)
    test, test_labels = synthetic_digits(200, 1)
    for name, array in (("train-images-idx3-ubyte", train), ("train-labels-idx1-ubyte", train_labels),
                        ("t10k-images-idx3-ubyte", test), ("t10k-labels-idx1-ubyte", test_labels)):
        write_idx(data / name, array, compress=False)
    run_dir = run_study(parse_study(STUDY, "tiny.toml"), seeds=[0, 1], data_dir=data, out=root / "run",
                        workers=0, progress=False, device="cpu")
    start = time.perf_counter()
    report = build_report(run_dir, tsne_points=150, progress=False)
    return run_dir, report, time.perf_counter() - start


def test_report_has_every_section_and_only_embedded_images(built):
    run_dir, report, _ = built
    assert report == run_dir / "report.html"
    page = report.read_text()
    for section in SECTIONS:
        assert f'id="{section}"' in page and f'href="#{section}"' in page, section
    images = re.findall(r'<img src="([^"]+)"', page)
    # data: counts + 2 grids; accuracy plot; per experiment 5; hidden 4; patterns 4;
    # front-ends: forest 2 + PCA 2; notes: the forest's two pixel drawings
    assert len(images) == 3 + 1 + 5 * 4 + 4 + 4 + 4 + 2
    assert all(src.startswith("data:image/png;base64,") for src in images)
    # self-contained: no external stylesheet, script, font or image
    assert not re.search(r'<(link|script)\b', page)
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "{{" not in page and "{%" not in page


def test_report_content_reflects_the_run(built):
    run_dir, report, _ = built
    page = report.read_text()
    assert "of the 10 hidden activations of 150 training images (a seeded sample of 500)" in page
    assert 'alt="one hidden activations (boxplot)"' in page and 'alt="two hidden activations (scatter)"' in page
    assert "pca-beats-one-node" in page and re.search(r'class="verdict (supported|contradicted|not-resolved)"', page)
    # reference figures, named as the study names their source
    assert "<th>ours</th><th>original</th><th>Δ</th>" in page and "hollow markers are the original&#39;s" in page
    # parameters, epochs and seconds close each row; both seeds ran 2 epochs: "2", as `show` prints it, not "2–2"
    assert re.findall(r"<td>(\d+(?:–\d+)?)</td><td>[\d.]+</td></tr>", page) == ["2"] * 4
    assert re.findall(r"<td>([\d,]+)</td><td>2</td><td>[\d.]+</td></tr>", page)[0] == "805"  # "one": 784 -> 1 -> 10
    assert "mnist-study run tiny.toml --seed 0 --seed 1" in page  # rebuilt: the run was started from Python
    step = json.loads((run_dir / "manifest.json").read_text())["training_step"]
    assert step == "fused CPU epoch" or step.startswith("eager step (")
    assert f">{step}<" in page
    for digest in json.loads((run_dir / "manifest.json").read_text())["data"]["digests"].values():
        assert digest in page
    assert not list(run_dir.glob(".report.html.*"))  # written atomically: no temporary file left


def test_report_renders_the_study_notes_and_their_exhibits(built):
    _, report, _ = built
    page = report.read_text()
    notes = page[page.index('<section id="notes">'):page.index('<section id="reproducibility">')]
    assert "<h3>First epochs</h3>" in notes
    assert "<p>The first paragraph&#39;s first line and its second line.</p>" in notes
    assert "<p>A second paragraph, with &lt;b&gt;markup&lt;/b&gt; &amp; an ampersand that stay text.</p>" in notes
    # first_epoch: the one experiment with first-epoch figures, ours beside the study's 1.9729 / 0.1995
    assert "<th>original's loss</th>" in notes
    assert re.findall(r'<tr><td class="left">(\w+)</td>', notes) == ["one"]
    assert '<td class="muted">1.973</td>' in notes and '<td class="muted">0.200</td>' in notes
    # figure:forest:pixels and figure:forest:swapped, side by side; the second is drawn for the notes only
    assert re.findall(r'<img src="data:image/png;base64,[^"]+" alt="([^"]+)">', notes) == [
        "forest chosen pixels on a training digit", "forest swapped"]
    assert re.search(r"Our one network calls the pattern of its hidden node 0 a\s*<strong>\d</strong>", notes)
    assert "forest&#39;s front-end (forest_pixels) draws no figure “no-such-figure”; it draws: importance, " \
           "pixels, swapped." in notes
    # the patterns section keeps to the patterns: what the notes say is said there only
    patterns = page[page.index('<section id="patterns">'):page.index('<section id="frontends">')]
    assert "callout" not in patterns


def test_report_timings_are_recorded(built):
    run_dir, _, seconds = built
    timings = json.loads((run_dir / "report_timings.json").read_text())
    assert timings["tsne_points"] == 150
    for name in ("pca", "forest"):
        assert timings["experiments"][name]["t-SNE"] > 0
    for name in ("one", "two", "pca", "forest"):
        assert timings["experiments"][name]["activation maximisation"] > 0
        assert timings["experiments"][name]["figures"] > 0
    assert "t-SNE" not in timings["experiments"]["one"]
    assert 0 < timings["total_seconds"] <= seconds + 1


def _page_without_pixels_and_times(page: str) -> str:
    page = re.sub(r'data:image/png;base64,[^"]+', "IMG", page)
    page = re.sub(r"\d{4}-\d\d-\d\dT[\d:+]+", "TIME", page)  # when it was generated
    page = re.sub(r"\d+\.\d+", "N", page)  # timings and t-SNE's kNN percentages
    return page


def test_report_is_the_same_from_worker_processes_and_from_one_process(built):
    run_dir, _, _ = built
    pages = {}
    for workers in (0, 2):
        build_report(run_dir, tsne_points=150, progress=False, workers=workers)
        pages[workers] = _page_without_pixels_and_times((run_dir / "report.html").read_text())
        assert json.loads((run_dir / "report_timings.json").read_text())["workers"] == workers
    assert pages[0] == pages[2]


def test_bad_tsne_points_are_refused(built):
    run_dir, _, _ = built
    with pytest.raises(ValueError, match="tsne_points"):
        build_report(run_dir, tsne_points=2, progress=False)


@pytest.mark.browser
@needs_chromium
def test_report_renders_in_headless_chromium(built, tmp_path):
    _, report, _ = built
    check_report(report, tmp_path, min_images=31)
