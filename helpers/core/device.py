"""Where a run computes, and how fast: device choice and the speed settings for it."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from helpers.core.config import TrainConfig
from helpers.core.errors import UserError, one_line


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """CUDA, then MPS, then the CPU; ``name`` (cpu, cuda, cuda:N, mps) overrides. A GPU the installed torch
    has no kernels for is refused, naming the build that has them (:func:`gpu_kernels`)."""
    device = _named_device(name, local_rank)
    if device.type == "cuda":
        gpu_kernels(device.index or 0)
    return device


def _named_device(name: str, local_rank: int) -> torch.device:
    """The device ``name`` asks for, checked to be there."""
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


# CUDA 13 builds dropped Maxwell, Pascal and Volta (sm_50-sm_72); the CUDA 12.6 builds still carry them.
OLDER_GPU_INDEX = "https://download.pytorch.org/whl/cu126"
NO_KERNEL_IMAGE = "no kernel image is available"  # what CUDA says when a kernel lacks this GPU's architecture


def kernels_for(capability: tuple[int, int], arch_list: list[str]) -> str | None:
    """The entry of ``arch_list`` (``torch.cuda.get_arch_list()``) whose kernels run on a GPU of ``capability``,
    or None. A cubin ``sm_XY`` runs on GPUs of major X from minor Y up; PTX ``compute_XY`` is compiled by the
    driver for XY and every later GPU; an ``a``-suffixed entry (sm_90a) runs on its own GPU only."""
    device = 10 * capability[0] + capability[1]
    cubins, ptx = [], []
    for kind, number, suffix, entry in _architectures(arch_list):
        if suffix == "a":
            runs = number == device
        elif kind == "sm":
            runs = number // 10 == capability[0] and number <= device
        else:
            runs = number <= device
        if runs:
            (cubins if kind == "sm" else ptx).append((number, entry))
    found = max(cubins) if cubins else max(ptx) if ptx else None
    return found[1] if found else None


def _architectures(arch_list: list[str]) -> list[tuple[str, int, str, str]]:
    """Each ``sm_XY``/``compute_XY`` entry as (kind, XY, suffix, entry); others (a ROCm gfx name) are left out."""
    found = []
    for entry in arch_list:
        match = re.fullmatch(r"(sm|compute)_(\d+)([a-z]?)", entry)
        if match:
            found.append((match.group(1), int(match.group(2)), match.group(3), entry))
    return found


def missing_kernels_sentence(name: str, capability: tuple[int, int], arch_list: list[str], torch_version: str,
                             cuda: str, vision_version: str | None) -> str:
    """One sentence: which GPU, which architecture, that this torch (its version and CUDA) lacks it, and the
    pip line of the build that has it: the same release for CUDA 12.6 for older GPUs, a newer torch for newer."""
    installed = f"the installed torch {torch_version} (CUDA {cuda})"
    if kernels_for(capability, arch_list) is None:
        lacks = f", for which {installed} has no kernels (it is built for {', '.join(arch_list)})"
    else:  # torch lists the architecture, yet CUDA found a kernel without it
        lacks = f", and {installed} lacks a kernel for it ({NO_KERNEL_IMAGE} for execution on the device)"
    numbers = [number for _, number, _, _ in _architectures(arch_list)]
    if numbers and 10 * capability[0] + capability[1] > max(numbers):
        fix = "install a newer torch: pip install --upgrade torch torchvision"
    else:
        vision = f" torchvision=={vision_version.split('+')[0]}" if vision_version else ""
        fix = (f"install the same release built for CUDA 12.6, which has them: pip install "
               f"torch=={torch_version.split('+')[0]}{vision} --index-url {OLDER_GPU_INDEX}")
    return f"the {name} GPU is sm_{capability[0]}{capability[1]}{lacks}; {fix}"


def gpu_kernels(index: int = 0) -> str:
    """The entry of the installed torch's architectures that runs on GPU ``index`` ("" where torch does not
    list them: a ROCm build); a GPU none runs on is refused with :func:`missing_kernels_sentence`."""
    arch_list = torch.cuda.get_arch_list()
    if torch.version.cuda is None or not arch_list:
        return ""
    capability = torch.cuda.get_device_capability(index)
    found = kernels_for(capability, arch_list)
    if found is None:
        raise UserError(_kernel_sentence(index, capability, arch_list))
    return found


def _kernel_sentence(index: int, capability: tuple[int, int], arch_list: list[str]) -> str:
    try:
        vision = importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:
        vision = None
    return missing_kernels_sentence(torch.cuda.get_device_name(index), capability, arch_list, torch.__version__,
                                    torch.version.cuda, vision)


@contextmanager
def kernel_errors_explained(device: torch.device):
    """Turn CUDA's "no kernel image is available" met in the block into the sentence that names the fix."""
    try:
        yield
    except RuntimeError as error:
        if device.type != "cuda" or NO_KERNEL_IMAGE not in str(error):
            raise
        index = device.index or 0
        capability = torch.cuda.get_device_capability(index)
        raise UserError(_kernel_sentence(index, capability, torch.cuda.get_arch_list())) from None


@dataclass(frozen=True)
class FastPath:
    """The speed settings a run uses: autocast dtype, memory format, compilation, fused optimiser kernels."""

    amp: torch.dtype | None
    channels_last: bool
    compile: bool
    fused: bool

    def place(self, module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """``module`` moved to ``device``, in this path's memory format."""
        module.to(device)
        if self.channels_last:
            module.to(memory_format=torch.channels_last)
        return module

    def describe(self) -> dict:
        """The settings as plain values, for JSON reports."""
        return {"amp": str(self.amp).replace("torch.", "") if self.amp else "none",
                "channels_last": self.channels_last, "compile": self.compile, "fused_optimizer": self.fused}


AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def amp_name(dtype: torch.dtype | None) -> str:
    """The ``train.amp`` value of an autocast dtype (none, bf16, fp16)."""
    return next(name for name, value in AMP_DTYPES.items() if value == dtype)


# optim.name -> torch optimiser: training builds from it, and the fast-path probe steps the same kind
OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


def amp_choices(setting: str, device: torch.device) -> list[str]:
    """What ``train.amp`` may become on ``device``, best first: ``auto`` takes the first that works, a set value
    is taken as it is. On CUDA bf16 where the GPU has it, then fp16 with loss scaling; on the CPU fp32 (bf16
    is emulated, and slower, without AMX: BENCHMARKS.md)."""
    if setting != "auto":
        return [setting]
    if device.type != "cuda":
        return ["none"]
    return (["bf16"] if torch.cuda.is_bf16_supported() else []) + ["fp16", "none"]


def channels_last_choices(setting, device: torch.device) -> list[bool]:
    """What ``train.channels_last`` may become: ``auto`` tries it on CUDA and the CPU (oneDNN runs it faster)."""
    if setting != "auto":
        return [setting]
    return [True, False] if device.type in ("cuda", "cpu") else [False]


def fused_choices(device: torch.device) -> list[bool]:
    """Fused optimiser kernels are tried on CUDA; elsewhere the stock for-each step runs."""
    return [True, False] if device.type == "cuda" else [False]


def first_working(choices: list, problem) -> object:
    """The first of ``choices`` for which ``problem(choice)`` is None; the last, the plain path, is not tried."""
    return next((choice for choice in choices[:-1] if problem(choice) is None), choices[-1])


def fast_path(train: TrainConfig, device: torch.device, optimizer: str = "sgd") -> FastPath:
    """Resolve the ``auto`` speed settings for ``device`` and the ``optimizer`` (sgd, adam, adamw) a run uses.

    Each ``auto`` setting takes the first of its choices (:func:`amp_choices`,
    :func:`channels_last_choices`, :func:`fused_choices`) that passes
    :func:`probe_problem`, so a kernel this torch or this GPU lacks costs speed,
    not the run. ``selftest`` reports from the same functions.
    """
    amp = first_working(amp_choices(train.amp, device), lambda choice: probe_problem(device, amp=choice))
    channels_last = first_working(channels_last_choices(train.channels_last, device),
                                  lambda choice: probe_problem(device, channels_last=choice))
    fused = first_working(fused_choices(device),
                          lambda choice: probe_problem(device, fused=choice, optimizer=optimizer))
    return FastPath(AMP_DTYPES[amp], channels_last, train.compile, fused)


@functools.lru_cache(maxsize=None)
def probe_problem(device: torch.device, amp: str = "none", channels_last: bool = False, fused: bool = False,
                  optimizer: str = "sgd") -> str | None:
    """Why these settings fail on ``device`` (one line), or None when three training steps of a tiny conv net
    run with them and end on a finite loss. Asked once per process; the global RNG states are left untouched."""
    try:
        return _probe_steps(device, amp, channels_last, fused, optimizer)
    except Exception as error:  # noqa: BLE001 - any failure means: not this path
        return one_line(error)


def own_rng(device: torch.device):
    """A context in which code may seed and draw as it pleases: the caller's random states (a notebook's, a
    run's) are put back after, ``device``'s generator included."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def _probe_steps(device: torch.device, amp: str, channels_last: bool, fused: bool, optimizer: str) -> str | None:
    with own_rng(device):
        return _train_tiny_net(device, amp, channels_last, fused, optimizer)


def _train_tiny_net(device: torch.device, amp: str, channels_last: bool, fused: bool, optimizer: str) -> str | None:
    torch.manual_seed(0)
    # Only ops with deterministic kernels (a mean, not adaptive pooling), so train.deterministic cannot fail it
    features = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8),
                                   torch.nn.ReLU()).to(device)
    head = torch.nn.Linear(8, 4).to(device)
    images = torch.randn(8, 3, 16, 16, device=device)
    labels = torch.arange(8, device=device) % 4
    if channels_last:
        features.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    step = OPTIMIZERS[optimizer]([*features.parameters(), *head.parameters()], lr=1e-3,
                                  **({"fused": True} if fused else {}))
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    for _ in range(3):
        with torch.autocast(device.type, dtype=AMP_DTYPES[amp], enabled=amp != "none"):
            loss = torch.nn.functional.cross_entropy(head(features(images).mean(dim=(2, 3))), labels)
        scaler.scale(loss).backward()
        scaler.step(step)
        scaler.update()
        step.zero_grad(set_to_none=True)
    return None if bool(torch.isfinite(loss)) else f"the loss was {loss.item()} after three steps"


def distributed_backend() -> str:
    """The torch.distributed backend under torchrun: NCCL between GPUs where torch has it, gloo otherwise."""
    return "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"


def default_workers(setting, device: torch.device) -> int:
    """``data.num_workers: auto``: decoding is cheap next to a CPU step, so CPU runs keep their cores for the model."""
    if setting != "auto":
        return setting
    cores = os.cpu_count() or 1
    if device.type == "cpu":
        return 0 if cores <= 2 else 2
    return min(8, cores)
