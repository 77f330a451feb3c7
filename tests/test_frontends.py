"""Front-ends: fitted on training data, saved without pickle, rebuilt identically."""

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from mnist_study.training.frontends import (FRONTENDS, ForestPixels, ForestPixelsConfig, PCAFrontend,
                                            PCAFrontendConfig, RawPixels, RawPixelsConfig, build_frontend,
                                            frontend_short_name, load_frontend, save_frontend)
from mnist_study.training.frontends.pca import explained_variance_spectrum


def _blobs(n=400, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = rng.random((n, 784)).astype(np.float32) * 0.2
    x[np.arange(n), 100 + y * 3] = 1.0  # only pixels 100, 103, ..., 127 carry the class
    return x, y


@pytest.mark.parametrize("frontend", [RawPixels(), PCAFrontend(0.9), ForestPixels(n_pixels=12, n_trees=20)])
def test_saved_frontend_transforms_identically(tmp_path, frontend):
    x, y = _blobs()
    frontend.fit(x, y)
    save_frontend(frontend, tmp_path)
    assert not list(tmp_path.glob("*.pkl"))
    restored = load_frontend(tmp_path)
    np.testing.assert_allclose(restored.transform(x), frontend.transform(x), rtol=1e-6, atol=1e-6)


def test_saved_files_keep_their_format(tmp_path):
    """Runs saved before and after must load alike: frontend.json is {"kind", "params"}, and the
    parameters and arrays are named as they always were."""
    x, y = _blobs()
    expected = [(RawPixels(), {"n_features_in"}, set()),
                (PCAFrontend(0.9), {"variance", "random_state", "n_samples", "noise_variance"},
                 {"components", "mean", "explained_variance", "explained_variance_ratio", "singular_values"}),
                (ForestPixels(n_pixels=12, n_trees=20), {"n_pixels", "n_trees", "random_state"},
                 {"importances", "pixels"})]
    for frontend, params, arrays in expected:
        folder = tmp_path / frontend.kind
        save_frontend(frontend.fit(x, y), folder)
        meta = json.loads((folder / "frontend.json").read_text())
        assert set(meta) == {"kind", "params"} and meta["kind"] == frontend.kind
        assert set(meta["params"]) == params
        assert set(load_file(str(folder / "frontend.safetensors"))) == arrays


def test_configs_describe_and_build_their_front_ends():
    configs = [RawPixelsConfig(), PCAFrontendConfig(variance=0.95), ForestPixelsConfig(n_trees=7, random_state=3)]
    assert [c.describe() for c in configs] == ["784 raw pixels", "PCA keeping 95% of the variance",
                                               "70 forest-chosen pixels (7 trees)"]
    assert [frontend_short_name(k) for k in FRONTENDS] == ["raw", "PCA", "forest"]
    raw, pca, forest = (build_frontend(c) for c in configs)
    assert type(raw) is RawPixels and type(pca) is PCAFrontend and pca.variance == 0.95
    assert type(forest) is ForestPixels and (forest.n_pixels, forest.n_trees, forest.random_state) == (70, 7, 3)
    assert (raw.progress_unit, forest.progress_unit) == ("steps", "trees")


def test_forest_picks_the_informative_pixels():
    x, y = _blobs(1000)
    forest = ForestPixels(n_pixels=10, n_trees=30).fit(x, y)
    assert set(forest.pixels_) == {100 + 3 * k for k in range(10)}
    assert forest.transform(x).shape == (1000, 10)


def test_pca_keeps_requested_variance():
    x, y = _blobs()
    pca = PCAFrontend(0.8).fit(x, y)
    ratios = pca.pca_.explained_variance_ratio_
    assert ratios.sum() >= 0.8 and ratios[:-1].sum() < 0.8


def test_unknown_frontend_kind_is_named(tmp_path):
    save_frontend(RawPixels().fit(np.zeros((2, 784))), tmp_path)
    (tmp_path / "frontend.json").write_text('{"kind": "magic", "params": {}}')
    with pytest.raises(ValueError, match="unknown front-end 'magic'"):
        load_frontend(tmp_path)


@pytest.mark.slow
def test_pca_keeps_154_components_on_mnist(real_mnist):
    from mnist_study.data.sources import load_dataset
    from mnist_study.data.splits import make_splits

    x, y = make_splits(load_dataset(real_mnist, download=False, progress=False), "first")["train"]
    assert PCAFrontend(0.95).fit(x, y).n_components_ == 154


def test_forest_fitted_in_steps_is_the_forest_fitted_at_once():
    from sklearn.ensemble import RandomForestClassifier

    x, y = _blobs(300)
    steps = []
    forest = ForestPixels(n_pixels=10, n_trees=25, random_state=3).fit(x, y, on_progress=lambda d, t: steps.append((d, t)))
    assert steps == [(10, 25), (20, 25), (25, 25)]
    at_once = RandomForestClassifier(n_estimators=25, random_state=3).fit(x, y).feature_importances_
    np.testing.assert_array_equal(forest.importances_, at_once)


def test_explained_variance_spectrum_matches_scikit_learn():
    from sklearn.decomposition import PCA

    x = np.random.default_rng(0).normal(size=(200, 30)) * np.linspace(3, 0.1, 30)
    ours = explained_variance_spectrum(x)
    theirs = PCA().fit(x).explained_variance_ratio_
    np.testing.assert_allclose(ours, theirs, atol=1e-10)
    assert ours.sum() == pytest.approx(1.0)
