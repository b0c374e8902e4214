"""Kaggle for the hand-in: a file submitted with the command-line tool (:mod:`helpers.core.kaggle_command`), and
the Python API (the user's submissions), each used only when it is installed and credentials exist.

The Python API is kaggle 2.x's (2.0 removed ``kaggle.rest`` and returns
submissions as objects of kagglesdk); kaggle 2.2 imports ``six`` without
declaring it, so the toolkit's ``kaggle`` extra brings it.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from helpers.core import kaggle_command
from helpers.core.credentials import kaggle_problem
from helpers.core.errors import UserError, one_line

KAGGLE_API_RELEASE = "2.0"  # the Python API the hand-in reads submissions with
PAGE_SIZE = 50
MAX_PAGES = 200  # 10,000 submissions: far more than 10 a day for a term


def submit(path: str | Path, competition: str, message: str) -> str:
    """Submit a file to a competition; returns what happened, in one sentence."""
    why = kaggle_command.unavailable()
    if why:
        return f"not submitted to Kaggle: {why}"
    completed = kaggle_command.run(["competitions", "submit", "-c", competition, "-f", str(path), "-m", message])
    if completed.returncode != 0:
        return f"Kaggle refused the submission: {kaggle_command.reason(completed)}"
    return f"submitted {path} to Kaggle competition {competition}"


def api_problem() -> str | None:
    """Why kaggle's Python API cannot be used here, in one sentence, or None when it can."""
    from packaging.version import Version

    try:
        version = importlib.metadata.version("kaggle")
    except importlib.metadata.PackageNotFoundError:
        return (f"the kaggle package is not installed ({kaggle_command.INSTALL_API}, "
                "or pip install 'hw2p2-helpers[kaggle]')")
    if Version(version) < Version(KAGGLE_API_RELEASE):
        return (f"kaggle {version} predates the 2.x API this toolkit reads submissions with: "
                f"{kaggle_command.INSTALL_API}")
    return kaggle_command.six_problem() or kaggle_problem()


class KaggleAccount:
    """The signed-in Kaggle account: who it is, and its submissions to a competition.

    ``api`` is kaggle's ``KaggleApi``, authenticated; ``new_request`` makes a
    kagglesdk ``ApiListSubmissionsRequest``. Submissions come back as the
    client returns them (kagglesdk ``ApiSubmission`` objects).
    """

    def __init__(self, api, new_request):
        self.api = api
        self.new_request = new_request

    @classmethod
    def open(cls) -> "KaggleAccount":
        """Sign in with the credentials the kaggle tool finds; one sentence when that cannot be done."""
        problem = api_problem()
        if problem:
            raise UserError(problem)
        from kaggle.api.kaggle_api_extended import KaggleApi
        from kagglesdk.competitions.types.competition_api_service import ApiListSubmissionsRequest
        from kagglesdk.competitions.types.competition_enums import SubmissionGroup, SubmissionSortBy

        def new_request():  # every submission of the account, not only the selected ones
            request = ApiListSubmissionsRequest()
            request.group, request.sort_by = SubmissionGroup.SUBMISSION_GROUP_ALL, SubmissionSortBy.SUBMISSION_SORT_BY_DATE
            return request

        api = KaggleApi()
        try:
            api.authenticate()
        except SystemExit:  # kaggle prints its help and exits when no credentials work
            raise UserError("Kaggle did not accept the credentials (an expired or revoked token?): make a new API "
                            "token at kaggle.com > Settings > API") from None
        except Exception as error:  # noqa: BLE001 - no network, a refused token: one sentence either way
            raise UserError(f"could not sign in to Kaggle ({one_line(error)})") from None
        return cls(api, new_request)

    def username(self) -> str:
        """The account's user name: the server's answer for a token, the configured one for a legacy key."""
        return str(self.api.get_config_value("username") or "")

    def submissions(self, competition: str) -> list | None:
        """Every submission of this account to ``competition``, newest first; None when the account may not
        see the competition (not joined: Kaggle answers 403)."""
        found, token, seen = [], "", set()
        try:
            with self.api.build_kaggle_client() as client:
                for _ in range(MAX_PAGES):
                    request = self.new_request()
                    request.competition_name, request.page_token, request.page_size = competition, token, PAGE_SIZE
                    response = client.competitions.competition_api_client.list_submissions(request)
                    found += list(response.submissions or [])
                    token = response.next_page_token
                    if not token:
                        return found
                    if token in seen:
                        raise UserError(f"Kaggle sent the same page of {competition}'s submissions twice; try again")
                    seen.add(token)
        except UserError:
            raise
        except Exception as error:  # noqa: BLE001 - the client raises requests' errors
            if getattr(getattr(error, "response", None), "status_code", None) == 403:
                return None
            raise UserError(f"could not list the Kaggle submissions of {competition} ({one_line(error)})") from None
        return found
