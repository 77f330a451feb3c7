"""The built-in studies beyond the paper: each asks its question with the settings its notes state."""

import pytest

from mnist_study.studies import BUILTIN_STUDIES, load_study

BEYOND_THE_PAPER = ["fashion", "depth", "data-size", "double-descent", "optimisers"]


def parameters(layers: list[int], inputs: int = 784, classes: int = 10) -> int:
    dims = [inputs, *layers, classes]
    return sum(a * b + b for a, b in zip(dims, dims[1:]))


def experiment_names(name: str) -> list[str]:
    return [e.name for e in load_study(name).experiments]


@pytest.mark.parametrize("name", BEYOND_THE_PAPER)
def test_each_study_has_a_small_variant_that_asks_the_same_questions(name):
    assert name in BUILTIN_STUDIES and f"{name}-small" in BUILTIN_STUDIES
    full, small = load_study(name), load_study(f"{name}-small")
    assert [c.name for c in small.claim] == [c.name for c in full.claim]
    assert len(small.experiments) <= len(full.experiments)


def test_fashion_is_the_papers_protocol_on_fashion_mnist():
    paper, fashion = load_study("paper"), load_study("fashion")
    assert [e.name for e in fashion.experiments] == [e.name for e in paper.experiments]
    for p, f in zip(paper.experiments, fashion.experiments):
        assert f.dataset == "fashion-mnist" and f.reference is None
        assert f.model_dump(exclude={"dataset", "reference"}) == p.model_dump(exclude={"dataset", "reference"})
    assert {c.name for c in fashion.claim} >= {"width-helps", "pca-130-best", "forest-costs-3"}


def test_depth_matches_parameter_counts_within_one_and_a_half_percent():
    study = load_study("depth")
    assert len(study.experiments) == 9
    for e in study.experiments:
        depth, size = e.name.split("-")
        target = {"25k": 25_000, "100k": 100_000, "400k": 400_000}[size]
        assert len(e.layers) == int(depth[1:]) and len(set(e.layers)) == 1
        assert abs(parameters(e.layers) - target) / target < 0.015, e.name
        assert (e.optimizer, e.l2, e.patience) == ("rmsprop", 0.001, 2)  # the paper's protocol


def test_data_size_crosses_three_widths_with_a_log_grid_of_training_images():
    study = load_study("data-size")
    sizes = sorted({e.train_size for e in study.experiments})
    assert sizes[0] == 1000 and sizes[-1] == 55_000 and len(sizes) == 7
    assert all(b / a <= 2.01 for a, b in zip(sizes, sizes[1:]))  # at most a doubling per step
    assert {e.hidden for e in study.experiments} == {10, 130, 500}
    assert {e.data_seed for e in study.experiments} == {0}  # one subset per size, shared by every network


@pytest.mark.parametrize("name, images", [("double-descent", 4000), ("double-descent-small", 1000)])
def test_double_descent_spans_its_interpolation_threshold_without_regularisers(name, images):
    study = load_study(name)
    threshold = images * 10  # n * K parameters
    counts = sorted({parameters([e.hidden]) for e in study.experiments})
    assert counts[0] < threshold / 10 and counts[-1] > threshold * 10  # a decade each side at least
    assert sum(threshold / 2 <= c <= threshold * 2 for c in counts) >= 4  # dense around it
    for e in study.experiments:
        assert (e.train_size, e.loss, e.l2, e.dropout, e.early_stopping, e.kept_weights) == (
            images, "squared_error", 0.0, 0.0, False, "final")
    assert {e.label_noise for e in study.experiments} == {0.0, 0.2}


def test_best_one_layer_sets_the_papers_best_beside_modern_training_and_a_cnn():
    paper = {e.name: e for e in load_study("paper").experiments}
    for name in ("best-one-layer", "best-one-layer-small"):
        study = {e.name: e for e in load_study(name).experiments}
        assert list(study) == ["paper-best", "w800", "w2048", "w800-elastic", "cnn"]
        exclude = {"name", "title", "reference"}
        # The paper's best trained as the paper trained it, whatever the study's defaults.
        assert study["paper-best"].model_dump(exclude=exclude) == {
            **paper["exp9"].model_dump(exclude=exclude), "keep": "final"}
        assert study["paper-best"].kept_weights == paper["exp9"].kept_weights
        for plain in ("w800", "w2048"):  # no augmentation, no convolution
            assert (study[plain].shift, study[plain].elastic, study[plain].conv) == (0, False, [])
        assert study["w800-elastic"].elastic and study["w800-elastic"].hidden == 800
        assert study["cnn"].conv == [16, 32] and study["cnn"].hidden == 128
    full, small = load_study("best-one-layer"), load_study("best-one-layer-small")
    assert [c.name for c in small.claim] == [c.name for c in full.claim]
