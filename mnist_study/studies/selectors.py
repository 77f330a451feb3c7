"""Claims over swept fields: a check's side may be a selector, `{optimizer=adam}.test` (grammar: `stats.checks`).

`expand_claims` replaces each check with selectors by one check per pair of experiments of one
sweep that match the two selectors and agree on every swept field neither selector names (a field
zipped with a named one moves with it), and keeps the checks as written in the claim's
`written_checks`. It runs once the whole study is read (after `sweep.expand_sweeps`), so a base's
claim is expanded over the derived study's experiments; under `only`, a base claim that no longer
matches any is dropped, like one that names a dropped experiment.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from typing import Any

from mnist_study.errors import StudyError
from mnist_study.stats.checks import CheckSyntaxError, Term, parse_check, split_at_selectors
from mnist_study.studies.sweep import name_part, suggest_key, value_key, value_text


def expand_claims(data: dict, source: str = "<study>") -> dict:
    """`data` with every claim check that has selectors replaced by the concrete checks it stands for.

    A check naming `{field=value, ...}` on one side becomes one check per experiment that matches;
    with selectors on both sides, one per pair of experiments of the same sweep that match them and
    agree on every swept field neither selector names (a field zipped with a named one counts as
    named: it moves with it). A changed claim keeps its checks as written
    in `written_checks`. Raises StudyError naming the claim and the selector that matches nothing.
    """
    claims = data.get("claim")
    if not isinstance(claims, list) or not any(_has_selectors(c) for c in claims):
        return data
    selection = Selection(data.get("experiment", []), data.get("sweep", []))
    expanded = []
    for position, claim in enumerate(claims):
        if not _has_selectors(claim):
            expanded.append(claim)
            continue
        checks = []
        for text in claim["checks"]:
            try:
                checks += selection.expand(text)
            except NoMatch as problem:
                label = claim.get("name") if isinstance(claim.get("name"), str) else f"#{position + 1}"
                raise StudyError(f"{source}: claim {label!r} > checks: check {text!r}: {problem}") from None
        expanded.append({**claim, "checks": checks, "written_checks": list(claim["checks"])})
    return {**data, "claim": expanded}


def _has_selectors(claim: Any) -> bool:
    if not isinstance(claim, dict) or not isinstance(claim.get("checks"), list):
        return False
    return any(isinstance(text, str) and "{" in text for text in claim["checks"])


class NoMatch(ValueError):
    """A selector that picks no experiment, or two that pair none."""


class Selection:
    """The swept experiments of a study (as study-file tables), for expanding selectors."""

    def __init__(self, experiments: Sequence[Any], sweeps: Sequence[Any]):
        self.experiments = [e for e in experiments if isinstance(e, dict) and isinstance(e.get("swept"), dict)
                            and isinstance(e.get("name"), str)]
        self.levels: dict[str, list] = {}  # field -> its values over every sweep, for names and messages
        self.zipped: dict[tuple[str, str], list[str]] = {}  # (sweep, field) -> the fields that move with it
        for sweep in sweeps:
            if not isinstance(sweep, dict):
                continue
            for field, values in sweep.get("vary", {}).items():
                known = self.levels.setdefault(field, [])
                known += [v for v in values if not any(value_key(v) == value_key(k) for k in known)]
            for group in sweep.get("zip", []):
                for field in group:
                    self.zipped[sweep.get("name"), field] = group

    def expand(self, text: str) -> list[str]:
        """The concrete checks that `text` stands for ([text] when it has no selectors).

        Leaves a check that does not parse as it is: validating the claim reports it.
        """
        try:
            check = parse_check(text)
        except CheckSyntaxError:
            return [text]
        if not check.has_selectors:
            return [text]
        written = check.written
        same_side = written[0].split == written[1].split and written[0].offset == written[1].offset
        sides = [self._matching(term) if term.selector else None for term in written]
        pieces = split_at_selectors(text)
        if sides[0] is None or sides[1] is None:
            selected, other = (written[0], written[1]) if sides[1] is None else (written[1], written[0])
            found = [e for e in sides[0] or sides[1] if not (e["name"] == other.experiment and same_side)]
            if not found:
                raise NoMatch(f"{selected.selector_text} matches only {other.experiment}, the other side itself; "
                              "nothing to compare")
            return [pieces[0] + e["name"] + pieces[1] for e in found]
        named = {f for term in written for f, _ in term.selector}
        by_rest: dict[tuple, list[dict]] = {}
        for e in sides[1]:
            by_rest.setdefault(self._rest(e, named), []).append(e)
        pairs = [(a, b) for a in sides[0] for b in by_rest.get(self._rest(a, named), [])
                 if not (a is b and same_side)]
        if not pairs:
            rest = sorted({f for e in sides[0] + sides[1] for f in e["swept"]} - named)
            raise NoMatch(f"no experiment matching {written[0].selector_text} is of the same sweep as one "
                          f"matching {written[1].selector_text} and agrees with it on "
                          f"{', '.join(rest) or 'the other swept fields'}; nothing to compare")
        return [pieces[0] + a["name"] + pieces[1] + b["name"] + pieces[2] for a, b in pairs]

    def _rest(self, experiment: dict, named: set[str]) -> tuple:
        """What two experiments must share to be compared: the sweep, and every swept value that no
        selector names (nor moves in a zip group with a field one names)."""
        sweep, swept = experiment.get("sweep"), experiment["swept"]
        free = set(named).union(*(self.zipped.get((sweep, f), ()) for f in named))
        return (sweep,) + tuple(sorted((f, value_key(v)) for f, v in swept.items() if f not in free))

    def _matching(self, term: Term) -> list[dict]:
        wanted = {}  # field -> the keys of its levels that the selector's value matches
        for field, value in term.selector:
            if field not in self.levels:
                swept = sorted(self.levels)
                raise NoMatch(f"{term.selector_text}: {field} is not a swept field of this study"
                              + (f"{suggest_key(field, swept)}; the sweeps vary: {', '.join(swept)}" if swept
                                 else "; it has no [[sweep]]"))
            levels = self.levels[field]
            wanted[field] = {value_key(level) for level in levels if _matches(value, field, level, levels)}
            if not wanted[field]:
                raise NoMatch(f"{term.selector_text}: {field} = {value} matches no experiment; {field} takes: "
                              + ", ".join(value_text(field, v, levels) for v in levels))
        found = [e for e in self.experiments
                 if all(f in e["swept"] and value_key(e["swept"][f]) in keys for f, keys in wanted.items())]
        if not found:
            raise NoMatch(f"{term.selector_text} matches no experiment: no sweep has that combination")
        return found


def _matches(written: str, field: str, value: Any, levels: Sequence) -> bool:
    """Whether a selector's VALUE (as written) is `value`: as TOML, as a bare string, or as names write it."""
    if written == value_text(field, value, levels) or written == name_part(field, value, levels):
        return True
    try:
        parsed = tomllib.loads(f"v = {written}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = written
    return value_key(parsed) == value_key(value)
