"""The command line: ``python -m helpers <command> --help``.

Each command is a thin layer over a library function. A user mistake
(:class:`UserError`) prints one sentence on stderr and exits 1; bad usage
exits 2 (argparse's convention).
"""

from __future__ import annotations

import argparse
import json
import sys

from .errors import UserError


def _demo_data(args) -> int:
    from .demo_data import make_demo_data

    summary = make_demo_data(args.out, identities=args.identities, images_per_identity=args.images_per_identity,
                             verification_identities=args.verification_identities, layout=args.layout,
                             seed=args.seed, size=args.image_size, overwrite=args.overwrite)
    print("\n".join(summary.lines()))
    return 0


def _prepare_folder(args) -> int:
    from .prepare import prepare_folder

    summary = prepare_folder(args.src, args.out, verification_identities=args.verification_identities,
                             seed=args.seed, layout=args.layout, size=args.image_size,
                             dev_fraction=args.dev_fraction, test_fraction=args.test_fraction,
                             val_pairs=args.val_pairs, test_pairs=args.test_pairs, overwrite=args.overwrite)
    print("\n".join(summary.lines()))
    return 0


def _check_data(args) -> int:
    from .checks import check_data

    report = check_data(args.root, layout=args.layout, workers=args.workers,
                        progress=not args.json and sys.stderr.isatty())
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print("\n".join(report.lines()))
    return 0 if report.ok else 1


def _train(args) -> int:
    from pathlib import Path

    from .engine import train

    overrides = list(args.set or [])
    if args.config and not any(item.startswith("run.name=") for item in overrides):
        overrides.insert(0, f"run.name={Path(args.config).stem}")  # a run folder per config file by default
    result = train(args.config, overrides, resume=args.resume, init_from=args.init_from)
    best = "n/a (no val pairs)" if result.best_eer is None else f"{result.best_eer:.4f}"
    print(f"done: {result.run_dir} (best val EER {best}; best.pt, last.pt, metrics.jsonl)")
    return 0


def _model_summary(args) -> int:
    from .config import load_config
    from .summary import model_summary, summary_lines, write_model_arch

    summary = model_summary(load_config(args.config, args.set or []), args.classes)
    if args.write:
        write_model_arch(summary, args.write)
    if args.json:
        print(json.dumps({k: v for k, v in summary.items() if k != "printed_model"}, indent=2))
    else:
        print("\n".join(summary_lines(summary)))
        if args.write:
            print(f"wrote {args.write}")
    return 1 if args.strict and not summary["within_budget"] else 0


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m helpers",
                                     description="HW2P2 face verification: data, training, evaluation, hand-in.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")

    demo = commands.add_parser("demo-data", help="write the built-in synthetic face dataset",
                               description="Write the built-in synthetic face dataset in the HW2P2 layout "
                                           "(test pair labels go beside it as OUT.test_labels.txt).")
    demo.add_argument("out", help="folder to create")
    demo.add_argument("--identities", type=_positive_int, default=200, help="training identities (default 200)")
    demo.add_argument("--images-per-identity", type=_positive_int, default=12, help="images per identity (default 12)")
    demo.add_argument("--verification-identities", type=_positive_int, default=60,
                      help="identities for the verification pairs, disjoint from training (default 60)")
    demo.add_argument("--layout", choices=("f25", "f24"), default="f25", help="folder layout (default f25)")
    demo.add_argument("--image-size", type=_positive_int, default=112, help="image side in pixels (default 112)")
    demo.add_argument("--seed", type=int, default=0, help="random seed; the same seed writes the same data")
    demo.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    demo.set_defaults(run=_demo_data)

    prep = commands.add_parser("prepare-folder", help="turn a folder-per-identity collection into the HW2P2 layout",
                               description="Turn SRC/<person>/<images> into an HW2P2 data root at OUT, with "
                                           "verification people disjoint from training people.")
    prep.add_argument("src", help="folder holding one folder of images per person")
    prep.add_argument("out", help="folder to create")
    prep.add_argument("--verification-identities", type=_count_or_fraction, default=0.2, metavar="N|FRACTION",
                      help="people held out for verification: a count, or a fraction of those with two or more "
                           "images (default 0.2)")
    prep.add_argument("--layout", choices=("f25", "f24"), default="f25", help="folder layout (default f25)")
    prep.add_argument("--image-size", type=_positive_int, default=112, help="image side in pixels (default 112)")
    prep.add_argument("--dev-fraction", type=float, default=0.1, help="share of each person's images for dev")
    prep.add_argument("--test-fraction", type=float, default=0.0, help="share of each person's images for a test split")
    prep.add_argument("--val-pairs", type=_positive_int, default=1000, help="val pairs to draw (default 1000)")
    prep.add_argument("--test-pairs", type=_positive_int, default=1000, help="test pairs to draw (default 1000)")
    prep.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    prep.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    prep.set_defaults(run=_prepare_folder)

    check = commands.add_parser("check-data", help="count and check a data root",
                                description="Count classes, images and pairs of a data root and list every "
                                            "problem; exit 0 when clean, 1 otherwise.")
    check.add_argument("root", help="the data root (the folder holding cls_data/ and ver_data/)")
    check.add_argument("--layout", choices=("auto", "f24", "f25"), default="auto", help="force a layout")
    check.add_argument("--workers", type=_positive_int, default=None, help="decoding threads (default: all cores)")
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.set_defaults(run=_check_data)

    train = commands.add_parser("train", help="train a model",
                                description="Train from a YAML config (the seed defaults when none is given) "
                                            "plus KEY=VALUE overrides; writes last.pt, best.pt (lowest val EER), "
                                            "metrics.jsonl and config.yaml into run.out_dir/run.name.")
    train.add_argument("--config", help="YAML config file (see config.yaml for every key)")
    train.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override one dotted key, e.g. --set optim.lr=0.01 (repeatable)")
    train.add_argument("--resume", metavar="PATH|auto",
                       help="continue a run: a checkpoint path, or auto for the run folder's last.pt if any")
    train.add_argument("--init-from", metavar="CKPT", help="start from these weights (fine-tuning), fresh optimiser")
    train.set_defaults(run=_train)

    summary = commands.add_parser("model-summary", help="parameter counts, the 30 M budget check, FLOPs",
                                  description="Count the parameters of a configuration's model per part (backbone, "
                                              "embedding, margin head), check the assignment's 30 M budget, and "
                                              "report the final feature-map size and forward FLOPs per image.")
    summary.add_argument("--config", help="YAML config file (the seed defaults when none is given)")
    summary.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one dotted key")
    summary.add_argument("--classes", type=_positive_int, default=8631,
                         help="identities the margin head covers (default 8631, the course data)")
    summary.add_argument("--json", action="store_true", help="print one JSON object")
    summary.add_argument("--strict", action="store_true", help="exit 1 when over the parameter budget")
    summary.add_argument("--write", metavar="PATH", help="also write the table and printed model (model_arch.txt)")
    summary.set_defaults(run=_model_summary)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
