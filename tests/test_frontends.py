"""Front-ends: fitted on training data, saved without pickle, rebuilt identically."""

import numpy as np
import pytest

from mnist_study.training.frontends import ForestPixels, PCAFrontend, RawPixels, load_frontend, save_frontend


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
    forest = ForestPixels(n_pixels=10, n_trees=25, random_state=3).fit(x, y, on_trees=lambda d, t: steps.append((d, t)))
    assert steps == [(10, 25), (20, 25), (25, 25)]
    at_once = RandomForestClassifier(n_estimators=25, random_state=3).fit(x, y).feature_importances_
    np.testing.assert_array_equal(forest.importances_, at_once)
