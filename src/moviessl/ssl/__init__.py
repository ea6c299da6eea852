"""Self-supervised pretraining (paper §3.2-3.3).

Backbone: CVRL (:mod:`.cvrl`), MoDist (:mod:`.modist`, flow in :mod:`.flow`), the supervised
baseline (:mod:`.supervised`), shared datasets / optimiser / export (:mod:`.backbone`), decoded-frame
cache (:mod:`.clipcache`), linear probe + k-NN (:mod:`.probe`), CLI (:mod:`.backbone_cli`).
Building blocks shared with MaskPred: :class:`.queue.MemoryQueue`, :mod:`.losses`, :mod:`.heads`.
Submodules are imported on use so ``import moviessl.ssl`` stays light.
"""

from .losses import info_nce_pairs, info_nce_queue
from .queue import MemoryQueue

__all__ = ["MemoryQueue", "info_nce_pairs", "info_nce_queue"]
