"""The public Python API: its names, and one convention for accuracy."""

import subprocess
import sys

import mnist_study


def test_public_names_are_listed_and_importable():
    for name in ("run_study", "resume_run", "load_run", "build_report", "load_classifier", "load_study",
                 "parse_study", "load_dataset", "UserError"):
        assert name in dir(mnist_study) and name in mnist_study.__all__
        assert getattr(mnist_study, name) is not None


def test_importing_the_package_pulls_in_neither_matplotlib_nor_fastapi():
    code = "import sys, mnist_study, mnist_study.cli; print(sorted(m for m in ('matplotlib', 'fastapi', 'PIL', 'openTSNE') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_accuracy_is_percent_in_the_api_and_a_fraction_in_metrics_json(tiny_run):
    run = mnist_study.load_run(tiny_run)
    seed = run.results("raw8")[0]
    assert seed.accuracy("test") == 100 * seed.metrics["accuracy"]["test"]
    assert run.values("test")["raw8"][0] == seed.accuracy("test")
    assert 1 < seed.accuracy("test") <= 100
