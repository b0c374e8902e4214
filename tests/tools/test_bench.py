"""The benchmarks run in a tiny configuration, and the fast path computes what the plain path computes."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import FAST_BF16, SLOW_BF16, call_cli
from torch.utils.flop_counter import FlopCounterMode

from helpers.core.config import AugmentConfig, load_config
from helpers.data.augment import BatchAugment, normalize
from helpers.model.resnet import build_face_model
from helpers.runtime.fast_path import FastPath
from helpers.tools.bench import training_flops_per_image
from helpers.training.step import TrainStep, make_optimizer

TINY_MODEL = ["--set", "model.depth=18", "--set", "model.width=0.125", "--set", "data.image_size=32"]


def test_bench_train_json(capsys):
    code, out, _ = call_cli(capsys, "bench", "train", *TINY_MODEL, "--classes", "10", "--batch-size", "8",
                            "--steps", "2", "--json")
    result = json.loads(out)
    assert code == 0
    for key in ("plain_images_per_s", "fast_images_per_s", "plain_mfu", "fast_mfu", "speedup", "conv_tflops_plain",
                "conv_tflops_fast"):
        assert result[key] > 0, key
    assert result["speedup"] == pytest.approx(result["fast_images_per_s"] / result["plain_images_per_s"])
    # The ceiling is the faster of the matmul and the model's own convolutions, so it bounds the step.
    assert result["peak_tflops_fp32"] == max(result["matmul_tflops_fp32"], result["conv_tflops_plain"])
    assert result["peak_tflops_fast"] == max(result["matmul_tflops_fast"], result["conv_tflops_fast"])
    assert 0 < result["plain_mfu"] <= 1 and 0 < result["fast_mfu"] <= 1


@pytest.mark.parametrize("rates,amp", [(FAST_BF16, "bf16"), (SLOW_BF16, "none")], ids=["fast bf16", "slow bf16"])
def test_bench_train_shows_what_auto_chose_and_the_alternatives_rates(fake_timings, capsys, rates, amp):
    fake_timings(rates)
    args = ["bench", "train", *TINY_MODEL, "--classes", "10", "--batch-size", "8", "--steps", "1"]
    code, out, _ = call_cli(capsys, *args, "--json")
    fast_path = json.loads(out)["fast_path"]
    assert code == 0 and (fast_path["amp"], fast_path["channels_last"]) == (amp, True)
    assert fast_path["probe"]["images_per_s"] == {"bf16 channels-last": rates[("bf16", True)],
                                                  "bf16 NCHW": rates[("bf16", False)],
                                                  "fp32 channels-last": rates[("none", True)],
                                                  "fp32 NCHW": rates[("none", False)]}
    code, out, _ = call_cli(capsys, *args)
    probe_line = next(line for line in out.splitlines() if line.startswith("probe"))
    assert code == 0 and f"bf16: {rates[('bf16', True)] / 100:.2f}x" in probe_line


def test_training_flops_count_the_backward_pass_as_it_runs():
    cfg = load_config(overrides=["model.depth=18", "model.width=0.125", "data.image_size=32"])
    model = build_face_model(cfg, 10).eval()
    with FlopCounterMode(display=False) as forward:
        model(torch.zeros(1, 3, 32, 32), torch.zeros(1, dtype=torch.long))
    stem = next(module for module in model.modules() if isinstance(module, torch.nn.Conv2d))
    with FlopCounterMode(display=False) as first_conv:
        stem(torch.zeros(1, 3, 32, 32))
    # Backward costs twice forward, except that no gradient flows into the input images.
    expected = 3 * forward.get_total_flops() - first_conv.get_total_flops()
    assert training_flops_per_image(model, 32, 10) == expected


def test_bench_data_json(capsys):
    code, out, _ = call_cli(capsys, "bench", "data", "--images", "60", "--batch-size", "16", "--json")
    result = json.loads(out)
    assert code == 0 and result["images"] == 60
    for key in ("naive_images_per_s", "project_images_per_s", "decode_only_images_per_s", "speedup",
                "device_augment_images_per_s"):
        assert result[key] > 0, key
    assert result["decoders_images_per_s"][result["decoder"]] > 0  # the decoder in use was timed


def test_bench_eval_json(capsys):
    code, out, _ = call_cli(capsys, "bench", "eval", *TINY_MODEL, "--json")
    result = json.loads(out)
    assert code == 0 and result["embeddings_per_s"] > 0 and result["val_pairs"] == result["test_pairs"] == 600
    assert result["unique_images"] <= 400  # every image embedded once however many pairs name it


def test_bench_onnx_json(capsys):
    code, out, err = call_cli(capsys, "bench", "onnx", *TINY_MODEL, "--batch-size", "16", "--json")
    result = json.loads(out)
    assert code == 0, err
    assert result["onnx_file_mib"] > 0 and result["exporter"] == "torch.onnx.export (dynamo)" and result["opset"] > 0
    for key in ("torch_embeddings_per_s", "onnx_embeddings_per_s", "torch_model_embeddings_per_s",
                "onnx_model_embeddings_per_s"):
        assert result[key] > 0, key
    assert result["speedup"] == pytest.approx(result["onnx_embeddings_per_s"] / result["torch_embeddings_per_s"])
    assert result["batch_size"] == 16 and result["unique_images"] <= 400


def test_bench_table_puts_the_ratio_first(capsys):
    code, out, _ = call_cli(capsys, "bench", "data", "--images", "30", "--batch-size", "10")
    assert code == 0 and out.splitlines()[0].startswith("speedup")


@pytest.mark.parametrize("amp,tolerance", [(None, 1e-4), (torch.bfloat16, 5e-2)])
def test_fast_step_gives_the_plain_loss(amp, tolerance):
    cfg = load_config(overrides=["model.depth=18", "model.width=0.125", "data.image_size=32"])
    torch.manual_seed(0)
    plain = build_face_model(cfg, 10)
    fast = build_face_model(cfg, 10)
    fast.load_state_dict(plain.state_dict())
    fast.to(memory_format=torch.channels_last)
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(8) % 10
    plain_loss = F.cross_entropy(plain(normalize(images), labels), labels)
    identity = BatchAugment(AugmentConfig(crop_scale=(1, 1), crop_ratio=(1, 1), flip=0.0), 32)
    speed = FastPath(amp=amp, channels_last=True, compile=False, fused=False)
    stepper = TrainStep(fast, fast, make_optimizer(cfg.optim, fast), speed, identity, torch.device("cpu"))
    fast_loss, _ = stepper.forward_backward(images, labels)
    assert fast_loss.item() == pytest.approx(plain_loss.item(), rel=tolerance)
