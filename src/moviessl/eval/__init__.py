"""Official-semantics benchmark metrics (VidSitu), LEA, and mean ± standard error over runs.

from moviessl.eval import evaluate, evaluate_files, load_submission, mean_se, summarize
"""

from .lea import LEAScore, lea_prf
from .stats import format_table, mean_se, summarize
from .submission import load_submission
from .vidsitu import METRIC_KEYS, evaluate, evaluate_files

__all__ = [
    "evaluate",
    "evaluate_files",
    "load_submission",
    "METRIC_KEYS",
    "mean_se",
    "summarize",
    "format_table",
    "LEAScore",
    "lea_prf",
]
