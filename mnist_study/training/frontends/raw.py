"""Raw pixels: the network sees the 784 pixels as they are (already scaled to [0, 1])."""

from __future__ import annotations

from typing import Callable, ClassVar, Literal

import numpy as np

from mnist_study.training.frontends.base import Frontend, FrontendConfigBase, PlotMarker, ProgressFn


class RawPixelsConfig(FrontendConfigBase):
    kind: Literal["raw"] = "raw"
    short_name: ClassVar[str] = "raw"

    def describe(self) -> str:
        return "784 raw pixels"


class RawPixels(Frontend):
    """The identity: nothing to fit, nothing to show in the report."""

    kind = "raw"
    Config = RawPixelsConfig
    plot_marker = PlotMarker(None, "raw pixels")  # the baseline: one line per split

    def fit(self, x: np.ndarray, y: np.ndarray | None = None, on_progress: ProgressFn | None = None) -> "RawPixels":
        self.n_features_in_ = x.shape[1]
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float32)

    def params(self) -> dict:
        return {"n_features_in": self.n_features_in_}

    @classmethod
    def restore(cls, arrays: dict[str, np.ndarray], params: dict) -> "RawPixels":
        frontend = cls()
        frontend.n_features_in_ = params["n_features_in"]
        return frontend

    def torch_op(self) -> Callable:
        return lambda x: x
