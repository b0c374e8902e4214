"""A checkpoint written by an older version of the toolkit still resumes and evaluates."""

from __future__ import annotations

import json
import shutil

from conftest import ROOT, call_cli

from helpers.core.io import read_metrics
from helpers.model.checkpoint import load_checkpoint

OLD = ROOT / "tests" / "fixtures" / "checkpoint_f2c1196.pt"


def test_an_old_checkpoint_holds_a_plain_config_and_averaged_weights():
    state = load_checkpoint(OLD)
    assert isinstance(state["config"], dict) and state["epoch"] == 1 and state["ema"]


def test_an_old_checkpoint_evaluates(demo_root, capsys):
    for weights in ("raw", "ema"):
        code, out, err = call_cli(capsys, "evaluate", "--checkpoint", OLD, "--data-root", demo_root,
                                  "--weights", weights, "--json")
        assert code == 0, err
        assert 0.0 <= json.loads(out)["eer"] <= 1.0


def test_an_old_checkpoint_resumes_where_it_stopped(demo_root, tmp_path, capsys):
    checkpoint = tmp_path / "old.pt"
    shutil.copyfile(OLD, checkpoint)
    code, out, err = call_cli(capsys, "train", "--resume", checkpoint, "--set", f"data.root={demo_root}",
                              "--set", f"run.out_dir={tmp_path}", "--set", "run.name=resumed",
                              "--set", "train.epochs=2")
    assert code == 0, err
    assert "resuming" in out and "at epoch 1.00" in out
    records = read_metrics(tmp_path / "resumed" / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [2]  # one more epoch, from where the old run stopped
    resumed = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert resumed["epoch"] == 2 and resumed["config"]["model"]["width"] == 0.0625
