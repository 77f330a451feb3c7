"""Tests for mnist_study.serving.classifier and mnist_study.serving.predict, with small networks trained on real MNIST.

The file-accuracy test is the one that matters: MNIST test digits written as ordinary image files
(dark ink on white, enlarged 2-4x, anywhere on a larger canvas, PNG and JPEG) must be classified
about as well as the raw test images, which holds only if preprocessing rebuilds MNIST's format.
"""

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnist_study.serving.classifier import DigitClassifier, as_inputs, load_classifier
from mnist_study.errors import RunError
from mnist_study.serving.predict import FORMATS, expand_paths, predict_files, predict_with, render
from mnist_study.data.splits import flatten_scaled

from conftest import train_study

pytestmark = pytest.mark.slow

STUDY = """
name = "predict-test"

[[experiment]]
name = "raw130"
title = "784 raw pixels, 130 hidden nodes"
hidden = 130
l2 = 0.001
max_epochs = 5
early_stopping = false
train_size = 20000

[[experiment]]
name = "pca30"
hidden = 30
l2 = 0.001
max_epochs = 2
early_stopping = false
train_size = 6000
frontend = { kind = "pca", variance = 0.9 }
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, real_mnist):
    return train_study(STUDY, [0, 1], real_mnist, tmp_path_factory.mktemp("run") / "run")


@pytest.fixture(scope="module")
def classifier(run_dir) -> DigitClassifier:
    return load_classifier(run_dir)


def as_file_image(image: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """An MNIST digit as someone might photograph or scan it: dark ink on white, enlarged, off-centre."""
    side = round(28 * rng.uniform(2, 4))
    digit = Image.fromarray(255 - image).resize((side, side), Image.Resampling.BICUBIC)
    canvas = Image.new("L", (side + int(rng.integers(10, 120)), side + int(rng.integers(10, 120))), 255)
    canvas.paste(digit, (int(rng.integers(0, canvas.width - side + 1)), int(rng.integers(0, canvas.height - side + 1))))
    return canvas


def test_file_accuracy_matches_raw_accuracy(tmp_path, mnist, classifier):
    n = 600
    images, labels = mnist.test_images[:n], mnist.test_labels[:n].astype(int)
    raw_accuracy = 100 * np.mean(classifier.predict(images) == labels)

    rng = np.random.default_rng(0)
    paths = []
    for i, (image, label) in enumerate(zip(images, labels)):
        picture = as_file_image(image, rng)
        if i % 2:
            path = tmp_path / "jpeg" / f"{i:04d}-{label}.jpg"
            path.parent.mkdir(exist_ok=True)
            picture.convert("RGB").save(path, quality=85)
        else:
            path = tmp_path / "png" / f"{i:04d}-{label}.png"
            path.parent.mkdir(exist_ok=True)
            picture.save(path)
        paths.append(path)

    rows = predict_with(classifier, [tmp_path / "png", tmp_path / "jpeg"])
    assert len(rows) == n and all(r.ok for r in rows)
    by_name = {Path(r.file).name: r.digit for r in rows}
    file_accuracy = 100 * np.mean([by_name[p.name] == label for p, label in zip(paths, labels)])
    assert raw_accuracy > 90  # the network learned something, so the comparison means something
    assert abs(file_accuracy - raw_accuracy) <= 1.5, (file_accuracy, raw_accuracy)


def test_default_is_the_best_experiment_and_seed_on_validation(run_dir, classifier):
    from mnist_study.results import load_run

    run = load_run(run_dir)
    means = {e.name: np.mean([r.metrics["accuracy"]["validation"] for r in run.results(e.name)]) for e in run.experiments}
    assert classifier.name == max(means, key=means.get) == "raw130"
    best_seed = max(run.results("raw130"), key=lambda r: r.metrics["accuracy"]["validation"])
    assert classifier.seed == best_seed.seed
    assert classifier.hidden_width == 130 and classifier.experiment.title.startswith("784 raw")

    other = load_classifier(run_dir, "pca30", seed=1)
    assert (other.name, other.seed, other.hidden_width) == ("pca30", 1, 30)
    with pytest.raises(RunError, match="no experiment 'nope'.*raw130, pca30"):
        load_classifier(run_dir, "nope")
    with pytest.raises(RunError, match="no finished seed 7"):
        load_classifier(run_dir, "raw130", seed=7)


def test_inputs_in_every_accepted_form_agree(mnist, classifier):
    images = mnist.test_images[:20]
    expected = classifier.predict_proba(flatten_scaled(images))
    np.testing.assert_allclose(classifier.predict_proba(images), expected, atol=1e-6)  # uint8 (N, 28, 28)
    np.testing.assert_allclose(classifier.predict_proba(images / 255.0), expected, atol=1e-6)
    np.testing.assert_allclose(classifier.predict_proba(images[0]), expected[:1], atol=1e-6)  # (28, 28)
    np.testing.assert_allclose(classifier.predict_proba(flatten_scaled(images)[0]), expected[:1], atol=1e-6)
    # PIL images go through preprocessing, which leaves MNIST digits almost unchanged
    pil = [Image.fromarray(im) for im in images]
    assert (classifier.predict(pil) == expected.argmax(1)).mean() >= 0.9
    assert classifier.predict(pil[0]).shape == (1,)
    hidden = classifier.hidden_activations(images)
    assert hidden.shape == (20, 130) and hidden.min() >= 0
    with pytest.raises(ValueError, match="shape"):
        classifier.predict(np.zeros((3, 27, 27), np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        classifier.predict(np.full((1, 784), 255.0))
    assert "raw130" in repr(classifier)


def test_as_inputs_shapes():
    assert as_inputs(np.zeros((28, 28), np.uint8)).shape == (1, 784)
    assert as_inputs(np.zeros((5, 784), np.float32)).shape == (5, 784)
    square = np.zeros((2, 28, 28), np.uint8)
    square[:, 8:20, 8:20] = 255
    assert as_inputs(square).max() == 1.0


@pytest.fixture
def folder(tmp_path, mnist):
    """Three good digits (one in a subfolder), a text file named .png, a blank image and a non-image file."""
    for i in range(3):
        target = tmp_path / ("sub" if i == 2 else "") / f"digit{i}.png"
        target.parent.mkdir(exist_ok=True)
        Image.fromarray(255 - mnist.test_images[i]).resize((84, 84)).save(target)
    (tmp_path / "broken.png").write_text("not an image")
    Image.new("L", (50, 50), 255).save(tmp_path / "blank.jpg")
    (tmp_path / "notes.txt").write_text("ignored: not an image extension")
    return tmp_path


def test_predict_files_reports_bad_files_and_goes_on(run_dir, folder, mnist, tmp_path):
    shown = tmp_path / "seen"
    rows = predict_files(run_dir, [folder, folder / "missing.png"], show_input=shown)
    names = [Path(r.file).name for r in rows]
    assert names == ["blank.jpg", "broken.png", "digit0.png", "digit1.png", "digit2.png", "missing.png"]
    errors = {Path(r.file).name: r.error for r in rows if not r.ok}
    assert "no digit found" in errors["blank.jpg"]
    assert "broken.png: not an image" in errors["broken.png"]
    assert "missing.png: no such file" in errors["missing.png"]
    good = [r for r in rows if r.ok]
    assert [r.digit for r in good] == list(mnist.test_labels[:3])
    for r in good:
        assert len(r.probabilities) == 10 and sum(r.probabilities) == pytest.approx(1, abs=1e-4)
        assert r.confidence == max(r.probabilities)
        seen = Image.open(r.shown_input)
        assert seen.size == (28, 28) and Path(r.shown_input).parent == shown
    assert sorted(p.name for p in shown.iterdir()) == ["digit0.png", "digit1.png", "digit2.png"]


def test_expand_paths_keeps_order_and_drops_repeats(folder):
    files = expand_paths([folder / "digit1.png", folder, folder / "digit1.png"])
    assert files[0].name == "digit1.png" and len(files) == len(set(files)) == 5
    assert all(f.suffix != ".txt" for f in files)


def test_show_input_names_do_not_collide(classifier, mnist, tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        Image.fromarray(mnist.test_images[0]).save(tmp_path / sub / "x.png")
    rows = predict_with(classifier, [tmp_path / "a", tmp_path / "b"], show_input=tmp_path / "seen")
    assert sorted(Path(r.shown_input).name for r in rows) == ["x-1.png", "x.png"]


def test_render_formats(run_dir, folder):
    rows = predict_files(run_dir, [folder])
    model = rows[2].model
    assert model.startswith(load_classifier(run_dir).name + " seed ")
    text = render(rows, "json")
    assert text.endswith("]\n")
    as_json = json.loads(text)
    assert [Path(r["file"]).name for r in as_json] == [Path(r.file).name for r in rows]
    assert as_json[2]["digit"] == rows[2].digit and as_json[0]["error"]
    assert {r["model"] for r in as_json} == {model}
    assert as_json[2]["uncertain"] is (as_json[2]["confidence"] < 0.5) and as_json[0]["uncertain"] is None

    table = list(csv.DictReader(io.StringIO(render(rows, "csv"))))
    assert list(table[0]) == ["file", "model", "digit", "uncertain", *(f"p{d}" for d in range(10)), "error"]
    assert table[2]["digit"] == str(rows[2].digit) and float(table[2][f"p{rows[2].digit}"]) > 0.5
    assert table[0]["digit"] == "" and "no digit" in table[0]["error"] and table[2]["model"] == model

    text = render(rows, "table")
    assert "digit0.png" in text and "probability of each digit" in text and "2 of 5 file(s) could not be classified" in text
    assert f"network: {model}" in text
    assert set(FORMATS) == {"table", "csv", "json"}
    with pytest.raises(ValueError, match="unknown format"):
        render(rows, "xml")


def test_answers_below_the_confidence_threshold_are_flagged(run_dir, folder):
    sure = predict_files(run_dir, [folder], min_confidence=0.0)
    doubtful = predict_files(run_dir, [folder], min_confidence=1.0)
    assert not any(p.uncertain for p in sure)
    assert all(p.uncertain for p in doubtful if p.ok) and any(p.ok for p in doubtful)
    assert "?" in render(doubtful, "table")


def test_a_folder_without_images_is_an_error_not_silence(run_dir, tmp_path):
    from typer.testing import CliRunner

    from mnist_study.cli import app

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    (row,) = predict_files(run_dir, [empty])
    assert not row.ok and "holds no image files" in row.error
    result = CliRunner().invoke(app, ["predict", str(run_dir), str(empty)])
    assert result.exit_code == 1 and "holds no image files" in result.output
