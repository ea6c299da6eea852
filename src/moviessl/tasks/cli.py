"""``moviessl finetune <benchmark> ...``: one subcommand per benchmark package under :mod:`moviessl.tasks`."""

from __future__ import annotations

import importlib

BENCHMARKS = ("moviessl.tasks.vidsitu.cli", "moviessl.tasks.lvu.cli")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "finetune",
        help="train and evaluate task heads on benchmark annotations",
        description="Fine-tune task models over several seeds and score them with the official metrics.",
    )
    datasets = p.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    for name in BENCHMARKS:
        importlib.import_module(name).add_parser(datasets)
