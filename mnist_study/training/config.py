"""What training needs to know, as frozen dataclasses: the network, the optimiser, the schedule, the rules.

A study's experiment (study.py) is translated into a TrainConfig by `Experiment.train_config()`;
the trainer never sees the study. Defaults are the paper's: one ReLU layer, Glorot-uniform
kernels, Keras' RMSprop at 1e-3, batches of 32, categorical cross-entropy, an L2 penalty on the
hidden kernel, early stopping on validation accuracy with the best-validation-loss weights kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu")
INITS = ("glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_normal")
LOSSES = ("cross_entropy", "squared_error")
SCHEDULES = ("constant", "step", "cosine")
MONITORS = ("val_accuracy", "val_loss")
KEEPS = ("best_val_loss", "best_val_accuracy", "final")
L2_SCOPES = ("hidden", "all")
MODEL_KINDS = ("mlp", "cnn")
MAX_HIDDEN_LAYERS = 4


@dataclass(frozen=True, kw_only=True)
class RMSpropConfig:
    """Keras' RMSprop and its defaults: learning rate, decay of the squared-gradient average, epsilon."""

    kind: Literal["rmsprop"] = "rmsprop"  # the name in OPTIMIZERS
    lr: float = 1e-3
    rho: float = 0.9
    epsilon: float = 1e-7


@dataclass(frozen=True, kw_only=True)
class SGDConfig:
    """torch.optim.SGD: plain, with (heavy-ball) momentum, or Nesterov's."""

    kind: Literal["sgd"] = "sgd"
    lr: float = 1e-2
    momentum: float = 0.0
    nesterov: bool = False


@dataclass(frozen=True, kw_only=True)
class AdamConfig:
    """torch.optim.Adam (weight_decay = 0) and torch.optim.AdamW (kind "adamw": decoupled weight decay)."""

    kind: Literal["adam", "adamw"] = "adam"
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    epsilon: float = 1e-8
    weight_decay: float = 0.0  # adamw only; the L2 penalty (`l2`) is the coupled kind


OptimizerConfig = RMSpropConfig | SGDConfig | AdamConfig


@dataclass(frozen=True, kw_only=True)
class ScheduleConfig:
    """The learning rate of each epoch (1-based), as a multiple of the optimiser's `lr`.

    A linear warm-up over the first `warmup_epochs` epochs (epoch e gets e / (warmup + 1) ... up to 1),
    then: "constant"; "step" multiplies by `step_factor` every `step_every` epochs; "cosine" anneals
    from 1 to 0 over the epochs left until `max_epochs`.
    """

    kind: Literal["constant", "step", "cosine"] = "constant"
    warmup_epochs: int = 0
    step_every: int = 10
    step_factor: float = 0.1


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """One network's architecture and training protocol; `hidden=H` is the one-layer shorthand."""

    hidden: int | None = None              # the one-layer shorthand: layers = (hidden,)
    layers: tuple[int, ...] | None = None  # widths of the hidden layers, 0 to MAX_HIDDEN_LAYERS of them
    activation: str = "relu"
    dropout: tuple[float, ...] = ()        # per hidden layer (empty: none); rate of units dropped
    init: str = "glorot_uniform"
    l2: float = 0.0
    l2_scope: str = "hidden"               # "hidden": hidden kernels only (the paper); "all": every kernel
    max_epochs: int = 200
    early_stopping: bool = True
    monitor: str = "val_accuracy"          # what early stopping watches (val_loss: lower is better)
    patience: int = 2
    stop_at_train_loss: float | None = None  # stop once the epoch's training loss is at or below this
    keep: str = "best_val_loss"            # or "best_val_accuracy", "final"
    batch_size: int = 32
    optimizer: OptimizerConfig = field(default_factory=RMSpropConfig)  # its `kind` names it in OPTIMIZERS
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: str = "cross_entropy"            # or "squared_error": on the outputs against one-hot targets
    label_smoothing: float = 0.0
    model: str = "mlp"                     # a name in model.MODELS: "mlp", or "cnn" (needs conv)
    conv: tuple[int, ...] = ()             # "cnn": each convolution layer's channels (conv.py)
    kernel_size: int = 5                   # "cnn": the convolutions' k x k

    def __post_init__(self):
        if self.layers is None:
            if self.hidden is None:
                raise ValueError("a TrainConfig needs hidden=H or layers=(H1, ...)")
            object.__setattr__(self, "layers", (self.hidden,))
        else:
            object.__setattr__(self, "layers", tuple(self.layers))
            object.__setattr__(self, "hidden", self.layers[0] if self.layers else None)
        object.__setattr__(self, "dropout", tuple(self.dropout))
        object.__setattr__(self, "conv", tuple(self.conv))

    @property
    def is_paper_family(self) -> bool:
        """The paper's network and protocol (any width, l2, epochs, stopping, batch size, learning rate):
        what the compiled epoch and the hand-written eager step train."""
        return (self.model == "mlp" and len(self.layers) == 1 and self.activation == "relu"
                and not any(self.dropout) and self.init == "glorot_uniform" and self.l2_scope == "hidden"
                and self.optimizer.kind == "rmsprop" and self.schedule.kind == "constant"
                and self.schedule.warmup_epochs == 0 and self.loss == "cross_entropy"
                and self.label_smoothing == 0.0)

    def paper_differences(self) -> list[str]:
        """How this config leaves the paper's family, in words (empty when `is_paper_family`)."""
        differences = [
            (self.model != "mlp", f"model {self.model!r}" + (f" (convolutions {list(self.conv)})" if self.conv else "")),
            (len(self.layers) != 1, f"{len(self.layers)} hidden layers"),
            (self.activation != "relu", f"activation {self.activation!r}"),
            (any(self.dropout), f"dropout {self.dropout}"),
            (self.init != "glorot_uniform", f"init {self.init!r}"),
            (self.l2_scope != "hidden", f"l2_scope {self.l2_scope!r}"),
            (self.optimizer.kind != "rmsprop", f"optimiser {self.optimizer.kind!r}"),
            (self.schedule.kind != "constant" or self.schedule.warmup_epochs != 0, "a learning-rate schedule"),
            (self.loss != "cross_entropy", f"loss {self.loss!r}"),
            (self.label_smoothing != 0.0, f"label_smoothing {self.label_smoothing}"),
        ]
        return [text for differs, text in differences if differs]

    def validate(self) -> "TrainConfig":
        """Raise ValueError naming the first field whose value is out of range; return self."""
        def check(ok: bool, key: str, expected: str) -> None:
            if not ok:
                raise ValueError(f"TrainConfig.{key} = {getattr(self, key)!r}: expected {expected}")

        check(len(self.layers) <= MAX_HIDDEN_LAYERS and all(isinstance(w, int) and w >= 1 for w in self.layers),
              "layers", f"0 to {MAX_HIDDEN_LAYERS} positive widths")
        check(self.activation in ACTIVATIONS, "activation", f"one of {', '.join(ACTIVATIONS)}")
        check(self.model in MODEL_KINDS, "model", f"one of {', '.join(MODEL_KINDS)}")
        check((self.model == "cnn") == bool(self.conv), "conv",
              "channels for every convolution layer with model 'cnn', and none with 'mlp'")
        if self.conv:
            from mnist_study.training.conv import check_stem

            try:
                check_stem(self.conv, self.kernel_size)
            except ValueError as error:
                raise ValueError(f"TrainConfig.conv = {self.conv!r}, kernel_size = {self.kernel_size}: {error}") from None
        check(len(self.dropout) in (0, len(self.layers)) and all(0.0 <= p < 1.0 for p in self.dropout),
              "dropout", f"no rates or one per hidden layer ({len(self.layers)}), each in [0, 1)")
        check(self.init in INITS, "init", f"one of {', '.join(INITS)}")
        check(self.l2 >= 0.0, "l2", "a penalty >= 0")
        check(self.l2_scope in L2_SCOPES, "l2_scope", f"one of {', '.join(L2_SCOPES)}")
        check(self.max_epochs >= 1, "max_epochs", "at least 1")
        check(self.monitor in MONITORS, "monitor", f"one of {', '.join(MONITORS)}")
        check(self.patience >= 0, "patience", "at least 0")
        check(self.keep in KEEPS, "keep", f"one of {', '.join(KEEPS)}")
        check(self.batch_size >= 1, "batch_size", "at least 1")
        check(self.loss in LOSSES, "loss", f"one of {', '.join(LOSSES)}")
        check(0.0 <= self.label_smoothing < 1.0, "label_smoothing", "a fraction in [0, 1)")
        check(self.schedule.kind in SCHEDULES and self.schedule.warmup_epochs >= 0 and self.schedule.step_every >= 1,
              "schedule", f"kind one of {', '.join(SCHEDULES)}, warmup_epochs >= 0, step_every >= 1")
        return self
