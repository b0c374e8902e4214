"""Where a command writes: a target that cannot take the file without loss is refused before anything is written."""

from __future__ import annotations

import os
import stat

import pytest
from conftest import call_cli

from helpers.core.errors import UserError
from helpers.core.io import atomic_write_text, output_file


def test_submit_refuses_an_out_that_ends_with_a_separator_names_a_folder_or_is_read_only(trained_run, tmp_path,
                                                                                       capsys):
    def submit(out):
        return call_cli(capsys, "submit", "--checkpoint", trained_run / "best.pt", "--out", out)

    victim = tmp_path / "victim.csv"
    victim.write_text("precious\n")
    code, _, err = submit(f"{victim}/")
    assert code == 1 and err == f"error: {victim}/ ends with a path separator: give the name of the file to write\n"
    assert victim.read_text() == "precious\n"
    code, _, err = submit(f"{tmp_path / 'newdir'}/")
    assert code == 1 and "ends with a path separator" in err and not (tmp_path / "newdir").exists()
    (tmp_path / "folder").mkdir()
    code, _, err = submit(tmp_path / "folder")
    assert code == 1 and "is a folder: give the name of the file to write in it" in err
    assert list((tmp_path / "folder").iterdir()) == []
    readonly = tmp_path / "readonly.csv"
    readonly.write_text("kept\n")
    readonly.chmod(0o444)
    code, _, err = submit(readonly)
    assert code == 1 and f"{readonly} is read-only; refusing to replace it" in err and "Traceback" not in err
    assert readonly.read_text() == "kept\n" and stat.S_IMODE(readonly.stat().st_mode) == 0o444
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "readonly.csv", "victim.csv"]  # no leftovers
    assert submit(tmp_path / "fine.csv")[0] == 0


def test_every_write_refuses_such_targets(tmp_path):
    (tmp_path / "file").write_text("x")
    for target, words in [(f"{tmp_path / 'file'}{os.sep}", "ends with a path separator"),
                          (tmp_path, "is a folder"), (tmp_path / "file" / "inside.txt", "is a file, not a folder")]:
        with pytest.raises(UserError, match=words):
            atomic_write_text(target, "new")
    assert (tmp_path / "file").read_text() == "x"
    assert output_file(str(tmp_path / "new.csv")) == tmp_path / "new.csv"
