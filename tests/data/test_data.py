"""The data layer: both layouts, label files, pair files, image modes, and bad images during loading."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from conftest import write_f25_root, write_image
from PIL import Image

from helpers.core.errors import UserError, printable
from helpers.data.datasets import FaceImages, collate, training_set
from helpers.data.images import BadImageError, decode_rgb, describe_bytes, load_image
from helpers.data.layout import (
    class_names,
    detect_layout,
    find_data_root,
    open_data,
    read_labels,
    read_pairs,
    unsafe_reason,
)


def test_f25_layout_sorts_lines_and_maps_noncontiguous_ids(tmp_path):
    # Lines deliberately out of order, class ids with gaps: the mapping must be numeric and deterministic.
    root = write_f25_root(tmp_path, {"c.jpg": 700, "a.jpg": 7, "b.jpg": 70, "d.jpg": 7})
    data = open_data(root)
    assert data.layout == "f25"
    assert [p.name for p in data.train.paths] == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    assert data.train.labels == ["7", "70", "700", "7"]
    subset = training_set(data)
    assert subset.classes == ["7", "70", "700"]
    assert subset.labels == [0, 1, 2, 0]


def test_f24_layout_uses_one_folder_per_identity(tmp_path):
    for person, count in (("n002", 2), ("n001", 3)):
        for k in range(count):
            write_image(tmp_path / "cls_data" / "train" / person / f"{k}.jpg", seed=k)
        write_image(tmp_path / "cls_data" / "dev" / person / "x.jpg")
    (tmp_path / "cls_data" / "train" / "n001" / "notes.txt").write_text("not an image")
    data = open_data(tmp_path)
    assert data.layout == "f24"
    assert data.train.labels == ["n001"] * 3 + ["n002"] * 2
    assert len(data.dev) == 2
    assert training_set(data).classes == ["n001", "n002"]


def test_layout_can_be_forced_and_a_wrong_force_is_explained(tmp_path):
    write_f25_root(tmp_path, {"a.jpg": 1})
    assert detect_layout(tmp_path, "f25") == "f25"
    with pytest.raises(UserError, match="f24"):
        detect_layout(tmp_path, "f24")


def test_data_root_is_found_one_level_down(tmp_path):
    inner = write_f25_root(tmp_path / "hw2p2_s26", {"a.jpg": 1})
    assert find_data_root(tmp_path) == inner
    with pytest.raises(UserError, match="no cls_data"):
        find_data_root(tmp_path / "hw2p2_s26" / "cls_data" / "train" / "images")


def test_test_split_without_labels_is_unlabelled(tmp_path):
    write_f25_root(tmp_path, {"a.jpg": 1})
    write_image(tmp_path / "cls_data" / "test" / "images" / "t1.jpg")
    data = open_data(tmp_path)
    assert data.test.labels is None and len(data.test) == 1


def test_malformed_label_line_names_file_and_line(tmp_path):
    write_f25_root(tmp_path, {"a.jpg": 1})
    with open(tmp_path / "cls_data" / "train" / "labels.txt", "a") as handle:
        handle.write("b.jpg 1 extra\n")
    with pytest.raises(UserError, match=r"cls_data/train/labels.txt:2"):
        open_data(tmp_path)


def test_pair_parsing_reports_every_kind_of_bad_line(tmp_path):
    path = tmp_path / "val_pairs.txt"
    path.write_text("a.jpg b.jpg 1\n"
                    "a.jpg c.jpg\n"            # 2: missing label
                    "a.jpg c.jpg 2\n"          # 3: label not 0/1
                    "../x.jpg a.jpg 0\n"       # 4: leaves the root
                    "/etc/passwd a.jpg 0\n"    # 5: absolute
                    "b.jpg a.jpg 1\n"          # 6: duplicate of line 1
                    "\n# comment\n"
                    "c.jpg d.jpg 0\n")
    pairs, problems = read_pairs(path, labelled=True)
    where = [p.where for p in problems]
    assert where == ["val_pairs.txt:2", "val_pairs.txt:3", "val_pairs.txt:4", "val_pairs.txt:5", "val_pairs.txt:6"]
    assert "leaves the data root" in problems[2].what and "absolute" in problems[3].what
    assert [(p.a, p.b, p.label) for p in pairs] == [("a.jpg", "b.jpg", 1), ("b.jpg", "a.jpg", 1), ("c.jpg", "d.jpg", 0)]


def test_unlabelled_test_pairs_parse(tmp_path):
    path = tmp_path / "test_pairs.txt"
    path.write_text("a.jpg b.jpg\nc.jpg d.jpg\n")
    pairs, problems = read_pairs(path, labelled=False)
    assert not problems and [p.label for p in pairs] == [None, None]


@pytest.mark.parametrize("name", ["../a.jpg", "x/../../a.jpg", "/abs.jpg", "C:\\a.jpg", "..\\a.jpg"])
def test_unsafe_names_are_refused(name):
    assert unsafe_reason(name)


def test_safe_names_pass():
    assert unsafe_reason("ver_data/abc.jpg") is None and unsafe_reason("a..b.jpg") is None


@pytest.mark.parametrize("mode,fmt", [("L", "PNG"), ("LA", "PNG"), ("P", "PNG"), ("RGBA", "PNG"),
                                      ("CMYK", "JPEG"), ("L", "JPEG"), ("RGB", "BMP"), ("RGB", "TIFF")])
def test_every_image_mode_becomes_rgb(tmp_path, mode, fmt):
    path = write_image(tmp_path / f"x.{fmt.lower()}", mode=mode, fmt=fmt, size=(30, 20))
    image = load_image(path)
    assert image.dtype == torch.uint8 and image.shape == (3, 20, 30)
    expected = np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1)
    tolerance = 3 if fmt == "JPEG" else 0  # libjpeg builds may round colour conversion differently
    assert np.abs(image.numpy().astype(int) - expected.astype(int)).max() <= tolerance


def test_16_bit_images_are_scaled_not_clipped(tmp_path):
    values = np.array([[0, 32768], [65535, 1000]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    image = load_image(path)
    assert image.shape == (3, 2, 2)
    assert image[0, 0, 0] == 0 and image[0, 1, 0] == 255 and 126 <= image[0, 0, 1] <= 129


def test_images_are_resized_to_the_requested_square(tmp_path):
    path = write_image(tmp_path / "a.jpg", size=(92, 112))
    assert load_image(path, size=112).shape == (3, 112, 112)


def test_bad_images_raise_one_clear_error(tmp_path):
    good = write_image(tmp_path / "good.jpg", size=(64, 64))
    data = good.read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    with pytest.raises(BadImageError, match="truncated"):
        load_image(tmp_path / "truncated.jpg")
    with pytest.raises(BadImageError, match="zero-byte"):
        load_image(tmp_path / "empty.jpg")
    with pytest.raises(BadImageError, match="not a readable image"):
        load_image(tmp_path / "text.jpg")
    with pytest.raises(BadImageError, match="cannot be read"):
        load_image(tmp_path / "missing.jpg")


def _encoded(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 100, 50)).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("data,expected", [
    (b"", "an empty (zero-byte) file"),
    (_encoded("JPEG")[:150], "a truncated JPEG (150 bytes, its end marker missing)"),
    (_encoded("JPEG")[:120] + bytes(60) + b"\xff\xd9", "a damaged JPEG (182 bytes)"),
    (_encoded("PNG")[:40], "a truncated PNG (40 bytes, its end marker missing)"),
    (b"<!DOCTYPE html>\n<html><body>404 Not Found</body></html>\n",
     "an HTML page (56 bytes; a download that returned a web page?)"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a\nsize 5120\n",
     "a Git LFS pointer (69 bytes of text; fetch the real file with git lfs pull)"),
    (b"\xef\xbb\xbfimg_0001 is missing\n", "23 bytes of text, not an image"),  # never the text: it may be a key
    (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "an HEIC photo (24 bytes; this format is not decoded "
                                                        "here, convert it to JPEG)"),
    (b"PK\x03\x04" + bytes(26), "a zip archive (30 bytes)"),
    (bytes(range(7, 47)), "40 bytes of unrecognised binary data"),
])
def test_an_unreadable_image_is_described_by_what_the_file_is(tmp_path, data, expected):
    assert describe_bytes(data) == expected
    path = tmp_path / "face.jpg"
    path.write_bytes(data)
    with pytest.raises(BadImageError) as caught:
        load_image(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "BytesIO" not in message and " at 0x" not in message
    assert message.endswith("empty (zero-byte) file" if not data else f"not a readable image: {expected}")


def test_text_files_with_a_byte_order_mark_and_crlf_read_like_plain_ones(tmp_path):
    plain, windows = tmp_path / "plain.txt", tmp_path / "windows.txt"
    plain.write_bytes(b"b.jpg 7\na.jpg 3\n")
    windows.write_bytes(b"\xef\xbb\xbfb.jpg 7\r\na.jpg 3\r\n")
    assert read_labels(windows) == read_labels(plain)
    assert [entry[0] for entry in read_labels(windows)[0]] == ["a.jpg", "b.jpg"]
    plain.write_bytes(b"a.jpg b.jpg 1\nc.jpg d.jpg 0\n")
    windows.write_bytes(b"\xef\xbb\xbfa.jpg b.jpg 1\r\nc.jpg d.jpg 0\r\n")
    assert read_pairs(windows, labelled=True) == read_pairs(plain, labelled=True)
    assert read_pairs(windows, labelled=True)[0][0].a == "a.jpg"


def test_invisible_characters_are_shown_escaped():
    assert printable("\ufeffa.jpg") == "\\ufeffa.jpg"
    assert printable("a\u200bb\tc\x00.jpg") == "a\\u200bb\\tc\\x00.jpg"
    assert printable("Zoë's face.jpg") == "Zoë's face.jpg"  # printable non-ASCII stays as it is


def test_dataset_skips_bad_images_and_collate_sets_them_aside(tmp_path):
    good = [write_image(tmp_path / f"{i}.jpg", seed=i) for i in range(3)]
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8broken")
    dataset = FaceImages(good + [tmp_path / "bad.jpg"], [0, 1, 2, 3], image_size=16)
    batch = collate([dataset[i] for i in range(4)])
    assert batch.images.shape == (3, 3, 16, 16) and batch.labels.tolist() == [0, 1, 2]
    assert len(batch.skipped) == 1 and batch.skipped[0].path.endswith("bad.jpg")


def test_decode_rgb_reads_bytes_in_memory():
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (10, 200, 30)).save(buffer, format="PNG")
    image = decode_rgb(buffer.getvalue())
    assert image[:, 0, 0].tolist() == [10, 200, 30]


def test_class_names_sort_numbers_numerically():
    assert class_names(["10", "9", "100"]) == ["9", "10", "100"]
    assert class_names(["b", "a", "10"]) == ["10", "a", "b"]


def test_training_set_singleton_policies_and_cap(tmp_path):
    labels = {"a.jpg": 1, "b.jpg": 1, "c.jpg": 2, "d.jpg": 3, "e.jpg": 3}
    data = open_data(write_f25_root(tmp_path, labels))
    kept = training_set(data, "keep")
    assert kept.classes == ["1", "2", "3"] and len(kept.paths) == 5
    dropped = training_set(data, "drop")
    assert dropped.classes == ["1", "3"] and dropped.dropped_singletons == 1 and len(dropped.paths) == 4
    negatives = training_set(data, "negatives")
    assert negatives.classes == ["1", "3"] and negatives.labels == [0, 0, -1, 1, 1]
    capped = training_set(data, "keep", max_images=3, seed=1)
    assert len(capped.paths) == 3 and capped.paths == training_set(data, "keep", max_images=3, seed=1).paths


def test_device_decoding_matches_worker_decoding_and_skips_bad_jpegs(tmp_path):
    from helpers.data.datasets import decode_batch

    paths = [write_image(tmp_path / f"{i}.jpg", seed=i, size=(24, 24)) for i in range(3)]
    paths.append(write_image(tmp_path / "x.png", seed=9, size=(30, 20), fmt="PNG"))  # not a JPEG: decoded in the worker
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(paths[0].read_bytes()[:300])
    paths.insert(1, broken)
    encoded = FaceImages(paths, [0, 1, 2, 3, 4], image_size=24, encoded=True)
    plain = FaceImages(paths, [0, 1, 2, 3, 4], image_size=24)
    batch = decode_batch(collate([encoded[i] for i in range(5)]), torch.device("cpu"), 24, paths)
    reference = collate([plain[i] for i in range(5)])
    assert torch.equal(batch.images, reference.images) and batch.labels.tolist() == [0, 2, 3, 4]
    assert [s.path for s in batch.skipped] == [str(broken)] == [s.path for s in reference.skipped]
    # Both paths say what the file is, in the same words.
    assert batch.skipped[0].reason == reference.skipped[0].reason == \
        "not a readable image: a truncated JPEG (300 bytes, its end marker missing)"
