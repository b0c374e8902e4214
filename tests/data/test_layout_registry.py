"""Data layouts by name: one registry entry makes a layout read, detected, forced and written."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import call_cli, write_image

from helpers.core.config import load_config
from helpers.core.errors import UserError
from helpers.core.registry import LAYOUTS
from helpers.data.demo import make_demo_data
from helpers.data.layout import ClassSplit, Layout, open_data


def read_listed(root: Path, split: str, reader) -> tuple[ClassSplit | None, list]:
    """A toy layout: ``cls_data/<split>.csv`` lists ``file,class_id`` of images kept in ``cls_data/images/``."""
    listing = root / "cls_data" / f"{split}.csv"
    if not listing.is_file():
        return None, []
    rows = [line.split(",") for line in listing.read_text().split()]
    return ClassSplit(split, [root / "cls_data" / "images" / name for name, _ in rows], [c for _, c in rows]), []


@pytest.fixture
def listed_root(tmp_path, monkeypatch) -> Path:
    """A root in the toy layout; the registries are restored after the test."""
    monkeypatch.setattr(LAYOUTS, "entries", dict(LAYOUTS.entries))
    root = tmp_path / "root"
    for i in range(4):
        write_image(root / "cls_data" / "images" / f"{i}.jpg", seed=i)
    (root / "cls_data" / "train.csv").write_text("0.jpg,7\n1.jpg,7\n2.jpg,9\n3.jpg,9\n")
    return root


def test_a_layout_registered_by_one_entry_is_detected_forced_and_read(listed_root, capsys):
    assert open_data(listed_root).layout is None
    code, _, err = call_cli(capsys, "check-data", listed_root, "--layout", "listed")
    assert code == 2 and "invalid choice: 'listed'" in err
    with pytest.raises(UserError, match="'data.layout' must be one of auto, packed, f25, f24, not 'listed'"):
        load_config(overrides=["data.layout=listed"])
    LAYOUTS.register("listed", Layout("train.csv", read_listed), "read")
    data = open_data(listed_root)
    assert data.layout == "listed" and data.train.labels == ["7", "7", "9", "9"]
    assert open_data(listed_root, load_config(overrides=["data.layout=listed"]).data.layout).layout == "listed"
    code, out, _ = call_cli(capsys, "check-data", listed_root, "--layout", "listed")
    assert code in (0, 1) and "layout: listed" in out


def test_a_layout_registered_to_be_written_is_a_writers_choice(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(LAYOUTS, "entries", dict(LAYOUTS.entries))
    with pytest.raises(UserError, match="^layout must be one of f25, f24, f26, not 'folders'$"):
        make_demo_data(tmp_path / "a", identities=3, images_per_identity=3, verification_identities=3, size=32,
                       layout="folders")
    LAYOUTS.register("folders", Layout(None, identity_folders=True), "write")
    code, _, _ = call_cli(capsys, "demo-data", tmp_path / "b", "--identities", "3", "--images-per-identity", "3",
                          "--verification-identities", "3", "--image-size", "32", "--layout", "folders")
    assert code == 0 and open_data(tmp_path / "b").layout == "f24"  # written one folder per identity


def test_a_forced_layout_that_does_not_match_is_one_sentence(tmp_path):
    root = make_demo_data(tmp_path / "d", identities=3, images_per_identity=3, verification_identities=3,
                          size=32).root
    with pytest.raises(UserError, match=r"data.layout is f24 but .*cls_data holds the f25 layout"):
        open_data(root, "f24")
    with pytest.raises(UserError, match="^data.layout must be one of auto, packed, f25, f24, not 'f26'$"):
        open_data(root, "f26")
