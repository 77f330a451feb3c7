"""mnist-study: how neural-network design shapes MNIST digit classification.

    from mnist_study import run_study, load_run, build_report, load_classifier
    run_dir = run_study("paper", seeds=[0, 1, 2])
    run = load_run(run_dir)
"""

from .datasets import load_dataset
from .results import load_run
from .runner import resume_run, run_study
from .study import load_study, parse_study

__all__ = ["load_dataset", "load_run", "load_study", "parse_study", "resume_run", "run_study",
           "build_report", "load_classifier"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # The report and the classifier pull in matplotlib / PIL: import them only when asked for.
    if name == "build_report":
        from .report import build_report

        return build_report
    if name == "load_classifier":
        from .classifier import load_classifier

        return load_classifier
    raise AttributeError(f"module 'mnist_study' has no attribute {name!r}")
