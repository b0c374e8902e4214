"""One training step on the fast path, and what it is made of: the optimiser over every trainable parameter,
the per-batch seeds, the order of an epoch (:class:`EpochSampler`) and the step itself (:class:`TrainStep`),
which the engine, ``bench train`` and the self-test all run.
"""

from __future__ import annotations

import math
import sys
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from helpers.core.config import Config, OptimConfig, optimizer_class
from helpers.core.errors import UserError
from helpers.data.augment import BatchAugment
from helpers.data.datasets import Batch, decode_batch
from helpers.model.resnet import FaceModel, build_face_model
from helpers.runtime.fast_path import FastPath
from helpers.runtime.resolve import Runtime


def make_optimizer(optim: OptimConfig, model: torch.nn.Module, fused: bool = False) -> torch.optim.Optimizer:
    """SGD (nesterov), Adam or AdamW over every trainable parameter, the margin head's included.

    With ``optim.no_decay_bn_bias`` BatchNorm weights and all biases (every
    1-D parameter) get no weight decay.
    """
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (no_decay if optim.no_decay_bn_bias and parameter.ndim <= 1 else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": optim.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    if optim.name == "sgd":
        options = {"momentum": optim.momentum, "nesterov": optim.nesterov and optim.momentum > 0}
    else:
        options = {"betas": tuple(optim.betas)}
    optimizer = optimizer_class(optim.name)(groups, lr=optim.lr, **options, **({"fused": True} if fused else {}))
    check_optimizer_covers(optimizer, model)
    return optimizer


def check_optimizer_covers(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> None:
    """Fail loudly if a trainable parameter (say, the ArcFace class weights) is missing from the optimiser."""
    seen = {id(p) for group in optimizer.param_groups for p in group["params"]}
    missing = [name for name, p in model.named_parameters() if p.requires_grad and id(p) not in seen]
    if missing:
        raise RuntimeError(f"parameters missing from the optimiser: {', '.join(missing)}")


def step_seed(seed: int, epoch: int, batch: int = 0, rank: int = 0, purpose: int = 0) -> int:
    """A well-mixed seed for one use (0: a batch's augmentation and dropout, 1: an epoch's order)."""
    return int(np.random.SeedSequence([purpose, seed, epoch, batch, rank]).generate_state(1)[0])


class EpochSampler(torch.utils.data.Sampler):
    """The order of one epoch: a permutation that depends only on (seed, epoch).

    The epoch is cut to a whole number of global batches, sharded across
    ranks, and can start at any batch, which is how a mid-epoch resume lands
    on the batch it stopped at.
    """

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        self.size, self.batch_size, self.seed, self.rank, self.world = size, batch_size, seed, rank, world
        self.epoch = 0
        self.start_batch = 0

    @property
    def batches(self) -> int:
        """Batches per rank per epoch."""
        return self.size // (self.batch_size * self.world)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self):
        generator = torch.Generator().manual_seed(step_seed(self.seed, self.epoch, purpose=1))
        order = torch.randperm(self.size, generator=generator)[: self.batches * self.batch_size * self.world]
        mine = order[self.rank::self.world]
        return iter(mine[self.start_batch * self.batch_size:].tolist())

    def __len__(self) -> int:
        return (self.batches - self.start_batch) * self.batch_size


class TrainStep:
    """One training step on the fast path; the engine and ``bench train`` both run exactly this.

    uint8 images are augmented in a batch on the device, the forward pass runs
    under autocast in the chosen memory format, the loss is scaled (fp16) and
    gradients clipped over every parameter, head included. Non-finite steps are
    skipped by the loss scaler and counted in device tensors, so nothing here
    waits for the device.
    """

    def __init__(self, model: FaceModel, forward, optimizer: torch.optim.Optimizer, fast: FastPath,
                 augment: BatchAugment, device: torch.device, accumulate: int = 1, grad_clip: float = 0.0):
        self.model, self.forward, self.optimizer = model, forward, optimizer
        self.fast, self.augment, self.device = fast, augment, device
        self.accumulate, self.grad_clip = accumulate, grad_clip
        self.fp16 = fast.amp == torch.float16
        # One loss-scaling path for every precision: it skips non-finite steps on the device.
        # Outside fp16 the scale stays 1, which leaves gradients bit for bit as they are.
        self.scaler = torch.amp.GradScaler(device.type, init_scale=2.0 ** 16 if self.fp16 else 1.0,
                                           growth_interval=2000 if self.fp16 else 2 ** 30)
        self.bad_run = torch.zeros((), device=device)  # non-finite steps in a row
        self.bad_total = torch.zeros((), device=device)  # since last read

    def forward_backward(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None,
                         sync: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment, forward, backward one batch; returns the loss and the correct count (device tensors)."""
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        x = self.augment(images, generator)
        if self.fast.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        context = self.forward.no_sync() if not sync and hasattr(self.forward, "no_sync") else nullcontext()
        with context:
            with torch.autocast(self.device.type, dtype=self.fast.amp, enabled=self.fast.amp is not None):
                logits, norms = self.forward(x, labels, with_norms=True)
            loss = self.model.head.loss(logits, labels, norms)
            self.scaler.scale(loss / self.accumulate).backward()
        with torch.no_grad():
            correct = (logits.argmax(dim=1) == labels).sum()
        return loss.detach(), correct

    def optimizer_step(self, lr: float) -> torch.Tensor:
        """Apply the accumulated gradients at ``lr``; returns the gradient norm (0 for a skipped step)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                              self.grad_clip if self.grad_clip > 0 else math.inf)
        bad = (~torch.isfinite(norm)).float()
        self.bad_run = (self.bad_run + bad) * bad
        self.bad_total += bad
        self.scaler.step(self.optimizer)
        self.scaler.update(None if self.fp16 else 1.0)
        self.optimizer.zero_grad(set_to_none=True)
        return torch.where(bad > 0, torch.zeros_like(norm), norm)


def training_step(cfg: Config, runtime: Runtime, model: FaceModel, accumulate: int,
                  compiled: bool | None = None) -> TrainStep:
    """The step of ``model`` (placed already) taking ``accumulate`` batches per optimiser step: its optimiser, and
    its forward pass through DDP under torchrun and ``torch.compile`` where the fast path compiles (``compiled``
    overrides that)."""
    fast = runtime.fast_path
    optimizer = make_optimizer(cfg.optim, model, fused=fast.fused)
    forward = model
    if runtime.dist.world > 1:
        forward = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None)
    if fast.compile if compiled is None else compiled:
        forward = torch.compile(forward)
    return TrainStep(model, forward, optimizer, fast, BatchAugment(cfg.augment, cfg.data.image_size),
                     runtime.device, accumulate, cfg.train.grad_clip)


def build_step(cfg: Config, runtime: Runtime, classes: int, compiled: bool | None = None) -> TrainStep:
    """The training step of ``cfg``'s model (weights seeded with 0) for ``classes`` identities in ``runtime``, as
    a run takes it, for the benchmarks and the self-test; ``compiled`` overrides the fast path's ``compile``. One
    batch per step."""
    torch.manual_seed(0)
    return training_step(cfg, runtime, runtime.place(build_face_model(cfg, classes)), 1, compiled)


def usable_batch(batch: Batch, cfg: Config, runtime: Runtime, paths: list[Path]) -> Batch:
    """A loader's ``batch`` decoded on the device where ``data.decode`` says so, its unreadable images warned
    about on rank 0 (``data.strict``: refused), and refused when fewer than two images are left to train on."""
    if runtime.decode_on_device:
        batch = decode_batch(batch, runtime.device, cfg.data.image_size, paths)
    if not batch.skipped:
        return batch
    if cfg.data.strict:
        first = batch.skipped[0]
        raise UserError(f"{first.path}: {first.reason} (data.strict is true; set it false to skip bad images)")
    for item in batch.skipped if runtime.dist.main else ():
        print(f"warning: skipped {item.path}: {item.reason}", file=sys.stderr)
    if len(batch.labels) < 2:
        raise UserError(f"a training batch had {len(batch.labels)} readable image(s); "
                        "run `python -m helpers check-data` and fix the data")
    return batch
