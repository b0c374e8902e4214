"""What `search` costs beyond the training it runs, and how long a resumed search takes to pick up.

    python tools/search_overhead.py [--trials 6] [--epochs 2] [--json]

On a small demo root (generated in a temporary folder) it runs `python -m helpers search` as a user would, with
tiny trials, and reads the study and each trial's own timing back:

* per trial: the search's wall time minus the seconds spent inside `train()` (what each trial records as its
  minutes), divided by the trials; split into the start (process start to the first trial), the gaps between
  trials (sampler, pruner, progress line) and the end (last trial to the process's exit: results, plots);
* resume: the same search killed with SIGKILL while a trial trains, then the same command again: seconds from
  its start to the start of the first trial it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.depth=18", "model.width=0.125", "data.image_size=32", "train.batch_size=8", "data.num_workers=0",
        "tracking.wandb.mode=disabled", "train.progress=false", "train.amp=none", "train.channels_last=false",
        "optim.name=adam", "train.eval_bootstrap=200"]
SPACE = "optim.lr: {low: 0.001, high: 0.01, log: true}\nloss.m: {low: 0.2, high: 0.5}\n"


def command(root: Path, out: Path, space: Path, trials: int, epochs: int) -> list[str]:
    sets = [f"data.root={root}", f"run.out_dir={out.parent / 'runs'}", *TINY]
    return [sys.executable, "-m", "helpers", "search", "--space", str(space), "--out", str(out), "--trials",
            str(trials), "--trial-epochs", str(epochs), *[a for s in sets for a in ("--set", s)]]


def study_trials(out: Path):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.load_study(study_name=out.name, storage=f"sqlite:///{out / 'study.db'}").get_trials()


def overhead(folder: Path, root: Path, space: Path, trials: int, epochs: int) -> dict:
    out = folder / "overhead"
    began = time.time()
    subprocess.run(command(root, out, space, trials, epochs), cwd=ROOT, check=True, capture_output=True)
    ended = time.time()
    done = sorted(study_trials(out), key=lambda t: t.number)
    training = sum(t.user_attrs["minutes"] * 60 for t in done)
    starts = [t.datetime_start.timestamp() for t in done]
    ends = [t.datetime_complete.timestamp() for t in done]
    gaps = [b - a for a, b in zip(ends, starts[1:])]
    in_trial = [(e - s) - t.user_attrs["minutes"] * 60 for s, e, t in zip(starts, ends, done)]
    return {"trials": len(done), "search_s": round(ended - began, 2), "training_s": round(training, 2),
            "overhead_per_trial_s": round((ended - began - training) / len(done), 2),
            "start_s": round(starts[0] - began, 2), "gap_between_trials_s": round(sum(gaps) / max(len(gaps), 1), 3),
            "inside_trial_beyond_train_s": round(sum(in_trial) / len(in_trial), 3),
            "end_s": round(ended - ends[-1], 2),
            "train_call_s_per_trial": round(training / len(done), 2)}


def resume(folder: Path, root: Path, space: Path, trials: int, epochs: int) -> dict:
    out = folder / "resume"
    run = command(root, out, space, trials, epochs * 3)
    process = subprocess.Popen(run, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:  # until one trial finished and the next one trains
        time.sleep(0.2)
        try:
            states = [t.state.name for t in study_trials(out)]
        except Exception:  # noqa: BLE001 - the database or its study is not there yet
            continue
        running = len(states) - 1
        if "COMPLETE" in states and states[-1] == "RUNNING" and (
                out / "trials" / f"trial_{running:04d}" / "metrics.jsonl").is_file():
            break
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    known = len(study_trials(out))
    began = time.time()
    again = subprocess.Popen(run, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    picked_up = None
    while picked_up is None:
        time.sleep(0.05)
        fresh = [t for t in study_trials(out) if t.number >= known and t.datetime_start is not None]
        picked_up = fresh[0].datetime_start.timestamp() - began if fresh else None
    again.wait()
    began_plain = time.time()  # for scale: the same command's start on a finished study (nothing to run)
    subprocess.run(run, cwd=ROOT, check=True, capture_output=True)
    return {"resume_pickup_s": round(picked_up, 2), "finished_study_command_s": round(time.time() - began_plain, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from helpers.data.demo import make_demo_data

    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        root = folder / "demo"
        make_demo_data(root, identities=12, images_per_identity=6, verification_identities=20, seed=0, size=32,
                       difficulty=0.5)
        space = folder / "space.yaml"
        space.write_text(SPACE)
        report = {**overhead(folder, root, space, args.trials, args.epochs),
                  **resume(folder, root, space, args.trials, args.epochs)}
    print(json.dumps(report, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in report.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
