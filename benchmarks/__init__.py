"""The benchmarks behind docs/benchmarks.md and docs/results.md, each runnable as
``python -m benchmarks.NAME`` (``make bench`` runs the timing ones)."""

from __future__ import annotations

import sys
from typing import Callable, NoReturn


def run_main(main: Callable[[], object], prog: str) -> NoReturn:
    """A benchmark's command line, as the ``moviessl`` CLI treats bad input: a ``BadInputError``,
    an ``OSError`` (a folder that is not there) or a benchmark's own ``SystemExit("message")`` is one
    line on stderr and exit code 2 (a traceback, or Python's exit code 1 for a message, before); an
    int that ``main`` returns is the exit code, anything else 0."""
    from moviessl.errors import BadInputError, os_error_line

    try:
        rc = main()
    except BadInputError as e:
        line = str(e)
    except OSError as e:
        line = os_error_line(e)
    except SystemExit as e:
        if not isinstance(e.code, str):
            raise
        line = e.code
    else:
        raise SystemExit(rc if isinstance(rc, int) and not isinstance(rc, bool) else 0)
    print(f"{prog}: error: {' '.join(line.split())}", file=sys.stderr)
    raise SystemExit(2)
