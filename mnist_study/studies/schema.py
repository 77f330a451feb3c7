"""The study-file reference, generated from the schema itself so that it cannot drift from it.

    mnist-study studies --schema

Every key of every table, with its type, default and meaning, comes from the pydantic models
(study.py, the front-ends' configs, claims); the check grammar is the one `stats/checks.py` parses.
"""

from __future__ import annotations

import inspect
import textwrap
import types
import typing

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from mnist_study.stats import checks
from mnist_study.stats.claims import Claim
from mnist_study.studies.sweep import PREFIXES
from mnist_study.study import LARGE_SWEEP, Curve, Experiment, Mark, Note, Reference, Study, Sweep
from mnist_study.training.frontends import FRONTENDS

_LABELS = {Study: "top level", Experiment: "[[experiment]]", Reference: "reference = { ... }",
           Note: "[[note]]", Claim: "[[claim]]", Sweep: "[[sweep]]", Curve: "[[curve]]",
           Mark: "marks = [{ ... }] of a [[curve]]"}

SWEEP_EXAMPLE = """\
[[sweep]]
name = "width-optimiser"
max_epochs = 20                             # any experiment key: the same in every experiment
zip = [["optimizer", "learning_rate"]]      # optional: fields that move together
[sweep.vary]
hidden = [10, 30, 130]
optimizer = ["rmsprop", "adam", "sgd"]
learning_rate = [0.001, 0.001, 0.01]"""

SWEEP_TEXT = [
    ("is 9 experiments (w10-rmsprop-lr0.001, w10-adam-lr0.001, ..., w130-sgd-lr0.01), added to the study's "
     "experiments when the file is read: the product of the vary fields, the first outermost, a zip group moving "
     "as one field. Each carries sweep = \"width-optimiser\" and swept = its values."),
    ("Generated names write each swept value with a short prefix ("
     + ", ".join(f"{field} {prefix}" for field, prefix in PREFIXES.items()) + "; other fields in full), "
     "strings as themselves, booleans as the field or no-<field>, front-end tables as their kind and the "
     "parameters that differ; with several sweeps, prefixed by the sweep's name. A `names` template is "
     "filled with str.format from the swept and fixed fields and {sweep}."),
    f"More than {LARGE_SWEEP:,} experiments needs `large_sweep = true`.",
    ("A derived study inherits a base's swept experiments like any others: `only` may name them, and "
     "[every_experiment] sets their keys but not the fields their sweep varies."),
    ("In a claim, {optimizer=adam}.test stands for the experiments whose swept optimizer is adam "
     "(see \"Claim checks\" below)."),
]

CURVE_EXAMPLE = """\
[[curve]]
name = "double-descent"
x = "parameters"                            # or a numeric experiment field: hidden, train_size, ...
y = ["test_error", "train_error", "test_loss"]
by = "label_noise"                          # optional: one line per value
sweep = "double-descent"                    # optional: only this sweep's experiments
marks = [{ x = 40000, label = "n·K" }]      # optional: vertical lines"""

CURVE_TEXT = [
    ("draws each metric against x in a panel of its own: per x and line, the mean over seeds with its 95% "
     "interval (Student t; several experiments of one seed at the same point are averaged first). Diverged "
     "networks are left out and counted; experiments whose x is not set (train_size left out, say) are left "
     "out. `fit = \"power_law\"` fits log y on log x by least squares over the per-x means, per line, and "
     "gives alpha a 95% bootstrap interval over seeds (resampled jointly across x); points whose mean or x is "
     "0 or less are left out of the fit and counted. The `show` command prints each curve as a table; the "
     "report draws it in its \"Curves\" section."),
]


EXTENDING = [
    ("extends", "string", "—", "a built-in study, or a TOML file relative to this one, to start from"),
    ("only", "list of names", "—", "keep just these of the base's experiments (and its claims and notes "
                                   "that name no other, and its curves but those of a dropped sweep)"),
    ("[every_experiment]", "table", "—", "experiment keys set in every inherited experiment (in swept ones too, "
                                         "but not the fields their sweep varies); in a study that extends none, "
                                         "the default of its own experiments and sweeps (e.g. dataset)"),
    ("[[experiment]] with a base name", "table", "—", "its keys replace that experiment's (not a swept "
                                                      "experiment's swept fields); a new name adds one"),
    ("[[sweep]]", "table", "—", "adds a sweep beside the base's, under a name of its own"),
]


def _type_name(annotation) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in typing.get_args(annotation) if a is not type(None)]
        return " | ".join(names) + (" (optional)" if type(None) in typing.get_args(annotation) else "")
    if origin is list:
        return f"list of {_type_name(typing.get_args(annotation)[0])}"
    if origin is dict:
        return f"table of {_type_name(typing.get_args(annotation)[1])}"
    if origin is tuple:
        return "[" + ", ".join(_type_name(a) for a in typing.get_args(annotation)) + "]"
    if annotation is typing.Any:
        return "any value"
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return "table" if annotation not in (Reference, Mark) else "inline table"
    return {str: "string", int: "integer", float: "number", bool: "true | false"}.get(annotation, "front-end")


def _default(field) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "{ " + ", ".join(f"{k} = {v!r}" for k, v in value.model_dump().items()) + " }"
    return "—" if value is None or value == [] else repr(value)


def _constraints(field) -> str:
    bounds = []
    for item in field.metadata:
        for name, symbol in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"), ("min_length", "length ≥")):
            value = getattr(item, name, None)
            if value is not None:
                bounds.append(f"{symbol} {value}")
    return f" ({', '.join(bounds)})" if bounds else ""


def _table(model: type[BaseModel], label: str, skip: tuple[str, ...] = ()) -> list[str]:
    lines = [label]
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        meaning = (field.description or "").strip()
        lines.append(f"  {name}: {_type_name(field.annotation)}{_constraints(field)}; default {_default(field)}")
        if meaning:
            lines += textwrap.wrap(meaning, 96, initial_indent="      ", subsequent_indent="      ")
    return lines


def schema_text() -> str:
    """The whole reference as plain text: tables, keys, types, defaults, meanings; the grammar."""
    parts = ["A study file is TOML. Unknown keys and wrong types are errors (integers are accepted for numbers).",
             ""]
    for model in (Study, Experiment, Reference):
        parts += _table(model, _LABELS[model]) + [""]
    parts.append("frontend = { kind = ..., ... }  (one of the registered front-ends)")
    for cls in FRONTENDS.values():
        config = cls.Config
        parts += [f"  kind = {cls.kind!r}: {config().describe() if _has_defaults(config) else config.__doc__}"]
        parts += ["  " + line for line in _table(config, "", skip=("kind",))[1:]]
    parts.append("")
    parts += _table(Sweep, _LABELS[Sweep]) + [""]
    parts += [textwrap.indent(SWEEP_EXAMPLE, "    "), ""]
    for paragraph in SWEEP_TEXT:
        parts += textwrap.wrap(paragraph, 96, initial_indent="  ", subsequent_indent="  ")
    parts.append("")
    for model in (Claim, Note):
        parts += _table(model, _LABELS[model]) + [""]
    for model in (Curve, Mark):
        parts += _table(model, _LABELS[model]) + [""]
    parts += [textwrap.indent(CURVE_EXAMPLE, "    "), ""]
    for paragraph in CURVE_TEXT:
        parts += textwrap.wrap(paragraph, 96, initial_indent="  ", subsequent_indent="  ")
    parts.append("")
    parts.append("Extending another study")
    for key, kind, default, meaning in EXTENDING:
        parts.append(f"  {key}: {kind}")
        parts += textwrap.wrap(meaning, 96, initial_indent="      ", subsequent_indent="      ")
    parts += ["", "Claim checks", textwrap.indent(textwrap.dedent(checks.__doc__.split("::", 1)[1]).strip("\n"), "  ")]
    return "\n".join(parts).rstrip() + "\n"


def _has_defaults(config: type[BaseModel]) -> bool:
    return all(f.default is not PydanticUndefined or f.default_factory for f in config.model_fields.values())
