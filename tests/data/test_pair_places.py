"""Pair files at the data root (the Fall 2026 notes) or under cls_data/ (an earlier description): found in either
place, and the commands say where they found them, or where they looked."""

from __future__ import annotations

import json
import shutil

from conftest import TINY, call_cli

from helpers.data.layout import open_data


def _moved(demo_root, tmp_path, into: str | None):
    """A copy of the demo root with both pair files moved under ``into`` (None: deleted)."""
    root = tmp_path / "root"
    shutil.copytree(demo_root, root)
    for name in ("val_pairs.txt", "test_pairs.txt"):
        if into is None:
            (root / name).unlink()
        else:
            (root / name).rename(root / into / name)
    return root


def _train(capsys, root, tmp_path):
    settings = TINY + [f"data.root={root}", f"run.out_dir={tmp_path / 'runs'}", "run.name=r", "train.epochs=1",
                       "train.eval_bootstrap=0"]
    return call_cli(capsys, "train", *(arg for setting in settings for arg in ("--set", setting)))


def test_pairs_under_cls_data_train_with_their_val_pairs_and_say_where(demo_root, tmp_path, capsys):
    root = _moved(demo_root, tmp_path, "cls_data")
    data = open_data(root)
    assert data.pair_files == {"val": root / "cls_data" / "val_pairs.txt", "test": root / "cls_data" / "test_pairs.txt"}
    assert len(data.val_pairs) == len(open_data(demo_root).val_pairs) > 0
    code, out, err = _train(capsys, root, tmp_path)
    assert code == 0, err
    assert f"val pairs: {len(data.val_pairs)} from {root / 'cls_data' / 'val_pairs.txt'}" in out
    records = [json.loads(line) for line in (tmp_path / "runs" / "r" / "metrics.jsonl").read_text().splitlines()]
    assert all(record.get("val_eer") is not None for record in records)  # every evaluation scored the val pairs
    code, out, _ = call_cli(capsys, "check-data", root)
    assert code == 0 and f"from {root / 'cls_data' / 'val_pairs.txt'}" in out
    assert f"from {root / 'cls_data' / 'test_pairs.txt'}" in out


def test_without_pair_files_check_data_and_train_say_where_they_looked(demo_root, tmp_path, capsys):
    root = _moved(demo_root, tmp_path, None)
    looked = f"none: no {root / 'val_pairs.txt'} or {root / 'cls_data' / 'val_pairs.txt'}"
    code, out, _ = call_cli(capsys, "check-data", root)
    assert f"val pairs: {looked}" in out and f"{root / 'cls_data' / 'test_pairs.txt'}" in out
    code, out, err = _train(capsys, root, tmp_path)
    assert code == 0, err
    assert f"val pairs: {looked}" in out


def test_a_bad_line_is_named_in_the_file_where_it_was_found(demo_root, tmp_path, capsys):
    root = _moved(demo_root, tmp_path, "cls_data")
    with (root / "cls_data" / "val_pairs.txt").open("a") as handle:
        handle.write("only_one_field\n")
    code, out, _ = call_cli(capsys, "check-data", root)
    assert code == 1 and "cls_data/val_pairs.txt:" in out and "expected 'imgA imgB label'" in out
