"""Checkpoint files: each distinct content serialised once, the rest linked to it (or copied where links fail)."""

from __future__ import annotations

import os

import torch

from helpers.core import io as safe_io
from helpers.model.checkpoint import load_checkpoint, save_checkpoints


def _files():
    ema = {"graded": "ema", "val": {"val_eer": 0.1}}
    return {"best.pt": ema, "best_raw.pt": {"graded": "raw", "val": {"val_eer": 0.2}}, "last.pt": dict(ema)}


def test_a_file_holding_what_another_holds_is_a_link_to_it(tmp_path):
    save_checkpoints({"model": {"w": torch.ones(3)}}, _files(), tmp_path)
    best, raw, last = (tmp_path / name for name in ("best.pt", "best_raw.pt", "last.pt"))
    assert os.stat(best).st_ino == os.stat(last).st_ino != os.stat(raw).st_ino
    assert load_checkpoint(last)["graded"] == "ema" and load_checkpoint(raw)["graded"] == "raw"
    # the next last.pt replaces the name, not the file best.pt still is
    save_checkpoints({"model": {"w": torch.zeros(3)}}, {"last.pt": {"graded": "ema", "val": {}}}, tmp_path)
    assert load_checkpoint(best)["model"]["w"].sum() == 3 and load_checkpoint(last)["model"]["w"].sum() == 0


def test_where_the_disk_has_no_links_the_file_is_copied(tmp_path, monkeypatch):
    def no_links(source, target):
        raise OSError(95, "Operation not supported")

    monkeypatch.setattr(safe_io.os, "link", no_links)
    save_checkpoints({"model": {"w": torch.ones(3)}}, _files(), tmp_path)
    best, last = tmp_path / "best.pt", tmp_path / "last.pt"
    assert os.stat(best).st_ino != os.stat(last).st_ino and best.read_bytes() == last.read_bytes()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
