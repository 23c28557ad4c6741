"""Errors that reach the user as one line.

Library code raises NanoError (bad input: exit code 2) or its subclasses; the
CLI prints ``error: <message>`` and exits with ``exit_code``. Anything else is
a bug and exits 1 (the traceback only with --debug).
"""


class NanoError(Exception):
    """A problem with the user's input: missing file, bad format, bad option."""

    exit_code = 2


class ModelFormatError(NanoError):
    """A model file that is corrupt, truncated or of an unsupported kind."""


class MissingPackageError(NanoError):
    """A model card whose weights come from a package that is not installed."""
