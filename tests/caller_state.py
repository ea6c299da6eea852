"""What a library call must give back to its caller's process: shared by the tests of moviessl's
stages used from Python (a notebook's random streams and Lightning's seed variables)."""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch

SEED_VARS = ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")


def draws() -> tuple:
    """The next numbers of the three global generators a stage could draw from or seed."""
    return torch.rand(2).tolist(), np.random.rand(2).tolist(), random.random()


@contextlib.contextmanager
def random_streams_given_back(monkeypatch):
    """Seeds the caller's generators and unsets Lightning's seed variables; after the body (a call
    that fails inside it too) the generators go on as if nothing had drawn from them and the
    variables are still unset."""
    for k in SEED_VARS:
        monkeypatch.delenv(k, raising=False)
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    want = draws()
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    yield
    assert draws() == want
    assert not [k for k in SEED_VARS if k in os.environ]
