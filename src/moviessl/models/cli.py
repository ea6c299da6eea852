"""``moviessl model-info PRESET [--frames N] [--size S]``: one JSON object with params and GMACs."""

from __future__ import annotations

import argparse
import json

from .info import model_info


def _run(args: argparse.Namespace) -> int:
    from .slowd import native_clip

    native = native_clip(args.preset)  # the preset's own clip by default
    frames, size = native[0] if args.frames is None else args.frames, native[1] if args.size is None else args.size
    info = model_info(args.preset, frames=frames, size=size, tokens=args.tokens, in_dim=args.in_dim)
    txe = args.preset.startswith("txe")
    inputs = {"tokens": args.tokens, "in_dim": args.in_dim} if txe else {"frames": frames, "size": size}
    print(json.dumps({"preset": args.preset, **inputs, **info}))
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "model-info",
        help="parameters and multiply-adds of a model preset (JSON)",
        description="Print {params, gmacs} for one clip (Slow-D presets: slowd_r50, slowd_r18, "
        "slowd_cpu) or one token window (TxE presets: txe_paper, txe_cpu). GMACs use "
        "the fvcore/model-zoo convention; params exclude classification heads.",
    )
    p.add_argument("preset")
    p.add_argument("--frames", type=int, default=None, help="clip length (Slow-D; default: the preset's, 16)")
    p.add_argument("--size", type=int, default=None, help="crop size (Slow-D; default: the preset's, 224 or 64)")
    p.add_argument("--tokens", type=int, default=5, help="window length N (TxE)")
    p.add_argument("--in-dim", type=int, default=2048, help="event feature dim (TxE)")
    p.set_defaults(func=_run)
