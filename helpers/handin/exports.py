"""What the course's backends export from Kaggle and W&B into the hand-in, made from the clients' own answers.

Fall 2026 (``kaggle_metadata.json``, ``wandb_export.pkl``): every submission of
the account to the term's main and slack competitions, ranked by the term's
metric; then the W&B runs the submissions' descriptions name
(``<tag>|WB=<entity>/<project>/<run_id>``, read by ``parse_run_path``), each at its best-ranked submission,
at most ``term.wandb_runs`` of them. The best-ranked submission must name one.

Spring 2026 (``kaggle_data.json``, ``wandb_top_runs.pkl``): the best score of
the user's submissions to one competition (the slack one when asked), times
100; and the ``term.wandb_runs`` runs of the W&B project that are best by the
summary key ``EER``.

Every failure is one sentence (:class:`UserError`); the clients come in as
arguments, so tests hand in stand-ins shaped like their answers.
"""

from __future__ import annotations

import datetime
import math
import os
import pickle
from collections.abc import Callable, Mapping

from helpers.core.errors import UserError, one_line
from helpers.core.terms import Term
from helpers.handin.kaggle import KaggleAccount

HISTORY_ROWS = 1000  # the history rows of each run the backends keep
SCAN_RUNS = 500  # runs of a project looked at for the best ones by EER


# ----------------------------------------------------------------------------- Kaggle


def as_score(value) -> float | None:
    """A leaderboard score as Kaggle sends it (text, maybe empty) as a finite float, else None."""
    if isinstance(value, str):
        value = value.strip() or None
    try:
        score = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return score if math.isfinite(score) else None


def _timestamp(value) -> float:
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    try:
        return datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def submission_record(submission, competition: str, label: str, term: Term) -> dict:
    """One Kaggle submission as the Fall 2026 backend records it (plus ``_when``, for ranking only)."""
    private, public = as_score(getattr(submission, "private_score", None)), as_score(getattr(submission, "public_score", None))
    score, source = (private, "private") if private is not None else (public, "public" if public is not None else None)
    description, when = getattr(submission, "description", None), getattr(submission, "date", None)
    return {"competition": competition, "competition_label": label,
            "submission_ref": str(getattr(submission, "ref", None) or getattr(submission, "file_name", None) or ""),
            "submitted_at": None if when is None else str(when), "status": str(getattr(submission, "status", "")),
            "description": None if description is None else str(description), "public_score": public,
            "private_score": private, "score": score, "score_source": source,
            "wandb_run_path": term.run_path_in(description), "_when": _timestamp(when)}


def rank(records: list[dict], score_mode: str) -> list[dict]:
    """The scored submissions, best first by ``score_mode`` (min or max); ties go to the newer one."""
    sign = 1.0 if score_mode == "min" else -1.0
    scored = [record for record in records if record["score"] is not None]
    return sorted(scored, key=lambda r: (sign * r["score"], -r["_when"], r["submission_ref"]))


def _public(record: dict) -> dict:
    return {key: value for key, value in record.items() if not key.startswith("_")}


def check_account(account: KaggleAccount, username: str | None) -> str:
    """The account's user name, after checking it is ``username`` (when one is given)."""
    signed_in = account.username()
    if not signed_in:
        raise UserError("Kaggle signed in but did not say which account this is; make a new API token")
    if username and username.strip().casefold() != signed_in.casefold():
        raise UserError(f"the Kaggle credentials belong to '{signed_in}', not '{username}': use the token of the "
                        "account that submitted, or correct --kaggle-username")
    return signed_in


def kaggle_metadata(account: KaggleAccount, username: str | None, term: Term) -> dict:
    """``kaggle_metadata.json`` of Fall 2026: the account's submissions to both competitions, ranked."""
    signed_in = check_account(account, username)
    counts, records = {}, []
    for label, competition in (("main", term.competition), ("slack", term.slack_competition)):
        found = account.submissions(competition) or []  # None: not joined; the other competition still counts
        counts[competition] = len(found)
        records += [submission_record(s, competition, label, term) for s in found]
    if not records:
        raise UserError(f"'{signed_in}' has no submissions to {term.competition} or {term.slack_competition}: "
                        "submit first (python -m helpers submit --kaggle)")
    ranked = rank(records, term.leaderboard.score_mode)
    if not ranked:
        raise UserError(f"none of the {len(records)} Kaggle submissions of '{signed_in}' has a score yet; "
                        "wait for Kaggle to score them")
    return {"kaggle_username": username or signed_in, "authenticated_kaggle_username": signed_in,
            "competitions": counts, "total_submissions": len(records), "score_mode": term.leaderboard.score_mode,
            "submissions": [_public(r) for r in records], "ranked_submissions": [_public(r) for r in ranked]}


def linked_runs(metadata: dict, term: Term) -> list[str]:
    """The W&B runs the ranked submissions name, best first, each once, at most ``term.wandb_runs``."""
    ranked = metadata["ranked_submissions"]
    top = ranked[0]
    if not top["wandb_run_path"]:
        raise UserError(f"the best-scored Kaggle submission ({top['submission_ref']}, {top['competition']}, score "
                        f"{top['score']}) has no W&B run in its description, and the grader refuses that: submit "
                        f"its predictions again with the description '{term.description_form}' "
                        "(python -m helpers submit --kaggle does it)")
    paths: list[str] = []
    for record in ranked:
        if record["wandb_run_path"] and record["wandb_run_path"] not in paths:
            paths.append(record["wandb_run_path"])
    return paths[:term.wandb_runs]


def kaggle_best(account: KaggleAccount, username: str | None, term: Term, slack: bool,
                acknowledged: bool = True) -> dict:
    """``kaggle_data.json`` of Spring 2026: the best score of the user's submissions to one competition."""
    signed_in = check_account(account, username)
    name = username or signed_in
    competition = term.slack_competition if slack else term.competition
    mine = [s for s in account.submissions(competition) or []
            if str(getattr(s, "submitted_by", None) or name).casefold() == name.casefold()]
    ranked = rank([submission_record(s, competition, "slack" if slack else "main", term) for s in mine],
                  term.leaderboard.score_mode)
    if not ranked:
        raise UserError(f"'{name}' has no scored submission to {competition}"
                        + ("" if slack else " (pass --slack for the slack competition)"))
    best = ranked[0]
    return {"kaggle_username": name, "acknowledgement": acknowledged, "submitted_slack": slack,
            "competition_name": competition, "deadline": term.deadline or "", "raw_score": best["score"] * 100.0,
            "score_type": best["score_source"]}


# ----------------------------------------------------------------------------- W&B


def open_wandb():
    """A W&B API client signed in with the key wandb finds; one sentence when there is none."""
    from helpers.core.credentials import wandb_problem

    problem = wandb_problem()
    if problem:
        raise UserError(problem.replace("runs log offline", "the hand-in's W&B export needs one"))
    import wandb

    try:
        return wandb.Api(api_key=os.environ.get("WANDB_API_KEY"), timeout=30)
    except Exception as error:  # noqa: BLE001 - no network, a refused key: one sentence either way
        raise UserError(f"could not sign in to W&B ({one_line(error)})") from None


def wandb_entity(configured: str | None, api: Callable[[], object]) -> str | None:
    """The W&B entity (user or team) a run lives under, one rule for the submission's description and the
    export: the run's ``tracking.wandb.entity``, else ``WANDB_ENTITY``, else the default entity of the W&B login
    that ``api()`` opens (None when there is none or W&B cannot be reached)."""
    found = (configured or "").strip() or os.environ.get("WANDB_ENTITY", "").strip()
    if found:
        return found
    try:
        return getattr(api(), "default_entity", None) or None
    except Exception:  # noqa: BLE001 - no key, no network: the caller says how to name the entity
        return None


def _plain(value):
    """W&B's containers (summary sub-dicts) and numbers as builtins; anything else as text, so the pickle
    loads anywhere without running code."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item"):  # numpy scalars
        return _plain(value.item())
    return str(value)


def run_record(run, run_path: str | None = None) -> dict:
    """One W&B run as the backends export it: identity, config, summary, tags and up to 1,000 history rows."""
    record = {"id": run.id, "name": run.name, "state": run.state, "created_at": str(run.created_at),
              "config": _plain(dict(run.config)), "summary": _plain(dict(run.summary)), "tags": list(run.tags)}
    try:
        record["history"] = _plain(run.history(samples=HISTORY_ROWS, pandas=True).to_dict(orient="records"))
    except Exception as error:  # noqa: BLE001 - the backends keep the run and say why its history is missing
        record["history"] = {"error": one_line(error), "message": "History could not be retrieved for this run."}
    if run_path is not None:
        record["run_path"] = run_path
    pickle.dumps(record)  # _plain leaves nothing that cannot be pickled
    return record


def linked_run_records(api, run_paths: list[str]) -> list[dict]:
    """``wandb_export.pkl`` of Fall 2026: the named runs, in order."""
    records = []
    for path in run_paths:
        try:
            run = api.run(path)
        except Exception as error:  # noqa: BLE001 - wandb's CommError, or no network
            raise UserError(f"cannot read the W&B run {path} that a Kaggle submission names: it was deleted, or "
                            f"this W&B key cannot see it ({one_line(error)})") from None
        records.append(run_record(run, path))
    return records


def top_run_records(api, project: str, term: Term) -> list[dict]:
    """``wandb_top_runs.pkl`` of Spring 2026: the project's best runs by the summary key the term ranks by."""
    key = term.leaderboard.wandb_key
    order = ("+" if term.leaderboard.better == "lower" else "-") + f"summary_metrics.{key}"
    try:
        runs = api.runs(project, order=order)
        ranked = [run for run, _ in zip(runs, range(SCAN_RUNS)) if as_score(run.summary.get(key)) is not None]
    except Exception as error:  # noqa: BLE001 - wandb's CommError, or no network
        raise UserError(f"cannot list the runs of the W&B project {project} ({one_line(error)})") from None
    if not ranked:
        raise UserError(f"the W&B project {project} has no run with the summary key {key}: train with "
                        "tracking.wandb.mode=online (or `wandb sync` the offline runs) first")
    return [run_record(run) for run in ranked[:term.wandb_runs]]
