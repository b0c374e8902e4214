"""Kaggle: the command-line tool (downloads, submissions) and the Python API (the user's submissions, for the
hand-in), each used only when it is installed and credentials exist.

Nothing here reads, prints or writes the API key: the tool finds it itself
(``KAGGLE_API_TOKEN`` or ``~/.kaggle/access_token`` for a ``KGAT_`` token,
``KAGGLE_USERNAME``/``KAGGLE_KEY`` or ``kaggle.json`` for the legacy pair;
:func:`helpers.core.credentials.load_secrets` puts keys kept in Colab or Kaggle
Secrets into the environment first). Every function says in one sentence why it did not act.

The Python API is kaggle 2.x's (2.0 removed ``kaggle.rest`` and returns
submissions as objects of kagglesdk); kaggle 2.2 imports ``six`` without
declaring it, so the toolkit's ``kaggle`` extra brings it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import subprocess
import zipfile
from pathlib import Path

from helpers.core.credentials import kaggle_problem
from helpers.core.errors import UserError, one_line

KAGGLE_API_RELEASE = "2.0"  # the Python API the hand-in reads submissions with
INSTALL_API = "pip install -U 'kaggle>=2.0' six"  # what the toolkit's kaggle extra installs
PAGE_SIZE = 50
MAX_PAGES = 200  # 10,000 submissions: far more than 10 a day for a term


def unavailable() -> str | None:
    """Why the kaggle tool cannot be used here, or None when it can."""
    if shutil.which("kaggle") is None:
        return f"the kaggle command is not installed ({INSTALL_API})"
    return _six_problem() or kaggle_problem()


def _six_problem() -> str | None:
    """kaggle 2.2 imports six without declaring it: when it is installed here, it fails at import without six."""
    try:
        importlib.metadata.version("kaggle")
    except importlib.metadata.PackageNotFoundError:
        return None  # the kaggle command belongs to another Python; it has its own packages
    if importlib.util.find_spec("six") is None:
        return "the kaggle tool imports six but does not install it: pip install six"
    return None


def _run(arguments: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([shutil.which("kaggle"), *arguments], capture_output=True, text=True, timeout=3600)


def _reason(completed: subprocess.CompletedProcess) -> str:
    lines = (completed.stderr or completed.stdout).strip().splitlines()
    return lines[-1] if lines else "no reason given"


def download(competition: str, dest: str | Path) -> Path:
    """Download and unpack a competition's data into ``dest``; raises UserError saying why it could not."""
    why = unavailable()
    if why:
        raise UserError(f"cannot download the competition data: {why}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    completed = _run(["competitions", "download", "-c", competition, "-p", str(dest)])
    if completed.returncode != 0:
        raise UserError(f"kaggle could not download {competition}: {_reason(completed)}")
    for archive in sorted(dest.glob("*.zip")):
        with zipfile.ZipFile(archive) as handle:
            handle.extractall(dest)
        archive.unlink()
    return dest


def submit(path: str | Path, competition: str, message: str) -> str:
    """Submit a file to a competition; returns what happened, in one sentence."""
    why = unavailable()
    if why:
        return f"not submitted to Kaggle: {why}"
    completed = _run(["competitions", "submit", "-c", competition, "-f", str(path), "-m", message])
    if completed.returncode != 0:
        return f"Kaggle refused the submission: {_reason(completed)}"
    return f"submitted {path} to Kaggle competition {competition}"


def api_problem() -> str | None:
    """Why kaggle's Python API cannot be used here, in one sentence, or None when it can."""
    from packaging.version import Version

    try:
        version = importlib.metadata.version("kaggle")
    except importlib.metadata.PackageNotFoundError:
        return f"the kaggle package is not installed ({INSTALL_API}, or pip install 'hw2p2-helpers[kaggle]')"
    if Version(version) < Version(KAGGLE_API_RELEASE):
        return f"kaggle {version} predates the 2.x API this toolkit reads submissions with: {INSTALL_API}"
    return _six_problem() or kaggle_problem()


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
