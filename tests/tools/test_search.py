"""``search``: Optuna trials that are real train runs, pruned, resumable after kill -9, in parallel workers, with a
space checked before any trial runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest
import sqlalchemy.exc
from conftest import ROOT, TINY, call_cli

from helpers.core.config import load_config
from helpers.core.errors import Stopped, UserError
from helpers.tools.search_report import compare_runs
from helpers.tools.search_space import read_space

# Pinned fast path: a loaded machine must not pick another precision between trials.
TRIAL = [*TINY, "train.amp=none", "train.channels_last=false", "optim.name=adam", "train.eval_bootstrap=200"]


def search_args(root, out, space, *extra):
    sets = [f"data.root={root}", f"run.out_dir={out.parent / 'runs'}", *TRIAL]
    return ["search", "--space", space, "--out", out, *[a for s in sets for a in ("--set", s)], *extra]


def write_space(path, text):
    path.write_text(text)
    return path


def trials_of(out):
    if not (out / "study.db").is_file():
        raise KeyError(out)
    study = optuna.load_study(study_name=out.name, storage=f"sqlite:///{out / 'study.db'}")
    return study.get_trials()


def test_a_search_prunes_writes_its_results_and_its_best_config_trains(demo_root, tmp_path, capsys):
    space = write_space(tmp_path / "space.yaml", "optim.lr: {choices: [0.00001, 0.005]}\n"
                                                 "loss.m: {low: 0.2, high: 0.5}\n"
                                                 "augment.crop_scale: {choices: [[0.9, 1.0], [0.8, 1.0]]}\n")
    out = tmp_path / "search"
    code, stdout, err = call_cli(capsys, *search_args(demo_root, out, space, "--trials", "4", "--trial-epochs", "3",
                                                      "--pruner", "halving"))
    assert code == 0, err
    assert (out / "study.db").is_file()
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 4 and "pruned" in set(table["state"]) and "complete" in set(table["state"])
    done = table[table["state"] == "complete"]
    assert (done["low"] <= done["value"]).all() and (done["value"] <= done["high"]).all()
    assert {"optim.lr", "loss.m", "epochs", "minutes", "images_per_s"} <= set(table.columns)
    assert stdout.count("search: trial ") == 4  # a progress line per trial as it ends
    for run in table["run"]:  # every trial a real run with valid checkpoints, pruned ones too
        assert {"best.pt", "last.pt", "metrics.jsonl"} <= {p.name for p in (out / run).iterdir()}
    assert {"history.png", "slices.png"} <= {p.name for p in (out / "plots").iterdir()}
    assert "| trial | state |" in (out / "results.md").read_text()
    # best.yaml trains as it stands, and holds the winner's values
    best = table.loc[table["value"].where(table["state"] == "complete").idxmin()]
    chosen = load_config(out / "best.yaml")
    assert chosen.loss.m == pytest.approx(best["loss.m"]) and list(chosen.augment.crop_scale) == json.loads(
        best["augment.crop_scale"])
    code, stdout, err = call_cli(capsys, "train", "--config", out / "best.yaml")
    assert code == 0, err
    assert (tmp_path / "runs" / "search-best" / "best.pt").is_file()


def test_kill_9_mid_search_then_the_same_command_keeps_the_finished_trials_and_finishes(demo_root, tmp_path):
    space = write_space(tmp_path / "space.yaml", "optim.lr: {low: 0.001, high: 0.01, log: true}\n")
    out = tmp_path / "search"
    command = [sys.executable, "-m", "helpers", *map(str, search_args(demo_root, out, space, "--trials", "3",
                                                                        "--trial-epochs", "6"))]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300  # generous: a loaded machine starts torch slowly
        while time.time() < deadline:  # until one trial finished and the next one is training
            time.sleep(0.2)
            try:
                trials = trials_of(out)
            except (KeyError, sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError):
                continue  # the database is there before its study, or its tables are being made
            states = [t.state.name for t in trials]
            if "COMPLETE" in states and states[-1] == "RUNNING" and any((out / "trials").glob(
                    f"trial_{len(trials) - 1:04d}/metrics.jsonl")):
                break
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    before = {t.number: t.value for t in trials_of(out) if t.state.name == "COMPLETE"}
    interrupted = max(t.number for t in trials_of(out))
    assert before and interrupted not in before
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"interrupted trial(s) {interrupted} marked failed and run again" in again.stdout
    trials = trials_of(out)
    assert {t.number: t.value for t in trials if t.number in before} == before  # kept as they were
    rerun = [t for t in trials if t.number > interrupted]
    assert rerun[0].params == trials[interrupted].params  # its values run again
    table = pd.read_csv(out / "results.csv").set_index("trial")
    assert table.loc[interrupted, "state"] == "interrupted" and "killed" in table.loc[interrupted, "reason"]
    assert (table["state"] != "interrupted").sum() == 3


def test_two_workers_run_two_trials_at_once_on_one_study(demo_root, tmp_path, capsys):
    space = write_space(tmp_path / "space.yaml", "optim.lr: {low: 0.001, high: 0.01, log: true}\n")
    out = tmp_path / "search"
    code, stdout, err = call_cli(capsys, *search_args(demo_root, out, space, "--trials", "2", "--trial-epochs", "4",
                                                      "--workers", "2"))
    assert code == 0, err
    first, second = sorted(trials_of(out), key=lambda t: t.datetime_start)[:2]
    assert second.datetime_start < first.datetime_complete  # both trained at the same time
    assert len(pd.read_csv(out / "results.csv")) == 2


def test_a_failing_trial_is_recorded_with_its_reason_and_the_search_goes_on(demo_root, tmp_path, capsys):
    space = write_space(tmp_path / "space.yaml", "optim.lr: {choices: [1.0e+30]}\n")
    out = tmp_path / "search"
    code, stdout, err = call_cli(capsys, *search_args(demo_root, out, space, "--trials", "2", "--trial-epochs", "1",
                                                      "--set", "train.max_nonfinite_steps=1"))
    assert code == 0, err
    table = pd.read_csv(out / "results.csv")
    assert list(table["state"]) == ["fail", "fail"]
    assert table["reason"].str.contains("non-finite").all()
    assert not (out / "best.yaml").exists()


def test_a_sitting_out_of_hours_stops_after_an_evaluation_with_a_complete_report(demo_root, tmp_path, capsys):
    space = write_space(tmp_path / "space.yaml", "optim.lr: {low: 0.001, high: 0.01}\n")
    out = tmp_path / "search"
    code, stdout, err = call_cli(capsys, *search_args(demo_root, out, space, "--trials", "5", "--trial-epochs", "50",
                                                      "--hours", "0.0003"))
    assert code == 0, err
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 1 and table["reason"][0].startswith("the search's --hours ran out")
    assert (out / "trials" / "trial_0000" / "last.pt").is_file() and (out / "results.md").is_file()


@pytest.mark.parametrize("text, words", [
    ("optim.lr: {low: 0.001, high: 0.01}\noptim.lrr: {low: 1, high: 2}\n", "space.yaml:2: unknown config key "
                                                                           "'optim.lrr'; did you mean 'optim.lr'?"),
    ("optim.lr: {low: 0.01, high: 0.01}\n", "space.yaml:1: 'optim.lr' has an empty range"),
    ("model.depth: {choices: [18, 20]}\n", "space.yaml:1: the config refuses model.depth = 20"),
    ("train.epochs: {low: 2, high: 7}\n", "space.yaml:1: the config refuses train.epochs = 2.0"),
    ("optim.lr: {low: 0, high: 0.01, log: true}\n", "space.yaml:1: 'optim.lr' is log-scaled"),
    ("run.name: {choices: [a, b]}\n", "space.yaml:1: 'run.name' is set by the search"),
    ("loss.m: {low: 0.2, high: 0.5}\ntrain.epochs: {low: 2, high: 6, type: int}\n",
     "space.yaml:2 draws train.epochs; give --trial-minutes instead"),
])
def test_a_bad_space_is_one_sentence_naming_file_and_line_and_no_trial_runs(demo_root, tmp_path, capsys, text,
                                                                              words):
    space = write_space(tmp_path / "space.yaml", text)
    out = tmp_path / "search"
    code, stdout, err = call_cli(capsys, *search_args(demo_root, out, space, "--trial-epochs", "1"))
    assert code == 1 and words in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_a_space_no_combination_of_which_the_config_takes_is_refused():
    text = "train.ema: {choices: [0.0, 0.99]}\ntrain.select: {choices: [ema_best]}\n"
    with pytest.raises(UserError, match="refuses train.select = 'ema_best'"):
        read_space_text(text)


def read_space_text(text):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        return read_space(write_space(Path(folder) / "space.yaml", text), None)


def test_the_shipped_spaces_fit_their_recipes_and_cover_what_a_search_tunes():
    for space, config in (("cpu", "fast"), ("gpu", "gpu")):
        keys = {d.key for d in read_space(space, config)}
        assert {"optim.lr", "optim.weight_decay", "loss.m", "model.width", "model.depth", "model.dropout",
                "augment.color_jitter", "train.batch_size", "train.epochs"} <= keys


def test_confirm_retrains_the_winner_and_the_baseline_per_seed_and_gives_a_verdict(demo_root, tmp_path, capsys):
    space = write_space(tmp_path / "space.yaml", "optim.lr: {low: 0.001, high: 0.01, log: true}\n")
    out = tmp_path / "search"
    code, stdout, err = call_cli(capsys, *search_args(demo_root, out, space, "--trials", "1", "--trial-epochs", "2",
                                                      "--confirm", "1"))
    assert code == 0, err
    report = json.loads((out / "confirm" / "confirm.json").read_text())
    assert report["verdict"] in ("better", "worse", "within noise") and [s["seed"] for s in report["seeds"]] == [1]
    assert {"winner_seed1", "baseline_seed1"} <= {p.name for p in (out / "confirm").iterdir()}
    trial_seed = load_config(str(out / "trials" / "trial_0000" / "config.yaml")).train.seed
    assert load_config(str(out / "confirm" / "winner_seed1" / "config.yaml")).train.seed == trial_seed + 1 == 1
    assert "Verdict: the winner is" in stdout and "Verdict: the winner is" in (out / "results.md").read_text()
    trained = {run: (out / "confirm" / run / "metrics.jsonl").read_text() for run in ("winner_seed1", "baseline_seed1")}
    code, _, err = call_cli(capsys, *search_args(demo_root, out, space, "--trials", "1", "--trial-epochs", "2",
                                                 "--confirm", "1"))  # the same command again: nothing trains again
    assert code == 0, err
    assert {run: (out / "confirm" / run / "metrics.jsonl").read_text() for run in trained} == trained
    assert json.loads((out / "confirm" / "confirm.json").read_text()) == report


def test_confirmation_of_a_run_against_itself_is_within_noise(trained_run):
    report = compare_runs({0: (trained_run, trained_run)}, "itself", rounds=100)
    assert report["verdict"] == "within noise" and report["seeds"][0]["difference"] == 0


def test_each_trial_is_a_wandb_run_grouped_under_the_search_with_its_values_in_its_config(tmp_path, monkeypatch):
    import wandb

    from helpers.tools.search_trial import TrialPlan, trial_overrides
    from helpers.training.tracking import Tracker

    plan = TrialPlan(None, ["tracking.wandb.mode=offline"], [], "val_eer", tmp_path / "search-a", "search-a")
    cfg = load_config(None, trial_overrides(plan, {"optim.lr": 0.003, "augment.crop_scale": [0.7, 1.0]},
                                            "trial_0002"))
    seen = {}

    class Run:
        id = "abc"

    monkeypatch.setattr(wandb, "init", lambda **kwargs: seen.update(kwargs) or Run())
    Tracker(tmp_path, cfg, name="trial_0002")
    assert seen["group"] == "search-a" and seen["mode"] == "offline" and seen["name"] == "trial_0002"
    assert seen["config"]["optim"]["lr"] == 0.003 and seen["config"]["augment"]["crop_scale"] == [0.7, 1.0]


def test_a_study_whose_tables_another_process_was_making_opens_on_the_next_try(tmp_path, monkeypatch):
    """Two machines starting on one fresh --storage race to make its tables; the loser tries again."""
    from helpers.tools import search

    made = search._storage
    calls = []

    def racing(settings):
        calls.append(1)
        if len(calls) == 1:
            raise sqlalchemy.exc.IntegrityError("INSERT INTO alembic_version", {}, Exception("UNIQUE constraint"))
        return made(settings)

    monkeypatch.setattr(search, "_storage", racing)
    monkeypatch.setattr(search.time, "sleep", lambda seconds: None)
    settings = search.SearchSettings(config=None, space="cpu", out=str(tmp_path / "s"), metric="val_eer")
    (tmp_path / "s").mkdir()
    study, _ = search.open_study(settings)
    assert len(calls) == 2 and study.user_attrs["metric"] == "val_eer"


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # the test plays the machine that beat once
def test_a_shared_study_runs_a_lost_machines_trial_again_and_does_not_count_it(demo_root, tmp_path, monkeypatch):
    """On a shared --storage, a trial whose machine stopped beating is failed by Optuna, which then calls the
    search: its values are queued again (the base mark with them), it counts for nothing, and the table says so."""
    from helpers.tools import search
    from helpers.tools.search_report import trials_table

    monkeypatch.setattr(search, "LOST_AFTER_S", 1)
    plan = _plan(tmp_path, demo_root)
    settings = search.SearchSettings(config=None, space="cpu", out=str(tmp_path / "s"), metric="val_eer",
                                     storage=f"sqlite:///{tmp_path / 'shared.db'}")
    study, storage = search.open_study(settings)
    search.queue_base(study, plan)
    lost = study.ask()  # the base recipe, on a machine that then went silent
    lost.suggest_float("loss.m", 0.2, 0.5)
    storage.record_heartbeat(lost._trial_id)
    time.sleep(2.5)  # SQLite's clock counts whole seconds: over 1 s silent, whatever the fraction
    optuna.storages.fail_stale_trials(study)  # what each machine's next trial does first
    first, again = study.get_trials()
    assert first.state.name == "FAIL" and again.state.name == "WAITING"
    assert again.system_attrs["fixed_params"] == first.params and again.user_attrs["base"]
    assert search.counted(study) == 0
    assert search.queue_base(study, plan) == "search: the base recipe's trial is in the study already"
    row = trials_table(study).iloc[0]
    assert row["state"] == "interrupted" and "its machine stopped answering" in row["reason"]
    assert "0 finished trials kept (1 interrupted, not counted), 0 running" in search.resume_sentence(
        study, storage, shared=True)


def test_the_base_recipe_runs_as_the_first_trial_once_per_study(demo_root, tmp_path, capsys):
    space = write_space(tmp_path / "space.yaml", "loss.m: {low: 0.2, high: 0.5}\n"
                                                 "optim.lr: {choices: [0.00001, 0.005]}\n")
    out = tmp_path / "search"
    base = load_config(None, [f"data.root={demo_root}", *TRIAL])
    code, stdout, err = call_cli(capsys, *search_args(demo_root, out, space, "--trials", "1", "--trial-epochs", "1"))
    assert code == 0, err
    # the base's lr is not among the space's choices: that key alone is drawn, and the line says so
    assert "the base recipe (starter) runs as the next trial; drawn, since the space cannot hold its value: optim.lr" \
        in stdout
    first, = trials_of(out)
    assert first.user_attrs["base"] and first.params["loss.m"] == base.loss.m
    assert "trial 0 (the base recipe) complete" in stdout
    code, stdout, err = call_cli(capsys, *search_args(demo_root, out, space, "--trials", "2", "--trial-epochs", "1"))
    assert code == 0, err
    assert "the base recipe's trial is in the study already" in stdout
    assert [bool(t.user_attrs.get("base")) for t in trials_of(out)] == [True, False]
    assert list(pd.read_csv(out / "results.csv")["base"]) == [True, False]


def test_a_study_whose_last_trial_was_interrupted_runs_it_again(demo_root, tmp_path, capsys):
    out = tmp_path / "search"
    out.mkdir()
    study = optuna.create_study(study_name=out.name, storage=f"sqlite:///{out / 'study.db'}")
    study.ask({"optim.lr": optuna.distributions.FloatDistribution(0.001, 0.01, log=True)})  # left running: a kill -9
    space = write_space(tmp_path / "space.yaml", "optim.lr: {low: 0.001, high: 0.01, log: true}\n")
    code, stdout, err = call_cli(capsys, *search_args(demo_root, out, space, "--trials", "1", "--trial-epochs", "1",
                                                      "--no-base-trial"))
    assert code == 0, err
    assert [t.state.name for t in trials_of(out)] == ["FAIL", "COMPLETE"]  # its values queued again, and run


def test_values_killed_twice_are_failed_with_why_and_not_run_a_third_time(tmp_path):
    """Values that get the process killed (out of memory on a Colab VM) would otherwise run first in every sitting
    and kill it each time. A stop the user asked for (Ctrl-C, SIGTERM) is not a kill."""
    from helpers.tools import search
    from helpers.tools.search_report import trials_table
    from helpers.tools.search_trial import interrupt

    settings = search.SearchSettings(config=None, space="cpu", out=str(tmp_path), metric="val_eer")
    margin = {"loss.m": optuna.distributions.FloatDistribution(0.2, 0.5)}
    study, storage = search.open_study(settings)
    stopped = study.ask(margin)
    assert interrupt(study, stopped, "interrupted by the user; its values run again")
    study.tell(stopped, state=optuna.trial.TrialState.FAIL)
    study.ask(margin)  # the same values, then kill -9
    assert "interrupted trial(s) 1 marked failed and run again" in search.resume_sentence(study, storage, False)
    study.ask(margin)  # the same values again, killed again
    said = search.resume_sentence(study, storage, False)
    assert "0 finished trials kept (2 interrupted, not counted); trial(s) 2 failed: killed again on the same " \
           "values, not run again" in said
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["FAIL"] * 3 and len({t.params["loss.m"] for t in trials}) == 1
    assert search.counted(study) == 1  # the last counts: a failure of its own
    table = trials_table(study)
    assert list(table["state"]) == ["interrupted", "interrupted", "fail"]
    assert "killed 2 times while training these values" in table["reason"][2]

def test_the_importances_say_how_many_trials_they_come_from():
    """Importances over a handful of complete trials look as sure as over hundreds: the report says which it is."""
    from helpers.tools.search_report import importance_note

    study = optuna.create_study()
    space = {key: optuna.distributions.FloatDistribution(0.0, 1.0) for key in ("a", "b", "c")}
    for value in (0.1, 0.2):
        study.add_trial(optuna.trial.create_trial(params={k: value for k in space}, distributions=space, value=value))
    study.add_trial(optuna.trial.create_trial(params={k: 0.3 for k in space}, distributions=space,
                                              state=optuna.trial.TrialState.PRUNED))
    assert importance_note(study) == ("importances.png is weighed over the 2 complete trials alone (pruned and "
                                      "failed ones are left out); fewer than the space's 3 parameters: read it as "
                                      "noise")
    study.add_trial(optuna.trial.create_trial(params={k: 0.4 for k in space}, distributions=space, value=0.4))
    assert importance_note(study).endswith("(pruned and failed ones are left out)")

def _plan(tmp_path, demo_root):
    from helpers.tools.search_trial import TrialPlan

    space = write_space(tmp_path / "space.yaml", "loss.m: {low: 0.2, high: 0.5}\n")
    overrides = [f"data.root={demo_root}", *TRIAL, "train.epochs=1"]
    return TrialPlan(None, overrides, read_space(space, None, overrides), "val_eer", tmp_path / "s", group="s",
                     base=load_config(None, overrides).as_dict())


def test_a_base_trial_that_failed_for_its_own_reason_is_not_queued_again(demo_root, tmp_path):
    from helpers.tools.search import queue_base

    plan = _plan(tmp_path, demo_root)
    study = optuna.create_study()
    assert queue_base(study, plan).startswith("search: the base recipe (starter) runs as the next trial")
    failed = study.ask()  # the queued base trial, say diverged: failed, and not interrupted
    base_m = load_config(None, plan.overrides).loss.m
    assert failed.user_attrs["base"] and failed.suggest_float("loss.m", 0.2, 0.5) == base_m
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    assert queue_base(study, plan) == "search: the base recipe's trial is in the study already"
    assert [t.state.name for t in study.trials] == ["FAIL"]


@pytest.mark.parametrize("stop", [KeyboardInterrupt(), Stopped("stopped by SIGTERM: last.pt holds epoch 1", 143)])
def test_a_stopped_search_runs_its_trial_again_the_base_as_the_base(demo_root, tmp_path, monkeypatch, stop):
    """Ctrl-C, or a SIGTERM from Slurm or a VM going away, stops the search; the trial it stopped is not a failure
    of its values, which run again on resuming (and the base recipe's, once, with its mark)."""
    from helpers.tools.search import counted, queue_base
    from helpers.tools.search_trial import interrupted, run_trial
    from helpers.training import engine

    plan = _plan(tmp_path, demo_root)
    study = optuna.create_study()
    queue_base(study, plan)

    def stopped(*args, **kwargs):
        raise stop

    monkeypatch.setattr(engine, "train", stopped)
    with pytest.raises(type(stop)) as raised:
        study.optimize(lambda trial: run_trial(trial, plan), n_trials=1)
    if isinstance(stop, Stopped):
        assert str(raised.value).startswith("search stopped by SIGTERM during trial 0; the same command resumes")
        assert raised.value.status == 143
    first, again = study.trials
    assert interrupted(study) == {0: f"interrupted by {'SIGTERM' if isinstance(stop, Stopped) else 'the user'}; "
                                     "its values run again"}
    assert counted(study) == 0  # not one of --trials
    assert again.state.name == "WAITING" and again.user_attrs.get("base")
    assert again.system_attrs["fixed_params"] == first.params  # the same values
    assert queue_base(study, plan) == "search: the base recipe's trial is in the study already"


def test_a_resumed_study_draws_anew_and_the_same_way_each_time(tmp_path):
    from helpers.tools import search

    lr = {"optim.lr": optuna.distributions.FloatDistribution(0.0001, 0.1, log=True)}

    def sittings():
        out = tmp_path / f"s{len(list(tmp_path.iterdir()))}"
        out.mkdir()
        settings = search.SearchSettings(config=None, space="cpu", out=str(out), metric="val_eer")
        drawn = []
        for _ in range(2):  # two sittings of one trial each: the study opened afresh, as a resumed search does
            study, _ = search.open_study(settings)
            trial = study.ask(lr)
            drawn.append(trial.params["optim.lr"])
            study.tell(trial, 0.1)
        return drawn

    first = sittings()
    assert first[0] != first[1]  # seeded by --seed alone, the second sitting repeated the first one's draw
    assert sittings() == first  # and reproducible


@pytest.mark.parametrize("text, problem", [("{not json", "Invalid JSON"),
                                           ('{"config": null, "space": "cpu", "out": "s", "trials": "many"}',
                                            "trials: Input should be a valid integer")])
def test_a_damaged_search_json_is_one_sentence_and_no_trial_runs(demo_root, tmp_path, capsys, text, problem):
    out = tmp_path / "search"
    out.mkdir()
    (out / "search.json").write_text(text)
    code, _, err = call_cli(capsys, *search_args(demo_root, out, "cpu", "--trials", "1", "--trial-minutes", "1"))
    assert code != 0 and problem in err and "Traceback" not in err
    assert err.strip().count("\n") == 0 and f"{out / 'search.json'} is not a search's settings file" in err
    assert not (out / "study.db").exists() and (out / "search.json").read_text() == text  # kept as it was


@pytest.mark.parametrize("prune_from, first_judged", [(1, 1), (3, 3)])
def test_the_pruner_judges_no_trial_before_prune_from(tmp_path, prune_from, first_judged):
    """The first evaluations of a trial may not yet tell recipes apart: --prune-from is where judging starts."""
    from helpers.tools import search

    (tmp_path / "s").mkdir()
    settings = search.SearchSettings(config=None, space="cpu", out=str(tmp_path / "s"), metric="val_eer",
                                     pruner="halving", prune_from=prune_from)
    study, _ = search.open_study(settings)
    good = study.ask()
    for step in range(1, 10):
        good.report(0.1, step)
        assert not good.should_prune()  # the pruner notes each rung's values as it is asked
    study.tell(good, 0.1)
    worse = study.ask()
    judged = []
    for step in range(1, 10):
        worse.report(0.3, step)
        if worse.should_prune():
            judged.append(step)
            break
    assert judged == [first_judged]


@pytest.mark.parametrize("change, said", [(["--prune-from", "3"], "another --prune-from (1, now 3)"),
                                          (["--pruner", "halving"], "another --pruner ('hyperband', now 'halving')"),
                                          (["--metric", "val_auc"], "another --metric ('val_eer', now 'val_auc')")])
def test_resuming_with_another_pruner_or_metric_is_refused_and_nothing_runs(demo_root, tmp_path, capsys, change,
                                                                             said):
    """A study's trials are judged and ranked one way: a sitting that would judge them another way is refused."""
    out = tmp_path / "search"
    first = search_args(demo_root, out, "cpu", "--metric", "val_eer", "--trials", "0", "--trial-minutes", "1")
    code, _, err = call_cli(capsys, *first)
    assert code == 0, err
    before, trials = (out / "search.json").read_text(), len(trials_of(out))
    code, _, err = call_cli(capsys, *first, *change)
    assert code != 0 and f"{out} holds a search with {said}" in err and "Traceback" not in err
    assert (out / "search.json").read_text() == before and len(trials_of(out)) == trials


_POP = """
import sys, time
from helpers.tools import search
settings = search.SearchSettings(config=None, space="cpu", out=sys.argv[1], metric="val_eer")
study, _ = search.open_study(settings)
while time.time() < float(sys.argv[2]):
    pass
taken = []
while (trial := study._pop_waiting_trial_id()) is not None:  # what study.optimize does first in each worker
    taken.append(trial)
print(*taken)
"""


def test_two_workers_never_take_the_same_queued_trial(tmp_path):
    """Queued trials (the base recipe, an interrupted one's values) are each run by one worker only."""
    from helpers.tools import search

    settings = search.SearchSettings(config=None, space="cpu", out=str(tmp_path), metric="val_eer")
    study, _ = search.open_study(settings)
    for value in range(40):
        study.enqueue_trial({"loss.m": 0.2 + value / 100}, skip_if_exists=False)
    start = str(time.time() + 5)  # both take from the queue at once, past their imports
    workers = [subprocess.Popen([sys.executable, "-c", _POP, str(tmp_path), start], cwd=ROOT, text=True,
                                stdout=subprocess.PIPE) for _ in range(2)]
    taken = [int(n) for worker in workers for n in worker.communicate(timeout=120)[0].split()]
    assert all(worker.returncode == 0 for worker in workers)
    assert sorted(taken) == sorted(t._trial_id for t in study.get_trials())  # each once, none twice
