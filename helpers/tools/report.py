"""Comparing finished runs: one row per run (the term's metric first, then EER, AUC, speed, epochs, time) and val
EER against time."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from helpers.core.io import atomic_write_text
from helpers.core.records import KEYS
from helpers.core.terms import get_term
from helpers.training.tracking import run_records, run_summary


def markdown_table(table: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table (numbers to 4 decimals, or whole when large)."""
    def cell(value) -> str:
        if isinstance(value, float):
            if value != value:  # NaN
                return ""
            return f"{value:.4f}" if abs(value) < 10 else f"{value:.0f}"
        return str(value)

    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "|".join("---" for _ in table.columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def eer_over_time(runs: dict[str, str | Path], path=None):
    """Val EER against elapsed minutes, one line per run."""
    from helpers.eval.plots import series_figure

    series = {}
    for name, run_dir in runs.items():
        evaluated = [r for r in run_records(run_dir) if r.metrics().val_eer is not None]
        series[name] = ([(r.elapsed_s or 0) / 60 for r in evaluated], [r.metrics().val_eer for r in evaluated])
    return series_figure(series, "minutes", "val EER", "Val EER against time", path=path)


def write_report(runs: dict[str, str | Path], out: str | Path, extra: dict[str, dict] | None = None,
                 term: str | None = None) -> pd.DataFrame:
    """``report.csv``, ``report.md`` and ``eer_over_time.png`` for the named runs, the columns of ``term``'s
    leaderboard metric first (the newest term's by default); returns the table."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame([{"run": name, **(extra or {}).get(name, {}), **run_summary(run_dir)}
                          for name, run_dir in runs.items()])
    if get_term(term).leaderboard.metric == "combined":
        lead = [f"best_{KEYS.val_score}", f"final_{KEYS.val_score}"]
        table = table.reindex(columns=["run", *lead, *(c for c in table.columns if c not in ["run", *lead])])
    atomic_write_text(out / "report.csv", table.to_csv(index=False))
    atomic_write_text(out / "report.md", markdown_table(table))
    eer_over_time(runs, out / "eer_over_time.png")
    return table
