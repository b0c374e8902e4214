"""Stand-ins for the Kaggle and W&B clients: their answers recorded in the shapes the real clients return.

Kaggle 2.x returns kagglesdk ``ApiSubmission`` objects (``ref`` an int, ``date`` a
datetime, scores as text, ``status`` an enum) in pages with a
``next_page_token``; the stand-in serves them to the toolkit's own
:class:`helpers.handin.kaggle.KaggleAccount`, so its paging is what runs. W&B's
public API returns ``Run`` objects whose ``summary`` holds nested sub-dicts and
whose ``history(pandas=True)`` is a DataFrame.
"""

from __future__ import annotations

import datetime
import enum
from contextlib import contextmanager
from types import SimpleNamespace

import pandas as pd

from helpers.handin.kaggle import KaggleAccount


class SubmissionStatus(enum.Enum):  # kagglesdk.competitions.types.submission_status
    PENDING = 0
    COMPLETE = 1
    ERROR = 2


def submission(ref: int, day: int, public: str | None, private: str | None = None, description: str = "",
               by: str = "student", status=SubmissionStatus.COMPLETE):
    """One ApiSubmission as kagglesdk returns it."""
    return SimpleNamespace(ref=ref, total_bytes=1234, date=datetime.datetime(2026, 11, day, 18, 30, 5),
                           description=description, error_description=None, file_name="submission.csv",
                           public_score=public, private_score=private, status=status, submitted_by=by,
                           submitted_by_ref=by, team_name=by, url=f"/submissions/{ref}")


class HTTPError(Exception):
    """What requests raises for an HTTP error status: the response carries the status code."""

    def __init__(self, status: int):
        super().__init__(f"{status} Client Error")
        self.response = SimpleNamespace(status_code=status)


class _Client:
    def __init__(self, pages: dict[str, list], forbidden: set[str]):
        self.pages, self.forbidden, self.requests = pages, forbidden, []
        self.competitions = SimpleNamespace(competition_api_client=self)

    def list_submissions(self, request):
        self.requests.append((request.competition_name, request.page_token))
        if request.competition_name in self.forbidden:
            raise HTTPError(403)
        pages = self.pages.get(request.competition_name, [[]])
        index = int(request.page_token or 0)
        token = "" if index + 1 >= len(pages) else str(index + 1)
        return SimpleNamespace(submissions=pages[index], next_page_token=token)


class KaggleApi:
    """kaggle's KaggleApi after authenticate(): its configured user name and its kagglesdk client."""

    def __init__(self, username: str, pages: dict[str, list], forbidden=()):
        self.config_values = {"username": username}
        self.client = _Client(pages, set(forbidden))

    def get_config_value(self, name):
        return self.config_values.get(name)

    @contextmanager
    def build_kaggle_client(self):
        yield self.client


def kaggle_account(username: str, pages: dict[str, list], forbidden=()) -> KaggleAccount:
    """The toolkit's KaggleAccount over the stand-in client (pages: competition -> list of pages)."""
    return KaggleAccount(KaggleApi(username, pages, forbidden), lambda: SimpleNamespace())


class CommError(Exception):
    """wandb.errors.CommError: what the API raises for a run that does not exist."""


class SummarySubDict(dict):
    """wandb.old.summary.SummarySubDict: the summary's nested values."""


class Run:
    def __init__(self, run_id: str, eer: float | None, score: float | None = None, state: str = "finished"):
        self.id, self.name, self.state = run_id, f"run-{run_id}", state
        self.created_at = "2026-11-20T10:00:00Z"
        self.config = {"optim": {"lr": 0.002}, "course": {"term": "f26"}}
        summary = {"_wandb": SummarySubDict(runtime=321)}
        if eer is not None:
            summary["EER"] = eer
        if score is not None:
            summary["score"] = score
        self.summary = summary
        self.tags = ["resnet18"]

    def history(self, samples=500, pandas=True):
        frame = pd.DataFrame({"_step": [0, 10], "EER": [0.4, 0.1], "train_loss": [15.8, None]})
        return frame.head(samples)


class WandbApi:
    """wandb.Api: runs by path, and a project's runs in the order asked for."""

    def __init__(self, runs: dict[str, Run], default_entity: str = "me"):
        self.by_path, self.default_entity, self.orders = runs, default_entity, []

    def run(self, path: str) -> Run:
        if path not in self.by_path:
            raise CommError(f"Could not find run {path}")
        return self.by_path[path]

    def runs(self, path: str, order: str = "+created_at"):
        self.orders.append((path, order))
        key = order.lstrip("+-").removeprefix("summary_metrics.")
        mine = [run for p, run in self.by_path.items() if p.startswith(path + "/")]
        present = sorted((r for r in mine if key in r.summary), key=lambda r: r.summary[key],
                         reverse=order.startswith("-"))
        return present + [r for r in mine if key not in r.summary]  # W&B puts runs without the key last
