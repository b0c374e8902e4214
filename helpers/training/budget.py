"""A run's time budget (``train.max_minutes``): the clock across resumes, what is kept back, what still fits."""

from __future__ import annotations

import math
import time

import torch
import torch.distributed as dist

from helpers.core.config import TrainConfig
from helpers.model.checkpoint import Checkpoint
from helpers.runtime.device import Distributed

# The starter recipe's length: what a run trains when neither train.epochs nor a time budget says.
STARTER_EPOCHS = 100


def epoch_limit(train: TrainConfig) -> float:
    """The most epochs a run trains: ``train.epochs`` when set; unset, none under ``train.max_minutes`` (the
    budget ends the run) and the starter's 100 without a budget."""
    if train.epochs is not None:
        return float(train.epochs)
    return math.inf if train.max_minutes else float(STARTER_EPOCHS)


def budget_epochs(limit: float, position: float, elapsed: float, usable: float) -> float:
    """How long a budgeted run will be: the epochs it reaches when ``usable`` seconds are spent at the pace of
    ``position`` epochs in ``elapsed`` seconds, within ``limit``. The lr schedule is laid over this length."""
    return min(limit, position * usable / elapsed)


class TimeBudget:
    """The seconds a run may take (0: no budget), the seconds it has taken, resumes included, and the run length
    the lr schedule is laid over.

    Under torchrun every rank must take the same decisions (the same lr, the same last step), so the clock
    they read is rank 0's, shared when asked to refresh.
    """

    def __init__(self, train: TrainConfig, place: Distributed = Distributed(),
                 device: torch.device = torch.device("cpu")):
        self.seconds = train.max_minutes * 60.0
        self.limit = epoch_limit(train)
        self.spent_before = 0.0  # seconds of the runs this one resumes
        self.eval_seconds = 0.0  # the slowest evaluation so far: what the last one will cost
        self.planned_epochs = float(train.epochs or STARTER_EPOCHS)  # until the pace is known
        self.steps = 0  # optimiser steps in this process, before which the pace is not trusted
        self._place, self._device = place, device
        self._started: float | None = None
        self._shared: float | None = None

    def start(self) -> None:
        self._started, self.steps = time.perf_counter(), 0

    def elapsed(self) -> float:
        return self.spent_before + (time.perf_counter() - self._started if self._started is not None else 0.0)

    def reserve(self) -> float:
        """Seconds kept back for the final evaluation and checkpoint: the slowest evaluation seen, with margin."""
        return 1.25 * self.eval_seconds + min(5.0, 0.05 * self.seconds)

    def share(self, signal: int = 0) -> int:
        """Under torchrun, one collective for rank 0's clock (read by ``clock(refresh=False)``) and the largest
        stop signal any rank received, which it returns; without torchrun, ``signal`` and no collective."""
        if self._place.world == 1:
            return signal
        values = torch.tensor([self.elapsed() if self._place.main else 0.0, float(signal)], dtype=torch.float64,
                              device=self._device if self._device.type == "cuda" else "cpu")
        dist.all_reduce(values, op=dist.ReduceOp.MAX)  # the others' 0.0 leave rank 0's clock (>= 0) as it is
        self._shared, largest = values.tolist()
        return int(largest)

    def clock(self, refresh: bool = True) -> float:
        """Elapsed seconds as every rank agrees on them (rank 0's, shared when ``refresh`` is set)."""
        if self._place.world == 1:
            return self.elapsed()
        if refresh or self._shared is None:
            self.share()
        return self._shared

    def out_of_time(self, refresh: bool = True) -> bool:
        return bool(self.seconds) and self.clock(refresh) + self.reserve() >= self.seconds

    def total_epochs(self, position: float) -> float:
        """How long the schedule thinks the run is: its epoch limit, or what fits the budget at the pace so far."""
        if not self.seconds:
            return self.limit
        elapsed = self.clock(refresh=False)
        if self.steps >= 10 and elapsed > min(10.0, 0.05 * self.seconds):
            usable = max(self.seconds - self.reserve(), 1.0)
            self.planned_epochs = budget_epochs(self.limit, position, elapsed, usable)
        return self.planned_epochs

    def state_dict(self) -> dict:
        """The checkpoint's fields of the budget (their names predate this class)."""
        return {"elapsed_seconds": self.elapsed(), "planned_epochs": self.planned_epochs,
                "eval_seconds": self.eval_seconds}

    def resume(self, checkpoint: Checkpoint) -> None:
        """Continue the clock and the plan of the run ``checkpoint`` saved."""
        self.spent_before = checkpoint.elapsed_seconds
        self.planned_epochs = checkpoint.planned_epochs
        self.eval_seconds = checkpoint.eval_seconds
