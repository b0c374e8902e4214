"""An exponential moving average (EMA) of a model's weights, kept beside the trained weights.

Built on ``torch.optim.swa_utils``: ``AveragedModel`` holds the averaged copy
and its update count, ``get_ema_multi_avg_fn`` does the averaging. Two
choices are ours:

* **Warmup.** The decay after ``n`` averaged steps is ``min(decay, (1 + n) / (10 + n))``:
  early on the average follows the recent weights (a plain 0.999 would keep
  most of the random initialisation for the first thousand steps, and every
  evaluation of a short run would measure it), and it settles to ``decay`` after
  about ``9 / (1 - decay)`` steps. Until then it spans roughly the last tenth
  of the steps taken.
* **BatchNorm statistics are averaged with the weights** (AveragedModel's ``use_buffers=True``).
  The running mean and variance describe the activations of the weights they
  were measured with; averaging them over the same window as the weights is the
  cheap, consistent estimate for the averaged weights. Copying the live
  statistics would pair them with weights of a different point in training, and
  ``update_bn`` (exact) costs a pass over the training images per evaluation,
  which a time budget on a CPU cannot spare. BatchNorm's step counter
  ``num_batches_tracked`` is an integer count, not a quantity: it is copied.
"""

from __future__ import annotations

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def warmed_up_decay(decay: float, averaged: int) -> float:
    """The EMA decay after ``averaged`` updates: ``decay``, lowered while few steps have been averaged."""
    return min(decay, (1.0 + averaged) / (10.0 + averaged))


class WeightAverage:
    """An EMA of ``model``'s parameters and BatchNorm statistics; :meth:`update` after each optimiser step."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        # AveragedModel holds the averaged copy and its update count; the count stays on the CPU (no device is
        # given), so reading it never waits for a GPU.
        self.averaged = AveragedModel(model, use_buffers=True)

    @property
    def module(self) -> torch.nn.Module:
        """The averaged model: the same class as the trained one."""
        return self.averaged.module

    @property
    def updates(self) -> int:
        """How many optimiser steps have been averaged in."""
        return int(self.averaged.n_averaged)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Fold the model's current weights and BatchNorm statistics into the average (the first update copies them).

        Not ``AveragedModel.update_parameters``: it copies its CPU update count to the model's device at every
        call, a blocking copy that would make every optimiser step on a GPU wait for the device.
        """
        mine = [*self.module.parameters(), *self.module.buffers()]
        theirs = [tensor.detach() for tensor in (*model.parameters(), *model.buffers())]
        if self.updates == 0:
            for average, current in zip(mine, theirs):
                average.copy_(current)
        else:
            floats = [i for i, tensor in enumerate(mine) if tensor.is_floating_point()]
            ema = get_ema_multi_avg_fn(warmed_up_decay(self.decay, self.updates))
            ema([mine[i] for i in floats], [theirs[i] for i in floats], self.updates)
            for average, current in zip(mine, theirs):
                if not average.is_floating_point():  # BatchNorm's step counter: a count, copied
                    average.copy_(current)
        self.averaged.n_averaged += 1

    def state_dict(self) -> dict:
        """The averaged weights (keys as in the model's own state dict) and the update count."""
        return {"weights": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, saved: dict) -> None:
        self.module.load_state_dict(saved["weights"])
        self.averaged.n_averaged.fill_(saved["updates"])
