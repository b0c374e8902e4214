"""Kaggle's command-line tool: whether it can run here, running it, and the competition data downloaded with it.

Nothing here reads, prints or writes the API key: the tool finds it itself
(``KAGGLE_API_TOKEN`` or ``~/.kaggle/access_token`` for a ``KGAT_`` token,
``KAGGLE_USERNAME``/``KAGGLE_KEY`` or ``kaggle.json`` for the legacy pair;
:func:`helpers.core.credentials.load_secrets` puts keys kept in Colab or Kaggle
Secrets into the environment first). Every function says in one sentence why it did not act.
The hand-in's submissions go through :mod:`helpers.handin.kaggle`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import subprocess
import zipfile
from pathlib import Path

from helpers.core.credentials import kaggle_problem
from helpers.core.errors import UserError

INSTALL_API = "pip install -U 'kaggle>=2.0' six"  # what the toolkit's kaggle extra installs


def unavailable() -> str | None:
    """Why the kaggle tool cannot be used here, or None when it can."""
    if shutil.which("kaggle") is None:
        return f"the kaggle command is not installed ({INSTALL_API})"
    return six_problem() or kaggle_problem()


def six_problem() -> str | None:
    """kaggle 2.2 imports six without declaring it: when it is installed here, it fails at import without six."""
    try:
        importlib.metadata.version("kaggle")
    except importlib.metadata.PackageNotFoundError:
        return None  # the kaggle command belongs to another Python; it has its own packages
    if importlib.util.find_spec("six") is None:
        return "the kaggle tool imports six but does not install it: pip install six"
    return None


def run(arguments: list[str]) -> subprocess.CompletedProcess:
    """The kaggle command run with ``arguments``, its output captured."""
    return subprocess.run([shutil.which("kaggle"), *arguments], capture_output=True, text=True, timeout=3600)


def reason(completed: subprocess.CompletedProcess) -> str:
    """The last line the kaggle command said, as the reason it failed."""
    lines = (completed.stderr or completed.stdout).strip().splitlines()
    return lines[-1] if lines else "no reason given"


def download(competition: str, dest: str | Path) -> Path:
    """Download and unpack a competition's data into ``dest``; raises UserError saying why it could not."""
    why = unavailable()
    if why:
        raise UserError(f"cannot download the competition data: {why}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    completed = run(["competitions", "download", "-c", competition, "-p", str(dest)])
    if completed.returncode != 0:
        raise UserError(f"kaggle could not download {competition}: {reason(completed)}")
    for archive in sorted(dest.glob("*.zip")):
        with zipfile.ZipFile(archive) as handle:
            handle.extractall(dest)
        archive.unlink()
    return dest
