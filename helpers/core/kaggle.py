"""The kaggle command-line tool, used only when it is installed and credentials exist.

Nothing here reads, prints or writes the API key: the tool finds it itself
(``KAGGLE_API_TOKEN`` or ``~/.kaggle/access_token`` for a ``KGAT_`` token,
``KAGGLE_USERNAME``/``KAGGLE_KEY`` or ``kaggle.json`` for the legacy pair;
:func:`helpers.credentials.load_secrets` puts keys kept in Colab or Kaggle
Secrets into the environment first). Every function says in one sentence why it did not act.
"""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

from helpers.core.credentials import KAGGLE_TOKEN_RELEASE, kaggle_problem
from helpers.core.errors import UserError


def unavailable() -> str | None:
    """Why the kaggle tool cannot be used here, or None when it can."""
    if shutil.which("kaggle") is None:
        return f"the kaggle command is not installed (pip install 'kaggle>={KAGGLE_TOKEN_RELEASE}')"
    return kaggle_problem()


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
