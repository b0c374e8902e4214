"""pack-data: a packed root reads, checks and trains exactly like the folders it came from."""

from __future__ import annotations

import pickle

import pytest
import torch
from conftest import TINY, call_cli

from helpers.core.errors import UserError
from helpers.data.checks import check_data
from helpers.data.datasets import FaceImages
from helpers.data.demo import make_demo_data
from helpers.data.layout import answer_key_path, open_data
from helpers.data.prepare import pack_root
from helpers.model.checkpoint import load_checkpoint
from helpers.training.engine import train


def test_packed_root_reads_the_same_images_and_labels(demo_root, tmp_path, capsys):
    code, out, _ = call_cli(capsys, "pack-data", demo_root, tmp_path / "packed")
    assert code == 0 and "train 72 images" in out
    folder, packed = open_data(demo_root), open_data(tmp_path / "packed")
    assert packed.layout == "packed" and packed.train.labels == folder.train.labels
    assert [p.name for p in packed.train.paths] == [p.name for p in folder.train.paths]
    for a, b in zip(folder.train.paths[:5], packed.train.paths[:5]):
        assert torch.equal(folder.load(a), packed.load(b))
    pair = packed.val_pairs[0]
    assert torch.equal(packed.load(packed.ver_path(pair.a)), folder.load(folder.ver_path(pair.a)))
    assert check_data(tmp_path / "packed").ok
    assert answer_key_path(tmp_path / "packed").read_text() == answer_key_path(demo_root).read_text()


def test_packed_dataset_survives_pickling_for_workers(demo_root, tmp_path):
    pack_root(demo_root, tmp_path / "packed")
    data = open_data(tmp_path / "packed")
    dataset = FaceImages(data.train.paths, None, 32, reader=data.reader)
    first = dataset[0][0]
    copy = pickle.loads(pickle.dumps(dataset))
    assert torch.equal(copy[0][0], first)


def test_training_on_a_pack_matches_training_on_folders(demo_root, tmp_path):
    pack_root(demo_root, tmp_path / "packed")
    common = TINY + ["train.epochs=2", "train.deterministic=true", f"run.out_dir={tmp_path}"]
    a = train(None, common + [f"data.root={demo_root}", "run.name=folders"])
    b = train(None, common + [f"data.root={tmp_path / 'packed'}", "run.name=packed", "data.num_workers=1"])
    wa, wb = load_checkpoint(a.run_dir / "last.pt")["model"], load_checkpoint(b.run_dir / "last.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a.best_eer == b.best_eer


def test_f24_roots_pack_too(tmp_path):
    root = make_demo_data(tmp_path / "f24", identities=3, images_per_identity=3, verification_identities=3,
                          size=32, layout="f24").root
    pack_root(root, tmp_path / "packed")
    packed = open_data(tmp_path / "packed")
    assert sorted(set(packed.train.labels)) == ["n000000", "n000001", "n000002"]
    assert check_data(tmp_path / "packed").ok


def test_pack_refuses_to_overwrite(demo_root, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(UserError, match="already exists"):
        pack_root(demo_root, tmp_path / "out")
