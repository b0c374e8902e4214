"""The notebooks: committed clean, parameterised for papermill, in the course's order.

They are also executed top to bottom by ``pytest --nbval-lax`` in ``make test``.
"""

from __future__ import annotations

import ast
import importlib.util
import shutil
import subprocess
import sys

import nbformat
import papermill
import pytest
from conftest import ROOT

import helpers

NOTEBOOKS = sorted(ROOT.glob("*.ipynb"))


def _load_install_cell():
    """tools/install_cell.py, the one source of the notebooks' install cell (a script, not a package module)."""
    spec = importlib.util.spec_from_file_location("install_cell", ROOT / "tools" / "install_cell.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


install_cell = _load_install_cell()


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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_install_cell_is_the_one_kept_in_tools(path):
    assert path.name in install_cell.NOTEBOOKS
    assert not install_cell.drifted(path), "the install cell drifted: run python tools/install_cell.py"


def test_the_install_cell_tool_rewrites_a_drifted_cell_and_nothing_else(tmp_path, monkeypatch, capsys):
    for name in install_cell.NOTEBOOKS:
        shutil.copy(ROOT / name, tmp_path / name)
    monkeypatch.setattr(install_cell, "ROOT", tmp_path)
    drifted = tmp_path / "HW2P2_Checkpoint_Notebook.ipynb"
    notebook = nbformat.read(drifted, as_version=4)
    install_cell.install_cell_of(notebook).source += "\nprint('edited in one notebook only')"
    nbformat.write(notebook, drifted)
    assert install_cell.main(["--check"]) == 1
    assert "HW2P2_Checkpoint_Notebook.ipynb: its install cell differs" in capsys.readouterr().out
    assert install_cell.main([]) == 0 and install_cell.main(["--check"]) == 0
    for name in install_cell.NOTEBOOKS:  # back to the committed files, byte for byte
        assert (tmp_path / name).read_bytes() == (ROOT / name).read_bytes()


def reaches_past_the_root(source: str) -> list[str]:
    """What a cell's code takes from helpers other than its root's public names (helpers.__all__)."""
    code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
    wrong = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("helpers."):
            wrong.append(f"from {node.module} import ...")
        elif isinstance(node, ast.ImportFrom) and node.module == "helpers":
            wrong += [f"from helpers import {a.name}" for a in node.names if a.name not in helpers.__all__]
        elif isinstance(node, ast.Import):
            wrong += [f"import {a.name}" for a in node.names if a.name.startswith("helpers.")]
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "helpers"
              and node.attr not in helpers.__all__):
            wrong.append(f"helpers.{node.attr}")
    return wrong


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_use_only_the_public_names_at_the_root(path):
    cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    assert [(c.source.splitlines()[0], reaches_past_the_root(c.source)) for c in cells
            if reaches_past_the_root(c.source)] == []


def test_the_root_check_catches_every_way_past_the_root():
    cell = ("%matplotlib inline\nimport helpers\nimport helpers.eval.plots\nfrom helpers.handin import quiz\n"
            "from helpers import train, _API\nhelpers.eval.plots.margin_figure()\nhelpers.quiz.show()\n")
    assert reaches_past_the_root(cell) == ["import helpers.eval.plots", "from helpers.handin import ...",
                                           "from helpers import _API", "helpers.eval"]


def test_the_public_names_all_resolve_and_import_helpers_loads_nothing_else():
    for name in helpers.__all__:
        assert getattr(helpers, name) is not None, name
    assert helpers.submission_lines.__name__ == "describe" and helpers.quiz.__name__ == "helpers.handin.quiz"
    loaded = subprocess.run([sys.executable, "-c", "import sys, helpers; print(sorted(m for m in sys.modules "
                             "if m.startswith(('helpers', 'torch', 'numpy', 'pandas'))))"],
                            capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert loaded.strip() == "['helpers']"  # instant: every public name loads on first use


def test_starter_sections_come_in_the_course_order():
    notebook = nbformat.read(ROOT / "HW2P2_Starter_Notebook.ipynb", as_version=4)
    headings = [c.source.splitlines()[0] for c in notebook.cells if c.cell_type == "markdown"
                and c.source.startswith("## ")]
    assert [h.split(".")[0] for h in headings] == [f"## {i}" for i in range(9)]
