"""Checkpoints written by older versions of the toolkit still load, resume and evaluate.

``checkpoint_f2c1196.pt`` comes from the code just before the layers (a plain config dict, EMA weights);
``checkpoint_097e354.pt`` from the code before weight averaging and the checkpoint choice (no EMA weights, no
selection state: only the best val EER and its epoch). tests/fixtures/README.md says how each was made.
"""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import ROOT, call_cli

from helpers.core.io import read_metrics
from helpers.model.checkpoint import load_checkpoint

FIXTURES = ROOT / "tests" / "fixtures"
OLD = FIXTURES / "checkpoint_f2c1196.pt"  # before the layers: plain config dict, EMA weights
BEFORE_AVERAGING = FIXTURES / "checkpoint_097e354.pt"  # before EMA and train.select
OLD_CHECKPOINTS = {OLD: ("raw", "ema"), BEFORE_AVERAGING: ("raw",)}  # each file's weights


def test_an_old_checkpoint_holds_a_plain_config_and_averaged_weights():
    state = load_checkpoint(OLD)
    assert isinstance(state["config"], dict) and state["epoch"] == 1 and state["ema"]


def test_a_checkpoint_from_before_averaging_holds_no_selection_and_no_average():
    state = load_checkpoint(BEFORE_AVERAGING)
    assert isinstance(state["config"], dict) and state["epoch"] == 1
    assert "ema" not in state and "selection" not in state and "graded" not in state
    assert state["best_epoch"] == 1.0 and state["val"]["val_eer"] == state["best_eer"]


@pytest.mark.parametrize("checkpoint", OLD_CHECKPOINTS, ids=lambda path: path.stem)
def test_an_old_checkpoint_evaluates(checkpoint, demo_root, capsys):
    for weights in OLD_CHECKPOINTS[checkpoint]:
        code, out, err = call_cli(capsys, "evaluate", "--checkpoint", checkpoint, "--data-root", demo_root,
                                  "--weights", weights, "--json")
        assert code == 0, err
        assert 0.0 <= json.loads(out)["eer"] <= 1.0


def test_a_checkpoint_from_before_averaging_refuses_averaged_weights_in_one_sentence(demo_root, capsys):
    code, _, err = call_cli(capsys, "evaluate", "--checkpoint", BEFORE_AVERAGING, "--data-root", demo_root,
                            "--weights", "ema")
    assert code == 1 and "holds no averaged weights" in err and "Traceback" not in err


@pytest.mark.parametrize("checkpoint", OLD_CHECKPOINTS, ids=lambda path: path.stem)
def test_an_old_checkpoint_resumes_where_it_stopped(checkpoint, demo_root, tmp_path, capsys):
    copy = tmp_path / "old.pt"
    shutil.copyfile(checkpoint, copy)
    code, out, err = call_cli(capsys, "train", "--resume", copy, "--set", f"data.root={demo_root}",
                              "--set", f"run.out_dir={tmp_path}", "--set", "run.name=resumed",
                              "--set", "train.epochs=2")
    assert code == 0, err
    assert "resuming" in out and "at epoch 1.00" in out
    records = read_metrics(tmp_path / "resumed" / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [2]  # one more epoch, from where the old run stopped
    resumed = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert resumed["epoch"] == 2 and resumed["config"]["model"]["width"] == 0.0625
    weights = OLD_CHECKPOINTS[checkpoint]
    assert (resumed.get("ema") is not None) == ("ema" in weights)
    assert resumed["graded"] == weights[-1]  # train.select auto: the average where the old run kept one
    assert resumed["best_eer"] <= load_checkpoint(checkpoint)["best_eer"]  # the old run's best still counts
    code, out, err = call_cli(capsys, "evaluate", "--checkpoint", tmp_path / "resumed" / "best.pt",
                              "--data-root", demo_root, "--json")
    assert code == 0, err
    assert 0.0 <= json.loads(out)["eer"] <= 1.0
