"""demo-data, prepare-folder and check-data, as a user runs them from the shell."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import call_cli, run_cli, write_image

from helpers.data.checks import check_data
from helpers.data.demo import make_demo_data
from helpers.data.layout import answer_key_path, open_data
from helpers.data.prepare import prepare_folder


def _digest(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_demo_data_is_deterministic_and_checks_clean(tmp_path):
    a = make_demo_data(tmp_path / "a", identities=5, images_per_identity=4, verification_identities=4, size=32, seed=3)
    make_demo_data(tmp_path / "b", identities=5, images_per_identity=4, verification_identities=4, size=32, seed=3)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert answer_key_path(tmp_path / "a").read_text() == answer_key_path(tmp_path / "b").read_text()
    report = check_data(a.root)
    assert report.ok, report.lines()
    assert report.layout == "f25" and report.classes == 5
    data = open_data(a.root)
    # Verification people are not training people: ver images live apart and classes count only training ones.
    assert len(data.val_pairs) == a.val_pairs and sum(p.label for p in data.val_pairs) == a.val_pairs // 2
    labels = answer_key_path(a.root).read_text().split()
    assert len(labels) == len(data.test_pairs) and set(labels) == {"0", "1"}


def test_demo_data_f24_layout(tmp_path):
    summary = make_demo_data(tmp_path / "d", identities=3, images_per_identity=3, verification_identities=3,
                             size=32, layout="f24")
    data = open_data(summary.root)
    assert data.layout == "f24" and sorted(set(data.train.labels)) == ["n000000", "n000001", "n000002"]


def test_demo_data_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "d"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    code, _, err = call_cli(capsys, "demo-data", out, "--identities", "2", "--images-per-identity", "2")
    assert code == 1 and "already exists" in err and "Traceback" not in err
    assert (out / "precious.txt").read_text() == "keep me"


def test_check_data_cli_clean_then_broken(tmp_path, capsys):
    root = tmp_path / "d"
    make_demo_data(root, identities=4, images_per_identity=3, verification_identities=4, size=32)
    clean = run_cli("check-data", root)
    assert clean.returncode == 0, clean.stdout + clean.stderr

    # Break it as the issue describes: truncate an image, add a malformed line and a ../ line.
    victim = sorted((root / "ver_data").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:200])
    pairs = root / "val_pairs.txt"
    count = len(pairs.read_text().splitlines())
    with open(pairs, "a") as handle:
        handle.write("only_one_field.jpg\n../x.jpg a.jpg 1\n")
    broken = run_cli("check-data", root)
    assert broken.returncode == 1
    assert f"ver_data/{victim.name}: not a readable image: a truncated JPEG (200 bytes" in broken.stdout
    assert f"val_pairs.txt:{count + 1}:" in broken.stdout
    assert f"val_pairs.txt:{count + 2}: '../x.jpg' leaves the data root" in broken.stdout
    as_json = json.loads(call_cli(capsys, "check-data", root, "--json")[1])
    assert as_json["ok"] is False and len(as_json["problems"]) == 3


def test_check_data_reads_text_files_saved_with_a_bom_and_crlf(tmp_path, capsys):
    root = tmp_path / "d"
    make_demo_data(root, identities=3, images_per_identity=3, verification_identities=3, size=32)
    before = open_data(root)
    for name in ("val_pairs.txt", "test_pairs.txt", "cls_data/train/labels.txt"):
        path = root / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))  # a Windows editor's save
    code, out, err = call_cli(capsys, "check-data", root)
    assert code == 0, out + err
    after = open_data(root)
    assert after.val_pairs == before.val_pairs and after.test_pairs == before.test_pairs
    assert after.train.paths == before.train.paths and after.train.labels == before.train.labels


def test_check_data_shows_an_invisible_character_in_a_name_escaped(tmp_path, capsys):
    root = tmp_path / "d"
    make_demo_data(root, identities=3, images_per_identity=3, verification_identities=3, size=32)
    real = sorted((root / "ver_data").iterdir())[0].name
    pairs = root / "val_pairs.txt"
    count = len(pairs.read_text().splitlines())
    with open(pairs, "a", encoding="utf-8") as handle:
        handle.write(f"\u200b{real} {real} 1\n")  # a zero-width space pasted in front of a real name
    code, out, _ = call_cli(capsys, "check-data", root)
    assert code == 1
    assert f"val_pairs.txt:{count + 1}: \\u200b{real} does not exist in ver_data/" in out


def test_check_data_reports_missing_files_and_zero_bytes(tmp_path):
    make_demo_data(tmp_path / "d", identities=3, images_per_identity=3, verification_identities=3, size=32)
    root = tmp_path / "d"
    first = sorted((root / "cls_data" / "train" / "images").iterdir())[0]
    first.unlink()
    second = sorted((root / "cls_data" / "train" / "images").iterdir())[0]
    second.write_bytes(b"")
    report = check_data(root)
    text = "\n".join(str(p) for p in report.problems)
    assert f"cls_data/train/labels.txt:1: cls_data/train/images/{first.name} does not exist" in text
    assert f"cls_data/train/images/{second.name}: empty (zero-byte) file" in text


def test_prepare_folder_builds_disjoint_balanced_layout(tmp_path):
    src = tmp_path / "people"
    for person in range(8):
        for k in range(4 if person % 2 else 1):  # odd people have 4 images, even people 1
            write_image(src / f"person_{person}" / f"{k}.png", seed=person * 10 + k, size=(40, 50), mode="L", fmt="PNG")
    summary = prepare_folder(src, tmp_path / "out", verification_identities=2, seed=1, val_pairs=10, test_pairs=10)
    assert summary.verification_identities == 2 and summary.train_identities == 6
    report = check_data(summary.root)
    assert report.ok, report.lines()
    data = open_data(summary.root)
    assert sum(p.label for p in data.val_pairs) * 2 == len(data.val_pairs)
    again = prepare_folder(src, tmp_path / "again", verification_identities=2, seed=1, val_pairs=10, test_pairs=10)
    assert _digest(summary.root) == _digest(again.root)


def test_prepare_folder_rejects_impossible_requests(tmp_path, capsys):
    src = tmp_path / "people"
    for person in range(3):
        write_image(src / f"p{person}" / "0.jpg")
    code, _, err = call_cli(capsys, "prepare-folder", src, tmp_path / "out")
    assert code == 1 and "verification-identities" in err
    assert call_cli(capsys, "prepare-folder", tmp_path / "nowhere", tmp_path / "out")[0] == 1


def test_prepare_folder_on_orl_checks_clean(orl, tmp_path, capsys):
    code, out, err = call_cli(capsys, "prepare-folder", orl, tmp_path / "orl")
    assert code == 0, err
    code, out, _ = call_cli(capsys, "check-data", tmp_path / "orl")
    assert code == 0, out
    assert not any((tmp_path / "orl").rglob("*.png"))  # converted to 112x112 RGB JPEGs like the course data


def test_cli_usage_errors_exit_2(capsys):
    assert run_cli("no-such-command").returncode == 2
    assert call_cli(capsys, "check-data")[0] == 2
    assert call_cli(capsys, "demo-data", "x", "--identities", "0")[0] == 2
