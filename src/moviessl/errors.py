"""The one error type for bad input.

Anything the user hands us that we cannot use (a missing, truncated or undecodable video, a
malformed annotation or submission, a feature file of the wrong shape, a bad config key) raises
:class:`BadInputError`. Its message always names the offending file (or setting) and the cause, on
one line. The CLI turns it into that line on stderr and exit code 2; batch jobs catch it, count the
item as skipped and go on.
"""

from __future__ import annotations

import ast
import os
import re


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


def raise_if_denied(path: str | os.PathLike) -> None:
    """Raise the PermissionError that looking ``path`` up gives (a folder on its way this user may
    not search), for a caller about to say that ``path`` does not exist. From Python 3.14 on,
    pathlib's ``exists``/``is_file``/``is_dir`` answer False for it as for a missing path, where
    earlier versions raised (CPython gh-144525): a video that is there was reported "no such
    file". Raised, it is the CLI's one line ``<path>: Permission denied`` on every version."""
    try:
        os.stat(path)
    except PermissionError:
        raise
    except (OSError, ValueError):  # missing, or a name the system cannot hold: the caller's words
        return


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
    if e.errno is None and e.filename is None:
        e = _worker_os_error(str(e)) or e
    what = e.strerror or type(e).__name__
    name = e.filename if e.filename is not None else None
    if name is None:
        return " ".join(f"{what}: {e}".split())
    return " ".join(f"{os.fspath(name)}: {what}".split())


_ERRNO_LINE = re.compile(r"\w+: \[Errno (\d+)\] (.*)")


def _worker_os_error(text: str) -> OSError | None:
    """The error a loader worker raised, from the one torch's DataLoader re-raises in the main
    process (``type(message)``, the message holding the worker's traceback: no errno, no file), so
    that a full disk met in a worker is the same line as one met here; None for any other error."""
    if "Original Traceback" not in text:
        return None
    m = _ERRNO_LINE.fullmatch(text.strip().splitlines()[-1])
    if m is None:
        return None
    what, name = m.group(2), None
    quoted = re.fullmatch(r"(.*?): ('.*'|\".*\")", what)
    if quoted is not None:  # OSError's str: "[Errno N] <strerror>: <repr of the file>"
        try:
            what, name = quoted.group(1), ast.literal_eval(quoted.group(2))
        except (ValueError, SyntaxError):  # two files (a rename's "'a' -> 'b'"): said as it came
            pass
    return OSError(int(m.group(1)), what, name) if isinstance(name, str) else OSError(int(m.group(1)), what)


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, a batch scheduler's cancel or preemption) in the command's
    process, raised where it was when the signal came: an interrupt like Ctrl-C, so every cleanup
    that a Ctrl-C runs runs too, but said and exited as a termination (143)."""
