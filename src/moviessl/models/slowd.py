"""Slow-D: the Slow pathway of SlowFast as a plain 3D ResNet, with the paper's dense-input stem.

Slow-D (paper §3.1, following CVRL) is Slow-only R50 with (1) a 16x4 input and a stem conv of
temporal kernel 5 and (2) a temporal stride of 2 in that conv, so res2-res5 see 8 frames. We put the
stride in the conv (CVRL's R3D-50); the pool keeps temporal stride 1. Reference counts
(fvcore's convention, 1 multiply-add = 1 "FLOP", as the PySlowFast / PyTorchVideo model zoos): 31.67 M backbone
parameters, 45.70 GMACs at 16x224².

Layout mirrors PySlowFast's ``ResNet`` so its checkpoints map one-to-one
(:func:`load_pyslowfast_checkpoint`)::

    stem.{conv,bn}                      <- s1.pathway0_stem.{conv,bn}
    res{2..5}.{i}.{a,b,c}[_bn]          <- s{2..5}.pathway0_res{i}.branch2.{a,b,c}[_bn]
    res{2..5}.0.branch1[_bn]            <- s{2..5}.pathway0_res0.branch1[_bn]
    head                                <- head.projection
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..errors import BadInputError
from .txe import check_sizes

log = logging.getLogger(__name__)

# One row per preset. Widths are stage *output* widths; bottleneck inner width = width // 4.
SLOWD_PRESETS: dict[str, dict[str, Any]] = {
    # The paper's backbone: Slow R50 + 5x7x7 stem with temporal stride 2 (CVRL-consistent row).
    "slowd_r50": dict(
        block="bottleneck",
        layers=(3, 4, 6, 3),
        widths=(256, 512, 1024, 2048),
        stem_width=64,
        stem_temporal_kernel=5,
        stem_temporal_stride=2,
        stem_spatial_kernel=7,
        stage_temporal_kernels=(1, 1, 3, 3),
        in_channels=3,
        width_factor=1.0,
        num_classes=None,
        dropout=0.5,
    ),
    # Depth-18 basic-block variant (conv "a" is Tx3x3, conv "b" 1x3x3, as PySlowFast's BasicTransform).
    "slowd_r18": dict(
        block="basic",
        layers=(2, 2, 2, 2),
        widths=(64, 128, 256, 512),
        stem_width=64,
        stem_temporal_kernel=5,
        stem_temporal_stride=2,
        stem_spatial_kernel=7,
        stage_temporal_kernels=(1, 1, 3, 3),
        in_channels=3,
        width_factor=1.0,
        num_classes=None,
        dropout=0.5,
    ),
    # Tiny: trains in minutes on 2 CPU cores on 16x64² clips. Same topology (stem temporal stride 2,
    # kernels 1,1,3,3, 32x spatial reduction) so code paths and shapes match the paper model.
    # 5x5 stem: a 7x7 kernel over a 64² frame costs more than the rest of the tiny net.
    "slowd_cpu": dict(
        block="basic",
        layers=(1, 1, 1, 1),
        widths=(32, 64, 128, 256),
        stem_width=16,
        stem_temporal_kernel=5,
        stem_temporal_stride=2,
        stem_spatial_kernel=5,
        stage_temporal_kernels=(1, 1, 3, 3),
        in_channels=3,
        width_factor=1.0,
        num_classes=None,
        dropout=0.0,
    ),
}

# Native clip of each preset (frames, stride, crop); used by model-info and the benchmark.
SLOWD_INPUTS: dict[str, dict[str, int]] = {
    "slowd_r50": dict(num_frames=16, stride=4, crop=224),
    "slowd_r18": dict(num_frames=16, stride=4, crop=224),
    "slowd_cpu": dict(num_frames=16, stride=4, crop=64),
}


def native_clip(preset: str) -> tuple[int, int]:
    """(frames, crop) of ``preset``'s own clip (16 x 224 for a preset without an entry)."""
    clip = SLOWD_INPUTS.get(preset, {"num_frames": 16, "crop": 224})
    return int(clip["num_frames"]), int(clip["crop"])


def _bn(c: int) -> nn.BatchNorm3d:
    return nn.BatchNorm3d(c, eps=1e-5, momentum=0.1)


def _projection_shortcut(cin: int, cout: int, stride: int) -> tuple[nn.Module | None, nn.Module | None]:
    """PySlowFast's ``branch1``: a 1x1x1 conv (+BN) with the spatial stride where shapes change."""
    if cin == cout and stride == 1:
        return None, None
    return nn.Conv3d(cin, cout, 1, stride=(1, stride, stride), bias=False), _bn(cout)


def _skip(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x if block.branch1 is None else block.branch1_bn(block.branch1(x))


class Bottleneck(nn.Module):
    """Tx1x1 -> 1x3x3 (spatial stride) -> 1x1x1, projection shortcut in a stage's first block."""

    def __init__(self, cin: int, cout: int, inner: int, kt: int, stride: int):
        super().__init__()
        self.a = nn.Conv3d(cin, inner, (kt, 1, 1), padding=(kt // 2, 0, 0), bias=False)
        self.a_bn = _bn(inner)
        self.b = nn.Conv3d(inner, inner, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False)
        self.b_bn = _bn(inner)
        self.c = nn.Conv3d(inner, cout, 1, bias=False)
        self.c_bn = _bn(cout)
        self.c_bn.zero_init = True  # each block starts as identity (ZERO_INIT_FINAL_BN)
        self.branch1, self.branch1_bn = _projection_shortcut(cin, cout, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = _skip(self, x)
        y = self.relu(self.a_bn(self.a(x)))
        y = self.relu(self.b_bn(self.b(y)))
        y = self.c_bn(self.c(y))
        return self.relu(y + skip)


class BasicBlock(nn.Module):
    """Tx3x3 (spatial stride) -> 1x3x3, as PySlowFast's ``BasicTransform``."""

    def __init__(self, cin: int, cout: int, inner: int, kt: int, stride: int):
        super().__init__()
        self.a = nn.Conv3d(cin, cout, (kt, 3, 3), stride=(1, stride, stride), padding=(kt // 2, 1, 1), bias=False)
        self.a_bn = _bn(cout)
        self.b = nn.Conv3d(cout, cout, (1, 3, 3), padding=(0, 1, 1), bias=False)
        self.b_bn = _bn(cout)
        self.b_bn.zero_init = True
        self.branch1, self.branch1_bn = _projection_shortcut(cin, cout, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = _skip(self, x)
        y = self.relu(self.a_bn(self.a(x)))
        y = self.b_bn(self.b(y))
        return self.relu(y + skip)


class Stem(nn.Module):
    def __init__(self, cin: int, cout: int, kt: int, st: int, ks: int):
        super().__init__()
        self.conv = nn.Conv3d(
            cin, cout, (kt, ks, ks), stride=(st, 2, 2), padding=(kt // 2, ks // 2, ks // 2), bias=False
        )
        self.bn = _bn(cout)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.relu(self.bn(self.conv(x))))


class SlowD(nn.Module):
    """3D ResNet (Slow pathway). ``forward(x (B,C,T,H,W)) -> (B, out_dim)`` pooled features, or
    ``(B, num_classes)`` logits when built with a head (dropout + linear on the pooled feature)."""

    def __init__(
        self,
        block: str = "bottleneck",
        layers: Sequence[int] = (3, 4, 6, 3),
        widths: Sequence[int] = (256, 512, 1024, 2048),
        stem_width: int = 64,
        stem_temporal_kernel: int = 5,
        stem_temporal_stride: int = 2,
        stem_spatial_kernel: int = 7,
        stage_temporal_kernels: Sequence[int] = (1, 1, 3, 3),
        in_channels: int = 3,
        width_factor: float = 1.0,
        num_classes: int | None = None,
        dropout: float = 0.5,
    ):
        super().__init__()
        if block not in ("bottleneck", "basic"):
            raise BadInputError("model.block", f"unknown block type {block!r} (bottleneck|basic)")
        if len(layers) != 4 or len(widths) != 4 or len(stage_temporal_kernels) != 4:
            raise BadInputError("model", "layers, widths and stage_temporal_kernels need 4 entries (res2..res5)")
        scale = lambda c: max(1, int(round(c * width_factor)))  # noqa: E731
        Block = Bottleneck if block == "bottleneck" else BasicBlock
        expansion = 4 if block == "bottleneck" else 1
        self.in_channels = in_channels
        self.stem = Stem(
            in_channels, scale(stem_width), stem_temporal_kernel, stem_temporal_stride, stem_spatial_kernel
        )
        cin = scale(stem_width)
        for s, (n, w, kt) in enumerate(zip(layers, widths, stage_temporal_kernels)):
            cout = scale(w)
            blocks = []
            for i in range(n):
                stride = 2 if (s > 0 and i == 0) else 1  # res2 is already at stride 4 after the stem pool
                blocks.append(Block(cin, cout, max(1, cout // expansion), int(kt), stride))
                cin = cout
            self.add_module(f"res{s + 2}", nn.Sequential(*blocks))
        self.out_dim = cin
        self.num_classes = num_classes or 0
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.head_drop = nn.Dropout(dropout) if self.num_classes else nn.Identity()
        self.head = nn.Linear(cin, self.num_classes) if self.num_classes else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        # PySlowFast init: MSRA fill for convs, BN gamma 1 (0 for each block's last BN), head N(0, 0.01).
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.constant_(m.weight, 0.0 if getattr(m, "zero_init", False) else 1.0)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """(B,C,T,H,W) -> res5 map (B, out_dim, T', H', W'). Accepts PySlowFast's one-element list."""
        if isinstance(x, (list, tuple)):
            x = x[0]
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise BadInputError("model input", f"expected (B,{self.in_channels},T,H,W), got {tuple(x.shape)}")
        x = self.stem(x)
        return self.res5(self.res4(self.res3(self.res2(x))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pool(x).flatten(1)
        return x if pre_logits else self.head(self.head_drop(x))

    def forward(self, x: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def backbone_parameters(self):
        """Parameters without the classification head (what ``params`` counts)."""
        return (p for n, p in self.named_parameters() if not n.startswith("head."))


def build_slowd(preset: str = "slowd_r50", **overrides: Any) -> SlowD:
    """Build a Slow-D from :data:`SLOWD_PRESETS`; any preset key can be overridden, e.g.
    ``build_slowd("slowd_r50", width_factor=1/8, stage_temporal_kernels=(1,1,1,1))`` for MoDist's
    ``video_flow`` motion network."""
    if preset not in SLOWD_PRESETS:
        raise BadInputError(preset, f"unknown Slow-D preset; choose from {', '.join(SLOWD_PRESETS)}")
    cfg = dict(SLOWD_PRESETS[preset])
    unknown = sorted(set(overrides) - set(cfg))
    if unknown:
        raise BadInputError(f"model.{unknown[0]}", f"unknown Slow-D option; known: {', '.join(cfg)}")
    cfg.update(overrides)
    stem = ("stem_width", "in_channels", "stem_temporal_kernel", "stem_temporal_stride", "stem_spatial_kernel")
    check_sizes(cfg, stem, "model.")
    for k in ("layers", "widths", "stage_temporal_kernels"):  # int() truncated 2.5 and traced back on "a"
        v = cfg[k]
        items = list(v) if not isinstance(v, (str, bytes)) and hasattr(v, "__iter__") else None
        if items is None or any(isinstance(x, bool) or not isinstance(x, int) for x in items):
            raise BadInputError(f"model.{k}", f"need a list of whole numbers, got {v!r}")
        cfg[k] = tuple(items)
    wf = cfg["width_factor"]  # 0 or less scaled every width to 1 channel without a word
    if isinstance(wf, bool) or not isinstance(wf, (int, float)) or not wf > 0:
        raise BadInputError("model.width_factor", f"must be a number > 0, got {wf!r}")
    # an even stage kernel (padding kt // 2) makes the branch one frame longer than its shortcut
    kts, ws, ns = cfg["stage_temporal_kernels"], cfg["widths"], cfg["layers"]
    if len(kts) == 4 and any(k < 1 or k % 2 == 0 for k in kts):
        raise BadInputError("model.stage_temporal_kernels", f"need odd kernels >= 1 (res2..res5), got {list(kts)}")
    if any(w < 1 for w in ws):
        raise BadInputError("model.widths", f"need widths >= 1, got {list(ws)}")
    if any(n < 0 for n in ns):  # range() of a negative count built a stage without blocks
        raise BadInputError("model.layers", f"need block counts >= 0, got {list(ns)}")
    if cfg["num_classes"] is not None and (isinstance(cfg["num_classes"], bool) or cfg["num_classes"] < 0):
        raise BadInputError("model.num_classes", f"must be >= 0, got {cfg['num_classes']!r}")
    return SlowD(**cfg)


def _to_channels_last(module: nn.Module, args: tuple) -> tuple:
    x = args[0] if args else None
    if isinstance(x, torch.Tensor) and x.dim() == 5:
        return (x.contiguous(memory_format=torch.channels_last_3d), *args[1:])
    return args


def speed_up(model: nn.Module, *, channels_last: bool = False, compile: bool = False) -> nn.Module:
    """Execution options that change no weight and no state-dict name (checkpoints stay loadable
    either way); results agree with the plain model to floating-point rounding, not bit for bit.

    ``channels_last``: weights and input in NTHWC (``torch.channels_last_3d``), the layout oneDNN's
    and cuDNN's 3D convolutions run natively; without it every conv reorders its input and output.
    ``compile``: ``nn.Module.compile`` (TorchInductor) fuses BN / ReLU / adds into fewer memory passes;
    the first steps pay the compilation. In place; returns ``model``."""
    if channels_last:
        model.to(memory_format=torch.channels_last_3d)  # 5-D conv weights only; BN / linear stay as they are
        model.register_forward_pre_hook(_to_channels_last)
    if compile:
        model.compile()
    return model


# --------------------------------------------------------------------------------------------
# PySlowFast checkpoints

_PSF_RULES = (
    (re.compile(r"^s1\.pathway0_stem\.(conv|bn)\.(.+)$"), r"stem.\1.\2"),
    (re.compile(r"^s([2-5])\.pathway0_res(\d+)\.branch2\.([abc](?:_bn)?)\.(.+)$"), r"res\1.\2.\3.\4"),
    (re.compile(r"^s([2-5])\.pathway0_res(\d+)\.(branch1(?:_bn)?)\.(.+)$"), r"res\1.\2.\3.\4"),
    (re.compile(r"^head\.projection\.(.+)$"), r"head.\1"),
)


def pyslowfast_to_moviessl(name: str) -> str:
    """Map one PySlowFast Slow-pathway parameter name to ours (unknown names pass through)."""
    for pat, rep in _PSF_RULES:
        if pat.match(name):
            return pat.sub(rep, name)
    return name


def _read_state(path: str | os.PathLike | Mapping, allow_pickle: bool) -> Mapping[str, torch.Tensor]:
    if isinstance(path, Mapping):
        obj = path
    else:
        if not os.path.isfile(path):
            raise BadInputError(path, "checkpoint not found")
        if str(path).endswith(".pkl"):
            raise BadInputError(
                path, "Caffe2 .pkl checkpoints are not supported; convert to .pyth with PySlowFast first"
            )
        from ..checkpoint import load_file

        try:
            # .pyth holds only tensors, dicts, ints and the cfg string, so the safe loader suffices;
            # one holding more is refused as every checkpoint is, naming MOVIESSL_TRUST_CHECKPOINTS
            # (model.init reaches here from the command line, where no allow_pickle can be given)
            obj = load_file(path, trust=allow_pickle)
        except BadInputError as e:  # this function's Python opt-in is allow_pickle
            raise BadInputError(e.path, e.cause.replace("trust=True", "allow_pickle=True")) from None
        except Exception as e:
            raise BadInputError(path, f"not a readable PyTorch checkpoint ({type(e).__name__})") from None
    if isinstance(obj, Mapping):
        for key in ("model_state", "state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BadInputError(
            path if not isinstance(path, Mapping) else "state dict",
            "no weights found (expected a 'model_state' dict of tensors)",
        )
    return obj


def inflate_temporal(w2d: torch.Tensor, t: int, mode: str = "center") -> torch.Tensor:
    """(O,I,1,H,W) -> (O,I,t,H,W). ``center``: the 2D kernel at the centre tap, zeros elsewhere (the
    inflated net computes exactly what the 1-frame net did). ``spread``: repeat and divide by t
    (PySlowFast's 2D->3D inflation: same response on a static clip)."""
    if mode == "center":
        w = w2d.new_zeros(w2d.shape[:2] + (t,) + w2d.shape[3:])
        w[:, :, t // 2] = w2d[:, :, 0]
        return w
    if mode == "spread":
        return w2d.repeat(1, 1, t, 1, 1) / t
    raise BadInputError("inflate", f"unknown inflation {mode!r} (center|spread)")


def load_pyslowfast_checkpoint(
    model: nn.Module,
    path: str | os.PathLike | Mapping,
    inflate: str = "center",
    strip_prefixes: Sequence[str] = ("module.", "backbone."),
    allow_pickle: bool = False,
) -> dict[str, list]:
    """Load a PySlowFast Slow-pathway checkpoint (``.pyth``, weights under ``model_state``) into a
    :class:`SlowD`. As PySlowFast's loader, keeps only name+shape matches; unlike it, conv weights
    with temporal kernel 1 going into a kernel-t conv (Slow R50's 1x7x7 stem -> Slow-D's 5x7x7) are
    inflated with ``inflate`` instead of being silently skipped.

    Returns ``dict(loaded, missing, unexpected, mismatched, inflated)``: model keys loaded; model keys
    not loaded; checkpoint keys with no model counterpart; ``(key, ckpt_shape, model_shape)`` for
    same-name shape mismatches (not loaded); model keys filled by inflation (also in ``loaded``).
    """
    src = _read_state(path, allow_pickle)
    target = model.state_dict()
    new: dict[str, torch.Tensor] = {}
    unexpected, mismatched, inflated = [], [], []
    for name, w in src.items():
        for p in strip_prefixes:
            if name.startswith(p):
                name = name[len(p) :]
        key = pyslowfast_to_moviessl(name)
        if key not in target:
            unexpected.append(name)
            continue
        want = target[key].shape
        if w.shape == want:
            new[key] = w
        elif w.dim() == 5 and w.shape[2] == 1 and w.shape[:2] == want[:2] and w.shape[3:] == want[3:]:
            new[key] = inflate_temporal(w, want[2], inflate)
            inflated.append(key)
        else:
            mismatched.append((key, tuple(w.shape), tuple(want)))
    model.load_state_dict(new, strict=False)
    loaded = [k for k in target if k in new]
    missing = [k for k in target if k not in new]
    log.info(
        "PySlowFast checkpoint: %d loaded (%d inflated), %d missing, %d unexpected, %d shape mismatches",
        len(loaded),
        len(inflated),
        len(missing),
        len(unexpected),
        len(mismatched),
    )
    return dict(loaded=loaded, missing=missing, unexpected=unexpected, mismatched=mismatched, inflated=inflated)
