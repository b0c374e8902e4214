"""A notebook's first step: where it runs, on what device, with which keys, and the folder of its runs."""

from __future__ import annotations

import helpers
from helpers.core import credentials
from helpers.runtime.session import describe_environment, start_session


def test_start_session_says_where_and_on_what_it_runs_and_returns_the_runs_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in (*credentials.KAGGLE_NAMES, *credentials.WANDB_NAMES, "KAGGLE_CONFIG_DIR", "NETRC",
                 "KAGGLE_KERNEL_RUN_TYPE"):
        monkeypatch.setenv(name, "")  # recorded, so what load_secrets puts in the environment is undone
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    assert helpers.start_session is start_session  # the notebooks' name for it
    folder = start_session("auto", "runs")
    out = capsys.readouterr().out
    assert folder.absolute() == tmp_path / "runs" and folder.is_dir()
    environment = describe_environment()
    assert environment["platform"] == "local" and f"{'device':>16}: {environment['device']}" in out
    assert f"{'keys':>16}: Kaggle: no Kaggle credentials" in out and f"{'runs folder':>16}: {tmp_path / 'runs'}" in out
