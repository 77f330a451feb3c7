"""A corpus of bad inputs, generated deterministically: IDX data files, digit images, study files.

Each `Case` writes one input into an empty folder and says what the command given it must answer:
a fragment of its one-line error, or None where the input is in fact fine (an EXIF-rotated photo of
a digit is a valid image). test_bad_inputs.py feeds every case to the command a user would give it
(`mnist-study data --data-dir`, `mnist-study predict`, `mnist-study run STUDY --out`).

    from corpus import CASES, count_by_kind
    for case in CASES:
        path = case.make(tmp_path / case.name)
"""

from __future__ import annotations

from collections import Counter

from corpus.cases import Case
from corpus.idx_cases import IDX_CASES
from corpus.image_cases import IMAGE_CASES
from corpus.study_cases import STUDY_CASES

CASES: list[Case] = IDX_CASES + IMAGE_CASES + STUDY_CASES


def count_by_kind() -> dict[str, int]:
    """How many cases of each kind ("idx", "image", "study"), for BENCHMARKS.md."""
    return dict(Counter(case.kind for case in CASES))


__all__ = ["CASES", "Case", "IDX_CASES", "IMAGE_CASES", "STUDY_CASES", "count_by_kind"]
