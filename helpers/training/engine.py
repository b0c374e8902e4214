"""The training engine: one loop from a laptop CPU to several GPUs under torchrun.

What it guarantees:

* the margin head's weights are in the optimiser (checked, not assumed);
* checkpoints are written atomically; ``best.pt`` is chosen by a ranking value, val EER or the term's metric
  (``train.select``), from the trained weights or, with ``train.ema``, their moving average;
* resume is exact: data order and augmentation are functions of (seed, epoch,
  batch), every other state is in the checkpoint, and a run resumed mid-epoch
  continues at the right batch (on another number of processes, at the right sample or from the epoch's start:
  resume.py); a resume never takes the checkpoint's paths;
* one training at a time in a run folder (its lock), and SIGTERM or SIGUSR1 save last.pt at the next step and
  stop the run (guard.py);
* a step with a non-finite loss or gradient is skipped and counted, without
  a per-step wait on the device; too many in a row stop the run, keeping the
  last good checkpoint;
* ``train.max_minutes`` lays the schedule over a time budget and ends with a
  final evaluation and valid checkpoints before the budget is spent; the
  number of epochs then follows the budget, up to ``train.epochs`` if set
  (budget.py).

A run is entered in three steps, as :func:`train` does (run.py): :func:`run_context` (the process group, the
:class:`Runtime`, torch's global switches, all undone on exit), :func:`build_run` (data, model, optimiser,
schedule; writes nothing) and :func:`run_folder` (the lock, config.yaml and tracking). The :class:`Trainer`,
made before the run folder is written to, restores a resumed run's state (refusing one that does not fit), then
only trains what it is given; one step is :class:`TrainStep` (step.py).
"""

from __future__ import annotations

import datetime
import json
import math
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist

from helpers.core.config import Config
from helpers.core.errors import Stopped, UserError, one_line
from helpers.core.io import atomic_write_text
from helpers.core.progress import progress
from helpers.core.records import EvalMetrics, EpochStats, RunRecord
from helpers.data.datasets import Batch, refill
from helpers.eval.evaluation import EvalSettings, eval_metrics, eval_settings, unscored_note
from helpers.model.checkpoint import Checkpoint, rng_state, save_checkpoints, set_rng_state
from helpers.model.resnet import FaceModel
from helpers.runtime.device import kernel_errors_explained
from helpers.runtime.resolve import Runtime
from helpers.training.budget import TimeBudget
from helpers.training.guard import StopSignals, stopped
from helpers.training.resume import folder_note, resume_position
from helpers.training.run import RunParts, build_run, prepare_run, run_context, run_directory, run_folder
from helpers.training.selection import Evaluation, Selection, report_lines
from helpers.training.step import step_seed, usable_batch
from helpers.training.tracking import Tracker

# On the CPU a host sync costs nothing; on a GPU the non-finite counter is read every few steps instead.
_SYNC_EVERY_CUDA = 16
# Under torchrun, rank 0's clock and the ranks' stop signals are shared every this many optimiser steps.
_SHARE_CLOCK_EVERY = 8


class TrainingStopped(UserError):
    """The run stopped itself (non-finite steps); the last good checkpoint is kept."""


@dataclass
class TrainResult:
    """Where a finished run left its files, and the val EER of what best.pt holds (None without val pairs)."""

    run_dir: Path
    best_eer: float | None
    epochs: float
    last: RunRecord | None  # the run's last metrics.jsonl line (None when it wrote none)
    weights: str = "raw"  # the weights best.pt holds: raw (trained) or ema (averaged)
    main: bool = True  # whether this process reports the run (under torchrun, rank 0 alone)


class Trainer:
    """Holds a run's model, optimiser and position; :meth:`fit` trains to the end of the epochs or the budget."""

    def __init__(self, cfg: Config, runtime: Runtime, parts: RunParts, tracker: Tracker | None = None,
                 checkpoint: Checkpoint | None = None):
        self.cfg, self.runtime, self.tracker = cfg, runtime, tracker
        self.run_dir = run_directory(cfg)
        self.quiet_progress = cfg.train.progress is False  # otherwise progress.py picks a bar or occasional lines
        self.data, self.train_set, self.classes = parts.data, parts.train_set, parts.train_set.classes
        self.model: FaceModel = parts.model  # the plain module: what checkpoints and evaluation use
        self.average, self.selection, self.schedule = parts.average, parts.selection, parts.schedule
        self.stepper, self.sampler, self.loader = parts.stepper, parts.sampler, parts.loader
        self.budget = TimeBudget(cfg.train, runtime.dist, runtime.device)
        # Position and bookkeeping; a resumed run takes them from the checkpoint.
        self.epoch, self.batch, self.step = 0, 0, 0
        self.nonfinite_total = 0
        self.skipped_total = 0
        self.signals = StopSignals()  # caught while train() runs
        self._signal = 0  # the stop signal every rank agreed on (0: none)
        self.resumed = checkpoint is not None
        self.run_id = (checkpoint.run_id if checkpoint is not None else None) or uuid.uuid4().hex[:16]
        # Called on rank 0 with each evaluation's record, once it is saved; one may call request_stop().
        self.on_evaluation: list[Callable[[RunRecord], None]] = []
        self.stop_requested = False
        if checkpoint is not None:
            notes = self._restore(checkpoint)
            if runtime.dist.main:
                print("\n".join([*notes, f"resuming {self.run_dir} at epoch {self.position():.2f} with its saved "
                                  "configuration (--set overrides still apply)"]))

    # ------------------------------------------------------------------ state

    def _restore(self, checkpoint: Checkpoint) -> list[str]:
        """Take the run's state from ``checkpoint``; a state that does not fit this run is refused in one sentence
        (nothing is written yet). Returns the lines that say what differs: the run folder, the global batch."""
        position = resume_position(checkpoint, self.cfg, self.runtime.dist.world, self.sampler.batches)
        states = {
            "optimizer": lambda: _load_optimizer(self.stepper.optimizer, checkpoint.optimizer),
            "scaler": lambda: self.stepper.scaler.load_state_dict(checkpoint.scaler),
            "schedule": lambda: self.schedule.load_state_dict(checkpoint.schedule),
            "selection": lambda: self.selection.load_state_dict(checkpoint.selection or Selection.legacy_state(
                checkpoint.best_eer, checkpoint.best_epoch)),
            "ema": lambda: self._restore_average(checkpoint.ema),
        }
        for name, restore in states.items():
            try:
                restore()
            except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as error:
                raise UserError(f"the checkpoint's {name} state does not fit this run ({one_line(error)}); the file "
                                "was changed after training or written by another tool") from None
        self.epoch, self.batch, self.step = checkpoint.epoch, position.batch, checkpoint.step
        self.budget.resume(checkpoint)
        self.nonfinite_total = checkpoint.nonfinite_steps
        self.skipped_total = checkpoint.skipped_images
        set_rng_state(checkpoint.rng)
        note = folder_note(checkpoint, self.run_dir)
        return [note, *position.notes] if note else list(position.notes)

    def _restore_average(self, saved: dict | None) -> None:
        if self.average is not None and saved:  # else the average starts now (train.ema newly set)
            self.average.load_state_dict(saved)

    def checkpoint(self) -> Checkpoint:
        """Everything a resume needs: ``model`` holds the trained weights and ``ema`` the averaged ones (or None).
        Each file sets its own ``weights`` (which of them it holds) and ``val`` (their val metrics when it
        was saved): :meth:`save`."""
        chosen = self.selection.chosen
        return Checkpoint(
            model=self.model.state_dict(), optimizer=self.stepper.optimizer.state_dict(),
            ema=self.average.state_dict() if self.average is not None else None,
            scaler=self.stepper.scaler.state_dict(), schedule=self.schedule.state_dict(),
            epoch=self.epoch, batch=self.batch, step=self.step,
            data_order={"seed": self.cfg.train.seed, "epoch": self.epoch, "batch": self.batch,
                        "world": self.runtime.dist.world},
            rng=rng_state(), classes=self.classes, config_values=self.cfg.as_dict(),
            best_eer=None if chosen is None else chosen.eer, best_epoch=None if chosen is None else chosen.epoch,
            selection=self.selection.state_dict(), wandb_run_id=self.tracker.run_id if self.tracker else None,
            # a resume keeps these choices
            fast_path={"device": self.runtime.device.type, **self.runtime.fast_path.describe()},
            **self.budget.state_dict(), nonfinite_steps=self.nonfinite_total, skipped_images=self.skipped_total,
            saved_at=datetime.datetime.now().isoformat(timespec="seconds"), run_id=self.run_id)

    def _held(self, name: str) -> tuple[str, EvalMetrics]:
        """The weights file ``name`` holds, and their val metrics (none before their first evaluation)."""
        weights, evaluation = self.selection.holds(name)
        return weights, evaluation.measured if evaluation is not None else EvalMetrics()

    def save(self, best: tuple[str, ...] | list[str] = ()) -> None:
        """Write last.pt, and the best files (best.pt, best_raw.pt, best_ema.pt) named in ``best``."""
        if not self.runtime.dist.main:
            return
        # The best files first: if the disk fills between them, last.pt still predates the new best, and a
        # resume redoes that span instead of believing in a best.pt that was never written. A best file is
        # written when its weights were just evaluated, so it mostly holds what last.pt holds: one serialisation.
        files = {name: self._held(name) for name in [*best, "last.pt"]}
        save_checkpoints(self.checkpoint(), files, self.run_dir)

    def request_stop(self) -> None:
        """End the run after the evaluation in progress, its checkpoints and records saved as at any other
        (a pruned search trial). A single-process request: under torchrun every rank must make it alike."""
        self.stop_requested = True

    # ------------------------------------------------------------------ training

    def fit(self) -> TrainResult:
        """Train until the epoch limit or the time budget, evaluating each ``train.eval_every`` epochs.

        A fresh run first evaluates the untrained model: the curves start from
        chance, and a time budget learns what the last evaluation will cost.
        """
        self.budget.start()
        self._stopped = False
        last_record = None
        try:
            if self.position() == 0 and not self.resumed:  # a resumed run's last.pt already holds this evaluation
                last_record = self._end_of_span(None, evaluate=True)
            while self.epoch < self.budget.limit and not self.stop_requested:
                if self.budget.out_of_time():
                    if last_record is not None:
                        self.save()  # the budget ran out after the last save: last.pt must say it is spent
                    break
                trained = self._train_epoch()
                if self._signal:
                    raise self._stop_by_signal()
                # Decided before evaluating and saving, so that last.pt holds at least the elapsed time that
                # ended the run: resuming a finished run then finds its budget spent, not a step's worth left.
                done = self._stopped or self.epoch >= self.budget.limit or self.budget.out_of_time()
                last_record = self._end_of_span(trained, done or self.epoch % self.cfg.train.eval_every == 0)
                if done or self.stop_requested:
                    break
            if last_record is not None and self.runtime.dist.main:
                self._report_selection()
            elif self.runtime.dist.main:
                limit = "-" if math.isinf(self.budget.limit) else f"{self.budget.limit:g}"
                print(f"{self.run_dir}: nothing left to train (epoch {self.position():.2f} of {limit}, "
                      f"{self.budget.elapsed() / 60:.1f} of {self.cfg.train.max_minutes or '-'} minutes)")
        finally:
            if self.tracker is not None:
                self.tracker.summarise(self.selection.chosen)
        chosen = self.selection.chosen
        return TrainResult(self.run_dir, None if chosen is None else chosen.eer, self.position(),
                           last_record, self.selection.weights, self.runtime.dist.main)

    def _report_selection(self) -> None:
        """Print, and write to selection.json, how best.pt compares with the other candidates on the val pairs."""
        if not self.data.val_pairs:  # nothing was compared: best.pt holds the latest weights
            return
        labels = np.array([pair.label for pair in self.data.val_pairs])
        report = self.selection.report(labels, self.cfg.train.eval_bootstrap)
        if report is not None:
            atomic_write_text(self.run_dir / "selection.json", json.dumps(report, indent=2) + "\n")
            print("\n".join(report_lines(report, self.selection.leaderboard)), flush=True)

    def position(self) -> float:
        return self.epoch + self.batch / max(self.sampler.batches, 1)

    def _train_epoch(self) -> EpochStats:
        """The epoch's batches from where the run stands, until its end or the time budget's."""
        accumulate = self.cfg.train.accumulate
        self.model.train()
        self.sampler.set_epoch(self.epoch, self.batch)
        # Summed on the device: reading them would make the host wait for every step.
        sums = {key: torch.zeros((), device=self.runtime.device) for key in ("loss", "correct", "seen", "norm")}
        steps, images, wait, began = 0, 0, 0.0, time.perf_counter()
        self._stopped = False
        bar = progress(total=self.sampler.batches, initial=self.batch, desc=f"epoch {self.epoch + 1}", unit="batch",
                       enabled=not self.quiet_progress and self.runtime.dist.main)
        batches = iter(self.loader)
        while self.batch < self.sampler.batches:
            if self.batch % accumulate == 0 and self._stops_here():
                break
            fetched = time.perf_counter()
            loaded = next(batches)  # the host waits here when the loader falls behind
            wait += time.perf_counter() - fetched
            batch = self._usable(loaded)
            boundary = (self.batch + 1) % accumulate == 0
            loss, correct = self._forward_backward(batch, boundary)  # queued on the device, not waited for
            sums["loss"] += loss * len(batch.labels)
            sums["correct"] += correct
            sums["seen"] += len(batch.labels)
            images += len(batch.labels)
            self.batch += 1
            if boundary:
                sums["norm"] += self._optimizer_step()
                steps += 1
                self._count_step()
            bar.update(1)
            if self.batch % 20 == 0 and not bar.disable:  # the host waits for the device to show the loss
                bar.set_postfix(loss=f"{float(sums['loss'] / sums['seen'].clamp_min(1)):.3f}",
                                lr=f"{self.stepper.optimizer.param_groups[0]['lr']:.2e}")
        bar.close()
        del batches
        seconds = time.perf_counter() - began
        self._check_nonfinite(force=True)  # the host waits for the device's count of skipped steps
        if self.batch >= self.sampler.batches:
            self.epoch, self.batch = self.epoch + 1, 0
        return self._epoch_stats(sums, steps, images, wait, seconds)

    def _stops_here(self) -> bool:
        """Whether the run stops at this step boundary: its budget spent (``_stopped``) or a stop signal. Under
        torchrun the ranks share rank 0's clock and the largest signal every few steps, in one collective, so
        that all of them stop at the same step."""
        received = self.signals.received or 0
        if self.step % _SHARE_CLOCK_EVERY == 0:
            received = self.budget.share(received)
        elif self.runtime.dist.world > 1:
            received = 0  # the ranks agree on a signal only where they share the clock
        if self.budget.out_of_time(refresh=False):
            self._stopped = True
            return True
        self._signal = received
        return bool(received)

    def _stop_by_signal(self) -> Stopped:
        """Save where the run stands (last.pt, at a step boundary) and the stop that says so."""
        self.save()
        saved = f"{self.run_dir / 'last.pt'} holds epoch {self.position():.2f} (step {self.step})"
        return stopped(self._signal, saved if self.runtime.dist.main else "")

    def _usable(self, loaded) -> Batch:
        """The loader's batch decoded (on the device where ``data.decode`` says so), its unreadable images counted,
        their slots refilled."""
        batch = usable_batch(loaded, self.cfg, self.runtime, self.train_set.paths)
        self.skipped_total += len(batch.skipped)
        return refill(batch, self.cfg.train.batch_size)  # the batch shape the fast path was chosen for

    def _count_step(self) -> None:
        """One optimiser step more; a checkpoint every ``train.checkpoint_every_steps`` inside an epoch."""
        self.step += 1
        self.budget.steps += 1
        every = self.cfg.train.checkpoint_every_steps
        if every and self.step % every == 0 and self.batch < self.sampler.batches:
            self.save()

    def _epoch_stats(self, sums: dict, steps: int, images: int, wait: float, seconds: float) -> EpochStats:
        """The epoch's means, over every rank under torchrun (the host waits for the device here)."""
        totals = torch.stack([sums["loss"], sums["correct"], sums["seen"], sums["norm"]]).double()
        world = self.runtime.dist.world
        if world > 1:
            dist.all_reduce(totals)
            images *= world
        loss_sum, correct, seen, norm_sum = totals.tolist()
        return EpochStats(train_loss=loss_sum / seen if seen else float("nan"),
                          train_acc=correct / seen if seen else float("nan"),
                          grad_norm=norm_sum / (steps * world) if steps else float("nan"),
                          images_per_s=images / seconds if seconds > 0 else float("nan"),
                          data_wait=wait / seconds if seconds > 0 else float("nan"),
                          lr=self.stepper.optimizer.param_groups[0]["lr"])

    def _forward_backward(self, batch, boundary: bool) -> tuple[torch.Tensor, torch.Tensor]:
        seed = step_seed(self.cfg.train.seed, self.epoch, self.batch, self.runtime.dist.rank)
        torch.manual_seed(seed)  # dropout draws from the global generator
        warmup = self.cfg.loss.margin_warmup_epochs
        if warmup > 0:  # the scale starts at 1 and stays there without a warm-up: no write per step then
            self.model.head.set_margin_scale(min(1.0, self.position() / warmup))
        return self.stepper.forward_backward(batch.images, batch.labels, torch.Generator().manual_seed(seed),
                                             sync=boundary or self.runtime.dist.world == 1)

    def _optimizer_step(self) -> torch.Tensor:
        position = self.epoch + (self.batch / self.sampler.batches)
        norm = self.stepper.optimizer_step(self.schedule.lr(position, self.budget.total_epochs(position)))
        if self.average is not None:
            self.average.update(self.model)
        self._check_nonfinite()
        return norm

    def _check_nonfinite(self, force: bool = False) -> None:
        if not force and self.runtime.device.type == "cuda" and self.step % _SYNC_EVERY_CUDA:
            return
        run, total = int(self.stepper.bad_run.item()), int(self.stepper.bad_total.item())  # the host waits
        self.nonfinite_total += total
        self.stepper.bad_total.zero_()
        limit = self.cfg.train.max_nonfinite_steps
        if run >= limit:
            raise TrainingStopped(f"training stopped: {run} steps in a row had a non-finite loss or gradient "
                                  f"(lr {self.stepper.optimizer.param_groups[0]['lr']:.3g} may be too high, or try "
                                  f"train.grad_clip); {self.run_dir / 'last.pt'} holds the last good state")

    # ------------------------------------------------------------------ evaluation

    def _evaluate(self) -> tuple[dict[str, EvalMetrics], dict[str, Evaluation]]:
        """Val verification of each set of weights and dev top-1 on rank 0; the results, and what they cost, are
        shared with every rank. Returns the metrics of each and its evaluation (for the selection of best.pt)."""
        measured: dict[str, EvalMetrics] = {}
        evaluations: dict[str, Evaluation] = {}
        started = self.budget.elapsed()  # the budget's own clock: what the evaluation costs it
        if self.runtime.dist.main:
            settings = eval_settings(self.cfg, self.runtime, progress=not self.quiet_progress)
            models = {"raw": self.model, **({"ema": self.average.module} if self.average is not None else {})}
            for weights, model in models.items():
                measured[weights], evaluation = self._evaluate_weights(weights, model, settings)
                if evaluation is not None:
                    evaluations[weights] = evaluation
        seconds = self.budget.elapsed() - started
        if self.runtime.dist.world > 1:
            shared = [(measured, evaluations, seconds)]
            dist.broadcast_object_list(shared, src=0)
            measured, evaluations, seconds = shared[0]
        self.budget.eval_seconds = max(self.budget.eval_seconds, seconds)
        return measured, evaluations

    def _evaluate_weights(self, weights: str, model: FaceModel,
                          settings: EvalSettings) -> tuple[EvalMetrics, Evaluation | None]:
        """The metrics of one set of weights (val verification, dev top-1/5, the combined score) and its evaluation
        (None without val pairs)."""
        metrics, verification = eval_metrics(model, self.data, self.classes, settings,
                                             bootstrap=self.cfg.train.eval_bootstrap)
        if verification is None:
            return metrics, None
        if unscored_note(verification):
            print(f"warning: {unscored_note(verification)}", file=sys.stderr)
        return metrics, Evaluation(weights, round(self.position(), 4), verification.eer, metrics, verification.scores,
                                   metrics.dev_top1)

    def _end_of_span(self, trained: EpochStats | None, evaluate: bool) -> RunRecord:
        """The record of where the run stands after a span of training (``trained``; None before the first),
        evaluated when ``evaluate`` is set; logged, printed and saved on rank 0."""
        measured, best = {}, []
        if evaluate:
            measured, evaluations = self._evaluate()
            if "raw" in evaluations:
                self.schedule.observe(evaluations["raw"].eer)  # the lr follows the weights it trains
            best = self.selection.observe(evaluations)
        record = RunRecord(epoch=round(self.position(), 4), step=self.step, trained=trained,
                           nonfinite_steps=self.nonfinite_total, skipped_images=self.skipped_total,
                           by_weights={weights: metrics for weights, metrics in measured.items() if metrics.measured},
                           evaluated=evaluate, elapsed_s=round(self.budget.elapsed(), 2),
                           time=datetime.datetime.now().isoformat(timespec="seconds"), run_id=self.run_id)
        if self.runtime.dist.main:
            self.tracker.log(record)
            self.save(best=best)
            total = f"~{self.budget.planned_epochs:.1f}" if self.budget.seconds else f"{self.budget.limit:g}"
            print(format_record(record, total), flush=True)
            for callback in self.on_evaluation if evaluate else ():
                callback(record)
        return record


def format_record(record: RunRecord, total: str) -> str:
    """One line per epoch for the log; ``total`` is the planned length (an estimate under a time budget)."""
    parts = [f"epoch {record.epoch:g}/{total}"]
    trained = record.trained
    if trained is not None:
        parts += [f"loss {trained.train_loss:.4f}", f"acc {trained.train_acc:.3f}", f"lr {trained.lr:.2e}",
                  f"{trained.images_per_s:.0f} img/s", f"data-wait {100 * trained.data_wait:.0f}%"]
    else:
        parts.append("before training")
    for weights, name in (("raw", "val EER"), ("ema", "EMA val EER")):
        metrics = record.metrics(weights)
        if metrics.val_eer is not None:
            low = metrics.val_eer_low
            interval = f" [{low:.3f}, {metrics.val_eer_high:.3f}]" if low is not None else ""
            parts.append(f"{name} {metrics.val_eer:.4f}{interval} AUC {metrics.val_auc:.4f}")
    raw = record.metrics("raw")
    if raw.dev_top1 is not None:
        parts.append(f"dev top-1 {raw.dev_top1:.3f}")
    if raw.val_score is not None:
        parts.append(f"score {raw.val_score:.4f}")
    if record.nonfinite_steps:
        parts.append(f"skipped steps {record.nonfinite_steps}")
    parts.append(f"{record.elapsed_s / 60:.1f} min")
    return " | ".join(parts)


def _load_optimizer(optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """``optimizer.load_state_dict(saved)``, and a state tensor whose shape is not its parameter's refused (torch
    would take it, and fail at the first step)."""
    optimizer.load_state_dict(saved)
    for parameter in (p for group in optimizer.param_groups for p in group["params"]):
        for key, value in optimizer.state.get(parameter, {}).items():
            if isinstance(value, torch.Tensor) and value.ndim and value.shape != parameter.shape:
                raise ValueError(f"its {key} is {list(value.shape)} for a parameter of {list(parameter.shape)}")


def train(config_path: str | Path | None = None, overrides: list[str] = (), resume: str | None = None,
          init_from: str | Path | None = None, default_name: str | None = None,
          take_over: bool = False, on_evaluation: Callable[[Trainer, RunRecord], None] | None = None) -> TrainResult:
    """Train from a config file plus ``KEY=VALUE`` overrides; ``resume`` is ``auto`` or a checkpoint path.
    ``take_over``: resume even into a run folder that holds another run's records (resume.py).
    ``on_evaluation(trainer, record)`` hears each evaluation (a search's trial reports to its pruner)."""
    cfg, checkpoint = prepare_run(config_path, overrides, resume, default_name, take_over)
    if checkpoint is not None and init_from:
        raise UserError("--resume and --init-from exclude each other: resume continues a run, init-from starts one")
    with run_context(cfg, checkpoint.fast_path if checkpoint else None) as runtime, \
            kernel_errors_explained(runtime.device):
        if runtime.dist.main:
            print(runtime.fast_path.sentence(), flush=True)
        parts = build_run(cfg, runtime, checkpoint, init_from)
        trainer = Trainer(cfg, runtime, parts, checkpoint=checkpoint)  # refuses a state that does not fit
        with run_folder(cfg, runtime, checkpoint) as tracker, trainer.signals.caught():
            trainer.tracker = tracker
            if on_evaluation is not None:
                trainer.on_evaluation.append(lambda record: on_evaluation(trainer, record))
            return trainer.fit()
