"""Studies are data: a TOML file lists experiments (and, optionally, claims to test).

    name = "my-study"
    description = "..."

    [[experiment]]
    name = "exp6"
    title = "784 raw pixels, 130 hidden nodes"
    hidden = 130
    l2 = 0.001
    frontend = { kind = "raw" }        # or { kind = "pca", variance = 0.95 }
                                       # or { kind = "forest_pixels", n_pixels = 70 }
    max_epochs = 200
    early_stopping = true              # EarlyStopping(val_accuracy, patience) + best-val-loss weights
    validation = "last"                # which 5,000 training images are held out: "last" or "first"
    reference = { train = 97.0, validation = 97.3, test = 97.1 }   # optional figures to compare with

Unknown keys, wrong types and impossible values are errors that name the file, the key and the
reason, raised before any work starts.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mnist_study.stats.claims import Claim, validate_claim_experiments
from mnist_study.errors import StudyError
from mnist_study.training.trainer import TrainConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RawFrontend(_Strict):
    kind: Literal["raw"] = "raw"


class PCAFrontendConfig(_Strict):
    kind: Literal["pca"]
    variance: float = Field(0.95, gt=0, lt=1, description="fraction of variance the kept components explain")


class ForestFrontendConfig(_Strict):
    kind: Literal["forest_pixels"]
    n_pixels: int = Field(70, ge=1, le=784)
    n_trees: int = Field(100, ge=1)
    random_state: int = 42


FrontendConfig = Annotated[Union[RawFrontend, PCAFrontendConfig, ForestFrontendConfig], Field(discriminator="kind")]


class Reference(_Strict):
    """Figures (percent) to show beside ours, e.g. the paper's Appendix A."""

    train: float | None = Field(None, ge=0, le=100)
    validation: float | None = Field(None, ge=0, le=100)
    test: float | None = Field(None, ge=0, le=100)
    first_epoch_loss: float | None = Field(None, ge=0, description="training loss Keras printed after epoch 1")
    first_epoch_accuracy: float | None = Field(None, ge=0, le=1, description="training accuracy after epoch 1")


class Experiment(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$", max_length=64)
    title: str = ""
    hidden: int = Field(ge=1, le=65536, description="hidden-layer width")
    frontend: FrontendConfig = RawFrontend()
    l2: float = Field(0.0, ge=0, description="penalty l2 * sum(W^2) on the hidden kernel")
    max_epochs: int = Field(200, ge=1, le=100_000)
    early_stopping: bool = True
    patience: int = Field(2, ge=1)
    keep: Literal["best_val_loss", "final"] | None = Field(
        None, description="weights evaluated; default: best_val_loss with early stopping, else final")
    validation: Literal["last", "first"] = "last"
    validation_size: int = Field(5000, ge=1)
    train_size: int | None = Field(None, ge=1, description="use only this many training images (quick studies)")
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    reference: Reference | None = None

    @property
    def kept_weights(self) -> str:
        return self.keep or ("best_val_loss" if self.early_stopping else "final")

    def train_config(self) -> TrainConfig:
        from mnist_study.training.optimizers import RMSpropConfig

        return TrainConfig(hidden=self.hidden, l2=self.l2, max_epochs=self.max_epochs,
                           early_stopping=self.early_stopping, patience=self.patience, keep=self.kept_weights,
                           batch_size=self.batch_size, optimizer=RMSpropConfig(lr=self.learning_rate))

    def frontend_key(self) -> str:
        """Experiments with the same front-end on the same split share one fitted front-end."""
        params = ",".join(f"{k}={v}" for k, v in self.frontend.model_dump().items())
        return f"{params};validation={self.validation}:{self.validation_size};train_size={self.train_size}"


class Study(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)
    description: str = ""
    experiment: list[Experiment] = Field(min_length=1)
    claim: list[Claim] = []

    @model_validator(mode="after")
    def _check_names(self) -> "Study":
        names = [e.name for e in self.experiment]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"experiment names must be unique; repeated: {', '.join(duplicates)}")
        validate_claim_experiments(self.claim, names)
        return self

    @property
    def experiments(self) -> list[Experiment]:
        return list(self.experiment)

    def get(self, name: str) -> Experiment:
        for e in self.experiment:
            if e.name == name:
                return e
        raise KeyError(f"no experiment {name!r} in study {self.name!r}; it has: "
                       f"{', '.join(e.name for e in self.experiment)}")


BUILTIN_STUDIES = ("paper", "paper-as-printed", "quick")


def _format_errors(source: str, error: ValidationError) -> str:
    lines = [f"{source} is not a valid study:"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see `mnist-study run --help` for the schema)"
        lines.append(f"  - {key}: {message}")
    return "\n".join(lines)


def parse_study(text: str, source: str = "<study>") -> Study:
    """Parse and validate a study from TOML text; errors name `source`, the key and the reason."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise StudyError(f"{source} is not valid TOML: {e}") from None
    try:
        return Study.model_validate(data)
    except ValidationError as e:
        raise StudyError(_format_errors(source, e)) from None


def load_study(name_or_path: str | Path) -> Study:
    """A built-in study by name (`paper`, `paper-as-printed`, `quick`) or a TOML file by path."""
    if str(name_or_path) in BUILTIN_STUDIES:
        text = resources.files("mnist_study.studies").joinpath(f"{name_or_path}.toml").read_text()
        return parse_study(text, f"built-in study {name_or_path!r}")
    path = Path(name_or_path)
    if not path.is_file():
        raise StudyError(f"no study {str(name_or_path)!r}: not a built-in ({', '.join(BUILTIN_STUDIES)}) "
                         f"and no such file")
    return parse_study(path.read_text(), str(path))


def study_to_dict(study: Study) -> dict:
    return study.model_dump(mode="json", exclude_none=True)
