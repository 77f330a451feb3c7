"""The fused training epoch (kernels/fused_epoch.cpp), compiled on first use and cached.

PyTorch builds the kernel with the machine's C++ compiler the first time a process asks for it
(about 25 s, once per machine and PyTorch version; later processes load the cached library in well
under a second). Where there is no compiler, or the build fails, `load()` says why once and returns
None, and training takes the eager step in train.py, which computes the same thing more slowly.
"""

from __future__ import annotations

import hashlib
import os
import platform
import warnings
from pathlib import Path

SOURCE = Path(__file__).parent / "kernels" / "fused_epoch.cpp"
ENV_SWITCH = "MNIST_STUDY_FUSED"  # "0": train on the eager step only (to compare, or to rule the kernel out)

_module = None
_unavailable: str | None = None


def enabled() -> bool:
    """False when the environment switches the fused kernel off."""
    return os.environ.get(ENV_SWITCH, "1") != "0"


def unavailable_reason() -> str | None:
    """Why load() returned None, once it has."""
    return _unavailable


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


def _cpu_tag() -> str:
    """A short tag of this CPU's instruction sets: the kernel is built with -march=native, and a
    cache shared between different machines must not hand one machine another's build."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith(("flags", "Features"))), "")
    except OSError:
        flags = ""
    return hashlib.sha256(f"{platform.machine()} {flags}".encode()).hexdigest()[:10]


def load():
    """The compiled module (train_epoch, pixel_masks), or None where it cannot be had."""
    global _module, _unavailable
    if _module is not None or _unavailable is not None:
        return _module
    if not enabled():
        _unavailable = f"switched off by {ENV_SWITCH}=0"
        return None
    try:
        from torch.utils.cpp_extension import load as build

        _put_ninja_on_path()
        _module = build(
            name=f"mnist_study_fused_epoch_{_cpu_tag()}",
            sources=[str(SOURCE)],
            # -fno-math-errno lets sqrt vectorise; no -ffast-math: the arithmetic stays IEEE.
            extra_cflags=["-O3", "-march=native", "-fno-math-errno"],
            verbose=False,
        )
    except Exception as error:  # no compiler, no ninja, a failed build: the eager step still works
        lines = str(error).strip().splitlines()
        _unavailable = lines[-1] if lines else type(error).__name__
        warnings.warn(f"fused training kernel unavailable ({_unavailable}); training takes the slower eager "
                      "step. A C++ compiler (g++) and ninja enable it.", stacklevel=2)
    return _module
