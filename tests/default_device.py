"""A user's ``torch.set_default_device("cuda")`` (a common notebook setting) without a GPU.

"meta" stands in for the GPU: a tensor made without a device lands there, and reading its value
fails ("Cannot copy out of meta tensor"), as a CPU computation fails on a GPU tensor. Meta's draws
take a generator of any device where CUDA's refuse a CPU one; inside :func:`gpu_like_default_device`
every draw given a generator is checked as CUDA checks it, so a draw with a CPU generator that lands
on the default device fails here as it does on a GPU.
"""

from __future__ import annotations

import contextlib

import torch
from torch.overrides import TorchFunctionMode


class _GeneratorCheck(TorchFunctionMode):
    """CUDA's check of a draw's generator: "Expected a 'cuda' device type for generator but found 'cpu'"."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        for g in (*args, *kwargs.values()):
            if isinstance(g, torch.Generator) and isinstance(out, torch.Tensor) and out.device.type != g.device.type:
                raise RuntimeError(
                    f"Expected a '{out.device.type}' device type for generator but found '{g.device.type}'"
                )
        return out


@contextlib.contextmanager
def gpu_like_default_device():
    """Inside: torch's default device is "meta", and a draw refuses a generator of another device."""
    torch.set_default_device("meta")
    try:
        with _GeneratorCheck():
            yield
    finally:
        torch.set_default_device(None)
