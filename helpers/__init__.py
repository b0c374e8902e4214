"""HW2P2 face verification: ResNet + ArcFace training, evaluation by the term's metric, Kaggle submission, hand-in zip.

The package is layered; each sub-package imports only from the layers below it
(and from itself), never from beside or above, no modules import each other
in a circle, and no module reads another module's private (``_name``) names
(tests/test_layers.py checks all three):

    core                 errors, safe writes, progress, configuration, host, keys, run records
    data, model          data roots, images, datasets | networks, margin heads, checkpoints
    runtime              device, fast path and its timed probe, the Runtime, a notebook session's start
    eval                 embeddings, pair scores, metrics, score normalisation, plots
    training             the Trainer, schedule, weight averaging, which weights best.pt holds, tracking
    handin, tools        submission CSV, hand-in bundle, Kaggle | benchmarks, self-test, search, reports

The CLI (cli.py) sits on top. Below are the public names, the only ones the
notebooks use: they load on first use, so ``import helpers`` and
``python -m helpers --help`` stay instant while torch loads only when needed.
"""

from __future__ import annotations

import importlib

# The layers, lowest first; a tuple holds layers side by side, which may not import each other.
LAYERS = ("core", ("data", "model"), "runtime", "eval", "training", ("handin", "tools"))

_API = {
    "core.config": ["AugmentConfig", "Config", "load_config"],
    "core.course": ["COURSE_CLASSES"],
    "core.errors": ["UserError"],
    "core.host": ["resume_note"],
    "core.records": ["EvalMetrics", "RunRecord", "read_records"],
    "core.terms": ["Term", "get_term"],
    "data.augment": ["BatchAugment", "eval_transform", "starter_train_transform"],
    "data.checks": ["check_data"],
    "data.datasets": ["FaceImages", "training_set"],
    "data.demo": ["make_demo_data"],
    "data.layout": ["FaceData", "open_data", "answer_key_path"],
    "data.prepare": ["prepare_folder"],
    "data.sources": ["obtain_data"],
    "data.stage": ["stage_data"],
    "eval.evaluation": ["EvalSettings", "embed_images", "score_pairs", "verify_pairs"],
    "eval.inference": ["TrainedModel", "evaluate_checkpoint", "load_trained"],
    "eval.metrics": ["compute_eer", "verification_metrics"],
    "eval.plots": ["augmentation_figures", "histogram_figure", "margin_figure", "training_curves_figure"],
    "eval.score_norm": ["ScoreNorm"],
    "handin.bundle": ["build_bundle", "closing_line", "write_acknowledgement", "write_checkpoint_submission"],
    "handin.check": ["check_bundle"],
    "handin.readme": ["handin_readme"],
    "handin.submission": ["make_submission"],
    "model.checkpoint": ["Checkpoint", "load_checkpoint", "save_checkpoint"],
    "model.checkpoint_summary": ["CheckpointSummary", "best_words", "checkpoint_summary"],
    "model.margins": ["ArcMarginProduct", "CombinedMarginProduct", "CosMarginProduct", "MarginHead", "margin_loss"],
    "model.resnet": ["BasicBlock", "BNEmbedding", "Bottleneck", "FaceModel", "LinearEmbedding", "PreActBasicBlock",
                     "PreActBottleneck", "ResNet", "build_face_model", "resnet", "resnet18", "resnet34", "resnet50"],
    "model.summary": ["model_summary", "summary_lines"],
    "runtime.resolve": ["Runtime", "resolve_runtime"],
    "runtime.session": ["start_session"],
    "tools.cost_estimate": ["print_epoch_estimate"],
    "tools.search": ["SearchSettings", "run_search"],
    "tools.selftest": ["quick_selftest", "run_selftest"],
    "training.engine": ["Trainer", "TrainResult", "train"],
    "training.tracking": ["run_records"],
    "training.launch": ["train_on_all_gpus"],
}
# Names given here under another name than in their module, where the module's own needs the module to read clearly.
_RENAMED = {"submission_lines": ("handin.submission", "describe")}
# Modules whose names are read qualified: helpers.quiz.grade(answers), helpers.quiz.QUESTIONS.
_MODULES = {"quiz": "handin.quiz"}
_HOME = {**{name: (module, name) for module, names in _API.items() for name in names}, **_RENAMED}
__all__ = sorted([*_HOME, *_MODULES])


def __getattr__(name: str):
    if name in _MODULES:
        value = importlib.import_module(f".{_MODULES[name]}", __name__)
    elif name in _HOME:
        module, attribute = _HOME[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attribute)
    else:
        raise AttributeError(f"module 'helpers' has no attribute '{name}'")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
