"""Val pairs left out for an unreadable image are counted and named, in evaluate's output and the training log."""

from __future__ import annotations

import shutil

from conftest import TINY, call_cli

from helpers.core.io import read_metrics
from helpers.data.layout import open_data


def _root_with_an_unreadable_val_image(demo_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(demo_root, root)
    pairs = open_data(root).val_pairs
    victim = root / "ver_data" / pairs[0].a
    victim.write_bytes(b"")
    return root, victim.name, sum(victim.name in (pair.a, pair.b) for pair in pairs), len(pairs)


def test_evaluate_names_the_val_pairs_it_leaves_out(trained_run, demo_root, tmp_path, capsys):
    root, victim, dropped, total = _root_with_an_unreadable_val_image(demo_root, tmp_path)
    code, out, err = call_cli(capsys, "evaluate", "--checkpoint", trained_run / "best.pt", "--data-root", root)
    assert code == 0, err
    assert (f"warning: {dropped} val pair(s) left out of the EER: an image of each cannot be read "
            f"({root / 'ver_data' / victim}); run `python -m helpers check-data`") in out
    assert f"val pairs {total - dropped}: EER" in out


def test_training_logs_the_val_pairs_it_leaves_out(demo_root, tmp_path, capsys):
    from helpers.training.engine import train

    root, victim, dropped, _ = _root_with_an_unreadable_val_image(demo_root, tmp_path)
    result = train(None, [*TINY, f"data.root={root}", f"run.out_dir={tmp_path}", "run.name=r", "train.epochs=1"])
    err = capsys.readouterr().err
    assert f"warning: {dropped} val pair(s) left out of the EER" in err and victim in err
    assert all(record["val_unscored_pairs"] == dropped for record in read_metrics(result.run_dir / "metrics.jsonl"))
