"""Data roots as a careless or hostile classmate shares them: class ids int() cannot read, spellings of one id,
decompression bombs, links out of the root, empty roots. Each is named in one sentence; nothing is silent."""

from __future__ import annotations

import io
import json
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


def test_100000_duplicate_label_lines_are_summarised_past_20_lines(tmp_path, capsys):
    root = write_f25_root(tmp_path / "root", {"a.jpg": 1, "b.jpg": 2}, PAIRS)
    labels = root / "cls_data" / "train" / "labels.txt"
    labels.write_text(labels.read_text() + "a.jpg 1\n" * 100_000)
    code, out, _ = call_cli(capsys, "check-data", root)
    lines = out.splitlines()
    assert code == 1 and len(lines) < 40  # every one of the 100,000 was printed
    assert "100,000 problems:" in lines and lines[-2:] == [
        "  ... and 99,980 more problems (check-data --json lists every one)", "FAILED: 100000 problem(s)"]
    assert lines[lines.index("100,000 problems:") + 1] == ("  cls_data/train/labels.txt:3: 'a.jpg' is listed again "
                                                          "(first on line 1)")
    code, out, _ = call_cli(capsys, "check-data", root, "--json")
    assert len(json.loads(out)["problems"]) == 100_000


@pytest.mark.parametrize("loop", ["parent", "cycle"])
def test_a_link_loop_is_one_sentence_in_check_data_not_a_long_path_in_stage_data(tmp_path, capsys, loop):
    root = write_f25_root(tmp_path / "root", {"a.jpg": 1, "b.jpg": 2}, PAIRS)
    images = root / "cls_data" / "train" / "images"
    if loop == "parent":
        (images / "loop").symlink_to("..")  # cls_data/train, which holds it: loop/images/loop/images/...
        why = "cls_data/train/images/loop: is a link to cls_data/train, a folder that holds it"
    else:
        (images / "x").symlink_to("y")
        (images / "y").symlink_to("x")
        why = "cls_data/train/images/x: is a link in a cycle of links that never reaches a file"
    code, out, err = call_cli(capsys, "check-data", root)
    assert code == 1 and f"  {why}; a copy (stage-data, data.stage_to) would never end: remove it" in out.splitlines()
    code, out, err = call_cli(capsys, "stage-data", root, tmp_path / "local")
    path, _, reason = why.partition(": ")
    more = " (and 1 more such link(s))" if loop == "cycle" else ""
    assert code == 1 and err == (f"error: cannot stage {root}: {path} {reason}{more}; a copy follows links and "
                                 "would never end, so remove it\n")
    assert not (tmp_path / "local" / "root").exists()


def test_a_link_that_comes_back_through_another_folder_is_a_loop(tmp_path):
    root = write_f25_root(tmp_path / "root", {"a.jpg": 1, "b.jpg": 2}, PAIRS)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "back").symlink_to(root / "cls_data")
    (root / "cls_data" / "away").symlink_to(tmp_path / "elsewhere")
    assert [str(p).partition(";")[0] for p in check_data(root).problems] == [
        "cls_data/away/back: is a link to cls_data, a folder that holds it"]
    (root / "cls_data" / "away").unlink()
    (root / "cls_data" / "twice").symlink_to(root / "ver_data")  # a folder reached twice, not in a circle
    assert check_data(root).ok


def test_a_tiny_image_is_accepted_with_a_note(tmp_path, capsys):
    root = write_f25_root(tmp_path / "root", {"a.jpg": 1, "b.jpg": 2}, PAIRS)
    write_image(root / "cls_data" / "train" / "images" / "a.jpg", size=(1, 1))
    write_image(root / "ver_data" / "p2.jpg", size=(15, 40), fmt="PNG")
    code, out, _ = call_cli(capsys, "check-data", root)
    assert code == 0 and out.splitlines()[-3:] == [
        "1 warnings:",
        "  cls_data/train/images/a.jpg: is 1x1 pixels, under 16 on a side (and 1 more image(s) as small): accepted "
        "and resized to data.image_size, though so few pixels show little of a face", "OK"]
    write_image(root / "cls_data" / "train" / "images" / "a.jpg", size=(16, 16))
    write_image(root / "ver_data" / "p2.jpg", size=(16, 40))
    assert not check_data(root).warnings
