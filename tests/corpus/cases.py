"""What one corpus entry is."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class Case:
    """One named input and the answer expected for it.

    `make(folder)` creates `folder`, writes the input there and returns the path the command is
    given (a data folder, an image file, a study file). `expect` is a fragment of the error the
    command must print (case-sensitive), or None when the input is fine and must be accepted.
    """

    name: str
    kind: str  # "idx", "image" or "study"
    make: Callable[[Path], Path]
    expect: str | None

    def __str__(self) -> str:  # the test id
        return self.name
