"""The self-test: its fallbacks are the engine's, its epoch arithmetic is right, and it runs on this CPU."""

from __future__ import annotations

import json
import sys

import pytest
import torch
import torchvision

from conftest import CU126_ARCHS, FAST_BF16, SLOW_BF16, TINY, call_cli
from helpers.core.config import load_config
from helpers.core.course import COURSE_TRAIN_IMAGES
from helpers.data import codec
from helpers.data.datasets import training_set
from helpers.data.images import decode_rgb
from helpers.data.layout import open_data
from helpers.runtime import probe as probe_module
from helpers.runtime.device import distributed_backend, init_distributed
from helpers.runtime.fast_path import fast_path
from helpers.runtime.resolve import Runtime
from helpers.tools.cost_estimate import epoch_estimate, largest_batch, print_epoch_estimate
from helpers.tools.selftest import (AMP_LABELS, FAILED, NOT_HERE, OK, SKIPPED, PathCheck, SelfTestReport, ddp_check,
                                    decoder_checks, gpu_kernels_check, quick_selftest, speed_checks)
from helpers.training.run import run_context

CUDA = torch.device("cuda", 0)


@pytest.fixture(autouse=True)
def fresh_decisions():
    """The decisions are cached per process; each test starts from, and leaves, a clean cache."""
    caches = (probe_module.probe_problem, probe_module.timed_probe, codec.decoder_problem, codec.image_decoder,
              codec._library)
    for cache in caches:
        cache.cache_clear()
    yield
    for cache in caches:
        cache.cache_clear()


def failing_probe(monkeypatch, **broken):
    """Make the speed probe fail for the settings in ``broken`` (e.g. channels_last=True), as a device lacking
    them would; other settings probe for real on the CPU and pass elsewhere."""
    real = probe_module._probe_steps

    def probe(device, amp, channels_last, fused, optimizer):
        settings = {"amp": amp, "channels_last": channels_last, "fused": fused}
        if any(settings[key] == value for key, value in broken.items()):
            return "RuntimeError: no kernel for this here"
        return real(device, amp, channels_last, fused, optimizer) if device.type == "cpu" else None

    monkeypatch.setattr(probe_module, "_probe_steps", probe)


def by_path(report_or_checks) -> dict:
    checks = getattr(report_or_checks, "paths", report_or_checks)
    return {check.path: check for check in checks}


# ----------------------------------------------------------------------------- the arithmetic


def test_epoch_estimate_arithmetic():
    # 1,000 images in batches of 64: the engine trains 15 whole batches, 960 images.
    # Two workers decode 2 x 400 img/s, faster than the 100 img/s step: the step sets the pace, 9.6 s.
    # An evaluation of 500 images at 250 img/s takes 2 s, every second epoch: 1 s per epoch.
    estimate = epoch_estimate(1000, 64, 100.0, 400.0, 2, eval_images=500, eval_images_per_s=250.0, eval_every=2,
                              max_minutes=1.0)
    assert estimate["images_per_epoch"] == 960
    assert estimate["train_minutes"] * 60 == pytest.approx(9.6)
    assert estimate["eval_minutes"] * 60 == pytest.approx(2.0)
    assert estimate["epoch_minutes"] * 60 == pytest.approx(10.6)
    # one evaluation before training, then 10.6 s per epoch in the 58 s left
    assert estimate["epochs_in_budget"] == pytest.approx(58 / 10.6)


def test_epoch_estimate_decoding_in_the_training_process_adds_and_slow_workers_set_the_pace():
    # No workers: each image costs 1/100 s of step and 1/400 s of decoding, 80 img/s: 960 images in 12 s.
    alone = epoch_estimate(1000, 64, 100.0, 400.0, 0)
    assert alone["train_minutes"] * 60 == pytest.approx(12.0)
    assert "epochs_in_budget" not in alone and alone["eval_minutes"] == 0
    # One worker at 50 img/s cannot feed a 100 img/s step: 960 images in 19.2 s.
    starved = epoch_estimate(1000, 64, 100.0, 50.0, 1)
    assert starved["train_minutes"] * 60 == pytest.approx(19.2)


def test_largest_batch_doubles_until_memory_cap_or_bound():
    assert largest_batch(lambda batch: batch <= 100, 8, 1024) == (64, "out of memory at 128")
    assert largest_batch(lambda batch: True, 8, 40) == (32, "stopped at the cap of 40")
    tried = []
    found = largest_batch(lambda batch: tried.append(batch) or True, 8, 1024,
                          bound=lambda batch: "too slow" if batch > 16 else None)
    assert found == (16, "too slow") and tried == [16]


# ----------------------------------------------------------------------------- the fallbacks agree


def test_engine_and_selftest_pick_the_same_fallback(monkeypatch, demo_root, tmp_path, capsys):
    failing_probe(monkeypatch, channels_last=True)
    overrides = TINY + [f"data.root={demo_root}", f"run.out_dir={tmp_path}", "run.name=agree", "train.eval_tta=true"]
    with run_context(load_config(None, overrides)) as runtime:
        fast = runtime.fast_path
    report = quick_selftest(None, overrides)
    assert "training can run" in capsys.readouterr().out
    assert fast.channels_last is False
    assert report.fast_path == fast.describe()
    check = by_path(report)["channels-last"]
    assert (check.status, check.used, check.instead) == (FAILED, False, "NCHW (channels-last off)")
    assert "no kernel" in check.note
    assert report.can_train  # a fallback, not a failure
    assert by_path(report)[f"JPEG decoder: {codec.image_decoder()}"].used


def test_a_set_value_that_fails_stops_training(monkeypatch):
    failing_probe(monkeypatch, channels_last=True)
    cfg = load_config(overrides=["train.channels_last=true"])
    cpu = torch.device("cpu")
    fast = fast_path(cfg, cpu)
    assert fast.channels_last  # a set value is taken as it is, not probed
    checks = speed_checks(cfg, Runtime(cpu, fast, 0, False))
    check = by_path(checks)["channels-last"]
    assert check.status == FAILED and check.used and "train.channels_last=auto" in check.instead
    assert not SelfTestReport({}, fast.describe(), checks).can_train


def test_cuda_choices_fall_back_in_order(monkeypatch):
    """What the engine picks on a GPU without bf16 or fused kernels, and what the report says; no GPU needed."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    failing_probe(monkeypatch, amp="bf16", fused=True)
    cfg = load_config(overrides=["optim.name=adamw"])
    fast = fast_path(cfg, CUDA)
    assert (fast.amp, fast.channels_last, fast.fused) == (torch.float16, True, False)
    checks = by_path(speed_checks(cfg, Runtime(CUDA, fast, 0, False)))
    bf16, fp16 = checks[AMP_LABELS["bf16"]], checks[AMP_LABELS["fp16"]]
    assert (bf16.status, bf16.used, bf16.instead) == (FAILED, False, AMP_LABELS["fp16"])
    assert (fp16.status, fp16.used) == (OK, True)
    fused = checks["fused optimizer (adamw)"]
    assert (fused.status, fused.used, fused.instead) == (FAILED, False, "the stock for-each adamw step")


def test_cuda_paths_are_not_applicable_on_the_cpu_and_bf16_is_timed(fake_timings):
    fake_timings(SLOW_BF16)
    cfg = load_config()
    cpu = torch.device("cpu")
    fast = fast_path(cfg, cpu)
    checks = by_path(speed_checks(cfg, Runtime(cpu, fast, 0, False), fast.timing))
    for path in (AMP_LABELS["fp16"], "fused optimizer (sgd)"):
        assert checks[path].status == NOT_HERE and not checks[path].used
    assert checks[AMP_LABELS["none"]].used and checks[AMP_LABELS["none"]].status == OK
    bf16 = checks[AMP_LABELS["bf16"]]
    assert (bf16.status, bf16.used, bf16.note) == (OK, False, "bf16: 0.40x here, not taken")


@pytest.mark.parametrize("rates,amp,verdict", [(FAST_BF16, "bf16", "bf16: 2.20x faster here, taken"),
                                               (SLOW_BF16, "none", "bf16: 0.40x here, not taken")],
                         ids=["fast bf16", "slow bf16"])
def test_selftest_json_reports_what_the_timed_probe_measured_and_chose(fake_timings, capsys, rates, amp, verdict):
    fake_timings(rates)
    code, out, _ = call_cli(capsys, "selftest", "--quick", "--json", *[a for o in TINY for a in ("--set", o)])
    report = json.loads(out)
    assert code == 0 and report["can_train"]
    probe = report["fast_path"]["probe"]
    assert report["fast_path"]["amp"] == amp and probe["decided"] and verdict in probe["verdicts"]
    assert probe["images_per_s"]["bf16 channels-last"] == rates[("bf16", True)]
    bf16 = {c["path"]: c for c in report["paths"]}[AMP_LABELS["bf16"]]
    assert (bf16["status"], bf16["used"], bf16["note"]) == (OK, amp == "bf16", verdict)


def test_without_torchcodec_torchvision_decodes_and_its_deprecation_shows(monkeypatch):
    for name in ["torchcodec", *(name for name in sys.modules if name.startswith("torchcodec."))]:
        monkeypatch.setitem(sys.modules, name, None)  # importing it now raises ImportError
    assert codec.image_decoder() == "torchvision"
    checks = by_path(decoder_checks())
    assert (checks["JPEG decoder: torchcodec"].status, checks["JPEG decoder: torchcodec"].instead) == \
        (FAILED, "torchvision")
    assert checks["JPEG decoder: torchvision"].used
    if tuple(int(part) for part in torchvision.__version__.split(".")[:2]) >= (0, 29):
        assert "deprecated" in checks["JPEG decoder: torchvision"].note
    assert tuple(decode_rgb(codec.sample_jpeg()).shape) == (3, 12, 16)


def test_torchcodec_takes_over_when_torchvision_cannot_decode(monkeypatch):
    pytest.importorskip("torchcodec")
    jpeg = codec.sample_jpeg()
    expected = codec.decode_image(jpeg, "torchvision")
    assert torch.equal(codec.decode_image(jpeg, "torchcodec"), expected)  # the same pixels
    codec._library.cache_clear()

    def removed(*args, **kwargs):
        raise RuntimeError("image decoding was removed from torchvision")

    monkeypatch.setattr(torchvision.io, "decode_image", removed)
    assert codec.image_decoder() == "torchcodec"
    assert torch.equal(decode_rgb(jpeg), expected)
    check = by_path(decoder_checks())["JPEG decoder: torchvision"]
    assert (check.status, check.used, check.instead) == (FAILED, False, "torchcodec")


def test_torchrun_uses_the_backend_the_selftest_checks(monkeypatch):
    chosen = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda backend: chosen.append(backend))
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 0)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    init_distributed()
    monkeypatch.undo()
    check = ddp_check(torch.device("cpu"))
    assert chosen == [distributed_backend()] and f"({chosen[0]}, one process)" in check.path
    assert check.status == OK and not check.used


# ----------------------------------------------------------------------------- on this CPU


def test_selftest_json_reports_every_path_and_the_course_epoch(capsys):
    code, out, _ = call_cli(capsys, "selftest", "--json", "--seconds", "0.5",
                            *[a for o in TINY for a in ("--set", o)])
    report = json.loads(out)
    assert code == 0 and report["can_train"]
    paths = {c["path"]: c for c in report["paths"]}
    for prefix in ("kernels for this GPU", "autocast bf16", "autocast fp16", "fp32", "channels-last", "fused optimizer", "torch.compile",
                   "JPEG decoder: torchcodec", "JPEG decoder: torchvision", "JPEG decoding in loader workers",
                   "JPEG decoding on the device", "torchrun / DDP", "checkpoint save -> load -> resume",
                   "evaluation embedding", "training step"):
        assert any(path.startswith(prefix) for path in paths), prefix
    assert paths["torch.compile of the training step"]["status"] == SKIPPED
    assert all(c["status"] in (OK, NOT_HERE, SKIPPED) or not c["used"] for c in report["paths"])
    cost = report["cost"]
    assert cost["images_per_s"] > 0 and cost["largest_batch"] >= 8 and cost["data"] == "the course data"
    assert cost["epoch"]["train_images"] == COURSE_TRAIN_IMAGES and cost["epoch"]["epoch_minutes"] > 0


def test_compile_check_is_time_boxed_and_blocks_a_run_that_compiles(capsys):
    code, out, _ = call_cli(capsys, "selftest", "--quick", "--json", "--compile", "--compile-seconds", "1",
                            *[a for o in TINY for a in ("--set", o)], "--set", "train.compile=true")
    check = {c["path"]: c for c in json.loads(out)["paths"]}["torch.compile of the training step"]
    assert check["status"] == FAILED and "1 s time box" in check["note"] and check["used"]
    assert code == 1


def test_the_epoch_estimate_counts_the_users_data_root(demo_root, capsys):
    overrides = TINY + ["train.max_minutes=30"]
    cost = print_epoch_estimate(None, overrides, data_root=demo_root, seconds=0.5)
    printed = capsys.readouterr().out
    assert "one epoch of" in printed and str(demo_root) in printed and "fit train.max_minutes=30" in printed
    cfg = load_config(None, overrides)
    images = len(training_set(open_data(demo_root), cfg.data.singletons, seed=cfg.train.seed).paths)
    epoch = cost["epoch"]
    assert epoch["train_images"] == images and epoch["images_per_epoch"] == images // 8 * 8
    assert cost["eval_images"] > 0 and epoch["epochs_in_budget"] > 0 and cost["images_per_s"] > 0


def test_selftest_on_a_gpu_without_kernels_names_the_wheel_to_install(fake_gpu, capsys):
    fake_gpu()  # a V100 and the default CUDA 13.0 wheels
    code, out, err = call_cli(capsys, "selftest", "--quick", *[a for o in TINY for a in ("--set", o)])
    assert code == 1 and out == ""
    assert err.startswith("error: the Tesla V100-SXM2-32GB GPU is sm_70, for which the installed torch "
                          "2.9.1+cu130 (CUDA 13.0) has no kernels")
    assert err.rstrip().endswith("pip install torch==2.9.1 torchvision==0.24.1 "
                                 "--index-url https://download.pytorch.org/whl/cu126")


def test_the_kernel_row_says_which_of_torchs_architectures_runs_here(fake_gpu):
    fake_gpu(arch_list=CU126_ARCHS, torch_version="2.9.1+cu126", cuda="12.6")
    assert gpu_kernels_check(CUDA) == PathCheck("kernels for this GPU in torch", OK, True,
                                                "sm_70: torch's sm_70 kernels")
    fake_gpu(name="NVIDIA RTX PRO 6000", capability=(12, 0), arch_list=["sm_80", "sm_90", "compute_90"])
    note = gpu_kernels_check(CUDA).note
    assert note == "sm_120: no sm_120 kernels; the driver compiles torch's compute_90 PTX at first use (a slow start)"
    assert gpu_kernels_check(torch.device("cpu")).status == NOT_HERE
