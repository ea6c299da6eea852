"""VidSitu tasks: verb prediction, semantic roles (TxD), event relations; ``moviessl finetune vidsitu``.

``run_finetune(task, data_root, features=..., contextualizer=..., seeds=..., out=..., cfg=...)`` is the
Python entry point (see :mod:`moviessl.tasks.runner`). Names are imported lazily so that
``moviessl --help`` does not pay for Lightning.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "run_finetune": "runner", "resolve_config": "runner", "TASKS": "runner",
    "SRLTokenizer": "tokenizer", "ROLE_TAGS": "tokenizer",
    "VerbClassifier": "verb", "build_verb_model": "verb",
    "SRLDecoder": "srl", "build_srl_model": "srl",
    "RelationClassifier": "relation", "build_relation_model": "relation", "LABELS": "relation",
    "EventEncoder": "encoder", "TaskModule": "module",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
