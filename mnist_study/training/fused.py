"""The fused training epoch (kernels/fused_epoch.cpp): compiled once per machine and environment, then cached.

Which build. PyTorch's `cpp_extension` compiles the kernel with the machine's C++ compiler and
ninja, for this CPU (-march=native). MNIST_STUDY_FUSED chooses: unset or "1" that native build,
"no_avx512" a second copy without AVX-512 (the kernel's portable loops, which a native build on an
AVX-512 machine never compiles; the tests hold both to the same reference), "0" none: training then
takes the eager step in trainer.py, which computes the same thing more slowly.

Where. Each build has its own directory under $TORCH_EXTENSIONS_DIR (by default
~/.cache/torch_extensions), named by a hash of everything that changes the build (`build_record`):
the source, the flags, the CPU's instruction sets, PyTorch's version and install path, the Python
and its prefix, the compiler. Two virtual environments on one machine thus keep a build each
instead of rebuilding each other's in turn. A build is complete once its `built.json` exists,
written last; a complete build is imported directly (a fraction of a second, no ninja run).

How. A build (about 25 s, once) runs in a child process in a session of its own and says so on
stderr. It holds an flock on `<build directory>.lock`, with its PID in the file, for as long as it
builds: another process that needs the same build says that it waits for that PID, then loads the
result. The OS drops the flock of a process that dies, so a dead builder never blocks anyone. Under
the lock, a directory without `built.json` is an interrupted build and is cleared first, PyTorch's
own `lock` file with it (PyTorch polls forever for that file to go). An interrupt (Ctrl-C) of the
waiting process ends the build's whole session at once, ninja and the compilers included.

One decision per run. `decide()` loads or builds the kernel in the parent of a run and records the
outcome in MNIST_STUDY_FUSED_DECISION, which worker processes inherit: their `load()` then imports
the same library without building, or takes the eager step without another warning.

`load()` returns None where the kernel cannot be had (no compiler, a failed build), warning once
per process; `require()` raises `KernelUnavailable` instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

SOURCE = Path(__file__).parent / "kernels" / "fused_epoch.cpp"
ENV_SWITCH = "MNIST_STUDY_FUSED"  # "0": the eager step only; "no_avx512": the build without AVX-512
DECISION_VAR = "MNIST_STUDY_FUSED_DECISION"  # set by decide(), read by worker processes
MARKER = "built.json"  # written last: a build directory without it holds an interrupted build

# -fno-math-errno lets sqrt vectorise; no -ffast-math: the arithmetic stays IEEE.
_NATIVE = ["-O3", "-march=native", "-fno-math-errno"]
# On x86, turning AVX-512F off turns off every AVX-512 extension that builds on it; elsewhere there
# is no AVX-512 and both builds are the same.
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
VARIANTS = {"native": _NATIVE, "no_avx512": _NATIVE + (["-mno-avx512f"] if _X86 else [])}
_SWITCH_VALUES = {"1": "native", "native": "native", "no_avx512": "no_avx512"}

_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # so that the build process imports this package
_BUILD_PROCESS = "import sys; from mnist_study.training.fused import _build_here; _build_here(sys.argv[1])"


class KernelUnavailable(RuntimeError):
    """The fused kernel cannot be had here; `reason` says why. `quiet`: already reported elsewhere
    (switched off, or decided so by the parent process), so no warning is due."""

    def __init__(self, reason: str, quiet: bool = False):
        super().__init__(f"the fused training kernel cannot be had: {reason}")
        self.reason, self.quiet = reason, quiet


@dataclass(frozen=True)
class Kernel:
    """The compiled module, the library it came from, and which build (a key of VARIANTS) it is."""

    module: ModuleType
    library: Path
    variant: str

    def pixel_masks(self, x: torch.Tensor) -> torch.Tensor:
        """Which pixels of x (N, D) float32 are non-zero: int16 (N, ceil(D / 16)), 16 bits per 16 pixels."""
        return self.module.pixel_masks(x)

    def train_epoch(self, *, x: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor, perms: torch.Tensor,
                    params: list[torch.Tensor], velocity: list[torch.Tensor], batch_size: int, lr: float,
                    rho: float, epsilon: float, l2: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One epoch of every seed in a stack, in place: the only way into the compiled train_epoch.

        x (N, D) float32 contiguous; masks = pixel_masks(x); labels (N,) int64; perms (S, N) int64,
        each seed's batch order; params and velocity the four (S, rows, cols) float32 stacks in
        model.PARAM_NAMES order (RMSprop's accumulators for velocity); lr, rho, epsilon Keras'
        RMSprop; l2 the penalty on the hidden kernel. Returns, per seed, the summed cross-entropy
        plus l2 * batch size * sum(W1^2) over batches, float64 (S,), and the right answers, int64 (S,).
        """
        return self.module.train_epoch(x, masks, labels, perms, params, velocity, batch_size, lr, rho, epsilon, l2)


_outcomes: dict[str, Kernel | KernelUnavailable] = {}  # by MNIST_STUDY_FUSED value: settled once per process
_warned: set[str] = set()
_last_reason: str | None = None


def enabled() -> bool:
    """False when the environment switches the fused kernel off."""
    return os.environ.get(ENV_SWITCH, "1") != "0"


def unavailable_reason() -> str | None:
    """Why the last load() or require() found no kernel; None when it found one."""
    return _last_reason


def load() -> Kernel | None:
    """The kernel MNIST_STUDY_FUSED selects, or None where it cannot be had (said once, as a warning)."""
    try:
        return require()
    except KernelUnavailable as error:
        switch = os.environ.get(ENV_SWITCH, "1")
        if not error.quiet and switch not in _warned:
            _warned.add(switch)
            warnings.warn(f"fused training kernel unavailable ({error.reason}); training takes the slower eager "
                          "step. A C++ compiler (g++) and ninja enable it.", stacklevel=2)
        return None


def require() -> Kernel:
    """The kernel MNIST_STUDY_FUSED selects: inherited from the parent's decision, cached, or built
    now. Raises KernelUnavailable where it cannot be had. Settled once per process."""
    global _last_reason
    switch = os.environ.get(ENV_SWITCH, "1")
    if switch not in _outcomes:
        try:
            _outcomes[switch] = _settle(switch)
        except KernelUnavailable as error:
            _outcomes[switch] = error
    outcome = _outcomes[switch]
    if isinstance(outcome, KernelUnavailable):
        _last_reason = outcome.reason
        raise KernelUnavailable(outcome.reason, outcome.quiet)
    _last_reason = None
    return outcome


def decide() -> str:
    """Settle the run's CPU training step once, in the parent process, before workers start.

    Loads or builds the kernel (warning once where it cannot be had) and records the outcome in
    MNIST_STUDY_FUSED_DECISION, which worker processes started later inherit (spawn or fork): there
    `load()` imports the same library without building, or returns None without a warning.
    Returns the step, for the manifest: "fused CPU epoch" or "eager step (<reason>)".
    """
    kernel = load()
    decision = {"switch": os.environ.get(ENV_SWITCH, "1")}
    decision.update({"library": str(kernel.library)} if kernel else {"eager": unavailable_reason()})
    os.environ[DECISION_VAR] = json.dumps(decision)
    return "fused CPU epoch" if kernel else f"eager step ({unavailable_reason()})"


def _settle(switch: str) -> Kernel:
    decision = _inherited_decision(switch)
    if decision is not None and "eager" in decision:
        raise KernelUnavailable(str(decision["eager"]), quiet=True)  # the parent has said why
    if switch == "0":
        raise KernelUnavailable(f"switched off by {ENV_SWITCH}=0", quiet=True)
    if switch not in _SWITCH_VALUES:
        raise KernelUnavailable(f"{ENV_SWITCH}={switch!r} is none of 0, {', '.join(_SWITCH_VALUES)}")
    variant = _SWITCH_VALUES[switch]
    if decision is not None and "library" in decision:
        return _import(Path(decision["library"]), variant)  # never a build in a worker
    return build(variant)


def _inherited_decision(switch: str) -> dict | None:
    """The parent's decide(), where it was made for the same MNIST_STUDY_FUSED value."""
    try:
        decision = json.loads(os.environ.get(DECISION_VAR) or "null")
    except json.JSONDecodeError:
        return None
    return decision if isinstance(decision, dict) and decision.get("switch") == switch else None


# ---------------------------------------------------------------- the build and its cache

def build_record(variant: str = "native") -> dict[str, str]:
    """Everything that changes the build of `variant`; its hash names the build's directory."""
    compiler = os.environ.get("CXX", "c++")
    return {
        "source_sha256": hashlib.sha256(SOURCE.read_bytes()).hexdigest(),
        "flags": " ".join(VARIANTS[variant]),
        "cpu": _cpu_flags(),
        "torch": f"{torch.__version__} {Path(torch.__file__).resolve().parent}",
        "python": f"{platform.python_version()}{getattr(sys, 'abiflags', '')} {sys.prefix}",
        "compiler": os.path.realpath(shutil.which(compiler) or compiler),
    }


def cache_root() -> Path:
    """$TORCH_EXTENSIONS_DIR, or the cache PyTorch uses by default."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    return Path(root) if root else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "torch_extensions"


def build_directory(variant: str = "native", record: dict[str, str] | None = None) -> Path:
    """Where `variant` is built for this environment: its name is also the Python module's."""
    digest = hashlib.sha256(json.dumps(record or build_record(variant), sort_keys=True).encode()).hexdigest()
    return cache_root() / f"mnist_study_fused_epoch_{variant}_{digest[:12]}"


def missing_tools() -> str | None:
    """Why no build can start here (no C++ compiler, no ninja), or None."""
    _put_ninja_on_path()
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler ({compiler}) on PATH"
    if shutil.which("ninja") is None:
        return "ninja not found (pip install ninja)"
    return None


def build(variant: str = "native") -> Kernel:
    """The kernel built as `variant`: from its cache, or compiled now. Raises KernelUnavailable.

    Ignores the parent's decision and the per-process outcome (load() and require() keep those).
    """
    record = build_record(variant)
    directory = build_directory(variant, record)
    if not _complete(directory):
        missing = missing_tools()
        if missing:
            raise KernelUnavailable(missing)
        _run_build_process(directory, VARIANTS[variant], record)
    try:
        return _import(_library(directory), variant)
    except KernelUnavailable:
        (directory / MARKER).unlink(missing_ok=True)  # a damaged build: the next build() replaces it
        raise


def _library(directory: Path) -> Path:
    return directory / f"{directory.name}.so"


def _complete(directory: Path) -> bool:
    return (directory / MARKER).is_file() and _library(directory).is_file()


def _import(library: Path, variant: str) -> Kernel:
    try:
        spec = importlib.util.spec_from_file_location(library.stem, library)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except Exception as error:
        raise KernelUnavailable(f"cannot import {library}: {error}") from error
    return Kernel(module, library, variant)


def _run_build_process(directory: Path, flags: list[str], record: dict[str, str]) -> None:
    """Build in a child process, in a session of its own (so that it can be ended whole), passing
    its messages on to stderr as they come."""
    env = {key: value for key, value in os.environ.items() if key != DECISION_VAR}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PACKAGE_ROOT), env.get("PYTHONPATH")]))
    spec = json.dumps({"directory": str(directory), "source": str(SOURCE), "flags": flags, "record": record})
    child = subprocess.Popen([sys.executable, "-c", _BUILD_PROCESS, spec], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
                             start_new_session=True)
    try:
        with child.stdout:
            for line in child.stdout:
                if sys.stderr is not None:
                    sys.stderr.write(line)
                    sys.stderr.flush()
        status = child.wait()
    except BaseException:  # Ctrl-C above all: no compiler is to outlive it
        _end_session(child)
        raise
    if status != 0:
        raise KernelUnavailable(_failure(directory, status))


def _failure(directory: Path, status: int) -> str:
    log = directory / "build.log"
    lines = log.read_text(errors="replace").strip().splitlines() if log.is_file() else []
    return f"{lines[-1]} (full log: {log})" if lines else f"the build process ended with status {status}"


def _end_session(child: subprocess.Popen) -> None:
    """SIGTERM to the build's process group: Python stops, and ninja passes the signal to the
    compilers, which it runs in process groups of their own, and waits for them. Whatever of the
    session still lives a moment later gets SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGTERM)
    try:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and _session_members(child):
            time.sleep(0.02)
    finally:
        for pid in _session_members(child):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        child.wait()


def _session_members(child: subprocess.Popen) -> list[int]:
    """The live processes of the child's session (from /proc; elsewhere, the child alone)."""
    child.poll()  # reap the child once it ends, so that it is not counted as a zombie
    if not Path("/proc/self/stat").exists():
        return [child.pid] if child.returncode is None else []
    members = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text() if entry.name.isdigit() else ""
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # state ppid pgrp session ...: after "(command)"
        if len(fields) > 3 and fields[0] != "Z" and int(fields[3]) == child.pid:
            members.append(int(entry.name))
    return members


@contextlib.contextmanager
def _build_lock(directory: Path):
    """One build per directory at a time: an flock, which the OS drops when its holder dies."""
    import fcntl

    path = directory.parent / f"{directory.name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            owner = lock.read().strip() or "unknown"
            print(f"waiting for the training-kernel build of process {owner} ({path})", file=sys.stderr, flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        yield


def _build_here(spec_json: str) -> None:
    """The build process: waits for any other build of the same directory, clears an interrupted
    one, builds, and writes the marker last."""
    spec = json.loads(spec_json)
    directory = Path(spec["directory"])
    with _build_lock(directory):
        if _complete(directory):
            return  # built by the process this one waited for
        shutil.rmtree(directory, ignore_errors=True)  # an interrupted build, PyTorch's stale `lock` with it
        directory.mkdir(parents=True)
        print(f"building the training kernel, once, about 25 s (cached in {directory})", file=sys.stderr, flush=True)
        try:
            from torch.utils.cpp_extension import load as compile_extension

            _put_ninja_on_path()
            compile_extension(name=directory.name, sources=[spec["source"]], extra_cflags=spec["flags"],
                              build_directory=str(directory), verbose=False)
        except Exception as error:  # no compiler, no ninja, a failed build: the eager step still works
            (directory / "build.log").write_text(f"{str(error).strip() or type(error).__name__}\n")
            sys.exit(1)
        partial = directory / f"{MARKER}.partial"
        partial.write_text(json.dumps(spec["record"], indent=1) + "\n")
        os.replace(partial, directory / MARKER)


def _put_ninja_on_path() -> None:
    """PyTorch runs `ninja` from PATH; the pip-installed one lives beside this environment's Python,
    which is not on PATH when the environment is used without activating it."""
    try:
        import ninja
    except ImportError:
        return
    path = os.environ.get("PATH", "")
    if ninja.BIN_DIR not in path.split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, path]) if path else ninja.BIN_DIR


def _cpu_flags() -> str:
    """This CPU's instruction sets, hashed: the kernel is built with -march=native, and a cache
    shared between machines must not hand one machine another's build."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith(("flags", "Features"))), "")
    except OSError:
        flags = ""
    return hashlib.sha256(f"{platform.machine()} {flags}".encode()).hexdigest()[:16]
