"""The same command on the same machine takes the same speed settings: a deterministic run times nothing, the
timed probe's verdict is cached per machine (train.reprobe times it again), and one measured under load is not
trusted."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import FAST_BF16, SLOW_BF16

from helpers.core.config import load_config
from helpers.runtime import probe_cache
from helpers.runtime.fast_path import fast_path
from helpers.runtime.probe import amp_name

CPU = torch.device("cpu")
TINY_MODEL = ["model.depth=18", "model.width=0.125", "data.image_size=32", "train.batch_size=8"]


def chosen(fast) -> tuple:
    return amp_name(fast.amp), fast.channels_last


def cached_files(cache) -> list:
    folder = cache / "hw2p2" / "probe"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def test_a_deterministic_run_times_nothing_and_takes_the_fixed_choice(fake_timings, fresh_cache):
    asked = fake_timings(FAST_BF16)  # bf16 would be taken, were it timed
    fast = fast_path(load_config(overrides=TINY_MODEL + ["train.deterministic=true"]), CPU)
    assert asked == [] and chosen(fast) == ("none", True) and fast.timing is None and not cached_files(fresh_cache)
    assert fast.sentence() == "fast path: fp32, channels-last (not timed: train.deterministic takes fixed settings)"
    # a value set is still taken as it is, and the other auto setting is fixed, not timed
    fast = fast_path(load_config(overrides=TINY_MODEL + ["train.deterministic=true", "train.amp=bf16"]), CPU)
    assert asked == [] and chosen(fast) == ("bf16", True)
    fast = fast_path(load_config(overrides=TINY_MODEL + ["train.deterministic=true", "train.amp=bf16",
                                                         "train.channels_last=false"]), CPU)
    assert chosen(fast) == ("bf16", False) and fast.sentence() == "fast path: autocast bf16, NCHW"


def test_the_verdict_is_cached_per_machine_and_reprobe_times_it_again(fake_timings, fresh_cache):
    cfg = load_config(overrides=TINY_MODEL)
    first = fake_timings(FAST_BF16)
    assert chosen(fast_path(cfg, CPU)) == ("bf16", True) and len(first) == 1
    assert len(cached_files(fresh_cache)) == 1
    later = fake_timings(SLOW_BF16)  # another process on the same machine, timing under other conditions
    fast = fast_path(cfg, CPU)
    assert chosen(fast) == ("bf16", True) and later == []  # the same path, from the cache
    assert fast.sentence().endswith("; this machine's cached verdict (train.reprobe=true times it again))")
    assert fast.describe()["probe"]["cached"]
    reprobed = fast_path(load_config(overrides=TINY_MODEL + ["train.reprobe=true"]), CPU)
    assert chosen(reprobed) == ("none", True) and len(later) == 1 and not reprobed.timing.cached
    again = fake_timings(FAST_BF16)
    assert chosen(fast_path(cfg, CPU)) == ("none", True) and again == []  # the new verdict replaced the old
    # another model shape, batch or image size is another question
    fast_path(load_config(overrides=TINY_MODEL + ["data.image_size=48"]), CPU)
    fast_path(load_config(overrides=TINY_MODEL + ["train.batch_size=6"]), CPU)
    assert len(again) == 2 and len(cached_files(fresh_cache)) == 3


def test_another_cpu_or_torch_version_asks_again(fake_timings, monkeypatch):
    cfg = load_config(overrides=TINY_MODEL)
    fake_timings(FAST_BF16)
    fast_path(cfg, CPU)
    asked = fake_timings(SLOW_BF16)
    monkeypatch.setattr(probe_cache, "cpu_identity", lambda: {"machine": "x86_64", "model": "Other", "flags": "avx2"})
    assert chosen(fast_path(cfg, CPU)) == ("none", True) and len(asked) == 1
    asked = fake_timings(FAST_BF16)
    monkeypatch.setattr(torch, "__version__", "2.99.0")
    assert chosen(fast_path(cfg, CPU)) == ("bf16", True) and len(asked) == 1


def test_the_key_names_the_cpu_model_flags_torch_and_the_question():
    key = probe_cache.probe_key(CPU, {"shape": {"batch": 8}})
    assert key["cpu"]["model"] and key["torch"] == torch.__version__ and key["shape"] == {"batch": 8}
    assert set(key["cpu"]) == {"machine", "model", "flags"} and key["threads"] == torch.get_num_threads()


def test_the_cache_lives_under_xdg_cache_home_or_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert probe_cache.cache_folder() == tmp_path / "xdg" / "hw2p2" / "probe"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert probe_cache.cache_folder() == tmp_path / "home" / ".cache" / "hw2p2" / "probe"


TEXT_RATE = {"measured": [{"amp": "bf16", "channels_last": True, "screen": "a", "timed": 1}],
             "default": ["bf16", True], "chosen": ["bf16", True], "seconds": 1}


@pytest.mark.parametrize("damage", ["not json", json.dumps({"key": {}, "verdict": {}}), "[1, 2]",
                                    'KEY {"measured": "x", "default": 1}', "KEY " + json.dumps(TEXT_RATE)])
def test_a_damaged_cache_file_is_measured_again_and_replaced(fake_timings, fresh_cache, damage):
    cfg = load_config(overrides=TINY_MODEL)
    fake_timings(FAST_BF16)
    fast_path(cfg, CPU)
    [path] = cached_files(fresh_cache)
    key = json.loads(path.read_text())["key"]
    if damage.startswith("KEY "):
        damage = json.dumps({"key": key, "verdict": json.loads(damage[4:])})
    path.write_text(damage)
    asked = fake_timings(SLOW_BF16)
    assert chosen(fast_path(cfg, CPU)) == ("none", True) and len(asked) == 1
    assert json.loads(path.read_text())["verdict"]["chosen"] == ["none", True]


def test_a_verdict_measured_under_load_is_not_trusted_nor_cached(fake_timings, fresh_cache):
    cfg = load_config(overrides=TINY_MODEL)
    asked = fake_timings(FAST_BF16, spread=3.0)  # one setting's rounds 3x apart: something else ran
    fast = fast_path(cfg, CPU)
    assert chosen(fast) == ("none", True) and not cached_files(fresh_cache)  # the default, not bf16
    assert not fast.timing.trusted and fast.describe()["probe"]["spread"] == 3.0
    assert ("not trusted: the timed rounds of one setting were 3.00x apart, over the 2x bound (a busy machine), so "
            "the default is taken and nothing is cached") in fast.sentence()
    asked = fake_timings(FAST_BF16)  # the next process, on a quiet machine, measures and keeps its verdict
    assert chosen(fast_path(cfg, CPU)) == ("bf16", True) and len(asked) == 1 and cached_files(fresh_cache)


def test_an_unwritable_cache_costs_a_note_not_the_run(fake_timings, fresh_cache, capsys):
    fresh_cache.write_text("a file where the cache folder goes")
    fake_timings(FAST_BF16)
    assert chosen(fast_path(load_config(overrides=TINY_MODEL), CPU)) == ("bf16", True)
    assert "note: the timed probe's verdict is not cached (" in capsys.readouterr().err


def test_a_cached_verdict_of_other_settings_is_measured_again(fake_timings, fresh_cache):
    cfg = load_config(overrides=TINY_MODEL)
    fake_timings(FAST_BF16)
    fast_path(cfg, CPU)
    [path] = cached_files(fresh_cache)
    saved = json.loads(path.read_text())
    measured = saved["verdict"]["measured"]
    saved["verdict"]["measured"] = [m for m in measured if (m["amp"], m["channels_last"]) != ("bf16", False)]
    path.write_text(json.dumps(saved))  # a verdict that measured fewer settings than this question asks about
    asked = fake_timings(SLOW_BF16)
    assert chosen(fast_path(cfg, CPU)) == ("none", True) and len(asked) == 1
