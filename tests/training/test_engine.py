"""The training engine: files a run leaves, exact resume after SIGKILL, torchrun, the guards, the time budget."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import FAST_BF16, ROOT, SLOW_BF16, TINY, call_cli, wait_for_checkpoint

from helpers.core.config import TrainConfig, load_config
from helpers.core.errors import UserError
from helpers.core.io import WriteFailed, read_metrics
from helpers.eval import evaluation
from helpers.model import margins as margins_module
from helpers.model.checkpoint import load_checkpoint, save_checkpoint
from helpers.runtime.device import Distributed
from helpers.training import engine
from helpers.training import budget as budget_module
from helpers.training.budget import TimeBudget, budget_epochs, epoch_limit
from helpers.training.engine import Trainer, TrainingStopped, train
from helpers.training.run import build_run, run_context
from helpers.training.step import EpochSampler
from helpers.training.tracking import offline_runs


def _sets(items):
    return [arg for item in items for arg in ("--set", item)]


def _run_args(demo_root, out, name, *extra):
    return TINY + [f"data.root={demo_root}", f"run.out_dir={out}", f"run.name={name}", *extra]


def test_training_writes_its_files_and_learns(demo_root, tmp_path, capsys):
    args = _run_args(demo_root, tmp_path, "learn", "train.epochs=4", "optim.name=adam", "optim.lr=0.005",
                     "tracking.wandb.mode=offline")
    code, out, err = call_cli(capsys, "train", "--config", "starter", *_sets(args))
    assert code == 0, err
    run = tmp_path / "learn"
    assert {"last.pt", "best.pt", "metrics.jsonl", "config.yaml"} <= {p.name for p in run.iterdir()}
    records = read_metrics(run / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [0, 1, 2, 3, 4]
    for record in records[1:]:
        assert {"epoch", "train_loss", "lr", "images_per_s", "val_eer", "val_auc", "data_wait"} <= set(record)
        assert 0.0 <= record["val_eer"] <= 1.0
    before, best = records[0]["val_eer"], min(r["val_eer"] for r in records[1:])
    assert best < before - 0.08, (before, best)
    assert load_config(run / "config.yaml").optim.lr == 0.005
    best_state = load_checkpoint(run / "best.pt")
    assert best_state["best_eer"] == pytest.approx(best) and best_state["classes"] == [str(i) for i in range(12)]
    assert len(offline_runs(run)) == 1  # the W&B offline run, for `wandb sync` and the hand-in


def test_existing_run_is_not_overwritten_and_resume_auto_continues(demo_root, tmp_path):
    args = _run_args(demo_root, tmp_path, "again", "train.epochs=1")
    train(None, args)
    with pytest.raises(UserError, match="already holds a run"):
        train(None, args)
    result = train(None, args + ["train.epochs=2"], resume="auto")
    assert result.epochs == 2
    assert [r["epoch"] for r in read_metrics(tmp_path / "again" / "metrics.jsonl")] == [0, 1, 2]


def _state_equal(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, torch.Tensor):
            if not torch.equal(x, y):
                return False
        elif isinstance(x, dict):
            if not _state_equal(x, y):
                return False
        elif x != y:
            return False
    return True


def test_sigkill_mid_epoch_then_resume_is_bitwise_identical(demo_root, tmp_path):
    # Dropout and the stronger augmentations make the test sensitive to every random draw. The two fresh runs
    # must train alike: the speed settings are set, not timed by each process (a resume keeps its run's).
    common = ["train.deterministic=true", "train.epochs=4", "train.checkpoint_every_steps=1", "optim.name=adamw",
              "model.dropout=0.2", "augment.color_jitter=0.2", "augment.erasing=0.3", "sched.name=cosine",
              "sched.warmup_epochs=1", "train.amp=none", "train.channels_last=true"]
    cmd = [sys.executable, "-m", "helpers", "train"]
    straight = subprocess.run(cmd + _sets(_run_args(demo_root, tmp_path, "straight", *common)), cwd=ROOT,
                              capture_output=True, text=True, timeout=600)
    assert straight.returncode == 0, straight.stderr

    killed_args = _sets(_run_args(demo_root, tmp_path, "killed", *common))
    process = subprocess.Popen(cmd + killed_args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / "killed" / "last.pt"
    try:
        wait_for_checkpoint(process, last, lambda state: state["epoch"] >= 1 and 0 < state["batch"])
        assert process.poll() is None, "the run finished before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    at_kill = torch.load(last, weights_only=True)
    assert at_kill["batch"] > 0 or at_kill["epoch"] >= 1

    resumed = subprocess.run(cmd + killed_args + ["--resume", "auto"], cwd=ROOT, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "killed" / "last.pt")
    assert _state_equal(a["model"], b["model"])
    assert _state_equal(a["optimizer"]["state"], b["optimizer"]["state"])
    assert (a["epoch"], a["step"], a["best_eer"]) == (b["epoch"], b["step"], b["best_eer"])
    straight_curve = [r["val_eer"] for r in read_metrics(tmp_path / "straight" / "metrics.jsonl")]
    resumed_curve = [r["val_eer"] for r in read_metrics(tmp_path / "killed" / "metrics.jsonl")]
    assert straight_curve[-1] == resumed_curve[-1]


def test_a_resume_trains_on_with_the_fast_path_its_run_chose(demo_root, tmp_path, fake_timings, capsys):
    fake_timings(FAST_BF16)
    args = _run_args(demo_root, tmp_path, "kept", "train.epochs=1")
    train(None, args)
    recorded = load_checkpoint(tmp_path / "kept" / "last.pt")["fast_path"]
    assert (recorded["device"], recorded["amp"], recorded["channels_last"]) == ("cpu", "bf16", True)
    asked = fake_timings(SLOW_BF16)  # the resuming process would now time bf16 as slower
    train(None, args + ["train.epochs=2"], resume="auto")
    resumed = load_checkpoint(tmp_path / "kept" / "last.pt")
    assert resumed["epoch"] == 2 and resumed["fast_path"]["amp"] == "bf16" and asked == []
    assert "fast path: autocast bf16, channels-last\n" in capsys.readouterr().out  # said in the run's log


def test_torchrun_two_cpu_processes(demo_root, tmp_path):
    args = _sets(_run_args(demo_root, tmp_path, "ddp", "train.epochs=2", "train.batch_size=4", "train.ema=0.9"))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "helpers",
               "train"]
    result = subprocess.run(command + args, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    records = read_metrics(tmp_path / "ddp" / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [0, 1, 2]  # one record per epoch: rank 0 alone writes
    assert result.stdout.count("epoch 2/2") == 1 and result.stdout.count("done:") == 1  # and prints
    state = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert state["data_order"]["world"] == 2 and state["step"] == 2 * (72 // 8)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    # Rank 0 keeps the moving average of the weights every rank shares, one update per step.
    assert state["ema"]["updates"] == state["step"] and (tmp_path / "ddp" / "best_ema.pt").is_file()

    # Under a time budget every rank must take the same decisions, or the job hangs or drifts apart.
    budget = _sets(_run_args(demo_root, tmp_path, "ddp_budget", "train.epochs=1000", "train.batch_size=4",
                             "train.max_minutes=0.2", "sched.name=cosine"))
    result = subprocess.run(command + budget, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]  # ended, together: no rank waited for the other
    state = load_checkpoint(tmp_path / "ddp_budget" / "last.pt")
    assert 1 <= state["epoch"] < 1000 and result.stdout.count("best.pt (best, by EER)") == 1


def test_epoch_sampler_is_a_function_of_seed_and_epoch_and_shards_cleanly():
    whole = list(EpochSampler(50, 4, seed=3))
    assert whole == list(EpochSampler(50, 4, seed=3)) and len(whole) == 48 and len(set(whole)) == 48
    sampler = EpochSampler(50, 4, seed=3)
    sampler.set_epoch(1)
    assert list(sampler) != whole
    ranks = [list(EpochSampler(50, 4, seed=3, rank=r, world=2)) for r in (0, 1)]
    assert not set(ranks[0]) & set(ranks[1]) and len(ranks[0]) == len(ranks[1]) == 24
    late = EpochSampler(50, 4, seed=3)
    late.set_epoch(0, start_batch=5)
    assert list(late) == whole[20:] and len(late) == 28


def test_a_checkpoint_with_pickled_objects_is_refused(tmp_path, demo_root, capsys):
    evil = tmp_path / "evil.pt"
    torch.save({"format": "hw2p2-checkpoint", "payload": Path("/etc")}, evil)
    with pytest.raises(UserError, match="refusing to load it"):
        load_checkpoint(evil)
    code, _, err = call_cli(capsys, "train", "--resume", evil, *_sets(_run_args(demo_root, tmp_path, "x")))
    assert code == 1 and "refusing to load it" in err and "Traceback" not in err
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"model": {}}, tmp_path / "foreign.pt")
    with pytest.raises(UserError, match="not a checkpoint written by this toolkit"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"value": torch.tensor([1.0])}, path)

    def crash(obj, handle):
        handle.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(WriteFailed, match=r"could not write .*last\.pt: disk full; the previous last\.pt is intact$"):
        save_checkpoint({"value": torch.tensor([2.0])}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["value"].item() == 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_unknown_config_key_is_refused_by_the_cli(capsys):
    code, _, err = call_cli(capsys, "train", "--set", "optim.learning_rate=0.1")
    assert code == 1 and "unknown config key 'optim.learning_rate'" in err


def test_missing_data_root_is_explained(capsys):
    code, _, err = call_cli(capsys, "train")
    assert code == 1 and "data.root is not set" in err


def test_a_run_leaves_torch_and_the_environment_as_it_found_them(demo_root, tmp_path, monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    train(None, _run_args(demo_root, tmp_path, "tidy", "train.epochs=1", "train.deterministic=true"))
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark) == before
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ and not torch.distributed.is_initialized()


def test_nonfinite_steps_are_skipped_counted_then_stop(demo_root, tmp_path, monkeypatch):
    real = margins_module.margin_loss
    calls = {"n": 0}

    def poisoned(logits, labels):
        calls["n"] += 1
        loss = real(logits, labels)
        return loss * float("nan") if calls["n"] == 2 or calls["n"] > 11 else loss

    monkeypatch.setattr(margins_module, "margin_loss", poisoned)
    with pytest.raises(TrainingStopped, match="3 steps in a row had a non-finite"):
        train(None, _run_args(demo_root, tmp_path, "nan", "train.epochs=3", "train.max_nonfinite_steps=3"))
    records = read_metrics(tmp_path / "nan" / "metrics.jsonl")
    assert records[-1]["epoch"] == 1 and records[-1]["nonfinite_steps"] == 1
    state = load_checkpoint(tmp_path / "nan" / "last.pt")
    assert state["epoch"] == 1 and state["batch"] == 0
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_bad_training_image_is_skipped_or_fatal_when_strict(demo_root, tmp_path, capsys):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(demo_root, root)
    victim = sorted((root / "cls_data" / "train" / "images").iterdir())[3]
    victim.write_bytes(b"")
    result = train(None, _run_args(root, tmp_path, "lenient", "train.epochs=1"))
    assert read_metrics(result.run_dir / "metrics.jsonl")[-1]["skipped_images"] >= 1
    assert victim.name in capsys.readouterr().err
    with pytest.raises(UserError, match=f"{victim.name}: empty .*data.strict"):
        train(None, _run_args(root, tmp_path, "strict", "train.epochs=1", "data.strict=true"))


def test_init_from_loads_weights_for_fine_tuning(demo_root, tmp_path):
    first = train(None, _run_args(demo_root, tmp_path, "phase1", "train.epochs=1"))
    phase2 = load_config(overrides=_run_args(demo_root, tmp_path, "phase2", "train.epochs=1",
                                             f"run.init_from={first.run_dir / 'best.pt'}"))
    with run_context(phase2) as run:
        model = build_run(phase2, run).model
    source = load_checkpoint(first.run_dir / "best.pt")["model"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in source.items())
    assert not (tmp_path / "phase2").exists()  # building a run writes nothing


def test_accumulation_steps_the_optimiser_once_per_group(demo_root, tmp_path):
    result = train(None, _run_args(demo_root, tmp_path, "accum", "train.epochs=1", "train.accumulate=2"))
    state = load_checkpoint(result.run_dir / "last.pt")
    assert state["step"] == (72 // 8) // 2


def test_time_budget_ends_in_time_with_valid_checkpoints(demo_root, tmp_path, monkeypatch):
    # A fake clock, as in the tests below: each optimiser step takes one second and each val evaluation two, so
    # what the budget keeps back for the last evaluation is learnt from the evaluations the run makes.
    clock = {"now": 0.0}
    step, verify = Trainer._optimizer_step, evaluation.verify_pairs

    def one_second_step(self):
        clock["now"] += 1.0
        return step(self)

    def two_second_evaluation(*args, **kwargs):
        clock["now"] += 2.0
        return verify(*args, **kwargs)

    monkeypatch.setattr(Trainer, "_optimizer_step", one_second_step)
    monkeypatch.setattr(evaluation, "verify_pairs", two_second_evaluation)
    monkeypatch.setattr(TimeBudget, "elapsed", lambda self: self.spent_before + clock["now"])
    args = _run_args(demo_root, tmp_path, "budget", "train.epochs=1000", "train.max_minutes=0.5",
                     "sched.name=cosine", "optim.lr=0.01")
    result = train(None, args)
    assert clock["now"] <= 30  # the budget covers the whole run, its final evaluation included
    assert 1 < result.epochs < 1000
    for name in ("last.pt", "best.pt"):
        state = load_checkpoint(result.run_dir / name)
        assert state["config"]["train"]["max_minutes"] == 0.5  # checkpoints hold the configuration as plain values
    records = read_metrics(result.run_dir / "metrics.jsonl")
    assert records[-1]["evaluated"] and records[-1]["elapsed_s"] == clock["now"]
    assert records[-1]["lr"] < 0.25 * 0.01  # the cosine was laid over the budget and has nearly finished
    spent = clock["now"]
    again = train(None, args, resume="auto")  # resume honours the budget already spent
    assert again.epochs == pytest.approx(result.epochs) and clock["now"] == spent


def test_epochs_follow_the_budget_unless_train_epochs_caps_them():
    assert epoch_limit(TrainConfig(epochs=None, max_minutes=40.0)) == math.inf  # the budget decides
    assert epoch_limit(TrainConfig(epochs=30, max_minutes=40.0)) == 30  # a cap set on purpose
    assert epoch_limit(TrainConfig(epochs=None, max_minutes=0.0)) == 100  # the starter's length
    assert epoch_limit(TrainConfig(epochs=7, max_minutes=0.0)) == 7
    # 2 epochs took 60 s, 600 s are usable: the run will be 20 epochs long, unless capped.
    assert budget_epochs(math.inf, 2.0, 60.0, 600.0) == 20.0 and budget_epochs(12, 2.0, 60.0, 600.0) == 12


def test_under_torchrun_one_collective_shares_rank_0s_clock_and_the_largest_signal(monkeypatch):
    calls, rank_0 = [], {"clock": 30.0}

    def all_reduce(values, op):  # the other rank: rank 0, which caught SIGTERM
        calls.append(values.tolist())
        values.copy_(torch.maximum(values, torch.tensor([rank_0["clock"], signal.SIGTERM], dtype=values.dtype)))

    assert engine.dist is budget_module.dist  # torch.distributed: every collective of the two is counted here
    monkeypatch.setattr(budget_module.dist, "all_reduce", all_reduce)
    monkeypatch.setattr(budget_module.dist, "broadcast", lambda *args, **kwargs: calls.append("broadcast"))
    monkeypatch.setattr(TimeBudget, "elapsed", lambda self: 5.0)
    budget = TimeBudget(TrainConfig(max_minutes=1.0), Distributed(rank=1, world=2))
    trainer = SimpleNamespace(budget=budget, signals=SimpleNamespace(received=None), step=8, _stopped=False,
                              _signal=0, runtime=SimpleNamespace(dist=Distributed(rank=1, world=2)))
    assert Trainer._stops_here(trainer) and trainer._signal == signal.SIGTERM and not trainer._stopped
    assert calls == [[0.0, 0.0]] and budget.clock(refresh=False) == 30.0  # one collective carried both
    trainer.step, trainer._signal = 9, 0
    assert not Trainer._stops_here(trainer) and len(calls) == 1  # shared only every few steps
    rank_0["clock"] = 58.0  # an epoch's end: every rank reads rank 0's clock, spent with the reserve kept back
    assert budget.out_of_time() and calls[1:] == [[0.0, 0.0]]
    TimeBudget(TrainConfig(), Distributed(rank=0, world=2)).share(2)
    assert calls[2:] == [[5.0, 2.0]]  # rank 0 sends its clock
    assert TimeBudget(TrainConfig(max_minutes=1.0)).share(3) == 3 and len(calls) == 3  # alone: no collective


def test_a_budgeted_run_fills_its_budget_and_ends_its_schedule_there(demo_root, tmp_path, monkeypatch):
    # A fake clock: each optimiser step takes one second, nothing else takes time, and 2 s are kept for the
    # final evaluation. A 30 s budget is then 28 steps: 3 epochs of 9 steps and one more step.
    clock = {"now": 0.0}
    step = Trainer._optimizer_step

    def one_second_step(self):
        clock["now"] += 1.0
        return step(self)

    monkeypatch.setattr(Trainer, "_optimizer_step", one_second_step)
    monkeypatch.setattr(TimeBudget, "elapsed", lambda self: self.spent_before + clock["now"])
    monkeypatch.setattr(TimeBudget, "reserve", lambda self: 2.0)
    common = ["train.max_minutes=0.5", "sched.name=cosine", "optim.lr=0.01", "train.eval_every=100",
              "train.eval_bootstrap=0"]

    filled = train(None, _run_args(demo_root, tmp_path, "filled", *common))  # train.epochs unset
    assert clock["now"] == 28 and filled.epochs == pytest.approx(28 / 9)
    lr = {r["epoch"]: r["lr"] for r in read_metrics(filled.run_dir / "metrics.jsonl") if "lr" in r}
    # From the 10th step on, the cosine is laid over the 28 usable seconds, and it ends with them.
    assert lr[2] == pytest.approx(0.005 * (1 + math.cos(math.pi * 18 / 28)))
    assert lr[round(28 / 9, 4)] == pytest.approx(0.0, abs=1e-12)

    clock["now"] = 0.0
    capped = train(None, _run_args(demo_root, tmp_path, "capped", "train.epochs=2", *common))
    assert clock["now"] == 18 and capped.epochs == 2  # the cap ends the run, and its schedule, first
    assert read_metrics(capped.run_dir / "metrics.jsonl")[-1]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_a_budget_spent_just_after_a_save_is_not_trained_on_at_resume(demo_root, tmp_path, monkeypatch):
    # Slow disks make this real: the budget runs out while last.pt is being written. The stale elapsed time
    # inside last.pt must not let a resume of the finished run train another step.
    args = _run_args(demo_root, tmp_path, "late", "train.epochs=1000", "train.max_minutes=0.1")
    save, stalled = Trainer.save, []

    def save_then_stall(self, *args, **kwargs):
        save(self, *args, **kwargs)
        if self.epoch == 1 and not stalled:
            stalled.append(True)
            time.sleep(max(0.0, self.budget.seconds - self.budget.elapsed()) + 0.5)

    monkeypatch.setattr(Trainer, "save", save_then_stall)
    result = train(None, args)
    assert result.epochs == 1
    again = train(None, args, resume="auto")
    assert again.epochs == 1


def test_decoding_on_the_device_trains_the_same_model(demo_root, tmp_path):
    a = train(None, _run_args(demo_root, tmp_path, "workers", "train.epochs=1", "train.deterministic=true"))
    b = train(None, _run_args(demo_root, tmp_path, "device", "train.epochs=1", "train.deterministic=true",
                              "data.decode=device"))
    wa, wb = load_checkpoint(a.run_dir / "last.pt")["model"], load_checkpoint(b.run_dir / "last.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa) and a.best_eer == b.best_eer


def test_run_folder_is_named_after_the_config_file_unless_named(demo_root, tmp_path, capsys):
    config = tmp_path / "my_recipe.yaml"
    config.write_text(f"run:\n  out_dir: {tmp_path}\ntrain:\n  epochs: 1\n")
    tiny = _sets([item for item in TINY] + [f"data.root={demo_root}"])
    assert call_cli(capsys, "train", "--config", config, *tiny)[0] == 0
    assert (tmp_path / "my_recipe" / "best.pt").is_file()
    config.write_text(f"run:\n  out_dir: {tmp_path}\n  name: chosen\ntrain:\n  epochs: 1\n")
    assert call_cli(capsys, "train", "--config", config, *tiny)[0] == 0
    assert (tmp_path / "chosen" / "best.pt").is_file()


def test_data_stage_to_trains_from_a_local_copy_and_keeps_checkpoints_in_out_dir(demo_root, tmp_path, monkeypatch,
                                                                                 capsys):
    from helpers.eval.inference import evaluate_checkpoint

    monkeypatch.setenv("LOCAL", str(tmp_path / "node1"))  # PSC's node-local disk of this job
    args = _sets(_run_args(demo_root, tmp_path / "home", "staged", "train.epochs=1", "data.stage_to=$LOCAL"))
    code, out, err = call_cli(capsys, "train", *args)
    assert code == 0, err
    source, copy = demo_root.resolve(), tmp_path / "node1" / demo_root.name
    assert f"staged {source} to {copy}" in out
    run = tmp_path / "home" / "staged"
    assert {"last.pt", "best.pt", "metrics.jsonl"} <= {p.name for p in run.iterdir()}
    assert not [p for p in (tmp_path / "node1").rglob("*") if p.suffix in (".pt", ".jsonl", ".yaml")]
    data_cfg = load_checkpoint(run / "last.pt")["config"]["data"]
    assert (data_cfg["root"], data_cfg["stage_to"]) == (str(demo_root), "$LOCAL")  # as written, for the next node
    assert evaluate_checkpoint(run / "best.pt").data_root == str(copy)  # the same job reads the copy

    monkeypatch.setenv("LOCAL", str(tmp_path / "node2"))  # the next job runs on another node
    assert evaluate_checkpoint(run / "best.pt").data_root == str(demo_root)  # no copy there: the source
    code, out, err = call_cli(capsys, "train", *args, "--set", "train.epochs=2", "--resume", "auto")
    assert code == 0, err
    assert f"staged {source} to {tmp_path / 'node2' / demo_root.name}" in out
    assert load_checkpoint(run / "last.pt")["epoch"] == 2


def test_a_missing_gpu_kernel_met_at_start_up_names_the_wheel_to_install(demo_root, tmp_path, monkeypatch,
                                                                         fake_gpu, capsys):
    from contextlib import contextmanager

    from helpers.runtime.fast_path import FastPath
    from helpers.runtime.resolve import Runtime

    fake_gpu()

    @contextmanager
    def on_the_gpu(cfg, previous=None):
        yield Runtime(torch.device("cuda", 0), FastPath(None, False, False, False), 0, False)

    def first_kernel(*args, **kwargs):
        raise RuntimeError("CUDA error: no kernel image is available for execution on the device\n"
                           "CUDA kernel errors might be asynchronously reported at some other API call")

    monkeypatch.setattr(engine, "run_context", on_the_gpu)
    monkeypatch.setattr(engine, "build_run", first_kernel)
    code, out, err = call_cli(capsys, "train", *_sets(_run_args(demo_root, tmp_path, "v100")))
    assert code == 1 and err.count("\n") == 1
    assert err.startswith("error: the Tesla V100-SXM2-32GB GPU is sm_70, for which the installed torch 2.9.1+cu130")
    assert err.rstrip().endswith("pip install torch==2.9.1 torchvision==0.24.1 "
                                 "--index-url https://download.pytorch.org/whl/cu126")


def test_each_metrics_line_keeps_its_keys_and_the_log_line_reads_from_the_record(trained_run):
    from helpers.core.records import RunRecord
    from helpers.training.engine import format_record

    before, trained = read_metrics(trained_run / "metrics.jsonl")[:2]
    evaluation = ["val_eer", "val_auc", "val_accuracy", "val_threshold", "val_tar_at_far", "val_eer_low",
                  "val_eer_high", "evaluated", "elapsed_s", "time"]  # the demo root has no dev split for top-1
    assert list(before) == ["epoch", "step", "nonfinite_steps", "skipped_images", *evaluation, "run_id"]
    assert list(trained) == ["epoch", "step", "train_loss", "train_acc", "grad_norm", "images_per_s", "data_wait",
                             "lr", "nonfinite_steps", "skipped_images", *evaluation, "run_id"]
    assert RunRecord.from_line(trained).as_line() == trained  # written through the record, read back the same
    record = RunRecord.from_line(trained)
    line = format_record(record, "6")
    assert line.startswith(f"epoch 1/6 | loss {trained['train_loss']:.4f} | acc {trained['train_acc']:.3f} | ")
    interval = f"[{trained['val_eer_low']:.3f}, {trained['val_eer_high']:.3f}]"
    assert f" | val EER {trained['val_eer']:.4f} {interval} AUC {trained['val_auc']:.4f} | " in line
    assert "EMA" not in line and line.endswith(f" | {record.elapsed_s / 60:.1f} min")
    assert "before training" in format_record(RunRecord.from_line(before), "6")
