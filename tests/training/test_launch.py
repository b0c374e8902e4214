"""train_on_all_gpus: torchrun from a notebook when several GPUs are visible, in-process otherwise, resuming alike."""

from __future__ import annotations

import sys

import pytest
import torch
from conftest import TINY

from helpers.core.errors import UserError
from helpers.core.io import read_metrics
from helpers.model.checkpoint import load_checkpoint
from helpers.training import launch
from helpers.training.launch import LOG_TAIL, stream_output, torchrun_command, train_on_all_gpus


def _trained_args(trained_run):
    """The settings that name the session's trained run (the fixture's own, plus its folder)."""
    return TINY + [f"run.out_dir={trained_run.parent}", f"run.name={trained_run.name}"]


def test_the_torchrun_command_line_is_the_train_command_under_torchrun():
    assert torchrun_command("fast", ["train.epochs=3", "run.name=my run"], "auto", None, 4) == [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", "-m", "helpers",
        "train", "--config", "fast", "--set", "train.epochs=3", "--set", "run.name=my run", "--resume", "auto"]
    assert torchrun_command(None, [], None, "runs/a/best.pt", 2)[-4:] == ["helpers", "train", "--init-from",
                                                                          "runs/a/best.pt"]
    assert torchrun_command(None, [], "theirs.pt", None, 2, take_over=True)[-3:] == ["--resume", "theirs.pt",
                                                                                    "--take-over"]


def test_two_visible_gpus_train_under_torchrun_and_the_result_is_read_from_the_run(trained_run, monkeypatch):
    launched = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(launch, "stream_output", lambda command: launched.append(command) or (0, []))
    result = train_on_all_gpus(None, _trained_args(trained_run), resume="auto")
    assert launched == [torchrun_command(None, _trained_args(trained_run), "auto", None, 2)]
    state = load_checkpoint(trained_run / "last.pt")
    assert result.run_dir == trained_run and result.best_eer == state["best_eer"] is not None
    assert result.epochs == 6 and result.last.as_line() == read_metrics(trained_run / "metrics.jsonl")[-1]
    assert result.weights == "raw"


def test_one_gpu_or_a_named_device_trains_in_this_process(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # runs/demo is looked for here
    calls = []
    monkeypatch.setattr(launch, "train", lambda *args: calls.append(args) or "trained here")
    monkeypatch.setattr(launch, "stream_output", lambda command: pytest.fail("torchrun was started"))
    for gpus, device in ((1, "auto"), (0, "auto"), (2, "cuda:1"), (2, "cpu")):
        monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
        assert train_on_all_gpus("demo", [f"train.device={device}"], resume="auto") == "trained here"
    assert calls[-1] == ("demo", ["train.device=cpu"], "auto", None, "demo", False)  # the run folder the CLI would name


def test_a_failed_torchrun_job_is_one_sentence_and_the_end_of_its_log(demo_root, tmp_path, monkeypatch):
    monkeypatch.setattr(launch, "stream_output", lambda command: (1, ["[rank0]: ...", "error: something broke"]))
    args = TINY + [f"data.root={demo_root}", f"run.out_dir={tmp_path}", "run.name=failed"]
    with pytest.raises(UserError) as failed:
        train_on_all_gpus(None, args, processes=2)
    assert str(failed.value) == ("training under torchrun on 2 processes stopped with exit status 1; the end of its "
                                 "output:\n[rank0]: ...\nerror: something broke")


def test_the_output_streams_as_it_comes_and_the_tail_is_kept(capsys):
    lines = [f"line {i}" for i in range(LOG_TAIL + 5)]
    code = f"import sys; print({chr(10).join(lines)!r}); print('oops', file=sys.stderr); sys.exit(3)"
    status, tail = stream_output([sys.executable, "-c", code])
    assert status == 3 and tail == (lines + ["oops"])[-LOG_TAIL:]
    assert capsys.readouterr().out == "\n".join(lines + ["oops"]) + "\n"


def test_an_existing_run_without_resume_is_refused_before_any_process_starts(trained_run, monkeypatch):
    monkeypatch.setattr(launch, "stream_output", lambda command: pytest.fail("torchrun was started"))
    with pytest.raises(UserError, match="already holds a run"):
        train_on_all_gpus(None, _trained_args(trained_run), processes=2)


def test_two_cpu_processes_train_then_resume_the_same_way(demo_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    args = TINY + [f"data.root={demo_root}", f"run.out_dir={tmp_path}", "run.name=ddp", "train.epochs=1",
                   "train.batch_size=4"]
    result = train_on_all_gpus(None, args, processes=2)
    assert result.run_dir == tmp_path / "ddp" and result.epochs == 1 and result.best_eer is not None
    assert "--nproc_per_node=2" in capsys.readouterr().out
    result = train_on_all_gpus(None, args + ["train.epochs=2"], resume="auto", processes=2)
    out = capsys.readouterr().out
    assert "resuming" in out and out.count("epoch 2/2") == 1 and out.count("done:") == 1  # rank 0 alone prints
    state = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert result.epochs == 2 and state["data_order"]["world"] == 2 and state["step"] == 2 * (72 // 8)
    assert [r["epoch"] for r in read_metrics(tmp_path / "ddp" / "metrics.jsonl")] == [0, 1, 2]
