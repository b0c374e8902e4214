"""HW2P2 face verification: ResNet + ArcFace training, EER evaluation, Kaggle submission, Autolab hand-in.

The public API. Names load on first use, so ``import helpers`` and
``python -m helpers --help`` stay instant while torch loads only when needed.
"""

from __future__ import annotations

import importlib

_API = {
    "augment": ["AugmentConfig", "BatchAugment", "eval_transform", "seed_train_transform"],
    "checkpoint": ["load_checkpoint", "save_checkpoint"],
    "config": ["load_config"],
    "data": ["FaceData", "FaceImages", "open_data", "training_set"],
    "demo_data": ["make_demo_data"],
    "engine": ["Trainer", "TrainResult", "train"],
    "errors": ["UserError"],
    "evaluation": ["EvalSettings", "embed_images", "score_pairs", "verify_pairs"],
    "margins": ["ArcMarginProduct", "CombinedMarginProduct", "CosMarginProduct", "MarginHead", "margin_loss"],
    "metrics": ["compute_eer", "verification_metrics"],
    "model": ["BasicBlock", "BNEmbedding", "Bottleneck", "FaceModel", "LinearEmbedding", "PreActBasicBlock",
              "PreActBottleneck", "ResNet", "build_face_model", "resnet", "resnet18", "resnet34", "resnet50"],
    "prepare": ["prepare_folder", "answer_key_path"],
    "score_norm": ["ScoreNorm"],
    "selftest": ["print_epoch_estimate", "quick_selftest", "run_selftest"],
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
