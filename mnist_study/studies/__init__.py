"""The built-in studies (the TOML files beside this module) and how any study file is read.

A study may extend another, so that two studies that differ in a few settings say only those:

    name = "quick"
    extends = "paper"                  # a built-in study, or a TOML file relative to this one
    description = "..."

    [every_experiment]                 # set in every inherited experiment (in a study that extends
                                       # none: the default of its own experiments and sweeps)
    train_size = 10000
    max_epochs = 4

    [[experiment]]                     # an inherited name: these keys replace the base's
    name = "exp10"
    frontend = { kind = "forest_pixels", n_pixels = 70, n_trees = 10 }

Top-level keys (name, description, claim, note, curve, ...) replace the base's; `only = ["exp6", ...]`
keeps just those inherited experiments (and the base's claims and notes that name no other, and
its curves but those of a sweep left with no experiment); an
`[[experiment]]` with a new name is added. The run directory keeps the resolved study, so a run
never depends on the file it came from.

A `[[sweep]]` is a grid of experiments written once (see `sweep.py`): it is expanded into
experiments when its file is read, before anything is validated, so a derived study inherits a
base's swept experiments like any other (`only` may name them, `[every_experiment]` sets their
keys but not the fields the sweep varies) and adds its own sweeps beside the base's. Claims whose
checks pick experiments by their swept values (`{optimizer=adam}.test`) are expanded last, over
the study's final experiments.

Errors name the file, the experiment (by its name) and the key, and suggest the closest valid key.
What no study needs is refused before anything is built: a file over `MAX_STUDY_BYTES`, tables or
arrays nested deeper than `MAX_DEPTH`, more than `MAX_EXPERIMENTS` experiments, and numbers that
are not finite (`inf`, `nan`).
"""

from __future__ import annotations

import contextlib
import difflib
import gc
import math
import re
import tomllib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mnist_study.errors import StudyError
from mnist_study.stats.checks import CheckSyntaxError, parse_check
from mnist_study.stats.claims import Claim
from mnist_study.studies.selectors import NoMatch, Selection, expand_claims
from mnist_study.studies.sweep import SET_BY_SWEEP, expand_sweeps
from mnist_study.study import MAX_EXPERIMENTS, Curve, Experiment, Mark, Note, Reference, Study, Sweep
from mnist_study.training.frontends import FRONTENDS

BUILTIN_STUDIES = tuple(sorted(p.name[:-5] for p in resources.files(__name__).iterdir() if p.name.endswith(".toml")))
EXTENDING_KEYS = ("extends", "every_experiment", "only")
MAX_STUDY_BYTES = 1 << 20  # the paper's study is 8 kB; a larger file is a mistake, not a study
MAX_DEPTH = 16  # a study nests about 5 deep (experiment > frontend > ...); deeper is a mistake


# ------------------------------------------------------------------------------------ reading

def parse_study(text: str, source: str = "<study>", directory: Path | None = None) -> Study:
    """Parse and validate a study from TOML text; errors name `source`, the key and the reason.

    `directory` is where a relative `extends = "base.toml"` is looked for (default: the current one).
    """
    if len(text) > MAX_STUDY_BYTES:
        raise StudyError(f"{source} is {len(text):,} characters long; a study file may have at most "
                         f"{MAX_STUDY_BYTES:,}. Is it the right file?")
    return study_from_data(_toml(text, source), source, directory)


def study_from_data(data: dict, source: str = "<study>", directory: Path | None = None) -> Study:
    """Validate a study given as the data a TOML file parses to (dicts, lists, scalars).

    Raises StudyError, naming `source` and the key, for anything that is not a valid study.
    """
    if not isinstance(data, dict):
        raise StudyError(f"{source} is not a valid study: expected a table of keys, got {type(data).__name__}")
    if not data:
        raise StudyError(f"{source} is empty: a study needs at least a `name` and one [[experiment]] "
                         f"(`mnist-study studies --show quick` prints one to start from)")
    _check_values(data, source)
    with _collector_paused():
        data = _resolve(data, source, directory or Path.cwd(), (source,))
        _check_size(data, source)
        data = expand_claims(data, source)
        try:
            return Study.model_validate(data)
        except ValidationError as e:
            raise StudyError(format_errors(source, e, data)) from None


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a study is built.

    A large sweep makes hundreds of thousands of dicts and models, none of them garbage, and the
    collector would walk them again and again as they pile up: a third of the time of reading a
    100,000-experiment sweep (benchmarks/bench_sweep.py). Reference counting still frees what is
    dropped; the collector runs again, as before, afterwards.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load_study(name_or_path: str | Path) -> Study:
    """A built-in study by name (see `BUILTIN_STUDIES`) or a TOML file by path."""
    text, source, directory = _read(str(name_or_path), Path.cwd())
    return parse_study(text, source, directory)


def study_to_dict(study: Study) -> dict:
    return study.model_dump(mode="json", exclude_none=True)


def _read(name: str, directory: Path) -> tuple[str, str, Path]:
    """(TOML text, how errors name it, the folder its own `extends` is relative to)."""
    if name in BUILTIN_STUDIES:
        return resources.files(__name__).joinpath(f"{name}.toml").read_text(), f"built-in study {name!r}", directory
    path = Path(name) if Path(name).is_absolute() else directory / name
    try:
        found = path.is_file()
        size = path.stat().st_size if found else 0
    except (OSError, ValueError):  # a name too long for the system, or with a NUL in it
        found = False
    if not found:
        close = difflib.get_close_matches(name, BUILTIN_STUDIES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise StudyError(f"no study {_short_repr(name)}: not a built-in ({', '.join(BUILTIN_STUDIES)}) and no such file{hint}")
    if size > MAX_STUDY_BYTES:  # checked before reading: a study is never this large
        raise StudyError(f"{_short_repr(name)} is {size:,} bytes; a study file may have at most {MAX_STUDY_BYTES:,}. "
                         f"Is it the right file?")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as error:
        raise StudyError(f"cannot read study file {name}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise StudyError(f"{name} is not a study file: TOML is UTF-8 text, but byte {error.start} is "
                         f"0x{error.object[error.start]:02x}") from None
    return text, str(Path(name)), path.parent


def _toml(text: str, source: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise StudyError(f"{source} is not valid TOML: {e}") from None
    except RecursionError:  # tomllib recurses once per level of nested arrays and inline tables
        raise StudyError(f"{source}: arrays or tables are nested too deeply to read (a study nests "
                         f"about 5 levels; at most {MAX_DEPTH} are allowed)") from None


def _check_values(data: dict, source: str) -> None:
    """Refuse non-finite numbers (TOML allows `inf` and `nan`) and runaway nesting, naming the key.

    Walked with a stack rather than recursion, so that no nesting can exhaust Python's stack.
    """
    stack: list[tuple[tuple, Any]] = [((), data)]
    while stack:
        loc, node = stack.pop()
        if len(loc) > MAX_DEPTH:
            key = max(i for i, part in enumerate(loc) if isinstance(part, str))  # the key, not its items
            raise StudyError(f"{source}: {_where(loc[:key + 1], data)} nests arrays or tables more than "
                             f"{MAX_DEPTH} levels deep; a study nests about 5")
        if isinstance(node, float) and not math.isfinite(node):
            raise StudyError(f"{source}: {_where(loc, data)} is {node!r}; numbers in a study must be finite")
        if isinstance(node, dict):
            stack.extend(((*loc, key), value) for key, value in node.items())
        elif isinstance(node, list):
            stack.extend(((*loc, index), value) for index, value in enumerate(node))


def _check_size(data: dict, source: str) -> None:
    """Refuse a study with more experiments than any run could train, before building one of them."""
    experiments = data.get("experiment")
    if isinstance(experiments, list) and len(experiments) > MAX_EXPERIMENTS:
        raise StudyError(f"{source}: experiment: {len(experiments):,} experiments; a study may have at most "
                         f"{MAX_EXPERIMENTS:,}. Split it into several studies.")


# ---------------------------------------------------------------------------------- extending

def _resolve(data: dict, source: str, directory: Path, seen: tuple[str, ...]) -> dict:
    """`data` with its `extends` chain merged in: a plain study, as if written out in full."""
    _refuse_derived_keys(data, source)
    base_name = data.get("extends")
    if base_name is None:
        stray = [k for k in EXTENDING_KEYS if k in data and k != "every_experiment"]
        if stray:
            raise StudyError(f"{source}: {', '.join(stray)} only make sense with `extends = \"<study>\"`")
        if "every_experiment" in data:
            data = _with_defaults(data, source)
        return expand_sweeps(data, source)
    if not isinstance(base_name, str):
        raise StudyError(f"{source}: extends must be a study name or file, got {_short_repr(base_name)}")
    try:
        text, base_source, base_directory = _read(base_name, directory)
    except StudyError as error:  # say which file asked for it
        raise StudyError(f"{source}: extends: {error}") from None
    if base_source in seen:
        raise StudyError(f"{source}: extends {base_name!r}, which extends it back ({' -> '.join(seen)})")
    base_data = _toml(text, base_source)
    _check_values(base_data, base_source)
    base = _resolve(base_data, base_source, base_directory, seen + (base_source,))
    child = {k: v for k, v in data.items() if k not in EXTENDING_KEYS}
    experiments = _inherited_experiments(base, data, source, base_source)
    overrides = child.pop("experiment", [])
    if not isinstance(overrides, list):
        raise StudyError(f"{source}: experiment must be a list of tables ([[experiment]]), got "
                         f"{_short_repr(overrides)}")
    by_name = {_name(e): e for e in reversed(experiments) if isinstance(_name(e), str)}
    for override in overrides:
        match = by_name.get(_name(override)) if isinstance(_name(override), str) else None
        if match is not None:
            swept = sorted(set(override) & set(match.get("swept") or ()))
            if swept:
                raise StudyError(f"{source}: experiment {match['name']!r} > {swept[0]}: is a value of sweep "
                                 f"{match['sweep']!r}, which makes that experiment; drop it with `only` and add "
                                 f"an [[experiment]] of another name instead")
            match.update(override)
        else:
            experiments.append(override)
            if isinstance(_name(override), str):
                by_name.setdefault(_name(override), override)
    merged = {**base, **child, "experiment": experiments}
    merged["sweep"] = child.get("sweep", [])
    merged = expand_sweeps(merged, source, _inherited_sweeps(base, experiments, data.get("every_experiment")))
    if not merged["sweep"]:
        del merged["sweep"]
    if "only" in data:
        kept = {_name(e) for e in merged["experiment"]}
        selection = Selection(merged["experiment"], merged.get("sweep", []))
        if "claim" not in child:
            merged["claim"] = [c for c in _as_list(base.get("claim", [])) if _names_only(c, kept, selection)]
        if "note" not in child:
            merged["note"] = [n for n in _as_list(base.get("note", [])) if _names_only(n, kept, selection)]
        if "curve" not in child:  # a curve of a sweep that `only` dropped goes with it
            left = {s.get("name") for s in merged.get("sweep", []) if isinstance(s, dict)}
            merged["curve"] = [c for c in _as_list(base.get("curve", []))
                               if not isinstance(c, dict) or c.get("sweep") is None or c.get("sweep") in left]
    return merged


def _inherited_sweeps(base: dict, experiments: list, every: Any) -> list[dict]:
    """The base's sweeps that still have experiments, their `fixed` updated by [every_experiment]."""
    sweeps = base.get("sweep", [])
    if not isinstance(sweeps, list):
        return []
    left = {e.get("sweep") for e in experiments if isinstance(e, dict)}
    every = every if isinstance(every, dict) else {}
    kept = []
    for sweep in sweeps:
        if isinstance(sweep, dict) and sweep.get("name") in left:
            fixed = {**sweep.get("fixed", {}), **{k: v for k, v in every.items() if k not in sweep.get("vary", {})}}
            kept.append({**sweep, "fixed": fixed})
    return kept


def _refuse_derived_keys(data: dict, source: str) -> None:
    """Refuse, in a file's own tables, keys that only reading a study sets (sweep, swept, written_checks)."""
    for e in data.get("experiment", []) if isinstance(data.get("experiment"), list) else []:
        key = next((k for k in SET_BY_SWEEP if isinstance(e, dict) and k in e), None)
        if key is not None:
            label = f"experiment {e['name']!r}" if isinstance(e.get("name"), str) else "experiment"
            raise StudyError(f"{source}: {label} > {key}: is set by a [[sweep]] for the experiments it makes, "
                             "not written in an [[experiment]]; write a [[sweep]] table instead")
    for c in data.get("claim", []) if isinstance(data.get("claim"), list) else []:
        if isinstance(c, dict) and "written_checks" in c:
            label = f"claim {c['name']!r}" if isinstance(c.get("name"), str) else "claim"
            raise StudyError(f"{source}: {label} > written_checks: is set when a study is read, from checks "
                             "with selectors such as {optimizer=adam}.test; write those in `checks`")


def _name(experiment: Any) -> Any:
    """An experiment's name as written (None when it has none, or is not a table)."""
    return experiment.get("name") if isinstance(experiment, dict) else None


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _listed(names: list[str], limit: int = 40) -> str:
    """Names for a message: all of a few, the first `limit` of a sweep's thousands."""
    return ", ".join(names) if len(names) <= limit else f"{', '.join(names[:limit])}, … ({len(names) - limit:,} more)"


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _inherited_experiments(base: dict, data: dict, source: str, base_source: str) -> list[dict]:
    inherited = base.get("experiment", [])
    if not isinstance(inherited, list):
        raise StudyError(f"{base_source}: experiment must be a list of tables ([[experiment]]), got "
                         f"{_short_repr(inherited)}")
    experiments = [dict(e) if isinstance(e, dict) else e for e in inherited]
    names = [_name(e) for e in experiments]
    only = data.get("only")
    if only is not None:
        if not isinstance(only, list) or not all(isinstance(n, str) for n in only):
            raise StudyError(f"{source}: only must be a list of experiment names, got {_short_repr(only)}")
        known, wanted = {n for n in names if isinstance(n, str)}, set(only)
        unknown = [n for n in only if n not in known]
        if unknown:
            close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise StudyError(f"{source}: only names {', '.join(map(repr, unknown))}, which the base study does "
                             f"not have{hint}; it has: {_listed(list(map(str, names)))}")
        experiments = [e for e in experiments if _name(e) in wanted]
    every = _every_experiment(data, source)
    for e in experiments:
        if isinstance(e, dict):
            swept = e.get("swept")  # a sweep's own values stay: its grid is what it is for
            e.update({k: v for k, v in every.items() if k not in swept} if isinstance(swept, dict) else every)
    return experiments


def _every_experiment(data: dict, source: str) -> dict:
    """The [every_experiment] table, its keys checked."""
    every = data.get("every_experiment", {})
    if not isinstance(every, dict):
        raise StudyError(f"{source}: [every_experiment] must be a table of experiment settings")
    settable = set(Experiment.model_fields) - {"name", *SET_BY_SWEEP}
    for key in every:
        if key not in settable:
            raise StudyError(f"{source}: every_experiment.{key}: unknown key{_suggest(key, settable)}")
    return every


def _with_defaults(data: dict, source: str) -> dict:
    """A study that extends none: [every_experiment] is the default of its own experiments and sweeps,
    which may each say otherwise (e.g. `dataset = "fashion-mnist"` for the whole study)."""
    every = _every_experiment(data, source)
    out = {k: v for k, v in data.items() if k != "every_experiment"}
    if isinstance(data.get("experiment"), list):
        out["experiment"] = [{**every, **e} if isinstance(e, dict) else e for e in data["experiment"]]
    if isinstance(data.get("sweep"), list):
        out["sweep"] = []
        for sweep in data["sweep"]:
            if isinstance(sweep, dict):
                given = set(sweep) | set(_as_dict(sweep.get("vary"))) | set(_as_dict(sweep.get("fixed")))
                sweep = {**{k: v for k, v in every.items() if k not in given}, **sweep}
            out["sweep"].append(sweep)
    return out


def _as_dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _names_only(entry: Any, names: set[str], selection: Selection) -> bool:
    """Whether a claim or note (as raw TOML) names no experiment outside `names`.

    A check with selectors counts as naming the experiments it expands to over `selection`; one
    that no longer expands to any (its sweep's experiments dropped by `only`) drops its claim.
    """
    if not isinstance(entry, dict):
        return True
    mentioned = set()
    for text in _as_list(entry.get("checks", [])):
        try:
            checks = [parse_check(t) for t in selection.expand(text)] if isinstance(text, str) else []
        except (CheckSyntaxError, NoMatch):
            return not isinstance(text, str) or "{" not in text  # a syntax error is reported when validated
        mentioned |= {name for check in checks for name in check.experiments}
    show = " ".join(map(str, _as_list(entry.get("show", []))))
    mentioned |= set(re.findall(r"(?:pattern|figure):([A-Za-z0-9][A-Za-z0-9_.-]*)", show))
    return mentioned <= names


# ------------------------------------------------------------------------------------- errors

def _known_keys(loc: tuple) -> set[str]:
    """The keys allowed where `loc` points, for suggesting the one a typo meant."""
    parents = [part for part in loc[:-1] if isinstance(part, str)]
    last = parents[-1] if parents else None
    if last is None:
        return set(Study.model_fields) | set(EXTENDING_KEYS)
    if last == "experiment":
        return set(Experiment.model_fields)
    if last == "reference":
        return set(Reference.model_fields)
    if last == "claim":
        return set(Claim.model_fields)
    if last == "sweep":
        return set(Sweep.model_fields) | set(Experiment.model_fields)
    if last in ("vary", "baseline", "fixed") and "sweep" in parents:
        return set(Experiment.model_fields)
    if last == "note":
        return set(Note.model_fields)
    if last == "curve":
        return set(Curve.model_fields)
    if last == "marks" and "curve" in parents:
        return set(Mark.model_fields)
    if "frontend" in parents:
        return {key for cls in FRONTENDS.values() for key in cls.Config.model_fields}
    return set()


def _suggest(key: str, known: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _where(loc: tuple, data: dict) -> str:
    """A location as a person reads it: experiment 'exp4' > hidden, not experiment.3.hidden.

    An experiment a sweep made is named with its sweep, and a problem with one of the sweep's
    fixed keys is put where it was written: sweep 'widths' > max_epochs.
    """
    sweep = _swept_origin(loc, data)
    if sweep is not None:
        return " > ".join([f"sweep {sweep!r}", *map(str, loc[2:])])
    parts, node = [], data
    for part in loc:
        if isinstance(part, int) and isinstance(node, list):
            item = node[part] if part < len(node) else None
            label = item.get("name") or item.get("title") if isinstance(item, dict) else None
            parts[-1] = f"{parts[-1]} {label!r}" if label else f"{parts[-1]} #{part + 1}"
            if isinstance(item, dict) and isinstance(item.get("swept"), dict) and parts[-1].startswith("experiment"):
                parts[-1] += f" (sweep {item.get('sweep')!r})"
            node = item
        else:
            parts.append(str(part))
            node = node.get(part) if isinstance(node, dict) else None
    return " > ".join(parts) or "(top level)"


def _swept_origin(loc: tuple, data: dict) -> str | None:
    """The sweep whose fixed key `loc` points into (experiment, i, key, ...), if any."""
    if len(loc) < 3 or loc[0] != "experiment" or not isinstance(loc[1], int):
        return None
    experiments = data.get("experiment")
    item = experiments[loc[1]] if isinstance(experiments, list) and loc[1] < len(experiments) else None
    if not isinstance(item, dict) or not isinstance(item.get("swept"), dict):
        return None
    for sweep in data.get("sweep", []) if isinstance(data.get("sweep"), list) else []:
        if isinstance(sweep, dict) and sweep.get("name") == item.get("sweep") and loc[2] in sweep.get("fixed", {}):
            return item["sweep"]
    return None


MAX_LISTED_PROBLEMS = 20  # a study wrong in every experiment needs its first few fixed, not a page


def format_errors(source: str, error: ValidationError, data: dict) -> str:
    """One line for one problem; else a line per problem (the first `MAX_LISTED_PROBLEMS`)."""
    problems = []
    for item in error.errors():
        loc = tuple(item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = f"unknown key{_suggest(str(loc[-1]), _known_keys(loc))} (`mnist-study studies --schema` lists every key)"
        elif "input" in item and item["type"].endswith("_type"):
            message += f" (got {_short_repr(item['input'])})"
        problems.append(f"{_where(loc, data)}: {message}")
    problems = list(dict.fromkeys(problems))  # a sweep's fixed key is wrong once, not once per experiment
    if len(problems) == 1:
        return f"{source} is not a valid study: {problems[0]}"
    lines = [f"{source} is not a valid study:"] + [f"  - {p}" for p in problems[:MAX_LISTED_PROBLEMS]]
    if len(problems) > MAX_LISTED_PROBLEMS:
        lines.append(f"  ... and {len(problems) - MAX_LISTED_PROBLEMS} more")
    return "\n".join(lines)
