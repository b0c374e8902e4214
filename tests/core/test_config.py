"""Configuration: the documented defaults, overrides, and refusals that name the key."""

from __future__ import annotations

import pytest
import yaml
from conftest import ROOT, TINY, call_cli
from pydantic import ValidationError

from helpers.core.config import (
    PACKAGED,
    Config,
    OptimConfig,
    all_keys,
    changed,
    defaults,
    dump_config,
    load_config,
    packaged_configs,
)
from helpers.core.errors import UserError
from helpers.training.budget import epoch_limit

REQUIRED_KEYS = """data.root data.layout data.num_workers data.strict model.depth model.width model.stem model.block
model.embedding_dim loss.type loss.s loss.m loss.easy_margin optim.name optim.lr optim.momentum optim.weight_decay
optim.nesterov sched.name sched.warmup_epochs train.epochs train.batch_size train.amp train.channels_last
train.compile train.grad_clip train.accumulate train.seed train.deterministic train.device run.out_dir run.name
tracking.wandb.mode""".split()


def test_the_starter_is_the_defaults_and_every_key_is_explained():
    assert load_config("starter") == defaults() == Config()
    assert yaml.safe_load((PACKAGED / "starter.yaml").read_text()) is None  # it overrides nothing
    dumped = dump_config(defaults()).splitlines()
    for key in all_keys():
        leaf = key.split(".")[-1]
        line = next(line for line in dumped if line.strip().startswith(f"{leaf}:"))
        assert "  # " in line, f"{key} has no description in helpers/core/config.py"


def test_no_packaged_config_restates_a_default():
    # A default is written once, as a field default in helpers/core/config.py; configs only override.
    starter = defaults().as_dict()

    def restated(values, defaults_, prefix=""):
        for name, value in values.items():
            if isinstance(value, dict):
                yield from restated(value, defaults_[name], f"{prefix}{name}.")
            elif value == defaults_[name]:
                yield f"{prefix}{name}"

    for name in packaged_configs():
        values = yaml.safe_load((PACKAGED / f"{name}.yaml").read_text()) or {}
        assert list(restated(values, starter)) == [], name


def test_the_configuration_is_read_only_and_typed():
    cfg = load_config("fast")
    with pytest.raises(ValidationError, match="frozen"):
        cfg.optim.lr = 1.0
    assert isinstance(cfg.optim, OptimConfig) and cfg.augment.crop_scale == (0.7, 1.0)
    assert changed(cfg, {"run.name": "other"}).run.name == "other" and cfg.run.name is None
    with pytest.raises(UserError, match="'run.name' must be a plain folder name"):
        changed(cfg, {"run.name": "a/b"})


def test_the_config_command_prints_every_key_with_its_meaning(capsys):
    code, out, _ = call_cli(capsys, "config", "--config", "fast", "--set", "optim.lr=0.01")
    assert code == 0
    assert "lr: 0.01  # the peak learning rate" in out and "head: bn  # " in out
    assert load_config(base=yaml.safe_load(out)) == load_config("fast", ["optim.lr=0.01"])


def test_one_copy_of_each_config_and_it_ships_in_the_package():
    # Configs live only in helpers/configs/: a second copy at the top would drift from the packaged one.
    assert not (ROOT / "config.yaml").exists() and not (ROOT / "configs").exists()
    assert {"starter", "fast", "gpu", "demo", "phase1_sgd", "phase2_finetune", "phase3_adam_cosine"} <= set(packaged_configs())
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"configs/*.yaml"' in pyproject


def test_configs_are_chosen_by_name_or_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no checkout here: names come from the package
    assert load_config("fast") == load_config(PACKAGED / "fast.yaml") == load_config("fast.yaml")
    assert load_config("fast").model.head == "bn"
    own = tmp_path / "fast.yaml"  # a file of the user's wins over the packaged config of the same file name
    own.write_text("optim:\n  lr: 0.5\n")
    assert load_config("fast.yaml").optim.lr == 0.5 and load_config("fast").optim.lr == 0.002
    # the checkout paths of before the configs moved into the package still name the same recipes
    assert load_config("configs/fast.yaml") == load_config("fast") and load_config("config.yaml") == load_config("starter")
    with pytest.raises(UserError, match=r"cannot read config file other/fast.yaml.*chosen by name: .*fast"):
        load_config("other/fast.yaml")
    with pytest.raises(UserError, match=r"cannot read config file fastt.*demo, fast, gpu"):
        load_config("fastt")


def test_the_starter_recipe_and_the_imagenet_stem_still_answer_to_their_old_name_seed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config("seed") == load_config("seed.yaml") == load_config("configs/seed.yaml") == defaults()
    assert "seed" not in packaged_configs() and defaults().model.stem == "imagenet"
    old = tmp_path / "old.yaml"
    old.write_text("model:\n  stem: seed\n")
    assert load_config(old).model.stem == "imagenet" == load_config(overrides=["model.stem=seed"]).model.stem
    assert load_config(base={"model": {"stem": "seed"}}).model.stem == "imagenet"  # an old checkpoint's config


def test_train_with_a_packaged_config_from_any_folder(demo_root, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    sets = [a for item in TINY + [f"data.root={demo_root}", "train.epochs=1", "train.eval_tta=false"]
            for a in ("--set", item)]
    code, out, err = call_cli(capsys, "train", "--config", "fast", *sets)
    assert code == 0, err
    assert (tmp_path / "runs" / "fast" / "best.pt").is_file() and "done: runs/fast" in out


def test_starter_values():
    cfg = defaults()
    assert cfg.model.depth == 34 and cfg.model.embedding_dim == 512
    assert (cfg.loss.type, cfg.loss.s, cfg.loss.m, cfg.loss.easy_margin) == ("arcface", 30.0, 0.35, False)
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay,
            cfg.optim.nesterov) == ("sgd", 0.001, 0.9, 1e-4, True)
    # The starter trains 100 epochs; train.epochs is unset so that a time budget is not cut short by default.
    assert cfg.train.batch_size == 64 and cfg.train.epochs is None and epoch_limit(cfg.train) == 100
    assert cfg.augment.crop_scale == (0.9, 1.0) and cfg.augment.flip == 0.5


def test_issue_keys_exist():
    assert set(REQUIRED_KEYS) <= set(all_keys())


def test_overrides_parse_yaml_values():
    cfg = load_config(overrides=["optim.lr=0.1", "train.amp=bf16", "train.compile=true", "sched.milestones=[5, 8]",
                                 "run.name=x", "data.root=/data/hw2p2"])
    assert cfg.optim.lr == 0.1 and cfg.train.compile is True and cfg.sched.milestones == (5.0, 8.0)
    assert cfg.data.root == "/data/hw2p2"
    assert load_config(overrides=["train.epochs=3"]).train.epochs == 3


@pytest.mark.parametrize("override,needle", [
    ("optim.lrr=0.1", "unknown config key 'optim.lrr'.*did you mean 'optim.lr'"),
    ("train.epochs=abc", "'train.epochs' must be an integer"),
    ("train.epochs=2.5", "'train.epochs' must be an integer"),
    ("train.epochs=0", "'train.epochs' must be at least 1"),
    ("optim.lr=-1", "'optim.lr' must be above 0"),
    ("optim.lr=.nan", "'optim.lr' must be a number"),
    ("train.epochs=true", "'train.epochs' must be an integer"),
    ("data.num_workers=many", "'data.num_workers' must be an integer or auto"),
    ("train.channels_last=maybe", "'train.channels_last' must be true, false or auto"),
    ("optim.name=rmsprop", "'optim.name' must be one of sgd, adam, adamw"),
    ("model.depth=101", "'model.depth' must be one of 18, 34, 50"),
    ("loss.m=4", "'loss.m' must be below"),
    ("train.deterministic=maybe", "'train.deterministic' must be true or false"),
    ("train.device=gpu", "'train.device' must be auto, cpu"),
    ("augment.crop_scale=[0.9]", "'augment.crop_scale' must be a list of 2 numbers"),
    ("sched.milestones=[8, 5]", "'sched.milestones' must be in increasing order"),
    ("train", "--set expects KEY=VALUE"),
    ("optim=3", "'optim' is a section"),
])
def test_bad_overrides_name_the_key(override, needle):
    with pytest.raises(UserError, match=needle):
        load_config(overrides=[override])


def test_bad_file_contents_name_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    for text, needle in [
        ("optim:\n  lr: 0.1\n  momentun: 0.9\n", r"unknown config key 'optim.momentun' in .*bad.yaml"),
        ("optim:\n  lr: 0.1\nmodel:\n  depth: 101\n",
         r"'model.depth' must be one of 18, 34, 50, not 101 \(from .*bad.yaml:4\)"),
        ("optim: 3\n", r"'optim' must be a section"),
        ("optim:\n  lr: [1, 2\n", r"bad.yaml:\d+ is not valid YAML"),
        ("- a list\n", "must hold a mapping"),
    ]:
        bad.write_text(text)
        with pytest.raises(UserError, match=needle):
            load_config(bad)
    with pytest.raises(UserError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")


def test_a_config_from_any_editor_loads(tmp_path):
    windows = tmp_path / "windows.yaml"
    windows.write_bytes(b"\xef\xbb\xbfoptim:\r\n  lr: 0.05\r\nloss:\r\n  type: cosface\r\n")
    cfg = load_config(windows)
    assert cfg.optim.lr == 0.05 and cfg.loss.type == "cosface"
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"optim:\n  lr: 0.05  # r\xe9glage\n")
    with pytest.raises(UserError, match=r"latin.yaml is not UTF-8 text \(byte 22 is 0xe9\); save it as UTF-8"):
        load_config(latin)


def test_dump_round_trips(tmp_path):
    cfg = load_config(overrides=["optim.lr=0.05", "loss.type=cosface"])
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg


def test_every_shipped_config_loads():
    for name in packaged_configs():
        load_config(name)
