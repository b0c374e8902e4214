"""The notebooks' install cell, kept once: here, and written from here into each notebook.

A notebook opened alone from a link (Colab, Kaggle) has no checkout beside it, so the cell's text must be inside
each notebook; this file is its one source. After changing ``INSTALL_CELL``, run

    python tools/install_cell.py          # rewrites the cell tagged "install" in both notebooks
    python tools/install_cell.py --check  # exit 1 when a notebook's cell differs (tests/test_notebooks.py does this)
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ("HW2P2_Starter_Notebook.ipynb", "HW2P2_Checkpoint_Notebook.ipynb")
TAG = "install"

INSTALL_CELL = '''\
import importlib.util
import subprocess
import sys

# A fresh Colab or Kaggle VM has no project: install it from project_source, once (a rerun skips this).
if importlib.util.find_spec("helpers") is None:
    if not project_source:
        raise SystemExit("The helpers package is not installed here: set project_source (the parameters cell) "
                         "to the project's git URL, a local clone or a wheel, and run again.")
    plain_url = "://" in project_source and not project_source.startswith("git+")
    source = "git+" + project_source if plain_url and not project_source.endswith((".whl", ".zip")) else project_source
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", source], check=True)
    importlib.invalidate_caches()

import helpers

# After the install: in a fresh environment matplotlib arrives with the project.
%matplotlib inline

runs = helpers.start_session(drive_folder, out_dir)
if selftest:  # bf16/fp16, channels-last, fused optimiser, decoding, DDP, checkpoints: what works here, and what training falls back to
    helpers.quick_selftest(config_file, [f"train.device={device}"])'''


def install_cell_of(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The one code cell tagged ``install``; a notebook with none or several is refused by name."""
    cells = [cell for cell in notebook.cells if cell.cell_type == "code" and TAG in cell.metadata.get("tags", [])]
    if len(cells) != 1:
        raise SystemExit(f"{notebook.metadata.get('path', 'the notebook')} has {len(cells)} code cells tagged "
                         f"'{TAG}', not one")
    return cells[0]


def drifted(path: Path) -> bool:
    """Whether the notebook at ``path`` holds an install cell other than :data:`INSTALL_CELL`."""
    return install_cell_of(nbformat.read(path, as_version=4)).source != INSTALL_CELL


def write_install_cell(path: Path) -> bool:
    """Put :data:`INSTALL_CELL` into the notebook at ``path``, leaving every other cell as it is; returns whether
    the file changed."""
    notebook = nbformat.read(path, as_version=4)
    cell = install_cell_of(notebook)
    if cell.source == INSTALL_CELL:
        return False
    cell.source = INSTALL_CELL
    nbformat.write(notebook, path)
    return True


def main(argv: list[str]) -> int:
    paths = [ROOT / name for name in NOTEBOOKS]
    if argv not in ([], ["--check"]):
        print("usage: python tools/install_cell.py [--check]", file=sys.stderr)
        return 2
    if argv == ["--check"]:
        stale = [path.name for path in paths if drifted(path)]
        for name in stale:
            print(f"{name}: its install cell differs from tools/install_cell.py; run python tools/install_cell.py")
        return 1 if stale else 0
    for path in paths:
        print(f"{path.name}: {'rewritten' if write_install_cell(path) else 'already current'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
