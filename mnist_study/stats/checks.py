"""The grammar of a claim's checks, e.g. ``"exp10.test < exp6.test by more than 2 points"``.

Check grammar (keywords and split names are case-insensitive, whitespace is free)::

    check  := term OP term [ "by more than" NUMBER ["points"] | "within" NUMBER ["points"] ]
    OP     := "<" | ">" | "<=" | ">=" | "~"            (also ≤ ≥ ≈)
    term   := REF "." SPLIT [ ("+" | "-") NUMBER ] | NUMBER ["%"]
    REF    := EXP | "{" FIELD "=" VALUE { "," FIELD "=" VALUE } "}"     (a selector: {optimizer=adam})
    EXP    := letters, digits, ".", "-" and "_"   SPLIT := train | validation | test

The split is what follows the last "." (w130-lr0.001.test is experiment w130-lr0.001, split test).

Numbers are accuracies in percent, or percentage points for offsets and bounds; a number too
large to be a finite float (hundreds of digits) is a syntax error, not infinity. Write
``D = left - right`` (offsets included); `mnist_study.stats.claims` says how each check is decided.

A selector picks experiments of a [[sweep]] by their swept values instead of naming one.
VALUE is written as in TOML (130, 0.001, true, [100, 100], "adam") or as generated names write
it (adam, 100x100, w130). When the study is read, a check with selectors becomes one check per
pair of experiments of one sweep that match the two sides and agree on every swept field that
neither side names (a field zipped with a named one moves with it): in a sweep of widths x
optimisers, "{optimizer=adam}.test > {optimizer=rmsprop}.test" is that comparison at every
width, all of them tested together under Holm's correction. With a selector on one side only,
the check is made once per experiment that matches.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal

from mnist_study.data.splits import SPLITS
from mnist_study.errors import UserError


class CheckSyntaxError(UserError, ValueError):
    """A check string that does not follow the grammar in the module docstring."""


Selector = tuple[tuple[str, str], ...]  # ((field, value as written), ...) of "{field=value, ...}"


@dataclass(frozen=True)
class Term:
    """One side of a check: ``experiment.split + offset``, or a constant when experiment is None.

    ``offset`` is in percentage points; for a constant it is the constant itself (percent).
    ``selector`` holds the ``{field=value, ...}`` pairs of a side that picks experiments by their
    swept values (then ``experiment`` is None until the study replaces the selector by names).
    """

    experiment: str | None
    split: str | None
    offset: float = 0.0
    selector: Selector | None = None

    @property
    def is_constant(self) -> bool:
        return self.experiment is None and self.selector is None

    @property
    def selector_text(self) -> str:
        """The selector as a canonical string, e.g. "{optimizer=adam}"; "" for other terms."""
        return "{" + ", ".join(f"{k}={v}" for k, v in self.selector) + "}" if self.selector else ""

    def label(self, with_split: bool = True) -> str:
        """Human-readable name, e.g. "exp6.test", "exp6 − 3", "99.9"."""
        if self.is_constant:
            return _fmt_num(self.offset)
        who = self.experiment if self.selector is None else self.selector_text
        name = f"{who}.{self.split}" if with_split else str(who)
        if self.offset == 0:
            return name
        return f"{name} {'+' if self.offset > 0 else '−'} {_fmt_num(abs(self.offset))}"


@dataclass(frozen=True)
class Check:
    """A parsed check, normalised so that ``op`` is ">", ">=" or "~".

    ``A < B`` and ``A <= B`` are stored with the sides swapped (``B > A``, ``B >= A``), so
    ``left - right`` is always the difference D that the hypotheses are about.

    Attributes
    ----------
    text : the check as written.
    left, right : the two terms after normalisation.
    op : ">", ">=" or "~".
    by_more_than : d of "by more than d points" (only with > and <), else None.
    within : m of "within m points" (only with >=, <= and ~), else None (use the claim margin).
    swapped : whether the sides were swapped (written with < or <=): `written` is their order in `text`.
    """

    text: str
    left: Term
    op: Literal[">", ">=", "~"]
    right: Term
    by_more_than: float | None = None
    within: float | None = None
    swapped: bool = field(default=False, compare=False)

    @property
    def written(self) -> tuple[Term, Term]:
        """The two terms in the order the check writes them."""
        return (self.right, self.left) if self.swapped else (self.left, self.right)

    @property
    def experiments(self) -> set[str]:
        return {t.experiment for t in (self.left, self.right) if t.experiment is not None}

    @property
    def has_selectors(self) -> bool:
        return any(t.selector is not None for t in (self.left, self.right))


_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"  # ASCII digits only: \d also matches other scripts' digits
_TOKEN = re.compile(
    rf"""
    (?P<ws>\s+)
  | (?P<selector>\{{[^{{}}]*\}}\.[A-Za-z_]\w*)   # {{field=value, ...}}.split
  | (?P<braces>\{{[^{{}}]*\}}?)                # a selector without its split (or its closing brace)
  | (?P<ref>[A-Za-z0-9_.-]+\.[A-Za-z_]\w*)    # experiment.split: the split follows the last dot and
                                             # starts with a letter (w130-lr0.001.test)
  | (?P<number>{_NUMBER}%?)
  | (?P<op>[<>=~!≤≥≈]+)
  | (?P<sign>[+\-−])
  | (?P<word>[A-Za-z_][A-Za-z0-9_.-]*)
    """,
    re.VERBOSE,
)
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = {"<": "<", ">": ">", "<=": "<=", ">=": ">=", "~": "~"}
_OPERATORS.update({"≤": "<=", "≥": ">=", "≈": "~"})
_UNITS = {"point", "points", "pt", "pts"}


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    """(kind, text, position) of each token but whitespace."""
    tokens, pos = [], 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise CheckSyntaxError(f"unexpected character {text[pos]!r} at position {pos}")
        if match.lastgroup != "ws":
            tokens.append((match.lastgroup, match.group(), pos))
        pos = match.end()
    return tokens


def _split_top_level(body: str) -> list[str]:
    """`body` split at the commas outside brackets and quotes ("a=1, b=[1, 2]" -> 2 parts)."""
    parts, depth, quote, start = [], 0, None, 0
    for i, char in enumerate(body):
        if quote:
            quote = None if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[(":
            depth += 1
        elif char in "])":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(body[start:i])
            start = i + 1
    parts.append(body[start:])
    return parts


def _selector(text: str) -> Selector:
    """The (field, value) pairs of a selector's text, e.g. "{optimizer=adam, hidden=130}"."""
    body = text[1:-1]
    if not body.strip():
        raise CheckSyntaxError(f"the selector {text} is empty; write {{FIELD=VALUE}}, e.g. {{optimizer=adam}}")
    pairs = []
    for part in _split_top_level(body):
        key, equals, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not equals or not _FIELD.fullmatch(key) or not value:
            raise CheckSyntaxError(f"the selector {text} needs FIELD=VALUE pairs separated by commas, "
                                   f"not {part.strip()!r}")
        if key in (k for k, _ in pairs):
            raise CheckSyntaxError(f"the selector {text} gives {key} twice")
        pairs.append((key, value))
    return tuple(pairs)


class _Parser:
    """Recursive-descent parser over the token list of one check."""

    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos][:2] if self.pos < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise CheckSyntaxError("unexpected end of check")
        self.pos += 1
        return token

    def parse(self) -> Check:
        left = self.term()
        kind, value = self.take()
        if kind != "op":
            raise CheckSyntaxError(f"expected a comparison (<, >, <=, >=, ~) but found {value!r}")
        if value not in _OPERATORS:
            raise CheckSyntaxError(f"unknown operator {value!r}; use one of <, >, <=, >=, ~")
        op = _OPERATORS[value]
        right = self.term()
        by_more_than = within = None
        token = self.peek()
        if token is not None and token[0] == "word" and token[1].lower() == "by":
            self.take()
            self.keyword("more")
            self.keyword("than")
            by_more_than = self.bound("by more than")
        elif token is not None and token[0] == "word" and token[1].lower() == "within":
            self.take()
            within = self.bound("within")
        if self.peek() is not None:
            raise CheckSyntaxError(f"unexpected {self.peek()[1]!r} after the comparison")

        if by_more_than is not None and op not in ("<", ">"):
            raise CheckSyntaxError(f"'by more than' goes with < or >, not {op!r}")
        if within is not None and op not in ("<=", ">=", "~"):
            raise CheckSyntaxError(f"'within' goes with ~, >= or <=, not {op!r}")
        if op == "~" and within == 0:
            raise CheckSyntaxError("'~' needs a margin above 0 points")
        swapped = op in ("<", "<=")
        if swapped:  # normalise: A < B  <=>  B > A
            left, right, op = right, left, op.replace("<", ">")
        return Check(self.text, left, op, right, by_more_than, within, swapped)

    def term(self) -> Term:
        kind, value = self.take()
        if kind == "number":
            return Term(None, None, _number(value))
        if kind == "word":
            raise CheckSyntaxError(
                f"{value!r} is not EXPERIMENT.SPLIT (e.g. {value}.test) or a number"
            )
        if kind == "braces":
            if not value.endswith("}"):
                raise CheckSyntaxError(f"the selector {value} has no closing '}}'")
            raise CheckSyntaxError(f"the selector {value} needs a split, e.g. {value}.test")
        if kind not in ("ref", "selector"):
            raise CheckSyntaxError(f"expected EXPERIMENT.SPLIT or a number but found {value!r}")
        experiment, split = value.rsplit(".", 1)
        selector = _selector(experiment) if kind == "selector" else None
        if split.lower() not in SPLITS:
            raise CheckSyntaxError(
                f"unknown split {split!r} in {value!r}; expected one of {', '.join(SPLITS)}"
            )
        offset = 0.0
        token = self.peek()
        if token is not None and token[0] == "sign":
            self.take()
            kind, number = self.take()
            if kind != "number" or number.endswith("%"):
                raise CheckSyntaxError(f"expected a number of points after {token[1]!r}")
            offset = _number(number) if token[1] == "+" else -_number(number)
        if selector is not None:
            return Term(None, split.lower(), offset, selector)
        return Term(experiment, split.lower(), offset)

    def keyword(self, word: str) -> None:
        kind, value = self.take()
        if kind != "word" or value.lower() != word:
            raise CheckSyntaxError(f"expected {word!r} but found {value!r}")

    def bound(self, phrase: str) -> float:
        kind, value = self.take()
        if kind != "number":
            raise CheckSyntaxError(f"expected a number of points after {phrase!r}, found {value!r}")
        token = self.peek()
        if token is not None and token[0] == "word" and token[1].lower() in _UNITS:
            self.take()
        return _number(value)


def _number(token: str) -> float:
    """A number token's value (a trailing % is allowed and means nothing more than percent)."""
    value = float(token.rstrip("%"))
    if not math.isfinite(value):
        raise CheckSyntaxError(f"the number {token[:20]}{'…' if len(token) > 20 else ''} is too large")
    return value


def parse_check(text: str) -> Check:
    """Parse one check string (grammar in the module docstring).

    Raises
    ------
    CheckSyntaxError : with a message that names the check and what is wrong with it.
    """
    try:
        return _Parser(text).parse()
    except CheckSyntaxError as err:
        raise CheckSyntaxError(f"check {text!r}: {err}") from None


def split_at_selectors(text: str) -> list[str]:
    """The text around the check's selectors (their braces), in the order written.

    ``split_at_selectors("{optimizer=adam}.test > {optimizer=sgd}.test")`` is
    ``["", ".test > ", ".test"]``: joined with experiment names between them, a concrete check,
    the rest kept as written.
    """
    pieces, start = [], 0
    for kind, value, pos in _tokenize(text):
        if kind == "selector":
            pieces.append(text[start:pos])
            start = pos + value.rindex(".")  # the braces end where the split's dot starts
    return pieces + [text[start:]]


def _fmt_num(x: float) -> str:
    return f"{x:g}"
