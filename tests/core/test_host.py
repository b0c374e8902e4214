"""Colab, Kaggle or local: where runs live, where attached data is found, and where keys come from."""

from __future__ import annotations

import json
import sys
import types

import pytest
from conftest import ROOT

from helpers.core import credentials, host
from helpers.core.errors import UserError
from helpers.data.sources import obtain_data
from helpers.handin import kaggle

FAKE_COLAB = ROOT / "tests" / "fake_colab"
KGAT = "KGAT_" + "0f1e2d3c4b5a6978" * 2
NEW_WANDB = "wandb_v1_" + "Q1w2E3r4T5y6U7i8" * 4 + "O9p0A1s2D3f4G"


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A clean HOME and environment: no ~/.kaggle, no ~/.netrc, no keys, no Colab, no Kaggle."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in (*credentials.KAGGLE_NAMES, *credentials.WANDB_NAMES, "KAGGLE_CONFIG_DIR", "NETRC",
                 "KAGGLE_KERNEL_RUN_TYPE"):
        monkeypatch.setenv(name, "")  # recorded, so what load_secrets puts in the environment is undone
        monkeypatch.delenv(name)
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


def _forget_colab():
    for name in [n for n in sys.modules if n == "google.colab" or n.startswith("google.colab.")]:
        del sys.modules[name]


@pytest.fixture
def colab(home, tmp_path, monkeypatch):
    """The fake google.colab importable, its Drive in tmp_path/cloud, its Secrets in tmp_path/secrets.json."""
    monkeypatch.syspath_prepend(str(FAKE_COLAB))
    monkeypatch.setenv("FAKE_COLAB_DRIVE", str(tmp_path / "cloud"))
    monkeypatch.setenv("FAKE_COLAB_SECRETS", str(tmp_path / "secrets.json"))
    monkeypatch.setattr(host, "COLAB_MOUNT", tmp_path / "content" / "drive")
    yield tmp_path
    _forget_colab()  # later tests must not find it imported


def test_platform(home, monkeypatch):
    assert host.platform() == "local"
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    assert host.platform() == "kaggle"


def test_kaggle_is_kaggle_even_with_google_colab_importable(colab, monkeypatch):
    assert host.platform() == "colab"
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    assert host.platform() == "kaggle"


def test_runs_folder_locally_and_on_kaggle(home, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert host.runs_folder("auto", "runs") == host.Path("runs") and (tmp_path / "runs").is_dir()
    assert host.runs_folder(str(tmp_path / "mine"), "runs") == tmp_path / "mine"
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    monkeypatch.setattr(host, "KAGGLE_WORKING", tmp_path / "working")
    assert host.runs_folder("auto", "runs") == tmp_path / "working" / "runs"
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="cannot create the runs folder .*file/x \\(drive_folder\\)"):
        host.runs_folder(str(tmp_path / "file" / "x"))


def test_on_colab_runs_go_to_drive_mounted_once(colab):
    assert host.platform() == "colab"
    folder = host.runs_folder("auto", "runs")
    assert folder == colab / "content" / "drive" / "MyDrive" / "HW2P2"
    assert (colab / "cloud" / "HW2P2").is_dir()  # on the Drive, not on the VM's disk
    assert host.runs_folder("auto", "runs") == folder  # mounted already: the fake refuses a second mount
    # A VM reset: the mount point is gone, the Drive is not; a named folder inside MyDrive mounts it again.
    (colab / "content" / "drive" / "MyDrive").unlink()
    named = colab / "content" / "drive" / "MyDrive" / "courses" / "hw2p2"
    assert host.runs_folder(str(named), "runs") == named and (colab / "cloud" / "courses" / "hw2p2").is_dir()


def _root(folder):
    (folder / "cls_data" / "train" / "images").mkdir(parents=True)
    (folder / "ver_data").mkdir()
    return folder


def test_kaggle_data_attached_under_input_is_found_without_download(home, tmp_path, monkeypatch):
    inputs = tmp_path / "input"
    monkeypatch.setattr(host, "KAGGLE_INPUT", inputs)
    monkeypatch.setenv("PATH", str(tmp_path))  # no kaggle tool: a download would fail
    (inputs / "some-other-dataset" / "train" / "cats").mkdir(parents=True)
    attached = _root(inputs / "11785-hw2p2-face-verification" / "HW2p2_S26")
    assert obtain_data("kaggle", tmp_path / "data", "11785-hw2p2-face-verification") == attached
    assert obtain_data("kaggle", tmp_path / "data", "") == attached
    _root(inputs / "hw2p2-copy" / "a" / "b" / "data")
    assert obtain_data("kaggle", tmp_path / "data", "11785-hw2p2-face-verification") == attached
    with pytest.raises(UserError, match="several HW2P2 data roots .*hw2p2-copy.*set data_source"):
        obtain_data("kaggle", tmp_path / "data", "")


def test_nothing_attached_falls_back_to_the_download_folder(home, tmp_path, monkeypatch):
    monkeypatch.setattr(host, "KAGGLE_INPUT", tmp_path / "no-input")
    monkeypatch.setenv("PATH", str(tmp_path))
    downloaded = _root(tmp_path / "data" / "HW2p2_S26")
    assert obtain_data("kaggle", tmp_path / "data", "comp") == downloaded
    with pytest.raises(UserError, match="cannot download .*kaggle command is not installed"):
        obtain_data("kaggle", tmp_path / "empty", "comp")


def test_secrets_come_from_colab_first_and_never_show(colab, monkeypatch, capsys):
    (colab / "secrets.json").write_text(json.dumps({"KAGGLE_API_TOKEN": KGAT, "WANDB_API_KEY": NEW_WANDB}))
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)  # Colab Secrets come before the environment
    found = credentials.load_secrets()
    assert found == {"KAGGLE_API_TOKEN": "Colab Secrets", "WANDB_API_KEY": "Colab Secrets"}
    assert credentials.os.environ["KAGGLE_API_TOKEN"] == KGAT and credentials.os.environ["WANDB_API_KEY"] == NEW_WANDB
    lines = credentials.describe_credentials(found)
    assert lines == ["Kaggle: API token (KGAT_) from Colab Secrets", "W&B: API key from Colab Secrets"]
    assert KGAT not in capsys.readouterr().out


def test_kaggle_secrets_then_environment_then_files(home, monkeypatch):
    client = types.SimpleNamespace(get_secret=lambda name: {"WANDB_API_KEY": NEW_WANDB}[name])
    monkeypatch.setitem(sys.modules, "kaggle_secrets", types.SimpleNamespace(UserSecretsClient=lambda: client))
    monkeypatch.setenv("KAGGLE_USERNAME", "student")
    monkeypatch.setenv("KAGGLE_KEY", "0123456789abcdef0123456789abcdef")
    found = credentials.load_secrets()
    assert found == {"WANDB_API_KEY": "Kaggle Secrets", "KAGGLE_USERNAME": "the environment",
                     "KAGGLE_KEY": "the environment"}
    assert credentials.describe_credentials(found) == ["Kaggle: username and key from the environment",
                                                       "W&B: API key from Kaggle Secrets"]
    monkeypatch.delenv("KAGGLE_KEY")
    monkeypatch.delenv("WANDB_API_KEY")
    (home / ".kaggle").mkdir()
    (home / ".kaggle" / "access_token").write_text(KGAT)
    (home / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "0" * 40 + "\n")
    assert credentials.describe_credentials({}) == [f"Kaggle: API token (KGAT_) from {home}/.kaggle/access_token",
                                                    f"W&B: API key from {home}/.netrc"]


def test_a_new_token_under_the_legacy_name_reaches_the_kaggle_tool(home, monkeypatch):
    monkeypatch.setenv("KAGGLE_KEY", KGAT)
    credentials.load_secrets()
    assert credentials.os.environ["KAGGLE_API_TOKEN"] == KGAT
    assert credentials.kaggle_credentials() == ("token", "KAGGLE_API_TOKEN")


def test_no_keys_says_where_to_put_them(home):
    kaggle_line, wandb_line = credentials.describe_credentials(credentials.load_secrets())
    assert "no Kaggle credentials: set KAGGLE_API_TOKEN" in kaggle_line and "kaggle.json works too" in kaggle_line
    assert "no W&B API key: runs log offline" in wandb_line and "Kaggle: Add-ons > Secrets" in wandb_line


def test_old_tools_are_named_for_new_keys(home, monkeypatch):
    versions = {"kaggle": "1.7.4.5", "wandb": "0.21.3"}
    monkeypatch.setattr(credentials.importlib.metadata, "version", lambda name: versions[name])
    monkeypatch.setenv("KAGGLE_API_TOKEN", KGAT)
    monkeypatch.setenv("WANDB_API_KEY", NEW_WANDB)
    assert credentials.kaggle_problem() == ("the kaggle tool 1.7.4.5 cannot use a KGAT_ API token: "
                                            "pip install -U 'kaggle>=1.8'")
    assert "wandb 0.21.3 rejects the new 86-character key: pip install -U 'wandb>=0.22.3'" == credentials.wandb_problem()
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)  # a legacy key works with the old wandb
    assert credentials.wandb_problem() is None
    versions.update(kaggle="1.8.0")
    assert credentials.kaggle_problem() is None


def test_the_kaggle_tool_runs_with_only_a_kgat_token(home, tmp_path, monkeypatch):
    tool = tmp_path / "bin" / "kaggle"
    tool.parent.mkdir()
    tool.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path / 'args.txt'}\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(tool.parent))
    assert "no Kaggle credentials" in kaggle.submit(tmp_path / "s.csv", "comp", "msg")
    monkeypatch.setenv("KAGGLE_API_TOKEN", KGAT)
    said = kaggle.submit(tmp_path / "s.csv", "comp", "msg")
    assert said.startswith("submitted") and KGAT not in said
