"""Batches of any size train: a skipped image keeps the batch shape, and batch sizes that crash torch are avoided."""

from __future__ import annotations

import shutil

import pytest
import torch
from conftest import TINY, run_cli

from helpers.core.config import load_config
from helpers.core.errors import UserError
from helpers.core.io import read_metrics
from helpers.data.datasets import Batch, Skipped, refill
from helpers.model.resnet import build_face_model
from helpers.runtime.fast_path import channels_last_crash, training_fast_path

# At 64 pixels a width-0.125 ResNet's first strided shortcut sees 16x16 maps of 8 channels: the shape whose
# channels-last CPU backward crashes torch 2.14.1 natively on an odd batch (at 32 pixels it does not).
CRASHING = [*TINY, "data.image_size=64", "train.epochs=1", "train.eval_bootstrap=0"]


def _sets(items):
    return [arg for item in items for arg in ("--set", item)]


def test_a_batch_with_an_unreadable_image_trains_at_the_smallest_width(demo_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(demo_root, root)
    victim = sorted((root / "cls_data" / "train" / "images").iterdir())[5]
    victim.write_bytes(victim.read_bytes()[:100])  # a truncated JPEG: its batch loses one of its 8 images
    # In a child process: the crash this guards against is a native one, which would take pytest down with it.
    result = run_cli("train", *_sets([*CRASHING, f"data.root={root}", f"run.out_dir={tmp_path}", "run.name=skip"]))
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"warning: skipped {victim}" in result.stderr and "Traceback" not in result.stderr
    assert read_metrics(tmp_path / "skip" / "metrics.jsonl")[-1]["skipped_images"] == 1


def test_an_odd_batch_size_trains_without_channels_last_where_it_would_crash(demo_root, tmp_path):
    args = [*CRASHING, f"data.root={demo_root}", f"run.out_dir={tmp_path}", "train.batch_size=7"]
    result = run_cli("train", *_sets([*args, "run.name=odd"]))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "note: channels-last is off for this run" in result.stderr
    assert (tmp_path / "odd" / "best.pt").is_file()
    result = run_cli("train", *_sets([*args, "run.name=forced", "train.channels_last=true"]))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: train.channels_last is true but torch's CPU backward crashes")
    assert "use an even train.batch_size" in result.stderr and not (tmp_path / "forced").exists()


def test_where_channels_last_would_crash_the_dtype_is_chosen_among_nchw_paths(fake_timings):
    # bf16 pays only in channels-last here: once channels-last is ruled out, fp32 is the faster NCHW path
    fake_timings({("bf16", True): 300.0, ("bf16", False): 60.0, ("none", True): 100.0, ("none", False): 80.0})
    odd = load_config(overrides=[*CRASHING, "train.batch_size=7"])
    speed = training_fast_path(odd, torch.device("cpu"), announce=False)
    assert not speed.channels_last and speed.amp is None
    even = training_fast_path(load_config(overrides=[*CRASHING, "train.batch_size=8"]), torch.device("cpu"))
    assert even.channels_last and even.amp == torch.bfloat16


def test_the_crashing_shapes_are_named_and_only_they_lose_channels_last():
    cpu = torch.device("cpu")
    narrow = build_face_model(load_config(None, ["model.depth=18", "model.width=0.125"]), 4)
    wide = build_face_model(load_config(None, ["model.depth=18", "model.width=0.25"]), 4)
    assert channels_last_crash(narrow, 63, cpu) == "backbone.layer2.0.downsample.0"
    assert channels_last_crash(narrow, 64, cpu) is None and channels_last_crash(wide, 63, cpu) is None
    assert channels_last_crash(narrow, 63, torch.device("meta")) is None  # a CPU kernel's bug only
    odd = load_config(None, ["model.width=0.125", "train.batch_size=63"])
    assert not training_fast_path(odd, cpu, announce=False).channels_last
    assert training_fast_path(odd, cpu, batch_size=64).channels_last
    with pytest.raises(UserError, match="train.channels_last is true"):
        training_fast_path(load_config(None, ["model.width=0.125", "train.channels_last=true"]), cpu, 9)


def test_refill_gives_skipped_slots_to_images_of_the_same_batch():
    images = torch.arange(3).view(3, 1, 1, 1).expand(3, 3, 2, 2).to(torch.uint8)
    skipped = [Skipped("a.jpg", "empty"), Skipped("b.jpg", "empty")]
    batch = refill(Batch(images, torch.tensor([7, 8, 9]), torch.tensor([0, 2, 3]), skipped), 5)
    assert batch.images.shape == (5, 3, 2, 2) and batch.labels.tolist() == [7, 8, 9, 7, 8]
    assert batch.indices.tolist() == [0, 2, 3, 0, 2] and torch.equal(batch.images[3], images[0])
    assert batch.skipped == skipped  # still named and counted
    whole = Batch(images, torch.tensor([7, 8, 9]), torch.tensor([0, 1, 2]), [])
    assert refill(whole, 3) is whole
