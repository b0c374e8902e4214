"""Where and how this process computes, resolved once from a configuration: the :class:`Runtime` that training,
evaluation, the benchmarks and the self-test are handed.

A Runtime is the device, the fast path on it (autocast, memory format, compilation, fused optimiser kernels:
:mod:`helpers.runtime.fast_path`), the loader's worker processes, whether JPEGs are decoded on the device, and
this process's place in a torchrun job. :func:`resolve_runtime` makes the decisions the engine makes, so that a
self-test or a benchmark reports what a run will do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from helpers.core.config import Config
from helpers.data.datasets import decodes_on_device
from helpers.runtime.device import Distributed, default_workers, pick_device
from helpers.runtime.fast_path import FastPath, fast_path, inference_fast_path, training_fast_path
from helpers.runtime.probe import ProbeTiming, speed_probe


@dataclass(frozen=True)
class Runtime:
    """The device, its fast path, the loader workers (``data.num_workers`` resolved), on-device JPEG decoding
    (``data.decode: device``) and this process's place in a torchrun job."""

    device: torch.device
    fast_path: FastPath
    workers: int
    decode_on_device: bool
    dist: Distributed = Distributed()

    def place(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` on the device, in the fast path's memory format."""
        return self.fast_path.place(module, self.device)

    def probe_timing(self, cfg: Config) -> ProbeTiming | None:
        """The timed probe behind the fast path (on the CPU), or on CUDA, where the order decides, the same probe
        run for comparison; None where nothing was left to time."""
        if self.fast_path.timing is None and self.device.type == "cuda":
            return speed_probe(cfg, self.device)
        return self.fast_path.timing

    def describe_fast_path(self, cfg: Config) -> dict:
        """The fast path as plain values with what the timed probe measured (:meth:`probe_timing`), for the reports
        of ``selftest`` and ``bench train``."""
        described, timing = self.fast_path.describe(), self.probe_timing(cfg)
        if timing is not None and self.fast_path.timing is None:
            described["probe"] = timing.describe((described["amp"], self.fast_path.channels_last), decided=False)
        return described


def resolve_runtime(cfg: Config, device: str | torch.device | None = None, *, training: bool = False,
                    inference: bool = False, previous: dict | None = None, batch_size: int | None = None,
                    announce: bool = True, dist: Distributed = Distributed()) -> Runtime:
    """The Runtime of ``cfg`` on ``device`` (a name as ``train.device`` takes, or a device; default:
    ``train.device``, this process's GPU under torchrun). ``training``: the fast path a training step at
    ``batch_size`` (default ``train.batch_size``) takes, with channels-last off where torch would crash
    (``announce``: say so); ``inference``: the one a trained checkpoint's model embeds with, never timed
    (:func:`inference_fast_path`); else the one evaluating ``cfg``'s model takes. ``previous``: a checkpoint's
    ``fast_path`` record, whose choice a resume and an inference keep."""
    if not isinstance(device, torch.device):
        device = pick_device(cfg.train.device if device is None else device, dist.local_rank)
    if training:
        fast = training_fast_path(cfg, device, batch_size, announce=announce, previous=previous)
    elif inference:
        fast = inference_fast_path(cfg, device, previous)
    else:
        fast = fast_path(cfg, device, previous)
    return Runtime(device, fast, default_workers(cfg.data.num_workers, device), decodes_on_device(cfg.data.decode),
                   dist)
