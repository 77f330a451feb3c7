"""The built-in studies (the TOML files beside this module) and how any study file is read.

A study may extend another, so that two studies that differ in a few settings say only those:

    name = "quick"
    extends = "paper"                  # a built-in study, or a TOML file relative to this one
    description = "..."

    [every_experiment]                 # set in every inherited experiment
    train_size = 10000
    max_epochs = 4

    [[experiment]]                     # an inherited name: these keys replace the base's
    name = "exp10"
    frontend = { kind = "forest_pixels", n_pixels = 70, n_trees = 10 }

Top-level keys (name, description, claim, note, ...) replace the base's; `only = ["exp6", ...]`
keeps just those inherited experiments (and the base's claims and notes that name no other); an
`[[experiment]]` with a new name is added. The run directory keeps the resolved study, so a run
never depends on the file it came from.

Errors name the file, the experiment (by its name) and the key, and suggest the closest valid key.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mnist_study.errors import StudyError
from mnist_study.stats.claims import Claim
from mnist_study.study import Experiment, Note, Reference, Study
from mnist_study.training.frontends import FRONTENDS

BUILTIN_STUDIES = tuple(sorted(p.name[:-5] for p in resources.files(__name__).iterdir() if p.name.endswith(".toml")))
EXTENDING_KEYS = ("extends", "every_experiment", "only")


# ------------------------------------------------------------------------------------ reading

def parse_study(text: str, source: str = "<study>", directory: Path | None = None) -> Study:
    """Parse and validate a study from TOML text; errors name `source`, the key and the reason.

    `directory` is where a relative `extends = "base.toml"` is looked for (default: the current one).
    """
    data = _resolve(_toml(text, source), source, directory or Path.cwd(), (source,))
    try:
        return Study.model_validate(data)
    except ValidationError as e:
        raise StudyError(format_errors(source, e, data)) from None


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
    if not path.is_file():
        close = difflib.get_close_matches(name, BUILTIN_STUDIES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise StudyError(f"no study {name!r}: not a built-in ({', '.join(BUILTIN_STUDIES)}) and no such file{hint}")
    return path.read_text(), str(Path(name)), path.parent


def _toml(text: str, source: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise StudyError(f"{source} is not valid TOML: {e}") from None


# ---------------------------------------------------------------------------------- extending

def _resolve(data: dict, source: str, directory: Path, seen: tuple[str, ...]) -> dict:
    """`data` with its `extends` chain merged in: a plain study, as if written out in full."""
    base_name = data.get("extends")
    if base_name is None:
        stray = [k for k in EXTENDING_KEYS if k in data]
        if stray:
            raise StudyError(f"{source}: {', '.join(stray)} only make sense with `extends = \"<study>\"`")
        return data
    if not isinstance(base_name, str):
        raise StudyError(f"{source}: extends must be a study name or file, got {base_name!r}")
    text, base_source, base_directory = _read(base_name, directory)
    if base_source in seen:
        raise StudyError(f"{source}: extends {base_name!r}, which extends it back ({' -> '.join(seen)})")
    base = _resolve(_toml(text, base_source), base_source, base_directory, seen + (base_source,))
    child = {k: v for k, v in data.items() if k not in EXTENDING_KEYS}
    experiments = _inherited_experiments(base, data, source)
    for override in child.pop("experiment", []):
        match = next((e for e in experiments if isinstance(override, dict) and e["name"] == override.get("name")), None)
        if match is not None:
            match.update(override)
        else:
            experiments.append(override)
    merged = {**base, **child, "experiment": experiments}
    if "only" in data:
        kept = {e["name"] for e in experiments}
        if "claim" not in child:
            merged["claim"] = [c for c in base.get("claim", []) if _names_only(c, kept)]
        if "note" not in child:
            merged["note"] = [n for n in base.get("note", []) if _names_only(n, kept)]
    return merged


def _inherited_experiments(base: dict, data: dict, source: str) -> list[dict]:
    experiments = [dict(e) for e in base.get("experiment", [])]
    names = [e.get("name") for e in experiments]
    only = data.get("only")
    if only is not None:
        if not isinstance(only, list) or not all(isinstance(n, str) for n in only):
            raise StudyError(f"{source}: only must be a list of experiment names, got {only!r}")
        unknown = [n for n in only if n not in names]
        if unknown:
            raise StudyError(f"{source}: only names {', '.join(map(repr, unknown))}, which the base study does "
                             f"not have; it has: {', '.join(names)}")
        experiments = [e for e in experiments if e["name"] in only]
    every = data.get("every_experiment", {})
    if not isinstance(every, dict):
        raise StudyError(f"{source}: [every_experiment] must be a table of experiment settings")
    settable = set(Experiment.model_fields) - {"name"}
    for key in every:
        if key not in settable:
            raise StudyError(f"{source}: every_experiment.{key}: unknown key{_suggest(key, settable)}")
    for e in experiments:
        e.update(every)
    return experiments


def _names_only(entry: Any, names: set[str]) -> bool:
    """Whether a claim or note (as raw TOML) names no experiment outside `names`."""
    if not isinstance(entry, dict):
        return True
    text = " ".join(map(str, entry.get("checks", []))) + " " + " ".join(map(str, entry.get("show", [])))
    mentioned = set(re.findall(r"([A-Za-z0-9][A-Za-z0-9_-]*)\.(?:train|validation|test)\b", text))
    mentioned |= set(re.findall(r"(?:pattern|figure):([A-Za-z0-9][A-Za-z0-9_-]*)", text))
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
    if last == "note":
        return set(Note.model_fields)
    if "frontend" in parents:
        return {key for cls in FRONTENDS.values() for key in cls.Config.model_fields}
    return set()


def _suggest(key: str, known: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _where(loc: tuple, data: dict) -> str:
    """A location as a person reads it: experiment 'exp4' > hidden, not experiment.3.hidden."""
    parts, node = [], data
    for part in loc:
        if isinstance(part, int) and isinstance(node, list):
            item = node[part] if part < len(node) else None
            label = item.get("name") or item.get("title") if isinstance(item, dict) else None
            parts[-1] = f"{parts[-1]} {label!r}" if label else f"{parts[-1]} #{part + 1}"
            node = item
        else:
            parts.append(str(part))
            node = node.get(part) if isinstance(node, dict) else None
    return " > ".join(parts) or "(top level)"


def format_errors(source: str, error: ValidationError, data: dict) -> str:
    lines = [f"{source} is not a valid study:"]
    for item in error.errors():
        loc = tuple(item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = f"unknown key{_suggest(str(loc[-1]), _known_keys(loc))} (`mnist-study studies --schema` lists every key)"
        elif "input" in item and item["type"].endswith("_type"):
            message += f" (got {item['input']!r})"
        lines.append(f"  - {_where(loc, data)}: {message}")
    return "\n".join(lines)
