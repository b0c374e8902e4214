"""The kaggle command-line tool, used only when it is installed and credentials exist.

Nothing here reads, prints or writes the API key: the tool finds it itself
(``~/.kaggle/kaggle.json``, ``KAGGLE_CONFIG_DIR`` or ``KAGGLE_USERNAME``/``KAGGLE_KEY``).
Every function says in one sentence why it did not act.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
from pathlib import Path

from .errors import UserError


def unavailable() -> str | None:
    """Why the kaggle tool cannot be used here, or None when it can."""
    if shutil.which("kaggle") is None:
        return "the kaggle command is not installed (pip install kaggle)"
    config_dir = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle"))
    if not (os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY")) \
            and not (config_dir / "kaggle.json").is_file():
        return (f"no Kaggle credentials ({config_dir / 'kaggle.json'} is missing and KAGGLE_USERNAME/KAGGLE_KEY "
                "are not set)")
    return None


def _run(arguments: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([shutil.which("kaggle"), *arguments], capture_output=True, text=True, timeout=3600)


def _reason(completed: subprocess.CompletedProcess) -> str:
    lines = (completed.stderr or completed.stdout).strip().splitlines()
    return lines[-1] if lines else "no reason given"


def download(competition: str, dest: str | Path) -> Path:
    """Download and unpack a competition's data into ``dest``; raises UserError saying why it could not."""
    why = unavailable()
    if why:
        raise UserError(f"cannot download the competition data: {why}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    completed = _run(["competitions", "download", "-c", competition, "-p", str(dest)])
    if completed.returncode != 0:
        raise UserError(f"kaggle could not download {competition}: {_reason(completed)}")
    for archive in sorted(dest.glob("*.zip")):
        with zipfile.ZipFile(archive) as handle:
            handle.extractall(dest)
        archive.unlink()
    return dest


def submit(path: str | Path, competition: str, message: str) -> str:
    """Submit a file to a competition; returns what happened, in one sentence."""
    why = unavailable()
    if why:
        return f"not submitted to Kaggle: {why}"
    completed = _run(["competitions", "submit", "-c", competition, "-f", str(path), "-m", message])
    if completed.returncode != 0:
        return f"Kaggle refused the submission: {_reason(completed)}"
    return f"submitted {path} to Kaggle competition {competition}"
