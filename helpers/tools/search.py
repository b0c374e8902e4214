"""``search``: hyperparameter search on Optuna, on the term's leaderboard metric, within a budget, resumable.

A seeded TPE sampler draws each trial's values from the space (search_space.py);
a pruner (Hyperband, or successive halving) hears every evaluation of every
trial and stops the unpromising ones early. Every trial is a real ``train`` run
under ``FOLDER/trials/`` (search_trial.py). The study lives in a SQLite
database in the search folder (``study.db``), or in the database ``--storage``
names, shared by several machines.

Running the same command on the same folder resumes: finished trials are kept,
a trial interrupted by ``kill -9`` or a lost VM is marked failed and its values
run again (once: values killed twice are not). ``--workers N`` runs N trials at
once (one process each, one GPU each when several are visible). The outputs
(search_report.py) are rewritten as each sitting ends.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, field
from pathlib import Path
from typing import Literal

from pydantic import TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from helpers.core.config import load_config
from helpers.core.errors import Stopped, UserError
from helpers.core.io import atomic_write_text
from helpers.tools.search_space import read_space, space_file
from helpers.tools.search_trial import METRICS, TrialFailed, TrialPlan, interrupt, interrupted, run_trial

STUDY_FILE = "study.db"
SETTINGS_FILE = "search.json"
LOCK_FILE = "search.lock"
# What a resumed search must share with the one it continues; the budgets may change between sittings. The
# pruner keeps each trial's rung values by the rung's number, so another pruner or first rung would judge new
# trials against values measured at other epochs.
_SAME = {"config": "--config", "space": "--space", "overrides": "--set", "metric": "--metric", "pruner": "--pruner",
         "prune_from": "--prune-from"}  # setting: its flag


@dataclass
class SearchSettings:
    """A search as its command gave it (checked when made: it is also read back from the folder's search.json)."""

    config: str | None
    space: str
    out: str
    overrides: list[str] = field(default_factory=list)
    metric: str | None = None  # None: the term's leaderboard metric
    trials: int = 20
    hours: float = 0.0  # this sitting's time; 0: no limit
    trial_minutes: float = 0.0
    trial_epochs: int | None = None
    pruner: Literal["hyperband", "halving"] = "hyperband"
    seed: int = 0
    workers: int = 1
    storage: str | None = None
    base_trial: bool = True  # the base config's own values run as a trial of the study, once
    prune_from: int = 1  # the pruner's first rung, in epochs: it judges no trial before this

    @property
    def folder(self) -> Path:
        return Path(self.out)

    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{(self.folder / STUDY_FILE).resolve()}"

    def budget_overrides(self) -> list[str]:
        """The per-trial budget, before the space's values (--trial-epochs only with a space without
        train.epochs: prepare refuses the two together)."""
        return ([f"train.max_minutes={self.trial_minutes}"] if self.trial_minutes else []) + (
            [f"train.epochs={self.trial_epochs}"] if self.trial_epochs else [])


def prepare(settings: SearchSettings) -> tuple[SearchSettings, TrialPlan]:
    """Check everything a trial needs before any runs: the config, the space, the metric, the folder's earlier
    search. Returns the settings (metric resolved) and what every trial shares."""
    if min(settings.trials, settings.hours, settings.trial_minutes) < 0 or min(settings.workers,
                                                                                 settings.prune_from) < 1:
        raise UserError("--trials, --hours and --trial-minutes must be 0 or more, --workers and --prune-from at "
                        "least 1")
    base = load_config(settings.config, settings.overrides + settings.budget_overrides())
    metric = settings.metric or _default_metric(base)
    if metric not in METRICS:
        raise UserError(f"--metric must be one of {', '.join(METRICS)}, not '{metric}'")
    settings.metric = metric
    settings.space = str(space_file(settings.space).resolve())
    dimensions = read_space(settings.space, settings.config, settings.overrides + settings.budget_overrides())
    drawn = [d for d in dimensions if d.key == "train.epochs"]
    if settings.trial_epochs and drawn:  # the trial's drawn value would replace the budget the user gave
        raise UserError(f"--trial-epochs {settings.trial_epochs} cannot bound these trials: "
                        f"{settings.space}:{drawn[0].line} draws train.epochs; give --trial-minutes instead, or a "
                        "space without it")
    _same_search(settings)
    plan = TrialPlan(settings.config, settings.overrides + settings.budget_overrides(), dimensions, metric,
                     settings.folder, group=settings.folder.resolve().name, base=base.as_dict())
    return settings, plan


def _default_metric(cfg) -> str:
    """The term's leaderboard metric where a run can measure it on this data; val EER otherwise (said so)."""
    from helpers.core.terms import get_term
    from helpers.training.run import measured_board

    board = measured_board(cfg)
    if board != get_term(cfg.course.term).leaderboard:
        print(f"search: {cfg.data.root} has no dev images of the training identities for the combined score's "
              "top-1: optimising val EER", flush=True)
    return board.record_key


def _same_search(settings: SearchSettings) -> None:
    """Refuse to continue another search's study in this folder (another config, space, --set or metric)."""
    path = settings.folder / SETTINGS_FILE
    if not path.is_file():
        return
    before = _read_settings(path)
    for key, flag in _SAME.items():
        if getattr(before, key) != getattr(settings, key):
            raise UserError(f"{settings.folder} holds a search with another {flag} ({getattr(before, key)!r}, now "
                            f"{getattr(settings, key)!r}); run it with the same one to resume, or use another --out")


def _read_settings(path: Path) -> SearchSettings:
    """The settings an earlier sitting wrote, or one sentence saying why they cannot be read."""
    problem = "it is over 1 MB" if path.stat().st_size > 1_000_000 else None
    if problem is None:
        try:
            return TypeAdapter(SearchSettings).validate_json(path.read_bytes())
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            problem = f"{where + ': ' if where else ''}{first['msg']}"
    raise UserError(f"{path} is not a search's settings file ({problem}); delete it to go on with this folder's "
                    "study as the command now gives it, or use another --out")


def open_study(settings: SearchSettings, worker: int = 0):
    """The study, created on first use, with the chosen pruner; TPE seeded anew for each sitting and worker."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    first = settings.prune_from
    pruner = (optuna.pruners.HyperbandPruner(min_resource=first, reduction_factor=3) if settings.pruner == "hyperband"
              else optuna.pruners.SuccessiveHalvingPruner(min_resource=first, reduction_factor=3))
    for attempt in range(3):
        try:
            storage = _storage(settings)
            study = optuna.create_study(storage=storage, pruner=pruner,
                                        direction=METRICS[settings.metric],
                                        study_name=settings.folder.resolve().name, load_if_exists=True)
            break
        except Exception as error:  # noqa: BLE001 - a database URL that does not open is the user's to fix
            if attempt < 2 and _created_beside(error):
                time.sleep(1 + attempt)
                continue
            raise UserError(f"cannot open the study at {settings.storage or settings.folder / STUDY_FILE}: "
                            f"{str(error).splitlines()[0]}") from None
    study.sampler = optuna.samplers.TPESampler(seed=_sitting_seed(settings.seed, worker, study), n_startup_trials=5)
    study.set_user_attr("metric", settings.metric)
    return study, storage


def _sitting_seed(seed: int, worker: int, study) -> int:
    """TPE's seed for one worker of one sitting: --seed, the worker's number and how many trials the study holds
    already. A resumed study then draws anew (seeded by --seed alone, each sitting would repeat the first one's
    random draws), and the same study resumed the same way draws the same values."""
    import numpy as np

    return int(np.random.SeedSequence([seed, worker, len(study.get_trials(deepcopy=False))]).generate_state(1)[0])


LOST_AFTER_S = 180  # a shared study's trial whose machine has not beaten for this long is lost


def _lost_trial(study, trial) -> None:
    """A shared study's trial whose machine went silent (Optuna has failed it already): its values run again."""
    interrupt(study, trial, f"interrupted: its machine stopped answering for {LOST_AFTER_S} s; its values run again",
              killed=True)


def _storage(settings: SearchSettings):
    """Optuna's database storage: this folder's own SQLite file, or the shared database --storage names."""
    import optuna

    if settings.storage is None:  # this folder's own database: resume_sentence finds the interrupted trials
        storage = optuna.storages.RDBStorage(settings.storage_url(), engine_kwargs={"connect_args": {"timeout": 60}})
    else:  # shared: a trial beats three times within LOST_AFTER_S; one silent that long is failed and run again
        storage = optuna.storages.RDBStorage(settings.storage_url(), heartbeat_interval=max(1, LOST_AFTER_S // 3),
                                             grace_period=LOST_AFTER_S, heartbeat_stale_trial_callback=_lost_trial)
    if storage.engine.dialect.name == "sqlite":
        _one_writer(storage)
    return storage


def _one_writer(storage) -> None:
    """Make each of SQLite's transactions take the write lock when it begins. Python's sqlite3 begins one only at
    the first write, so two workers could both read a queued trial as waiting and both mark it running (seen: the
    base recipe trained twice at once in one folder, one run failing on the other's lock)."""
    from sqlalchemy import event

    @event.listens_for(storage.engine, "connect")
    def _driver_begins_nothing(connection, record):
        connection.isolation_level = None

    @event.listens_for(storage.engine, "begin")
    def _begin_with_the_lock(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    storage.engine.dispose()  # connections opened before the listeners go


def _created_beside(error: Exception) -> bool:
    """Whether opening failed because another process was creating the same new database's tables at that
    moment (two machines starting on one fresh --storage): its second try finds them made."""
    from sqlalchemy.exc import IntegrityError, OperationalError

    return isinstance(error, IntegrityError) or (isinstance(error, OperationalError) and "locked" in str(error))


def counted(study) -> int:
    """Trials that count towards --trials: finished, pruned, failed for their own reason, or running now; not
    those queued to run (an interrupted trial's values again, the base recipe), nor the interrupted ones."""
    from optuna.trial import TrialState

    lost = interrupted(study)
    return sum(1 for t in study.get_trials(deepcopy=False) if t.number not in lost and t.state != TrialState.WAITING)


def work(settings: SearchSettings, plan: TrialPlan, worker: int = 0) -> None:
    """Run trials until --trials are in the study or the sitting's time is out; a line per trial as it ends."""
    from helpers.tools.search_report import progress_line

    study, _ = open_study(settings, worker)
    mine: list[int] = []  # this process's trials

    def objective(trial):
        mine.append(trial.number)
        return run_trial(trial, plan)

    while counted(study) < settings.trials:
        left = plan.deadline - time.time()
        if left <= 0 or (settings.trial_minutes and left < settings.trial_minutes * 60):
            print(f"search: the sitting's {settings.hours:g} hours leave no time for another trial", flush=True)
            break
        study.optimize(objective, n_trials=1, catch=(TrialFailed,), gc_after_trial=True)
        print(progress_line(study, study.trials[mine[-1]]), flush=True)


def run_search(settings: SearchSettings, confirm: int = 0, baseline: str | None = None) -> dict:
    """The whole search: checks, resume, the trials (in this process or ``workers`` processes), the report."""
    from helpers.tools.search_report import confirm_winner, write_results

    settings, plan = prepare(settings)
    folder = settings.folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create the search folder {folder}: {error.strerror or error}") from None
    with _sole_search(folder):
        atomic_write_text(folder / SETTINGS_FILE, json.dumps(asdict(settings), indent=2) + "\n")
        study, storage = open_study(settings)
        print(resume_sentence(study, storage, shared=settings.storage is not None), flush=True)
        if settings.base_trial:
            print(queue_base(study, plan), flush=True)
        plan.deadline = time.time() + settings.hours * 3600 if settings.hours else math.inf
        try:
            if settings.workers == 1:
                work(settings, plan)
            else:
                _run_workers(settings, plan.deadline)
        except (KeyboardInterrupt, Stopped):
            write_results(study, settings)  # what the finished trials found, before the stop goes on
            raise
        return write_results(study, settings, confirm=confirm_winner(study, settings, confirm, baseline)
                             if confirm else None)


def queue_base(study, plan: TrialPlan) -> str:
    """Queue the base config's own values as the next trial, once per study: the search then measures what it is
    to beat on this machine, within the same budget, and TPE starts from a known recipe. Keys whose base value the
    space cannot hold are drawn, and said."""
    # An interrupted base trial was queued again with its mark (search_trial.interrupt); one that failed for its
    # own reason ran, and runs no more.
    lost = interrupted(study)
    if any(t.user_attrs.get("base") and t.number not in lost for t in study.get_trials(deepcopy=False)):
        return "search: the base recipe's trial is in the study already"
    params = {d.key: d.base_value(plan.base) for d in plan.dimensions}
    drawn = [key for key, value in params.items() if value is None]
    study.enqueue_trial({k: v for k, v in params.items() if v is not None}, user_attrs={"base": True},
                        skip_if_exists=False)
    return (f"search: the base recipe ({plan.config or 'starter'}) runs as the next trial"
            + (f"; drawn, since the space cannot hold its value: {', '.join(drawn)}" if drawn else ""))


class _sole_search:
    """An exclusive lock on the folder's search.lock for one search command (its workers excepted); the kernel
    lets go of it when the process dies, however it dies."""

    def __init__(self, folder: Path):
        self.path = folder / LOCK_FILE

    def __enter__(self):
        self.handle = open(self.path, "a+")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.handle.close()
            raise UserError(f"another search is running on {self.path.parent} (it holds {self.path}); wait for "
                            "it, or give this one another --out") from None
        return self

    def __exit__(self, *exc):
        self.handle.close()


def resume_sentence(study, storage, shared: bool) -> str:
    """Resume the study: on a folder's own database, a trial still marked running was interrupted (this
    command holds the folder's lock): it is marked failed and its values are queued to run again (unless they
    were killed before: search_trial.interrupt)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    if not trials:
        return f"search: a new study in {study.study_name}"
    running = [t for t in trials if t.state == TrialState.RUNNING]
    lost = interrupted(study)
    finished = sum(1 for t in trials if t.state.is_finished() and t.number not in lost)
    kept = f"{finished} finished trials kept" + (f" ({len(lost)} interrupted, not counted)" if lost else "")
    if shared:
        return f"search: resuming study {study.study_name}: {kept}, {len(running)} running (here or on other machines)"
    rerun, dropped = [], []
    for trial in running:
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        queued = interrupt(study, trial, "interrupted: the search stopped during it (killed, or its machine lost); its "
                                         "values run again", killed=True)
        (rerun if queued else dropped).append(str(trial.number))
    said = [f"interrupted trial(s) {', '.join(rerun)} marked failed and run again"] if rerun else []
    said += [f"trial(s) {', '.join(dropped)} failed: killed again on the same values, not run again"] if dropped else []
    return f"search: resuming {study.study_name}: {kept}" + "".join(f"; {part}" for part in said)


def _run_workers(settings: SearchSettings, deadline: float) -> None:
    """``workers`` processes of this command, each running trials on the shared study; one GPU each when there
    are several, the CPU cores shared out otherwise."""
    import torch

    gpus = torch.cuda.device_count()
    processes = []
    for index in range(settings.workers):
        env = dict(os.environ)
        if gpus > 1:
            env["CUDA_VISIBLE_DEVICES"] = str(index % gpus)
        elif not gpus:
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // settings.workers)))
        command = [sys.executable, "-m", "helpers.tools.search", json.dumps(asdict(settings)), str(index),
                   repr(deadline)]
        processes.append(subprocess.Popen(command, env=env, preexec_fn=_die_with_parent))
    codes = [process.wait() for process in processes]
    if any(codes):
        raise UserError(f"{sum(1 for c in codes if c)} of {settings.workers} search workers stopped with an error "
                        "(above); the study keeps every finished trial: run the same command to go on")


def _die_with_parent() -> None:
    """A worker is killed with the search that started it (Linux's PR_SET_PDEATHSIG), so that its trial is left
    interrupted, as the search's own would be, rather than training on unseen; elsewhere it does nothing."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def worker_main(settings_json: str, index: str, deadline: str) -> int:
    """One worker process of ``--workers N`` (started by :func:`_run_workers`, not by hand)."""
    settings = TypeAdapter(SearchSettings).validate_json(settings_json)
    settings, plan = prepare(settings)
    plan.deadline = float(deadline)
    try:
        work(settings, plan, worker=int(index))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(*sys.argv[1:]))
