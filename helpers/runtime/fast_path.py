"""The speed settings a run trains and evaluates with on a device: autocast dtype, memory format, compilation,
fused optimiser kernels (:class:`FastPath`), decided from the probes of :mod:`helpers.runtime.probe` and kept by a
checkpoint's record, so that a resume and an evaluation run as their training did.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch

from helpers.core.config import Config, changed
from helpers.core.errors import UserError
from helpers.model.resnet import build_face_model
from helpers.runtime.probe import (AMP_DTYPES, ProbeTiming, amp_choices, amp_name, channels_last_choices, fused_choices,
                                   probe_problem, speed_options, speed_probe, untimed_choice, working_options)


@dataclass(frozen=True)
class FastPath:
    """The speed settings a run uses: autocast dtype, memory format, compilation, fused optimiser kernels, and
    what the timed probe measured where it decided them (:func:`fast_path`)."""

    amp: torch.dtype | None
    channels_last: bool
    compile: bool
    fused: bool
    timing: ProbeTiming | None = None
    untimed: str | None = None  # why a choice the timed probe would make was fixed instead

    def place(self, module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """``module`` moved to ``device``, in this path's memory format."""
        module.to(device)
        if self.channels_last:
            module.to(memory_format=torch.channels_last)
        return module

    def sentence(self) -> str:
        """The settings in words, with the timed probe's verdicts where it decided them, for a run's log."""
        words = [f"autocast {amp_name(self.amp)}" if self.amp else "fp32",
                 "channels-last" if self.channels_last else "NCHW"]
        words += (["torch.compile"] if self.compile else []) + (["fused optimiser"] if self.fused else [])
        verdicts = self.timing.verdicts((amp_name(self.amp), self.channels_last)) if self.timing else {}
        probe = f" (timed probe: {'; '.join(verdicts.values())})" if verdicts else ""
        probe += f" ({self.untimed})" if self.untimed else ""
        return "fast path: " + ", ".join(words) + probe

    def describe(self) -> dict:
        """The settings as plain values, for JSON reports and checkpoints."""
        return {"amp": amp_name(self.amp), "channels_last": self.channels_last, "compile": self.compile,
                "fused_optimizer": self.fused,
                "probe": self.timing.describe((amp_name(self.amp), self.channels_last)) if self.timing else None}


def fast_path(cfg: Config, device: torch.device, previous: dict | None = None) -> FastPath:
    """Resolve the ``auto`` speed settings of ``cfg`` for ``device``.

    Each ``auto`` setting keeps only the choices that pass :func:`probe_problem`,
    so a kernel this torch or this GPU lacks costs speed, not the run. On the
    CPU the timed probe (:func:`speed_probe`, its verdict cached per machine)
    then picks among them, except under ``train.deterministic``, which never
    depends on a timer: it takes the probe's default (fp32, channels-last where
    it works). On CUDA the first in order is taken. ``previous`` (a
    checkpoint's ``fast_path`` record, for its resume) keeps the choice its run
    trained with, so that a resume changes neither precision nor layout; a
    trained model's inference takes :func:`inference_fast_path`. A set
    value is never overridden. ``selftest`` and ``bench train`` report from
    the same functions.
    """
    amp_options, layout_options = speed_options(cfg.train, device)
    chosen = _kept_choice(previous, device, amp_options, layout_options)
    timed = chosen is None and device.type == "cpu" and len(amp_options) * len(layout_options) > 1
    untimed = "not timed: train.deterministic takes fixed settings" if timed and cfg.train.deterministic else None
    timing = speed_probe(cfg, device) if timed and not untimed else None
    if chosen is None and timing is not None:
        chosen = timing.chosen
    elif chosen is None:  # CUDA's order, a deterministic run's fixed choice, or the one choice left
        chosen = untimed_choice(amp_options, layout_options) if untimed else (amp_options[0], layout_options[0])
    fused = working_options(fused_choices(device),
                            lambda choice: probe_problem(device, fused=choice, optimizer=cfg.optim.name))[0]
    return FastPath(AMP_DTYPES[chosen[0]], chosen[1], cfg.train.compile, fused, timing, untimed)


def inference_fast_path(cfg: Config, device: torch.device, recorded: dict | None) -> FastPath:
    """The fast path a trained checkpoint's model embeds with on ``device``: the autocast and memory format its run
    recorded (``recorded``, its ``fast_path``) where it trained on this kind of device and the settings still allow
    them, else fp32 in NCHW (a value set in the configuration kept). Nothing is timed: the timed probe measures
    training steps, which inference never takes. No compilation, no optimiser."""
    amp_options, layout_options = speed_options(cfg.train, device) if _same_device(recorded, device) else (
        amp_choices(cfg.train.amp, device), channels_last_choices(cfg.train.channels_last, device))
    chosen = _kept_choice(recorded, device, amp_options, layout_options)
    if chosen is None:  # the plain path unless a value is set: the last of each list is plain, a set value alone
        chosen = (amp_options[-1], False if False in layout_options else layout_options[-1])
    return FastPath(AMP_DTYPES[chosen[0]], chosen[1], compile=False, fused=False)


def _same_device(previous: dict | None, device: torch.device) -> bool:
    return bool(previous) and previous.get("device") == device.type


def _kept_choice(previous: dict | None, device: torch.device, amp_options: list, layout_options: list):
    """The (amp, channels-last) choice a checkpoint's run trained with, when it ran on the same kind of device and
    the settings still leave that choice open; else None."""
    if not _same_device(previous, device):
        return None
    choice = (previous.get("amp"), previous.get("channels_last"))
    return choice if choice[0] in amp_options and choice[1] in layout_options else None


def channels_last_crash(model: torch.nn.Module, batch_size: int, device: torch.device) -> str | None:
    """The layer at which channels-last training at ``batch_size`` would crash on ``device``, or None.

    torch's CPU backward of a strided 1x1 convolution with fewer than 16 input
    channels corrupts the heap in channels-last when the batch is odd (seen on
    torch 2.14.1: ``model.width`` 0.125 gives its shortcuts 8 channels). It is
    a native crash, which the fast-path probe cannot catch, so it is avoided.
    """
    if device.type != "cpu" or batch_size % 2 == 0:
        return None
    return next((name for name, layer in model.named_modules() if isinstance(layer, torch.nn.Conv2d)
                 and layer.kernel_size == (1, 1) and max(layer.stride) > 1 and layer.in_channels < 16), None)


def training_fast_path(cfg: Config, device: torch.device, batch_size: int | None = None,
                       announce: bool = True, previous: dict | None = None) -> FastPath:
    """The fast path ``cfg``'s model trains with on ``device`` at ``batch_size`` (``train.batch_size`` when not
    given): :func:`fast_path` (``previous``: the choice a resumed run recorded), chosen among NCHW paths where
    channels-last would crash (:func:`channels_last_crash`); there ``train.channels_last: true`` is refused."""
    batch = batch_size or cfg.train.batch_size
    layer = None
    if cfg.train.channels_last is not False:
        with torch.device("meta"):  # the layer shapes only: no weights are made
            layer = channels_last_crash(build_face_model(cfg, 2), batch, device)
    if layer is None:
        return fast_path(cfg, device, previous)
    why = (f"torch's CPU backward crashes in channels-last on an odd batch ({batch}) through {layer}, a strided "
           "1x1 convolution of fewer than 16 channels")
    if cfg.train.channels_last is True:
        raise UserError(f"train.channels_last is true but {why}; use an even train.batch_size or set "
                        "train.channels_last to auto")
    if announce:
        print(f"note: channels-last is off for this run: {why}", file=sys.stderr)
    # the autocast choice is made again among NCHW paths: the fastest dtype can differ between layouts
    return fast_path(changed(cfg, {"train.channels_last": False}), device, previous)
