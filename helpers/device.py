"""Where a run computes, and how fast: device choice and the speed settings for it."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .errors import UserError


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """CUDA, then MPS, then the CPU; ``name`` (cpu, cuda, cuda:N, mps) overrides."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"train.device is {name} but no CUDA GPU is available")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("train.device is mps but MPS is not available")
    if name == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(name)


@dataclass(frozen=True)
class FastPath:
    """The speed settings a run uses: autocast dtype, memory format, compilation, fused optimiser kernels."""

    amp: torch.dtype | None
    channels_last: bool
    compile: bool
    fused: bool


def fast_path(train: dict, device: torch.device) -> FastPath:
    """Resolve the ``auto`` speed settings for ``device`` (the choices are measured in BENCHMARKS.md).

    On CUDA: bf16 autocast where the GPU has it (fp16 with loss scaling
    otherwise), channels_last, fused optimisers. On the CPU: fp32 (bf16 is
    emulated, and slower, without AMX) with channels_last, which oneDNN runs faster.
    """
    cuda = device.type == "cuda"
    amp = train["amp"]
    if amp == "auto":
        amp = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "none"
    dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    channels_last = device.type in ("cuda", "cpu") if train["channels_last"] == "auto" else train["channels_last"]
    return FastPath(dtype, channels_last, train["compile"], fused=cuda)


def default_workers(setting, device: torch.device) -> int:
    """``data.num_workers: auto``: decoding is cheap next to a CPU step, so CPU runs keep their cores for the model."""
    if setting != "auto":
        return setting
    cores = os.cpu_count() or 1
    if device.type == "cpu":
        return 0 if cores <= 2 else 2
    return min(8, cores)


def describe_environment() -> dict:
    """Where this runs (Colab, Kaggle or local), with the device, GPU name and memory when there is one."""
    import platform

    from .runtime import platform as where

    device = pick_device()
    info = {"platform": where(), "python": platform.python_version(), "torch": torch.__version__,
            "device": str(device), "cpu_cores": os.cpu_count()}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info.update(gpu=properties.name, gpu_memory_gib=round(properties.total_memory / 2 ** 30, 1),
                    gpus=torch.cuda.device_count(), bf16=torch.cuda.is_bf16_supported())
    return info
