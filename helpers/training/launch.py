"""Training on every visible GPU from a notebook: torchrun in a child process when there are several.

A notebook cannot be a torchrun job itself, so :func:`train_on_all_gpus`
starts ``python -m torch.distributed.run --standalone --nproc_per_node=N -m
helpers train ...`` (DDP, one process per GPU: Kaggle's 2 x T4, say), shows its
output as it comes, and reads what the run left in its folder into the same
:class:`TrainResult` that :func:`engine.train` returns. With one GPU, or none,
it is :func:`engine.train` in this process. Resuming is the same in both:
``resume="auto"`` continues the run folder's ``last.pt``.
"""

from __future__ import annotations

import collections
import os
import shlex
import subprocess
import sys
from pathlib import Path

import torch

from helpers.core.errors import UserError
from helpers.model.checkpoint import Checkpoint
from helpers.training.engine import TrainResult, train
from helpers.training.run import prepare_run, run_directory
from helpers.training.tracking import run_records

LOG_TAIL = 20  # lines of a failed torchrun job's output that its error repeats


def train_on_all_gpus(config_path: str | Path | None = None, overrides: list[str] = (), resume: str | None = None,
                      init_from: str | Path | None = None, processes: int | None = None,
                      take_over: bool = False) -> TrainResult:
    """Train as :func:`engine.train` does, on every visible CUDA GPU: under torchrun when more than one is
    visible (``processes`` overrides the count, e.g. 2 gloo processes on the CPU), in this process otherwise.

    Without ``run.name`` the run folder is named after the config file, as the
    ``train`` command names it. The checks that need no GPU (the configuration,
    an existing run without ``resume``) fail here, before any process starts.
    """
    default_name = Path(config_path).stem if config_path else None
    cfg, _ = prepare_run(config_path, overrides, resume, default_name, take_over)
    count = processes if processes is not None else visible_gpus(cfg.train.device)
    if count <= 1:
        return train(config_path, overrides, resume, init_from, default_name, take_over)
    command = torchrun_command(config_path, overrides, resume, init_from, count, take_over)
    print(f"training on {count} processes: python {shlex.join(command[1:])}", flush=True)
    status, tail = stream_output(command)
    if status != 0:
        raise UserError(f"training under torchrun on {count} processes stopped with exit status {status}; "
                        f"the end of its output:\n" + "\n".join(tail))
    return finished_run(run_directory(cfg))


def visible_gpus(device: str) -> int:
    """The GPUs a run on ``train.device`` may spread over: every visible one for auto or cuda, else one."""
    return torch.cuda.device_count() if device in ("auto", "cuda") else 1


def torchrun_command(config_path, overrides, resume, init_from, processes: int, take_over: bool = False) -> list[str]:
    """The torchrun command line of a ``train`` run on ``processes`` processes of this machine."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "helpers", "train"]
    if config_path:
        command += ["--config", str(config_path)]
    for override in overrides:
        command += ["--set", override]
    if resume:
        command += ["--resume", str(resume)]
    if init_from:
        command += ["--init-from", str(init_from)]
    if take_over:
        command.append("--take-over")
    return command


def stream_output(command: list[str]) -> tuple[int, list[str]]:
    """Run ``command``, printing its output (stdout and stderr) line by line as it comes; its exit status and
    last lines. Interrupting (the notebook's stop button) stops the job and its workers too."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(
        filter(None, [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")]))}
    tail = collections.deque(maxlen=LOG_TAIL)
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                          bufsize=1) as child:
        try:
            for line in child.stdout:
                print(line, end="", flush=True)
                tail.append(line.rstrip("\n"))
            return child.wait(), list(tail)
        except BaseException:
            child.terminate()  # torchrun passes it on to its workers
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
            raise


def finished_run(run_dir: Path) -> TrainResult:
    """The :class:`TrainResult` of a run that trained in another process, from its ``last.pt`` and
    ``metrics.jsonl``."""
    saved = Checkpoint.load(run_dir / "last.pt")
    records = run_records(run_dir)
    last = records[-1] if records else None
    return TrainResult(run_dir, saved.best_eer, saved.epoch if last is None else last.epoch, last, saved.weights)
