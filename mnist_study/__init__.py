"""mnist-study: how neural-network design shapes MNIST digit classification.

    from mnist_study import run_study, load_run, build_report, load_classifier
    run_dir = run_study("paper", seeds=[0, 1, 2])
    run = load_run(run_dir)
"""

from mnist_study.data.sources import load_dataset
from mnist_study.results import load_run
from mnist_study.runner import resume_run, run_study
from mnist_study.study import load_study, parse_study

__all__ = ["load_dataset", "load_run", "load_study", "parse_study", "resume_run", "run_study",
           "build_report", "load_classifier"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # The report and the classifier pull in matplotlib / PIL: import them only when asked for.
    if name == "build_report":
        from mnist_study.report.build import build_report

        return build_report
    if name == "load_classifier":
        from mnist_study.serving.classifier import load_classifier

        return load_classifier
    raise AttributeError(f"module 'mnist_study' has no attribute {name!r}")
