"""Tracking: metrics.jsonl survives kills, W&B never stops a run and needs no login."""

from __future__ import annotations

import json
import shutil

import pytest

from helpers.core.config import load_config
from helpers.core.io import read_metrics
from helpers.core.records import RunRecord
from helpers.training.selection import Evaluation
from helpers.training.tracking import Tracker, offline_runs, run_summary


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


def _write_lines(path, lines):
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_run_summary_of_a_run_with_the_ema_and_the_combined_score(tmp_path):
    _write_lines(tmp_path / "metrics.jsonl", [
        {"epoch": 0.0, "step": 0, "val_eer": 0.5, "val_auc": 0.5, "val_eer_ema": 0.5, "evaluated": True,
         "elapsed_s": 1.0},
        {"epoch": 1.0, "step": 9, "train_loss": 3.0, "images_per_s": 100.0, "val_eer": 0.2, "val_auc": 0.9,
         "dev_top1": 0.6, "val_score": 0.7, "val_eer_ema": 0.25, "evaluated": True, "elapsed_s": 60.0},
        {"epoch": 2.0, "step": 18, "train_loss": 2.0, "images_per_s": 300.0, "val_eer": 0.3, "val_auc": 0.8,
         "dev_top1": 0.9, "val_score": 0.8, "val_eer_ema": 0.15, "evaluated": True, "elapsed_s": 120.0},
        {"epoch": 3.0, "step": 27, "train_loss": 1.0, "images_per_s": 200.0, "elapsed_s": 180.0},  # not evaluated
    ])
    summary = run_summary(tmp_path)
    assert summary == {"best_val_eer": 0.2, "final_val_eer": 0.3, "best_val_eer_ema": 0.15, "final_val_eer_ema": 0.15,
                       "best_val_score": 0.8, "final_val_score": 0.8, "val_auc": 0.9, "images_per_s": 200.0,
                       "epochs": 3.0, "minutes": 3.0}
    assert list(summary) == ["best_val_eer", "final_val_eer", "best_val_eer_ema", "final_val_eer_ema",
                             "best_val_score", "final_val_score", "val_auc", "images_per_s", "epochs", "minutes"]


def test_run_summary_of_an_old_run_and_of_a_run_without_evaluations(tmp_path):
    from conftest import ROOT

    shutil.copyfile(ROOT / "tests" / "fixtures" / "metrics_097e354.jsonl", tmp_path / "metrics.jsonl")
    assert run_summary(tmp_path) == pytest.approx({
        "best_val_eer": 0.4266666666666667, "final_val_eer": 0.4266666666666667, "val_auc": 0.6288444444444444,
        "images_per_s": 606.592743123193, "epochs": 1.0, "minutes": 0.55 / 60})
    assert run_summary(tmp_path / "nothing") == {"best_val_eer": None, "final_val_eer": None, "val_auc": None,
                                                 "images_per_s": None, "epochs": None, "minutes": None}


def test_a_run_record_is_logged_as_its_line_would_be(tmp_path):
    cfg = load_config(overrides=["tracking.wandb.mode=disabled", "course.term=f26"])
    line = {"epoch": 1.0, "step": 5, "train_loss": 2.0, "train_acc": 0.1, "grad_norm": 1.0, "images_per_s": 50.0,
            "data_wait": 0.1, "lr": 0.01, "nonfinite_steps": 0, "skipped_images": 0, "val_eer": 0.2,
            "val_tar_at_far": {"0.1": 0.5}, "dev_top1": 0.6, "val_score": 0.7, "val_eer_ema": 0.1,
            "evaluated": True, "elapsed_s": 3.0, "time": "2026-12-01T20:00:00"}
    sent = []
    for folder, record in (("dict", line), ("record", RunRecord.from_line(line))):
        (tmp_path / folder).mkdir()
        tracker = Tracker(tmp_path / folder, cfg)
        tracker.run = run = _RecordingRun()
        tracker.log(record)
        assert read_metrics(tmp_path / folder / "metrics.jsonl") == [line]
        sent.append(run.logged)
    assert sent[0] == sent[1]
    assert sent[0][0][1] == 5 and sent[0][0][0]["EER"] == 0.2 and sent[0][0][0]["score"] == pytest.approx(0.7)
    assert "val_tar_at_far" not in sent[0][0][0] and "time" not in sent[0][0][0]  # W&B gets numbers only


def test_truncation_keeps_the_lines_it_keeps_as_they_were_written(tmp_path):
    old = {"epoch": 0.0, "val_eer": 0.5, "note": "a key of some older version"}  # written before step existed
    _write_lines(tmp_path / "metrics.jsonl", [old, {"epoch": 1.0, "step": 10, "val_eer": 0.4},
                                              {"epoch": 2.0, "step": 20, "val_eer": 0.3}])
    Tracker(tmp_path, load_config(overrides=["tracking.wandb.mode=disabled"])).truncate(10)
    assert read_metrics(tmp_path / "metrics.jsonl") == [old, {"epoch": 1.0, "step": 10, "val_eer": 0.4}]
