"""Tracking: metrics.jsonl survives kills, W&B never stops a run and needs no login."""

from __future__ import annotations

import json

import pytest

from helpers.core.config import load_config
from helpers.core.io import read_metrics
from helpers.eval.selection import Evaluation
from helpers.training.tracking import Tracker, offline_runs


def test_wandb_online_without_login_falls_back_to_offline(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))  # no stored login either
    cfg = load_config(overrides=["tracking.wandb.mode=online"])
    with pytest.warns(UserWarning, match="logging offline instead"):
        tracker = Tracker(tmp_path, cfg, name="run")
    tracker.log({"epoch": 1, "step": 5, "val_eer": 0.25, "train_loss": 3.0})
    tracker.summarise(Evaluation("raw", 1.0, 0.25, {}))
    tracker.finish()
    (folder,) = offline_runs(tmp_path)
    assert [p.stat().st_size > 0 for p in folder.glob("run-*.wandb")] == [True]
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"epoch": 1, "step": 5, "val_eer": 0.25, "train_loss": 3.0}]


def test_metrics_reader_ignores_a_half_written_line_and_truncation_drops_redone_work(tmp_path):
    cfg = load_config(overrides=["tracking.wandb.mode=disabled"])
    tracker = Tracker(tmp_path, cfg)
    for step in (10, 20, 30):
        tracker.log({"step": step, "val_eer": float("nan")})
    with open(tmp_path / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 40, "val')  # a kill in the middle of a write
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [10, 20, 30]
    assert read_metrics(tmp_path / "metrics.jsonl")[0]["val_eer"] is None  # NaN is written as null
    tracker.truncate(20)
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [10, 20]


class _RecordingRun:
    """Stands in for a wandb run: what the Tracker sends is what W&B would store."""

    def __init__(self):
        self.logged, self.summary = [], {}

    def log(self, record, step, commit):
        self.logged.append((record, step))

    def finish(self):
        pass


def test_wandb_gets_the_val_eer_under_the_course_key_and_only_numbers(tmp_path):
    cfg = load_config(overrides=["tracking.wandb.mode=disabled", "course.term=s26"])
    tracker = Tracker(tmp_path, cfg)
    tracker.run = run = _RecordingRun()
    tracker.log({"epoch": 1, "step": 5, "val_eer": 0.25, "weights": "ema", "val_eer_low": None, "dev_top1": 0.5})
    tracker.log({"epoch": 2, "step": 9, "train_loss": 2.0})
    tracker.summarise(Evaluation("raw", 1.0, 0.25, {}, top1=0.5))
    assert run.logged == [({"epoch": 1, "step": 5, "val_eer": 0.25, "dev_top1": 0.5, "EER": 0.25}, 5),
                          ({"epoch": 2, "step": 9, "train_loss": 2.0}, 9)]
    assert run.summary == {"EER": 0.25, "best_epoch": 1.0}


def test_fall_2026_runs_also_log_the_combined_score_under_the_terms_key(tmp_path):
    cfg = load_config(overrides=["tracking.wandb.mode=disabled", "course.term=f26"])
    tracker = Tracker(tmp_path, cfg)
    tracker.run = run = _RecordingRun()
    tracker.log({"epoch": 1, "step": 5, "val_eer": 0.2, "dev_top1": 0.6})
    tracker.log({"epoch": 2, "step": 9, "val_eer": 0.1})  # no dev top-1: no score, and no made-up one
    tracker.summarise(Evaluation("raw", 1.0, 0.2, {}, top1=0.6))
    assert run.logged[0][0]["score"] == pytest.approx(0.5 * 0.6 + 0.5 * 0.8)
    assert "score" not in run.logged[1][0] and run.logged[1][0]["EER"] == 0.1
    assert run.summary == {"EER": 0.2, "score": pytest.approx(0.7), "best_epoch": 1.0}
