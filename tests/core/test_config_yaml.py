"""Config files as students pass them around: aliases refused before they expand, keys given twice refused with
both lines, numbers written the way everyone writes them, and size, nesting and count bounded before parsing."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest
from conftest import ROOT, call_cli

from helpers.core.config import load_config
from helpers.core.errors import UserError


def _bomb(levels: int = 9, fan: int = 10) -> str:
    """``levels`` of ``fan`` aliases each: 511 bytes that a YAML loader grows to fan**levels values (24 GB)."""
    lines = [f"a0: &a0 [{', '.join(['x'] * fan)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * fan)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def _at_most_one_gib():
    resource.setrlimit(resource.RLIMIT_AS, (2 ** 30, 2 ** 30))


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_bomb())
    assert len(bomb.read_bytes()) == 511
    # In a child whose address space is capped at 1 GiB: were the bomb expanded, it would die of MemoryError.
    result = subprocess.run([sys.executable, "-m", "helpers", "config", "--config", str(bomb)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, preexec_fn=_at_most_one_gib)
    assert result.returncode == 1 and "Traceback" not in result.stderr and "MemoryError" not in result.stderr
    assert result.stderr == (f"error: {bomb}:2 uses the YAML alias *a0; a config holds plain values only: "
                             "write the value out\n")


@pytest.mark.parametrize("text,line", [("a: &a [*a]\n", 1), ("optim: &o\n  lr: 0.1\nsched: *o\n", 3),
                                       ("base: &b {lr: 0.1}\noptim:\n  <<: *b\n", 3)])
def test_every_alias_is_refused_with_its_line(tmp_path, text, line):
    path = tmp_path / "alias.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=rf"^{path}:{line} uses the YAML alias \*"):
        load_config(path)
    with pytest.raises(UserError, match=r"^--set run.name:1 uses the YAML alias \*a"):
        load_config(None, ["run.name=[&a [x], *a]"])


def test_a_section_or_key_given_twice_names_both_lines(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("data:\n  root: /data/hw2p2\nmodel:\n  depth: 18\ndata:\n  image_size: 64\n")
    with pytest.raises(UserError, match=rf"^{path}:5 gives the section 'data' again \(first on line 1\); YAML "
                                        "would keep only the last: merge them$"):
        load_config(path)
    path.write_text("optim:\n  lr: 0.1\n  momentum: 0.9\n  lr: 0.01\n")
    with pytest.raises(UserError, match=rf"^{path}:4 gives the key 'optim.lr' again \(first on line 2\); YAML "
                                        "would keep only the last: keep one$"):
        load_config(path)
    path.write_text("data:\n  root: /data/hw2p2\nmodel:\n  depth: 18\n")
    assert load_config(path).data.root == "/data/hw2p2"  # the same key in two sections is not a repeat


def test_exponent_numbers_without_a_dot_are_numbers_in_files_and_overrides(tmp_path):
    path = tmp_path / "lr.yaml"
    path.write_text("optim:\n  lr: 1e-3\n  weight_decay: 5e-4\n  betas: [0.9, 9.99E-1]\nsched:\n  min_lr: 1e-6\n")
    cfg = load_config(path)
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.betas, cfg.sched.min_lr) == (0.001, 0.0005,
                                                                                         (0.9, 0.999), 1e-6)
    cfg = load_config(None, ["optim.lr=1e-3", "optim.weight_decay=+5e-4", "loss.s=3e1"])
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.loss.s) == (0.001, 0.0005, 30.0)
    assert load_config(None, ["train.epochs=12", "run.name=run1e3x"]).train.epochs == 12  # ints and text stay
    with pytest.raises(UserError, match="config key 'train.epochs' must be an integer, not 1000.0"):
        load_config(None, ["train.epochs=1e3"])  # a number, though not a count


def test_deep_nesting_is_one_sentence_not_a_recursion_error(tmp_path, capsys):
    path = tmp_path / "nested.yaml"
    path.write_text("optim:\n  betas: " + "[" * 5000 + "]" * 5000 + "\n")  # 10 KB: the composer recursed
    with pytest.raises(UserError, match=rf"^{path}:2 nests lists or mappings more than 32 deep; a config holds "
                                        "sections of plain values$"):
        load_config(path)
    with pytest.raises(UserError, match=r"^--set optim.betas:1 nests lists or mappings more than 32 deep"):
        load_config(None, ["optim.betas=" + "[" * 5000 + "]" * 5000])
    code, out, err = call_cli(capsys, "config", "--config", path)
    assert code == 1 and err == (f"error: {path}:2 nests lists or mappings more than 32 deep; a config holds "
                                 "sections of plain values\n")


@pytest.mark.parametrize("text", ["".join(f"k{i}: {i}\n" for i in range(20_000)),
                                  "optim:\n  betas: [" + "0, " * 20_000 + "0]\n"])
def test_a_config_of_too_many_values_is_refused_while_parsing(tmp_path, text):
    path = tmp_path / "many.yaml"
    path.write_text(text)  # under the size bound: refused by the count, at its 10,001st value, while parsing
    line = 5000 if text.startswith("k0") else 2  # the mapping, then each key and its value
    with pytest.raises(UserError, match=rf"^{path}:{line} passes 10,000 values; a config holds about a hundred "
                                        "keys$"):
        load_config(path)


def test_200000_keys_and_a_300_mb_file_are_refused_by_size_before_reading(tmp_path, capsys):
    keys = tmp_path / "keys.yaml"
    keys.write_text("".join(f"k{i}: {i}\n" for i in range(200_000)))
    with pytest.raises(UserError, match=rf"^config file {keys} is 2,\d{{3}},\d{{3}} bytes, over the 1,048,576-byte "
                                        r"bound for a config \(a few dozen keys\); is it the right file\?$"):
        load_config(keys)
    huge = tmp_path / "huge.yaml"
    with huge.open("wb") as handle:
        handle.truncate(300 * 2 ** 20)  # sparse: a file that size, costing no disk
    code, out, err = call_cli(capsys, "config", "--config", huge)
    assert code == 1 and err == (f"error: config file {huge} is 314,572,800 bytes, over the 1,048,576-byte bound "
                                 "for a config (a few dozen keys); is it the right file?\n")
