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

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SerializeAsAny, model_validator

from mnist_study.stats.claims import Claim, validate_claim_experiments
from mnist_study.errors import StudyError
from mnist_study.training.frontends import FrontendConfigBase, RawPixelsConfig, parse_frontend_config
from mnist_study.training.trainer import TrainConfig


MAX_EXPERIMENTS = 1000  # far beyond any study's needs; refused before one is built (see studies/)


class _Strict(BaseModel):
    # strict: `hidden = "64"` is an error, not 64; integers are still accepted where floats are.
    # allow_inf_nan=False: TOML's `inf` and `nan` are numbers no setting can use.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def _frontend_config(value):
    return value if isinstance(value, FrontendConfigBase) else parse_frontend_config(value)


# Each front-end's config lives with the front-end (training/frontends/); the union of them is built
# from the registry when a study is validated, so a new front-end needs no edit here.
# SerializeAsAny: dump the front-end's own fields, not only the base's.
FrontendConfig = Annotated[SerializeAsAny[FrontendConfigBase], BeforeValidator(_frontend_config)]


class Reference(_Strict):
    """Figures (percent) to show beside ours, e.g. the paper's Appendix A."""

    train: float | None = Field(None, ge=0, le=100, description="training accuracy, percent")
    validation: float | None = Field(None, ge=0, le=100, description="validation accuracy, percent")
    test: float | None = Field(None, ge=0, le=100, description="test accuracy, percent")
    first_epoch_loss: float | None = Field(None, ge=0, description="training loss after epoch 1 (a protocol's "
                                                                   "fingerprint)")
    first_epoch_accuracy: float | None = Field(None, ge=0, le=1, description="training accuracy after epoch 1, "
                                                                            "a fraction")


class Experiment(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$", max_length=64,
                      description="letters, digits, - and _; claims, notes and --experiment name it")
    title: str = Field("", description="a line describing the network, for tables and the report")
    hidden: int = Field(ge=1, le=65536, description="hidden-layer width")
    frontend: FrontendConfig = Field(RawPixelsConfig(), description="what the network sees of the pixels "
                                                                     "(see the front-ends below)")
    l2: float = Field(0.0, ge=0, description="penalty l2 * sum(W^2) on the hidden kernel")
    max_epochs: int = Field(200, ge=1, le=100_000, description="the most epochs trained")
    early_stopping: bool = Field(True, description="stop once validation accuracy has not improved for "
                                                   "`patience` epochs (Keras' EarlyStopping)")
    patience: int = Field(2, ge=1, description="epochs without a better validation accuracy before stopping")
    keep: Literal["best_val_loss", "final"] | None = Field(
        None, description="weights evaluated; default: best_val_loss with early stopping, else final")
    validation: Literal["last", "first"] = Field("last", description="which training images are held out for "
                                                                     "validation: the last (Keras' validation_split) "
                                                                     "or the first")
    validation_size: int = Field(5000, ge=1, description="how many training images are held out")
    train_size: int | None = Field(None, ge=1, description="use only the first this many of the remaining "
                                                          "training images (quick studies)")
    batch_size: int = Field(32, ge=1, le=1 << 20, description="images per RMSprop step")
    learning_rate: float = Field(1e-3, gt=0, description="RMSprop's learning rate (rho 0.9, epsilon 1e-7)")
    reference: Reference | None = Field(None, description="published figures to set beside ours")

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


NOTE_EXHIBITS = {
    "first_epoch": "each experiment's first-epoch training loss and accuracy beside its "
                   "reference.first_epoch_loss / first_epoch_accuracy",
    "pattern:<experiment>": "the digit the network gives the input its first hidden node responds to most",
    "figure:<experiment>:<key>": "one of the figures of that experiment's front-end, by its key "
                                 "(e.g. figure:exp10:swapped)",
}


class Note(_Strict):
    """A note of the study's authors, printed in the report beside what the run measured."""

    title: str = Field(min_length=1, description="the note's heading in the report")
    text: str = Field(min_length=1, description="plain text; a blank line starts a new paragraph")
    show: list[str] = Field([], description="what the report sets beside the text, from the run: "
                                            + "; ".join(f"{k}: {v}" for k, v in NOTE_EXHIBITS.items()))

    def exhibits(self) -> list[tuple[str, ...]]:
        """`show` split into parts: ("first_epoch",), ("pattern", exp), ("figure", exp, key)."""
        return [tuple(item.split(":")) for item in self.show]


class Study(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64,
                      description="names the run directory, runs/<name>-<timestamp>")
    description: str = Field("", description="a line saying what the study asks")
    reference_source: str = Field("reference", min_length=1, max_length=40,
                                  description="whose figures `reference` holds, as the tables name them "
                                              "(e.g. \"paper\")")
    experiment: list[Experiment] = Field(min_length=1, max_length=MAX_EXPERIMENTS,
                                         description="the networks to train, one table each")
    claim: list[Claim] = Field([], description="statements to test over seeds (see [[claim]])")
    note: list[Note] = Field([], description="notes for the report (see [[note]])")

    @model_validator(mode="after")
    def _check_names(self) -> "Study":
        names = [e.name for e in self.experiment]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"experiment names must be unique; repeated: {', '.join(duplicates)}")
        validate_claim_experiments(self.claim, names)
        for note in self.note:
            for parts in note.exhibits():
                _check_exhibit(parts, names, note.title)
        return self

    def check_split_sizes(self, n_train: int, source: str | None = None) -> None:
        """Raise StudyError unless every experiment's splits fit a training set of `n_train` images.

        Checked once the data is loaded and before any work: a split that cannot be made must not
        end a run halfway, and a train_size beyond what is there is an error, not silently capped.
        """
        problems = []
        for e in self.experiment:
            if not 0 < e.validation_size < n_train:
                problems.append(f"experiment {e.name!r} > validation_size: {e.validation_size:,} must be below "
                                f"the {n_train:,} training images")
            elif e.train_size is not None and e.train_size > n_train - e.validation_size:
                problems.append(f"experiment {e.name!r} > train_size: {e.train_size:,} is more than the "
                                f"{n_train - e.validation_size:,} training images left after holding out "
                                f"{e.validation_size:,} for validation")
        where = source or f"study {self.name!r}"
        if len(problems) == 1:
            raise StudyError(f"{where} does not fit this dataset: {problems[0]}")
        if problems:
            raise StudyError(f"{where} does not fit this dataset:\n" + "\n".join(f"  - {p}" for p in problems))

    @property
    def has_references(self) -> bool:
        """Whether any experiment carries reference figures to set beside ours."""
        return any(e.reference is not None for e in self.experiment)

    @property
    def experiments(self) -> list[Experiment]:
        return list(self.experiment)

    def get(self, name: str) -> Experiment:
        for e in self.experiment:
            if e.name == name:
                return e
        raise KeyError(f"no experiment {name!r} in study {self.name!r}; it has: "
                       f"{', '.join(e.name for e in self.experiment)}")


def _check_exhibit(parts: tuple[str, ...], names: list[str], title: str) -> None:
    where = f"note {title!r}: show = {':'.join(parts)!r}"
    if parts == ("first_epoch",):
        return
    if parts[0] in ("pattern", "figure") and len(parts) == (2 if parts[0] == "pattern" else 3):
        if parts[1] not in names:
            raise ValueError(f"{where} names no experiment of this study; it has: {', '.join(names)}")
        return
    raise ValueError(f"{where} is not one of: {', '.join(NOTE_EXHIBITS)}")


def study_to_dict(study: Study) -> dict:
    """The resolved study as JSON-ready data (what a run directory's study.json holds)."""
    return study.model_dump(mode="json", exclude_none=True)


def protocol_differences(a: Study, b: Study) -> list[str]:
    """How two studies' shared experiments differ in anything but their title and reference figures.

    Comparing two runs is meaningful seed for seed only when their protocols agree; each string
    names one experiment and its differing settings, e.g. "exp6: l2 0.001 vs 0.01".
    """
    ignored = {"title", "reference"}
    found = []
    for name in [e.name for e in a.experiments if e.name in {x.name for x in b.experiments}]:
        left, right = a.get(name).model_dump(mode="json"), b.get(name).model_dump(mode="json")
        keys = sorted(k for k in set(left) | set(right) if k not in ignored and left.get(k) != right.get(k))
        if keys:
            found.append(f"{name}: " + ", ".join(f"{k} {left.get(k)} vs {right.get(k)}" for k in keys))
    return found
