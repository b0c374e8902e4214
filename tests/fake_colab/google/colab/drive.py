"""``google.colab.drive``: mounting links the mount point's MyDrive to the folder in ``FAKE_COLAB_DRIVE``."""

import os
from pathlib import Path


def mount(mountpoint, force_remount=False, timeout_ms=120000, readonly=False):
    """Like Colab's: afterwards ``mountpoint/MyDrive`` shows the user's Drive."""
    drive = Path(os.environ["FAKE_COLAB_DRIVE"])
    drive.mkdir(parents=True, exist_ok=True)
    link = Path(mountpoint) / "MyDrive"
    if link.exists() and not force_remount:
        raise ValueError("Mountpoint must not already contain files")  # what Colab says on a second mount
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(drive, target_is_directory=True)
    print(f"Mounted at {mountpoint}")
