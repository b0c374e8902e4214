"""A notebook session's first step: where it runs and on what device, the keys it found, and its runs folder."""

from __future__ import annotations

import os
import platform as python_platform
from pathlib import Path
from typing import TYPE_CHECKING

from helpers.core.host import platform, runs_folder

if TYPE_CHECKING:
    import torch


def describe_environment(device: torch.device | None = None) -> dict:
    """Where this runs (Colab, Kaggle or local), with the device (default: :func:`pick_device`'s), GPU name and
    memory when there is one."""
    import torch  # loaded here, so that importing this module works before torch is installed

    from helpers.runtime.device import pick_device

    device = device or pick_device()
    info = {"platform": platform(), "python": python_platform.python_version(), "torch": torch.__version__,
            "device": str(device), "cpu_cores": os.cpu_count()}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info.update(gpu=properties.name, gpu_memory_gib=round(properties.total_memory / 2 ** 30, 1),
                    gpus=torch.cuda.device_count(), bf16=torch.cuda.is_bf16_supported())
    return info


def start_session(drive_folder: str = "auto", out_dir: str = "runs") -> Path:
    """A notebook's first step: print where it runs and on what device, put the Kaggle and W&B keys kept in
    Secrets into the environment (printing where each came from, never the key), and return the folder
    that holds the run folders (:func:`helpers.core.host.runs_folder`)."""
    from helpers.core.credentials import describe_credentials, load_secrets

    environment = describe_environment()
    for key, value in environment.items():
        print(f"{key:>16}: {value}")
    if environment["device"] == "cpu":
        print("No GPU: fine for the demo data; for the course data use a GPU runtime "
              "(Colab: Runtime > Change runtime type; Kaggle: Settings > Accelerator).")
    for line in describe_credentials(load_secrets()):
        print(f"{'keys':>16}: {line}")
    folder = runs_folder(drive_folder, out_dir)
    print(f"{'runs folder':>16}: {folder.absolute()}")
    return folder

