"""One process at a time writes a run directory: RUN_DIR/run.lock, held by the process at work.

    with run_lock(run_dir, "mnist-study run --resume runs/paper-1"):
        ...   # train, resume, or build the report

`run_study`, `resume_run` and `mnist-study report` hold it while they write; readers (`show`,
`compare`, `predict`, `serve`) need none, because every file is replaced atomically. A second
writer is refused at once, told who holds the run:

    runs/paper-1 is in use by process 4242 (mnist-study run --resume runs/paper-1) since ...

The lock is an flock(2) on the file, which the operating system releases when its process ends,
however it ends (kill -9 included): a lock left by a dead process is simply taken over. The file
itself only says who holds it, for that message; it is left in place when released, because
deleting a locked file lets two processes lock two different files of one name. Holding it is
reentrant within a process (the CLI holds it across a run and its report). Where flock does not
exist (Windows), runs are not locked.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from mnist_study.errors import RunInUseError
from mnist_study.files import as_write_error

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_NAME = "run.lock"
_held: dict[Path, int] = {}  # run directory -> how many times this process holds its lock


def this_command() -> str:
    """How this process was started, as a person would type it (`mnist-study run paper`)."""
    return " ".join([Path(sys.argv[0]).name or "python", *sys.argv[1:]])


@contextlib.contextmanager
def run_lock(run_dir: str | Path, command: str | None = None) -> Iterator[None]:
    """Hold `run_dir`'s lock for the block; raise RunInUseError when another process holds it.

    `command` is recorded for the message another process would give (default: this process's).
    """
    key = Path(run_dir).resolve()
    if key in _held or fcntl is None:
        _held[key] = _held.get(key, 0) + 1
        try:
            yield
        finally:
            _held[key] -= 1
            if not _held[key]:
                del _held[key]
        return
    fd = _acquire(Path(run_dir), command or this_command())
    _held[key] = 1
    try:
        yield
    finally:
        del _held[key]
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # a released lock names no holder
        os.close(fd)  # releases the flock


def _acquire(run_dir: Path, command: str) -> int:
    path = run_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as error:
        raise (as_write_error(error, path) or error) from error
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise RunInUseError(f"{run_dir} is in use by {holder}; wait for it to end (or stop it), "
                            "then try again") from None
    except OSError:  # a file system without locks (some network mounts): go on unlocked
        return fd
    record = {"pid": os.getpid(), "command": command, "host": socket.gethostname(),
              "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
    except OSError as error:
        os.close(fd)
        raise (as_write_error(error, path) or error) from error
    return fd


def _holder(fd: int) -> str:
    """Who holds the lock, from what it wrote into the file (it may not have written yet)."""
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"{}")
        pid, command = record["pid"], record["command"]
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"
    where = "" if record.get("host") in (None, socket.gethostname()) else f" on {record['host']}"
    since = f" since {record['since']}" if record.get("since") else ""
    return f"process {pid}{where} ({command}){since}"

