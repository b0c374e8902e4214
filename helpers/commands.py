"""What each command of :mod:`helpers.cli` does: ``do_<command>(args)`` reads the parsed arguments, calls the
library and prints; it returns the exit status. The command line's table of commands and arguments stays in
:mod:`helpers.cli`, which catches the user mistakes these raise."""

from __future__ import annotations

import json

from helpers.core.errors import UserError


def do_demo_data(args) -> int:
    from helpers.data.demo import make_demo_data

    summary = make_demo_data(args.out, identities=args.identities, images_per_identity=args.images_per_identity,
                             verification_identities=args.verification_identities, layout=args.layout,
                             seed=args.seed, size=args.image_size, val_pairs=args.val_pairs,
                             test_pairs=args.test_pairs, overwrite=args.overwrite)
    print("\n".join(summary.lines()))
    return 0


def do_prepare_folder(args) -> int:
    from helpers.data.prepare import prepare_folder

    summary = prepare_folder(args.src, args.out, verification_identities=args.verification_identities,
                             seed=args.seed, layout=args.layout, size=args.image_size,
                             dev_fraction=args.dev_fraction, test_fraction=args.test_fraction,
                             val_pairs=args.val_pairs, test_pairs=args.test_pairs, overwrite=args.overwrite)
    print("\n".join(summary.lines()))
    return 0


def do_check_data(args) -> int:
    from helpers.data.checks import check_data

    report = check_data(args.root, layout=args.layout, workers=args.workers, progress=_progress(args),
                        max_pixels=args.max_pixels, follow_links=args.follow_links)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print("\n".join(report.lines()))
    return 0 if report.ok else 1


def do_train(args) -> int:
    from pathlib import Path

    from helpers.model.checkpoint_summary import best_words
    from helpers.training.engine import train

    # Without a run.name, each config file gets its own run folder, named after it.
    result = train(args.config, args.set or [], resume=args.resume, init_from=args.init_from,
                   default_name=Path(args.config).stem if args.config else None, take_over=args.take_over)
    weights = "averaged (EMA)" if result.weights == "ema" else "trained"
    if result.main:  # under torchrun, rank 0 alone says it
        print(f"done: {result.run_dir} (best.pt: {weights} weights, {best_words(result.run_dir)}; last.pt, "
              "metrics.jsonl)")
    return 0


def do_config(args) -> int:
    from helpers.core.config import dump_config, load_config

    print(dump_config(load_config(args.config, args.set or [])), end="")
    return 0


def do_model_summary(args) -> int:
    from helpers.core.config import load_config
    from helpers.model.summary import model_summary, summary_lines, write_model_arch

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


def do_evaluate(args) -> int:
    from pathlib import Path

    from helpers.eval.inference import evaluate_checkpoint
    from helpers.training.tracking import run_records

    result = evaluate_checkpoint(args.checkpoint, args.data_root, tta=args.tta, device=args.device,
                                 bootstrap=args.bootstrap, plots_dir=args.plots, progress=_progress(args),
                                 weights=args.weights, score_norm=_score_norm(args), term=args.term,
                                 history=run_records(Path(args.checkpoint).parent))
    print(json.dumps(result.as_dict(), indent=2) if args.json else "\n".join(result.lines()))
    return 0


def do_submit(args) -> int:
    from helpers.handin.submission import as_json, describe, make_submission

    result = make_submission(args.checkpoint, args.out, args.data_root, fmt=args.format, tta=args.tta,
                             device=args.device, kaggle_competition=args.kaggle_competition, message=args.message,
                             progress=_progress(args), weights=args.weights, score_norm=_score_norm(args),
                             sample=args.sample, kaggle=args.kaggle, slack=args.slack, term=args.term)
    print(as_json(result) if args.json else "\n".join(describe(result)))
    return 0


def do_score(args) -> int:
    from helpers.handin.submission import score_file

    print("\n".join(score_file(args.submission, args.answers).lines(args.term)))
    return 0


def do_verify(args) -> int:
    from helpers.eval.inference import compare_images

    if len(args.images) % 2:
        raise UserError("verify takes images in pairs: A1 B1 [A2 B2 ...]")
    norm = _score_norm(args)
    if args.onnx:
        from helpers.eval.onnx_export import compare_images_onnx

        _onnx_options(args)
        rows, threshold = compare_images_onnx(args.onnx, args.images, tta=args.tta, score_norm=norm)
    else:
        rows, threshold = compare_images(args.checkpoint, args.images, tta=args.tta, device=args.device,
                                          score_norm=norm, weights=args.weights)
    for a, b, score in rows:
        verdict = "" if threshold is None else ("  same person" if score >= threshold else "  different people")
        print(f"{score:+.4f}  {a}  {b}{verdict}")
    if threshold is not None:
        print(f"(decision threshold {threshold:.4f}: the val EER threshold stored with the "
              f"{'exported model' if args.onnx else 'checkpoint'})")
    elif norm.method != "none":
        print("(AS-norm scores, no decision: the threshold stored with the checkpoint is for raw cosines; "
              "evaluate --score-norm as-norm gives the val EER threshold of these scores)")
    return 0


def do_embed(args) -> int:
    from helpers.eval.inference import embed_folder

    if args.onnx:
        from helpers.eval.onnx_export import embed_folder_onnx

        _onnx_options(args)
        count = embed_folder_onnx(args.onnx, args.folder, args.out, tta=args.tta)
    else:
        count = embed_folder(args.checkpoint, args.folder, args.out, tta=args.tta, device=args.device)
    print(f"wrote {count} embeddings to {args.out}")
    return 0


def _onnx_options(args) -> None:
    """The checkpoint-only options are mistakes with --onnx: the exported model fixed its weights and runtime."""
    if getattr(args, "weights", None):
        raise UserError("--weights applies to --checkpoint; an exported model holds the weights chosen at export")
    if args.device not in ("auto", "cpu"):
        raise UserError(f"--device {args.device} applies to --checkpoint; --onnx runs on onnxruntime's CPU provider")


def do_export(args) -> int:
    from helpers.eval.onnx_export import export_checkpoint

    report = export_checkpoint(args.checkpoint, args.out, data_root=args.data_root, weights=args.weights,
                               progress=_progress(args))
    print(json.dumps(report.as_dict(), indent=2) if args.json else "\n".join(report.lines()))
    return 0


def do_bundle(args) -> int:
    from helpers.handin.bundle import build_bundle, closing_line
    from helpers.handin.check import check_bundle

    if (args.check is None) == (args.run is None):
        raise UserError("bundle takes --run RUN (build a hand-in) or --check ZIP (test one), one of the two")
    if args.check is not None:
        report = check_bundle(args.check, args.term)
        print("\n".join(report.lines()))
        return 0 if report.ok else 1
    result = build_bundle(args.run, args.notebook, args.out, acknowledgement=args.acknowledgement, readme=args.readme,
                          submissions=args.submission, checkpoint_json=args.checkpoint_json,
                          kaggle_score=args.kaggle_score, term=args.term, kaggle_username=args.kaggle_username,
                          slack=args.slack, wandb_project=args.wandb_project, draft=args.draft)
    kind = "a DRAFT hand-in (the grader will refuse it)" if result.draft else "the hand-in"
    print(f"wrote {kind} {result.path} for term {result.term} with {len(result.members)} files: "
          f"{', '.join(result.members)}")
    for line in result.missing:
        print(f"  not included: {line}")
    print(closing_line(result))
    return 0


def _score_norm(args):
    """The score normalisation the options ask for; a cohort size without AS-norm is a mistake, not a no-op."""
    from helpers.eval.score_norm import DEFAULT_COHORT_SIZE, ScoreNorm

    if args.score_norm == "none" and args.cohort_size is not None:
        raise UserError("--cohort-size applies only with --score-norm as-norm")
    return ScoreNorm(args.score_norm, DEFAULT_COHORT_SIZE if args.cohort_size is None else args.cohort_size)


def _progress(args) -> bool:
    """Progress unless the output is JSON; its form (a bar, or occasional lines in a log) is progress.py's choice."""
    return not getattr(args, "json", False)


def do_pack_data(args) -> int:
    from helpers.data.prepare import pack_root

    counts = pack_root(args.root, args.out, overwrite=args.overwrite)
    print(f"wrote {args.out}: " + ", ".join(f"{name} {count} images" for name, count in counts.items()))
    return 0


def do_stage_data(args) -> int:
    from helpers.data.stage import stage_data

    print(stage_data(args.src, args.dest).line())
    return 0


def do_bench(args) -> int:
    from helpers.tools import bench

    if args.what == "train":
        result = bench.bench_train(args.config, args.set or [], device=args.device, batch_size=args.batch_size,
                                   classes=args.classes, steps=args.steps)
    elif args.what == "data":
        result = bench.bench_data(args.data_root, workers=args.workers, batch_size=args.batch_size or 64,
                                  images=args.images, device="auto" if args.device == "auto" else args.device)
    elif args.what == "onnx":
        result = bench.bench_onnx(args.config, args.set or [], checkpoint=args.checkpoint, data_root=args.data_root,
                                  batch_size=args.batch_size, tta=args.tta)
    else:
        result = bench.bench_eval(args.config, args.set or [], checkpoint=args.checkpoint, data_root=args.data_root,
                                  device=args.device, batch_size=args.batch_size, tta=args.tta)
    print(json.dumps(result, indent=2) if args.json else bench.table(result))
    return 0


def do_selftest(args) -> int:
    from helpers.tools.selftest import run_selftest

    report = run_selftest(args.config, args.set or [], data_root=args.data_root, check_compile=args.compile,
                          quick=args.quick, seconds=args.seconds, compile_seconds=args.compile_seconds)
    print(json.dumps(report.as_dict(), indent=2) if args.json else "\n".join(report.lines()))
    return 0 if report.can_train else 1


def do_search(args) -> int:
    from helpers.tools.search import SearchSettings, run_search
    from helpers.tools.search_report import confirm_lines

    settings = SearchSettings(
        config=args.config, space=args.space, out=args.out, overrides=args.set or [], metric=args.metric,
        trials=args.trials, hours=args.hours, trial_minutes=args.trial_minutes, trial_epochs=args.trial_epochs,
        pruner=args.pruner, seed=args.seed, workers=args.workers, storage=args.storage, base_trial=args.base_trial,
        prune_from=args.prune_from)
    written = run_search(settings, confirm=args.confirm, baseline=args.baseline)
    if written["confirm"] is not None:
        print("\n".join(confirm_lines(written["confirm"])))
    best = f", best.yaml (python -m helpers train --config {written['best']})" if written["best"] else ""
    print(f"wrote {args.out}/results.csv, results.md, plots/{best}")
    return 0


def do_report(args) -> int:
    from pathlib import Path

    from helpers.tools.report import markdown_table, write_report

    runs = {Path(run).name: run for run in args.runs}
    missing = [run for run in args.runs if not (Path(run) / "metrics.jsonl").is_file()]
    if missing:
        raise UserError(f"{missing[0]} holds no metrics.jsonl: is it a run folder?")
    table = write_report(runs, args.out, term=args.term)
    print(markdown_table(table), end="")
    print(f"wrote {args.out}/report.csv, report.md and eer_over_time.png")
    return 0
