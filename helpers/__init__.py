"""HW2P2 face verification: ResNet + ArcFace training, EER evaluation, Kaggle submission, Autolab hand-in.

The package is layered; each sub-package imports only from the layers below it
(and from itself), never from beside or above, and no modules import each other
in a circle (tests/test_layers.py checks both):

    core                 errors, safe writes, progress, configuration, device, platform
    data, model          data roots, images, datasets | networks, margin heads, checkpoints
    eval                 embeddings, pair scores, metrics, score normalisation, plots
    training             the Trainer, schedule, weight averaging, tracking
    handin, tools        submission CSV, Autolab bundle | benchmarks, self-test, sweeps, reports

The CLI (cli.py) sits on top. Below are the public names: they load on first
use, so ``import helpers`` and ``python -m helpers --help`` stay instant while
torch loads only when needed.
"""

from __future__ import annotations

import importlib

# The layers, lowest first; a tuple holds layers side by side, which may not import each other.
LAYERS = ("core", ("data", "model"), "eval", "training", ("handin", "tools"))

_API = {
    "core.config": ["AugmentConfig", "Config", "load_config"],
    "core.errors": ["UserError"],
    "core.terms": ["Term", "get_term"],
    "data.augment": ["BatchAugment", "eval_transform", "seed_train_transform"],
    "data.datasets": ["FaceImages", "training_set"],
    "data.demo": ["make_demo_data"],
    "data.layout": ["FaceData", "open_data", "answer_key_path"],
    "data.prepare": ["prepare_folder"],
    "data.stage": ["stage_data"],
    "eval.evaluation": ["EvalSettings", "embed_images", "score_pairs", "verify_pairs"],
    "eval.metrics": ["compute_eer", "verification_metrics"],
    "eval.score_norm": ["ScoreNorm"],
    "model.checkpoint": ["load_checkpoint", "save_checkpoint"],
    "model.margins": ["ArcMarginProduct", "CombinedMarginProduct", "CosMarginProduct", "MarginHead", "margin_loss"],
    "model.resnet": ["BasicBlock", "BNEmbedding", "Bottleneck", "FaceModel", "LinearEmbedding", "PreActBasicBlock",
                     "PreActBottleneck", "ResNet", "build_face_model", "resnet", "resnet18", "resnet34", "resnet50"],
    "tools.selftest": ["print_epoch_estimate", "quick_selftest", "run_selftest"],
    "training.engine": ["Trainer", "TrainResult", "train"],
    "training.launch": ["train_on_all_gpus"],
}
_HOME = {name: module for module, names in _API.items() for name in names}
__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module 'helpers' has no attribute '{name}'")
    value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
