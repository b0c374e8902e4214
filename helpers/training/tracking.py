"""Where a run's numbers go: ``metrics.jsonl`` in the run folder, and Weights & Biases when it works.

W&B never stops training: no network, no login or any W&B failure gives
one warning and the run carries on offline or without it. The val EER is
logged under the key ``EER``, the key the course's hand-in tooling ranks runs by,
and the course term's leaderboard metric under the key the term names (Fall
2026: ``score``, the combined score of dev top-1 and val EER).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from helpers.core.config import Config
from helpers.core.io import append_text, atomic_write_text
from helpers.core.records import EvalMetrics, EpochStats, RunRecord, field_keys, jsonable, read_records, record_lines
from helpers.core.terms import get_term

METRICS_FILE = "metrics.jsonl"  # one line per evaluation (and per span of training), in the run folder
REPLACED_FILE = "metrics.replaced.jsonl"  # another run's lines, set aside by a resume told to take its folder over


def run_records(run_dir: str | Path) -> list[RunRecord]:
    """The records of the run in ``run_dir`` (empty when it holds no ``metrics.jsonl``)."""
    return read_records(Path(run_dir) / METRICS_FILE)


class Tracker:
    """Appends one JSON record per evaluation to ``metrics.jsonl`` and mirrors it to W&B."""

    def __init__(self, run_dir: Path, cfg: Config, run_id: str | None = None, name: str | None = None):
        self.path = run_dir / METRICS_FILE
        self.run = None
        self.run_id = run_id
        self.leaderboard = get_term(cfg.course.term).leaderboard
        mode = cfg.tracking.wandb.mode
        if mode != "disabled":
            self._start_wandb(run_dir, cfg, mode, name)

    def _start_wandb(self, run_dir: Path, cfg: Config, mode: str, name: str | None) -> None:
        settings = cfg.tracking.wandb
        try:
            import wandb

            os.environ.setdefault("WANDB_SILENT", "true")
            self.run = wandb.init(project=settings.project, entity=settings.entity, group=settings.group, name=name,
                                  id=self.run_id,
                                  resume="allow", mode=mode, dir=str(run_dir), config=cfg.as_dict(),
                                  settings=wandb.Settings(console="off", init_timeout=60))
        except Exception as error:  # noqa: BLE001 - any W&B failure must leave training running
            if mode == "online":
                warnings.warn(f"W&B online failed ({error}); logging offline instead", stacklevel=2)
                self._start_wandb(run_dir, cfg, "offline", name)
                return
            warnings.warn(f"W&B {mode} failed ({error}); continuing without W&B", stacklevel=2)
            self.run = None
            return
        self.run_id = self.run.id

    def truncate(self, keep_until_step: int, run_id: str | None = None) -> None:
        """Drop records logged after ``keep_until_step`` optimiser steps (work a resume will redo). Lines of
        another run than ``run_id`` (left by a resume told to take the folder over) move to the end of
        ``metrics.replaced.jsonl`` first; lines without a run id count as this run's."""
        lines = record_lines(self.path)
        others = [line for line in lines if line.get("run_id") not in (None, run_id)]
        if others:
            append_text(self.path.with_name(REPLACED_FILE), "".join(json.dumps(line) + "\n" for line in others))
        kept = [line for line in lines if line.get("run_id") in (None, run_id)
                and (RunRecord.from_line(line).step or 0) <= keep_until_step]
        atomic_write_text(self.path, "".join(json.dumps(line) + "\n" for line in kept))  # the lines as written

    def log(self, record: RunRecord | dict) -> None:
        """Append ``record`` (a :class:`RunRecord`, or a line's dict as the Trainer builds it) and send its
        numbers to W&B, with the course's keys."""
        line = record.as_line() if isinstance(record, RunRecord) else jsonable(record)
        append_text(self.path, json.dumps(line) + "\n")
        if self.run is not None:
            # read back from the line: a number that was not finite is None there, as in the file
            read = RunRecord.from_line(line)
            wandb_record = {k: v for k, v in line.items() if v is not None and not isinstance(v, (dict, str))}
            wandb_record.update(self._course_keys(read.metrics().val_eer, read.metrics().dev_top1))
            self._safely(lambda: self.run.log(wandb_record, step=read.step, commit=True))

    def _course_keys(self, eer: float | None, top1: float | None) -> dict:
        """The keys the course's tooling reads: ``EER``, and the term's leaderboard metric under its own key."""
        keys = {"EER": eer, self.leaderboard.wandb_key: self.leaderboard.value(eer, top1)}
        return {key: value for key, value in keys.items() if value is not None}

    def summarise(self, chosen) -> None:
        """Put the chosen evaluation (what best.pt holds; None before any) into the W&B run's summary."""
        if self.run is None or chosen is None:
            return
        values = {**self._course_keys(chosen.eer, chosen.top1), "best_epoch": chosen.epoch}
        self._safely(lambda: self.run.summary.update(jsonable(values)))

    def finish(self) -> None:
        if self.run is not None:
            self._safely(self.run.finish)
            self.run = None
            self._safely(_close_wandb_files)

    def _safely(self, action) -> None:
        try:
            action()
        except Exception as error:  # noqa: BLE001 - W&B trouble must not end a run
            warnings.warn(f"W&B failed ({error}); continuing without it", stacklevel=3)
            self.run = None


def offline_runs(run_dir: str | Path) -> list[Path]:
    """The offline W&B run folders under a run folder, oldest first (``wandb sync`` uploads each)."""
    return sorted(path for path in Path(run_dir).glob("wandb/offline-run-*") if path.is_dir())


def run_summary(run_dir: str | Path) -> dict:
    """A run's headline numbers from its ``metrics.jsonl``: best and final val EER (of the trained weights, and
    of their moving average with ``train.ema``), AUC, img/s, epochs, minutes."""
    records = run_records(run_dir)
    evaluated = [r for r in records if r.metrics().val_eer is not None]
    speeds = [r.trained.images_per_s for r in records if r.trained is not None and r.trained.images_per_s is not None]
    raw, averaged, stats = field_keys(EvalMetrics), field_keys(EvalMetrics, "ema"), field_keys(EpochStats)
    if not evaluated:
        return {f"best_{raw.val_eer}": None, f"final_{raw.val_eer}": None, raw.val_auc: None, stats.images_per_s: None,
                "epochs": None, "minutes": None}
    best = min(evaluated, key=lambda r: r.metrics().val_eer)
    ema_eers = [r.metrics("ema").val_eer for r in evaluated if r.metrics("ema").val_eer is not None]  # train.ema
    scores = [r.metrics().val_score for r in evaluated if r.metrics().val_score is not None]
    return {
        **_best_and_final(raw.val_eer, [r.metrics().val_eer for r in evaluated], min),
        **(_best_and_final(averaged.val_eer, ema_eers, min) if ema_eers else {}),
        **(_best_and_final(raw.val_score, scores, max) if scores else {}),
        raw.val_auc: best.metrics().val_auc,
        stats.images_per_s: sum(speeds) / len(speeds) if speeds else None,
        "epochs": records[-1].epoch,
        "minutes": (records[-1].elapsed_s or 0) / 60,
    }


def _best_and_final(key: str, values: list[float], best) -> dict:
    """``best_KEY`` (by ``best``: min or max) and ``final_KEY`` (the latest) of a run's ``values``."""
    return {f"best_{key}": best(values), f"final_{key}": values[-1]}


def _close_wandb_files() -> None:
    """Wait until W&B's service has written and closed the finished run's files: ``run.finish()`` returns before
    its ``.wandb`` log is flushed, and a hand-in scanned, or a Colab VM lost, right after training must find the
    files whole. The service is shut only when no other run of this process still logs; it restarts on demand."""
    import wandb

    if wandb.run is None:
        wandb.teardown()
