"""Parameter and multiply-add counts of a model preset (``moviessl model-info``).

``gmacs`` follows the fvcore convention of the PySlowFast / PyTorchVideo model zoos, so numbers are
comparable with published tables: convolution and matmul multiply-adds (``torch.utils.flop_counter``
FLOPs / 2) plus, as fvcore's ``batchnorm_flop_jit`` in eval mode, 2 per BatchNorm output element.
``gmacs_flop_counter`` is the flop-counter part alone.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..errors import BadInputError
from .slowd import SLOWD_PRESETS, build_slowd, native_clip
from .txe import TXE_PRESETS, build_txe


def _count(model: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    bn_elems = [0]

    def hook(m, i, o):
        bn_elems[0] += o.numel()

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    fc = FlopCounterMode(display=False)
    with torch.no_grad(), fc:
        model(x)
    for h in hooks:
        h.remove()
    macs = fc.get_total_flops() / 2
    return (macs + 2 * bn_elems[0]) / 1e9, macs / 1e9


def model_info(
    preset: str, frames: int | None = None, size: int | None = None, tokens: int = 5, in_dim: int = 2048
) -> dict:
    """``{"params", "gmacs", "gmacs_flop_counter"}`` for one clip of ``frames`` x ``size``² (Slow-D
    presets, by default the preset's own clip, :func:`~.slowd.native_clip`; params exclude any
    classification head) or one window of ``tokens`` event features (TxE presets; ``frames``/``size``
    unused). Counted on the meta device: nothing is allocated."""
    if preset in SLOWD_PRESETS:
        native = native_clip(preset)
        frames, size = native[0] if frames is None else frames, native[1] if size is None else size
        if frames < 1 or size < 8:
            raise BadInputError(f"{frames}x{size}", "clip too small for a Slow-D (need >= 1 frame, >= 8 px)")
        with torch.device("meta"):
            model = build_slowd(preset).eval()
            x = torch.empty(1, model.in_channels, frames, size, size)
        params = sum(p.numel() for p in model.backbone_parameters())
    elif preset in TXE_PRESETS:
        # a window of no tokens counted 0 GMACs and a negative count or width was a traceback from
        # the meta-device allocation; more than max_len tokens is refused by the TxE itself
        if tokens < 1 or in_dim < 1:
            raise BadInputError(f"{tokens}x{in_dim}", "window too small for a TxE (need >= 1 token of >= 1 dims)")
        with torch.device("meta"):
            model = build_txe(preset, in_dim=in_dim).eval()
            x = torch.empty(1, tokens, in_dim)
        params = sum(p.numel() for p in model.parameters())
    else:
        raise BadInputError(preset, f"unknown model preset; choose from {', '.join([*SLOWD_PRESETS, *TXE_PRESETS])}")
    gmacs, gmacs_fc = _count(model, x)
    return {"params": int(params), "gmacs": round(gmacs, 4), "gmacs_flop_counter": round(gmacs_fc, 4)}
