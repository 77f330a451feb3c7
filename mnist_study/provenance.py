"""Where a result came from: package versions and the source commit, for manifests and benchmarks."""

from __future__ import annotations

import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Iterable

PACKAGES = ("mnist-study", "torch", "numpy", "scikit-learn", "scipy", "safetensors", "openTSNE", "matplotlib")


def package_versions(packages: Iterable[str] = PACKAGES) -> dict[str, str]:
    """Python's version and each installed package's; packages not installed are left out."""
    found = {"python": platform.python_version()}
    for package in packages:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found


def git_commit(where: Path = Path(__file__).resolve().parent, short: bool = False) -> str | None:
    """The commit checked out at `where`, with "-dirty" when tracked files differ; None outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", *(["--short"] if short else []), "HEAD"], cwd=where,
                              capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "") if head.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None
