"""PCA: the network sees the coordinates of each image on the principal axes that explain a given
fraction of the training pixels' variance (scikit-learn's PCA)."""

from __future__ import annotations

from typing import Callable, ClassVar, Literal

import numpy as np
from pydantic import Field
from sklearn.decomposition import PCA

from mnist_study.training.frontends.base import (Frontend, FrontendConfigBase, FrontendReport, PlotMarker,
                                                 ProgressFn, ReportFigure)



class PCAFrontendConfig(FrontendConfigBase):
    kind: Literal["pca"] = "pca"
    variance: float = Field(0.95, gt=0, lt=1, description="fraction of variance the kept components explain")
    short_name: ClassVar[str] = "PCA"

    def describe(self) -> str:
        return f"PCA keeping {self.variance:.0%} of the variance"


class PCAFrontend(Frontend):
    """scikit-learn's PCA keeping the smallest number of components that explain `variance`."""

    kind = "pca"
    Config = PCAFrontendConfig
    plot_marker = PlotMarker("*", "PCA inputs", nudge=1.12)

    def __init__(self, variance: float = 0.95, random_state: int = 0):
        self.variance = variance
        self.random_state = random_state

    def fit(self, x: np.ndarray, y: np.ndarray | None = None, on_progress: ProgressFn | None = None) -> "PCAFrontend":
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

    def torch_op(self) -> Callable:
        """(x - mean) @ componentsᵀ: scikit-learn's transform without whitening."""
        import torch

        if getattr(self.pca_, "whiten", False):
            raise ValueError("whitened PCA is not supported")
        mean = torch.as_tensor(np.asarray(self.pca_.mean_, dtype=np.float32))
        components = torch.as_tensor(np.asarray(self.pca_.components_, dtype=np.float32))
        return lambda x: (x - mean) @ components.T

    def report(self, name: str, x_train: np.ndarray) -> FrontendReport:
        from markupsafe import Markup

        from mnist_study.report import frontend_figures as draw

        n = self.n_components_
        percent = 100 * self.variance
        kept = 100 * float(np.sum(self.pca_.explained_variance_ratio_))
        text = Markup("PCA fitted on the training split keeps the fewest components that explain {:.0f}% of the "
                      "pixel variance: <strong>{} components</strong> (explaining {:.1f}%).").format(percent, n, kept)
        spectrum = explained_variance_spectrum(x_train)
        return FrontendReport("principal components", text, [
            ReportFigure("variance", draw.pca_variance(spectrum, n, self.variance,
                                                       f"{name}: PCA cumulative explained variance"),
                         f"Cumulative fraction of variance explained by the first components, with the "
                         f"{percent:.0f}% line and the number kept.", f"{name} cumulative explained variance"),
            ReportFigure("components", draw.pca_components(self.pca_.components_, 16,
                                                           f"{name}: first 16 principal components"),
                         "The first 16 principal axes as images.", f"{name} first 16 principal components"),
        ])


def explained_variance_spectrum(x: np.ndarray) -> np.ndarray:
    """Fraction of variance along every principal axis of x (N, D), largest first, shape (D,).

    The fitted PCA front-end keeps only the components it uses; the full spectrum (for the
    cumulative-variance curve) comes from the eigenvalues of the covariance matrix, which for
    784 pixels is much cheaper than a full SVD.
    """
    x = np.asarray(x)
    n, d = x.shape
    # Accumulated over chunks in float64: a float64 copy of all 55,000 images would cost 345 MB.
    mean = x.mean(0, dtype=np.float64)
    scatter = np.zeros((d, d))
    for start in range(0, n, 5000):
        chunk = x[start:start + 5000].astype(np.float64) - mean
        scatter += chunk.T @ chunk
    covariance = scatter / max(n - 1, 1)
    eigenvalues = np.clip(np.linalg.eigvalsh(covariance)[::-1], 0, None)
    total = eigenvalues.sum()
    return eigenvalues / total if total > 0 else eigenvalues
