"""Shared fixtures: tiny data roots written on the fly, and the path of the read-only shared faces."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
ORL = SHARED / "faces" / "orl"

# Settings that make a training run take seconds on two cores.
TINY = ["model.depth=18", "model.width=0.125", "data.image_size=32", "train.batch_size=8",
        "tracking.wandb.mode=disabled", "train.progress=false", "data.num_workers=0"]


# Timed-probe results (images/s per (train.amp, channels-last)) for :func:`fake_timings`: a CPU with fast bf16
# kernels, and one that emulates bf16.
FAST_BF16 = {("bf16", True): 220.0, ("bf16", False): 180.0, ("none", True): 100.0, ("none", False): 80.0}
SLOW_BF16 = {("bf16", True): 40.0, ("bf16", False): 30.0, ("none", True): 100.0, ("none", False): 80.0}


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory):
    """The per-user cache (the timed probe's verdicts) in a folder of the test session, never the user's own;
    subprocesses inherit it."""
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if before is None:
        os.environ.pop("XDG_CACHE_HOME")
    else:
        os.environ["XDG_CACHE_HOME"] = before


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path, monkeypatch) -> Path:
    """Each test starts on a machine with nothing cached: the per-user cache is a folder of its own."""
    folder = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder))
    return folder


@pytest.fixture
def fake_timings(monkeypatch):
    """``fake(rates, not_finite=(), spread=1.0)`` makes the timed probe measure ``rates`` (images/s per (amp,
    channels-last)), each candidate's timed rounds ``spread`` times apart, from then on, as a fresh process
    would (the verdict cached on disk stays), and returns the list of candidate lists it is asked to time, one
    per probe run. The decisions cached in the process are cleared after the test too, so that no faked timing
    reaches another."""
    from helpers.runtime import probe as probe_module
    from helpers.runtime.probe import Measured

    def clear():
        probe_module.probe_problem.cache_clear()
        probe_module.timed_probe.cache_clear()

    def fake(rates: dict, not_finite=(), spread: float = 1.0) -> list:
        clear()
        asked = []

        def measure(device, shape, candidates):
            asked.append(list(candidates))
            return tuple(Measured(amp, layout, 0.0 if (amp, layout) in not_finite else rates[(amp, layout)],
                                  None if (amp, layout) in not_finite else rates[(amp, layout)],
                                  "the loss was not finite" if (amp, layout) in not_finite else None, spread)
                         for amp, layout in candidates)

        monkeypatch.setattr(probe_module, "_measure", measure)
        return asked

    yield fake
    clear()


def write_image(path: Path, seed: int = 0, size=(20, 20), mode: str = "RGB", fmt: str = "JPEG") -> Path:
    """A small random picture in ``mode``, saved as ``fmt``."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    if mode != "RGB":
        image = image.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt)
    return path


def write_f25_root(root: Path, labels: dict[str, int], pairs: list[str] | None = None, test_pairs=None) -> Path:
    """An F25-style root whose train labels.txt maps file -> class id, with ver_data pairs if given."""
    images = root / "cls_data" / "train" / "images"
    for i, name in enumerate(labels):
        write_image(images / name, seed=i)
    (root / "cls_data" / "train" / "labels.txt").write_text("".join(f"{n} {c}\n" for n, c in labels.items()))
    if pairs is not None:
        names = {token for line in pairs + (test_pairs or []) for token in line.split()[:2]}
        for i, name in enumerate(sorted(names)):
            write_image(root / "ver_data" / name, seed=100 + i)
        (root / "val_pairs.txt").write_text("".join(line + "\n" for line in pairs))
    if test_pairs is not None:
        (root / "test_pairs.txt").write_text("".join(line + "\n" for line in test_pairs))
    return root


def wait_for_checkpoint(process: subprocess.Popen, last: Path, ready, seconds: float = 300, poll: float = 0.02) -> None:
    """Wait until the training ``process`` has saved a ``last`` whose state satisfies ``ready(state)``, or has
    ended, or ``seconds`` passed: the moment a test kills or signals it."""
    import torch

    deadline = time.time() + seconds
    while time.time() < deadline and process.poll() is None:
        if last.exists() and ready(torch.load(last, weights_only=True)):
            return
        time.sleep(poll)


def run_cli(*args: str, cwd: Path = ROOT, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m helpers ARGS`` in a subprocess, exactly as a user runs it (costs a torch import)."""
    return subprocess.run([sys.executable, "-m", "helpers", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """A small demo root at 32x32 pixels, shared by the tests that train."""
    from helpers.data.demo import make_demo_data

    root = tmp_path_factory.mktemp("demo") / "demo"
    make_demo_data(root, identities=12, images_per_identity=6, verification_identities=20, seed=0, size=32,
                   difficulty=0.5)  # milder nuisances: a few seconds of training must show learning
    return root


@pytest.fixture(scope="session")
def trained_run(demo_root, tmp_path_factory) -> Path:
    """A run folder holding a briefly trained tiny model (best.pt, last.pt, metrics.jsonl)."""
    from helpers.training.engine import train

    out = tmp_path_factory.mktemp("runs")
    # The fast path is pinned: left to the timed probe, a loaded machine would train another model (bf16 or fp32).
    result = train(None, TINY + [f"data.root={demo_root}", f"run.out_dir={out}", "run.name=trained",
                                 "train.epochs=6", "optim.name=adam", "optim.lr=0.005", "train.amp=none",
                                 "train.channels_last=false"])
    return result.run_dir


@pytest.fixture
def orl() -> Path:
    if not ORL.is_dir():
        pytest.skip("../shared/faces/orl is not here")
    return ORL


def call_cli(capsys, *args) -> tuple[int, str, str]:
    """The command line in this process: (exit status, stdout, stderr); cheaper than :func:`run_cli`."""
    from helpers.cli import main

    try:
        code = main([str(a) for a in args])
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# torch.cuda.get_arch_list() of the default (CUDA 13.0) and the CUDA 12.6 wheels on x86_64
CU130_ARCHS = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]
CU126_ARCHS = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]


@pytest.fixture
def fake_gpu(monkeypatch):
    """``fake_gpu(name, capability, arch_list, ...)``: torch sees one CUDA GPU of that name and capability,
    and is a build (version, CUDA, torchvision version) with those architectures' kernels. No GPU is needed."""
    import importlib.metadata

    import torch

    real_version = importlib.metadata.version

    def make(name="Tesla V100-SXM2-32GB", capability=(7, 0), arch_list=CU130_ARCHS, torch_version="2.9.1+cu130",
             cuda="13.0", vision="0.24.1+cu130"):
        def version(package):
            if package != "torchvision":
                return real_version(package)
            if vision is None:
                raise importlib.metadata.PackageNotFoundError(package)
            return vision

        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
        monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(arch_list))
        monkeypatch.setattr(torch.version, "cuda", cuda)
        monkeypatch.setattr(torch, "__version__", torch_version)
        monkeypatch.setattr(importlib.metadata, "version", version)

    return make
