"""Kaggle and W&B credentials, read from where a notebook user keeps them, so no cell ever holds a key.

The order: Colab Secrets, Kaggle Secrets, environment variables, then the
tools' own files (``~/.kaggle/access_token`` or ``kaggle.json``, ``~/.netrc``).
A key found in Secrets goes into this process's environment, where the kaggle
tool and wandb read it. Nothing here prints, logs or returns a key: only where
it was found.

Both generations are known: Kaggle's single ``KGAT_`` API token
(``KAGGLE_API_TOKEN``, kaggle 1.8 or newer) and the legacy username and key;
W&B's 86-character ``wandb_v1_`` keys (wandb 0.22.3 or newer) and the legacy
40-character ones.
"""

from __future__ import annotations

import importlib.metadata
import netrc
import os
from pathlib import Path

KAGGLE_NAMES = ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY")
WANDB_NAMES = ("WANDB_API_KEY",)
KAGGLE_TOKEN_RELEASE = "1.8"  # the first kaggle tool that reads KGAT_ tokens
WANDB_V1_RELEASE = "0.22.3"  # the first wandb that accepts wandb_v1_ keys
WHERE_TO_PUT = ("Colab: the key icon in the left bar (Secrets), names KAGGLE_API_TOKEN and WANDB_API_KEY, with "
                "notebook access on; Kaggle: Add-ons > Secrets, the same names")


def _colab_secret(name: str) -> str | None:
    try:
        from google.colab import userdata
    except ImportError:
        return None
    try:
        return userdata.get(name)
    except Exception:  # noqa: BLE001 - not there, or this notebook not granted access: look further
        return None


def _kaggle_secret(name: str) -> str | None:
    try:
        from kaggle_secrets import UserSecretsClient
    except ImportError:
        return None
    try:
        return UserSecretsClient().get_secret(name)
    except Exception:  # noqa: BLE001 - a secret the user did not attach
        return None


SECRET_STORES = (("Colab Secrets", _colab_secret), ("Kaggle Secrets", _kaggle_secret),
                 ("the environment", os.environ.get))


def load_secrets(names: tuple[str, ...] = KAGGLE_NAMES + WANDB_NAMES) -> dict[str, str]:
    """Find each of ``names`` in Colab Secrets, Kaggle Secrets or the environment (in that order) and put it
    in the environment; returns where each one found came from."""
    found = {}
    for name in names:
        for store, lookup in SECRET_STORES:
            value = (lookup(name) or "").strip()
            if value:
                os.environ[name] = value
                found[name] = store
                break
    # A new token kept under the legacy name: the kaggle tool reads tokens from KAGGLE_API_TOKEN only.
    if os.environ.get("KAGGLE_KEY", "").startswith("KGAT_") and "KAGGLE_API_TOKEN" not in os.environ:
        os.environ["KAGGLE_API_TOKEN"] = os.environ["KAGGLE_KEY"]
        found["KAGGLE_API_TOKEN"] = found.get("KAGGLE_KEY", "the environment")
    return found


def kaggle_config_dir() -> Path:
    return Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle"))


def kaggle_credentials() -> tuple[str, str] | None:
    """``(kind, where)`` of the Kaggle credentials the kaggle tool will use: kind ``token`` (``KGAT_``) or
    ``legacy`` (username and key), where an environment variable's name or a file; None when there are none."""
    config = kaggle_config_dir()
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "token", "KAGGLE_API_TOKEN"
    if (config / "access_token").is_file():
        return "token", str(config / "access_token")
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "legacy", "KAGGLE_KEY"
    if (config / "kaggle.json").is_file():
        return "legacy", str(config / "kaggle.json")
    return None


def wandb_key_source() -> str | None:
    """Where wandb will find an API key (``WANDB_API_KEY`` or ``~/.netrc``), or None."""
    if os.environ.get("WANDB_API_KEY"):
        return "WANDB_API_KEY"
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        if path.is_file() and netrc.netrc(path).authenticators("api.wandb.ai"):
            return str(path)
    except (OSError, netrc.NetrcParseError):
        pass
    return None


def _older(package: str, release: str) -> str | None:
    """The installed version of ``package`` when it is older than ``release``, else None."""
    from packaging.version import Version

    try:
        installed = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None
    return installed if Version(installed) < Version(release) else None


def kaggle_problem() -> str | None:
    """Why the Kaggle credentials cannot be used, in one sentence, or None when they can."""
    found = kaggle_credentials()
    if found is None:
        return ("no Kaggle credentials: set KAGGLE_API_TOKEN to your KGAT_ API token (kaggle.com > Settings > API) "
                f"in Colab or Kaggle Secrets or the environment, or save it as {kaggle_config_dir() / 'access_token'}"
                "; a legacy kaggle.json works too")
    old = _older("kaggle", KAGGLE_TOKEN_RELEASE) if found[0] == "token" else None
    if old:
        return (f"the kaggle tool {old} cannot use a KGAT_ API token: pip install -U 'kaggle>={KAGGLE_TOKEN_RELEASE}'")
    return None


def wandb_problem() -> str | None:
    """Why W&B cannot log online, in one sentence, or None when it can."""
    where = wandb_key_source()
    if where is None:
        return f"no W&B API key: runs log offline (keys go in Secrets; {WHERE_TO_PUT})"
    old = _older("wandb", WANDB_V1_RELEASE)
    if old and os.environ.get("WANDB_API_KEY", "").startswith("wandb_v1_"):
        return f"wandb {old} rejects the new 86-character key: pip install -U 'wandb>={WANDB_V1_RELEASE}'"
    return None


def describe_credentials(found: dict[str, str]) -> list[str]:
    """A line for Kaggle and one for W&B: which credentials will be used and where they came from (``found``,
    from :func:`load_secrets`), or why there are none."""
    lines = []
    for tool, located, kinds, problem in (
            ("Kaggle", kaggle_credentials(), {"token": "API token (KGAT_)", "legacy": "username and key"},
             kaggle_problem()),
            ("W&B", ("key", wandb_key_source()) if wandb_key_source() else None, {"key": "API key"}, wandb_problem())):
        if located is None:
            lines.append(f"{tool}: {problem}")
            continue
        kind, where = located
        origin = found.get(where) or (where if os.sep in where else f"the environment ({where})")
        lines.append(f"{tool}: {kinds[kind]} from {origin}" + (f"; {problem}" if problem else ""))
    return lines
