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
    relative_cost = 0.1
