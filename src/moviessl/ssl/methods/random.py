"""Random initialisation: the seeded, untrained Slow-D every probe and table compares against.

Nothing is trained; ``pretrain-backbone --method random`` exports the initial weights (the same
seed gives the same weights).
"""

from __future__ import annotations

from ..base import BackboneModule
from ..registry import register_method


@register_method("random")
class RandomInit(BackboneModule):
    views = None
    step_cost = 0.0  # no training
    setup_cost_s = 55.0  # the probe; the first backbone job also fills the frame cache
