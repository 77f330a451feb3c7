"""Run a study's tasks on a Ray cluster, behind the interface of executor.py's executors.

    from mnist_study.executors.ray import RayExecutor
    with RayExecutor("local", on_event=print) as executor:   # a private Ray instance on this machine
        for task, result in executor.run_all(tasks): ...
    RayExecutor("auto")                  # the cluster `ray start --head` started here, or $RAY_ADDRESS
    RayExecutor("10.0.0.5:6379")         # a cluster, by its head's address
    RayExecutor("ray://10.0.0.5:10001")  # a cluster through Ray Client, from outside it

`run_study(..., executor="ray", address=...)` makes one. Ray is an optional extra (`pip install
'mnist-study[ray]'`): nothing imports it until a RayExecutor is made. A Ray that the caller has
already started in this process (`ray.init(...)`) is used as it is, whatever the address, and left
running; otherwise the executor connects (or, for "local", starts an instance) and disconnects (or
stops it) on close.

Units. Each task -- fit a front-end; train an experiment's seeds, or one seed of a wide network,
as schedule.py splits them -- is one Ray task that asks for `cpus_per_unit` CPUs and
`gpus_per_unit` GPUs (fractions share one). A unit whose worker process or node dies runs again,
up to `max_retries` times; an error raised by the task itself is not retried.

No shared file system. A unit runs its task in a temporary directory on its node, into which the
files of the run directory that the task reads were written (`task.inputs`: the experiment's fitted
front-end), and returns the files the task wrote there (relative path -> bytes). This process
writes them into the run directory with the same atomic writes as everywhere else, a seed's
metrics.json (the completion marker) and a front-end's frontend.json last. The dataset travels
through Ray's object store once per dataset, and a fitted front-end once per experiment, not once
per unit; a worker keeps the dataset for all its units (`tasks._DATASET_CACHE`, as worker
processes do).

Events. A unit's events reach `on_event` while it runs: sent at most every EVENT_BATCH_S to a
queue actor (ray.util.queue) that `wait()` empties. The events that say a result is on disk (seed-done,
frontend-done) are held back until this process has written it, so that a unit run twice (its
worker died) counts its seeds once. Each unit first says where it runs: {"kind": "unit-start",
"unit" (a number), "task" (FitFrontend, TrainSeeds), "experiment", "pid", "node" (Ray's node id)}.

Threads. Every unit computes with one PyTorch thread and one BLAS thread, as local workers do
(executor.py), so a unit's results do not depend on the node that ran it (given its CPU and
libraries): on this machine they equal the local executors' bit for bit.

`executors.loopback.loopback_cluster()` starts a cluster of several nodes on this machine alone, to
try all of this without a second machine.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Collection, Mapping

from mnist_study.errors import OptionError, RunError, UserError
from mnist_study.executor import EventFn, Executor, Task, single_threaded
from mnist_study.files import write_bytes

INSTALL_HINT = "pip install 'mnist-study[ray]'"
EVENT_BATCH_S = 0.25                          # a unit sends its events at most this often
HELD_EVENTS = ("seed-done", "frontend-done")  # delivered once this process has written the files
MARKERS = ("metrics.json", "frontend.json")   # written after every other file a unit returns
UNIT_DIR_PREFIX = "mnist-study-unit-"         # a unit's temporary run directory: <prefix><pid>-<random>


def import_ray():
    """The `ray` module; an OptionError saying how to install it where it is missing."""
    try:
        import ray
    except ImportError:
        raise OptionError(f"the Ray executor needs Ray, which is not installed here: {INSTALL_HINT}") from None
    return ray


# ------------------------------------------------------------------------------------ in a worker

_worker_data: dict[str, str] = {}  # in a worker: data_dir -> the object id of the dataset cached for it


class _Emitter:
    """A unit's `emit`: sends events in batches, at most every EVENT_BATCH_S; keeps back HELD_EVENTS
    and what is unsent at the end, which travel with the unit's result."""

    def __init__(self, sink):
        self.sink = sink
        self.batch: list[dict] = []
        self.held: list[dict] = []
        self.sent = 0.0
        self.lock = threading.Lock()
        self.timer: threading.Timer | None = None

    def __call__(self, event: dict) -> None:
        with self.lock:
            if event.get("kind") in HELD_EVENTS:
                self.held.append(event)
                return
            self.batch.append(event)
            wait = self.sent + EVENT_BATCH_S - time.monotonic()
            if wait <= 0:
                self._send()
            elif self.timer is None:  # a quiet unit's last event must not wait for the next one
                self.timer = threading.Timer(wait, self.flush)
                self.timer.daemon = True
                self.timer.start()

    def flush(self) -> None:
        with self.lock:
            self._send()

    def _send(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.batch and self.sink is not None:
            try:
                self.sink.put_nowait_batch(self.batch)  # a ray.util.queue.Queue: a millisecond's round trip
            except Exception:  # its node gone: the progress shown is not worth a unit
                self.sink = None
        self.batch = []
        self.sent = time.monotonic()

    def rest(self) -> list[dict]:
        """What the unit returns: the events not sent yet, then the held ones."""
        with self.lock:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            rest, self.batch = self.batch + self.held, []
            return rest


def _adopt_environment(environment: dict[str, str]) -> None:
    """The driver's choice of training step (training/fused.py), for this worker.

    The switch travels; the driver's decision only where it is to take the eager step. Where it
    found a compiled kernel, this node loads its own build (the same file, on the driver's
    machine), or builds it once: a library built for the driver's CPU may not run on this one.
    """
    from mnist_study.training import fused

    os.environ[fused.ENV_SWITCH] = environment.get(fused.ENV_SWITCH, "1")
    decision = environment.get(fused.DECISION_VAR)
    if decision and "eager" in json.loads(decision):
        os.environ[fused.DECISION_VAR] = decision
    else:
        os.environ.pop(fused.DECISION_VAR, None)


def _clear_stale_unit_dirs(root: Path) -> None:
    """Remove the temporary run directories of units whose worker died (SIGKILL, OOM) on this node."""
    for path in root.glob(f"{UNIT_DIR_PREFIX}*"):
        pid = path.name[len(UNIT_DIR_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists() and sys.platform.startswith("linux"):
            shutil.rmtree(path, ignore_errors=True)


def _run_staged(task, inputs: dict[str, bytes], emit: EventFn):
    """Run `task` with a temporary run directory holding `inputs`; return its result and the files it wrote."""
    root = Path(tempfile.gettempdir())
    _clear_stale_unit_dirs(root)
    work = Path(tempfile.mkdtemp(prefix=f"{UNIT_DIR_PREFIX}{os.getpid()}-", dir=root))
    try:
        for name, payload in inputs.items():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            (work / name).write_bytes(payload)
        result = dataclasses.replace(task, run_dir=str(work)).run(emit)
        files = {}
        for path in sorted(work.rglob("*")):
            name = path.relative_to(work).as_posix()
            if path.is_file() and name not in inputs:
                files[name] = path.read_bytes()
        return result, files
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run_unit(task, data: list | None, inputs: list | None, sink, unit: int, environment: dict[str, str]):
    """One unit, in a Ray worker. `data` and `inputs` hold object refs inside a list, so that Ray
    does not fetch them before the call: a worker that has the dataset already skips the fetch."""
    import ray

    from mnist_study import tasks

    emit = _Emitter(sink)
    emit({"kind": "unit-start", "unit": unit, "task": type(task).__name__, "experiment": getattr(task, "name", None),
          "pid": os.getpid(), "node": ray.get_runtime_context().get_node_id()})
    _adopt_environment(environment)
    if data is not None and _worker_data.get(task.data_dir) != data[0].hex():
        tasks._DATASET_CACHE[task.data_dir] = ray.get(data[0])  # read-only arrays in the object store
        _worker_data[task.data_dir] = data[0].hex()
    with single_threaded(blas=True):
        if inputs is None:
            result, files = task.run(emit), {}
        else:
            result, files = _run_staged(task, ray.get(inputs[0]), emit)
    return result, files, emit.rest()


# ------------------------------------------------------------------------------------ the driver

@dataclasses.dataclass
class _Unit:
    future: cf.Future
    task: Task
    number: int


def unit_slots(resources: Mapping[str, float], cpus_per_unit: float, gpus_per_unit: float) -> int:
    """How many units a cluster with `resources` (ray.cluster_resources()) runs at once."""
    slots = []
    if cpus_per_unit > 0:
        slots.append(int(resources.get("CPU", 0) / cpus_per_unit + 1e-9))
    if gpus_per_unit > 0:
        slots.append(int(resources.get("GPU", 0) / gpus_per_unit + 1e-9))
    return min(slots)


def write_unit_files(run_dir: str | Path, files: Mapping[str, bytes]) -> None:
    """Write a unit's files into `run_dir`, atomically each, the completion markers last."""
    for name in sorted(files, key=lambda name: (Path(name).name in MARKERS, name)):
        path = Path(name)
        if path.is_absolute() or ".." in path.parts:
            raise RunError(f"a Ray unit returned a file outside its run directory ({name!r})")
        write_bytes(Path(run_dir) / path, files[name])


class RayExecutor(Executor):
    """Runs tasks as Ray tasks of `cpus_per_unit` CPUs and `gpus_per_unit` GPUs each.

    `address`: "local" starts a private Ray instance here with `workers` CPUs (default: every
    core) and stops it on close; "auto", "HOST:PORT" or "ray://HOST:PORT" connect to a running
    cluster (ray.init's address), and disconnect on close. At most `workers` units run at once
    (default: as many as the cluster's CPUs and GPUs hold). `datasets`: the datasets already loaded
    here, by the data_dir that tasks name (others are loaded when a task first names them).
    `runtime_env` goes to ray.init (e.g. {"py_modules": [...]} where the nodes lack this package).
    """

    def __init__(self, address: str = "local", cpus_per_unit: float = 1, gpus_per_unit: float = 0,
                 on_event: EventFn | None = None, *, workers: int | None = None, max_retries: int = 3,
                 datasets: Mapping[str, object] | None = None, runtime_env: dict | None = None):
        if cpus_per_unit < 0 or gpus_per_unit < 0 or cpus_per_unit + gpus_per_unit <= 0:
            raise OptionError(f"a Ray unit needs some CPUs or GPUs; got cpus_per_unit={cpus_per_unit}, "
                              f"gpus_per_unit={gpus_per_unit}")
        if workers is not None and workers < 1:
            raise OptionError(f"workers must be at least 1 with the Ray executor, got {workers}")
        ray = import_ray()
        self._ray = ray
        self.address = address
        self._started = not ray.is_initialized()
        if self._started:
            _connect(ray, address, workers, runtime_env)
        try:
            resources = ray.cluster_resources()
            slots = unit_slots(resources, cpus_per_unit, gpus_per_unit)
            if slots < 1:
                raise OptionError(
                    f"the Ray cluster ({address}) has {resources.get('CPU', 0):g} CPUs and "
                    f"{resources.get('GPU', 0):g} GPUs: too few for one unit of {cpus_per_unit:g} CPUs and "
                    f"{gpus_per_unit:g} GPUs; lower --cpus-per-unit / --gpus-per-unit or add nodes")
            # Ray's own queue actor: its process imports Ray alone, not this package (and PyTorch).
            from ray.util.queue import Queue

            self._sink = Queue(actor_options={"num_cpus": 0})
        except BaseException:
            if self._started:
                ray.shutdown()
            raise
        super().__init__(min(slots, workers or slots), on_event, limit_blas=True)
        self.max_retries = max_retries
        self._remote = ray.remote(_run_unit).options(num_cpus=cpus_per_unit, num_gpus=gpus_per_unit,
                                                    max_retries=max_retries)
        self._datasets = dict(datasets or {})
        self._data_refs: dict[str, object] = {}
        self._input_refs: dict[tuple[str, tuple[str, ...]], object] = {}
        self._running: dict[object, _Unit] = {}
        self._units = 0
        self._environment = _driver_environment()
        self._closed = False

    # -- submitting

    def submit(self, task: Task) -> cf.Future:
        data_dir = getattr(task, "data_dir", None)
        data = [self._dataset_ref(data_dir)] if data_dir else None
        inputs = [self._inputs_ref(task)] if getattr(task, "run_dir", None) is not None else None
        self._units += 1
        ref = self._remote.remote(task, data, inputs, self._sink, self._units, self._environment)
        future: cf.Future = cf.Future()
        self._running[ref] = _Unit(future, task, self._units)
        return future

    def _dataset_ref(self, data_dir: str):
        if data_dir not in self._data_refs:
            from mnist_study import tasks

            dataset = self._datasets.get(data_dir) or tasks._dataset(data_dir)
            self._data_refs[data_dir] = self._ray.put(dataset)
        return self._data_refs[data_dir]

    def _inputs_ref(self, task):
        names = tuple(getattr(task, "inputs", ()))
        key = (str(task.run_dir), names)
        if key not in self._input_refs:
            paths = {name: Path(task.run_dir) / name for name in names}
            self._input_refs[key] = self._ray.put({name: p.read_bytes() for name, p in paths.items() if p.is_file()})
        return self._input_refs[key]

    # -- results

    def wait(self, futures: Collection[cf.Future], timeout: float | None = 0.2) -> set[cf.Future]:
        wanted = set(futures)
        refs = [ref for ref, unit in self._running.items() if unit.future in wanted]
        ready = []
        if refs:
            ready, _ = self._ray.wait(refs, num_returns=1, timeout=timeout)
            if ready and len(refs) > 1:  # every unit done by now, not only the first
                ready, _ = self._ray.wait(refs, num_returns=len(refs), timeout=0)
        self._deliver_events()
        for ref in ready:
            self._finish(ref)
        return {future for future in wanted if future.done()}

    def _deliver_events(self) -> None:
        if self._sink is None:
            return
        try:
            waiting = self._sink.qsize()
            events = self._sink.get_nowait_batch(waiting) if waiting else []
        except self._ray.exceptions.RayError:  # the queue's node died: the rest come with the results
            self._sink = None
            return
        for event in events:
            self.on_event(event)

    def _finish(self, ref) -> None:
        unit = self._running.pop(ref)
        try:
            result, files, events = self._ray.get(ref)
            if files:
                write_unit_files(unit.task.run_dir, files)
                self._input_refs = {key: value for key, value in self._input_refs.items()
                                    if key[0] != str(unit.task.run_dir) or not set(key[1]) & set(files)}
        except Exception as error:  # the caller meets it in future.result(), as from a local worker
            unit.future.set_exception(self._as_error(error, unit))
            return
        for event in events:
            self.on_event(event)
        unit.future.set_result(result)

    def _as_error(self, error: Exception, unit: _Unit) -> Exception:
        exceptions = self._ray.exceptions
        if isinstance(error, exceptions.RayTaskError):
            cause = getattr(error, "cause", None)
            if "No module named 'mnist_study'" in str(error):
                return RunError(f"the Ray cluster's workers cannot import mnist_study: install it on every node "
                                f"({INSTALL_HINT}, with the same version), or ship it with "
                                "runtime_env={'py_modules': [mnist_study]}")
            # A user's error reads as it would locally; any other keeps the worker's traceback
            # (it is also an instance of the task's exception class).
            return cause if isinstance(cause, UserError) else error
        if isinstance(error, exceptions.RayError):
            name = getattr(unit.task, "name", type(unit.task).__name__)
            said = str(error).strip().splitlines()[0] if str(error).strip() else ""
            return RunError(f"the Ray cluster could not finish unit {unit.number} ({name}), retried up to "
                            f"{self.max_retries} times ({type(error).__name__}: {said}); every finished result "
                            "is intact, and a resume redoes the rest")
        return error

    def close(self, cancel: bool = False) -> None:
        """Wait for the running units and write their results; with `cancel`, stop them now.

        Then stop the Ray instance this executor started, or disconnect from the cluster.
        """
        if self._closed:
            return
        self._closed = True
        try:
            if cancel:
                for ref, unit in self._running.items():
                    with contextlib.suppress(Exception):
                        self._ray.cancel(ref, force=True)
                    unit.future.cancel()
                self._running.clear()
            else:
                while self._running:
                    self.wait([unit.future for unit in self._running.values()], timeout=None)
                self._deliver_events()
        finally:
            if self._sink is not None:
                with contextlib.suppress(Exception):
                    self._sink.shutdown(force=True)
            if self._started:
                self._ray.shutdown()


CLIENT_TRIES = 3  # Ray Client's proxy may fail to start a new client's server under load: try again

# What Ray Client's proxy says when the server it starts for a new client dies or is not yet up:
# its check that the server is running races that start (Ray 2.x), and a server that dies at once
# leaves a zombie whose command line the proxy then fails to read (psutil.ZombieProcess).
TRANSIENT_CLIENT_FAILURES = ("client server failed", "ZombieProcess", "NoSuchProcess")


def _connect(ray, address: str, workers: int | None, runtime_env: dict | None) -> None:
    """ray.init; a cluster that cannot be reached is an error that names it and says what to check."""
    for attempt in range(1, CLIENT_TRIES + 1):
        try:
            ray.init(**_init_options(address, workers, runtime_env))
            return
        except (ConnectionError, ray.exceptions.RayError, ValueError) as error:
            if _transient_client_failure(address, error) and attempt < CLIENT_TRIES:
                ray.shutdown()
                continue
            if address == "local":
                raise
            _cannot_connect(address, error)


def _transient_client_failure(address: str, error: BaseException) -> bool:
    """Whether a Ray Client connection failed in the proxy's start of this client's server, which a
    second try usually gets past."""
    return address.startswith("ray://") and any(sign in str(error) for sign in TRANSIENT_CLIENT_FAILURES)


def _cannot_connect(address: str, error: BaseException) -> None:
    chain, cause = [], error
    while cause is not None:
        chain.append(str(cause))
        cause = cause.__cause__
    auth = any("InvalidAuthToken" in text or "Authentication" in text for text in chain)
    hint = ("the cluster uses token authentication: set RAY_AUTH_MODE=token here, with its token in "
            "~/.ray/auth_token or $RAY_AUTH_TOKEN" if auth else
            "is the cluster running (`ray status`), and is the address its head's (HOST:PORT, or "
            "ray://HOST:PORT for Ray Client)?")
    lines = [line.strip() for line in chain[0].splitlines() if line.strip()] or [type(error).__name__]
    said = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"  # Ray's first and last words
    raise OptionError(f"cannot connect to the Ray cluster at {address!r}: {said}; {hint}") from None


def _init_options(address: str, workers: int | None, runtime_env: dict | None) -> dict:
    """ray.init's arguments: quiet, and for "local" a private instance of `workers` CPUs."""
    options = {"logging_level": logging.WARNING, "runtime_env": runtime_env}
    if address != "local":
        return {**options, "address": address}
    # A private instance reports nothing to Ray's usage statistics (this only sets a default).
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    return {**options, "address": "local", "num_cpus": workers or os.cpu_count() or 1, "include_dashboard": False,
            "_node_ip_address": "127.0.0.1"}


def _driver_environment() -> dict[str, str]:
    from mnist_study.training import fused

    return {name: os.environ[name] for name in (fused.ENV_SWITCH, fused.DECISION_VAR) if name in os.environ}


__all__ = ["INSTALL_HINT", "RayExecutor", "import_ray", "unit_slots", "write_unit_files"]
