"""The command line: ``python -m helpers <command> --help``.

Each command is a thin layer over a library function; :data:`COMMANDS` declares
every command and its arguments as data, and :func:`build_parser` turns that
table into argparse. A user mistake (:class:`UserError`) prints one sentence on
stderr and exits 1; bad usage exits 2 (argparse's convention). A training that a
signal stopped after saving (:class:`Stopped`) exits 128 + the signal's number.
"""

from __future__ import annotations

import argparse
import sys

from helpers import commands
from helpers.core.course import COURSE_CLASSES
from helpers.core.errors import Stopped, UserError
from helpers.core.registry import LAYOUTS


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def _count_or_fraction(text: str) -> float:
    value = float(text)
    if value <= 0 or (value >= 1 and value != int(value)):
        raise argparse.ArgumentTypeError(f"must be a whole count or a fraction in (0, 1), not {text}")
    return value


def _config_arguments(command: argparse.ArgumentParser) -> None:
    from helpers.core.config import packaged_configs

    command.add_argument("--config", metavar="NAME|FILE",
                         help=f"a packaged config by name ({', '.join(packaged_configs())}) or a YAML file; "
                              "the starter recipe when none is given")
    command.add_argument("--set", action="append", metavar="KEY=VALUE",
                         help="override one dotted key, e.g. --set optim.lr=0.01 (repeatable)")


def _layout_read_argument(command: argparse.ArgumentParser) -> None:
    command.add_argument("--layout", choices=("auto", *LAYOUTS.names("read")), default="auto", help="force a layout")


def _layout_writer_arguments(command: argparse.ArgumentParser) -> None:
    """The options of the commands that write a data root."""
    command.add_argument("--layout", choices=LAYOUTS.names("write"), default="f25",
                         help="folder layout (default f25); f26: an unlabelled test split and a unified "
                              "sample_submission.csv, its answers beside the root as OUT.solution.csv")
    command.add_argument("--image-size", type=_positive_int, default=112, help="image side in pixels (default 112)")
    command.add_argument("--val-pairs", type=_positive_int, default=1000, help="val pairs to draw (default 1000)")
    command.add_argument("--test-pairs", type=_positive_int, default=1000, help="test pairs to draw (default 1000)")
    command.add_argument("--seed", type=int, default=0, help="random seed; the same seed writes the same data")
    command.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")


def _term_argument(default_says: str):
    """The --term option, its default said as ``default_says``."""

    def add(command: argparse.ArgumentParser) -> None:
        from helpers.core.terms import NEWEST, all_terms

        terms = {name: term.title for name, term in all_terms().items()}
        command.add_argument("--term", choices=[*terms, NEWEST], metavar="TERM",
                             help=f"the course term whose rules apply: "
                                  f"{', '.join(f'{k} ({v})' for k, v in terms.items())} or {NEWEST} "
                                  f"(default: {default_says})")

    return add


def _model_arguments(command: argparse.ArgumentParser) -> None:
    """The model of verify and embed: a checkpoint, or its ONNX export run on onnxruntime."""
    which = command.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", help="a checkpoint (best.pt)")
    which.add_argument("--onnx", metavar="MODEL", help="a model written by export, run on onnxruntime (CPU) with no "
                                                       "PyTorch model built")


def _checkpoint_arguments(command: argparse.ArgumentParser) -> None:
    _term_argument("the checkpoint's course.term")(command)
    command.add_argument("--checkpoint", required=True, help="a checkpoint (best.pt)")
    command.add_argument("--data-root", help="data root (default: the one the checkpoint trained on)")
    TTA(command)
    DEVICE(command)
    _score_norm_arguments(command)


def _score_norm_arguments(command: argparse.ArgumentParser) -> None:
    """The options of the commands that score pairs: which weights, and how a pair's score is made."""
    WEIGHTS(command)
    command.add_argument("--score-norm", choices=("none", "as-norm"), default="none",
                         help="none: raw cosine; as-norm: adaptive score normalisation against the checkpoint's "
                              "own class centres (the margin head's rows)")
    command.add_argument("--cohort-size", type=int, metavar="K",
                         help="as-norm: the K most similar class centres per image (default 300; all of them "
                              "when the head has fewer classes)")


class Arg:
    """One argument of a command, as data: what ``add_argument`` takes."""

    def __init__(self, *flags: str, **options):
        self.flags, self.options = flags, options

    def __call__(self, command: argparse.ArgumentParser) -> None:
        command.add_argument(*self.flags, **self.options)


# Arguments several commands take, word for word.
JSON = Arg("--json", action="store_true", help="print one JSON object")
TTA = Arg("--tta", action="store_true", help="flip test-time augmentation")
DEVICE = Arg("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
WEIGHTS = Arg("--weights", choices=("raw", "ema"),
              help="the trained (raw) or averaged (ema) weights (default: the ones the checkpoint holds)")


class Command:
    """One command: its name, the function that runs it, its one-line help, its description, and its
    arguments in the order --help lists them (each an :class:`Arg` or a function adding a shared set)."""

    def __init__(self, name: str, handler, help: str, description: str, *arguments):
        self.name, self.handler, self.help, self.description = name, handler, help, description
        self.arguments = arguments


# Every command and its arguments, in the order --help lists them.
COMMANDS = (
    Command("demo-data", commands.do_demo_data, "write the built-in synthetic face dataset",
            "Write the built-in synthetic face dataset in the HW2P2 layout (test pair labels go beside it as "
            "OUT.test_labels.txt).",
            Arg("out", help="folder to create"),
            Arg("--identities", type=_positive_int, default=200, help="training identities (default 200)"),
            Arg("--images-per-identity", type=_positive_int, default=12, help="images per identity (default 12)"),
            Arg("--verification-identities", type=_positive_int, default=60,
                help="identities for the verification pairs, disjoint from training (default 60)"),
            _layout_writer_arguments,
    ),
    Command("prepare-folder", commands.do_prepare_folder, "turn a folder-per-identity collection into the HW2P2 layout",
            "Turn SRC/<person>/<images> into an HW2P2 data root at OUT, with verification people disjoint from "
            "training people.",
            Arg("src", help="folder holding one folder of images per person"),
            Arg("out", help="folder to create"),
            Arg("--verification-identities", type=_count_or_fraction, default=0.2, metavar="N|FRACTION",
                help="people held out for verification: a count, or a fraction of those with two or more images "
                     "(default 0.2)"),
            Arg("--dev-fraction", type=float, default=0.1, help="share of each person's images for dev"),
            Arg("--test-fraction", type=float, default=None,
                help="share of each person's images for a test split (default 0.1 for --layout f26, else 0)"),
            _layout_writer_arguments,
    ),
    Command("check-data", commands.do_check_data, "count and check a data root",
            "Count classes, images and pairs of a data root and list every problem; exit 0 when clean, 1 otherwise.",
            Arg("root", help="the data root (the folder holding cls_data/ and ver_data/)"),
            _layout_read_argument,
            Arg("--workers", type=_positive_int, default=None, help="decoding threads (default: all cores)"),
            Arg("--max-pixels", type=_positive_int, default=None, metavar="N",
                help="refuse images whose header claims more pixels (default: data.max_image_pixels, 4096x4096)"),
            Arg("--follow-links", action="store_true",
                help="follow links that leave the root (data.follow_links) instead of counting them as problems"),
            JSON,
    ),
    Command("pack-data", commands.do_pack_data, "pack a data root's images into one file per split",
            "Write a copy of ROOT whose splits are packed: one file of JPEG bytes plus an index per split (and for "
            "ver_data), which the data layer reads like folders; for slow or networked file systems.",
            Arg("root", help="the data root to pack"),
            Arg("out", help="folder to create"),
            Arg("--overwrite", action="store_true", help="replace OUT if it exists"),
    ),
    Command("stage-data", commands.do_stage_data, "copy a data root to node-local disk, once",
            "Copy the data root SRC to DEST/<its name> (node-local disk: $LOCAL on PSC) unless a complete copy is "
            "there already; a copy left half-done by a killed job is finished. data.stage_to does the same before "
            "training.",
            Arg("src", help="the data root to copy (a packed one from pack-data, or any)"),
            Arg("dest", help="the folder to copy it into; ~ and $VARIABLES expand"),
    ),
    Command("train", commands.do_train, "train a model",
            "Train from a YAML config (the starter defaults when none is given) plus KEY=VALUE overrides; writes "
            "last.pt, best.pt (the weights train.select chooses: lowest val EER by default), metrics.jsonl and "
            "config.yaml into run.out_dir/run.name (with train.ema also best_raw.pt and best_ema.pt). One training "
            "at a time in a run folder (train.lock). SIGTERM or SIGUSR1 save last.pt at the next step and stop with "
            "exit status 128 + the signal's number (143, 138); --resume auto continues.",
            _config_arguments,
            Arg("--resume", metavar="PATH|auto",
                help="continue a run: a checkpoint path, or auto for the run folder's last.pt if any; the run "
                     "writes where this command's run.out_dir, run.name and data.stage_to say, never where the "
                     "checkpoint's did"),
            Arg("--take-over", action="store_true",
                help="with --resume: continue in a run folder that holds another run's records (refused "
                     "otherwise); its metrics.jsonl lines move to metrics.replaced.jsonl, its checkpoints are "
                     "replaced"),
            Arg("--init-from", metavar="CKPT", help="start from these weights (fine-tuning), fresh optimiser"),
    ),
    Command("config", commands.do_config, "print a configuration: every key, its value and what it means",
            "Print the configuration a --config and --set give, as YAML: every key with its value and, as a comment, "
            "what it means. The defaults (the starter recipe) are declared in helpers/core/config.py.",
            _config_arguments,
    ),
    Command("model-summary", commands.do_model_summary, "parameter counts, the 30 M budget check, FLOPs",
            "Count the parameters of a configuration's model per part (backbone, embedding, margin head), check the "
            "assignment's 30 M budget, and report the final feature-map size and forward FLOPs per image.",
            _config_arguments,
            Arg("--classes", type=_positive_int, default=COURSE_CLASSES,
                help=f"identities the margin head covers (default {COURSE_CLASSES}, the course data)"),
            JSON,
            Arg("--strict", action="store_true", help="exit 1 when over the parameter budget"),
            Arg("--write", metavar="PATH", help="also write the table and printed model (model_arch.txt)"),
    ),
    Command("evaluate", commands.do_evaluate, "verification, classification and identification metrics",
            "Evaluate a checkpoint: EER, threshold, AUC, accuracy and TAR at FAR on val_pairs.txt; dev top-1/top-5; "
            "1:N identification of dev images against per-identity train means; optional plots.",
            _checkpoint_arguments,
            JSON,
            Arg("--plots", metavar="DIR",
                help="write roc.png, det.png, scores.png, hardest_pairs.png and training_curves.png here"),
            Arg("--bootstrap", type=int, default=0, metavar="N",
                help="also a bootstrap 95%% interval of the EER from N resamplings"),
    ),
    Command("submit", commands.do_submit, "write the Kaggle submission CSV",
            "Write the submission after checking its rows, IDs and values: in the shape of the competition's "
            "sample_submission.csv when the data root (or --sample) has one (its header and IDs in its order: "
            "test-pair indices get scores, test-image names get class ids), else one row per line of test_pairs.txt. "
            "--kaggle submits it to the term's competition, described as the term asks (Fall 2026: "
            "'|WB=ENTITY/PROJECT/RUN_ID', nothing before the bar, from the checkpoint's W&B run).",
            _checkpoint_arguments,
            Arg("--out", default="submission.csv", help="CSV to write (default submission.csv)"),
            Arg("--sample", metavar="CSV",
                help="the sample submission to follow (default: the data root's sample_submission.csv, when there is "
                     "one)"),
            Arg("--format", choices=("scores", "binary"), default=None,
                help="scores: cosine similarities (the EER leaderboard); binary: 0/1 at the val threshold (default: "
                     "what the sample's values look like, else scores, header ID,Label; binary writes id,predicted)"),
            Arg("--kaggle", action="store_true", help="also submit to the term's Kaggle competition"),
            Arg("--slack", action="store_true", help="with --kaggle: the term's slack competition"),
            Arg("--kaggle-competition", metavar="NAME", help="also submit, to this competition"),
            Arg("--message",
                help="Kaggle description (default: the term's; Fall 2026 accepts only '|WB=ENTITY/PROJECT/RUN_ID')"),
            JSON,
    ),
    Command("score", commands.do_score, "score a submission against an answer key",
            "Score a submission as the leaderboard would: its EER against one 0/1 per test pair (ROOT.test_labels.txt "
            "beside a demo or prepared root), or a unified submission's combined score against its answers "
            "(ROOT.solution.csv beside an f26 root: ID,Label,Task).",
            Arg("submission", help="submission CSV"),
            Arg("answers", help="answer key: one 0/1 per line in test_pairs.txt order, or ID,Label,Task"),
            _term_argument("the newest"),
    ),
    Command("verify", commands.do_verify, "same person or not, for pairs of image files",
            "Print the cosine similarity of each pair of images and the decision at the val EER threshold stored with "
            "the checkpoint.",
            _model_arguments,
            Arg("images", nargs="+", help="A1 B1 [A2 B2 ...]"),
            TTA,
            DEVICE,
            _score_norm_arguments,
    ),
    Command("embed", commands.do_embed, "embeddings of a folder of images",
            "Write the unit-norm embeddings of every image in a folder to an .npz file (arrays 'names' and "
            "'embeddings').",
            _model_arguments,
            Arg("folder", help="folder of images"),
            Arg("--out", required=True, help="the .npz file to write"),
            TTA,
            DEVICE,
    ),
    Command("bundle", commands.do_bundle, "build the hand-in zip the term's grader expects, or check one",
            "Build the hand-in zip of a course term (--term, the newest by default) from a run: exactly the members "
            "its grader expects, e.g. Fall 2026's ACKNOWLEDGEMENT.txt, README.txt, model_metadata.json, "
            "wandb_export.pkl and kaggle_metadata.json, the Kaggle and W&B exports read with your logins. Refuses "
            "without the acknowledgement flag, when any file carries a Kaggle or W&B key, and when a member cannot be "
            "built (naming each; --draft writes the incomplete zip anyway). --check ZIP runs the grader's test on a "
            "zip.",
            Arg("--run", help="the run folder (holding best.pt)"),
            Arg("--check", metavar="ZIP", help="test ZIP as the term's grader would, instead of building"),
            _term_argument("the newest"),
            Arg("--notebook", default="HW2P2_Starter_Notebook.ipynb", help="the notebook to hand in"),
            Arg("--out", help="zip to write (default: the term's name, HW2P2_final_submission.zip)"),
            Arg("--kaggle-username",
                help="the Kaggle account that submitted (default: KAGGLE_USERNAME, else the account the credentials "
                     "sign in as)"),
            Arg("--slack", action="store_true", help="Spring 2026: the best score of the slack competition"),
            Arg("--wandb-project", metavar="ENTITY/PROJECT",
                help="Spring 2026: the W&B project whose best runs to export (default: the run's own)"),
            Arg("--draft", action="store_true",
                help="write the zip even when members cannot be built (named _DRAFT, with MISSING.txt)"),
            Arg("--acknowledgement", default="acknowledgement.txt", help="the acknowledgement file"),
            Arg("--readme", default="README.txt", help="the implementation notes"),
            Arg("--submission", action="append", help="submission CSV(s) (default: RUN/submission*.csv)"),
            Arg("--checkpoint-json", help="checkpoint_submission.json (default: RUN/checkpoint_submission.json)"),
            Arg("--kaggle-score", type=float, help="Fall 2025: your best Kaggle score, to record it"),
    ),
    Command("export", commands.do_export, "the embedder as an ONNX model, checked on onnxruntime",
            "Write the backbone and embedding head (no margin head) as ONNX: uint8 images of the trained size in, "
            "normalised inside the graph, unit embeddings out, any batch size; class mapping, val threshold and "
            "training summary in its metadata. Before writing, the val pairs' images go through onnxruntime (CPU) and "
            "PyTorch: every image's embeddings must agree (cosine >= 0.9999) and the val EER to 4 decimals, or "
            "nothing is written. Needs pip install 'hw2p2-helpers[export]'.",
            Arg("--checkpoint", required=True, help="a checkpoint (best.pt)"),
            Arg("--out", required=True, help="the .onnx file to write"),
            Arg("--data-root", help="data root of the val pairs checked (default: the one the checkpoint trained on)"),
            WEIGHTS,
            JSON,
    ),
    Command("bench", commands.do_bench, "measure training, data loading and evaluation speed",
            "train: images/s and FLOPs utilisation of the plain training step against the engine's fast step, same "
            "model and batch, with what the timed probe measured of each fast-path choice. data: decode + "
            "augmentation images/s per worker, naive loader against the project's, with JPEG decoding alone as the "
            "ceiling. eval: embeddings/s and the time to score the val and test pairs. onnx: the exported model's "
            "size and embeddings/s on onnxruntime against PyTorch on the CPU.",
            Arg("what", choices=("train", "data", "eval", "onnx")),
            _config_arguments,
            DEVICE,
            Arg("--batch-size", type=_positive_int, help="batch size (default: the config's)"),
            Arg("--classes", type=_positive_int, default=COURSE_CLASSES, help="train: margin-head classes"),
            Arg("--steps", type=_positive_int, help="train: timed steps per path"),
            Arg("--data-root", help="data, eval, onnx: a data root (default: generated demo faces)"),
            Arg("--workers", type=int, default=0, help="data: loader workers (0: in this process)"),
            Arg("--images", type=_positive_int, default=2000, help="data: images to load"),
            Arg("--checkpoint", help="eval, onnx: a checkpoint (default: an untrained model of the config)"),
            Arg("--tta", action="store_true", help="eval, onnx: flip test-time augmentation"),
            JSON,
    ),
    Command("selftest", commands.do_selftest, "run every device path a few steps: what works, what a run costs",
            "On the device training would use, run each path (autocast, channels-last, fused optimiser, "
            "torch.compile, JPEG decoding in workers and on the device, a one-process DDP group, checkpoint round "
            "trip, evaluation) a few steps on synthetic input and say what works, what the timed probe measured of "
            "autocast and channels-last, and what training does instead; then time the training step and estimate an "
            "epoch. Exit 0 when training can run, 1 when not.",
            _config_arguments,
            Arg("--data-root", help="estimate an epoch of this data root (default: the course data, 431,550 images)"),
            Arg("--compile", action="store_true", help="also check torch.compile of the training step"),
            Arg("--compile-seconds", type=float, default=300.0, help="time box of the compile check"),
            Arg("--seconds", type=float, default=20.0, help="length of the timed training run (default 20)"),
            Arg("--quick", action="store_true", help="the paths only: no timing, no estimate (seconds)"),
            JSON,
    ),
    Command("search", commands.do_search,
            "hyperparameter search on Optuna: budgeted, pruned, resumable, on the term's leaderboard metric",
            "Search a space of config values (--space: a YAML file or a packaged space: cpu, gpu) with a seeded TPE "
            "sampler and a pruner fed every evaluation; each trial is a train run under OUT/trials/. The objective is "
            "the term's leaderboard metric on the val pairs (val EER; Fall 2026: the combined score) with its "
            "bootstrap interval. The study lives in OUT/study.db: the same command on the same folder resumes it "
            "(after kill -9 too). Writes results.csv, results.md, plots/ and best.yaml.",
            _config_arguments,
            Arg("--space", required=True, metavar="NAME|FILE", help="the search space: cpu, gpu or a YAML file"),
            Arg("--out", required=True, help="the search folder (study, trials, results)"),
            Arg("--trials", type=int, default=20, help="trials in the study in all (default 20)"),
            Arg("--hours", type=float, default=0.0, help="time for this sitting; it stops after an evaluation, "
                                                         "leaving a complete study and report (0: no limit)"),
            Arg("--trial-minutes", type=float, default=0.0, help="each trial's train.max_minutes"),
            Arg("--trial-epochs", type=_positive_int,
                help="each trial's train.epochs (refused with a space that draws train.epochs)"),
            Arg("--metric", help="val_eer, val_score, val_auc, val_accuracy, dev_top1 or dev_top5 (default: the "
                                 "term's leaderboard metric)"),
            Arg("--pruner", choices=("hyperband", "halving"), default="hyperband",
                help="early stopping: Hyperband or successive halving (default hyperband)"),
            Arg("--prune-from", type=_positive_int, default=1, metavar="EPOCHS",
                help="the epoch from which the pruner judges a trial (default 1); its first evaluations may not yet "
                     "tell recipes apart"),
            Arg("--seed", type=int, default=0,
                help="the TPE sampler's seed (default 0), with the trial count of a resumed study"),
            Arg("--workers", type=_positive_int, default=1,
                help="trials at once on this machine, one process each (one GPU each when several are visible)"),
            Arg("--storage", metavar="URL", help="an Optuna database URL shared by several machines (e.g. "
                                                 "postgresql://user:pass@host/db); default OUT/study.db"),
            Arg("--no-base-trial", dest="base_trial", action="store_false",
                help="do not run the config's own values as a trial (by default they run once per study, first)"),
            Arg("--confirm", type=int, default=0, metavar="N",
                help="re-train the winner and the baseline on N seeds and compare them by the paired interval"),
            Arg("--baseline", metavar="NAME|FILE", help="the config --confirm compares with (default --config)"),
    ),
    Command("report", commands.do_report, "compare finished runs: a table and val EER against time",
            "One row per run folder (the term's leaderboard metric first: Fall 2026's best and final combined score; "
            "then best and final val EER, AUC, images/s, epochs, minutes), written as report.csv and report.md, and "
            "a plot of val EER against elapsed time (eer_over_time.png).",
            Arg("runs", nargs="+", help="run folders (each holding metrics.jsonl)"),
            Arg("--out", default="runs/report", help="folder for the report (default runs/report)"),
            _term_argument("the newest"),
    ),
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command in :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(prog="python -m helpers",
                                     description="HW2P2 face verification: data, training, evaluation, hand-in.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    for command in COMMANDS:
        sub = commands.add_parser(command.name, help=command.help, description=command.description)
        for add in command.arguments:
            add(sub)
        sub.set_defaults(handler=command.handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except Stopped as stop:
        if str(stop):
            print(stop, file=sys.stderr)
        return stop.status
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
