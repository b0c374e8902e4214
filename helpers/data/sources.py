"""Where a notebook's data comes from: the built-in demo faces, the Kaggle competition, or a folder."""

from __future__ import annotations

from pathlib import Path

from helpers.core import host, kaggle_command
from helpers.core.errors import UserError
from helpers.data.layout import data_roots_below, find_data_root


def obtain_data(source: str, root: str | Path, competition: str | None = None, identities: int = 200,
                images_per_identity: int = 12, verification_identities: int = 60, seed: int = 0) -> Path:
    """The data root to use, fetching or generating it when needed.

    ``source`` is ``demo`` (generate the built-in faces at ``root`` unless they
    are already there), ``kaggle`` (the data attached to a Kaggle notebook under
    ``/kaggle/input``, else download ``competition`` into ``root`` unless it
    already holds the data), or the path of an existing data root.
    """
    root = Path(root)
    if source == "demo":
        if (root / "val_pairs.txt").is_file():
            return root
        from helpers.data.demo import make_demo_data

        return make_demo_data(root, identities=identities, images_per_identity=images_per_identity,
                              verification_identities=verification_identities, seed=seed, overwrite=True).root
    if source == "kaggle":
        attached = attached_kaggle_data(competition or "")
        if attached is not None:
            return attached
        try:
            return find_data_root(root)
        except UserError:
            pass
        if not competition:
            raise UserError("data_source is kaggle but no competition is named: set kaggle_competition")
        return find_data_root(kaggle_command.download(competition, root))
    return find_data_root(source)


def attached_kaggle_data(competition: str = "", inputs: Path | None = None, depth: int = 4) -> Path | None:
    """The HW2P2 data root among the data attached to a Kaggle notebook, or None when none is attached.

    Kaggle mounts each attached source at ``/kaggle/input/<name>``; the data
    root (the folder holding ``cls_data/`` or ``ver_data/``) lies a few folders
    below, named differently every term. When ``competition`` is attached, only
    it is searched. ``inputs`` defaults to ``/kaggle/input``.
    """
    inputs = host.KAGGLE_INPUT if inputs is None else inputs
    if not inputs.is_dir():
        return None
    found = data_roots_below(inputs / competition if competition and (inputs / competition).is_dir() else inputs,
                             depth)
    if len(found) > 1:
        raise UserError(f"several HW2P2 data roots are attached under {inputs} ({', '.join(map(str, found))}); "
                        "set data_source to the path of one of them")
    return found[0] if found else None
