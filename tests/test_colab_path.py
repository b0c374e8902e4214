"""The notebooks as a Colab user meets them, without Colab.

A fresh VM: a Python environment where ``import helpers`` fails but torch,
papermill and the rest import (a venv whose site-packages names this test
environment's in a plain ``.pth`` line: such a line adds the folder to the path
but runs none of the ``.pth`` files inside it, so the project's editable-install
hook stays out). Its kernel gets ``tests/fake_colab`` on its path, standing in
for ``google.colab``: ``drive.mount`` links ``MyDrive`` to a folder that outlives
the VM, ``userdata.get`` reads a JSON file. Each notebook is copied alone into
an empty working folder and run by papermill with ``project_source`` pointing at
a copy of the project; the first run installs it, into the venv, once for all the tests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import nbformat
import optuna
import pytest
import yaml
from conftest import ROOT, TINY

from helpers.core.io import read_metrics
from helpers.handin import quiz
from helpers.handin.key_scan import scan_file

FAKE_COLAB = ROOT / "tests" / "fake_colab"
SECRETS = {"KAGGLE_API_TOKEN": "KGAT_" + "5a4b3c2d1e0f9a8b" * 2,  # what a student keeps in Colab Secrets
           "WANDB_API_KEY": "wandb_v1_" + "Z1x2C3v4B5n6M7k8" * 4 + "J9h8G7f6D5s4A"}
_ANYWHERE = shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", ".pytest_cache", ".ipynb_checkpoints")
_AT_THE_TOP = {".venv", "runs", "data", "wandb", "build"}  # a user's data/ and runs/, not helpers/data/


def NOT_THE_PROJECT(folder: str, names: list[str]) -> set[str]:
    """What a clone of the project does not hold (for shutil.copytree)."""
    top = Path(folder).resolve() == ROOT
    return set(_ANYWHERE(folder, names)) | ({name for name in names if name in _AT_THE_TOP} if top else set())


@dataclass
class VM:
    python: Path
    env: dict
    clone: Path
    drive: Path  # the user's Google Drive: what survives a VM reset

    def run(self, notebook: str, work: Path, parameters: dict) -> tuple[subprocess.CompletedProcess, Path]:
        """Copy ``notebook`` alone into the empty folder ``work`` and run it there; returns the process and
        the executed notebook."""
        work.mkdir(parents=True)
        shutil.copy(ROOT / notebook, work / notebook)
        executed = work / f"executed_{notebook}"
        process = subprocess.run([str(self.python), "-m", "papermill", notebook, executed.name, "-k", "colab-vm",
                                  "-y", yaml.safe_dump(parameters), "--no-progress-bar"],
                                 cwd=work, env=self.env, capture_output=True, text=True, timeout=900)
        return process, executed

    def installed(self) -> Path:
        """Where the project is installed in the VM's environment (not the test environment's)."""
        found = subprocess.run([str(self.python), "-c", "import helpers; print(helpers.__file__)"], env=self.env,
                               capture_output=True, text=True, cwd=self.clone.parent)
        assert found.returncode == 0, found.stderr
        return Path(found.stdout.strip()).parent


def _fresh_environment(base: Path) -> Path:
    """A venv that sees this test environment's packages but not the project; returns its python."""
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "test_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def _vm_env(base: Path, python: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    kernels = base / "jupyter" / "kernels" / "colab-vm"
    kernels.mkdir(parents=True, exist_ok=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "a fresh Colab VM", "language": "python"}))
    env.update(PYTHONPATH=str(FAKE_COLAB),  # google.colab, and nothing of the project
               JUPYTER_PATH=str(base / "jupyter"),
               FAKE_COLAB_DRIVE=str(base / "cloud" / "MyDrive"), FAKE_COLAB_SECRETS=str(base / "secrets.json"),
               PIP_NO_INDEX="1", PIP_NO_BUILD_ISOLATION="0",  # install offline, with this setuptools
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


@pytest.fixture(scope="module")
def vm(tmp_path_factory) -> VM:
    base = tmp_path_factory.mktemp("colab")
    python = _fresh_environment(base)
    env = _vm_env(base, python)
    probe = subprocess.run([str(python), "-c", "import importlib.util as u; print(u.find_spec('helpers'), "
                            "u.find_spec('torch') is not None, u.find_spec('google.colab') is not None)"],
                           env=env, capture_output=True, text=True, cwd=base)
    assert probe.stdout.split() == ["None", "True", "True"], probe.stdout + probe.stderr
    clone = base / "clone"
    shutil.copytree(ROOT, clone, ignore=NOT_THE_PROJECT)
    (base / "secrets.json").write_text(json.dumps(SECRETS))
    return VM(python, env, clone, base / "cloud" / "MyDrive")


def _parameters(vm: VM, work: Path, data: Path, **more) -> dict:
    """A tiny run on the small shared demo root (generating the notebook's default demo faces costs more
    than the rest of the run)."""
    return {"project_source": str(vm.clone), "drive_folder": str(work / "drive" / "MyDrive" / "hw2p2"),
            "data_source": str(data), "overrides": TINY, **more}


def test_without_project_source_one_sentence_says_what_to_set(tmp_path):
    python = _fresh_environment(tmp_path)
    vm = VM(python, _vm_env(tmp_path, python), tmp_path / "none", tmp_path / "cloud")
    process, executed = vm.run("HW2P2_Starter_Notebook.ipynb", tmp_path / "content", {})
    assert process.returncode != 0
    (error,) = [o for c in nbformat.read(executed, as_version=4).cells if c.cell_type == "code"
                for o in c.get("outputs", []) if o.output_type == "error"]
    assert error.ename == "SystemExit" and "set project_source" in error.evalue


def test_starter_notebook_installs_itself_keeps_its_run_on_drive_and_resumes_on_a_new_vm(vm, demo_root, tmp_path):
    work = tmp_path / "content"
    parameters = _parameters(vm, work, demo_root, epochs=2, tta=False)
    process, executed = vm.run("HW2P2_Starter_Notebook.ipynb", work, parameters)
    assert process.returncode == 0, process.stderr[-3000:]
    run = vm.drive / "hw2p2" / "starter"  # on the Drive, through the mount the notebook made
    assert {"best.pt", "last.pt", "metrics.jsonl", "submission.csv"} <= {p.name for p in run.iterdir()}
    package = vm.installed()
    assert vm.python.parent.parent in package.parents and (package / "configs" / "demo.yaml").is_file()
    stamp = (package / "__init__.py").stat().st_mtime_ns
    text = executed.read_text()
    # The keys came from Colab Secrets, and neither they nor any other key is in the notebook.
    assert "Kaggle: API token (KGAT_) from Colab Secrets" in text and "W&B: API key from Colab Secrets" in text
    assert not any(key in text for key in SECRETS.values()) and scan_file(executed.name, executed.read_bytes()) == []
    assert f"checkpoints: {work / 'drive' / 'MyDrive' / 'hw2p2' / 'starter'} " in text
    assert "resumes from last.pt" in text

    shutil.rmtree(work)  # a VM reset: the working folder goes, the Drive stays
    process, executed = vm.run("HW2P2_Starter_Notebook.ipynb", work, {**parameters, "epochs": 3})
    assert process.returncode == 0, process.stderr[-3000:]
    assert "resuming" in executed.read_text()
    epochs = [record["epoch"] for record in read_metrics(run / "metrics.jsonl")]
    assert epochs == [0, 1, 2, 3]  # 0 is the untrained model's evaluation; no second epoch 1
    assert (run / "submission.csv").stat().st_size > 0 and (run / "plots" / "roc.png").is_file()
    assert (package / "__init__.py").stat().st_mtime_ns == stamp  # importable already: not installed again


def test_the_notebooks_search_keeps_its_study_on_drive_and_trains_its_winner(vm, demo_root, tmp_path):
    """Section 5 as a Colab user runs it: the study on Drive (what a new VM resumes), its results shown, the
    winner trained."""
    space = tmp_path / "space.yaml"
    space.write_text("loss.m: {low: 0.2, high: 0.5}\n")
    work = tmp_path / "content"
    parameters = _parameters(vm, work, demo_root, epochs=1, tta=False, search_trials=2, search_space=str(space),
                             max_minutes=0.1)
    process, executed = vm.run("HW2P2_Starter_Notebook.ipynb", work, parameters)
    assert process.returncode == 0, process.stderr[-3000:]
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{vm.drive / 'hw2p2' / 'search' / 'study.db'}")
    assert len(study.get_trials()) == 2
    text = executed.read_text()
    assert "| trial | state |" in text and "the search's winner trained in" in text
    assert (vm.drive / "hw2p2" / "search-winner" / "best.pt").is_file()

def test_checkpoint_notebook_on_a_fresh_colab_vm(vm, demo_root, tmp_path):
    work = tmp_path / "content"
    answers = {number: question.answer for number, question in enumerate(quiz.QUESTIONS, 1)}
    parameters = _parameters(vm, work, demo_root, epochs=1, quiz_answers=answers, kaggle_username="student")
    process, executed = vm.run("HW2P2_Checkpoint_Notebook.ipynb", work, parameters)
    assert process.returncode == 0, process.stderr[-3000:]
    record = json.loads((vm.drive / "hw2p2" / "checkpoint" / "checkpoint_submission.json").read_text())
    assert record["quiz_score"] == len(quiz.QUESTIONS) and record["kaggle_username"] == "student"
    assert 0 <= record["val_eer"] <= 1
    assert (vm.drive / "hw2p2" / "checkpoint" / "submission_checkpoint.csv").is_file()
    assert "quiz: 5/5, passed" in executed.read_text()
