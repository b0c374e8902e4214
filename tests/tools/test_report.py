"""Comparing finished runs."""

from __future__ import annotations

import pandas as pd
from conftest import call_cli

PNG = b"\x89PNG\r\n\x1a\n"


def test_report_compares_runs(trained_run, tmp_path, capsys):
    code, out, _ = call_cli(capsys, "report", trained_run, "--out", tmp_path / "report")
    assert code == 0 and "| trained |" in out
    table = pd.read_csv(tmp_path / "report" / "report.csv")
    assert table.loc[0, "best_val_eer"] <= table.loc[0, "final_val_eer"] and table.loc[0, "images_per_s"] > 0
    assert (tmp_path / "report" / "eer_over_time.png").read_bytes().startswith(PNG)
    assert call_cli(capsys, "report", tmp_path, "--out", tmp_path / "r2")[0] == 1
