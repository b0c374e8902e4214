"""checkpoint_summary: what the checkpoint notebook says of a best.pt, read without knowing the file's keys."""

from __future__ import annotations

from pathlib import Path

import torch
from conftest import ROOT

import helpers
from helpers.model.checkpoint import save_checkpoint

OLD = ROOT / "tests" / "fixtures" / "checkpoint_f2c1196.pt"


def _file(tmp_path: Path, **values) -> Path:
    path = tmp_path / "best.pt"
    save_checkpoint({"model": {"w": torch.zeros(1)}, "classes": ["0"], "config": {}, **values}, path)
    return path


def test_a_scored_checkpoint_gives_its_eer_epoch_and_combined_score(tmp_path):
    path = _file(tmp_path, best_eer=0.125, best_epoch=3.0, val={"val_eer": 0.125, "val_score": 0.8125})
    summary = helpers.checkpoint_summary(path)
    assert (summary.val_eer, summary.epoch, summary.val_score) == (0.125, 3.0, 0.8125)
    # the newest term (Fall 2026) grades the combined score: it leads, the EER beside it
    assert summary.line() == f"{path}: score 0.8125 (val EER 0.1250) at epoch 3" and summary.value == 0.8125
    under_f25 = helpers.checkpoint_summary(path, term="f25")
    assert under_f25.line() == f"{path}: val EER 0.1250 (score 0.8125) at epoch 3" and under_f25.value == 0.125


def test_without_val_pairs_it_says_so_and_has_no_score(tmp_path):
    path = _file(tmp_path, best_eer=None, best_epoch=None, val={})
    summary = helpers.checkpoint_summary(path)
    assert summary.val_eer is None and summary.val_score is None
    assert summary.line() == f"{path}: no val EER (no val pairs were scored)"


def test_a_checkpoint_written_before_the_combined_score_reads_without_one():
    summary = helpers.checkpoint_summary(OLD)
    assert summary.val_eer == torch.load(OLD, weights_only=True)["best_eer"] and summary.val_score is None
    assert summary.line() == f"{OLD}: score n/a (val EER {summary.val_eer:.4f}) at epoch 0"
