"""Learning-rate schedules: the multiple of the optimiser's `lr` that epoch e (1-based) trains with.

The rate is set once per epoch, before its first step. A linear warm-up over the first w epochs
gives epoch e <= w the multiple e / (w + 1); the epochs after it (e' = e - w = 1, 2, ...) get

    constant   1
    step       step_factor ** ((e' - 1) // step_every): x step_factor every step_every epochs
    cosine     (1 + cos(pi * (e' - 1) / T)) / 2, T = max_epochs - w: 1 in the first epoch after the
               warm-up, falling towards 0, which it reaches at the end of epoch max_epochs
               (torch's CosineAnnealingLR with T_max = T, stepped once per epoch)
"""

from __future__ import annotations

import math

from mnist_study.training.config import SCHEDULES, ScheduleConfig


def lr_multiplier(schedule: ScheduleConfig, epoch: int, max_epochs: int) -> float:
    """The learning-rate multiple for epoch `epoch` (1-based) of at most `max_epochs`."""
    if schedule.kind not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule.kind!r}; expected one of {', '.join(SCHEDULES)}")
    if epoch < 1:
        raise ValueError(f"epochs count from 1, not {epoch}")
    warmup = schedule.warmup_epochs
    if epoch <= warmup:
        return epoch / (warmup + 1)
    after = epoch - warmup  # 1 in the first epoch after the warm-up
    if schedule.kind == "step":
        return schedule.step_factor ** ((after - 1) // schedule.step_every)
    if schedule.kind == "cosine":
        span = max(1, max_epochs - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(after - 1, span) / span))
    return 1.0
