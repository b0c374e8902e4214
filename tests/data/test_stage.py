"""stage-data and data.stage_to: one complete copy on local disk, reused, finished after a kill, redone when stale."""

from __future__ import annotations

import errno
import json
import shutil
import stat
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import call_cli

from helpers.core.config import load_config
from helpers.core.errors import UserError
from helpers.data import stage
from helpers.data.layout import answer_key_path, open_data
from helpers.data.prepare import pack_root
from helpers.data.stage import MANIFEST, evaluation_root, stage_data, training_root


@pytest.fixture
def packed(demo_root, tmp_path) -> Path:
    """A packed copy of the demo root that a test may change."""
    pack_root(demo_root, tmp_path / "source" / "packed")
    return tmp_path / "source" / "packed"


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != MANIFEST}


def test_a_packed_root_is_copied_once_then_reused(packed, tmp_path, capsys):
    code, out, err = call_cli(capsys, "stage-data", packed, tmp_path / "local")
    copy = tmp_path / "local" / "packed"
    assert code == 0, err
    assert f"staged {packed} to {copy}" in out
    assert _files(copy) == _files(packed)
    assert answer_key_path(copy).read_text() == answer_key_path(packed).read_text()  # the demo's answers travel
    source, staged = open_data(packed), open_data(copy)
    assert staged.layout == "packed" and staged.train.labels == source.train.labels
    assert torch.equal(staged.load(staged.train.paths[3]), source.load(source.train.paths[3]))

    before = {p: p.stat().st_mtime_ns for p in copy.rglob("*")}
    code, out, _ = call_cli(capsys, "stage-data", packed, tmp_path / "local")
    assert code == 0 and out.startswith(f"using the complete copy of {packed} at {copy}")
    assert {p: p.stat().st_mtime_ns for p in copy.rglob("*")} == before  # nothing was written again


def test_any_root_stages_and_folders_of_a_read_only_source_stay_writable(demo_root, tmp_path):
    source = tmp_path / "ro" / "demo"
    shutil.copytree(demo_root, source)
    shutil.copy(answer_key_path(demo_root), answer_key_path(source))
    for folder in [source, *[p for p in source.rglob("*") if p.is_dir()]]:
        folder.chmod(0o555)  # as a read-only mount shows them
    try:
        result = stage_data(source, tmp_path / "local")
    finally:
        for folder in [source, *[p for p in source.rglob("*") if p.is_dir()]]:
            folder.chmod(0o755)
    assert result.copied == result.size and result.files == len(_files(source))
    assert _files(result.copy) == _files(source)
    assert all(p.stat().st_mode & stat.S_IWUSR for p in [result.copy, *result.copy.rglob("*")] if p.is_dir())


def test_a_copy_killed_midway_looks_incomplete_and_is_finished(packed, tmp_path, monkeypatch):
    real_copy, copied = shutil.copy2, []

    def killed_after_two(src, dst, **kwargs):
        if len(copied) == 2:
            raise KeyboardInterrupt  # the job is killed mid-copy
        copied.append(Path(dst))
        return real_copy(src, dst, **kwargs)

    monkeypatch.setattr(stage.shutil, "copy2", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        stage_data(packed, tmp_path / "local")
    copy, partial = tmp_path / "local" / "packed", tmp_path / "local" / ".packed.partial"
    assert not copy.exists() and partial.is_dir()  # nothing that looks complete
    data_cfg = load_config(None, [f"data.root={packed}", f"data.stage_to={tmp_path / 'local'}"]).data
    assert evaluation_root(data_cfg) == str(packed)  # evaluation reads the source meanwhile
    whole, half = (path.relative_to(partial) for path in copied)
    (partial / half).write_bytes((partial / half).read_bytes()[:10])  # being written when the kill came

    monkeypatch.setattr(stage.shutil, "copy2", real_copy)
    result = stage_data(packed, tmp_path / "local")
    assert _files(copy) == _files(packed) and not partial.exists()
    assert result.copied == result.size - (copy / whole).stat().st_size  # kept whole; the half one copied again
    assert evaluation_root(data_cfg) == str(copy)


def test_a_changed_source_or_a_damaged_copy_is_copied_again(packed, tmp_path):
    local = tmp_path / "local"
    copy = stage_data(packed, local).copy
    (packed / "val_pairs.txt").write_text((packed / "val_pairs.txt").read_text() + "")  # same bytes, newer file
    assert stage_data(packed, local).copied > 0
    lines = (packed / "test_pairs.txt").read_text().splitlines()
    (packed / "test_pairs.txt").write_text("\n".join(lines[:5]) + "\n")  # the source was changed
    assert stage_data(packed, local).copied > 0
    assert (copy / "test_pairs.txt").read_text() == "\n".join(lines[:5]) + "\n"
    (copy / "ver_data.pack").unlink()  # part of the copy went missing
    result = stage_data(packed, local)
    assert result.copied > 0 and _files(copy) == _files(packed)
    answer_key_path(packed).unlink()  # an answer key the source no longer has goes too
    stage_data(packed, local)
    assert not answer_key_path(copy).exists()


def test_a_partial_copy_of_another_source_is_started_again(packed, demo_root, tmp_path):
    partial = tmp_path / "local" / ".packed.partial"
    partial.mkdir(parents=True)
    (partial / "ver_data.pack").write_bytes(b"from some other data")
    (partial / MANIFEST).write_text(json.dumps({"format": "hw2p2-stage", "source": str(demo_root), "files": {},
                                                "answers": None, "complete": False}))
    result = stage_data(packed, tmp_path / "local")
    assert result.copied == result.size and _files(result.copy) == _files(packed)


def test_a_full_disk_is_told_in_one_sentence_with_the_space_needed_and_free(packed, tmp_path, monkeypatch, capsys):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(stage.shutil, "disk_usage", lambda path: usage._replace(free=1024))
    code, _, err = call_cli(capsys, "stage-data", packed, tmp_path / "local")
    assert code == 1 and not (tmp_path / "local" / "packed").exists()
    assert f"cannot stage {packed} to {tmp_path / 'local'}: the copy needs " in err
    assert "KiB more and 1.0 KiB is free there" in err and err.count("\n") == 1


def test_running_out_of_space_mid_copy_keeps_what_was_copied(packed, tmp_path, monkeypatch):
    real_copy = shutil.copy2

    def full_disk(src, dst, **kwargs):
        if Path(src).name == "ver_data.pack":
            raise OSError(errno.ENOSPC, "No space left on device", dst)
        return real_copy(src, dst, **kwargs)

    monkeypatch.setattr(stage.shutil, "copy2", full_disk)
    with pytest.raises(UserError, match=r"ran out of space staging .* left to copy and .* free there; free some "
                                        r"and run again to finish it"):
        stage_data(packed, tmp_path / "local")
    assert not (tmp_path / "local" / "packed").exists()
    monkeypatch.setattr(stage.shutil, "copy2", real_copy)
    result = stage_data(packed, tmp_path / "local")
    assert result.copied < result.size and _files(result.copy) == _files(packed)


def test_destinations_expand_variables_and_home_and_name_an_unset_variable(packed, tmp_path, monkeypatch):
    monkeypatch.setenv("LOCAL", str(tmp_path / "node"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    data_cfg = load_config(None, [f"data.root={packed}", "data.stage_to=$LOCAL/hw2p2"]).data
    assert training_root(data_cfg, announce=False) == str(tmp_path / "node" / "hw2p2" / "packed")
    assert stage_data(packed, "~/data").copy == tmp_path / "home" / "data" / "packed"
    monkeypatch.delenv("LOCAL")
    with pytest.raises(UserError, match=r"^data.stage_to is '\$LOCAL/hw2p2' but the environment variable LOCAL "
                                        r"is not set \(PSC sets it inside a job only\)$"):
        training_root(data_cfg)
    assert evaluation_root(data_cfg) == str(packed)
    with pytest.raises(UserError, match="on or inside the source itself"):
        stage_data(packed, packed.parent)


def test_processes_staging_at_once_copy_once(packed, tmp_path, monkeypatch):
    real_copy = shutil.copy2

    def slow_copy(src, dst, **kwargs):
        time.sleep(0.1)  # long enough for the other process to arrive while this one copies
        return real_copy(src, dst, **kwargs)

    monkeypatch.setattr(stage.shutil, "copy2", slow_copy)
    start, results = threading.Barrier(2), []

    def rank():
        start.wait()
        results.append(stage_data(packed, tmp_path / "local", announce=False, progress=False))

    threads = [threading.Thread(target=rank) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(result.copied for result in results) == [0, results[0].size]
    assert _files(results[0].copy) == _files(packed)


def test_a_fall_2026_root_stages_with_its_solution_beside_the_copy(tmp_path):
    from helpers.data.demo import make_demo_data
    from helpers.data.layout import solution_path

    source = tmp_path / "drive" / "f26"
    make_demo_data(source, identities=4, images_per_identity=3, verification_identities=4, size=16, layout="f26",
                   val_pairs=10, test_pairs=10)
    copy = stage_data(source, tmp_path / "local", announce=False, progress=False).copy
    assert solution_path(copy).read_text() == solution_path(source).read_text()
    assert answer_key_path(copy).read_text() == answer_key_path(source).read_text()
    solution_path(copy).unlink()  # a copy that lost its answers is not complete: staging brings them back
    stage_data(source, tmp_path / "local", announce=False, progress=False)
    assert solution_path(copy).read_text() == solution_path(source).read_text()
