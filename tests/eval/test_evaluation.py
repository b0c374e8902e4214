"""Evaluation, submission and the hand-in bundle, on a briefly trained tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import call_cli

from helpers.data.layout import Pair
from helpers.eval.evaluation import pair_images, score_pairs
from helpers.eval.inference import load_trained

PNG = b"\x89PNG\r\n\x1a\n"


def test_evaluate_json_and_plots(trained_run, tmp_path, capsys):
    code, out, err = call_cli(capsys, "evaluate", "--checkpoint", trained_run / "best.pt", "--json",
                              "--plots", tmp_path / "plots", "--bootstrap", "50")
    assert code == 0, err
    result = json.loads(out)
    for key in ("eer", "threshold", "auc", "accuracy", "tar_at_far", "eer_ci95", "pairs"):
        assert key in result
    assert 0 <= result["eer"] <= 1 and set(result["tar_at_far"]) == {"0.0001", "0.001", "0.01", "0.1"}
    # Re-evaluating best.pt gives the val EER the run recorded when it saved it.
    assert result["eer"] == pytest.approx(torch.load(trained_run / "best.pt", weights_only=True)["best_eer"], abs=1e-6)
    for name in ("roc.png", "det.png", "scores.png", "hardest_pairs.png", "training_curves.png"):
        data = (tmp_path / "plots" / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, name


def test_bf16_embeddings_give_the_fp32_eer_within_0_005(trained_run, tmp_path):
    """Autocast bf16 runs on any CPU (emulated where it has no bf16 kernels, only slower), so it is forced here.
    The EER is measured on 2,000 pairs of 100 new people: on the few hundred pairs the shared demo root yields,
    one pair scored differently moves the EER by more than the bound."""
    from dataclasses import replace

    from helpers.data.demo import make_demo_data
    from helpers.eval.evaluation import embed_images, verify_pairs

    many = tmp_path / "many_pairs"
    make_demo_data(many, identities=12, images_per_identity=6, verification_identities=100, seed=1, size=32,
                   difficulty=0.5, val_pairs=2000, test_pairs=10)
    trained = load_trained(trained_run / "best.pt")
    model, data, settings = trained.model, trained.open_data(many), trained.settings
    assert len(data.val_pairs) == 2000
    fp32 = verify_pairs(model, data, replace(settings, amp=None))
    bf16 = verify_pairs(model, data, replace(settings, amp=torch.bfloat16))
    assert fp32.eer < 0.3  # trained: the comparison is between working models
    assert abs(bf16.eer - fp32.eer) <= 0.005, (bf16.eer, fp32.eer)
    embeddings, _ = embed_images(model, sorted((data.root / "ver_data").iterdir())[:8],
                                 replace(settings, amp=torch.bfloat16, tta=True))
    assert embeddings.dtype == torch.float32  # normalised and compared in fp32
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(8), atol=1e-5)


def test_tar_at_a_far_the_pairs_cannot_resolve_is_n_a_in_the_table_and_null_in_json(trained_run, capsys):
    code, out, _ = call_cli(capsys, "evaluate", "--checkpoint", trained_run / "best.pt")
    line = next(text for text in out.splitlines() if text.startswith("TAR at FAR"))
    assert code == 0 and "0.0001: n/a" in line and "(n/a: too few different-person pairs" in line
    result = json.loads(call_cli(capsys, "evaluate", "--checkpoint", trained_run / "best.pt", "--json")[1])
    assert result["negatives"] < 10_000 and result["tar_at_far"]["0.0001"] is None
    assert 0.0 <= result["tar_at_far"]["0.1"] <= 1.0


def test_evaluate_reports_dev_accuracy_and_identification(tmp_path, capsys):
    from conftest import TINY

    from helpers.data.demo import make_demo_data
    from helpers.training.engine import train

    root = make_demo_data(tmp_path / "d", identities=6, images_per_identity=10, verification_identities=4,
                          size=32).root
    run = train(None, TINY + [f"data.root={root}", f"run.out_dir={tmp_path}", "run.name=r", "train.epochs=1"])
    capsys.readouterr()
    code, out, _ = call_cli(capsys, "evaluate", "--checkpoint", run.run_dir / "best.pt", "--json")
    result = json.loads(out)
    assert code == 0 and result["dev_images"] == 6 and 0 <= result["top1"] <= result["top5"] <= 1
    assert 0 <= result["rank1"] <= result["rank5"] <= 1 and result["gallery_identities"] == 6


def test_each_unique_image_is_embedded_once(trained_run, demo_root):
    trained = load_trained(trained_run / "best.pt")
    model, data, settings = trained.model, trained.open_data(), trained.settings
    names = sorted(p.name for p in (demo_root / "ver_data").iterdir())[:3]
    pairs = [Pair(names[0], names[1], 1, 1), Pair(names[0], names[2], 0, 2), Pair(names[1], names[0], 1, 3),
             Pair(names[2], names[2], 1, 4)]
    paths, index = pair_images(data, pairs)
    assert len(paths) == 3
    seen = []
    original = model.embed
    model.embed = lambda images: seen.append(len(images)) or original(images)
    scores, _ = score_pairs(model, data, pairs, settings)
    assert sum(seen) == 3
    assert scores[0] == pytest.approx(scores[2], abs=1e-6) and scores[3] == pytest.approx(1.0, abs=1e-5)


def test_flip_tta_is_symmetric(trained_run, demo_root):
    from helpers.data.images import load_image
    from helpers.eval.evaluation import embed_images

    trained = load_trained(trained_run / "best.pt", tta=True)
    model, settings = trained.model, trained.settings
    path = sorted((demo_root / "ver_data").iterdir())[0]
    mirrored = path.with_name("mirror.png")
    from PIL import Image

    Image.fromarray(load_image(path).flip(2).permute(1, 2, 0).numpy()).save(mirrored)
    try:
        embeddings, _ = embed_images(model, [path, mirrored], settings)
    finally:
        mirrored.unlink()
    assert torch.allclose(embeddings[0], embeddings[1], atol=2e-2)  # same up to JPEG-decoding noise
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(2), atol=1e-5)


def test_verify_and_embed(trained_run, demo_root, tmp_path, capsys):
    a, b = sorted((demo_root / "ver_data").iterdir())[:2]
    code, out, _ = call_cli(capsys, "verify", "--checkpoint", trained_run / "best.pt", a, b, a, a)
    lines = out.splitlines()
    assert code == 0 and lines[1].startswith("+1.0000") and "same person" in lines[1] and "threshold" in lines[2]
    assert call_cli(capsys, "verify", "--checkpoint", trained_run / "best.pt", a)[0] == 1
    code, out, _ = call_cli(capsys, "embed", "--checkpoint", trained_run / "best.pt", demo_root / "ver_data",
                            "--out", tmp_path / "e.npz")
    saved = np.load(tmp_path / "e.npz")
    assert code == 0 and saved["embeddings"].shape[0] == len(list((demo_root / "ver_data").iterdir()))
    assert np.allclose(np.linalg.norm(saved["embeddings"], axis=1), 1, atol=1e-5)


def test_the_stored_threshold_is_used_only_for_scores_made_as_it_was_found():
    from dataclasses import replace

    import torch

    from helpers.core.config import load_config
    from helpers.core.records import EvalMetrics
    from helpers.eval.evaluation import EvalSettings, stored_threshold
    from helpers.eval.score_norm import ScoreNorm
    from helpers.model.checkpoint import Checkpoint

    saved = Checkpoint(model={"w": torch.ones(1)}, ema={"weights": {"w": torch.zeros(1)}, "updates": 1},
                       classes=["a"], config_values=load_config(overrides=["train.eval_tta=true"]).as_dict(),
                       val=EvalMetrics(val_threshold=0.31))
    same = EvalSettings(tta=True)
    assert stored_threshold(saved, same) == 0.31
    assert stored_threshold(saved, replace(same, tta=False)) is None  # other scores: flips averaged or not
    assert stored_threshold(saved, replace(same, score_norm=ScoreNorm("as-norm", 10))) is None
    assert stored_threshold(saved.holding("ema"), same) is None  # the other weights' threshold is not theirs
