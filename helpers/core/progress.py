"""Progress reporting shaped for where the code runs: a bar that updates in place, or a few plain lines.

* a terminal: tqdm's bar on stderr;
* a notebook a person is running (Jupyter, Colab, Kaggle, VS Code): one bar per
  phase that updates in place (a widget when ipywidgets is installed);
* anything else (papermill, nbval, a log file, a pipe): no bar, and a phase
  that lasts over two minutes says where it stands in a plain line after 2
  minutes, then after 4, 8 and every 10 minutes more. Every refresh of a bar
  would otherwise become its own output in an executed notebook, or a line in
  a log; so an hour-long epoch adds seven lines, a short one none (the
  engine's own line per epoch says the rest).

A cell sent by papermill or nbval is told apart from one a person runs by the
request itself: their clients send ``allow_stdin=False``, front ends that can
answer ``input()`` send ``True``.
"""

from __future__ import annotations

import importlib.util
import sys
import time

from tqdm.std import tqdm

LINE_SECONDS = 120.0  # the first line of a long phase; each wait doubles, up to MAX_LINE_SECONDS
MAX_LINE_SECONDS = 600.0
# A log line: where the phase stands, its pace and what is left, without the bar.
_LINE_FORMAT = "{desc}: {percentage:3.0f}% ({n_fmt}/{total_fmt}) [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


def progress_style(enabled: bool = True) -> str:
    """``off``, ``notebook`` (a live notebook), ``bar`` (a terminal) or ``lines`` (papermill, logs, pipes)."""
    if not enabled:
        return "off"
    if _in_kernel():
        return "notebook" if _person_at_the_front_end() else "lines"
    return "bar" if sys.stderr.isatty() else "lines"


def progress(iterable=None, *, total: int | None = None, desc: str = "", unit: str = "it", initial: int = 0,
             enabled: bool = True):
    """A tqdm-like progress object (``update``, ``set_postfix``, ``close``, iteration) in the style that suits."""
    style = progress_style(enabled)
    if style == "lines":
        return LineProgress(iterable, total=total, desc=desc, unit=unit, initial=initial)
    bar_class = tqdm
    if style == "notebook" and importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.notebook import tqdm as bar_class
    # Without ipywidgets a plain bar still redraws in place in a live notebook (the front end honours \r).
    return bar_class(iterable, total=total, desc=desc, unit=unit, initial=initial, disable=style == "off",
                     leave=False, dynamic_ncols=True)


class LineProgress:
    """Progress as plain lines on stderr: the first after ``interval`` seconds, each next after twice the wait
    before it (at most :data:`MAX_LINE_SECONDS`); none for a phase shorter than ``interval``."""

    disable = False

    def __init__(self, iterable=None, *, total: int | None = None, desc: str = "", unit: str = "it",
                 initial: int = 0, interval: float = LINE_SECONDS):
        self.iterable, self.desc, self.unit, self.interval = iterable, desc, unit, interval
        self.total = total if total is not None or iterable is None else _length(iterable)
        self.n = self.initial = initial
        self.postfix = ""
        self.started = self.last_line = time.monotonic()

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last_line >= self.interval:
            self.last_line = now
            self.interval = min(2 * self.interval, MAX_LINE_SECONDS)
            print(self.line(now - self.started), file=sys.stderr, flush=True)

    def line(self, elapsed: float) -> str:
        """One report, worded by tqdm."""
        return tqdm.format_meter(self.n, self.total, elapsed, prefix=self.desc, unit=self.unit,
                                 postfix=self.postfix or None, initial=self.initial,
                                 bar_format=_LINE_FORMAT if self.total else None)

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def close(self) -> None:
        """Nothing to clear: the lines already printed stay, as a log should."""


def _length(iterable) -> int | None:
    try:
        return len(iterable)
    except TypeError:
        return None


def _in_kernel() -> bool:
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    return getattr(shell, "kernel", None) is not None


def _person_at_the_front_end() -> bool:
    """Whether the cell running now came from a front end that can answer ``input()`` (not papermill or nbval)."""
    kernel = sys.modules["IPython"].get_ipython().kernel
    try:
        parent = kernel.get_parent()  # ipykernel >= 6
    except AttributeError:
        parent = getattr(kernel, "_parent_header", None) or {}  # older ipykernel (some Colab images)
    return bool(parent.get("content", {}).get("allow_stdin", False))
