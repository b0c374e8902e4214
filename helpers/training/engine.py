"""The training engine: one loop from a laptop CPU to several GPUs under torchrun.

What it guarantees:

* the margin head's weights are in the optimiser (checked, not assumed);
* checkpoints are written atomically; ``best.pt`` is chosen by val EER, the grade
  (``train.select``), from the trained weights or, with ``train.ema``, their moving average;
* resume is exact: data order and augmentation are functions of (seed, epoch,
  batch), every other state is in the checkpoint, and a run resumed mid-epoch
  continues at the right batch;
* a step with a non-finite loss or gradient is skipped and counted, without
  a per-step wait on the device; too many in a row stop the run, keeping the
  last good checkpoint;
* ``train.max_minutes`` lays the schedule over a time budget and ends with a
  final evaluation and valid checkpoints before the budget is spent; the
  number of epochs then follows the budget, up to ``train.epochs`` if set
  (budget.py).

A run is entered in three steps, as :func:`train` does: :func:`run_context`
(the process group, the device, torch's global switches, all undone on exit),
:func:`build_run` (data, model, optimiser, schedule; writes nothing) and
:func:`run_folder` (config.yaml and tracking). The :class:`Trainer` then only
trains what it is given.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from helpers.core.config import Config, OptimConfig, changed, dump_config, load_config
from helpers.core.device import OPTIMIZERS, FastPath, default_workers, distributed_backend, fast_path, pick_device
from helpers.core.device import kernel_errors_explained
from helpers.core.errors import UserError
from helpers.core.io import atomic_write_text
from helpers.core.progress import progress
from helpers.core.terms import combined_score, get_term
from helpers.data.augment import BatchAugment
from helpers.data.datasets import (FaceImages, TrainingSet, collate, decode_batch, decodes_on_device, refill,
                                    training_set)
from helpers.data.layout import FaceData, open_data
from helpers.data.stage import training_root
from helpers.eval.evaluation import (EvalSettings, dev_accuracy, eval_settings, known_dev_images, unscored_note,
                                     verify_pairs)
from helpers.eval.selection import Evaluation, Selection, report_lines, resolve_select
from helpers.model.checkpoint import (load_checkpoint, model_weights, rng_state, save_checkpoints, set_rng_state,
                                     weights_misfit)
from helpers.model.margins import margin_loss
from helpers.model.resnet import FaceModel, build_face_model
from helpers.training.averaging import WeightAverage
from helpers.training.budget import SEED_EPOCHS, TimeBudget
from helpers.training.schedule import LRSchedule
from helpers.training.tracking import Tracker

# On the CPU a host sync costs nothing; on a GPU the non-finite counter is read every few steps instead.
_SYNC_EVERY_CUDA = 16
# Under torchrun with a time budget, rank 0's clock is shared every this many optimiser steps.
_SHARE_CLOCK_EVERY = 8
class TrainingStopped(UserError):
    """The run stopped itself (non-finite steps); the last good checkpoint is kept."""


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 without one)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Distributed:
    """Join the process group torchrun describes (NCCL on GPUs, gloo on the CPU); a no-op without torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Distributed()
    if not dist.is_initialized():
        dist.init_process_group(distributed_backend())
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


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
    optimizer = OPTIMIZERS[optim.name](groups, lr=optim.lr, **options, **({"fused": True} if fused else {}))
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

    def __init__(self, model: FaceModel, forward, optimizer: torch.optim.Optimizer, speed: FastPath,
                 augment: BatchAugment, device: torch.device, accumulate: int = 1, grad_clip: float = 0.0):
        self.model, self.forward, self.optimizer = model, forward, optimizer
        self.speed, self.augment, self.device = speed, augment, device
        self.accumulate, self.grad_clip = accumulate, grad_clip
        self.fp16 = speed.amp == torch.float16
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
        if self.speed.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        context = self.forward.no_sync() if not sync and hasattr(self.forward, "no_sync") else nullcontext()
        with context:
            with torch.autocast(self.device.type, dtype=self.speed.amp, enabled=self.speed.amp is not None):
                logits = self.forward(x, labels)
            loss = margin_loss(logits, labels)
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


def build_step(cfg: Config, device: torch.device, speed: FastPath, classes: int,
               compiled: bool | None = None) -> TrainStep:
    """The training step of ``cfg``'s model (weights seeded with 0) for ``classes`` identities on ``device``, with
    its fast path, as a run takes it, for the benchmarks and the self-test; ``compiled`` overrides
    ``speed.compile``. One process, one batch per step."""
    torch.manual_seed(0)
    model = speed.place(build_face_model(cfg, classes), device)
    forward = torch.compile(model) if (speed.compile if compiled is None else compiled) else model
    return TrainStep(model, forward, make_optimizer(cfg.optim, model, fused=speed.fused), speed,
                     BatchAugment(cfg.augment, cfg.data.image_size), device, grad_clip=cfg.train.grad_clip)


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


@dataclass
class TrainResult:
    """Where a finished run left its files, and the val EER of what best.pt holds (None without val pairs)."""

    run_dir: Path
    best_eer: float | None
    epochs: float
    last: dict
    graded: str = "raw"  # the weights best.pt grades: raw (trained) or ema (averaged)


def run_directory(cfg: Config) -> Path:
    return Path(cfg.run.out_dir) / (cfg.run.name or "run")


def prepare_run(config_path: str | Path | None = None, overrides: list[str] = (), resume: str | None = None,
                default_name: str | None = None) -> tuple[dict, dict | None]:
    """The configuration to run and the checkpoint to resume from (None for a fresh run).

    ``resume="auto"`` continues the run folder's ``last.pt`` when there is one
    and starts fresh otherwise (what a notebook rerun after a disconnect wants);
    a path resumes that checkpoint. A resumed run keeps the checkpoint's
    configuration; ``overrides`` still apply (to extend ``train.epochs``, say).
    ``default_name`` names the run folder when the configuration does not.
    """
    cfg = load_config(config_path, overrides)
    if cfg.run.name is None and default_name:
        cfg = changed(cfg, {"run.name": default_name})
    path = None
    if resume == "auto":
        candidate = run_directory(cfg) / "last.pt"
        path = candidate if candidate.is_file() else None
    elif resume:
        path = Path(resume)
    if path is None:
        last = run_directory(cfg) / "last.pt"
        if last.exists() and not resume:
            raise UserError(f"{run_directory(cfg)} already holds a run (last.pt); pass --resume auto to continue "
                            "it, or set run.name to start another")
        return cfg, None
    state = load_checkpoint(path)
    cfg = load_config(None, overrides, base=state["config"])
    _refuse_another_model(cfg, state, path)
    return cfg, state


def _refuse_another_model(cfg: Config, state: dict, path: Path) -> None:
    """A resume continues the model it saved: a ``--set`` that reshapes it (``model.depth=34`` on a depth-18
    run) is refused in one sentence saying what does start a new model from those weights."""
    with torch.device("meta"):  # shapes only
        misfit = weights_misfit(build_face_model(cfg, len(state["classes"])), model_weights(state, "raw"))
    if misfit is None:
        return
    saved = load_config(base=state["config"])
    changes = [f"{section}.{key} {getattr(getattr(saved, section), key)} -> {getattr(getattr(cfg, section), key)}"
               for section in ("model", "loss") for key in type(getattr(cfg, section)).model_fields
               if getattr(getattr(saved, section), key) != getattr(getattr(cfg, section), key)]
    raise UserError(f"--resume continues the model in {path}, but {', '.join(changes) or 'this configuration'} "
                    f"changes its shape ({misfit}); {path} is untouched. To train a new model starting from its "
                    "weights, use --init-from with another run.name")


@dataclass(frozen=True)
class RunContext:
    """What the process a run trains in holds: its place in a torchrun job, its device and that device's fast
    path. Made by :func:`run_context`."""

    dist: Distributed
    device: torch.device
    speed: FastPath


@contextmanager
def run_context(cfg: Config, previous: dict | None = None):
    """The process-wide set-up of a run, undone on exit: join the torchrun process group (left again when this
    joined it), pick the device and its fast path (``previous``: the ``fast_path`` record of the checkpoint a
    resume continues), and set torch's global switches (deterministic kernels, cuDNN autotuning), which are
    restored, so that a notebook's next cell starts as it was."""
    joined = not dist.is_initialized()
    place = init_distributed()
    joined = joined and dist.is_initialized()
    train = cfg.train
    device = pick_device(train.device, place.local_rank)
    speed = training_fast_path(cfg, device, announce=place.main, previous=previous)
    if place.world > 1:  # each process timed its own probe: every rank takes rank 0's choice
        shared = [speed]
        dist.broadcast_object_list(shared, src=0, device=device)
        speed = shared[0]
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.benchmark, os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    try:
        if train.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        elif device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        yield RunContext(place, device, speed)
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark = before[2]
        if before[3] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        if joined:
            dist.destroy_process_group()


@dataclass
class RunParts:
    """What a run trains with, as :func:`build_run` makes it."""

    data: FaceData
    train_set: TrainingSet
    workers: int
    decode_on_device: bool
    model: FaceModel
    average: WeightAverage | None
    selection: Selection
    optimizer: torch.optim.Optimizer
    stepper: TrainStep
    sampler: EpochSampler
    loader: torch.utils.data.DataLoader
    schedule: LRSchedule


def build_run(cfg: Config, run: RunContext, state: dict | None = None,
              init_from: str | Path | None = None) -> RunParts:
    """The data, model, optimiser, step and schedule of a run; the model holds ``state``'s trained weights (a
    resume) or ``init_from``'s. Writes nothing."""
    train, data_cfg = cfg.train, cfg.data
    torch.manual_seed(train.seed)
    if data_cfg.root is None:
        raise UserError("data.root is not set: pass --set data.root=PATH (make a demo root with "
                        "`python -m helpers demo-data data/demo`)")
    data = open_data(training_root(data_cfg, announce=run.dist.main), data_cfg.layout,  # data.stage_to: a copy
                     data_cfg.max_image_pixels, data_cfg.follow_links)
    for note in data.notes if run.dist.main else ():
        print(f"note: {note}", file=sys.stderr)
    train_set = training_set(data, data_cfg.singletons, data_cfg.max_train_images, train.seed,
                             classes=state["classes"] if state else None)
    workers = default_workers(data_cfg.num_workers, run.device)

    model = build_face_model(cfg, len(train_set.classes))
    if state is not None:
        model.load_state_dict(model_weights(state, "raw"))  # the trained weights; the average resumes later
    elif init_from or cfg.run.init_from:
        load_weights(model, init_from or cfg.run.init_from, train_set.classes, announce=run.dist.main)
    run.speed.place(model, run.device)
    # The moving average lives on rank 0 only: under torchrun the ranks hold the same weights, and rank 0
    # alone evaluates and saves.
    average = WeightAverage(model, train.ema) if train.ema and run.dist.main else None
    selection = Selection(resolve_select(train), ("raw", "ema") if train.ema else ("raw",),
                          get_term(cfg.course.term).leaderboard)
    if selection.ranking.metric == "combined" and not (data.val_pairs and known_dev_images(data, train_set.classes)[0]):
        raise UserError(f"train.select {train.select} ranks by the combined score of dev top-1 and val EER, and "
                        f"{data.root} lacks val pairs or dev images of the training identities; select best instead")
    optimizer = make_optimizer(cfg.optim, model, fused=run.speed.fused)
    forward = model
    if run.dist.world > 1:
        forward = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[run.device.index] if run.device.type == "cuda" else None)
    if run.speed.compile:
        forward = torch.compile(forward)
    stepper = TrainStep(model, forward, optimizer, run.speed, BatchAugment(cfg.augment, data_cfg.image_size),
                        run.device, train.accumulate, train.grad_clip)
    sampler = EpochSampler(len(train_set.paths), train.batch_size, train.seed, run.dist.rank, run.dist.world)
    if sampler.batches < train.accumulate:
        raise UserError(f"{len(train_set.paths)} training images make fewer than {train.accumulate} batch(es) of "
                        f"{train.batch_size} per process; lower train.batch_size")
    decode_on_device = decodes_on_device(data_cfg.decode)
    loader = torch.utils.data.DataLoader(
        FaceImages(train_set.paths, train_set.labels, data_cfg.image_size, reader=data.reader,
                   encoded=decode_on_device),
        batch_size=train.batch_size, sampler=sampler, num_workers=workers, collate_fn=collate,
        drop_last=True, pin_memory=run.device.type == "cuda", persistent_workers=workers > 0,
        generator=torch.Generator())
    # step and multistep count epochs of a train.epochs-long run (the seed's when unset), stretched to a budget
    schedule = LRSchedule(cfg.sched, cfg.optim.lr, train.epochs or SEED_EPOCHS)
    return RunParts(data, train_set, workers, decode_on_device, model, average, selection, optimizer, stepper,
                    sampler, loader, schedule)


@contextmanager
def run_folder(cfg: Config, run: RunContext, state: dict | None = None):
    """The run folder with its ``config.yaml``, and the run's :class:`Tracker` (None on ranks other than 0),
    finished on exit. A resume drops the records logged after its checkpoint: that work is redone."""
    if not run.dist.main:
        yield None
        return
    folder = run_directory(cfg)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create the run folder {folder}: {error.strerror or error} (run.out_dir, "
                        "run.name)") from None
    atomic_write_text(folder / "config.yaml", dump_config(cfg))
    tracker = Tracker(folder, cfg, run_id=state.get("wandb_run_id") if state else None, name=folder.name)
    try:
        if state is not None:
            tracker.truncate(state["step"])
        yield tracker
    finally:
        tracker.finish()


class Trainer:
    """Holds a run's model, optimiser and position; :meth:`fit` trains to the end of the epochs or the budget."""

    def __init__(self, cfg: Config, run: RunContext, parts: RunParts, tracker: Tracker | None = None,
                 state: dict | None = None):
        self.cfg = cfg
        self.dist, self.device, self.speed = run.dist, run.device, run.speed
        self.run_dir = run_directory(cfg)
        self.quiet_progress = cfg.train.progress is False  # otherwise progress.py picks a bar or occasional lines
        self.tracker = tracker
        self.data, self.train_set, self.classes = parts.data, parts.train_set, parts.train_set.classes
        self.workers, self.decode_on_device = parts.workers, parts.decode_on_device
        self.model: FaceModel = parts.model  # the plain module: what checkpoints and evaluation use
        self.average, self.selection = parts.average, parts.selection
        self.optimizer, self.stepper, self.schedule = parts.optimizer, parts.stepper, parts.schedule
        self.sampler, self.loader = parts.sampler, parts.loader
        self.budget = TimeBudget(cfg.train, self.dist.world, self.device)

        # Position and bookkeeping; a resumed run takes them from the checkpoint.
        self.epoch, self.batch, self.step = 0, 0, 0
        self.nonfinite_total = 0
        self.skipped_total = 0
        self.resumed = state is not None
        if state is not None:
            self._restore(state)
            if self.dist.main:
                print(f"resuming {self.run_dir} at epoch {self.position():.2f} with its saved configuration "
                      f"(--set overrides still apply)")

    # ------------------------------------------------------------------ state

    def _restore(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.stepper.scaler.load_state_dict(state["scaler"])
        self.schedule.load_state_dict(state["schedule"])
        self.epoch, self.batch, self.step = state["epoch"], state["batch"], state["step"]
        self.selection.load_state_dict(state["selection"] if "selection" in state else Selection.legacy_state(state))
        if self.average is not None and state.get("ema"):  # else the average starts now (train.ema newly set)
            self.average.load_state_dict(state["ema"])
        self.budget.load_state_dict(state)
        self.nonfinite_total = state["nonfinite_steps"]
        self.skipped_total = state["skipped_images"]
        set_rng_state(state["rng"])

    @property
    def best_eer(self) -> float | None:
        """The val EER of the weights best.pt holds."""
        graded = self.selection.graded
        return None if graded is None else graded.eer

    @property
    def best_epoch(self) -> float | None:
        graded = self.selection.graded
        return None if graded is None else graded.epoch

    def state_dict(self) -> dict:
        """Everything a resume needs, as tensors and plain values: ``model`` holds the trained weights and ``ema``
        the averaged ones (or None). Each file adds its own ``graded`` (which of them it stands for) and ``val``
        (their val metrics when it was saved): :meth:`save`."""
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "ema": self.average.state_dict() if self.average is not None else None,
            "scaler": self.stepper.scaler.state_dict(), "schedule": self.schedule.state_dict(),
            "epoch": self.epoch, "batch": self.batch, "step": self.step,
            "data_order": {"seed": self.cfg.train.seed, "epoch": self.epoch, "batch": self.batch,
                           "world": self.dist.world},
            "rng": rng_state(), "classes": self.classes, "config": self.cfg.as_dict(),
            "best_eer": self.best_eer, "best_epoch": self.best_epoch, "selection": self.selection.state_dict(),
            "wandb_run_id": self.tracker.run_id if self.tracker else None,
            "fast_path": {"device": self.device.type, **self.speed.describe()},  # a resume keeps these choices
            **self.budget.state_dict(), "nonfinite_steps": self.nonfinite_total, "skipped_images": self.skipped_total,
            "saved_at": datetime.datetime.now().isoformat(timespec="seconds"),
        }

    def _graded_fields(self, name: str) -> dict:
        graded, evaluation = self.selection.holds(name)
        return {"graded": graded, "val": evaluation.metrics if evaluation is not None else {}}

    def save(self, best: tuple[str, ...] | list[str] = ()) -> None:
        """Write last.pt, and the best files (best.pt, best_raw.pt, best_ema.pt) named in ``best``."""
        if not self.dist.main:
            return
        # The best files first: if the disk fills between them, last.pt still predates the new best, and a
        # resume redoes that stretch instead of believing in a best.pt that was never written. A best file is
        # written when its weights were just evaluated, so it mostly holds what last.pt holds: one serialisation.
        files = {name: self._graded_fields(name) for name in [*best, "last.pt"]}
        save_checkpoints(self.state_dict(), files, self.run_dir)

    # ------------------------------------------------------------------ training

    def fit(self) -> TrainResult:
        """Train until the epoch limit or the time budget, evaluating each ``train.eval_every`` epochs.

        A fresh run first evaluates the untrained model: the curves start from
        chance, and a time budget learns what the last evaluation will cost.
        """
        train = self.cfg.train
        self.budget.start()
        self._stopped = False
        last_record = None
        try:
            if self.position() == 0 and not self.resumed:  # a resumed run's last.pt already holds this evaluation
                last_record = self._end_of_stretch({}, evaluate=True)
            while self.epoch < self.budget.limit:
                if self.budget.out_of_time():
                    if last_record is not None:
                        self.save()  # the budget ran out after the last save: last.pt must say it is spent
                    break
                stats = self._train_epoch()
                # Decided before evaluating and saving, so that last.pt holds at least the elapsed time that
                # ended the run: resuming a finished run then finds its budget spent, not a step's worth left.
                done = self._stopped or self.epoch >= self.budget.limit or self.budget.out_of_time()
                last_record = self._end_of_stretch(stats, evaluate=done or self.epoch % train.eval_every == 0)
                if done:
                    break
            if last_record is not None and self.dist.main:
                self._report_selection()
            if last_record is None and self.dist.main:
                limit = "-" if math.isinf(self.budget.limit) else f"{self.budget.limit:g}"
                print(f"{self.run_dir}: nothing left to train (epoch {self.position():.2f} of {limit}, "
                      f"{self.budget.elapsed() / 60:.1f} of {train.max_minutes or '-'} minutes)")
        finally:
            if self.tracker is not None:
                self.tracker.summarise(self.selection.graded)
        return TrainResult(self.run_dir, self.best_eer, self.position(), last_record or {}, self.selection.arm)

    def _report_selection(self) -> None:
        """Print, and write to selection.json, how best.pt compares with the other candidates on the val pairs."""
        labels = np.array([pair.label for pair in self.data.val_pairs])
        report = self.selection.report(labels, self.cfg.train.eval_bootstrap)
        if report is not None:
            atomic_write_text(self.run_dir / "selection.json", json.dumps(report, indent=2) + "\n")
            print("\n".join(report_lines(report)), flush=True)

    def position(self) -> float:
        return self.epoch + self.batch / max(self.sampler.batches, 1)

    def _train_epoch(self) -> dict:
        train = self.cfg.train
        accumulate = train.accumulate
        self.model.train()
        self.sampler.set_epoch(self.epoch, self.batch)
        sums = {k: torch.zeros((), device=self.device) for k in ("loss", "correct", "seen", "norm")}
        steps = 0
        images = 0
        wait = 0.0
        self._stopped = False
        began = time.perf_counter()
        bar = progress(total=self.sampler.batches, initial=self.batch, desc=f"epoch {self.epoch + 1}", unit="batch",
                       enabled=not self.quiet_progress and self.dist.main)
        iterator = iter(self.loader)
        while self.batch < self.sampler.batches:
            if self.batch % accumulate == 0 and self.budget.out_of_time(refresh=self.step % _SHARE_CLOCK_EVERY == 0):
                self._stopped = True
                break
            t0 = time.perf_counter()
            batch = next(iterator)
            wait += time.perf_counter() - t0
            if self.decode_on_device:
                batch = decode_batch(batch, self.device, self.cfg.data.image_size, self.train_set.paths)
            self._note_skipped(batch)
            batch = refill(batch, train.batch_size)  # the batch shape the fast path was chosen for
            boundary = (self.batch + 1) % accumulate == 0
            loss, correct = self._forward_backward(batch, boundary)
            sums["loss"] += loss * len(batch.labels)
            sums["correct"] += correct
            sums["seen"] += len(batch.labels)
            images += len(batch.labels)
            self.batch += 1
            if boundary:
                sums["norm"] += self._optimizer_step()
                steps += 1
                self.step += 1
                self.budget.steps += 1
                every = train.checkpoint_every_steps
                if every and self.step % every == 0 and self.batch < self.sampler.batches:
                    self.save()
            bar.update(1)
            if self.batch % 20 == 0 and not bar.disable:
                bar.set_postfix(loss=f"{float(sums['loss'] / sums['seen'].clamp_min(1)):.3f}",
                                lr=f"{self.optimizer.param_groups[0]['lr']:.2e}")
        bar.close()
        del iterator
        seconds = time.perf_counter() - began
        self._check_nonfinite(force=True)
        if self.batch >= self.sampler.batches:
            self.epoch, self.batch = self.epoch + 1, 0
        totals = torch.stack([sums["loss"], sums["correct"], sums["seen"], sums["norm"]]).double()
        if self.dist.world > 1:
            dist.all_reduce(totals)
            images *= self.dist.world
        loss_sum, correct, seen, norm_sum = totals.tolist()
        return {"train_loss": loss_sum / seen if seen else float("nan"),
                "train_acc": correct / seen if seen else float("nan"),
                "grad_norm": norm_sum / (steps * self.dist.world) if steps else float("nan"),
                "images_per_s": images / seconds if seconds > 0 else float("nan"),
                "data_wait": wait / seconds if seconds > 0 else float("nan"),
                "lr": self.optimizer.param_groups[0]["lr"]}

    def _note_skipped(self, batch) -> None:
        if not batch.skipped:
            return
        if self.cfg.data.strict:
            first = batch.skipped[0]
            raise UserError(f"{first.path}: {first.reason} (data.strict is true; set it false to skip bad images)")
        for item in batch.skipped:
            if self.dist.main:
                print(f"warning: skipped {item.path}: {item.reason}", file=sys.stderr)
        self.skipped_total += len(batch.skipped)
        if len(batch.labels) < 2:
            raise UserError(f"a training batch had {len(batch.labels)} readable image(s); "
                            "run `python -m helpers check-data` and fix the data")

    def _forward_backward(self, batch, boundary: bool) -> tuple[torch.Tensor, torch.Tensor]:
        seed = step_seed(self.cfg.train.seed, self.epoch, self.batch, self.dist.rank)
        torch.manual_seed(seed)  # dropout draws from the global generator
        warmup = self.cfg.loss.margin_warmup_epochs
        if warmup > 0:  # the scale starts at 1 and stays there without a warm-up: no write per step then
            self.model.head.set_margin_scale(min(1.0, self.position() / warmup))
        return self.stepper.forward_backward(batch.images, batch.labels, torch.Generator().manual_seed(seed),
                                             sync=boundary or self.dist.world == 1)

    def _optimizer_step(self) -> torch.Tensor:
        position = self.epoch + (self.batch / self.sampler.batches)
        norm = self.stepper.optimizer_step(self.schedule.lr(position, self.budget.total_epochs(position)))
        if self.average is not None:
            self.average.update(self.model)
        self._check_nonfinite()
        return norm

    def _check_nonfinite(self, force: bool = False) -> None:
        if not force and self.device.type == "cuda" and self.step % _SYNC_EVERY_CUDA:
            return
        run, total = int(self.stepper.bad_run.item()), int(self.stepper.bad_total.item())
        self.nonfinite_total += total
        self.stepper.bad_total.zero_()
        limit = self.cfg.train.max_nonfinite_steps
        if run >= limit:
            raise TrainingStopped(f"training stopped: {run} steps in a row had a non-finite loss or gradient "
                                  f"(lr {self.optimizer.param_groups[0]['lr']:.3g} may be too high, or try "
                                  f"train.grad_clip); {self.run_dir / 'last.pt'} holds the last good state")

    # ------------------------------------------------------------------ evaluation

    def eval_settings(self) -> EvalSettings:
        return eval_settings(self.cfg, self.device, self.speed, progress=not self.quiet_progress)

    def _evaluate(self) -> tuple[dict, dict[str, Evaluation]]:
        """Val verification of each arm and dev top-1 on rank 0; the results, and what they cost, are shared with
        every rank. Returns the record's fields (the EMA's with an ``_ema`` suffix) and each arm's evaluation."""
        result: dict = {}
        evaluations: dict[str, Evaluation] = {}
        started = self.budget.elapsed()  # the budget's own clock: what the evaluation costs it
        if self.dist.main:
            settings = self.eval_settings()
            arms = {"raw": self.model, **({"ema": self.average.module} if self.average is not None else {})}
            for arm, model in arms.items():
                fields, evaluation = self._evaluate_arm(arm, model, settings)
                suffix = "" if arm == "raw" else f"_{arm}"
                result.update({key + suffix: value for key, value in fields.items()})
                if evaluation is not None:
                    evaluations[arm] = evaluation
        seconds = self.budget.elapsed() - started
        if self.dist.world > 1:
            shared = [(result, evaluations, seconds)]
            dist.broadcast_object_list(shared, src=0)
            result, evaluations, seconds = shared[0]
        self.budget.eval_seconds = max(self.budget.eval_seconds, seconds)
        return result, evaluations

    def _evaluate_arm(self, arm: str, model: FaceModel, settings: EvalSettings) -> tuple[dict, Evaluation | None]:
        """One arm's record fields (val verification, dev top-1/5, the combined score) and its evaluation (None
        without val pairs)."""
        fields: dict = {}
        metrics = None
        if self.data.val_pairs:
            metrics = verify_pairs(model, self.data, settings, bootstrap=self.cfg.train.eval_bootstrap)
            if unscored_note(metrics):
                print(f"warning: {unscored_note(metrics)}", file=sys.stderr)
            fields = {"val_eer": metrics["eer"], "val_auc": metrics["auc"], "val_accuracy": metrics["accuracy"],
                      "val_threshold": metrics["threshold"], "val_tar_at_far": metrics["tar_at_far"]}
            if "eer_ci95" in metrics:
                fields["val_eer_low"], fields["val_eer_high"] = metrics["eer_ci95"]
            if metrics["unscored_pairs"]:
                fields["val_unscored_pairs"] = metrics["unscored_pairs"]
        accuracy = dev_accuracy(model, self.data, self.classes, settings)
        top1 = None
        if accuracy is not None:
            top1 = accuracy["top1"]
            fields.update(dev_top1=top1, dev_top5=accuracy["top5"])
        score = combined_score(top1, fields.get("val_eer"))
        if score is not None:
            fields["val_score"] = score
        if metrics is None:
            return fields, None
        return fields, Evaluation(arm, round(self.position(), 4), metrics["eer"], fields, metrics["scores"], top1)

    def _end_of_stretch(self, stats: dict, evaluate: bool) -> dict:
        record = {"epoch": round(self.position(), 4), "step": self.step, **stats,
                  "nonfinite_steps": self.nonfinite_total, "skipped_images": self.skipped_total}
        best: list[str] = []
        if evaluate:
            metrics, evaluations = self._evaluate()
            record.update(metrics)
            record["evaluated"] = True
            if "raw" in evaluations:
                self.schedule.observe(evaluations["raw"].eer)  # the lr follows the weights it trains
            best = self.selection.observe(evaluations)
        record["elapsed_s"] = round(self.budget.elapsed(), 2)
        record["time"] = datetime.datetime.now().isoformat(timespec="seconds")
        if self.dist.main:
            self.tracker.log(record)
            self.save(best=best)
            total = f"~{self.budget.planned_epochs:.1f}" if self.budget.seconds else f"{self.budget.limit:g}"
            print(format_record(record, total), flush=True)
        return record


def format_record(record: dict, total: str) -> str:
    """One line per epoch for the log; ``total`` is the planned length (an estimate under a time budget)."""
    parts = [f"epoch {record['epoch']:g}/{total}"]
    if "train_loss" in record:
        parts += [f"loss {record['train_loss']:.4f}", f"acc {record['train_acc']:.3f}", f"lr {record['lr']:.2e}",
                  f"{record['images_per_s']:.0f} img/s", f"data-wait {100 * record['data_wait']:.0f}%"]
    else:
        parts.append("before training")
    for suffix, name in (("", "val EER"), ("_ema", "EMA val EER")):
        if record.get("val_eer" + suffix) is not None:
            low = record.get("val_eer_low" + suffix)
            interval = f" [{low:.3f}, {record['val_eer_high' + suffix]:.3f}]" if low is not None else ""
            parts.append(f"{name} {record['val_eer' + suffix]:.4f}{interval} AUC {record['val_auc' + suffix]:.4f}")
    if record.get("dev_top1") is not None:
        parts.append(f"dev top-1 {record['dev_top1']:.3f}")
    if record.get("val_score") is not None:
        parts.append(f"score {record['val_score']:.4f}")
    if record.get("nonfinite_steps"):
        parts.append(f"skipped steps {record['nonfinite_steps']}")
    parts.append(f"{record['elapsed_s'] / 60:.1f} min")
    return " | ".join(parts)


def load_weights(model: FaceModel, path: str | Path, classes: list[str], announce: bool = True) -> None:
    """Start a new model from another run's weights (the fine-tune phases, or a deeper or wider model): every
    tensor whose name and shape fit is taken, the rest starts fresh and is counted. The margin head is taken
    only when the classes match (its rows are the classes)."""
    state = load_checkpoint(path)
    weights = model_weights(state, source=path)
    same_classes = state.get("classes") == classes
    own = model.state_dict()
    fitting = {name: value for name, value in weights.items() if name in own and (same_classes or not
               name.startswith("head.")) and tuple(getattr(value, "shape", ())) == tuple(own[name].shape)}
    if not fitting:
        raise UserError(f"none of the weights in {path} fit this model: {weights_misfit(model, weights)}")
    model.load_state_dict(fitting, strict=False)
    if announce:
        notes = [] if same_classes else ["margin head left fresh: the classes differ"]
        fresh = [name for name in own if name not in fitting and (same_classes or not name.startswith("head."))]
        if fresh:
            notes.append(f"{len(fresh)} of {len(own)} tensors left fresh, e.g. {fresh[0]}: the model.* settings "
                         "differ")
        print(f"initialised from {path}" + (f" ({'; '.join(notes)})" if notes else ""))


def train(config_path: str | Path | None = None, overrides: list[str] = (), resume: str | None = None,
          init_from: str | Path | None = None, default_name: str | None = None) -> TrainResult:
    """Train from a config file plus ``KEY=VALUE`` overrides; ``resume`` is ``auto`` or a checkpoint path."""
    cfg, state = prepare_run(config_path, overrides, resume, default_name)
    if state is not None and init_from:
        raise UserError("--resume and --init-from exclude each other: resume continues a run, init-from starts one")
    with run_context(cfg, state.get("fast_path") if state else None) as run, kernel_errors_explained(run.device):
        if run.dist.main:
            print(run.speed.sentence(), flush=True)
        parts = build_run(cfg, run, state, init_from)
        with run_folder(cfg, run, state) as tracker:
            return Trainer(cfg, run, parts, tracker, state).fit()
