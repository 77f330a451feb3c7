"""Sweeps: a grid of experiments written once, and claims that hold "at every other setting".

    [[sweep]]
    name = "width-optimiser"                 # optional (default "sweep")
    max_epochs = 20                          # any other experiment key: the same in every experiment
    train_size = 10000
    zip = [["optimizer", "learning_rate"]]   # optional: fields whose values move together
    baseline = { optimizer = "rmsprop" }     # optional: the level effects are measured against
    names = "w{hidden}-{optimizer}"          # optional; default: built from the swept values
    [sweep.vary]
    hidden = [10, 30, 130]
    optimizer = ["rmsprop", "adam", "sgd"]
    learning_rate = [0.001, 0.001, 0.01]

is nine experiments, w10-rmsprop, w10-adam, w10-sgd, w30-rmsprop, ... (without `names`:
w10-rmsprop-lr0.001, w10-adam-lr0.001, w10-sgd-lr0.01, ...): the product of the `vary` fields, the first field outermost, each `zip` group moving as one field
(its lists have equal lengths). Every value is a list, so `layers = [[100], [50, 50]]` sweeps two
shapes. Each experiment gets the sweep's other keys, its own values, `sweep` (the sweep's name) and
`swept` (its values), and is appended to the study's `experiment` list before anything is
validated, so it is checked, stored and run like any other. The study keeps the sweep itself in
the shape of `study.Sweep` (name, vary, zip, names, baseline, and `fixed`: the other keys).

Names. A `names` template is filled with str.format from the swept and fixed fields (and
`{sweep}`, the sweep's name). Without one, each swept value gives a part: a short prefix and the
number (w130, l100x100, lr0.001, bs64, n10000, noise0.2, drop0.5, ep20, ...; other fields as
field+value, e.g. patience5), a string as itself (adam, tanh, cosine; a dataset path as its folder's
name), a boolean as the field or no-<field>, a front-end table as its kind and the parameters that
differ between its values (pca-variance0.95). With several sweeps in a study, generated names start
with the sweep's name. Characters a name may not hold become "_"; names must be unique in the study.

Sizes are computed before anything is built: more than `study.LARGE_SWEEP` experiments needs
`large_sweep = true`, and more than `study.MAX_EXPERIMENTS` is refused.

Studies that extend others. A base study's sweeps are expanded when the base is read, so the
derived study inherits their experiments like any other: `only` may name them, an `[[experiment]]`
with one of their names replaces its keys (but not its swept fields), and `[every_experiment]` sets
its keys in them, except the fields the sweep varies. So, for an inherited swept experiment, the
precedence is: the base sweep's fixed keys < [every_experiment] < the swept values (a "quick"
variant with `max_epochs = 4` shortens a base sweep that fixed 20, and cannot flatten its grid).
As for [[experiment]] tables, a study's own [[sweep]] tables say their keys themselves:
[every_experiment] is about what is inherited. A derived study's [[sweep]] adds a sweep; it may not
reuse a base sweep's name. A base sweep whose experiments `only` drops entirely is dropped too.

Claims that hold "at every other setting" of a sweep are in selectors.py.
"""

from __future__ import annotations

import difflib
import itertools
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnist_study.errors import StudyError
from mnist_study.study import LARGE_SWEEP, MAX_EXPERIMENTS, Experiment, Sweep

SWEEP_KEYS = tuple(Sweep.model_fields)  # name, vary, zip, names, baseline, fixed
SET_BY_SWEEP = ("sweep", "swept")       # Experiment fields that a sweep sets, never a study file
# Short prefixes of generated names; a field not here is written out (patience5, epsilon1e-07).
PREFIXES = {"hidden": "w", "layers": "l", "learning_rate": "lr", "batch_size": "bs", "train_size": "n",
            "label_noise": "noise", "dropout": "drop", "l2": "l2", "momentum": "m", "weight_decay": "wd",
            "label_smoothing": "ls", "warmup_epochs": "warm", "max_epochs": "ep", "data_seed": "ds",
            "shift": "shift"}
_NAME_FIELD = Experiment.model_fields["name"]
MAX_NAME = next(m.max_length for m in _NAME_FIELD.metadata if getattr(m, "max_length", None))
_NOT_IN_NAMES = re.compile(r"[^A-Za-z0-9_.-]+")


# ---------------------------------------------------------------------------------- expanding

def expand_sweeps(data: dict, source: str = "<study>", inherited: Sequence[dict] = ()) -> dict:
    """`data` (a study as TOML parses it) with its [[sweep]] tables expanded into experiments.

    Returns a new dict: `experiment` holds the study's experiments, then each sweep's in order;
    `sweep` holds `inherited` (sweeps already expanded, a base study's, in `study.Sweep`'s shape)
    and then the study's own sweeps in that shape. `data` itself is not changed.

    Raises StudyError, naming `source`, the sweep and the key, for a sweep that cannot be expanded,
    names that collide, or more experiments than allowed (computed before any is built).
    """
    raw = data.get("sweep", [])
    if not raw and not inherited:
        return data
    if not isinstance(raw, list):
        raise StudyError(f"{source}: sweep must be a list of tables ([[sweep]]), got {_short(raw)}")
    experiments = data.get("experiment", [])
    if not isinstance(experiments, list):
        raise StudyError(f"{source}: experiment must be a list of tables ([[experiment]]), got {_short(experiments)}")
    plans = [_plan(entry, index, source) for index, entry in enumerate(raw)]
    taken_sweeps = [s.get("name") for s in inherited]
    for plan in plans:
        if plan.name in taken_sweeps:
            whose = "a base study's sweep" if plan.name in [s.get("name") for s in inherited] else "another sweep"
            hint = "; give each [[sweep]] its own `name`" if "name" not in raw[plan.index] else ""
            raise StudyError(f"{source}: {plan.where} > name: {plan.name!r} is already the name of {whose}{hint}")
        taken_sweeps.append(plan.name)

    total = len(experiments) + sum(plan.size for plan in plans)
    if total > MAX_EXPERIMENTS:
        raise StudyError(f"{source}: the sweeps make {total:,} experiments in all; a study may have at most "
                         f"{MAX_EXPERIMENTS:,} ({_sizes(plans)}). Split it into several studies.")
    if total > LARGE_SWEEP and data.get("large_sweep") is not True:
        raise StudyError(f"{source}: the sweeps make {total:,} experiments in all ({_sizes(plans)}), more than "
                         f"{LARGE_SWEEP:,}; if that is meant, add `large_sweep = true` to the study")

    taken = {}  # name -> (the plan or sweep name that made it, or None for an [[experiment]]; its values)
    for e in experiments:
        name = e.get("name") if isinstance(e, dict) else None
        if isinstance(name, str) and name not in taken:
            taken[name] = (f"sweep {e['sweep']!r}" if e.get("sweep") else None, e.get("swept"))
    several = len(taken_sweeps) > 1
    added = []
    for plan in plans:
        for experiment in plan.experiments(prefix=several):
            name = experiment["name"]
            if name in taken:
                raise StudyError(f"{source}: {_collision(plan, name, experiment['swept'], *taken[name])}")
            taken[name] = (plan.where, experiment["swept"])
            added.append(experiment)
    return {**data, "experiment": experiments + added, "sweep": [*inherited, *(p.entry() for p in plans)]}


@dataclass
class _Plan:
    """One [[sweep]] table, checked, before any experiment is built."""

    source: str
    index: int
    name: str
    where: str                  # how messages name it: sweep 'width' or sweep #2
    vary: dict[str, list]
    zip: list[list[str]]
    axes: list[tuple[str, ...]]  # the fields of each axis of the product, outermost first
    fixed: dict[str, Any]
    names: str | None
    baseline: dict[str, Any]

    @property
    def size(self) -> int:
        return math.prod(len(self.vary[axis[0]]) for axis in self.axes)

    def entry(self) -> dict:
        """The sweep as the study keeps it (the shape of `study.Sweep`)."""
        entry = {"name": self.name, "vary": self.vary, "zip": self.zip, "names": self.names,
                 "baseline": self.baseline, "fixed": self.fixed}
        return {k: v for k, v in entry.items() if v is not None}

    def name_hint(self) -> str:
        if self.names is None:
            return "give the sweep a `names` template, e.g. names = \"" + "-".join(
                f"{PREFIXES.get(f, f)}{{{f}}}" for f in self.vary) + "\""
        missing = [f for f in self.vary if "{" + f not in self.names]
        return (f"the template {self.names!r} leaves out {', '.join(missing)}" if missing
                else f"the template {self.names!r} gives both the same name")

    def experiments(self, prefix: bool) -> Iterator[dict]:
        """The sweep's experiments as study-file tables, in order (the first axis outermost)."""
        fields = list(self.vary)
        order = [f for axis in self.axes for f in axis]  # a zip group moves its fields next to its first
        # Each axis's levels as (values, name parts) once: the loop below only joins them.
        levels = [[(tuple(self.vary[f][i] for f in axis),
                    tuple(_NOT_IN_NAMES.sub("_", name_part(f, self.vary[f][i], self.vary[f])) for f in axis))
                   for i in range(len(self.vary[axis[0]]))] for axis in self.axes]
        head = f"{_sanitise(self.name)}-" if prefix else ""
        for combination in itertools.product(*levels):
            swept = dict(zip(order, itertools.chain.from_iterable(values for values, _ in combination)))
            if order != fields:
                swept = {f: swept[f] for f in fields}
            if self.names is not None:
                name = self._from_template(swept)
            elif order == fields:
                name = (head + "-".join(itertools.chain.from_iterable(parts for _, parts in combination))).lstrip("._-")
            else:
                parts = dict(zip(order, itertools.chain.from_iterable(parts for _, parts in combination)))
                name = (head + "-".join(parts[f] for f in fields)).lstrip("._-")
            if not name or len(name) > MAX_NAME:
                problem = "is empty" if not name else f"is longer than {MAX_NAME} characters"
                raise StudyError(f"{self.source}: {self.where}: the name of its experiment {_values(swept)}, "
                                 f"{name!r}, {problem}; " + ("change the template" if self.names else self.name_hint()))
            yield {"name": name, **self.fixed, **swept, "sweep": self.name, "swept": swept}

    def _from_template(self, swept: dict) -> str:
        values = {k: _template_value(k, v, self.vary.get(k, ())) for k, v in {**self.fixed, **swept}.items()}
        try:
            return _sanitise(self.names.format(sweep=self.name, **values))
        except KeyError as error:
            key = str(error.args[0])
            known = sorted({*values, "sweep"})
            raise StudyError(f"{self.source}: {self.where} > names: {{{key}}} is not a field this sweep sets"
                             f"{suggest_key(key, known)}; it sets: {', '.join(known)}") from None
        except IndexError:
            raise StudyError(f"{self.source}: {self.where} > names: name each placeholder, e.g. {{hidden}}, not {{}} "
                             f"(in {self.names!r})") from None
        except (ValueError, AttributeError, TypeError) as error:
            raise StudyError(f"{self.source}: {self.where} > names: {self.names!r} is not a template: "
                             f"{error}") from None


def _collision(plan: _Plan, name: str, swept: dict, other: str | None, other_swept: dict | None) -> str:
    """Why two experiments share `name`, naming both sources."""
    this = f"{plan.where} names its experiment {_values(swept)} {name!r}"
    if other is None:
        return f"{this}, the name of an [[experiment]] of the study; rename that one, or {plan.name_hint()}"
    if other == plan.where:
        return f"{this}, and its experiment {_values(other_swept)} too; {plan.name_hint()}"
    return f"{this}, which {other} gives its experiment {_values(other_swept or {})}; {plan.name_hint()}"


def _plan(entry: Any, index: int, source: str) -> _Plan:
    """Check one raw [[sweep]] table; every problem is a StudyError naming the sweep and the key."""
    if not isinstance(entry, dict):
        raise StudyError(f"{source}: sweep #{index + 1}: must be a table ([[sweep]]), got {_short(entry)}")
    name = entry.get("name", "sweep")
    where = f"sweep {name!r}" if "name" in entry and isinstance(name, str) else f"sweep #{index + 1}"

    def fail(key: str, problem: str) -> StudyError:
        return StudyError(f"{source}: {where}{' > ' + key if key else ''}: {problem}")

    if not isinstance(name, str):
        raise fail("name", f"must be a string (got {_short(name)})")
    settable = set(Experiment.model_fields) - {"name", *SET_BY_SWEEP}
    vary = entry.get("vary")
    if vary is None:
        raise fail("", "needs a [sweep.vary] table: each field to vary and the list of its values, "
                       "e.g. hidden = [10, 30, 130]")
    if not isinstance(vary, dict) or not vary:
        raise fail("vary", f"must be a table of fields and their lists of values, e.g. vary = {{ hidden = [10, 30] }} "
                           f"(got {_short(vary)})")
    for key, values in vary.items():
        if problem := _field_problem(key, settable):
            raise fail(f"vary > {key}", problem)
        if not isinstance(values, list):
            raise fail(f"vary > {key}", f"must be a list of the values it takes, e.g. {key} = [{_toml(values)}] "
                                        f"(got {_short(values)})")
        if not values:
            raise fail(f"vary > {key}", "has no values; give at least one")

    fixed = entry.get("fixed", {})
    if not isinstance(fixed, dict):
        raise fail("fixed", f"must be a table of experiment keys (got {_short(fixed)})")
    fixed = dict(fixed)
    for key, value in entry.items():
        if key in SWEEP_KEYS:
            continue
        if problem := _field_problem(key, settable | set(SWEEP_KEYS)):
            raise fail(key, problem)
        if key in fixed:
            raise fail(key, "is given both here and in the sweep's `fixed` table; give it once")
        fixed[key] = value
    for key in fixed:
        if problem := _field_problem(key, settable):
            raise fail(f"fixed > {key}", problem)
        if key in vary:
            raise fail(key, f"is both fixed ({key} = {_short(fixed[key])}) and in [sweep.vary]; keep one")

    groups = entry.get("zip", [])
    if not isinstance(groups, list) or not all(isinstance(g, list) and all(isinstance(f, str) for f in g)
                                               for g in groups):
        raise fail("zip", f"must be a list of lists of field names, e.g. zip = [[\"optimizer\", \"learning_rate\"]] "
                          f"(got {_short(groups)})")
    grouped: dict[str, list[str]] = {}
    for group in groups:
        for field in group:
            if field not in vary:
                raise fail("zip", f"{field!r} is not a field in [sweep.vary]{suggest_key(field, vary)}; zip groups "
                                  f"name fields of vary (it has: {', '.join(vary)})")
            if field in grouped:
                raise fail("zip", f"{field!r} is in more than one group (or twice in one); a field moves with one "
                                  f"group")
            grouped[field] = group
        lengths = {f: len(vary[f]) for f in group}
        if len(set(lengths.values())) > 1:
            raise fail("zip", f"the group {group} moves together, so its fields need as many values each; they have "
                              + ", ".join(f"{f}: {n}" for f, n in lengths.items()))
    axes, seen = [], set()
    for field in vary:  # an axis per field, a zip group being one axis at its first field's place
        if field not in seen:
            axis = tuple(f for f in vary if f in grouped[field]) if field in grouped else (field,)
            seen.update(axis)
            axes.append(axis)
    for axis in axes:
        keys = [tuple(value_key(vary[f][i]) for f in axis) for i in range(len(vary[axis[0]]))]
        repeated = next((i for i, k in enumerate(keys) if k in keys[:i]), None)
        if repeated is not None:
            shown = (_short(vary[axis[0]][repeated]) if len(axis) == 1
                     else "(" + ", ".join(f"{f} = {_short(vary[f][repeated])}" for f in axis) + ")")
            raise fail(f"vary > {axis[0]}" if len(axis) == 1 else "zip",
                       f"{shown} is listed twice; each combination is one experiment")

    names = entry.get("names")
    if names is not None and not isinstance(names, str):
        raise fail("names", f"must be a template string, e.g. names = \"w{{hidden}}\" (got {_short(names)})")
    baseline = entry.get("baseline", {})
    if not isinstance(baseline, dict):
        first = next(iter(vary))
        raise fail("baseline", f"must be a table of swept fields and their levels, e.g. baseline = "
                               f"{{ {first} = {_toml(vary[first][0])} }} (got {_short(baseline)})")
    for key, value in baseline.items():
        if key not in vary:
            raise fail(f"baseline > {key}", f"is not a swept field{suggest_key(key, vary)}; the sweep varies: "
                                            f"{', '.join(vary)}")
        if not any(value_key(value) == value_key(level) for level in vary[key]):
            raise fail(f"baseline > {key}", f"{_short(value)} is not one of its values: "
                                            f"{', '.join(_short(v) for v in vary[key])}")
    return _Plan(source, index, name, where, dict(vary), [list(g) for g in groups], axes, fixed, names, dict(baseline))


def _field_problem(key: str, known: set[str]) -> str | None:
    """What is wrong with `key` as an experiment field a sweep sets, or None."""
    if key == "name":
        return "a sweep names its experiments itself: give a template as `names = \"...\"`"
    if key in SET_BY_SWEEP:
        return f"{key} is set by the sweep for each of its experiments"
    if key not in known:
        return f"unknown key{suggest_key(key, known)} (`mnist-study studies --schema` lists every key)"
    return None


# --------------------------------------------------------------------------------------- names

def _number(x: float) -> str:
    """Compact and exact: 0.001, 1e-05, 10000 (an integral float without its .0), 1e16."""
    if isinstance(x, float):
        if x.is_integer() and abs(x) < 1e16:
            return str(int(x))
        return repr(x).replace("e+", "e")
    return str(x)


def value_text(field: str, value: Any, levels: Sequence = ()) -> str:
    """A value as generated names write it, without the field's prefix: 0.001, adam, 100x100."""
    if isinstance(value, bool):
        return field if value else f"no-{field}"
    if isinstance(value, (int, float)):
        return _number(value)
    if isinstance(value, str):
        return (Path(value).name or value) if field == "dataset" else value
    if isinstance(value, list):
        return "x".join(value_text(field, v) for v in value) or "0"
    if isinstance(value, dict):  # a table (a front-end): its kind, and the parameters that differ between levels
        tables = [level for level in levels if isinstance(level, dict)] or [value]
        differ = [k for k in value if k != "kind" and len({value_key(t.get(k)) for t in tables}) > 1]
        head = [str(value["kind"])] if "kind" in value else []
        return "-".join(head + [f"{k}{value_text(k, value[k])}" for k in differ]) or field
    return str(value)


def name_part(field: str, value: Any, levels: Sequence = ()) -> str:
    """One swept value's part of a generated name: w130, lr0.001, adam, early_stopping, pca-variance0.95."""
    text = value_text(field, value, levels)
    if isinstance(value, (bool, str)) or (isinstance(value, dict) and field == "frontend"):
        return text
    return PREFIXES.get(field, field) + text


def _template_value(field: str, value: Any, levels: Sequence) -> Any:
    """A value for a `names` template: numbers and strings as they are (so {lr:.0e} works), lists as
    100x100, booleans as true/false, tables as generated names write them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return value_text(field, value, levels)
    return value


def _sanitise(name: str) -> str:
    """`name` with every run of characters a name may not hold as "_", starting with a letter or digit."""
    return _NOT_IN_NAMES.sub("_", name).lstrip("._-")


# ------------------------------------------------------------------------------------- helpers

def value_key(value: Any) -> Any:
    """A hashable key under which equal values are equal: 1 and 1.0 alike, True and 1 not."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("number", float(value))
    if isinstance(value, list | tuple):
        return ("list", tuple(value_key(v) for v in value))
    if isinstance(value, dict):
        return ("table", tuple(sorted((k, value_key(v)) for k, v in value.items())))
    return (type(value).__name__, value)


def _values(swept: dict) -> str:
    return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in swept.items()) + "}"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(map(_toml, value)) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return _short(value)


def _sizes(plans: Sequence[_Plan]) -> str:
    return "; ".join(f"{p.where}: " + " x ".join(str(len(p.vary[a[0]])) for a in p.axes) for p in plans)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def suggest_key(key: str, known) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
