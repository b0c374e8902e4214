"""Where a run's numbers go: ``metrics.jsonl`` in the run folder, and Weights & Biases when it works.

W&B never stops training: no network, no login or any W&B failure gives
one warning and the run carries on offline or without it. The val EER is
logged under the key ``EER``, the key the course's hand-in tooling ranks runs by,
and the course term's leaderboard metric under the key the term names (Fall
2026: ``score``, the combined score of dev top-1 and val EER).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

from helpers.core.config import Config
from helpers.core.io import append_text, atomic_write_text, read_metrics
from helpers.core.terms import get_term


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


class Tracker:
    """Appends one JSON record per evaluation to ``metrics.jsonl`` and mirrors it to W&B."""

    def __init__(self, run_dir: Path, cfg: Config, run_id: str | None = None, name: str | None = None):
        self.path = run_dir / "metrics.jsonl"
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
            self.run = wandb.init(project=settings.project, entity=settings.entity, name=name, id=self.run_id,
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

    def truncate(self, keep_until_step: int) -> None:
        """Drop records logged after ``keep_until_step`` optimiser steps (work a resume will redo)."""
        kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= keep_until_step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def log(self, record: dict) -> None:
        record = _jsonable(record)
        append_text(self.path, json.dumps(record) + "\n")
        if self.run is not None:
            wandb_record = {k: v for k, v in record.items() if v is not None and not isinstance(v, (dict, str))}
            wandb_record.update(self._course_keys(record.get("val_eer"), record.get("dev_top1")))
            self._safely(lambda: self.run.log(wandb_record, step=record["step"], commit=True))

    def _course_keys(self, eer: float | None, top1: float | None) -> dict:
        """The keys the course's tooling reads: ``EER``, and the term's leaderboard metric under its own key."""
        keys = {"EER": eer, self.leaderboard.wandb_key: self.leaderboard.value(eer, top1)}
        return {key: value for key, value in keys.items() if value is not None}

    def summarise(self, graded) -> None:
        """Put the graded evaluation (what best.pt holds; None before any) into the W&B run's summary."""
        if self.run is None or graded is None:
            return
        values = {**self._course_keys(graded.eer, graded.top1), "best_epoch": graded.epoch}
        self._safely(lambda: self.run.summary.update(_jsonable(values)))

    def finish(self) -> None:
        if self.run is not None:
            self._safely(self.run.finish)
            self.run = None

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
    records = read_metrics(Path(run_dir) / "metrics.jsonl")
    evaluated = [r for r in records if r.get("val_eer") is not None]
    trained = [r for r in records if r.get("images_per_s") is not None]
    if not evaluated:
        return {"best_val_eer": None, "final_val_eer": None, "val_auc": None, "images_per_s": None,
                "epochs": None, "minutes": None}
    best = min(evaluated, key=lambda r: r["val_eer"])
    averaged = [r["val_eer_ema"] for r in evaluated if r.get("val_eer_ema") is not None]  # runs with train.ema
    scored = [r["val_score"] for r in evaluated if r.get("val_score") is not None]
    return {
        "best_val_eer": best["val_eer"],
        "final_val_eer": evaluated[-1]["val_eer"],
        **({"best_val_eer_ema": min(averaged), "final_val_eer_ema": averaged[-1]} if averaged else {}),
        **({"best_val_score": max(scored), "final_val_score": scored[-1]} if scored else {}),
        "val_auc": best.get("val_auc"),
        "images_per_s": sum(r["images_per_s"] for r in trained) / len(trained) if trained else None,
        "epochs": records[-1]["epoch"],
        "minutes": records[-1].get("elapsed_s", 0) / 60,
    }
