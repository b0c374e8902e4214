"""The hand-in scan: keys typed into notebooks are found (cell, kind, never the key); ordinary text is not."""

from __future__ import annotations

import shutil
import zipfile

import nbformat
import pytest
from conftest import call_cli

from helpers.handin.key_scan import scan_file, scan_text

LEGACY_WANDB = "0123456789abcdef0123456789abcdef01234567"  # 40 hex, the old W&B key
NEW_WANDB = "wandb_v1_" + "A1b2C3d4E5f6G7h8" * 4 + "Z9y8x7w6v5u4t"  # 86 characters, the 2026 format
KAGGLE_KEY = "0123456789abcdef0123456789abcdef"  # 32 hex, kaggle.json's key
KGAT = "KGAT_" + "89abcdef01234567" * 2  # Kaggle's single API token

assert len(NEW_WANDB) == 86

LEAKS = [
    (f'wandb.login(key="{LEGACY_WANDB}")', "wandb.login"),
    (f"wandb.login('{NEW_WANDB}')", "wandb.login"),
    (f"wandb.login(key = '{NEW_WANDB}', relogin=True)", "wandb.login"),
    (f"!wandb login --relogin {LEGACY_WANDB}", "wandb login"),
    (f'os.environ["WANDB_API_KEY"] = "{LEGACY_WANDB}"', "WANDB_API_KEY"),
    (f"%env WANDB_API_KEY={NEW_WANDB}", "WANDB_API_KEY"),
    (f"export WANDB_API_KEY={LEGACY_WANDB}", "WANDB_API_KEY"),
    (f'os.environ["KAGGLE_KEY"] = "{KAGGLE_KEY}"', "KAGGLE_KEY"),
    (f'os.environ.setdefault("KAGGLE_KEY", "{KAGGLE_KEY}")', "KAGGLE_KEY"),
    (f"%env KAGGLE_API_TOKEN {KGAT}", "KAGGLE_API_TOKEN"),
    (f'token = "{KGAT}"', "KGAT_"),
    (f"print({NEW_WANDB!r})", "wandb_v1_"),
    ('{"username": "student", "key": "' + KAGGLE_KEY + '"}', "kaggle.json"),
    (f"machine api.wandb.ai login user password {LEGACY_WANDB}", ".netrc"),
    (f"machine api.wandb.ai\n  login user\n  password {NEW_WANDB}", ".netrc"),
]

ORDINARY = [
    f"commit {LEGACY_WANDB}",  # a git commit id is 40 hex, like an old W&B key
    "sha256 of best.pt: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    f"checkpoint md5 {KAGGLE_KEY}",
    "wandb: Syncing run 3k9x2a7b; run-20260301_101500-3k9x2a7b",
    'WANDB_API_KEY = userdata.get("WANDB_API_KEY")',
    'wandb.login(key=os.environ["WANDB_API_KEY"])',
    "Put KAGGLE_API_TOKEN (your KGAT_... token) and WANDB_API_KEY (wandb_v1_...) in Colab Secrets.",
    'huggingface_hub.login("hf_abcdefghijklmnopqrstuvwxyz012345")',
    '{"id": "3k9x2a7b", "key": "val_eer"}',
]


@pytest.mark.parametrize("text,kind", LEAKS, ids=[kind + str(i) for i, (_, kind) in enumerate(LEAKS)])
def test_each_kind_of_key_is_found(text, kind):
    found = scan_text(text)
    assert found and kind in found[0][1]


@pytest.mark.parametrize("text", ORDINARY)
def test_no_false_alarm_on_hashes_commit_ids_and_run_ids(text):
    assert scan_text(text) == []


def _notebook(*cells) -> bytes:
    """A notebook whose code cells hold ``(source, outputs)``."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_markdown_cell("# HW2P2")]
    for source, outputs in cells:
        cell = nbformat.v4.new_code_cell(source)
        cell.outputs = outputs
        notebook.cells.append(cell)
    return nbformat.writes(notebook).encode()


def test_a_notebook_is_read_cell_by_cell_sources_and_outputs():
    stream = nbformat.v4.new_output("stream", name="stdout", text=f"token is {KGAT}\n")
    error = nbformat.v4.new_output("error", ename="ValueError", evalue="API key must be 40 characters long",
                                   traceback=[f"\x1b[0;31mwandb.login(key=\x1b[0m\x1b[33m'{NEW_WANDB}'\x1b[0m)"])
    shown = nbformat.v4.new_output("execute_result", data={"text/plain": f"'KAGGLE_KEY={KAGGLE_KEY}'"})
    data = _notebook(("import wandb\n", []), (f'wandb.login(key="{LEGACY_WANDB}")', []),
                     ("print(token)", [stream, error]), ("x", [shown]))
    assert b'\\"' in data  # what defeated the old scan: the cell text is JSON-escaped in the file
    found = {(f.where, f.kind) for f in scan_file("HW2P2_Starter_Notebook.ipynb", data)}
    assert found == {("cell 3", "a W&B API key (wandb.login)"),
                     ("cell 4, output", "a Kaggle API token (KGAT_)"),
                     ("cell 4, output", "a W&B API key (wandb.login)"),
                     ("cell 5, output", "a Kaggle API key (KAGGLE_KEY)")}


def test_an_ordinary_executed_notebook_passes():
    outputs = [nbformat.v4.new_output("stream", name="stdout", text="\n".join(ORDINARY)),
               nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo" + "A" * 500})]
    assert scan_file("nb.ipynb", _notebook(("\n".join(ORDINARY), outputs))) == []


def _bundle(run, tmp_path, notebook: bytes):
    (tmp_path / "ack.txt").write_text("ACKNOWLEDGED = True\n")
    (tmp_path / "README.txt").write_text("notes\n")
    (tmp_path / "HW2P2_Starter_Notebook.ipynb").write_bytes(notebook)
    return ["bundle", "--term", "f25", "--run", run, "--notebook", tmp_path / "HW2P2_Starter_Notebook.ipynb",
            "--out", tmp_path / "hand.zip", "--acknowledgement", tmp_path / "ack.txt",
            "--readme", tmp_path / "README.txt"]


@pytest.mark.parametrize("cell,kind", [
    (f'import wandb\nwandb.login(key="{LEGACY_WANDB}")', "W&B API key (wandb.login)"),
    (f'import wandb\nwandb.login(key="{NEW_WANDB}")', "W&B API key (wandb.login)"),
    (f'import os\nos.environ["KAGGLE_API_TOKEN"] = "{KGAT}"', "Kaggle API token"),
], ids=["legacy-wandb", "wandb_v1", "KGAT"])
def test_bundle_refuses_a_notebook_with_a_typed_key_and_builds_without_it(trained_run, tmp_path, capsys, cell,
                                                                          kind):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    args = _bundle(run, tmp_path, _notebook(("import helpers", []), (cell, [])))
    code, out, err = call_cli(capsys, *args)
    assert code == 1 and not (tmp_path / "hand.zip").exists()
    assert "HW2P2_Starter_Notebook.ipynb: cell 3 holds a " + kind in err and "Traceback" not in err
    for secret in (LEGACY_WANDB, NEW_WANDB, KGAT):
        assert secret not in err and secret[-12:] not in err
    clean = cell.splitlines()[0] + '\n# the key now lives in Colab Secrets: userdata.get("WANDB_API_KEY")'
    code, out, err = call_cli(capsys, *_bundle(run, tmp_path, _notebook(("import helpers", []), (clean, []))))
    assert code == 0, err
    assert "HW2P2_Starter_Notebook.ipynb" in zipfile.ZipFile(tmp_path / "hand.zip").namelist()
