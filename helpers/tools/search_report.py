"""What a search leaves in its folder: results.csv and results.md (every trial), plots, best.yaml, and with
``--confirm N`` the winner re-trained on N seeds against a baseline, compared by the paired bootstrap of the val
EER difference (better, worse or within noise)."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.core.config import dump_config, load_config
from helpers.core.errors import UserError
from helpers.core.io import atomic_write_text
from helpers.tools.report import markdown_table
from helpers.tools.search_trial import given_up, interrupted

PLOTS = "plots"
BEST = "best.yaml"
CONFIRM = "confirm"


def trials_table(study) -> pd.DataFrame:
    """One row per trial: its number, state ("interrupted" for one that counts for nothing), value and interval,
    parameters, epochs, minutes, images/s, reason, run folder, and whether it ran the base recipe."""
    rows, lost, dropped = [], interrupted(study), given_up(study)
    for trial in study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        state = "interrupted" if trial.number in lost else trial.state.name.lower()
        rows.append({"trial": trial.number, "state": state, "value": attrs.get("value"),
                     "low": attrs.get("value_low"), "high": attrs.get("value_high"), **trial.params,
                     "epochs": attrs.get("epochs"), "minutes": attrs.get("minutes"),
                     "images_per_s": attrs.get("images_per_s"),
                     "reason": lost.get(trial.number, dropped.get(trial.number, attrs.get("reason", ""))),
                     "run": attrs.get("run", ""), "base": bool(attrs.get("base"))})
    return pd.DataFrame(rows)


def _number(value, digits: int = 4) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _best(study):
    from optuna.trial import TrialState

    return study.best_trial if any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)) \
        else None


def progress_line(study, trial) -> str:
    """One line as a trial ends: its state, value with interval (or reason), epochs, minutes, images/s, and the
    best so far."""
    attrs, metric = trial.user_attrs, study.user_attrs.get("metric", "value")
    value = f"{_number(attrs.get('value'))} [{_number(attrs.get('value_low'))}, {_number(attrs.get('value_high'))}]"
    parts = [f"trial {trial.number}{' (the base recipe)' if attrs.get('base') else ''} {trial.state.name.lower()}",
             value]
    parts += [f"{attrs.get('epochs', 0):g} epochs", f"{attrs.get('minutes', 0):.1f} min",
              f"{attrs.get('images_per_s', 0):.0f} img/s"]
    if attrs.get("reason"):
        parts.append(attrs["reason"])
    best = _best(study)
    if best is not None:
        parts.append(f"best: trial {best.number} {metric} {best.value:.4f}")
    return "search: " + " | ".join(parts)


def write_results(study, settings, confirm: dict | None = None) -> dict:
    """results.csv, results.md, the plots and best.yaml; returns what was written, for the command's summary."""
    folder = settings.folder
    table = trials_table(study)
    atomic_write_text(folder / "results.csv", table.to_csv(index=False))
    plots, notes = _plots(study, folder / PLOTS)
    best_path = write_best(study, settings)
    states = table["state"].value_counts().to_dict() if len(table) else {}
    lines = [f"# Search {study.study_name}", "",
             f"Metric: val `{settings.metric}` ({study.direction.name.lower()}), each value with its 95 % bootstrap "
             f"interval over the val pairs. Config `{settings.config}`, space `{settings.space}`, "
             f"--set {' '.join(settings.overrides) or '-'}; per trial "
             f"{settings.trial_minutes or '-'} minutes, {settings.trial_epochs or '-'} epochs; pruner "
             f"{settings.pruner}, TPE seed {settings.seed}.", "",
             "Trials: " + (", ".join(f"{count} {state}" for state, count in states.items()) or "none"), ""]
    best = _best(study)
    if best is not None:
        lines += [f"Best: trial {best.number}, {settings.metric} {best.value:.4f} "
                  f"[{_number(best.user_attrs.get('value_low'))}, {_number(best.user_attrs.get('value_high'))}]: "
                  f"`python -m helpers train --config {best_path}`", ""]
    if confirm is not None:
        lines += confirm_lines(confirm) + [""]
    shown = table.copy()
    params = list(shown.columns[shown.columns.get_loc("high") + 1:shown.columns.get_loc("epochs")]) if len(shown) \
        else []
    for key in params:
        if shown[key].dtype.kind == "f":  # a learning rate of 1e-5 is not 0.0000
            shown[key] = shown[key].map(lambda v: "" if v != v else f"{v:.4g}")
    lines += [markdown_table(shown) if len(shown) else "", ""]
    lines += [f"![{name}]({PLOTS}/{name})" for name in plots] + [f"- {note}" for note in notes]
    atomic_write_text(folder / "results.md", "\n".join(lines) + "\n")
    return {"table": table, "best": best_path, "plots": plots, "confirm": confirm}


def _plots(study, folder: Path) -> tuple[list[str], list[str]]:
    """Optuna's matplotlib views: optimisation history, parameter importances, the value against each
    parameter. A view the trials cannot make yet (e.g. importances before two finished trials) is noted."""
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as views

    folder.mkdir(parents=True, exist_ok=True)
    written, notes = [], []
    for name, view in (("history.png", views.plot_optimization_history), ("importances.png",
                       views.plot_param_importances), ("slices.png", views.plot_slice)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                axes = view(study)
            figure = np.atleast_1d(axes).flat[0].figure
            figure.savefig(folder / name, dpi=100, bbox_inches="tight")
            plt.close(figure)
            written.append(name)
            notes += [importance_note(study)] if name == "importances.png" else []
        except Exception as error:  # noqa: BLE001 - a view that cannot be drawn must not cost the results
            notes.append(f"{name}: not drawn yet ({str(error).splitlines()[0]})")
    return written, notes


def importance_note(study) -> str:
    """How far to trust importances.png: Optuna weighs the parameters over the complete trials alone, and a few
    trials over many parameters cannot tell them apart."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    complete = sum(1 for t in trials if t.state == TrialState.COMPLETE)
    params = len({key for t in trials for key in t.params})
    return (f"importances.png is weighed over the {complete} complete trials alone (pruned and failed ones are left "
            "out)" + (f"; fewer than the space's {params} parameters: read it as noise" if complete < params else ""))


def best_config(study, settings):
    """The winning trial's config at the trials' budget, named to train on its own, or None without a
    finished trial."""
    from helpers.tools.search_space import config_value, override

    best = _best(study)
    if best is None:
        return None
    base = load_config(settings.config, settings.overrides + settings.budget_overrides())
    values = [override(key, config_value(value)) for key, value in best.params.items()]
    values += [f"run.name={study.study_name}-best", f"run.out_dir={base.run.out_dir}", "tracking.wandb.group=null"]
    return load_config(settings.config, settings.overrides + settings.budget_overrides() + values)


def write_best(study, settings) -> Path | None:
    """best.yaml: the winner's whole config, which ``train --config best.yaml`` takes unchanged."""
    cfg = best_config(study, settings)
    if cfg is None:
        return None
    best = _best(study)
    path = settings.folder / BEST
    atomic_write_text(path, f"# The best trial ({best.number}, {settings.metric} {best.value:.4f}) of the search "
                            f"{study.study_name}, at the trials' budget.\n# python -m helpers train --config {path}\n"
                      + dump_config(cfg))
    return path


def confirm_winner(study, settings, seeds: int, baseline: str | None) -> dict:
    """Train best.yaml and the baseline config on ``seeds`` seeds each (at the trials' budget, never pruned) and
    compare each pair by the paired bootstrap of the val EER difference. The seeds follow the trials' own: the
    winner was picked on its trial's seed, and that run again would carry the luck of the pick."""
    from helpers.training.engine import train

    winner = write_best(study, settings)
    if winner is None:
        raise UserError("--confirm needs a finished trial to confirm; none finished yet")
    folder = settings.folder / CONFIRM
    base_config = baseline or settings.config
    first = load_config(str(winner)).train.seed + 1
    pairs = {}
    for seed in range(first, first + seeds):
        runs = []
        for role, config, extra in (("winner", str(winner), []),
                                    ("baseline", base_config, settings.overrides + settings.budget_overrides())):
            result = train(config, extra + [f"train.seed={seed}", f"run.out_dir={folder}",
                                            f"run.name={role}_seed{seed}", "tracking.wandb.group=" + study.study_name],
                           resume="auto")
            runs.append(result.run_dir)
        pairs[seed] = tuple(runs)
    report = compare_runs(pairs, base_config or "starter")
    atomic_write_text(folder / "confirm.json", json.dumps(report, indent=2) + "\n")
    return report


def chosen_scores(run_dir: Path) -> tuple[np.ndarray, float, Path]:
    """The val pair scores and EER of the weights a run's best.pt holds, and its data root."""
    from helpers.model.checkpoint import Checkpoint
    from helpers.training.selection import Selection

    checkpoint = Checkpoint.load(run_dir / "best.pt")
    state = checkpoint.selection
    chosen = None
    if state:
        selection = Selection(state["rule"], tuple(state["best"]) or ("raw",))
        selection.load_state_dict(state)
        chosen = selection.chosen
    if chosen is None or chosen.scores is None:
        raise UserError(f"{run_dir / 'best.pt'} holds no val pair scores to compare (the data root has no val pairs)")
    return chosen.scores, chosen.eer, Path(checkpoint.config.data.root)


def compare_runs(pairs: dict[int, tuple[Path, Path]], baseline: str | None, rounds: int = 1000) -> dict:
    """Each seed's (winner, baseline) pair of runs compared on their val pairs: EER difference (winner minus
    baseline) and its paired 95 % interval; the verdict is better or worse when every seed's interval says so."""
    from helpers.data.layout import open_data
    from helpers.eval.metrics import paired_bootstrap_eers

    seeds = []
    for seed, (winner_dir, baseline_dir) in pairs.items():
        winner, winner_eer, root = chosen_scores(winner_dir)
        other, other_eer, _ = chosen_scores(baseline_dir)
        labels = np.array([pair.label for pair in open_data(root).val_pairs])
        usable = np.isfinite(winner) & np.isfinite(other)
        (test,) = paired_bootstrap_eers(winner[usable], [other[usable]], labels[usable], rounds)
        seeds.append({"seed": seed, "winner": str(winner_dir), "baseline": str(baseline_dir),
                      "winner_eer": winner_eer, "baseline_eer": other_eer, "difference": test.difference,
                      "difference_ci95": test.ci95.as_list()})
    verdict = "within noise"
    if all(s["difference_ci95"][1] < 0 for s in seeds):
        verdict = "better"
    elif all(s["difference_ci95"][0] > 0 for s in seeds):
        verdict = "worse"
    return {"baseline": baseline, "verdict": verdict, "seeds": seeds}


def confirm_lines(report: dict) -> list[str]:
    """The confirmation as a reader sees it: one line per seed and the verdict."""
    lines = [f"Confirmation against `{report['baseline']}` (val EER, winner minus baseline, paired 95 % interval):"]
    for item in report["seeds"]:
        low, high = item["difference_ci95"]
        lines.append(f"- seed {item['seed']}: {item['winner_eer']:.4f} against {item['baseline_eer']:.4f}, "
                     f"difference {item['difference']:+.4f} [{low:+.4f}, {high:+.4f}]")
    lines.append(f"Verdict: the winner is **{report['verdict']}** than the baseline"
                 if report["verdict"] != "within noise" else "Verdict: the winner is **within noise** of the baseline")
    return lines
