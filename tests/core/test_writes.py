"""A full disk: every write stops with one sentence, keeps the previous file and leaves no temporary file.

The disk is faked: ``open`` in helpers.core.io (where every file the project
writes is opened) hands out handles that take a few more bytes, then fail with
``OSError(ENOSPC)`` as a full file system does.
"""

from __future__ import annotations

import errno
import re

import pytest
import torch
from conftest import TINY, call_cli

from helpers.core import io as safe_io
from helpers.core.errors import UserError
from helpers.core.io import WriteFailed, append_text, atomic_write_text, read_metrics, staged_folder
from helpers.data.prepare import pack_root
from helpers.model.checkpoint import load_checkpoint, save_checkpoint

# The one sentence: which file, why, the space left, what survived.
SENTENCE = re.compile(r"^error: could not write (?P<path>\S+): no space left on the device "
                      r"\([\d.]+ (bytes|KiB|MiB|GiB) free on \S+\); (?P<kept>[^\n]+)\n$")


class _FullDiskHandle:
    """A file handle on a disk with ``room`` bytes left: a write past them stores what fits, then fails."""

    def __init__(self, handle, disk):
        self.handle, self.disk = handle, disk

    def write(self, data) -> int:
        data = bytes(data)
        if len(data) > self.disk["room"]:
            self.handle.write(data[: self.disk["room"]])
            self.disk["room"] = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self.disk["room"] -= len(data)
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


@pytest.fixture
def full_disk(monkeypatch):
    """Call with a byte count: from then on the project's writes have only that much room."""

    def fill(room: int) -> None:
        disk = {"room": room}
        monkeypatch.setattr(safe_io, "open",
                            lambda *args, **kwargs: _FullDiskHandle(open(*args, **kwargs), disk), raising=False)

    return fill


def _left_over(folder):
    return sorted(p.name for p in folder.rglob("*") if ".tmp" in p.name or p.name.endswith(".partial"))


def test_a_checkpoint_on_a_full_disk_keeps_the_previous_one(tmp_path, full_disk):
    path = tmp_path / "last.pt"
    save_checkpoint({"value": torch.zeros(1000)}, path)
    full_disk(1000)  # torch.save gets part of the way, then the disk is full
    with pytest.raises(WriteFailed) as caught:
        save_checkpoint({"value": torch.ones(1000)}, path)
    message = str(caught.value)
    assert message.startswith(f"could not write {path}: no space left on the device (")
    assert " free on " in message and message.endswith("the previous last.pt is intact")
    assert load_checkpoint(path)["value"].sum() == 0
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_first_write_on_a_full_disk_leaves_nothing(tmp_path, full_disk):
    full_disk(3)
    with pytest.raises(WriteFailed, match="nothing was left behind$"):
        atomic_write_text(tmp_path / "report.md", "a table\n")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_append_leaves_no_half_record(tmp_path, full_disk):
    log = tmp_path / "metrics.jsonl"
    append_text(log, '{"epoch": 1}\n')
    full_disk(5)
    with pytest.raises(WriteFailed, match="the previous metrics.jsonl is intact$"):
        append_text(log, '{"epoch": 2, "val_eer": 0.25}\n')
    assert log.read_text() == '{"epoch": 1}\n'


def test_training_on_a_full_disk_stops_in_one_sentence_and_resumes_once_there_is_room(
        demo_root, tmp_path, full_disk, monkeypatch, capsys):
    args = [arg for item in TINY + [f"data.root={demo_root}", f"run.out_dir={tmp_path}", "run.name=full"]
            for arg in ("--set", item)]
    assert call_cli(capsys, "train", *args, "--set", "train.epochs=1")[0] == 0
    run = tmp_path / "full"
    full_disk(20_000)  # room for config.yaml and a metrics record, not for a checkpoint
    code, out, err = call_cli(capsys, "train", *args, "--set", "train.epochs=2", "--resume", "auto")
    sentence = SENTENCE.match(err)
    assert code == 1 and sentence, err
    assert sentence["path"] in (str(run / "best.pt"), str(run / "last.pt"))
    assert sentence["kept"] == f"the previous {sentence['path'].rsplit('/', 1)[1]} is intact"
    assert load_checkpoint(run / "last.pt")["epoch"] == 1
    assert _left_over(run) == []

    monkeypatch.delattr(safe_io, "open")  # room again
    code, out, err = call_cli(capsys, "train", *args, "--set", "train.epochs=2", "--resume", "auto")
    assert code == 0, err
    assert "resuming" in out and load_checkpoint(run / "last.pt")["epoch"] == 2
    assert [record["epoch"] for record in read_metrics(run / "metrics.jsonl")] == [0, 1, 2]


def test_a_submission_on_a_full_disk_keeps_the_previous_one(trained_run, tmp_path, full_disk, capsys):
    out = tmp_path / "submission.csv"
    assert call_cli(capsys, "submit", "--checkpoint", trained_run / "best.pt", "--out", out)[0] == 0
    before = out.read_bytes()
    full_disk(100)
    code, _, err = call_cli(capsys, "submit", "--checkpoint", trained_run / "best.pt", "--out", out)
    sentence = SENTENCE.match(err)
    assert code == 1 and sentence, err
    assert sentence["path"] == str(out) and sentence["kept"] == "the previous submission.csv is intact"
    assert out.read_bytes() == before and _left_over(tmp_path) == []


def test_a_check_of_the_written_file_runs_before_the_rename_and_a_refusal_keeps_the_old_file(tmp_path):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"old")
    seen = []

    def refuse(written):
        seen.append((written.parent, written.read_bytes(), out.read_bytes()))
        raise UserError("the new file is wrong")

    with pytest.raises(UserError, match="the new file is wrong"):
        safe_io.atomic_write(out, lambda handle: handle.write(b"new"), check=refuse)
    assert seen == [(tmp_path, b"new", b"old")]  # the check read the finished file beside the target
    assert out.read_bytes() == b"old" and _left_over(tmp_path) == []
    safe_io.atomic_write(out, lambda handle: handle.write(b"new"), check=lambda written: None)
    assert out.read_bytes() == b"new" and _left_over(tmp_path) == []


def test_a_staged_folder_is_all_or_nothing(tmp_path):
    out = tmp_path / "root"
    (out / "old").mkdir(parents=True)
    with pytest.raises(WriteFailed, match=r"^could not write .*root: no space left on the device \(.*\); "
                                          r"the previous root is intact$"):
        with staged_folder(out) as staging:
            (staging / "half").write_text("x")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["old", "root"]


def test_a_read_error_inside_a_staged_folder_is_not_called_a_write_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        with staged_folder(tmp_path / "root"):
            (tmp_path / "missing-source.jpg").read_bytes()
    assert list(tmp_path.iterdir()) == []


def test_packing_onto_a_full_disk_leaves_the_previous_pack(demo_root, tmp_path, monkeypatch, capsys):
    from helpers.data import packed, prepare

    out = tmp_path / "packed"
    pack_root(demo_root, out)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    write_pack = packed.write_pack

    def fill_up(target, items):
        write_pack(target, items[:1])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(prepare, "write_pack", fill_up)
    code, _, err = call_cli(capsys, "pack-data", demo_root, out, "--overwrite")
    sentence = SENTENCE.match(err)
    assert code == 1 and sentence and sentence["path"] == str(out), err
    assert sentence["kept"] == "the previous packed is intact"
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before and _left_over(tmp_path) == []
