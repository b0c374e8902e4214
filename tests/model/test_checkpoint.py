"""Checkpoint files: each distinct content serialised once, the rest linked to it (or copied where links fail)."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
import torch

from helpers.core import io as safe_io
from helpers.core.errors import UserError
from helpers.core.records import EvalMetrics
from helpers.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoints


def _checkpoint(value: float) -> Checkpoint:
    return Checkpoint(model={"w": torch.full((3,), value)}, classes=["a", "b"], config_values={})


def _files():
    ema = ("ema", EvalMetrics(val_eer=0.1))
    return {"best.pt": ema, "best_raw.pt": ("raw", EvalMetrics(val_eer=0.2)), "last.pt": ("ema", EvalMetrics(0.1))}


def test_a_file_holding_what_another_holds_is_a_link_to_it(tmp_path):
    save_checkpoints(_checkpoint(1.0), _files(), tmp_path)
    best, raw, last = (tmp_path / name for name in ("best.pt", "best_raw.pt", "last.pt"))
    assert os.stat(best).st_ino == os.stat(last).st_ino != os.stat(raw).st_ino
    assert Checkpoint.load(last).weights == "ema" and Checkpoint.load(raw).weights == "raw"
    assert load_checkpoint(raw)["val"] == {"val_eer": 0.2}  # the file stays a plain dict
    # the next last.pt replaces the name, not the file best.pt still is
    save_checkpoints(_checkpoint(0.0), {"last.pt": ("ema", EvalMetrics())}, tmp_path)
    assert Checkpoint.load(best).model["w"].sum() == 3 and Checkpoint.load(last).model["w"].sum() == 0


def test_a_checkpoint_holding_other_weights_is_a_new_object_without_their_val_metrics(tmp_path):
    saved = Checkpoint(model={"w": torch.ones(1)}, ema={"weights": {"w": torch.zeros(1)}, "updates": 3},
                       classes=["a"], config_values={}, weights="ema", val=EvalMetrics(val_eer=0.1, val_threshold=0.4))
    raw = saved.holding("raw")
    assert (raw.weights, raw.val, raw.model_weights()["w"].item()) == ("raw", EvalMetrics(), 1.0)
    assert (saved.weights, saved.val.val_threshold) == ("ema", 0.4)  # the loaded one is left as it was
    assert saved.holding("ema") is saved and saved.holding() is saved
    without_average = replace(raw, ema=None)
    with pytest.raises(UserError, match="holds no averaged weights"):
        without_average.holding("ema")


def test_the_weights_a_file_holds_keep_their_stored_key_graded():
    old = {"model": {"w": torch.ones(1)}, "classes": ["a"], "config": {}, "graded": "ema",
           "ema": {"weights": {"w": torch.zeros(1)}, "updates": 1}}
    opened = Checkpoint.from_dict(old)
    assert opened.weights == "ema" and opened.to_dict()["graded"] == "ema" and "weights" not in opened.to_dict()
    with pytest.raises(UserError, match="field 'graded' is wrong"):
        Checkpoint.from_dict({**old, "graded": 3}, "old.pt")


def test_where_the_disk_has_no_links_the_file_is_copied(tmp_path, monkeypatch):
    def no_links(source, target):
        raise OSError(95, "Operation not supported")

    monkeypatch.setattr(safe_io.os, "link", no_links)
    save_checkpoints(_checkpoint(1.0), _files(), tmp_path)
    best, last = tmp_path / "best.pt", tmp_path / "last.pt"
    assert os.stat(best).st_ino != os.stat(last).st_ino and best.read_bytes() == last.read_bytes()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
