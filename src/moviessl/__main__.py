"""``python -m moviessl``, so that launchers that take a module (``torchrun -m moviessl ...``, as
PyTorch's elastic launcher documents for packages) run the command as the console script does."""

import sys

from .cli import main

if __name__ == "__main__":  # pragma: no cover - run as a module
    sys.exit(main())
