"""Atomic file writes: a result is either whole on disk or absent, never half-written.

Every file the package writes goes through `atomic_path` (or the helpers built on it): the data is
written to a temporary file beside the target, flushed to disk, given the permissions a plain
`open()` would have given it (the user's umask; temporary files are created 0600), and renamed
over the target. A reader, or a crash, never sees a partial file.

A write the user can fix -- a full disk, a read-only file system, a folder that is not theirs --
raises `WriteError` naming the file and what to do; the target keeps its old content (or stays
absent) and the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from mnist_study.errors import WriteError

# The failures a user can fix, and how. Anything else (EIO: a failing disk) propagates unchanged.
WRITE_FIXES = {
    errno.ENOSPC: "free some space on that disk",
    errno.EDQUOT: "free some of your disk quota",
    errno.EROFS: "make that file system writable (or copy the folder to one that is)",
    errno.EACCES: "give yourself write permission on that folder",
    errno.EPERM: "give yourself write permission on that folder",
}
# safetensors reports an I/O error as its own exception, with the errno only in the text.
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def as_write_error(error: BaseException, path: Path) -> WriteError | None:
    """`error` as a WriteError naming `path`, when it is a failure the user can fix; else None."""
    code = error.errno if isinstance(error, OSError) else None
    if code is None and (match := _RUST_OS_ERROR.search(str(error))):
        code = int(match.group(1))
    if code not in WRITE_FIXES:
        return None
    return WriteError(f"cannot write {path}: {os.strerror(code).lower()}; {WRITE_FIXES[code]}")


def _umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, but only elsewhere)
    os.umask(mask)
    return mask


TMP_SUFFIX = ".tmp"  # `.<name>.<random>.tmp`: never a result's name, so never read as one


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it over `path` only if the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
        os.close(fd)
    except OSError as error:
        raise (as_write_error(error, path) or error) from error
    try:
        yield Path(tmp)
        _commit(Path(tmp), path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        converted = as_write_error(error, path)
        if converted is None:
            raise
        raise converted from error


def make_dir(path: str | Path) -> Path:
    """`mkdir -p path`; a failure the user can fix is a WriteError naming the folder."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise (as_write_error(error, path) or error) from error
    return path


def _commit(tmp: Path, path: Path) -> None:
    """Make the finished temporary file `tmp` the file at `path`: flushed to disk, then renamed.

    A function of its own so that the fault tests can make it fail as a full disk would.
    """
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


def remove_partial_writes(directory: str | Path) -> list[Path]:
    """Delete the temporary files that writes killed midway left under `directory`; return them.

    Only safe while no other process writes there (the run lock, `runlock.py`, makes sure of that).
    """
    removed = []
    for tmp in Path(directory).rglob(f".*{TMP_SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def write_bytes(path: str | Path, payload: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, default=_to_jsonable) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())
