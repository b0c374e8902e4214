"""Where a notebook runs (Colab, Kaggle or a local machine), and the folders there that outlive the session.

Colab deletes ``/content`` with its VM, so run folders go to Google Drive,
mounted on first use. Kaggle keeps ``/kaggle/working`` as the notebook's
output and attaches competition data, read-only, under ``/kaggle/input``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from helpers.core.errors import UserError

COLAB_MOUNT = Path("/content/drive")  # where Colab's own "Mount Drive" button puts it
DRIVE_RUNS = "HW2P2"  # the folder under MyDrive that holds the run folders on Colab
DRIVE_ROOTS = ("MyDrive", "Shareddrives")  # the folders a mounted Drive shows at its mount point
KAGGLE_INPUT = Path("/kaggle/input")
KAGGLE_WORKING = Path("/kaggle/working")


def platform() -> str:
    """``colab``, ``kaggle`` or ``local``."""
    if "KAGGLE_KERNEL_RUN_TYPE" in os.environ:  # first: an image with google.colab installed is still Kaggle
        return "kaggle"
    try:
        if importlib.util.find_spec("google.colab") is not None:
            return "colab"
    except (ImportError, ValueError):
        pass  # no google namespace at all
    return "local"


def runs_folder(drive_folder: str = "auto", out_dir: str = "runs") -> Path:
    """The folder that holds the run folders, created if needed.

    ``auto``: on Colab ``MyDrive/HW2P2`` of Google Drive (mounted now, so a new
    VM finds the runs again), on Kaggle ``/kaggle/working/<out_dir>``, elsewhere
    ``out_dir``. Any other value is that folder; on Colab, one inside a Drive that
    is not mounted yet (a path through ``MyDrive``) mounts it first.
    """
    where = platform()
    if drive_folder in ("", "auto"):
        defaults = {"colab": COLAB_MOUNT / "MyDrive" / DRIVE_RUNS, "kaggle": KAGGLE_WORKING / out_dir}
        folder = defaults.get(where, Path(out_dir))
    else:
        folder = Path(drive_folder).expanduser()
    if where == "colab":
        mount_drive_for(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create the runs folder {folder} (drive_folder): {error.strerror or error}") from None
    return folder


def mount_drive_for(folder: Path) -> None:
    """On Colab, mount Google Drive at the mount point above ``folder`` unless it is mounted already."""
    parts = folder.absolute().parts
    for root in DRIVE_ROOTS:
        if root in parts:
            mount_point = Path(*parts[:parts.index(root)])
            if not (mount_point / "MyDrive").is_dir():  # every mounted Drive shows MyDrive
                from google.colab import drive

                print(f"mounting Google Drive at {mount_point} (Colab asks once to allow it)")
                drive.mount(str(mount_point))
            return


def resume_note(run_dir: Path) -> str:
    """Where a run's checkpoints are and how to carry on after a disconnect, for the notebooks' training cells."""
    return (f"checkpoints: {Path(run_dir).absolute()} (last.pt every epoch, best.pt: the weights train.select chooses). "
            "If the session ends, run all cells again with the same drive_folder and run_name: training resumes "
            "from last.pt. To train on after it finished, raise epochs or max_minutes and run again.")
