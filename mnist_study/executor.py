"""Run tasks on N workers: the one place that owns parallel work and thread limits.

    with make_executor(workers=2, on_event=print) as executor:
        future = executor.submit(task)        # task: a picklable object with run(emit) -> result
        done = executor.wait([future])        # delivers the workers' events to on_event meanwhile

A task is a small frozen dataclass whose `run(emit)` does the work and returns a typed result;
`emit(event)` sends a progress event (a plain dict) back to the caller's `on_event`. Three executors
implement the same interface: `InProcessExecutor` runs each task at once in this process,
`ProcessExecutor` in spawned worker processes, and `RayExecutor` (executors/ray.py, with the
optional `ray` extra) on a Ray cluster: `make_executor(kind="ray", address=...)`.

Every task computes with one PyTorch thread, wherever it runs: BLAS sums in a different order with
more threads, so results would depend on where a task ran, and at these sizes one thread per worker
is also the fastest (two processes with two threads each on two cores run many times slower).
The BLAS libraries numpy and SciPy load are limited to one thread per task too when the caller asks
(`limit_blas=True`), as runs and the report do: the PCA front-end's fit comes out a few ulps
different with one BLAS thread than with several, so without the limit a run's PCA results would
depend on the number of cores of the machine (or Ray node) that fitted it. (Runs recorded before
runs limited BLAS fitted PCA with the machine's default threads: a rerun of their PCA experiments
differs in the last bits, and the networks trained on them slightly more.)

Workers never outlive the process that started them: killed with it (`kill -9`, the OOM killer),
they die within a second instead of writing on into a run directory that another process may be
resuming. Ctrl-C is the parent's to handle: workers ignore it, and the parent stops them at once.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing as mp
import os
import queue
import sys
import threading
import time
import types
from abc import ABC, abstractmethod
from typing import Callable, Collection, Iterable, Iterator, Protocol, TypeVar

EventFn = Callable[[dict], None]
R = TypeVar("R")


class Task(Protocol[R]):
    """A unit of work that can travel to another process."""

    def run(self, emit: EventFn) -> R: ...


def default_workers() -> int:
    """One single-threaded worker per core."""
    return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def single_threaded(blas: bool = True) -> Iterator[None]:
    """PyTorch limited to one thread inside the block, and with `blas` every BLAS library too
    (OpenMP pools are left alone: t-SNE keeps its own threads)."""
    import torch
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1, user_api="blas") if blas else contextlib.nullcontext():
            yield
    finally:
        torch.set_num_threads(threads)


def _ignore(event: dict) -> None:
    pass


class Executor(ABC):
    """Runs tasks, at most `workers` at a time, and forwards their events to `on_event`.

    `limit_blas`: also limit numpy's BLAS to one thread while tasks run (see the module docstring).
    """

    def __init__(self, workers: int, on_event: EventFn | None = None, limit_blas: bool = False):
        self.workers = workers
        self.on_event = on_event or _ignore
        self.limit_blas = limit_blas

    @abstractmethod
    def submit(self, task: Task[R]) -> cf.Future:
        """Start `task`; its future holds the result, or the task's exception."""

    def wait(self, futures: Collection[cf.Future], timeout: float | None = 0.2) -> set[cf.Future]:
        """The futures of `futures` that are done, waiting up to `timeout` s for the first one."""
        done, _ = cf.wait(futures, timeout=timeout, return_when=cf.FIRST_COMPLETED)
        return done

    def run_all(self, tasks: Iterable[Task[R]]) -> Iterator[tuple[Task[R], R]]:
        """Run every task, at most `workers` at a time; yield (task, result) as each finishes."""
        waiting = list(tasks)
        running: dict[cf.Future, Task[R]] = {}
        while waiting or running:
            while waiting and len(running) < max(self.workers, 1):
                task = waiting.pop(0)
                running[self.submit(task)] = task
            for future in self.wait(running):
                task = running.pop(future)
                yield task, future.result()

    def close(self, cancel: bool = False) -> None:
        """Wait for running tasks (or cancel those not started), and release the workers."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        self.close(cancel=error is not None)


class InProcessExecutor(Executor):
    """Runs each task to completion in this process when it is submitted."""

    def __init__(self, on_event: EventFn | None = None, limit_blas: bool = False):
        super().__init__(1, on_event, limit_blas)

    def submit(self, task: Task[R]) -> cf.Future:
        future: cf.Future = cf.Future()
        try:
            with single_threaded(blas=self.limit_blas):
                future.set_result(task.run(self.on_event))
        except Exception as error:  # the caller sees it from future.result(), as from a worker
            future.set_exception(error)
        return future


# ------------------------------------------------------------------------------ worker processes

_worker_events = None  # in a worker process: the queue its events go back through
_worker_limit_blas = False  # in a worker process: whether each task runs with one BLAS thread


PARENT_CHECK_S = 0.5  # how often a worker checks, where the kernel cannot tell it, that its parent lives

# The first thing a worker runs (as `exec(_BOOT, {"parent": PID, "initargs": ...})`). Importing
# this package imports PyTorch, seconds during which a worker whose parent was killed would live
# on; so the worker first asks the kernel to kill it when its parent dies (Linux's
# PR_SET_PDEATHSIG = 1; strictly, when the thread that started it ends: workers start from the
# thread that submits tasks, which waits for them), takes no Ctrl-C (the parent handles it, for
# the whole group), and only then imports us. `exec` pickles by reference and imports nothing.
_BOOT = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
if sys.platform.startswith("linux"):
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
if os.getppid() != parent:  # it died before we could ask to be told
    os._exit(1)
from mnist_study.executor import _init_worker
_init_worker(parent, *initargs)
"""


def _watch_parent(parent: int) -> None:
    """End this worker once `parent` has died, wherever the kernel cannot be asked to (not Linux):
    an orphan is adopted by another process, so its parent's PID changes."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_S)
        os._exit(1)  # nothing to save: every result is written atomically, and a resume redoes the rest

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


def _init_worker(parent: int, events, environment: dict[str, str], limit_blas: bool) -> None:
    global _worker_events, _worker_limit_blas
    _watch_parent(parent)
    _worker_events = events
    _worker_limit_blas = limit_blas
    os.environ.update(environment)
    import torch

    torch.set_num_threads(1)


def _worker_emit(event: dict) -> None:
    _worker_events.put(event)


def _run_in_worker(task: Task[R]) -> R:
    # Limited per task, not once at start: a BLAS library loaded by the first task (SciPy's, with
    # scikit-learn) is then limited as well (about 3 ms a task).
    with single_threaded(blas=_worker_limit_blas):
        return task.run(_worker_emit)


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Start worker processes without re-running the caller's script.

    A spawned worker re-imports the parent's __main__ module, so a plain script that calls
    `run_study(...)` at its top level would run again in every worker (and fail). Workers need
    nothing from __main__ (tasks are defined in this package), so while they start, __main__
    is a bare module that multiprocessing has nothing to re-import from.
    """
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


class ProcessExecutor(Executor):
    """Runs tasks in `workers` spawned processes, one thread each.

    Spawned, not forked: forking a process in which PyTorch has started threads can deadlock.
    `environment` is set in every worker before its first task (e.g. a decision the parent made).
    """

    def __init__(self, workers: int, on_event: EventFn | None = None, environment: dict[str, str] | None = None,
                 limit_blas: bool = False):
        super().__init__(workers, on_event, limit_blas)
        context = mp.get_context("spawn")
        self._events = context.Queue()
        boot = {"parent": os.getpid(), "initargs": (self._events, dict(environment or {}), limit_blas)}
        self._pool = cf.ProcessPoolExecutor(workers, mp_context=context, initializer=exec, initargs=(_BOOT, boot))
        self._futures: set[cf.Future] = set()

    def submit(self, task: Task[R]) -> cf.Future:
        with _main_module_hidden():  # workers start on submit
            future = self._pool.submit(_run_in_worker, task)
        self._futures.add(future)
        return future

    def wait(self, futures: Collection[cf.Future], timeout: float | None = 0.2) -> set[cf.Future]:
        done = super().wait(futures, timeout)
        self._deliver_events()
        return done

    def _deliver_events(self) -> None:
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return
            self.on_event(event)

    def close(self, cancel: bool = False) -> None:
        """Wait for the running tasks; with `cancel` (an error or Ctrl-C ends the run), stop them now.

        Stopping a task midway loses nothing that finished: its files are written atomically, and
        `--resume` redoes the task.
        """
        if cancel:
            for future in self._futures:
                future.cancel()
            self._stop_workers()
        self._pool.shutdown(wait=True, cancel_futures=cancel)
        if not cancel:
            self._deliver_events()

    def _stop_workers(self) -> None:
        processes = list((getattr(self._pool, "_processes", None) or {}).values())  # Python < 3.14 has no API
        for process in processes:
            with contextlib.suppress(OSError, ValueError):
                process.terminate()
        for process in processes:
            with contextlib.suppress(OSError, ValueError, AssertionError):
                process.join(5)


EXECUTORS = ("local", "ray")  # make_executor's kinds


def make_executor(workers: int | None = None, on_event: EventFn | None = None,
                  environment: dict[str, str] | None = None, limit_blas: bool = False, *, kind: str = "local",
                  **options) -> Executor:
    """Worker processes for workers >= 2 (default: one per core), else this process.

    kind="ray": a `RayExecutor` (executors/ray.py) with `options` (address, cpus_per_unit,
    gpus_per_unit, ...); its tasks always run with one BLAS thread, and `environment` is ignored.
    """
    if kind == "ray":
        from mnist_study.executors.ray import RayExecutor  # imports Ray only now: an optional extra

        return RayExecutor(workers=workers, on_event=on_event, **options)
    if kind != "local":
        from mnist_study.errors import OptionError

        raise OptionError(f"unknown executor {kind!r}; use one of {', '.join(EXECUTORS)}")
    if options:
        raise TypeError(f"the local executor takes no {', '.join(options)}")
    workers = default_workers() if workers is None else workers
    if workers <= 1:
        return InProcessExecutor(on_event, limit_blas)
    return ProcessExecutor(workers, on_event, environment, limit_blas)


def worker_count(requested: int | None, tasks: int) -> int:
    """Workers worth starting for `tasks` independent tasks (never more workers than tasks)."""
    workers = default_workers() if requested is None else requested
    return max(0, min(workers, tasks)) if workers > 1 else workers


__all__ = ["EXECUTORS", "EventFn", "Executor", "InProcessExecutor", "ProcessExecutor", "Task", "default_workers",
           "make_executor", "single_threaded", "worker_count"]
