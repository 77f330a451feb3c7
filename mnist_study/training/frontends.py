"""Front-ends: what the network sees of the 784 pixels.

Each is a scikit-learn transformer fitted on the training split only, registered by name in
FRONTENDS so that study files and the CLI draw their choices from one place. A fitted front-end is
saved as safetensors (arrays) plus JSON (parameters) -- never pickle -- and rebuilt on load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from safetensors.numpy import load_file, save_file
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.feature_selection import SelectFromModel

from mnist_study.files import atomic_path, read_json, write_json

ProgressFn = Callable[[str], None]


class RawPixels(BaseEstimator, TransformerMixin):
    """The 784 pixels as they are (already scaled to [0, 1])."""

    def fit(self, x: np.ndarray, y: np.ndarray | None = None) -> "RawPixels":
        self.n_features_in_ = x.shape[1]
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float32)

    def arrays(self) -> dict[str, np.ndarray]:
        return {}

    def params(self) -> dict:
        return {"n_features_in": self.n_features_in_}

    @classmethod
    def restore(cls, arrays: dict[str, np.ndarray], params: dict) -> "RawPixels":
        frontend = cls()
        frontend.n_features_in_ = params["n_features_in"]
        return frontend


class PCAFrontend(BaseEstimator, TransformerMixin):
    """scikit-learn's PCA keeping the smallest number of components that explain `variance`."""

    def __init__(self, variance: float = 0.95, random_state: int = 0):
        self.variance = variance
        self.random_state = random_state

    def fit(self, x: np.ndarray, y: np.ndarray | None = None) -> "PCAFrontend":
        # The eigendecomposition of the 784x784 covariance gives the same components as a full SVD
        # of the 55,000x784 data, 30 times faster when samples far outnumber features.
        self.pca_ = PCA(n_components=self.variance, svd_solver="covariance_eigh",
                        random_state=self.random_state).fit(x)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return self.pca_.transform(x).astype(np.float32)

    @property
    def n_components_(self) -> int:
        return int(self.pca_.n_components_)

    def arrays(self) -> dict[str, np.ndarray]:
        p = self.pca_
        return {"components": p.components_, "mean": p.mean_, "explained_variance": p.explained_variance_,
                "explained_variance_ratio": p.explained_variance_ratio_, "singular_values": p.singular_values_}

    def params(self) -> dict:
        return {"variance": self.variance, "random_state": self.random_state,
                "n_samples": int(self.pca_.n_samples_), "noise_variance": float(self.pca_.noise_variance_)}

    @classmethod
    def restore(cls, arrays: dict[str, np.ndarray], params: dict) -> "PCAFrontend":
        frontend = cls(params["variance"], params["random_state"])
        pca = PCA(n_components=params["variance"], svd_solver="covariance_eigh")
        pca.components_ = arrays["components"]
        pca.mean_ = arrays["mean"]
        pca.explained_variance_ = arrays["explained_variance"]
        pca.explained_variance_ratio_ = arrays["explained_variance_ratio"]
        pca.singular_values_ = arrays["singular_values"]
        pca.n_components_ = arrays["components"].shape[0]
        pca.n_features_in_ = arrays["components"].shape[1]
        pca.n_samples_ = params["n_samples"]
        pca.noise_variance_ = params["noise_variance"]
        frontend.pca_ = pca
        return frontend


class _Importances(BaseEstimator):
    """A fitted 'model' that is nothing but its feature importances, so that SelectFromModel can be
    rebuilt from saved arrays without the forest (which we do not keep: it is large, and pickled)."""

    def __init__(self, feature_importances: np.ndarray | None = None):
        self.feature_importances = feature_importances
        if feature_importances is not None:
            self.n_features_in_ = len(feature_importances)

    def fit(self, x=None, y=None):
        return self

    @property
    def feature_importances_(self) -> np.ndarray:
        return self.feature_importances


class ForestPixels(BaseEstimator, TransformerMixin):
    """The `n_pixels` pixels a RandomForestClassifier ranks most important, in pixel order."""

    TREES_PER_STEP = 10

    def __init__(self, n_pixels: int = 70, n_trees: int = 100, random_state: int = 42, n_jobs: int = 1):
        self.n_pixels = n_pixels
        self.n_trees = n_trees
        self.random_state = random_state
        self.n_jobs = n_jobs

    def fit(self, x: np.ndarray, y: np.ndarray, on_trees: Callable[[int, int], None] | None = None) -> "ForestPixels":
        """Fit the forest `TREES_PER_STEP` trees at a time (warm_start gives exactly the forest a
        single fit would), calling on_trees(done, total) after each step for progress bars."""
        forest = RandomForestClassifier(n_estimators=0, random_state=self.random_state, n_jobs=self.n_jobs,
                                        warm_start=True)
        for done in range(min(self.TREES_PER_STEP, self.n_trees), self.n_trees + self.TREES_PER_STEP,
                          self.TREES_PER_STEP):
            forest.set_params(n_estimators=min(done, self.n_trees)).fit(x, y)
            if on_trees is not None:
                on_trees(forest.n_estimators, self.n_trees)
            if forest.n_estimators == self.n_trees:
                break
        self._select(forest.feature_importances_)
        return self

    def _select(self, importances: np.ndarray) -> None:
        # threshold=-inf: take exactly the top `max_features`, as the paper's argsort does.
        self.selector_ = SelectFromModel(_Importances(importances), prefit=True,
                                         max_features=self.n_pixels, threshold=-np.inf)
        self.importances_ = importances
        self.pixels_ = np.flatnonzero(self.selector_.get_support())

    def transform(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.selector_.transform(x), dtype=np.float32)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"importances": self.importances_, "pixels": self.pixels_}

    def params(self) -> dict:
        return {"n_pixels": self.n_pixels, "n_trees": self.n_trees, "random_state": self.random_state}

    @classmethod
    def restore(cls, arrays: dict[str, np.ndarray], params: dict) -> "ForestPixels":
        frontend = cls(params["n_pixels"], params["n_trees"], params["random_state"])
        frontend._select(arrays["importances"])
        return frontend


FRONTENDS: dict[str, type] = {"raw": RawPixels, "pca": PCAFrontend, "forest_pixels": ForestPixels}


def save_frontend(frontend, directory: str | Path) -> None:
    """Write `frontend.safetensors` and `frontend.json` into `directory`."""
    directory = Path(directory)
    kind = next(name for name, cls in FRONTENDS.items() if isinstance(frontend, cls))
    arrays = {k: np.ascontiguousarray(v) for k, v in frontend.arrays().items()}
    with atomic_path(directory / "frontend.safetensors") as tmp:
        save_file(arrays, str(tmp))
    write_json(directory / "frontend.json", {"kind": kind, "params": frontend.params()})


def load_frontend(directory: str | Path):
    """Rebuild a fitted front-end saved by `save_frontend`."""
    directory = Path(directory)
    meta = read_json(directory / "frontend.json")
    if meta.get("kind") not in FRONTENDS:
        raise ValueError(f"{directory / 'frontend.json'}: unknown front-end {meta.get('kind')!r}; "
                         f"expected one of {', '.join(FRONTENDS)}")
    arrays = load_file(str(directory / "frontend.safetensors"))
    return FRONTENDS[meta["kind"]].restore(arrays, meta["params"])
