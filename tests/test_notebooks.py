"""The notebooks: committed clean, parameterised for papermill, and swept over a grid.

They are also executed top to bottom by ``pytest --nbval-lax`` in ``make test``.
"""

from __future__ import annotations

import ast
import json

import nbformat
import pandas as pd
import papermill
import pytest
from conftest import ROOT, call_cli

from helpers.tools.sweep import combination_name, parse_assignment

NOTEBOOKS = sorted(ROOT.glob("*.ipynb"))


def test_the_two_course_notebooks_exist():
    assert [p.name for p in NOTEBOOKS] == ["HW2P2_Checkpoint_Notebook.ipynb", "HW2P2_Starter_Notebook.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, cell.source[:60]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_have_one_papermill_parameters_cell(path):
    notebook = nbformat.read(path, as_version=4)
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert "data_source" in tagged[0].source and "config_file" in tagged[0].source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_papermill_help_lists_every_parameter_with_type_default_and_help(path):
    notebook = nbformat.read(path, as_version=4)
    (cell,) = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    body = ast.parse(cell.source).body
    assert not [node for node in body if isinstance(node, ast.Assign)], "every parameter needs a type annotation"
    names = [node.target.id for node in body if isinstance(node, ast.AnnAssign)]
    inferred = papermill.inspect_notebook(str(path))
    assert list(inferred) == names  # none lost to a comment papermill cannot parse
    for name, parameter in inferred.items():
        assert parameter["inferred_type_name"] != "None" and parameter["default"] and parameter["help"], name
    assert {"project_source", "drive_folder"} <= set(names)
    if path.name == "HW2P2_Starter_Notebook.ipynb":
        assert {"max_minutes", "kaggle_competition", "max_train_images", "overrides"} <= set(names)


def test_starter_sections_come_in_the_course_order():
    notebook = nbformat.read(ROOT / "HW2P2_Starter_Notebook.ipynb", as_version=4)
    headings = [c.source.splitlines()[0] for c in notebook.cells if c.cell_type == "markdown"
                and c.source.startswith("## ")]
    assert [h.split(".")[0] for h in headings] == [f"## {i}" for i in range(9)]


def test_grid_parsing():
    assert parse_assignment("lr=0.1,0.01") == ("lr", [0.1, 0.01])
    assert parse_assignment("tta=true") == ("tta", [True])
    assert combination_name({"lr": 0.1, "loss_m": 0.35}) == "lr=0.1_loss_m=0.35"


def test_two_point_sweep_tabulates_both_runs(demo_root, tmp_path, capsys):
    out = tmp_path / "sweep"
    overrides = json.dumps(["model.depth=18", "model.width=0.125", "data.image_size=32", "train.batch_size=8",
                            "data.num_workers=0"])
    args = ["sweep", "--notebook", ROOT / "HW2P2_Starter_Notebook.ipynb", "--grid", "lr=0.01,0.002",
            "--param", f"data_root={demo_root}", "--param", "epochs=1", "--param", "wandb_mode=disabled",
            "--param", "tta=false", "--param", f"overrides={overrides}", "--out", out]
    code, stdout, err = call_cli(capsys, *args)
    assert code == 0, err
    table = pd.read_csv(out / "results.csv")
    assert list(table["run"]) == ["lr=0.01", "lr=0.002"]
    assert table["best_val_eer"].between(0, 1).all() and (table["seconds"] > 0).all()
    for run in table["run"]:
        assert (out / f"{run}.ipynb").is_file()
        assert {"best.pt", "submission.csv", "metrics.jsonl"} <= {p.name for p in (out / run).iterdir()}
        assert (out / run / "plots" / "roc.png").is_file()
    assert "| run |" in (out / "results.md").read_text() and (out / "eer.png").is_file()
    # A second call finds both runs finished and reruns nothing.
    before = (out / "lr=0.01.ipynb").stat().st_mtime
    assert call_cli(capsys, *args)[0] == 0
    assert (out / "lr=0.01.ipynb").stat().st_mtime == before
