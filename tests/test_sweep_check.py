"""The built-in width-optimiser sweep whole: 40 experiments x 5 seeds = 200 networks on 10,000 MNIST
images, trained from the CLI, its report built and opened in headless Chromium (make test-sweep)."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from browser import check_report, needs_chromium

from mnist_study.results import load_run

pytestmark = pytest.mark.sweep
CLI = str(Path(sys.executable).with_name("mnist-study"))


@needs_chromium
def test_a_200_network_sweep_runs_and_its_report_reads_the_sweep(tmp_path, real_mnist):
    out = tmp_path / "sweep"
    start = time.perf_counter()
    done = subprocess.run([CLI, "run", "width-optimiser", "--seeds", "5",
                           "--data-dir", str(real_mnist), "--out", str(out)], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-3000:]
    run = load_run(out)
    assert run.manifest["complete"] and sum(len(run.results(e.name)) for e in run.experiments) == 200
    report = out / "report.html"
    size = report.stat().st_size
    assert size < 20_000_000
    shown = json.loads(subprocess.run([CLI, "show", str(out), "--format", "json"],
                                      capture_output=True, text=True, check=True).stdout)
    (sweep,) = shown["sweeps"]
    assert sweep["n_networks"] == 200
    print(f"\n200-network sweep: {seconds:.0f} s for training and the report; report {size / 1e6:.1f} MB; "
          f"{sweep['n_diverged']} diverged")
    check_report(report, tmp_path, min_sweep_images=3)  # width, optimiser, and their interaction
