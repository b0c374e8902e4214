"""The hand-in scan: keys typed into notebooks are found (cell, kind, never the key); ordinary text is not."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import nbformat
import pytest
from conftest import ROOT, TINY, call_cli, run_cli

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
    # By value: a key given a name of its own first, then used through it.
    (f"api_key = '{LEGACY_WANDB}'\nwandb.login(key=api_key)", "40-hex"),
    (f"key = '{LEGACY_WANDB}'\nos.environ['WANDB_API_KEY'] = key", "40-hex"),
    (f"kaggle = dict(username='student', key='{KAGGLE_KEY}')", "32-hex"),
    (f"os.environ['KAGGLE_API_TOKEN'] = 'KGAT_' + '{KGAT[5:]}'", "Kaggle API token"),
    (f"token = ('KGAT_'\n         '{KGAT[5:]}')", "KGAT_"),
    # A key given as a config value, where it lands: the command, config.yaml, W&B's debug.log and .wandb file.
    (f"!python -m helpers train --set tracking.wandb.project={LEGACY_WANDB}", "40-hex"),
    (f"  wandb:\n    mode: offline  # offline | online\n    project: {LEGACY_WANDB}  # the W&B project", "40-hex"),
    (f"config: {{'tracking': {{'wandb': {{'mode': 'offline', 'project': '{LEGACY_WANDB}'}}}}}}", "40-hex"),
    (f'\x1a_{{"wandb":{{"mode":"offline","project":"{LEGACY_WANDB}","entity":null}}}}B', "40-hex"),
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
    # Hex values named as digests or ids, or inside longer values: W&B's git metadata, checksums, versions.
    f'{{"git": {{"remote": "https://github.com/me/hw2p2.git", "commit": "{LEGACY_WANDB}"}}}}',
    f"sha1 = '{LEGACY_WANDB}'",
    f"  checksum: {LEGACY_WANDB}  # of the init_from weights",
    f"md5 = '{KAGGLE_KEY}'",
    f"print('{KAGGLE_KEY}')",  # 32 hex with no key-like name nor username near: an md5 or a uuid
    f"wandb: Tracking run with wandb version 0.31.0+{LEGACY_WANDB}",
    f"pip install git+https://github.com/me/hw2p2.git@{LEGACY_WANDB}",
    f"INFO finishing run hw2p2-ablations/3k9x2a7b; HEAD is at {LEGACY_WANDB}",
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


def test_a_line_split_across_source_items_is_read_as_nbformat_joins_it():
    # nbformat joins a cell's source list with nothing: a line may be split anywhere, valid and invisible
    pieces = ["import wandb\n", f"api_key = '{LEGACY_WANDB[:20]}", f"{LEGACY_WANDB[20:]}'\n",
              "wandb.login(key=api_key)"]
    notebook = {"nbformat": 4, "nbformat_minor": 5, "metadata": {},
                "cells": [{"cell_type": "code", "id": "a1", "metadata": {}, "execution_count": None,
                           "outputs": [], "source": pieces}]}
    data = json.dumps(notebook).encode()
    assert nbformat.reads(data.decode(), as_version=4).cells[0].source.splitlines()[1] == f"api_key = '{LEGACY_WANDB}'"
    assert [(f.where, f.kind) for f in scan_file("nb.ipynb", data)] == [("cell 1", "a W&B API key (a 40-hex value)")]


def test_a_key_given_as_a_config_value_is_found_in_every_file_it_lands_in(demo_root, tmp_path):
    from helpers.handin.key_scan import folder_texts
    from helpers.training.engine import train

    run = train(None, [*TINY, f"data.root={demo_root}", f"run.out_dir={tmp_path}", "run.name=leaky", "train.epochs=1",
                       "tracking.wandb.mode=offline", f"tracking.wandb.project={LEGACY_WANDB}"]).run_dir
    flagged = {Path(name).relative_to(run).as_posix() for name, data in folder_texts(run) if scan_file(name, data)}
    offline = next((run / "wandb").glob("offline-run-*")).relative_to(run).as_posix()
    assert {"config.yaml", f"{offline}/logs/debug.log", f"{offline}/run-{offline.rsplit('-', 1)[1]}.wandb"} <= flagged


def test_a_clean_offline_wandb_run_started_in_a_git_checkout_passes(demo_root, tmp_path):
    from helpers.handin.key_scan import folder_texts

    # In a git checkout W&B records the commit (40 hex) in the .wandb file: it is not a key.
    result = run_cli("train", *[arg for item in [*TINY, f"data.root={demo_root}", f"run.out_dir={tmp_path}",
                                                 "run.name=clean", "train.epochs=1", "tracking.wandb.mode=offline"]
                                for arg in ("--set", item)], cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    texts = folder_texts(tmp_path / "clean")
    assert any(name.endswith(".wandb") for name, _ in texts)
    assert [(name, scan_file(name, data)) for name, data in texts if scan_file(name, data)] == []


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
