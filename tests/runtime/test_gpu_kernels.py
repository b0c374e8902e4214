"""Device choice refuses a GPU the installed torch has no kernels for, and names the wheel that has them."""

from __future__ import annotations

import pytest
import torch
from conftest import CU126_ARCHS, CU130_ARCHS

from helpers.core.errors import UserError
from helpers.runtime.device import kernel_errors_explained, kernels_for, missing_kernels_sentence, pick_device

V100_FIX = ("the Tesla V100-SXM2-32GB GPU is sm_70, for which the installed torch 2.9.1+cu130 (CUDA 13.0) has no "
            "kernels (it is built for sm_75, sm_80, sm_86, sm_90, sm_100, sm_120); install the same release built "
            "for CUDA 12.6, which has them: pip install torch==2.9.1 torchvision==0.24.1 "
            "--index-url https://download.pytorch.org/whl/cu126")


@pytest.mark.parametrize("capability, arch_list, runs", [
    ((7, 0), CU130_ARCHS, None),  # a V100 on the default wheels: CUDA 13 dropped Volta
    ((7, 0), CU126_ARCHS, "sm_70"),
    ((7, 5), CU130_ARCHS, "sm_75"),  # a T4 (Kaggle)
    ((8, 6), ["sm_80", "sm_90"], "sm_80"),  # a cubin runs on later minors of its major
    ((8, 0), ["sm_86"], None),  # ... not on earlier ones
    ((10, 0), ["sm_90"], None),  # ... nor on another major
    ((12, 0), ["sm_80", "sm_90", "compute_90"], "compute_90"),  # PTX is compiled for any later GPU
    ((7, 5), ["compute_80"], None),  # ... never for an earlier one
    ((9, 0), ["sm_90a"], "sm_90a"),  # an arch-specific cubin runs on its own GPU only
    ((10, 0), ["sm_90a", "compute_90a"], None),
])
def test_which_kernels_run_on_which_gpu(capability, arch_list, runs):
    assert kernels_for(capability, arch_list) == runs


def test_the_sentence_names_gpu_arch_torch_and_the_cu126_pip_line():
    assert missing_kernels_sentence("Tesla V100-SXM2-32GB", (7, 0), CU130_ARCHS, "2.9.1+cu130", "13.0",
                                    "0.24.1+cu130") == V100_FIX
    without_vision = missing_kernels_sentence("Tesla P100-PCIE-16GB", (6, 0), CU130_ARCHS, "2.10.0", "13.0", None)
    assert without_vision.endswith("pip install torch==2.10.0 --index-url https://download.pytorch.org/whl/cu126")
    newer = missing_kernels_sentence("NVIDIA B200", (10, 0), ["sm_80", "sm_90"], "2.4.0+cu121", "12.1", "0.19.0")
    assert newer.endswith("install a newer torch: pip install --upgrade torch torchvision")


def test_device_choice_refuses_a_gpu_without_kernels(fake_gpu):
    fake_gpu()
    for name in ("auto", "cuda", "cuda:0"):
        with pytest.raises(UserError) as refused:
            pick_device(name)
        assert str(refused.value) == V100_FIX
    fake_gpu(arch_list=CU126_ARCHS, torch_version="2.9.1+cu126", cuda="12.6")
    assert pick_device("auto", local_rank=1) == torch.device("cuda", 1)
    fake_gpu(name="Tesla T4", capability=(7, 5))
    assert pick_device("cuda") == torch.device("cuda", 0)


def test_no_kernel_image_errors_become_the_sentence_others_stay(fake_gpu):
    fake_gpu()
    cuda = torch.device("cuda", 0)
    with pytest.raises(UserError) as explained:
        with kernel_errors_explained(cuda):
            raise RuntimeError("CUDA error: no kernel image is available for execution on the device\n"
                               "CUDA kernel errors might be asynchronously reported at some other API call")
    assert str(explained.value) == V100_FIX
    fake_gpu(arch_list=CU126_ARCHS, torch_version="2.9.1+cu126", cuda="12.6", vision="0.24.1+cu126")
    with pytest.raises(UserError, match=r"^the Tesla V100-SXM2-32GB GPU is sm_70, and the installed torch "
                                        r"2.9.1\+cu126 \(CUDA 12.6\) lacks a kernel for it"):
        with kernel_errors_explained(cuda):
            raise RuntimeError("CUDA error: no kernel image is available for execution on the device")
    for device, error in ((cuda, RuntimeError("CUDA out of memory")),
                          (torch.device("cpu"), RuntimeError("no kernel image is available"))):
        with pytest.raises(RuntimeError) as kept:
            with kernel_errors_explained(device):
                raise error
        assert kept.value is error
