"""``bundle --check`` on zips that would cost memory or hide damage: members are streamed within bounds, and a
damaged member is one sentence naming it, exit 1, never a traceback."""

from __future__ import annotations

import json
import tracemalloc
import zipfile

import pytest
from conftest import call_cli

from helpers.handin import check
from helpers.handin.check import check_bundle

METADATA = {"schema_version": "1.0", "model": {"class_name": "FaceModel", "module": "m", "repr": "r",
                                               "trainable_parameters": 1000, "total_parameters": 1000},
            "framework": {"backend_name": "torch", "torch_version": "2.9", "cuda_available": False,
                          "cuda_version": None}}


def _zip(path, members: dict[str, bytes], stored=()):
    """A zip of ``members`` (deflated, except the names in ``stored``)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data, zipfile.ZIP_STORED if name in stored else zipfile.ZIP_DEFLATED)
    return path


def _damage(path, name: str, offset: int, byte: int):
    """Overwrite one byte of member ``name``'s data as it lies in the zip (compressed, when it is)."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(name)
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + offset] = byte
    path.write_bytes(bytes(data))


def _check(capsys, path):
    code, out, err = call_cli(capsys, "bundle", "--check", path)
    assert code == 1 and "Traceback" not in out + err
    return out


def test_a_huge_member_is_streamed_never_held_whole(tmp_path):
    path = tmp_path / "big.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model_metadata.json", json.dumps(METADATA))
        with archive.open("HW2P2.ipynb", "w", force_zip64=True) as member:  # 200 MB that pack into 200 KB
            for _ in range(200):
                member.write(bytes(2**20))
    assert path.stat().st_size < 1_000_000
    tracemalloc.start()
    try:
        report = check_bundle(path, "f26")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report.found["the notebook (.ipynb)"] == "HW2P2.ipynb"
    assert not [problem for problem in report.problems if "HW2P2.ipynb" in problem or "model_metadata" in problem]
    assert peak < 16 * 2**20, f"the check held {peak / 2**20:.0f} MB"


def test_members_over_the_bounds_are_named_and_not_read(tmp_path, monkeypatch, capsys):
    path = _zip(tmp_path / "bounds.zip", {"README.txt": b"n" * 5000, "HW2P2.ipynb": b"{}" * 1000,
                                          "extra.bin": b"x" * 2500, "model_metadata.json": json.dumps(METADATA)})
    monkeypatch.setattr(check, "MEMBER_LIMIT", 4000)
    monkeypatch.setattr(check, "TOTAL_LIMIT", 4000)
    text = "\n".join(check_bundle(path, "f26").problems)
    assert "README.txt unpacks to 5,000 bytes, over the check's bound of 4,000 bytes per member" in text
    assert ("extra.bin unpacks to 2,500 bytes, over what is left of the check's bound of 4,000 bytes for the whole "
            "zip; members after it are not checked") in text
    assert "model_metadata" not in text  # after the bound: not read
    monkeypatch.setattr(check, "PARSED_LIMIT", 100)
    monkeypatch.setattr(check, "TOTAL_LIMIT", 10**6)
    assert any(problem.startswith(f"model_metadata.json unpacks to {len(json.dumps(METADATA))} bytes, over the 100")
               for problem in check_bundle(path, "f26").problems)
    assert "bound of 4,000 bytes per member" in _check(capsys, path)


def test_a_member_with_a_wrong_crc_is_one_sentence(tmp_path, capsys):
    path = _zip(tmp_path / "crc.zip", {"README.txt": b"notes\n" * 10, "model_metadata.json": json.dumps(METADATA)},
                stored={"README.txt"})
    _damage(path, "README.txt", 3, ord("X"))
    assert "README.txt fails its CRC check: its bytes changed after it was zipped" in _check(capsys, path)
    metadata = [problem for problem in check_bundle(path, "f26").problems if "model_metadata" in problem]
    assert metadata == []  # the other members are still checked


def test_a_member_with_corrupt_compressed_data_is_one_sentence(tmp_path, capsys):
    path = _zip(tmp_path / "deflate.zip", {"model_metadata.json": json.dumps(METADATA), "HW2P2.ipynb": b"{}" * 50})
    _damage(path, "model_metadata.json", 0, 0xFF)  # a deflate block of the reserved type 11
    out = _check(capsys, path)
    assert "model_metadata.json's compressed data is corrupt (Error -3 while decompressing data: invalid block " \
           "type): build the zip again" in out


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_a_zip_cut_short_is_one_sentence(tmp_path, capsys, keep):
    whole = _zip(tmp_path / "whole.zip", {"model_metadata.json": json.dumps(METADATA), "HW2P2.ipynb": b"{}" * 500})
    cut = tmp_path / "cut.zip"
    cut.write_bytes(whole.read_bytes()[:int(whole.stat().st_size * keep)])
    assert f"{cut} is not a zip file, or is cut short" in _check(capsys, cut)


@pytest.mark.parametrize(("name", "data", "said"), [
    ("model_metadata.json", b"[" * 100_000 + b"]" * 100_000, "model_metadata.json nests its values too deep"),
    ("wandb_export.pkl", b"\x80\x02}]K\x01s.", "wandb_export.pkl does not load as a pickle of plain values: "
                                               "unhashable type: 'list'"),  # a list as a dict key
])
def test_a_hostile_json_or_pickle_member_is_one_sentence(tmp_path, capsys, name, data, said):
    out = _check(capsys, _zip(tmp_path / "hostile.zip", {name: data}))
    assert f"  {said}" in out
