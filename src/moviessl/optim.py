"""Optimisers and the learning-rate schedule shared by every LightningModule.

- :func:`param_groups`: the one weight-decay split (decay on weight matrices / kernels; none on
  biases, norms and whatever else ``no_decay`` names, e.g. TxE's position table and [MASK] token).
- :class:`LARS`: SimCLR / CVRL's large-batch optimiser.
- :func:`warmup_schedule`: linear warm-up, then cosine or linear decay to ``final_frac`` (or constant), per
  step; :func:`warmup_steps` turns a warm-up fraction into steps the same way everywhere.
- :func:`make_optimizer`: ``sgd`` | ``lars`` | ``adamw`` over such groups, with the schedule as a
  Lightning ``lr_scheduler`` config.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from .errors import BadInputError

NoDecay = Callable[[str, nn.Parameter], bool]
OPTIMIZERS = ("sgd", "lars", "adamw")  # make_optimizer's names (any case)


def no_decay_for_vectors(name: str, p: nn.Parameter) -> bool:
    """Biases and norm parameters (anything with at most one dimension)."""
    return p.ndim <= 1


def param_groups(
    named_params: Iterable[tuple[str, nn.Parameter]],
    weight_decay: float,
    no_decay: NoDecay = no_decay_for_vectors,
    **extra,
) -> list[dict]:
    """``[decayed, not decayed]`` parameter groups (trainable parameters only); ``extra`` keys are
    copied into both groups (e.g. a per-group ``lr``)."""
    decay, rest = [], []
    for name, p in named_params:
        if p.requires_grad:
            (rest if no_decay(name, p) else decay).append(p)
    return [
        dict(params=decay, weight_decay=weight_decay, lars=True, **extra),
        dict(params=rest, weight_decay=0.0, lars=False, **extra),
    ]


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise trust ratio (You et al. 2017), SimCLR/CVRL's large-batch optimiser.

    Groups with ``lars=False`` (biases, norms) get plain SGD-momentum and no weight decay."""

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.001):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars=True))

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if g["weight_decay"]:
                    d = d.add(p, alpha=g["weight_decay"])
                if g["lars"]:
                    pn, dn = torch.linalg.vector_norm(p), torch.linalg.vector_norm(d)
                    trust = torch.where((pn > 0) & (dn > 0), g["eta"] * pn / dn, torch.ones_like(pn))
                    d = d * trust
                st = self.state[p]
                buf = st.get("momentum_buffer")
                if buf is None:
                    buf = st["momentum_buffer"] = d.clone()
                else:
                    buf.mul_(g["momentum"]).add_(d)
                p.add_(buf, alpha=-g["lr"])
        return loss


def warmup_steps(frac: float, total: int) -> int:
    """Warm-up length for a fraction of ``total`` steps: at least one step unless ``frac`` is 0."""
    return 0 if frac <= 0 else max(1, int(round(frac * total)))


def warmup_schedule(
    step: int,
    total: int,
    warmup: int,
    final_frac: float = 0.0,
    decay: str = "cosine",
    start_frac: float = 0.0,
    cosine_over_warmup: bool = False,
) -> float:
    """LR multiplier at ``step``: linear warm-up to 1 over ``warmup`` steps, then ``decay``:
    ``cosine`` to ``final_frac`` at ``total`` (SGDR, Loshchilov & Hutter 2017), ``linear`` to
    ``final_frac`` at ``total`` (BERT's / HF's ``get_linear_schedule_with_warmup``) or ``constant``.

    ``cosine_over_warmup``: the cosine spans all ``total`` steps and the warm-up rises to its value at
    step ``warmup``, PySlowFast's ``get_lr_at_epoch`` (``SOLVER.COSINE_AFTER_WARMUP`` False, its
    default); else the cosine starts after the warm-up (SimCLR / CVRL). ``start_frac`` > 0: the
    warm-up starts at that share of the peak (PySlowFast's ``WARMUP_START_LR`` / ``BASE_LR``), else it
    climbs from 1 / ``warmup``."""

    def decayed(t: float) -> float:
        if decay == "constant":
            return 1.0
        if decay == "linear":
            return final_frac + (1 - final_frac) * (1 - t)
        return final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * t))

    whole = cosine_over_warmup and decay == "cosine"
    if warmup > 0 and step < warmup:
        end = decayed(min(1.0, warmup / max(1, total))) if whole else 1.0
        if start_frac > 0:
            return start_frac + (end - start_frac) * step / warmup
        return end * (step + 1) / warmup
    if whole:
        return decayed(min(1.0, step / max(1, total)))
    return decayed(min(1.0, (step - warmup) / max(1, total - warmup)))


def scaled_lr(lr: float, global_batch: int, ref_batch: int | None) -> float:
    """Linear scaling (Goyal et al. 2017): ``lr`` is given for ``ref_batch`` (None: no scaling)."""
    return lr * global_batch / float(ref_batch or global_batch)


def make_optimizer(
    groups: list[dict],
    name: str,
    lr: float,
    *,
    momentum: float = 0.9,
    eta: float = 0.001,
    betas: Sequence[float] | None = None,
    nesterov: bool = False,
) -> torch.optim.Optimizer:
    """``sgd`` (momentum; Nesterov's where ``nesterov``, as PySlowFast's SGD), ``lars`` or ``adamw``
    over :func:`param_groups` groups."""
    if nesterov and name.lower() != "sgd":  # it would be ignored
        raise BadInputError("optim.nesterov", f"only optim.name=sgd takes Nesterov momentum, not {name!r}")
    name = name.lower()
    groups = [g for g in groups if g["params"]]
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum, eta=eta)
    groups = [{k: v for k, v in g.items() if k != "lars"} for g in groups]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=bool(nesterov))
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, **({"betas": tuple(betas)} if betas is not None else {}))
    raise BadInputError("optim.name", f"unknown optimiser {name!r} ({'|'.join(OPTIMIZERS)})")


def lr_scheduler(
    opt: torch.optim.Optimizer,
    total: int,
    warmup: int,
    final_frac: float = 0.0,
    decay: str = "cosine",
    start_frac: float = 0.0,
    cosine_over_warmup: bool = False,
) -> dict:
    """A per-step :func:`warmup_schedule` as Lightning's ``lr_scheduler`` config."""
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: warmup_schedule(s, total, warmup, final_frac, decay, start_frac, cosine_over_warmup)
    )
    return {"scheduler": sched, "interval": "step", "frequency": 1}
