"""mnist-study: how neural-network design shapes MNIST digit classification.

    from mnist_study import run_study, load_run, build_report, load_classifier
    run_dir = run_study("paper", seeds=[0, 1, 2])      # trains and evaluates; builds no report
    build_report(run_dir)                              # RUN_DIR/report.html
    run = load_run(run_dir)
    run.results("exp6")[0].accuracy("test")            # percent, as everywhere in this API

Accuracies are percent in the API (`SeedResult.accuracy`, `RunResults.values`, the summary rows);
`SeedResult.metrics` is the seed's metrics.json as written, where they are fractions.
"""

from mnist_study.data.sources import load_dataset
from mnist_study.errors import UserError
from mnist_study.results import load_run
from mnist_study.runner import resume_run, run_study
from mnist_study.studies import load_study, parse_study

__all__ = ["UserError", "build_report", "load_classifier", "load_dataset", "load_run", "load_study",
           "parse_study", "resume_run", "run_study"]
__version__ = "0.1.0"

# The report and the classifier pull in matplotlib and Pillow: imported only when asked for.
_LAZY = {"build_report": "mnist_study.report.build", "load_classifier": "mnist_study.serving.classifier"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mnist_study' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
