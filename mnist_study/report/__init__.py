"""The report layer: analyses, figures, summary tables and the HTML page of a run.

matplotlib and openTSNE are imported only here, and only when a figure or a map is made.

    from mnist_study.report import build_report
"""


def __getattr__(name: str):
    # `summary` and `sweep` (used by the CLI's `show`) must not pull in matplotlib through the page builder.
    if name == "build_report":
        from mnist_study.report.build import build_report

        return build_report
    raise AttributeError(f"module 'mnist_study.report' has no attribute {name!r}")
