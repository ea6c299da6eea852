"""VidSitu (Sadhu et al., CVPR 2021): verb prediction, semantic roles (TxD), event relations.

Each task is a :class:`~moviessl.tasks.base.TaskSpec` plus VidSitu's own part -- targets from the
annotation records, submission entries in VidSitu's format, a fallback entry for a segment without
inputs -- registered in :data:`TASKS`. :func:`.runner.run_finetune` runs K seeds of one of them
(``moviessl finetune vidsitu``, :mod:`.cli`).
"""

from .relation import RelationTask
from .srl import SRLTask
from .verb import VerbTask

TASKS = {t.name: t for t in (VerbTask, SRLTask, RelationTask)}

__all__ = ["TASKS", "VerbTask", "SRLTask", "RelationTask"]
