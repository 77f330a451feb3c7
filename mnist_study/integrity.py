"""Does a result file read back whole? Cheap checks that tell a finished result from a damaged one.

A seed counts as finished only when its completion marker (metrics.json) and every other file of
it read back, and a front-end counts as fitted only when both its files do: a file truncated by a
full disk, cut short by a copy or edited by hand is then redone by `--resume` and named by every
reader instead of failing deep inside one. The checks are cheap enough to run on every load:
JSON files are parsed, safetensors files have their header read and their length checked against
it (no tensor data is read), so a paper run of 50 seeds is checked in milliseconds.

    problem = seed_problem(run_dir / "experiments/exp6/seed-0")   # None, or (file, what is wrong)
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

# safetensors: an 8-byte little-endian header length, a JSON header, then the tensors' bytes.
_HEADER_LIMIT = 100_000_000  # safetensors' own limit on the header's size
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
                "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}

# What each file of a finished seed must hold (keys of a JSON object, or tensors of a safetensors file).
SEED_FILES: dict[str, tuple[str, ...]] = {
    "model.safetensors": ("output.kernel", "output.bias"),  # hidden layers: 0 to 4 (model.MLP.load checks them)
    "evaluation.safetensors": ("confusion", "test_proba"),
    "history.json": ("loss", "val_loss"),
    "classification_report.json": ("accuracy",),
    "metrics.json": ("accuracy", "loss", "epochs_run"),
}
FRONTEND_FILES: dict[str, tuple[str, ...]] = {"frontend.json": ("kind", "params"), "frontend.safetensors": ()}


def json_problem(path: Path, keys: tuple[str, ...] = ()) -> str | None:
    """What is wrong with the JSON object file at `path` (it lacks one of `keys`...), or None."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return "it is missing"
    except (OSError, UnicodeDecodeError) as error:
        return f"it cannot be read ({error})"
    if not text.strip():
        return "it is empty"
    try:
        data = json.loads(text)
    except ValueError as error:
        ended = text.rstrip().endswith(("}", "]"))  # a cut-short file lacks its end; a garbled one, its middle
        return f"it is not valid JSON{'' if ended else ', probably cut short'} ({error})"
    if not isinstance(data, dict):
        return f"it holds a {type(data).__name__}, not a JSON object"
    lacking = [k for k in keys if k not in data]
    return f"it lacks {', '.join(lacking)}" if lacking else None


def safetensors_problem(path: Path, tensors: tuple[str, ...] = ()) -> str | None:
    """What is wrong with the safetensors file at `path` (header, length, lacking `tensors`), or None."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(0)
            if size < 8:
                return f"it is {size} bytes long, too short for a safetensors header"
            (length,) = struct.unpack("<Q", f.read(8))
            if length > min(_HEADER_LIMIT, size - 8):
                return f"its header claims {length} bytes but the file has {size - 8}, so it was cut short"
            header = json.loads(f.read(length))
    except FileNotFoundError:
        return "it is missing"
    except OSError as error:
        return f"it cannot be read ({error})"
    except ValueError as error:
        return f"its header is not valid JSON ({error})"
    if not isinstance(header, dict):
        return "its header is not a JSON object"
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            start, stop = info["data_offsets"]
            count = 1
            for n in info["shape"]:
                count *= n
            if stop - start != count * _DTYPE_BYTES[info["dtype"]]:
                return f"its tensor {name} has {stop - start} bytes for shape {info['shape']} {info['dtype']}"
        except (KeyError, TypeError, ValueError):
            return f"its header entry for {name} is malformed"
        end = max(end, stop)
    if size != 8 + length + end:
        return f"it is {size} bytes long where its header needs {8 + length + end}, so it was cut short"
    lacking = [t for t in tensors if t not in header]
    return f"it lacks the tensors {', '.join(lacking)}" if lacking else None


def file_problem(path: Path, required: tuple[str, ...] = ()) -> str | None:
    """What is wrong with a result file, by its kind (JSON or safetensors), or None."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return safetensors_problem(path, required)
    return json_problem(path, required)


def _first_problem(directory: Path, files: dict[str, tuple[str, ...]]) -> tuple[Path, str] | None:
    for name, required in files.items():
        problem = file_problem(directory / name, required)
        if problem is not None:
            return directory / name, problem
    return None


def seed_problem(seed_dir: Path) -> tuple[Path, str] | None:
    """The first file of a seed's results that does not read back, and why; None when all do."""
    return _first_problem(Path(seed_dir), SEED_FILES)


def frontend_problem(experiment_dir: Path) -> tuple[Path, str] | None:
    """The first file of a fitted front-end that does not read back, and why; None when both do."""
    return _first_problem(Path(experiment_dir), FRONTEND_FILES)
