"""The leaderboard CSV: scores and binary labels, checked tables, and the Kaggle upload that explains itself."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from conftest import call_cli

from helpers.core import kaggle_command
from helpers.core.errors import UserError
from helpers.data.layout import answer_key_path, open_data
from helpers.handin import kaggle
from helpers.handin.submission import read_submission, score_submission, submission_frame


def test_submit_scores_writes_one_row_per_pair_and_scores_close_to_val(trained_run, demo_root, tmp_path, capsys):
    out = tmp_path / "submission.csv"
    code, stdout, err = call_cli(capsys, "submit", "--checkpoint", trained_run / "best.pt", "--out", out, "--json")
    assert code == 0, err
    frame = pd.read_csv(out)
    data = open_data(demo_root)
    assert list(frame.columns) == ["ID", "Label"] and len(frame) == len(data.test_pairs)
    assert frame["ID"].tolist() == list(range(len(frame)))
    test_eer = score_submission(out, answer_key_path(demo_root))
    assert json.loads(stdout)["test_eer"] == pytest.approx(test_eer)
    val_eer = torch.load(trained_run / "best.pt", weights_only=True)["best_eer"]
    assert abs(test_eer - val_eer) < 0.12, (test_eer, val_eer)
    assert call_cli(capsys, "score", out, answer_key_path(demo_root))[1].startswith("EER ")


def test_submit_binary_uses_the_val_threshold(trained_run, tmp_path, capsys):
    out = tmp_path / "binary.csv"
    code, stdout, _ = call_cli(capsys, "submit", "--checkpoint", trained_run / "best.pt", "--out", out,
                               "--format", "binary")
    frame = pd.read_csv(out)
    assert code == 0 and list(frame.columns) == ["id", "predicted"] and set(frame["predicted"]) <= {0, 1}
    threshold = torch.load(trained_run / "best.pt", weights_only=True)["val"]["val_threshold"]
    assert f"threshold {threshold:.4f}" in stdout


@pytest.mark.parametrize("values,expected,needle", [
    ([0.1, 0.2], 3, "has 2 rows but test_pairs.txt has 3"),
    ([0.1, float("nan")], 2, "NaN or infinite"),
    ([], None, "empty"),
])
def test_submission_refuses_broken_tables(values, expected, needle):
    with pytest.raises(UserError, match=needle):
        submission_frame(values, "scores", expected)


def test_binary_format_refuses_non_binary_values():
    with pytest.raises(UserError, match="only 0 and 1"):
        submission_frame([0, 1, 0.5], "binary")


def test_read_submission_checks_ids(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("ID,Label\n0,0.5\n2,0.1\n")
    with pytest.raises(UserError, match="must run 0..1"):
        read_submission(path)
    path.write_text("a,b\n0,1\n")
    with pytest.raises(UserError, match="expected ID,Label"):
        read_submission(path)


def test_kaggle_explains_why_not_and_never_shows_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert "not installed" in kaggle.submit(tmp_path / "s.csv", "comp", "msg")
    tool = tmp_path / "kaggle"
    tool.write_text("#!/bin/sh\necho \"$@\" > " + str(tmp_path / "args.txt") + "\n")
    tool.chmod(0o755)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "nowhere"))
    monkeypatch.delenv("KAGGLE_KEY", raising=False)
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    assert "no Kaggle credentials" in kaggle.submit(tmp_path / "s.csv", "comp", "msg")
    with pytest.raises(UserError, match="no Kaggle credentials"):
        kaggle_command.download("comp", tmp_path / "data")
    monkeypatch.setenv("KAGGLE_USERNAME", "me")
    monkeypatch.setenv("KAGGLE_KEY", "0123456789abcdef0123456789abcdef")
    said = kaggle.submit(tmp_path / "s.csv", "comp", "msg")
    assert said.startswith("submitted") and "0123456789abcdef" not in said
    assert (tmp_path / "args.txt").read_text().split()[:4] == ["competitions", "submit", "-c", "comp"]
