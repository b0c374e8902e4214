"""Where a run computes: device choice, the GPU kernels the installed torch has, the process group of a torchrun
job, loader workers, and the random states a check may borrow."""

from __future__ import annotations

import importlib.metadata
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from helpers.core.errors import UserError


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


def synchronize(device: torch.device) -> None:
    """Wait for ``device`` to finish its queued work (a no-op off CUDA), before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def own_rng(device: torch.device):
    """A context in which code may seed and draw as it pleases: the caller's random states (a notebook's, a
    run's) are put back after, ``device``'s generator included."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def default_workers(setting, device: torch.device) -> int:
    """``data.num_workers: auto``: decoding is cheap next to a CPU step, so CPU runs keep their cores for the model."""
    if setting != "auto":
        return setting
    cores = os.cpu_count() or 1
    if device.type == "cpu":
        return 0 if cores <= 2 else 2
    return min(8, cores)


def distributed_backend() -> str:
    """The torch.distributed backend under torchrun: NCCL between GPUs where torch has it, gloo otherwise."""
    return "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 without one)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Distributed:
    """Join the process group torchrun describes (NCCL on GPUs, gloo on the CPU); a no-op without torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Distributed()
    if not dist.is_initialized():
        dist.init_process_group(distributed_backend())
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
