"""Tracking: metrics.jsonl survives kills, W&B never stops a run and needs no login."""

from __future__ import annotations

import json

import pytest

from helpers.core.config import defaults
from helpers.core.io import read_metrics
from helpers.train.tracking import Tracker, offline_runs, offline_summary


def test_wandb_online_without_login_falls_back_to_offline(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))  # no stored login either
    cfg = defaults()
    cfg["tracking"]["wandb"]["mode"] = "online"
    with pytest.warns(UserWarning, match="logging offline instead"):
        tracker = Tracker(tmp_path, cfg, name="run")
    tracker.log({"epoch": 1, "step": 5, "val_eer": 0.25, "train_loss": 3.0})
    tracker.summarise(EER=0.25)
    tracker.finish()
    (run_file,) = offline_runs(tmp_path)
    assert offline_summary(run_file)["EER"] == 0.25
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"epoch": 1, "step": 5, "val_eer": 0.25, "train_loss": 3.0}]


def test_metrics_reader_ignores_a_half_written_line_and_truncation_drops_redone_work(tmp_path):
    cfg = defaults()
    cfg["tracking"]["wandb"]["mode"] = "disabled"
    tracker = Tracker(tmp_path, cfg)
    for step in (10, 20, 30):
        tracker.log({"step": step, "val_eer": float("nan")})
    with open(tmp_path / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 40, "val')  # a kill in the middle of a write
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [10, 20, 30]
    assert read_metrics(tmp_path / "metrics.jsonl")[0]["val_eer"] is None  # NaN is written as null
    tracker.truncate(20)
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [10, 20]
