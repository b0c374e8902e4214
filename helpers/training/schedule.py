"""Learning-rate schedules as a function of training progress, set at every optimiser step.

The lr is a pure function of (fractional epoch, total epochs) plus, for
reduce-on-plateau, a factor that val EER moves. That one formula serves the
three ways a run is bounded: a fixed number of epochs, a time budget (where
the engine passes its running estimate of how many epochs fit), and resume
(where the position comes back from the checkpoint). Warmup is linear from
zero to the base lr over ``sched.warmup_epochs``; cosine decays from there to
``sched.min_lr`` at the end; step and multistep count epochs, scaled with
the run when a time budget changes its length.
"""

from __future__ import annotations

import math

from helpers.core.config import SchedConfig


class LRSchedule:
    """The lr for a position in training; ``observe(val_eer)`` drives reduce-on-plateau."""

    def __init__(self, sched: SchedConfig, base_lr: float, planned_epochs: float):
        self.name = sched.name
        self.warmup = sched.warmup_epochs
        self.min_lr = sched.min_lr
        self.step_size = sched.step_size
        self.milestones = list(sched.milestones)
        self.gamma = sched.gamma
        self.patience = sched.patience
        self.base_lr = base_lr
        self.planned_epochs = planned_epochs
        self.plateau_factor = 1.0
        self.best = math.inf
        self.bad_epochs = 0

    def lr(self, epoch: float, total_epochs: float | None = None) -> float:
        """The lr at fractional ``epoch`` of a run ``total_epochs`` long (the planned length by default)."""
        total = self.planned_epochs if total_epochs is None else total_epochs
        scale = total / self.planned_epochs
        if self.warmup > 0 and epoch < self.warmup:
            return self.base_lr * max(epoch, 0.0) / self.warmup
        if self.name == "cosine":
            span = max(total - self.warmup, 1e-9)
            t = min(max((epoch - self.warmup) / span, 0.0), 1.0)
            return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))
        if self.name == "step":
            return self.base_lr * self.gamma ** math.floor(epoch / (self.step_size * scale))
        if self.name == "multistep":
            passed = sum(epoch >= milestone * scale for milestone in self.milestones)
            return self.base_lr * self.gamma ** passed
        if self.name == "plateau":
            return max(self.base_lr * self.plateau_factor, self.min_lr)
        return self.base_lr

    def observe(self, val_eer: float) -> None:
        """After an evaluation: reduce-on-plateau multiplies the lr by ``gamma`` after ``patience`` epochs without progress."""
        if self.name != "plateau":
            return
        if val_eer < self.best - 1e-4:
            self.best, self.bad_epochs = val_eer, 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs > self.patience:
                self.plateau_factor *= self.gamma
                self.bad_epochs = 0

    def state_dict(self) -> dict:
        return {"plateau_factor": self.plateau_factor, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, saved: dict) -> None:
        self.plateau_factor = saved["plateau_factor"]
        self.best = saved["best"]
        self.bad_epochs = saved["bad_epochs"]
