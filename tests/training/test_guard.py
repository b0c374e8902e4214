"""One training per run folder (its lock), and SIGTERM or SIGUSR1 as a stop that saves a resumable last.pt."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import torch
from conftest import ROOT, TINY, call_cli, wait_for_checkpoint

from helpers.core.io import read_metrics
from helpers.model.checkpoint import load_checkpoint
from helpers.training.guard import StopSignals

HOLD = ("import pathlib, sys, time\nfrom helpers.training.guard import run_lock\n"
        "with run_lock(pathlib.Path(sys.argv[1])):\n    print('held', flush=True)\n    time.sleep(600)\n")


def _sets(items):
    return [arg for item in items for arg in ("--set", item)]


def _contents(folder):
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


def test_a_second_training_in_a_locked_run_folder_is_refused_and_a_dead_holder_blocks_nothing(trained_run, tmp_path,
                                                                                            capsys):
    run = tmp_path / "trained"
    shutil.copytree(trained_run, run)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        before = _contents(run)
        args = ["train", "--resume", "auto", *_sets([f"run.out_dir={tmp_path}", "run.name=trained", "train.epochs=7"])]
        code, _, err = call_cli(capsys, *args)
        assert code == 1 and len(err.splitlines()) == 1 and "Traceback" not in err
        assert err.startswith(f"error: {run} is in use by another training (process {holder.pid} on host "
                              f"{socket.gethostname()} since ")
        assert err.endswith("); wait for it to end or stop it, or train into another run.name\n")
        assert _contents(run) == before  # nothing written: not config.yaml, not metrics.jsonl
    finally:
        holder.kill()  # the kernel releases the lock of a killed process
        holder.wait()
    code, _, err = call_cli(capsys, *args)
    assert code == 0, err
    assert load_checkpoint(run / "last.pt")["epoch"] == 7
    assert f'"pid": {os.getpid()}' in (run / "train.lock").read_text()


def test_the_stop_signals_are_caught_while_asked_and_given_back_after():
    before = signal.getsignal(signal.SIGUSR1)
    signals = StopSignals()
    with signals.caught():
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
        assert signals.received == signal.SIGUSR1  # the first one
    assert signal.getsignal(signal.SIGUSR1) is before and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_sigterm_saves_a_resumable_last_pt_and_stale_temporary_files_go(demo_root, tmp_path):
    # With a loader worker, as on a GPU machine: Slurm signals every process of the job, the worker included.
    args = _sets([*TINY, f"data.root={demo_root}", f"run.out_dir={tmp_path}", "run.name=term", "train.epochs=100",
                  "train.amp=none", "train.channels_last=false", "data.num_workers=1"])
    command = [sys.executable, "-m", "helpers", "train", *args]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    last = tmp_path / "term" / "last.pt"
    try:
        wait_for_checkpoint(process, last, lambda state: state["epoch"] >= 1, poll=0.05)
        os.killpg(process.pid, signal.SIGTERM)  # the training process and its worker, as Slurm does
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signal.SIGTERM, err[-2000:]
    state = load_checkpoint(last)
    position = state["epoch"] + state["batch"] / 9
    assert err.splitlines()[-1] == (f"stopped by SIGTERM: {last} holds epoch {position:.2f} (step {state['step']}); "
                                    "continue it with --resume auto")
    assert state["step"] == state["epoch"] * 9 + state["batch"] and "done:" not in out
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = last.with_name(f".last.pt.tmp{int(gone.stdout)}")  # as a kill during a save leaves it
    stale.write_bytes(b"half a checkpoint")
    resumed = subprocess.run(command + ["--resume", "auto", "--set", f"train.epochs={state['epoch'] + 1}"], cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"removed {stale}, left by a save that was interrupted" in resumed.stderr and not stale.exists()
    assert f"resuming {tmp_path / 'term'} at epoch {position:.2f}" in resumed.stdout
    assert load_checkpoint(last)["epoch"] == state["epoch"] + 1
    epochs = [record["epoch"] for record in read_metrics(tmp_path / "term" / "metrics.jsonl")]
    assert epochs == list(range(state["epoch"] + 2))  # each epoch once, the interrupted one finished after resuming


def test_under_torchrun_the_ranks_agree_on_the_step_a_signal_stops_them_at(demo_root, tmp_path):
    args = _sets([*TINY, f"data.root={demo_root}", f"run.out_dir={tmp_path}", "run.name=ddp", "train.epochs=100",
                  "train.batch_size=4", "train.amp=none", "train.channels_last=false"])
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "helpers",
               "train", *args]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    last = tmp_path / "ddp" / "last.pt"
    try:
        wait_for_checkpoint(process, last, lambda state: state["epoch"] >= 1, poll=0.05)
        os.killpg(process.pid, signal.SIGTERM)  # torchrun and both ranks, as Slurm does
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    state = load_checkpoint(last)
    said = [line for line in err.splitlines() if line.startswith("stopped by SIGTERM")]
    assert said == [f"stopped by SIGTERM: {last} holds epoch {state['epoch'] + state['batch'] / 9:.2f} (step "
                    f"{state['step']}); continue it with --resume auto"]  # rank 0 alone says it
    assert state["step"] % 8 == 0 and state["data_order"]["world"] == 2  # where the ranks compare their signals
    assert "done:" not in out



def test_evaluation_loader_workers_leave_the_stop_signals_to_their_parent():
    """A worker killed by Slurm's job-wide SIGTERM would end a training evaluating before it saves (the training
    loader's workers: the SIGTERM test above)."""
    from helpers.core.signals import STOP_SIGNALS
    from helpers.eval.evaluation import EvalSettings, image_loader

    class Disposition(torch.utils.data.Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, index):
            return torch.tensor([signal.getsignal(number) == signal.SIG_IGN for number in STOP_SIGNALS])

    loader = image_loader([], EvalSettings(workers=1))
    probe = torch.utils.data.DataLoader(Disposition(), num_workers=1, worker_init_fn=loader.worker_init_fn)
    assert next(iter(probe)).all()
