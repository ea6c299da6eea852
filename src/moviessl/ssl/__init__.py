"""Clip-level self-supervised pretraining of the Slow-D backbone (paper §3.2).

- :mod:`.methods` -- one file per method: CVRL, MoDist, the supervised baseline, random init;
  :mod:`.registry` names them (``list_methods``, ``get_method``, ``register_method``).
- :mod:`.base` -- the LightningModule they share; :mod:`.data` -- clip dataset and pair samplers;
  :mod:`.augment` -- the augmentation recipes; :mod:`.flow` -- optical flow for MoDist;
  :mod:`.clipcache` -- decoded-frame cache; :mod:`.probe` -- linear probe / k-NN.
- Building blocks (also used by event-level pretraining, :mod:`moviessl.context`):
  :class:`.queue.MemoryQueue` and :mod:`.losses`.
- :func:`.pretrain.pretrain` -- the library call behind ``moviessl pretrain-backbone`` (:mod:`.cli`).
"""

from .losses import info_nce_pairs, info_nce_queue
from .queue import MemoryQueue
from .registry import get_method, list_methods, register_method

__all__ = ["MemoryQueue", "info_nce_pairs", "info_nce_queue", "get_method", "list_methods", "register_method"]
