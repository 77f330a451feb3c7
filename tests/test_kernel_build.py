"""Building the fused kernel: its cache key, its lock, an interrupted first build, one decision per run.

Builds here go to temporary caches (TORCH_EXTENSIONS_DIR) and compile stand-in sources through the
same path as the kernel (build process, flock, PyTorch and ninja, marker): a tiny module builds in
about a second, and one with a few hundred functions keeps the compiler busy for a few seconds, long
enough to interrupt. The interrupted build of the kernel itself (25-45 s) is marked slow.
"""

from __future__ import annotations

import concurrent.futures as cf
import fcntl
import io
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from mnist_study.training import fused

MISSING_TOOLS = fused.missing_tools()
needs_tools = pytest.mark.skipif(bool(MISSING_TOOLS), reason=f"{MISSING_TOOLS}")
needs_proc = pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="reads processes from /proc (Linux)")

TINY_SOURCE = r"""
#include <Python.h>
#define TEXT(x) #x
#define NAME(x) TEXT(x)
#define PASTE(a, b) a##b
#define INIT(name) PASTE(PyInit_, name)
static PyModuleDef tiny = {PyModuleDef_HEAD_INIT, NAME(TORCH_EXTENSION_NAME), nullptr, -1, nullptr};
PyMODINIT_FUNC INIT(TORCH_EXTENSION_NAME)(void) { return PyModule_Create(&tiny); }
"""
# A build in a process of its own, of the source named on its command line (the kernel's by default).
# Ctrl-C raises KeyboardInterrupt there even where this test runs with SIGINT ignored (in the background).
BUILD = ("import signal, sys; from pathlib import Path; from mnist_study.training import fused; "
         "signal.signal(signal.SIGINT, signal.default_int_handler); "
         "fused.SOURCE = Path(sys.argv[1]) if sys.argv[1:] else fused.SOURCE; "
         "print('loaded', fused.build().library, flush=True)")


def _busy_source(functions: int = 300) -> str:
    """The tiny module and enough arithmetic to keep the compiler at -O3 busy for a few seconds."""
    body = "\n".join(
        f"double f{i}(const double* a, int n) {{ double s = 0; for (int j = 0; j < n; ++j) "
        f"s += std::sqrt(a[j] * {i + 1}.0) / (1 + a[j]); for (int j = 1; j < n; ++j) "
        "s *= a[j - 1] > a[j] ? 1.0001 : 0.9999; return s; }" for i in range(functions))
    return f"#include <cmath>\n{body}\n{TINY_SOURCE}"


@pytest.fixture
def tiny_cache(tmp_path, monkeypatch) -> Path:
    """An empty cache, and a stand-in source that builds in about a second."""
    source = tmp_path / "tiny.cpp"
    source.write_text(TINY_SOURCE)
    monkeypatch.setattr(fused, "SOURCE", source)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _within(seconds: float, work):
    """work()'s value, or a failure when it has not finished after `seconds` (a hang)."""
    outcome = {}

    def run():
        try:
            outcome["value"] = work()
        except BaseException as error:  # handed to the test's thread
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _eventually(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


# ---------------------------------------------------------------- the cache key

def test_every_part_of_the_environment_keys_its_own_build(monkeypatch, tmp_path):
    edited = tmp_path / "fused_epoch.cpp"
    edited.write_text(fused.SOURCE.read_text() + "\n// edited\n")
    changes = {
        "variant": lambda m: m.setitem(fused.VARIANTS, "native", fused.VARIANTS["no_avx512"]),
        "python prefix": lambda m: m.setattr(sys, "prefix", "/another/venv"),
        "python version": lambda m: m.setattr("platform.python_version", lambda: "3.99.0"),
        "torch version": lambda m: m.setattr(torch, "__version__", "0.0.0+other"),
        "torch path": lambda m: m.setattr(torch, "__file__", "/another/site-packages/torch/__init__.py"),
        "compiler": lambda m: m.setenv("CXX", "/opt/another/bin/g++"),
        "cpu": lambda m: m.setattr(fused, "_cpu_flags", lambda: "another cpu"),
        "source": lambda m: m.setattr(fused, "SOURCE", edited),
    }
    here = fused.build_directory("native")
    names = {here.name}
    for what, change in changes.items():
        with monkeypatch.context() as m:
            change(m)
            name = fused.build_directory("native").name
        assert name not in names, f"a change of {what} must change the build's name"
        names.add(name)
    assert fused.build_directory("native") == here  # and the name is stable otherwise
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    assert fused.build_directory("native") == tmp_path / here.name


@needs_tools
def test_two_environments_keep_a_build_each(tiny_cache, monkeypatch):
    stderr = io.StringIO()  # what the build passes on to sys.stderr, readable while it runs
    monkeypatch.setattr(sys, "stderr", stderr)
    first = fused.build()
    with monkeypatch.context() as m:
        m.setattr(sys, "prefix", "/another/venv")  # as a second virtual environment would build it
        second = fused.build()
    assert stderr.getvalue().count("building the training kernel") == 2
    assert first.library.parent != second.library.parent
    again = fused.build()  # each environment finds its own build still there
    with monkeypatch.context() as m:
        m.setattr(sys, "prefix", "/another/venv")
        assert fused.build().library == second.library
    assert again.library == first.library
    assert stderr.getvalue().count("building the training kernel") == 2
    assert sorted(p.name for p in tiny_cache.iterdir() if p.is_dir()) == sorted(
        [first.library.parent.name, second.library.parent.name])


# ---------------------------------------------------------------- the lock

@needs_tools
def test_a_stale_lock_of_a_dead_build_does_not_hold_up_the_next(tiny_cache):
    directory = fused.build_directory()
    directory.mkdir(parents=True)
    (directory / "lock").touch()  # PyTorch's baton, left by a build that died: PyTorch alone waits forever
    (directory / "tiny.o").write_bytes(b"half an object file")
    dead = subprocess.Popen(["true"])
    dead.wait()
    directory.with_name(f"{directory.name}.lock").write_text(str(dead.pid))  # ours, its owner gone
    kernel = _within(120, fused.build)
    assert kernel.library.parent == directory and (directory / fused.MARKER).is_file()
    assert not (directory / "lock").exists()


@needs_tools
def test_a_build_waits_for_a_live_build_of_the_same_kernel_and_says_so(tiny_cache, monkeypatch):
    stderr = io.StringIO()  # what the build passes on to sys.stderr, readable while it runs
    monkeypatch.setattr(sys, "stderr", stderr)
    directory = fused.build_directory()
    directory.parent.mkdir(parents=True)
    waiting = f"waiting for the training-kernel build of process {os.getpid()}"
    result = {}
    with open(directory.with_name(f"{directory.name}.lock"), "w") as held:  # as a build of this process holds it
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write(str(os.getpid()))
        held.flush()
        builder = threading.Thread(target=lambda: result.update(kernel=fused.build()), daemon=True)
        builder.start()
        assert _eventually(lambda: waiting in stderr.getvalue(), 60), stderr.getvalue()
        assert builder.is_alive() and "building the training kernel" not in stderr.getvalue()
    builder.join(120)  # the lock is free: the waiting build goes ahead
    assert result["kernel"].library.parent == directory
    assert "building the training kernel" in stderr.getvalue()


# ---------------------------------------------------------------- an interrupted first build

def _build_processes_under(root: Path) -> list[str]:
    """Command lines of live processes that work in, or name, `root`: a build's, and nothing else."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if stat[stat.rfind(")") + 2] != "Z" and (str(root) in command or cwd.startswith(str(root))):
            found.append(command)
    return found


def _environment(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (fused.DECISION_VAR, fused.ENV_SWITCH)}
    return {**env, "TORCH_EXTENSIONS_DIR": str(cache)}


@needs_tools
@needs_proc
@pytest.mark.parametrize("source", ["busy stand-in", pytest.param("kernel", marks=pytest.mark.slow)])
def test_an_interrupted_first_build_stops_at_once_and_the_next_build_recovers(tmp_path, source):
    cache = tmp_path / "cache"
    env = _environment(cache)
    command = [sys.executable, "-c", BUILD]
    if source != "kernel":
        (tmp_path / "busy.cpp").write_text(_busy_source())
        command.append(str(tmp_path / "busy.cpp"))
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    said: list[str] = []
    threading.Thread(target=lambda: said.extend(first.stderr), daemon=True).start()
    try:
        assert _eventually(lambda: any("building the training kernel" in line for line in said), 120), said
        assert _eventually(lambda: any("cc1plus" in c for c in _build_processes_under(cache)), 60)
        time.sleep(0.3)  # the compiler is at work
        interrupted = time.monotonic()
        first.send_signal(signal.SIGINT)
        first.wait(timeout=30)
        took = time.monotonic() - interrupted
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode != 0 and took < 5, f"stopping took {took:.1f} s"
    assert _eventually(lambda: not _build_processes_under(cache), 2), _build_processes_under(cache)

    (directory,) = [p for p in cache.iterdir() if p.is_dir()]
    assert not (directory / fused.MARKER).exists()
    (directory / "lock").touch()  # PyTorch's own lock, as a killed PyTorch build leaves it
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert "building the training kernel" in second.stderr and "waiting" not in second.stderr
    assert f"loaded {directory}" in second.stdout
    third = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert f"loaded {directory}" in third.stdout and "building" not in third.stderr, third


# ---------------------------------------------------------------- one decision, inherited by workers

def _worker_sees() -> dict:
    """In a worker process: what load() gives, and what it said on the way."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kernel = fused.load()
    return {"library": kernel and str(kernel.library), "reason": fused.unavailable_reason(),
            "warnings": [str(w.message) for w in caught]}


def _in_a_spawned_worker() -> dict:
    with cf.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(_worker_sees).result(timeout=120)


@needs_tools
def test_workers_load_the_parents_kernel_without_building(fresh_fused, monkeypatch, tmp_path):
    assert fused.decide() == "fused CPU epoch"
    parents = fused.require().library
    # Where a worker to look for itself, it would find no build and no compiler.
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    seen = _in_a_spawned_worker()
    assert seen == {"library": str(parents), "reason": None, "warnings": []}
    assert list(tmp_path.iterdir()) == []


def test_workers_take_the_eager_step_the_parent_chose_without_a_warning(fresh_fused, monkeypatch):
    def no_compiler(variant="native"):
        raise fused.KernelUnavailable("no C++ compiler (c++) on PATH")

    monkeypatch.setattr(fused, "build", no_compiler)
    with pytest.warns(UserWarning, match="no C\\+\\+ compiler"):
        assert fused.decide() == "eager step (no C++ compiler (c++) on PATH)"
    seen = _in_a_spawned_worker()  # where it could build (or load) the kernel itself, it does not
    assert seen == {"library": None, "reason": "no C++ compiler (c++) on PATH", "warnings": []}
