"""The one error type for bad input.

Anything the user hands us that we cannot use (a missing, truncated or undecodable video, a
malformed annotation or submission, a feature file of the wrong shape, a bad config key) raises
:class:`BadInputError`. Its message always names the offending file (or setting) and the cause, on
one line. The CLI turns it into that line on stderr and exit code 2; batch jobs catch it, count the
item as skipped and go on.
"""

from __future__ import annotations

import os


class BadInputError(Exception):
    """Bad user input: ``BadInputError(path, cause)`` -> message ``"<path>: <cause>"``."""

    def __init__(self, path: str | os.PathLike | None, cause: str | None = None):
        if cause is None:
            # one argument: torch's DataLoader re-raising a worker's error (``exc_type(message)``, the
            # message holding the worker's traceback); keep the original one-line message
            path, cause = None, _original_line(str(path))
        self.path = None if path is None else os.fspath(path)
        self.cause = " ".join(str(cause).split())  # always one line
        super().__init__(self.cause if self.path is None else f"{self.path}: {self.cause}")

    def __reduce__(self):  # survives pickling (errors raised in worker processes)
        return (type(self), (self.path, self.cause))


def _original_line(text: str) -> str:
    """The message of the last ``...BadInputError: <message>`` line of a formatted traceback (the
    whole text when there is none)."""
    tag = f"{BadInputError.__name__}: "
    for line in reversed(text.splitlines()):
        if tag in line:
            return line.split(tag, 1)[1]
    return text


def os_error_line(e: OSError) -> str:
    """``"<file>: <what failed> (<strerror>)"`` -- one line for an operating-system error (a full
    disk, a folder that cannot be written), as the CLI prints it."""
    what = e.strerror or type(e).__name__
    name = e.filename if e.filename is not None else None
    if name is None:
        return " ".join(f"{what}: {e}".split())
    return " ".join(f"{os.fspath(name)}: {what}".split())


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, a batch scheduler's cancel or preemption) in the command's
    process, raised where it was when the signal came: an interrupt like Ctrl-C, so every cleanup
    that a Ctrl-C runs runs too, but said and exited as a termination (143)."""
