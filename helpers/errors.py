"""The one exception type for user mistakes."""


class UserError(Exception):
    """A mistake in the user's input (a file, a line, a key).

    The command line prints its message as one sentence on stderr and exits
    with status 1, without a traceback.
    """
