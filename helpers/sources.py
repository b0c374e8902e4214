"""Where a notebook's data comes from: the built-in demo faces, the Kaggle competition, or a folder."""

from __future__ import annotations

from pathlib import Path

from . import kaggle
from .data import find_data_root
from .errors import UserError
from .runtime import attached_kaggle_data


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
        from .demo_data import make_demo_data

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
        return find_data_root(kaggle.download(competition, root))
    return find_data_root(source)
