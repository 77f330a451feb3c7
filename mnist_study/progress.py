"""Rich progress display for a running study: one line per experiment, fed by task events."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


class TrainingProgress:
    """Shows front-end fitting and, per experiment, epochs so far and seeds finished."""

    def __init__(self, study, seeds, plan, console: Console | None = None):
        self.progress = Progress(
            SpinnerColumn(), TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
            console=console or Console(stderr=True), transient=False,
        )
        self.tasks = {}
        for fit, _ in plan.frontends:
            self.tasks[("frontend", fit.name)] = self.progress.add_task(
                f"fit {fit.frontend.kind} ({fit.name})", total=1, status="waiting")
        missing: dict[str, int] = {}
        for exp, seeds_of_task in plan.training:
            missing[exp.name] = missing.get(exp.name, 0) + len(seeds_of_task)
        for exp in study.experiments:
            if exp.name in missing:
                self.tasks[("train", exp.name)] = self.progress.add_task(
                    f"train {exp.name} (H={exp.hidden})", total=missing[exp.name], status="waiting")

    def start(self) -> None:
        self.progress.start()

    def stop(self) -> None:
        self.progress.stop()

    def update(self, event: dict) -> None:
        kind, name = event["kind"], event.get("experiment")
        if kind == "frontend-start":
            self.progress.update(self.tasks[("frontend", name)], status="fitting")
        elif kind == "frontend-progress":
            self.progress.update(self.tasks[("frontend", name)], total=event["total"], completed=event["done"],
                                 status=f"{event['done']} of {event['total']} trees")
        elif kind == "frontend-done":
            task = self.tasks[("frontend", name)]
            self.progress.update(task, completed=self.progress.tasks[task].total, status=f"{event['seconds']:.1f} s")
        elif kind == "epoch" and ("train", name) in self.tasks:
            self.progress.update(self.tasks[("train", name)],
                                 status=f"epoch {event['epoch']}, {event['active']}/{event['seeds']} seeds "
                                        f"training, best val acc {100 * event['val_accuracy']:.2f}%")
        elif kind == "seed-done" and ("train", name) in self.tasks:
            self.progress.advance(self.tasks[("train", name)])
