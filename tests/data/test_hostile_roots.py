"""Data roots as a careless or hostile classmate shares them: class ids int() cannot read, spellings of one id,
decompression bombs, links out of the root, empty roots. Each is named in one sentence; nothing is silent."""

from __future__ import annotations

import io
import re
import shutil
import struct
import zlib

import numpy as np
import pytest
from conftest import TINY, call_cli, write_f25_root, write_image
from PIL import Image

from helpers.core.config import load_config
from helpers.core.errors import UserError
from helpers.data.checks import check_data
from helpers.data.datasets import FaceImages, training_set
from helpers.data.images import BadImageError, ImageReader, decode_rgb
from helpers.data.layout import open_data

PAIRS = ["p0.jpg p1.jpg 1", "p2.jpg p3.jpg 0"]


def _sets(items):
    return [arg for item in items for arg in ("--set", item)]


@pytest.mark.parametrize("class_id", ["--5", "²", "٣", "+-1"])
def test_a_class_id_int_cannot_read_is_one_sentence_in_check_data_and_train(tmp_path, capsys, class_id):
    root = write_f25_root(tmp_path / "root", {"a.jpg": 1, "b.jpg": 2}, PAIRS)
    labels = root / "cls_data" / "train" / "labels.txt"
    labels.write_text(f"a.jpg {class_id}\nb.jpg 2\n", encoding="utf-8")
    report = check_data(root)
    assert [str(p) for p in report.problems] == [f"cls_data/train/labels.txt:1: class id '{class_id}' is not an "
                                                 "integer"]
    code, out, err = call_cli(capsys, "check-data", root)
    assert code == 1 and "Traceback" not in err and f"class id '{class_id}' is not an integer" in out
    code, _, err = call_cli(capsys, "train", *_sets([*TINY, f"data.root={root}", f"run.out_dir={tmp_path}"]))
    assert code == 1 and "Traceback" not in err and len(err.splitlines()) == 1
    assert f"labels.txt:1: class id '{class_id}' is not an integer" in err


def test_class_ids_compare_as_integers_and_a_second_spelling_is_noted(tmp_path):
    root = write_f25_root(tmp_path, {"a.jpg": "1", "b.jpg": "01", "c.jpg": "2", "d.jpg": "002"}, PAIRS)
    dev = root / "cls_data" / "dev"
    write_image(dev / "images" / "e.jpg")
    (dev / "labels.txt").write_text("e.jpg 0001\n")
    data = open_data(root)
    assert training_set(data).classes == ["1", "2"] and data.train.labels == ["1", "1", "2", "2"]
    assert data.dev.labels == ["1"]  # dev images of a known class count in dev accuracy, whatever the spelling
    notes = sorted(str(note) for note in data.notes)
    assert notes == ["cls_data/dev/labels.txt:1: class id '0001' is read as the class '1' (ids compare as integers)",
                     "cls_data/train/labels.txt:2: class id '01' is read as the class '1' (ids compare as integers)",
                     "cls_data/train/labels.txt:4: class id '002' is read as the class '2' (ids compare as integers)"]
    report = check_data(root)
    assert report.ok and report.classes == 2 and sorted(map(str, report.warnings)) == notes


def _png(width: int, height: int) -> bytes:
    """A PNG whose header (with a valid checksum) claims width x height; its pixel data is a few bytes."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, body: (struct.pack(">I", len(body)) + kind + body  # noqa: E731
                                + struct.pack(">I", zlib.crc32(kind + body)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + \
        chunk(b"IEND", b"")


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A 16x16 JPEG whose frame header is rewritten to claim width x height."""
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    frame = data.index(b"\xff\xc0")
    data[frame + 5:frame + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.mark.parametrize("make", [_jpeg_claiming, _png], ids=["jpeg", "png"])
def test_an_image_claiming_too_many_pixels_is_refused_from_its_header_on_every_path(tmp_path, make):
    bomb = make(20000, 20000)
    assert len(bomb) < 2500
    words = "its header claims 400,000,000 pixels, more than data.max_image_pixels (16,777,216)"
    with pytest.raises(BadImageError, match=re.escape(words)):
        decode_rgb(bomb)  # the decoders of torchvision and TorchCodec, and PIL's fallback, all come after
    root = write_f25_root(tmp_path / "root", {"a.jpg": 1, "b.jpg": 2}, PAIRS)
    (root / "ver_data" / "p0.jpg").write_bytes(bomb)
    assert [str(p) for p in check_data(root).problems] == [f"ver_data/p0.jpg: {words}; refused before decoding "
                                                           "(a decompression bomb?)"]
    path = root / "cls_data" / "train" / "images" / "a.jpg"
    path.write_bytes(bomb)
    for encoded in (False, True):  # decoded in the loader, or left for the device's batched decoder
        skipped = FaceImages([path], [0], 112, encoded=encoded)[0]
        assert words in skipped.reason


def test_the_pixel_limit_is_a_setting(tmp_path, capsys):
    root = write_f25_root(tmp_path / "root", {"a.jpg": 1, "b.jpg": 2}, PAIRS)
    write_image(root / "ver_data" / "p0.jpg", size=(300, 200))
    assert check_data(root).ok
    assert [str(p) for p in check_data(root, max_pixels=50_000).problems] == [
        "ver_data/p0.jpg: its header claims 300x200 pixels, more than data.max_image_pixels (50,000); refused before "
        "decoding (a decompression bomb?)"]
    code, out, _ = call_cli(capsys, "check-data", root, "--max-pixels", "50000")
    assert code == 1 and "claims 300x200 pixels" in out
    assert open_data(root, max_pixels=50_000).reader.max_pixels == 50_000
    assert load_config(None, ["data.max_image_pixels=50000"]).data.max_image_pixels == 50_000
    assert ImageReader().max_pixels == load_config().data.max_image_pixels == 4096 * 4096


def test_links_out_of_the_root_are_named_never_read_and_refused_unless_followed(tmp_path, capsys):
    secret = tmp_path / "home" / ".kaggle" / "kaggle.json"
    secret.parent.mkdir(parents=True)
    secret.write_text('{"username": "me", "key": "SECRET-CONTENT"}')
    root = write_f25_root(tmp_path / "root", {"a.jpg": 1, "b.jpg": 1, "c.jpg": 2}, PAIRS)
    (root / "ver_data" / "p0.jpg").unlink()
    (root / "ver_data" / "p0.jpg").symlink_to(secret)
    (root / "cls_data" / "train" / "images" / "a.jpg").unlink()
    (root / "cls_data" / "train" / "images" / "a.jpg").symlink_to(secret)
    (root / "ver_data" / "p3.jpg").unlink()
    (root / "ver_data" / "p3.jpg").symlink_to(root / "cls_data" / "train" / "images" / "b.jpg")  # stays inside

    code, out, err = call_cli(capsys, "check-data", root)
    assert code == 1 and "SECRET" not in out + err
    refused = "refused (data.follow_links: true follows it)"
    assert out.splitlines()[-4:] == ["2 problems:",
                                     f"  cls_data/train/images/a.jpg: is a link to a file outside the data root; {refused}",
                                     f"  ver_data/p0.jpg: is a link to a file outside the data root; {refused}",
                                     "FAILED: 2 problem(s)"]
    with pytest.raises(UserError, match=r"a.jpg: is a link to a file outside the data root; refused .*\(and 1 more"):
        open_data(root)
    code, _, err = call_cli(capsys, "train", *_sets([*TINY, f"data.root={root}", f"run.out_dir={tmp_path}"]))
    assert code == 1 and "is a link to a file outside the data root" in err and "SECRET" not in err
    code, out, err = call_cli(capsys, "check-data", root, "--follow-links")
    assert "a.jpg: is a link to a file outside the data root; followed (data.follow_links is true)" in out
    assert f"not a readable image: {len(secret.read_bytes())} bytes of text, not an image" in out
    assert "SECRET" not in out + err
    assert open_data(root, follow_links=True).notes


def test_a_folder_linked_from_outside_the_root_is_named(tmp_path):
    root = write_f25_root(tmp_path / "root", {"a.jpg": 1, "b.jpg": 2}, PAIRS)
    images = root / "cls_data" / "train" / "images"
    shutil.move(images, tmp_path / "elsewhere")
    images.symlink_to(tmp_path / "elsewhere")
    assert [str(p) for p in check_data(root).problems] == [
        "cls_data/train/images: is reached through a link to a folder outside the data root; refused "
        "(data.follow_links: true follows it)"]
    assert check_data(root, follow_links=True).ok
    whole = tmp_path / "linked"
    whole.mkdir()
    (whole / "cls_data").symlink_to(root / "cls_data")  # a root made of links to a dataset's own folders
    (whole / "ver_data").symlink_to(root / "ver_data")
    shutil.copy(root / "val_pairs.txt", whole)
    assert [str(p) for p in check_data(whole).problems] == [str(p) for p in check_data(root).problems]


def test_an_empty_data_root_is_refused_not_the_current_folder(tmp_path, monkeypatch, capsys, trained_run):
    monkeypatch.chdir(tmp_path)
    write_f25_root(tmp_path, {"a.jpg": 1, "b.jpg": 2}, PAIRS)  # what '' used to open, silently
    with pytest.raises(UserError, match=r"^config key 'data.root' is empty; give the folder holding cls_data/"):
        load_config(None, ["data.root=''"])
    assert load_config(None, ["data.root=."]).data.root == "."
    code, _, err = call_cli(capsys, "check-data", "")
    assert code == 1 and err.startswith("error: the data root is an empty path")
    code, _, err = call_cli(capsys, "evaluate", "--checkpoint", trained_run / "best.pt", "--data-root", "")
    assert code == 1 and err.startswith("error: the data root is an empty path")
