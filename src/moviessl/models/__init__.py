"""Models: the Slow-D video backbone and the TxE event contextualizer (task decoders: ``txd``)."""

from .info import model_info
from .slowd import SLOWD_INPUTS, SLOWD_PRESETS, SlowD, build_slowd, load_pyslowfast_checkpoint, speed_up
from .txd import TXD_PRESETS, TxD, build_txd
from .txe import TXE_PRESETS, TxE, build_txe

__all__ = [
    "SLOWD_PRESETS",
    "SLOWD_INPUTS",
    "SlowD",
    "build_slowd",
    "load_pyslowfast_checkpoint",
    "speed_up",
    "TXE_PRESETS",
    "TxE",
    "build_txe",
    "model_info",
    "TXD_PRESETS",
    "TxD",
    "build_txd",
]
