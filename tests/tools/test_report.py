"""Comparing finished runs."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from conftest import ROOT, call_cli

from helpers.tools.report import eer_over_time, write_report

PNG = b"\x89PNG\r\n\x1a\n"


def test_report_compares_runs(trained_run, tmp_path, capsys):
    code, out, _ = call_cli(capsys, "report", trained_run, "--out", tmp_path / "report")
    assert code == 0 and "| trained |" in out
    table = pd.read_csv(tmp_path / "report" / "report.csv")
    assert table.loc[0, "best_val_eer"] <= table.loc[0, "final_val_eer"] and table.loc[0, "images_per_s"] > 0
    assert (tmp_path / "report" / "eer_over_time.png").read_bytes().startswith(PNG)
    assert call_cli(capsys, "report", tmp_path, "--out", tmp_path / "r2")[0] == 1


def _run(folder, lines):
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


def test_report_of_an_old_run_beside_one_with_the_ema_and_the_combined_score(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    shutil.copyfile(ROOT / "tests" / "fixtures" / "metrics_097e354.jsonl", old / "metrics.jsonl")
    new = _run(tmp_path / "new", [
        {"epoch": 0.0, "step": 0, "val_eer": 0.5, "val_auc": 0.5, "val_eer_ema": 0.5, "evaluated": True,
         "elapsed_s": 6.0},
        {"epoch": 1.0, "step": 9, "train_loss": 3.0, "images_per_s": 100.0, "val_eer": 0.2, "val_auc": 0.9,
         "dev_top1": 0.6, "val_score": 0.7, "val_eer_ema": 0.25, "evaluated": True, "elapsed_s": 120.0},
        {"epoch": 2.0, "step": 18, "train_loss": 2.0, "images_per_s": 300.0, "val_eer": 0.3, "val_auc": 0.8,
         "dev_top1": 0.9, "val_score": 0.8, "val_eer_ema": 0.15, "evaluated": True, "elapsed_s": 240.0}])
    table = write_report({"old": old, "new": new}, tmp_path / "report", extra={"new": {"recipe": "fast"}}, term="f25")
    assert (tmp_path / "report" / "report.md").read_text() == (
        "| run | best_val_eer | final_val_eer | val_auc | images_per_s | epochs | minutes | recipe | best_val_eer_ema "
        "| final_val_eer_ema | best_val_score | final_val_score |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        "| old | 0.4267 | 0.4267 | 0.6288 | 607 | 1.0000 | 0.0092 |  |  |  |  |  |\n"
        "| new | 0.2000 | 0.3000 | 0.9000 | 200 | 2.0000 | 4.0000 | fast | 0.1500 | 0.1500 | 0.8000 | 0.8000 |\n")
    assert list(pd.read_csv(tmp_path / "report" / "report.csv").columns) == list(table.columns)
    # Fall 2026 grades the combined score: it leads, the EER beside it
    newest = write_report({"old": old, "new": new}, tmp_path / "f26")
    assert list(newest.columns[:5]) == ["run", "best_val_score", "final_val_score", "best_val_eer", "final_val_eer"]
    assert newest.loc[1, "best_val_score"] == 0.8 and newest.loc[1, "best_val_eer"] == 0.2
    figure = eer_over_time({"old": old, "new": new})
    (old_line, new_line) = figure.axes[0].get_lines()
    assert list(old_line.get_xdata()) == pytest.approx([0.39 / 60, 0.55 / 60])
    assert list(old_line.get_ydata()) == pytest.approx([0.44, 0.4266666666666667])
    assert list(new_line.get_xdata()) == [0.1, 2.0, 4.0] and list(new_line.get_ydata()) == [0.5, 0.2, 0.3]
