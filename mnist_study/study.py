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

A study may also declare [[sweep]] grids, [[claim]]s, [[note]]s and [[curve]]s: figures of metrics
against a number (`Curve`), e.g. test error against the trained parameters, one line per label-noise
level. `mnist-study studies --schema` lists every key.

Unknown keys, wrong types and impossible values are errors that name the file, the key and the
reason, raised before any work starts.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SerializeAsAny, model_validator

from mnist_study.stats.claims import Claim, validate_claim_experiments
from mnist_study.errors import StudyError
from mnist_study.training.frontends import FrontendConfigBase, RawPixelsConfig, parse_frontend_config
from mnist_study.training.config import (ACTIVATIONS, INITS, KEEPS, L2_SCOPES, LOSSES, MAX_HIDDEN_LAYERS, MONITORS,
                                         SCHEDULES, TrainConfig)
from mnist_study.training.conv import MAX_CONV_LAYERS

OPTIMIZER_KINDS = ("rmsprop", "sgd", "adam", "adamw")


LARGE_SWEEP = 100_000  # more experiments than this only with `large_sweep = true`
MAX_EXPERIMENTS = 1_000_000  # refused before one is built (see studies/)


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
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=96,
                      description="letters, digits, ., - and _; claims, notes and --experiment name it")
    title: str = Field("", description="a line describing the network, for tables and the report")
    # -- data
    dataset: str = Field("mnist", min_length=1, description="\"mnist\", \"fashion-mnist\" or the path of a "
                                                           "folder with the four IDX files of another dataset")
    frontend: FrontendConfig = Field(RawPixelsConfig(), description="what the network sees of the pixels "
                                                                     "(see the front-ends below)")
    validation: Literal["last", "first"] = Field("last", description="which training images are held out for "
                                                                     "validation: the last (Keras' validation_split) "
                                                                     "or the first")
    validation_size: int = Field(5000, ge=1, description="how many training images are held out")
    train_size: int | None = Field(None, ge=1, description="train on a class-stratified random subset of this "
                                                          "many of the remaining images (drawn with data_seed)")
    label_noise: float = Field(0.0, ge=0, lt=1, description="fraction of training labels replaced by another "
                                                           "class (drawn with data_seed); validation and test "
                                                           "labels stay true")
    data_seed: int = Field(0, ge=0, description="seeds the train_size subset and the label noise; the same for "
                                                "every seed of the networks, so that they differ only in training")
    standardize: bool = Field(False, description="scale each input to zero mean and unit variance over the "
                                                 "training split (the scaling is saved with the network)")
    shift: int = Field(0, ge=0, le=8, description="augmentation: shift each training image by up to this many "
                                                  "pixels, drawn anew every epoch")
    elastic: bool = Field(False, description="augmentation: elastic distortions (Simard et al. 2003), drawn "
                                             "anew every epoch")
    elastic_alpha: float = Field(34.0, ge=0, description="strength of the elastic distortions, pixels")
    elastic_sigma: float = Field(4.0, gt=0, description="smoothness of the elastic distortions, pixels")
    # -- the network
    hidden: int | None = Field(None, ge=1, le=65536, description="hidden-layer width: the one-layer shorthand "
                                                                 "for layers = [hidden]")
    layers: list[Annotated[int, Field(ge=1, le=65536)]] | None = Field(
        None, max_length=MAX_HIDDEN_LAYERS, description=f"hidden-layer widths, 0 to {MAX_HIDDEN_LAYERS} of "
                                                        "them ([] is softmax regression)")
    conv: list[Annotated[int, Field(ge=1, le=1024)]] = Field(
        [], max_length=MAX_CONV_LAYERS, description=f"a convolutional network: the channels of 1 to "
                                                    f"{MAX_CONV_LAYERS} convolution layers (each k x k, ReLU, 2 x 2 "
                                                    "max pooling) before the hidden layers; raw pixels only")
    kernel_size: int = Field(5, ge=1, le=9, description="with conv: the convolutions' k (odd)")
    activation: Literal[ACTIVATIONS] = Field("relu", description="of every hidden layer")
    dropout: float | list[float] = Field(0.0, description="rate of hidden units dropped in training: one for "
                                                          "every hidden layer, or one per layer")
    init: Literal[INITS] = Field("glorot_uniform", description="how kernels are drawn (biases start at zero)")
    l2: float = Field(0.0, ge=0, description="penalty l2 * sum(W^2) on the kernels of l2_scope")
    l2_scope: Literal[L2_SCOPES] = Field("hidden", description="the kernels penalised: \"hidden\" (the paper) "
                                                               "or \"all\" (the output kernel too)")
    # -- training
    optimizer: Literal[OPTIMIZER_KINDS] = Field("rmsprop", description="rmsprop (Keras'), sgd, adam or adamw "
                                                                       "(torch.optim's)")
    learning_rate: float = Field(None, gt=0, description="default: 1e-3 (rmsprop, adam, adamw), 1e-2 (sgd)")
    momentum: float | None = Field(None, ge=0, lt=1, description="sgd only; default 0")
    nesterov: bool | None = Field(None, description="sgd only, with momentum; default false")
    rho: float | None = Field(None, gt=0, lt=1, description="rmsprop only: decay of the squared-gradient "
                                                            "average; default 0.9")
    betas: Annotated[list[float], Field(min_length=2, max_length=2)] | None = Field(None, description="adam and adamw only; default [0.9, 0.999]")
    epsilon: float | None = Field(None, gt=0, description="rmsprop, adam and adamw; default 1e-7 (rmsprop), "
                                                          "1e-8 (adam, adamw)")
    weight_decay: float | None = Field(None, ge=0, description="adamw only: decoupled weight decay; default "
                                                               "0.01 (torch.optim.AdamW's)")
    schedule: Literal[SCHEDULES] = Field("constant", description="the learning rate over epochs: constant, "
                                                                 "step (times step_factor every step_every "
                                                                 "epochs) or cosine (to 0 at max_epochs)")
    warmup_epochs: int = Field(0, ge=0, description="a linear warm-up of the learning rate over these epochs")
    step_every: int = Field(10, ge=1, description="schedule = \"step\": epochs between steps")
    step_factor: float = Field(0.1, gt=0, le=1, description="schedule = \"step\": the factor of each step")
    batch_size: int = Field(32, ge=1, le=1 << 20, description="images per optimiser step")
    loss: Literal[LOSSES] = Field("cross_entropy", description="cross_entropy, or squared_error on the outputs "
                                                               "against one-hot targets")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="targets (1 - s) on the label and s / 10 spread "
                                                                "over all classes")
    # -- stopping and the weights kept
    max_epochs: int = Field(200, ge=1, le=100_000, description="the most epochs trained")
    early_stopping: bool = Field(True, description="stop once `monitor` has not improved for `patience` epochs "
                                                   "(Keras' EarlyStopping)")
    monitor: Literal[MONITORS] = Field("val_accuracy", description="what early stopping watches")
    patience: int = Field(2, ge=1, description="epochs without a better `monitor` before stopping")
    stop_at_train_loss: float | None = Field(None, ge=0, description="also stop once an epoch's training loss is "
                                                                     "at or below this")
    keep: Literal[KEEPS] | None = Field(
        None, description="weights evaluated: best_val_loss, best_val_accuracy or final; default: best_val_loss "
                          "with early stopping, else final")
    reference: Reference | None = Field(None, description="published figures to set beside ours")
    # -- set by a [[sweep]]
    sweep: str | None = Field(None, description="the [[sweep]] this experiment comes from (set by the sweep)")
    swept: dict[str, Any] = Field({}, description="the swept fields' values (set by the sweep)")

    @model_validator(mode="before")
    @classmethod
    def _default_learning_rate(cls, data: Any) -> Any:
        # The usual rate of the optimiser chosen, written out so that tables and sweeps show it.
        if isinstance(data, dict) and data.get("learning_rate") is None:
            rate = DEFAULT_LEARNING_RATES.get(data.get("optimizer", "rmsprop"))
            if rate is not None:
                data = {**data, "learning_rate": rate}
        return data

    @model_validator(mode="after")
    def _check_design(self) -> "Experiment":
        if (self.hidden is None) == (self.layers is None):
            raise ValueError("give the hidden layers as `hidden = WIDTH` or as `layers = [WIDTH, ...]`"
                             + (", not both" if self.hidden is not None else ""))
        if self.conv:
            if self.frontend.kind != "raw":
                raise ValueError(f"a convolutional network (conv = {self.conv}) sees the image itself: use "
                                 f"frontend = {{ kind = \"raw\" }}, not {self.frontend.kind!r}")
            if self.kernel_size % 2 == 0:
                raise ValueError(f"kernel_size = {self.kernel_size}: it must be odd (3, 5, 7, 9) so that the "
                                 "convolutions keep the image's size")
        if isinstance(self.dropout, list) and len(self.dropout) != len(self.widths):
            raise ValueError(f"dropout lists {len(self.dropout)} rates for {len(self.widths)} hidden layers; "
                             "give one per layer, or one number for all")
        if any(not 0 <= rate < 1 for rate in self.dropout_rates):
            raise ValueError("dropout rates must be at least 0 and below 1")
        used = OPTIMIZER_SETTINGS[self.optimizer]
        stray = [key for key in ALL_OPTIMIZER_SETTINGS if getattr(self, key) is not None and key not in used]
        if stray:
            raise ValueError(f"{', '.join(stray)} {'does' if len(stray) == 1 else 'do'} not apply to "
                             f"optimizer = {self.optimizer!r}; it takes: {', '.join(used) or 'none of them'}")
        if self.nesterov and not self.momentum:
            raise ValueError("nesterov = true needs momentum > 0")
        if self.betas is not None and not all(0 <= b < 1 for b in self.betas):
            raise ValueError("betas must both be at least 0 and below 1")
        if self.warmup_epochs >= self.max_epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be below max_epochs ({self.max_epochs})")
        return self

    @property
    def widths(self) -> tuple[int, ...]:
        """The hidden layers' widths (one for `hidden = H`; none for softmax regression)."""
        return (self.hidden,) if self.hidden is not None else tuple(self.layers)

    @property
    def width(self) -> int:
        """The first hidden layer's width (the one the report looks inside); 0 without hidden layers."""
        return self.widths[0] if self.widths else 0

    @property
    def shape_text(self) -> str:
        """The hidden widths as tables print them: "130", "100-100", "0"; "conv16-32/128" for a CNN."""
        dense = "-".join(map(str, self.widths)) or "0"
        return f"conv{'-'.join(map(str, self.conv))}/{dense}" if self.conv else dense

    @property
    def dropout_rates(self) -> tuple[float, ...]:
        rates = self.dropout if isinstance(self.dropout, list) else [self.dropout] * len(self.widths)
        return tuple(rates)

    @property
    def augmented(self) -> bool:
        return bool(self.shift or self.elastic)

    @property
    def kept_weights(self) -> str:
        return self.keep or ("best_val_loss" if self.early_stopping else "final")

    def optimizer_config(self):
        from mnist_study.training.config import AdamConfig, RMSpropConfig, SGDConfig

        given = {key: getattr(self, key) for key in OPTIMIZER_SETTINGS[self.optimizer]
                 if getattr(self, key) is not None}
        lr = {"lr": self.learning_rate}
        if self.optimizer == "rmsprop":
            return RMSpropConfig(**lr, **given)
        if self.optimizer == "sgd":
            return SGDConfig(**lr, **given)
        if "betas" in given:
            given["betas"] = tuple(given["betas"])
        if self.optimizer == "adamw":
            given.setdefault("weight_decay", ADAMW_WEIGHT_DECAY)
        return AdamConfig(kind=self.optimizer, **lr, **given)

    def train_config(self) -> TrainConfig:
        from mnist_study.training.config import ScheduleConfig

        return TrainConfig(
            layers=self.widths, activation=self.activation, dropout=self.dropout_rates, init=self.init,
            l2=self.l2, l2_scope=self.l2_scope, max_epochs=self.max_epochs, early_stopping=self.early_stopping,
            monitor=self.monitor, patience=self.patience, stop_at_train_loss=self.stop_at_train_loss,
            keep=self.kept_weights, batch_size=self.batch_size, optimizer=self.optimizer_config(),
            schedule=ScheduleConfig(kind=self.schedule, warmup_epochs=self.warmup_epochs,
                                    step_every=self.step_every, step_factor=self.step_factor),
            loss=self.loss, label_smoothing=self.label_smoothing, model="cnn" if self.conv else "mlp",
            conv=tuple(self.conv), kernel_size=self.kernel_size)

    def split_args(self) -> dict:
        """Keyword arguments of data.splits.make_splits for this experiment's images and labels."""
        return {"validation": self.validation, "validation_size": self.validation_size,
                "train_size": self.train_size, "label_noise": self.label_noise, "data_seed": self.data_seed}

    def data_key(self) -> str:
        """Experiments with equal keys train on the same images and labels."""
        return (f"{self.dataset};validation={self.validation}:{self.validation_size};train_size={self.train_size};"
                f"label_noise={self.label_noise};data_seed={self.data_seed}")

    def frontend_key(self) -> str:
        """Experiments with the same front-end on the same split share one fitted front-end."""
        params = ",".join(f"{k}={v}" for k, v in self.frontend.model_dump().items())
        return f"{params};{self.data_key()}"


# The optimiser settings a study may give, and which optimiser takes which.
OPTIMIZER_SETTINGS = {
    "rmsprop": ("rho", "epsilon"),
    "sgd": ("momentum", "nesterov"),
    "adam": ("betas", "epsilon"),
    "adamw": ("betas", "epsilon", "weight_decay"),
}
ADAMW_WEIGHT_DECAY = 0.01  # torch.optim.AdamW's default; without it AdamW is Adam
DEFAULT_LEARNING_RATES = {"rmsprop": 1e-3, "sgd": 1e-2, "adam": 1e-3, "adamw": 1e-3}
ALL_OPTIMIZER_SETTINGS = ("momentum", "nesterov", "rho", "betas", "epsilon", "weight_decay")


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


class Sweep(_Strict):
    """A grid of experiments: `vary` lists values per field; the study has one experiment per combination.

    Fields in a `zip` group move together (their lists have equal lengths) instead of being crossed.
    The expanded experiments carry `sweep` (this sweep's name) and `swept` (their values).
    """

    name: str = Field("sweep", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=40,
                      description="names the sweep in tables; also the prefix of generated names if `names` "
                                  "is not given and there is more than one sweep")
    vary: dict[str, list[Any]] = Field(min_length=1, description="experiment field -> the values it takes")
    zip: list[list[str]] = Field([], description="groups of fields in `vary` whose values move together")
    names: str | None = Field(None, description="a template for the experiments' names, e.g. "
                                                "\"w{hidden}-{optimizer}\"; default: built from the swept values")
    baseline: dict[str, Any] = Field({}, description="the level each swept field's effects are measured "
                                                     "against, e.g. { optimizer = \"rmsprop\" }; default: "
                                                     "each field's first value")
    fixed: dict[str, Any] = Field({}, description="the other experiment fields given in the [[sweep]] table, "
                                                  "the same for every experiment of the sweep")


CURVE_METRICS = tuple(f"{split}_{kind}" for split in ("train", "validation", "test")
                      for kind in ("error", "accuracy", "loss"))
PARAMETERS = "parameters"  # a curve's x: the trained parameters of each experiment's network


def _numeric_fields() -> tuple[str, ...]:
    """Experiment fields that hold one number (or none): what a curve may put along x."""
    found = []
    for name, field in Experiment.model_fields.items():
        kinds = set(typing.get_args(field.annotation) or (field.annotation,)) - {type(None)}
        if kinds and kinds <= {int, float}:
            found.append(name)
    return tuple(found)


CURVE_X = (PARAMETERS, *_numeric_fields())


def _one_or_more(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class Mark(_Strict):
    """A vertical line on a curve's figure, e.g. { x = 40000, label = "n·K" }."""

    x: float = Field(description="where the line is drawn, in the unit of the curve's x")
    label: str = Field("", max_length=40, description="its label in the figure")


class Curve(_Strict):
    """A figure of metrics against a number, with 95% intervals over seeds, one line per value of `by`."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$", max_length=64,
                      description="letters, digits, - and _; unique among the study's curves")
    title: str = Field("", description="the figure's title (default: the metrics against x)")
    x: str = Field(description="\"parameters\" (each network's trained weights and biases) or a numeric "
                               "experiment field, e.g. hidden, train_size, label_noise; it need not be swept")
    y: Annotated[list[Literal[CURVE_METRICS]], BeforeValidator(_one_or_more)] = Field(
        min_length=1, description="the metrics, one panel each: {train,validation,test}_{error,accuracy,loss}; "
                                  "error is 100 - accuracy, in percent")
    by: str | None = Field(None, description="an experiment field: one line per value of it (default: one line)")
    sweep: str | None = Field(None, description="only the experiments of this [[sweep]] (default: every "
                                                "experiment of the study)")
    log_x: bool | None = Field(None, description="a log x axis; default: when the x values are positive and "
                                                 "span more than a factor of 20")
    log_y: bool = Field(False, description="a log y axis")
    marks: list[Mark] = Field([], description="vertical lines, e.g. [{ x = 40000, label = \"n·K\" }]")
    fit: Literal["power_law"] | None = Field(None, description="\"power_law\": fit y = c·x^(-alpha) to each "
                                                               "line, alpha with a 95% bootstrap interval over "
                                                               "seeds; only with one y")

    @model_validator(mode="after")
    def _check_fields(self) -> "Curve":
        if self.x not in CURVE_X:
            raise ValueError(f"x = {self.x!r} is not a number an experiment has{_close(self.x, CURVE_X)}; use "
                             f"{PARAMETERS!r} or a numeric experiment field: {', '.join(CURVE_X[1:])}")
        if self.by is not None and self.by not in Experiment.model_fields:
            raise ValueError(f"by = {self.by!r} is not an experiment field{_close(self.by, Experiment.model_fields)}"
                             "; give the field whose values make the lines, e.g. label_noise or hidden")
        if self.by is not None and self.by == self.x:
            raise ValueError(f"by = {self.by!r} is x too; a line per value of x has one point each")
        repeated = sorted({m for m in self.y if self.y.count(m) > 1})
        if repeated:
            raise ValueError(f"y lists {', '.join(repeated)} more than once")
        if self.fit is not None and len(self.y) > 1:
            raise ValueError(f"fit = {self.fit!r} fits one metric, and y lists {len(self.y)} "
                             f"({', '.join(self.y)}); give one y, or add a second [[curve]] for the fit")
        return self


def _close(word: str, choices) -> str:
    import difflib

    found = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {found[0]!r}?)" if found else ""


class Study(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64,
                      description="names the run directory, runs/<name>-<timestamp>")
    description: str = Field("", description="a line saying what the study asks")
    reference_source: str = Field("reference", min_length=1, max_length=40,
                                  description="whose figures `reference` holds, as the tables name them "
                                              "(e.g. \"paper\")")
    experiment: list[Experiment] = Field(min_length=1, max_length=MAX_EXPERIMENTS,
                                         description="the networks to train, one table each")
    sweep: list[Sweep] = Field([], description="grids of experiments (see [[sweep]]); their experiments are "
                                               "in `experiment` once the study is read")
    large_sweep: bool = Field(False, description=f"allow more than {LARGE_SWEEP:,} experiments")
    analyse: list[str] = Field([], description="experiments the report looks inside (confusion, curves, "
                                               "hidden nodes); default: all of a study without sweeps, else "
                                               "the few best by validation accuracy")
    claim: list[Claim] = Field([], description="statements to test over seeds (see [[claim]])")
    note: list[Note] = Field([], description="notes for the report (see [[note]])")
    curve: list[Curve] = Field([], description="figures of metrics against a number, over seeds (see [[curve]])")

    @model_validator(mode="after")
    def _check_names(self) -> "Study":
        names = [e.name for e in self.experiment]
        seen: set[str] = set()
        duplicates = sorted({n for n in names if n in seen or seen.add(n)})
        if duplicates:
            raise ValueError(f"experiment names must be unique; repeated: {', '.join(duplicates)}")
        validate_claim_experiments(self.claim, names)
        if len(names) > LARGE_SWEEP and not self.large_sweep:
            raise ValueError(f"{len(names):,} experiments is more than {LARGE_SWEEP:,}; if that is meant, "
                             "add `large_sweep = true` to the study")
        unknown = sorted(set(self.analyse) - set(names))
        if unknown:
            raise ValueError(f"analyse names no experiment of this study: {', '.join(unknown)}")
        for note in self.note:
            for parts in note.exhibits():
                _check_exhibit(parts, names, note.title)
        _check_curves(self.curve, [s.name for s in self.sweep])
        return self

    def check_split_sizes(self, n_train: int | Mapping[str, int], source: str | None = None) -> None:
        """Raise StudyError unless every experiment's splits fit its dataset's training images.

        `n_train` is the number of training images, or a dataset name -> that number. Checked once the
        data is loaded and before any work: a split that cannot be made must not end a run halfway,
        and a train_size beyond what is there is an error, not silently capped.
        """
        problems = []
        for e in self.experiment:
            n = n_train if isinstance(n_train, int) else n_train[e.dataset]
            if not 0 < e.validation_size < n:
                problems.append(f"experiment {e.name!r} > validation_size: {e.validation_size:,} must be below "
                                f"the {n:,} training images of {e.dataset}")
            elif e.train_size is not None and e.train_size > n - e.validation_size:
                problems.append(f"experiment {e.name!r} > train_size: {e.train_size:,} is more than the "
                                f"{n - e.validation_size:,} training images of {e.dataset} left after holding "
                                f"out {e.validation_size:,} for validation")
        where = source or f"study {self.name!r}"
        if len(problems) == 1:
            raise StudyError(f"{where} does not fit this dataset: {problems[0]}")
        if problems:
            raise StudyError(f"{where} does not fit this dataset:\n" + "\n".join(f"  - {p}" for p in problems))

    @property
    def datasets(self) -> list[str]:
        """The datasets the experiments train on, in order of first use."""
        return list(dict.fromkeys(e.dataset for e in self.experiment))

    @property
    def has_sweeps(self) -> bool:
        return bool(self.sweep)

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


def _check_curves(curves: list[Curve], sweeps: list[str]) -> None:
    seen: set[str] = set()
    repeated = sorted({c.name for c in curves if c.name in seen or seen.add(c.name)})
    if repeated:
        raise ValueError(f"curve names must be unique; repeated: {', '.join(repeated)}")
    for c in curves:
        if c.sweep is not None and c.sweep not in sweeps:
            has = f"it has: {', '.join(sweeps)}" if sweeps else "it has none"
            raise ValueError(f"curve {c.name!r} > sweep: {c.sweep!r} names no [[sweep]] of this study ({has}); "
                             "name one of them, or leave `sweep` out for every experiment")


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
