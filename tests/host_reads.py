"""Counting, on the CPU, the calls of a training step that on a GPU make the host wait for it.

On a CUDA device every read of a device tensor's value on the host (``.item()``, ``int(t)``,
``float(t)``, ``if t:``, ``.tolist()``, ``.cpu()``, ``.numpy()``), every shape that depends on device
data (``torch.nonzero``, ``torch.unique``, indexing by a boolean mask), every blocking copy from the
host (``.to(device)`` without ``non_blocking=True``, ``torch.tensor(..., device=...)``) and every
Python number given to ``self.log`` (Lightning makes it a tensor on the module's device, a blocking
copy) waits for all the work queued before it: the GPU drains, then idles while Python launches the
next kernels. On the CPU none of them costs anything, and every tensor is on the CPU, so a test marks
what would be on the device: :class:`Dev`, a tensor subclass that every torch operation passes on to
its results (torch's default ``__torch_function__``), given to the batch as it comes out of the
transfer, to the module's buffers, and to what is made or copied to a Dev's device (``cpu:0``, where
a host tensor's is ``cpu``) or with an accelerator named. A read is counted when its tensor is a
:class:`Dev` and the call is made from moviessl's own code (a frame in the imported package), while a
window (:meth:`HostReads.step_windows`) is open; a draw made on the CPU on purpose
(``torch.rand(..., device="cpu")``) and read there is not.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.apply_func import apply_to_collection

import moviessl

SRC = str(Path(moviessl.__file__).parent)  # moviessl's own code, where it is imported from

READS = ("item", "tolist", "cpu", "numpy", "__int__", "__float__", "__bool__", "__index__", "nonzero")
FACTORIES = ("zeros", "ones", "full", "empty", "arange", "rand", "randn", "randint", "randperm", "eye", "linspace")


DEVICE = torch.device("cpu", 0)  # what a Dev tensor names as its device: told apart from a host tensor's "cpu"


class Dev(torch.Tensor):
    """A tensor that would be on the GPU. Its ``device`` is ``cpu:0`` (a host tensor's is ``cpu``), so
    that what is made or copied to ``t.device`` is a Dev when ``t`` is one, and stays on the host when
    ``t`` does."""

    @property
    def device(self):
        return DEVICE


def dev(t):
    return t.as_subclass(Dev) if isinstance(t, torch.Tensor) and not isinstance(t, (Dev, torch.nn.Parameter)) else t


def host(t):
    return t.as_subclass(torch.Tensor) if isinstance(t, Dev) else t


def _is_dev_mask(i) -> bool:
    if isinstance(i, tuple):
        return any(_is_dev_mask(j) for j in i)
    return isinstance(i, Dev) and i.dtype == torch.bool and i.dim() > 0


def _names_device(args, kwargs) -> bool:
    d = kwargs.get("device")
    if d is None:
        d = next((a for a in args if isinstance(a, (torch.device, str, torch.Tensor))), None)
    if isinstance(d, torch.Tensor):
        return isinstance(d, Dev)
    if isinstance(d, str):
        d = torch.device(d)
    return isinstance(d, torch.device) and (d.type != "cpu" or d.index is not None)


def _from_src() -> str | None:
    f = sys._getframe(2)
    if f.f_code.co_filename.startswith(SRC):
        return f"{Path(f.f_code.co_filename).name}:{f.f_lineno}"
    return None


class HostReads:
    """``counts`` (kind -> n) and ``where`` (kind -> Counter of 'file:line') of the calls made from
    moviessl's code while a window is open. Kinds: ``read`` (a device value read on the host, or a
    shape from device data), ``blocking_copy`` (a copy from the host that waits), ``logged_number``."""

    def __init__(self, monkeypatch):
        self.depth = 0
        self.counts: collections.Counter = collections.Counter()
        self.where: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.mp = monkeypatch
        # torch lists the factories a default device applies to once, by identity, on first use of a
        # device context; listed while the wrappers below stand in for them, every later
        # set_default_device of the session would leave the real factories out
        torch.utils._device._device_constructors()
        for name in READS:
            self._count(torch.Tensor, name, "read", lambda a, k: isinstance(a[0], Dev))
        for name in ("nonzero", "unique", "masked_select"):
            self._count(torch, name, "read", lambda a, k: isinstance(a[0], Dev))
        self._count(torch.Tensor, "__getitem__", "read", lambda a, k: _is_dev_mask(a[1]))
        self._count(torch.Tensor, "__setitem__", "read", lambda a, k: _is_dev_mask(a[1]))
        self._count(
            pl.LightningModule,
            "log",
            "logged_number",
            lambda a, k: not isinstance(a[2] if len(a) > 2 else k.get("value"), torch.Tensor),
            unmark=True,
        )
        # copies and tensors made on the device
        self._count(
            torch.Tensor,
            "to",
            "blocking_copy",
            lambda a, k: not isinstance(a[0], Dev) and _names_device(a[1:], k) and not k.get("non_blocking", False),
            mark=lambda a, k: _names_device(a[1:], k),
        )
        for name in ("tensor", "as_tensor"):
            self._count(
                torch, name, "blocking_copy", lambda a, k: _names_device((), k), mark=lambda a, k: _names_device((), k)
            )
        for name in FACTORIES:
            self._count(torch, name, None, None, mark=lambda a, k: _names_device((), k))

    def _count(self, owner, name, kind, when, mark=None, unmark=False):
        fn = getattr(owner, name)
        counter = self

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if counter.depth and kind is not None and when(args, kwargs):
                at = _from_src()
                if at is not None:
                    counter.counts[kind] += 1
                    counter.where[kind][at] += 1
            if unmark:  # what leaves the step (a logged value) is plain again: Lightning deep-copies it
                args = tuple(host(a) for a in args)
                kwargs = {k: host(v) for k, v in kwargs.items()}
                depth, counter.depth = counter.depth, 0
                try:
                    return fn(*args, **kwargs)
                finally:
                    counter.depth = depth
            out = fn(*args, **kwargs)
            if counter.depth and mark is not None and mark(args, kwargs):
                out = dev(out)
            return out

        self.mp.setattr(owner, name, wrapper)

    @contextlib.contextmanager
    def opened(self, module: torch.nn.Module | None = None):
        """Count; the module's buffers are marked as on the device meanwhile (and given back plain:
        a checkpoint holds no test class)."""
        held = []
        if module is not None:
            for m in module.modules():
                for k, b in m._buffers.items():
                    if b is not None and not isinstance(b, Dev):
                        held.append((m, k, b))
                        m._buffers[k] = dev(b)
        self.depth += 1
        try:
            yield self
        finally:
            self.depth -= 1
            for m, k, b in held:
                m._buffers[k] = b

    def window(self, owner, name: str, mark_batch: bool = False) -> None:
        """Count inside every call of ``owner.name`` (a module's hook or a callback's), the module's
        buffers (and with ``mark_batch`` the batch, its first argument) on the device."""
        fn = getattr(owner, name)
        counter = self

        @functools.wraps(fn)
        def wrapper(obj, *args, **kwargs):
            module = (
                obj
                if isinstance(obj, pl.LightningModule)
                else next((a for a in args if isinstance(a, pl.LightningModule)), None)
            )
            if mark_batch:
                args = (apply_to_collection(args[0], torch.Tensor, dev), *args[1:])
            with counter.opened(module):
                out = fn(obj, *args, **kwargs)
            return out

        self.mp.setattr(owner, name, wrapper)

    def step_windows(self, module_cls) -> None:
        """A training step's own code: the module's hook after the transfer (whose batch is on the
        device), its ``training_step`` and the per-step callbacks of :func:`moviessl.training.make_trainer`."""
        from moviessl import training

        self.window(module_cls, "on_after_batch_transfer", mark_batch=True)
        self.window(module_cls, "training_step")
        for cb in (training.Throughput, training.ReportProgress, training.LogAtOptimiserStep):
            for name in ("on_train_batch_start", "on_train_batch_end"):
                if name in vars(cb):
                    self.window(cb, name)

    def report(self) -> str:
        return "; ".join(f"{k}: {dict(v)}" for k, v in sorted(self.where.items()))

    def total(self, *kinds: str) -> int:
        return sum(n for k, n in self.counts.items() if not kinds or k in kinds)
