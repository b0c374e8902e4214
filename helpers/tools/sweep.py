"""``sweep``: one papermill run of a notebook per combination of parameters, and a table of the results.

Each combination gets its own run folder and executed notebook under the
sweep folder. A combination whose run already finished is skipped; one that
stopped part-way is run again, and the notebook resumes its training from
``last.pt``. The results (parameters, best val EER, AUC, speed, time) go to
``results.csv``, ``results.md`` and ``eer.png``.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from pathlib import Path

import pandas as pd
import yaml

from helpers.core.errors import UserError
from helpers.core.io import atomic_write_text, write_failure
from helpers.tools.report import markdown_table
from helpers.training.tracking import run_summary

DONE = "sweep_result.json"


def parse_assignment(text: str) -> tuple[str, list]:
    """``lr=0.1,0.01`` to ``("lr", [0.1, 0.01])``, each value read as YAML (numbers, true/false, strings)."""
    name, sep, values = text.partition("=")
    if not sep or not name.strip() or not values.strip():
        raise UserError(f"expected NAME=VALUE[,VALUE...], got '{text}'")
    return name.strip(), [yaml.safe_load(value) for value in values.split(",")]


def parse_parameter(text: str) -> tuple[str, object]:
    """``epochs=2`` to ``("epochs", 2)``: the whole value read as YAML (so lists keep their commas)."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise UserError(f"expected NAME=VALUE, got '{text}'")
    try:
        return name.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        raise UserError(f"cannot read the value of {name.strip()}: '{value}'") from None


def combination_name(combination: dict) -> str:
    """A folder name for one combination, e.g. ``lr=0.1_loss_m=0.35``."""
    text = "_".join(f"{key}={value}" for key, value in combination.items())
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", text)


def run_sweep(notebook: str | Path, grid: dict[str, list], out: str | Path, fixed: dict | None = None,
              progress: bool = False) -> pd.DataFrame:
    """Run ``notebook`` once per combination of ``grid`` (plus ``fixed`` parameters) and tabulate the results."""
    import papermill

    notebook, out = Path(notebook), Path(out)
    if not notebook.is_file():
        raise UserError(f"notebook {notebook} does not exist")
    if not grid:
        raise UserError("give at least one --grid NAME=VALUES")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for values in itertools.product(*grid.values()):
        combination = dict(zip(grid, values))
        name = combination_name(combination)
        run_dir = out / name
        done = run_dir / DONE
        if not done.is_file():
            # drive_folder too: on Colab its default would send the runs to Drive, away from this table.
            parameters = {**(fixed or {}), **combination, "out_dir": str(out), "drive_folder": str(out),
                          "run_name": name}
            started = time.perf_counter()
            executed = out / f"{name}.ipynb"
            try:
                papermill.execute_notebook(str(notebook), str(executed), parameters=parameters,
                                           progress_bar=progress, cwd=str(notebook.parent.resolve()))
            except papermill.PapermillExecutionError as error:
                raise UserError(f"the run {name} failed in cell {error.exec_count}: {error.ename}: {error.evalue} "
                                f"(see {executed})") from None
            except OSError as error:  # papermill saving the executed notebook (an error inside a cell is above)
                raise write_failure(executed, error, "the finished runs' results are intact; free some space and "
                                    "run the sweep again to go on") from None
            record = {**combination, "seconds": time.perf_counter() - started}
            atomic_write_text(done, json.dumps(record))
        record = json.loads(done.read_text())
        rows.append({"run": name, **record, **run_summary(run_dir)})
    table = pd.DataFrame(rows)
    write_results(table, out)
    return table


def write_results(table: pd.DataFrame, out: Path) -> None:
    """results.csv, results.md (a Markdown table) and eer.png (best val EER per run)."""
    from helpers.eval.plots import save, series_figure

    atomic_write_text(out / "results.csv", table.to_csv(index=False))
    atomic_write_text(out / "results.md", markdown_table(table))
    scored = table.dropna(subset=["best_val_eer"])
    figure = series_figure({"best val EER": (list(range(len(scored))), list(scored["best_val_eer"]))},
                           "run", "best val EER", "Sweep: best val EER per run")
    figure.axes[0].set_xticks(range(len(scored)), list(scored["run"]), rotation=30, ha="right", fontsize=7)
    save(figure, out / "eer.png")
