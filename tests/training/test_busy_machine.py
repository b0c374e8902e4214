"""A deterministic run is the same run on a busy machine: its speed settings never hang on a timer, so the same
command gives bitwise the same weights alone and beside two CPU-burning processes, and a run killed and resumed
beside them ends where the uninterrupted one did."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import torch
from conftest import ROOT, TINY, wait_for_checkpoint

from helpers.model.checkpoint import load_checkpoint

# The speed settings are left at auto: a deterministic run must not need them pinned.
COMMON = ["train.deterministic=true", "train.epochs=1", "train.checkpoint_every_steps=1", "model.dropout=0.2",
          "augment.erasing=0.3", "optim.name=adamw", "train.eval_bootstrap=0"]
BURN = "while True: pass"


def _command(demo_root, out, name) -> list[str]:
    settings = TINY + COMMON + [f"data.root={demo_root}", f"run.out_dir={out}", f"run.name={name}"]
    return [sys.executable, "-m", "helpers", "train", *[arg for item in settings for arg in ("--set", item)]]


def _train(command: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done


def _kill_mid_epoch(command: list[str], last) -> None:
    """Start ``command`` and SIGKILL it once last.pt holds a step inside the epoch."""
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_checkpoint(process, last, lambda state: 2 <= state["batch"])
        assert process.poll() is None, "the run finished before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()


def _same(a, b) -> bool:
    """Whether two state dicts (nested, of tensors and numbers) are bitwise equal."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[key], b[key]) for key in a)
    return torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


def test_a_deterministic_run_is_bitwise_the_same_beside_two_busy_processes(demo_root, tmp_path):
    alone = _train(_command(demo_root, tmp_path, "alone"))
    assert "(not timed: train.deterministic takes fixed settings)" in alone.stdout
    burners = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(2)]
    try:
        _train(_command(demo_root, tmp_path, "busy"))
        killed = _command(demo_root, tmp_path, "killed")
        _kill_mid_epoch(killed, tmp_path / "killed" / "last.pt")
        _train(killed + ["--resume", "auto"])
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    reference = load_checkpoint(tmp_path / "alone" / "last.pt")
    for name in ("busy", "killed"):
        state = load_checkpoint(tmp_path / name / "last.pt")
        assert _same(reference["model"], state["model"]) and _same(reference["optimizer"], state["optimizer"]), name
        assert (reference["step"], reference["best_eer"]) == (state["step"], state["best_eer"]), name
