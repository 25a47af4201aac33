"""User-facing errors.

A `XelmError` is a problem with what the user gave us (a path, a file, a config key), not a bug:
the CLI prints its message on one line and exits with code 2, without a traceback.
"""


class XelmError(Exception):
    """A user error: the message names the file/field and says what to do."""
