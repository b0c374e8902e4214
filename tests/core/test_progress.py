"""The progress policy: a bar in a terminal or a live notebook, a few plain lines in papermill, nbval and logs."""

from __future__ import annotations

import sys
import types

import pytest
from tqdm.std import tqdm

from helpers.core import progress as progress_module
from helpers.core.progress import LINE_SECONDS, LineProgress, progress, progress_style


class _Stream:
    def __init__(self, tty: bool):
        self.tty, self.text = tty, []

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> int:
        self.text.append(text)
        return len(text)

    def flush(self) -> None:
        pass


def _kernel(monkeypatch, allow_stdin: bool, old_ipykernel: bool = False) -> None:
    """Pretend to run inside a Jupyter kernel whose current request allows stdin or not."""
    parent = {"content": {"code": "train()", "allow_stdin": allow_stdin}}
    kernel = types.SimpleNamespace(_parent_header=parent) if old_ipykernel else \
        types.SimpleNamespace(get_parent=lambda: parent)
    shell = types.SimpleNamespace(kernel=kernel)
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))


def test_a_terminal_gets_a_bar_and_a_pipe_gets_lines(monkeypatch):
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    monkeypatch.setattr(sys, "stderr", _Stream(tty=True))
    assert progress_style() == "bar" and isinstance(progress(range(3)), tqdm)
    monkeypatch.setattr(sys, "stderr", _Stream(tty=False))
    assert progress_style() == "lines" and isinstance(progress(range(3)), LineProgress)
    assert progress_style(enabled=False) == "off" and progress(range(3), enabled=False).disable


@pytest.mark.parametrize("old_ipykernel", [False, True])
def test_a_person_at_a_notebook_gets_a_bar_papermill_and_nbval_get_lines(monkeypatch, old_ipykernel):
    monkeypatch.setattr(sys, "stderr", _Stream(tty=False))
    _kernel(monkeypatch, allow_stdin=True, old_ipykernel=old_ipykernel)  # Jupyter, Colab, VS Code
    assert progress_style() == "notebook"
    _kernel(monkeypatch, allow_stdin=False, old_ipykernel=old_ipykernel)  # papermill (nbclient) and nbval
    assert progress_style() == "lines" and isinstance(progress(range(3)), LineProgress)


def test_a_kernel_whose_stderr_claims_a_terminal_still_gets_lines_under_papermill(monkeypatch):
    monkeypatch.setattr(sys, "stderr", _Stream(tty=True))
    _kernel(monkeypatch, allow_stdin=False)
    assert progress_style() == "lines"


def test_lines_come_after_two_minutes_then_ever_more_rarely(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    stream = _Stream(tty=False)
    monkeypatch.setattr(sys, "stderr", stream)
    lines = LineProgress(total=3600, desc="epoch 4", unit="batch")
    for _ in range(3600):  # one batch a second for an hour
        clock[0] += 1.0
        lines.update(1)
        if lines.n == 30:
            lines.set_postfix(loss="1.234")
    lines.close()
    printed = "".join(stream.text).splitlines()
    minutes = [2, 6, 14, 24, 34, 44, 54]  # after 2 minutes, then waits of 4, 8, and 10 minutes at most
    assert len(printed) == len(minutes)
    assert printed[0] == "epoch 4:   3% (120/3600) [02:00<58:00,  1.00batch/s, loss=1.234]"
    assert [line.split("(")[1].split("/")[0] for line in printed] == [str(60 * m) for m in minutes]


def test_a_phase_shorter_than_the_first_wait_prints_nothing(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    stream = _Stream(tty=False)
    monkeypatch.setattr(sys, "stderr", stream)
    seen = []
    for item in LineProgress(range(50), desc="val pairs"):
        clock[0] += (LINE_SECONDS - 1) / 50
        seen.append(item)
    assert seen == list(range(50)) and stream.text == []
