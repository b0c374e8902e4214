"""The one exception type for user mistakes, and errors told in one line."""


class UserError(Exception):
    """A mistake in the user's input (a file, a line, a key).

    The command line prints its message as one sentence on stderr and exits
    with status 1, without a traceback.
    """


def one_line(error: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
