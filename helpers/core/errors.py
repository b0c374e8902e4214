"""The one exception type for user mistakes, how names are shown in its messages, and errors told in one line."""


class UserError(Exception):
    """A mistake in the user's input (a file, a line, a key).

    The command line prints its message as one sentence on stderr and exits
    with status 1, without a traceback.
    """


def printable(text: str) -> str:
    """``text`` with each invisible or control character escaped (``\\ufeff``, ``\\t``, ``\\x00``).

    A name read from a file may carry a byte-order mark, a zero-width space or
    an undecodable byte; shown raw, the message would name a file that looks
    right and does not exist.
    """
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def one_line(error: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


class Stopped(UserError):
    """A run that stopped when asked to (a signal), after saving where it stood: the command line prints the
    message (when there is one) and exits with ``status``."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status
