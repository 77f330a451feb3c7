"""What a run still has to do, and in which order: the plan of tasks, run on an executor.

A front-end is fitted once for every group of experiments that share it; an experiment trains as
soon as its front-end is on disk. Only what is missing from the run directory is planned, which is
what makes `--resume` (on any executor) do just the rest; a seed or front-end whose files do not
read back counts as missing (`discard_damaged` first removes its completion marker).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mnist_study.executor import Executor
from mnist_study.integrity import frontend_problem, seed_problem
from mnist_study.results import experiment_dir, frontend_ready, is_finished, seed_dir
from mnist_study.study import Experiment, Study
from mnist_study.tasks import FitFrontend, StageTime, TrainSeeds

# Narrow networks train in a fraction of a second an epoch, so their seeds share one task (one
# trainer: one validation pass for all, one process start); wide ones are all matrix products, so
# their seeds run as separate tasks that spread over the workers.
STACK_SEEDS_BELOW_WIDTH = 64


def cost(e: Experiment) -> float:
    """Rough relative cost of one seed: per-step overhead plus the matrix products."""
    epochs = e.max_epochs if not e.early_stopping else min(e.max_epochs, 10)
    images = (e.train_size or 55_000) / 55_000
    fast = 1.0 if e.train_config().is_paper_family else 3.0  # the compiled epoch vs autograd
    return epochs * images * fast * (1.0 + sum(e.widths) / 50)


@dataclass
class Plan:
    frontends: list[tuple[Experiment, list[str]]]      # (fitting experiment, experiments that share it)
    training: list[tuple[Experiment, list[int]]]       # (experiment, seeds still missing)

    def seeds_missing(self) -> dict[str, int]:
        """Experiment name -> number of seeds this plan trains."""
        counts: dict[str, int] = {}
        for exp, seeds in self.training:
            counts[exp.name] = counts.get(exp.name, 0) + len(seeds)
        return counts


def make_plan(study: Study, seeds: list[int], run_dir: Path) -> Plan:
    by_key: dict[str, list[Experiment]] = {}
    for e in study.experiments:
        by_key.setdefault(e.frontend_key(), []).append(e)
    frontends = []
    for group in by_key.values():
        missing = [e.name for e in group if not frontend_ready(run_dir, e.name)]
        if missing:
            frontends.append((group[0], missing))
    training = []
    for e in study.experiments:
        missing = [s for s in seeds if not is_finished(run_dir, e.name, s)]
        if sum(e.widths) < STACK_SEEDS_BELOW_WIDTH:
            training += [(e, missing)] if missing else []
        else:
            training += [(e, [s]) for s in missing]
    # Longest first, so the widest networks do not start last and leave a core idle.
    training.sort(key=lambda t: -cost(t[0]) * len(t[1]))
    return Plan(frontends, training)


def discard_damaged(study: Study, seeds: list[int], run_dir: Path) -> list[tuple[Path, str]]:
    """Remove the completion marker of every seed and front-end whose files do not read back.

    They then count as missing, for readers too, until they are redone. Returns each damaged file
    and what was wrong with it. Only for the process holding the run's lock.
    """
    damaged = []
    for e in study.experiments:
        directory = experiment_dir(run_dir, e.name)
        if (directory / "frontend.json").is_file() and (problem := frontend_problem(directory)):
            damaged.append(problem)
            (directory / "frontend.json").unlink()
        for seed in seeds:
            marker = seed_dir(run_dir, e.name, seed) / "metrics.json"
            if marker.is_file() and (problem := seed_problem(marker.parent)):
                damaged.append(problem)
                marker.unlink()
    return damaged


def _priority(task: FitFrontend | TrainSeeds, experiments: dict[str, Experiment]) -> tuple[bool, float]:
    """Front-ends first (they unblock training), then the costliest training."""
    if isinstance(task, FitFrontend):
        return (False, 0.0)
    return (True, -cost(experiments[task.name]) * len(task.seeds))


def run_plan(plan: Plan, run_dir: Path, data_dirs: dict[str, str], device: str,
             executor: Executor) -> dict[str, float]:
    """Run the plan on `executor`; return the seconds spent per stage.

    Our own queue instead of the executor's FIFO: at most one task per worker is in flight, and a
    free worker takes the costliest task that can run now, so the front-ends go first and a PCA
    experiment unblocked late still runs before cheap raw-pixel ones.
    """
    experiments = {e.name: e for e, _ in plan.training}
    as_json = {e.name: e.model_dump(mode="json") for e, _ in plan.training + plan.frontends}
    waiting_for = {name: fit.name for fit, names in plan.frontends for name in names}

    def train(exp: Experiment, seeds: list[int]) -> TrainSeeds:
        return TrainSeeds(str(run_dir), as_json[exp.name], tuple(seeds), data_dirs[exp.dataset], device)

    queue: list[FitFrontend | TrainSeeds] = [
        FitFrontend(str(run_dir), as_json[fit.name], tuple(names), data_dirs[fit.dataset])
        for fit, names in plan.frontends]
    queue += [train(e, s) for e, s in plan.training if e.name not in waiting_for]
    blocked = [(e, s) for e, s in plan.training if e.name in waiting_for]
    stages: dict[str, float] = {}
    running = {}
    while queue or running:
        while queue and len(running) < max(executor.workers, 1):
            task = queue.pop(0)
            running[executor.submit(task)] = task
        for future in executor.wait(running):
            task = running.pop(future)
            result: StageTime = future.result()  # re-raises the task's error here
            stages[result.stage] = stages.get(result.stage, 0.0) + result.seconds
            if isinstance(task, FitFrontend):
                queue += [train(e, s) for e, s in blocked if waiting_for[e.name] == task.name]
                blocked = [(e, s) for e, s in blocked if waiting_for[e.name] != task.name]
                queue.sort(key=lambda t: _priority(t, experiments))
    return stages
