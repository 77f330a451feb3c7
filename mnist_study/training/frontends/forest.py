"""Forest-chosen pixels: the network sees only the pixels a random forest ranks most important
(scikit-learn's RandomForestClassifier and SelectFromModel)."""

from __future__ import annotations

from typing import Callable, ClassVar, Literal

import numpy as np
from pydantic import Field
from sklearn.base import BaseEstimator
from sklearn.ensemble import RandomForestClassifier
from sklearn.feature_selection import SelectFromModel

from mnist_study.training.frontends.base import (Frontend, FrontendConfigBase, FrontendReport, PlotMarker,
                                                 ProgressFn, ReportFigure)


class ForestPixelsConfig(FrontendConfigBase):
    kind: Literal["forest_pixels"] = "forest_pixels"
    n_pixels: int = Field(70, ge=1, le=784, description="how many of the forest's most important pixels are kept")
    n_trees: int = Field(100, ge=1, description="trees in the random forest that ranks the pixels")
    random_state: int = Field(42, description="seeds the forest, so that the chosen pixels are reproducible")
    short_name: ClassVar[str] = "forest"

    def describe(self) -> str:
        return f"{self.n_pixels} forest-chosen pixels ({self.n_trees} trees)"


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


class ForestPixels(Frontend):
    """The `n_pixels` pixels a RandomForestClassifier ranks most important, in pixel order."""

    kind = "forest_pixels"
    Config = ForestPixelsConfig
    progress_unit = "trees"
    plot_marker = PlotMarker("D", "forest-chosen pixels", nudge=0.89)
    TREES_PER_STEP = 10

    def __init__(self, n_pixels: int = 70, n_trees: int = 100, random_state: int = 42, n_jobs: int = 1):
        self.n_pixels = n_pixels
        self.n_trees = n_trees
        self.random_state = random_state
        self.n_jobs = n_jobs

    def fit(self, x: np.ndarray, y: np.ndarray, on_progress: ProgressFn | None = None) -> "ForestPixels":
        """Fit the forest `TREES_PER_STEP` trees at a time (warm_start gives exactly the forest a
        single fit would), calling on_progress(trees done, n_trees) after each step."""
        forest = RandomForestClassifier(n_estimators=0, random_state=self.random_state, n_jobs=self.n_jobs,
                                        warm_start=True)
        for done in range(min(self.TREES_PER_STEP, self.n_trees), self.n_trees + self.TREES_PER_STEP,
                          self.TREES_PER_STEP):
            forest.set_params(n_estimators=min(done, self.n_trees)).fit(x, y)
            if on_progress is not None:
                on_progress(forest.n_estimators, self.n_trees)
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

    def torch_op(self) -> Callable:
        """Picks the chosen pixels, so gradients reach them (and only them) among all 784."""
        import torch

        pixels = torch.as_tensor(np.asarray(self.pixels_, dtype=np.int64))
        return lambda x: x[:, pixels]

    def report(self, name: str, x_train: np.ndarray) -> FrontendReport:

        from mnist_study.report import frontend_figures as draw

        n = len(self.pixels_)
        digit = x_train[1]
        text = (f"A random forest fitted on the training split ranks the 784 pixels; the network sees only the "
                f"{n} most important.")
        return FrontendReport("random-forest pixels", text, [
            ReportFigure("importance", draw.forest_importance(self.importances_,
                                                              f"{name}: random-forest pixel importance"),
                         "The forest's importance of every pixel.", f"{name} pixel importance heatmap"),
            ReportFigure("pixels", draw.chosen_pixels(digit, self.pixels_,
                                                      f"{name}: the {n} chosen pixels at their true positions"),
                         f"The {n} chosen pixels on the second training image, at their true (row, column).",
                         f"{name} chosen pixels on a training digit"),
            # Not shown in the section: for a study's note to set beside "pixels" (row and column swapped,
            # as a scatter of (row, column) draws them).
            ReportFigure("swapped", draw.chosen_pixels(digit, self.pixels_, transposed=True,
                                                       title=f"{name}: the same pixels, row and column swapped"),
                         shown=False),
        ])
