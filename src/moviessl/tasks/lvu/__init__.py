"""LVU (Wu & Krähenbühl, CVPR 2021): nine long-form video tasks with the Object Transformer and
Xiao et al.'s OT++ (instance + contextualised scene tokens).

:data:`TASKS` registers the nine tasks (:mod:`.task`); :func:`.runner.run_finetune` runs K seeds of
one (``moviessl finetune lvu``, :mod:`.cli`); :func:`.table.run_lvu_table` the paper's Table 5
analogue on SynthMovies.
"""

from .task import TASKS, ClassificationTask, LVUTask, RegressionTask

__all__ = ["TASKS", "LVUTask", "ClassificationTask", "RegressionTask"]
