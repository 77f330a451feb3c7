"""What every front-end is, the registry of them by kind, and saving and loading a fitted one.

A front-end is one class (in one file of this package) that knows everything about itself:

- `Config`: its frozen pydantic model in study files (`kind` plus its parameters), which also
  describes it in words (`describe()`, `short_name`), so the report can name an experiment's inputs
  from its config alone;
- `fit(x, y, on_progress)` on the training split and `transform(x)` (the scikit-learn contract);
- `arrays()`, `params()` and `restore(...)`: saved as safetensors plus JSON, never pickle;
- `torch_op()`: the transform as a differentiable torch function, for activation maximisation;
- `progress_unit` and `plot_marker`: what progress bars count and how the accuracy plot marks it;
- `report(name, x_train)`: its own figures and paragraph for the report's front-end section.

Adding one is a new file here and one `register_frontend(...)` line in `__init__.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Annotated, Callable, ClassVar, Literal, Union, get_args, get_origin

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from safetensors.numpy import load_file, save_file
from sklearn.base import BaseEstimator, TransformerMixin

from mnist_study.files import atomic_path, read_json, write_json

ProgressFn = Callable[[int, int], None]  # on_progress(done, total), in the front-end's progress_unit


class FrontendConfigBase(BaseModel):
    """A front-end's entry in a study file. Subclasses narrow `kind` to a Literal and add parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    kind: str
    short_name: ClassVar[str] = ""  # a word for narrow tables ("PCA"); empty: the kind

    def describe(self) -> str:
        """One line for the report, e.g. "PCA keeping 95% of the variance"."""
        return self.kind


@dataclass(frozen=True)
class PlotMarker:
    """How the accuracy-against-width figure draws networks behind this front-end.

    `symbol` is a matplotlib marker, or None for the baseline drawn as one line per split (raw
    pixels); `nudge` multiplies the width so that points of equal width do not hide each other.
    """

    symbol: str | None
    label: str
    nudge: float = 1.0


@dataclass
class ReportFigure:
    """One figure of a front-end's report section.

    `figure` is a matplotlib Figure; `caption` is plain text (escaped) or `markupsafe.Markup`.
    The page also gets every figure as `<key>_img`, so that another section can show it: the notes
    on the paper show the forest's `pixels` and `swapped` drawings. `shown=False` draws a figure
    for such a section only.
    """

    key: str
    figure: Any
    caption: str = ""
    alt: str = ""
    shown: bool = True


@dataclass
class FrontendReport:
    """A front-end's section of the report: a heading, one paragraph, a few figures."""

    heading: str
    text: str
    figures: list[ReportFigure] = field(default_factory=list)


class Frontend(BaseEstimator, TransformerMixin):
    """Base of every front-end: pixels (N, 784) in [0, 1] -> network inputs (N, D) float32.

    `__init__` takes the Config's parameters (without `kind`) as keyword arguments and stores them;
    fitted state ends in `_`, as in scikit-learn.
    """

    kind: ClassVar[str]
    Config: ClassVar[type[FrontendConfigBase]]
    progress_unit: ClassVar[str] = "steps"
    plot_marker: ClassVar[PlotMarker] = PlotMarker("X", "other inputs")

    @classmethod
    def from_config(cls, config: FrontendConfigBase) -> "Frontend":
        """An unfitted front-end with the parameters of its study-file config."""
        return cls(**config.model_dump(exclude={"kind"}))

    def fit(self, x: np.ndarray, y: np.ndarray | None = None, on_progress: ProgressFn | None = None) -> "Frontend":
        raise NotImplementedError

    def transform(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def arrays(self) -> dict[str, np.ndarray]:
        """The fitted state's arrays, saved as safetensors."""
        return {}

    def params(self) -> dict:
        """The parameters and fitted scalars, saved as JSON."""
        return {}

    @classmethod
    def restore(cls, arrays: dict[str, np.ndarray], params: dict) -> "Frontend":
        """The fitted front-end that `arrays()` and `params()` describe."""
        raise NotImplementedError

    def torch_op(self) -> Callable:
        """`transform` as a differentiable torch function: pixels (N, 784) -> inputs (N, D)."""
        raise NotImplementedError(f"{type(self).__name__} has no torch version; define torch_op() to "
                                  f"use it in activation maximisation")

    def report(self, name: str, x_train: np.ndarray) -> FrontendReport | None:
        """This front-end's section of the report (None: nothing to show), for experiment `name`
        trained on pixels `x_train` (N, 784). Drawing functions are imported from the report layer
        inside the method, so that matplotlib is loaded only when a report is built."""
        return None


# ------------------------------------------------------------------------------------ the registry

FRONTENDS: dict[str, type[Frontend]] = {}


def register_frontend(cls: type[Frontend]) -> type[Frontend]:
    """Make `cls` known by its `kind` to study files, the runner, saved runs and the report."""
    annotation = cls.Config.model_fields["kind"].annotation
    if get_origin(annotation) is not Literal or get_args(annotation) != (cls.kind,):
        raise TypeError(f"{cls.__name__}.Config.kind must be Literal[{cls.kind!r}], like {cls.__name__}.kind")
    if FRONTENDS.get(cls.kind, cls) is not cls:
        raise ValueError(f"front-end kind {cls.kind!r} is already registered to {FRONTENDS[cls.kind].__name__}")
    FRONTENDS[cls.kind] = cls
    return cls


def build_frontend(config: FrontendConfigBase) -> Frontend:
    """The unfitted front-end a study-file config asks for."""
    return FRONTENDS[config.kind].from_config(config)


_adapters: dict[tuple, TypeAdapter] = {}


def parse_frontend_config(data: Any) -> FrontendConfigBase:
    """Validate a study file's `frontend = {kind = ..., ...}` against the registered front-ends.

    The union is built from the registry when it is used, so a front-end registered at run time is
    accepted; validation errors keep their location (`frontend.pca.variance`).
    """
    configs = tuple(cls.Config for cls in FRONTENDS.values())
    if configs not in _adapters:
        union = Annotated[Union[configs], Field(discriminator="kind")] if len(configs) > 1 else configs[0]
        _adapters[configs] = TypeAdapter(union)
    return _adapters[configs].validate_python(data)


def frontend_short_name(kind: str) -> str:
    """"PCA" for "pca"; the kind itself when the front-end has none or is not registered."""
    return (FRONTENDS[kind].Config.short_name if kind in FRONTENDS else "") or kind


# ------------------------------------------------------------------------------------- on disk

def save_frontend(frontend: Frontend, directory: str | Path) -> None:
    """Write `frontend.safetensors` (arrays) and `frontend.json` ({"kind", "params"}) into `directory`."""
    directory = Path(directory)
    arrays = {k: np.ascontiguousarray(v) for k, v in frontend.arrays().items()}
    with atomic_path(directory / "frontend.safetensors") as tmp:
        save_file(arrays, str(tmp))
    write_json(directory / "frontend.json", {"kind": frontend.kind, "params": frontend.params()})


def load_frontend(directory: str | Path) -> Frontend:
    """Rebuild a fitted front-end saved by `save_frontend`."""
    directory = Path(directory)
    meta = read_json(directory / "frontend.json")
    if meta.get("kind") not in FRONTENDS:
        raise ValueError(f"{directory / 'frontend.json'}: unknown front-end {meta.get('kind')!r}; "
                         f"expected one of {', '.join(FRONTENDS)}")
    arrays = load_file(str(directory / "frontend.safetensors"))
    return FRONTENDS[meta["kind"]].restore(arrays, meta["params"])
