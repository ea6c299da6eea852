"""Schema of the backbone stage's config (``moviessl/configs/backbone/{paper,cpu}.yaml``).

Types and meaning only; the values live in the presets (see :mod:`moviessl.config`). A method's
own settings are its section (``cvrl``, ``modist`` + ``flow``, ``supervised``), named by the
method's ``config_sections``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from ..config import TrainerConfig
from ..errors import BadInputError


@dataclass
class ModelConfig:
    preset: str  # a Slow-D preset (moviessl.models.slowd.SLOWD_PRESETS)
    overrides: dict[str, Any]  # keyword overrides for build_slowd (free-form)
    sync_bn: bool  # SyncBatchNorm across replicas (CVRL; accelerators only)
    channels_last: bool = False  # NTHWC weights and clips (models.slowd.speed_up); no result changes
    compile: bool = False  # torch.compile the Slow-D nets (models.slowd.speed_up)
    init: Optional[str] = None  # start from these weights: a run's last.ckpt, a backbone model.pt or a .pyth


def check_min_max(key: str, v: Any, low: float, high: float = float("inf"), low_open: bool = False) -> None:
    """One line naming ``key`` unless ``v`` is two numbers ``[min, max]`` with ``low <= min <= max <= high``
    (``low < min`` where ``low_open``): the samplers read the pair as a range without checking it,
    and a reversed or out-of-range pair was silently another distribution, a NaN or a traceback at
    the first step (docs/design.md, the ssl section)."""
    ok = isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v)
    if ok:
        lo, hi = (float(x) for x in v)
        ok = (lo > low if low_open else lo >= low) and lo <= hi <= high
    if not ok:
        bound = f"{low} {'<' if low_open else '<='} min <= max" + (f" <= {high}" if high != float("inf") else "")
        raise BadInputError(key, f"{v} must be two numbers [min, max] with {bound}")


@dataclass
class DataConfig:
    num_frames: int  # T frames per clip ...
    stride: int  # ... s apart on the 30-fps timeline (Slow-D: 16 x 4)
    short_side: int  # frames resized to this short side ...
    crop: int  # network input (random resized crop output / probe centre crop)
    frame_crop: str  # ... square: a random square, then the crop on the batch; full: the crop on the whole frame
    batch_size: int  # videos per device per step
    num_workers: int
    frame_cache: bool  # decode each video once and memory-map it (small data sets)
    cache_dir: Optional[str]  # None: <clip list folder>/.moviessl_cache, else OUT/cache
    pair_sampler: Optional[str]  # cvrl | shift; None: the method's own
    power: float  # CVRL sampler: power of the decreasing gap density (1 = linear)
    shift_s: list[float]  # MoDist: [min, max] start-to-start shift of a positive pair (s)

    def __post_init__(self):
        check_min_max("data.shift_s", self.shift_s, 0.0)


@dataclass
class AugmentConfig:
    """CVRL's temporally consistent augmentation (Qian et al. 2021, §3.2); blur / solarise
    probabilities are per view and set by the method."""

    area: list[float]
    aspect: list[float]
    crop_sampler: str  # torchvision (area uniform, aspect log-uniform) | tf (CVRL's code: height and aspect uniform)
    op_style: str  # torchvision | tf (CVRL's code: contrast by channel means, HSV saturation, zero-padded blur)
    flip_p: float
    jitter_p: float
    brightness: float
    contrast: float
    saturation: float
    hue: float
    gray_p: float
    blur_sigma: list[float]

    def __post_init__(self):
        check_min_max("augment.area", self.area, 0.0, 1.0, low_open=True)
        check_min_max("augment.aspect", self.aspect, 0.0, low_open=True)
        check_min_max("augment.blur_sigma", self.blur_sigma, 0.0, low_open=True)  # sigma 0: a NaN kernel


@dataclass
class CVRLHeadConfig:
    hidden_dim: int
    out_dim: int
    num_hidden: int
    out_bn: bool


@dataclass
class CVRLConfig:
    tau: float
    head: CVRLHeadConfig
    intra_neg: list[str]  # [] = CVRL as published; IIC intra-video negatives otherwise


@dataclass
class MoDistHeadConfig:
    hidden_dim: int
    out_dim: int
    bn: bool


@dataclass
class FlowNetConfig:
    preset: Optional[str]  # None: the visual backbone's preset
    width_factor: float  # MoDist: 1/8 of the visual width
    overrides: dict[str, Any]


@dataclass
class MoDistConfig:
    tau: float
    momentum: float  # key encoders' momentum
    queue_size: int  # K per modality
    head: MoDistHeadConfig
    flow_net: FlowNetConfig
    align_crops: bool  # a clip's flow is cropped and flipped like its RGB view
    flow_crop: int  # flow network input size
    flow_input: str  # centred: (v/255 - 0.5)/0.25 | maclr: v/255 (MaCLR's flow mean 0, std 1)
    w_visual: float
    w_cross: float
    w_flow: float


@dataclass
class FlowConfig:
    algorithm: str  # dis | farneback
    dis_preset: str  # ultrafast | fast | medium
    short_side: int  # flow computed and stored at this short side
    bound: float  # px at a 256 short side, scaled
    mode: str  # raw | edges
    num_frames: int
    stride: int
    store: str = "npy"  # npy | png (lossless) | jpeg: how the flow cache stores it (ssl.flow)
    jpeg_quality: int = 95  # for store: jpeg

    def __post_init__(self):  # at config load, not when the flow cache is first opened
        self.params()

    def params(self):
        """The flow cache's :class:`~moviessl.ssl.flow.FlowParams` (which check their values)."""
        from .flow import FlowParams

        return FlowParams(
            algorithm=self.algorithm,
            short_side=self.short_side,
            bound=self.bound,
            mode=self.mode,
            dis_preset=self.dis_preset,
            store=self.store,
            jpeg_quality=self.jpeg_quality,
        )


@dataclass
class SupervisedConfig:
    dropout: float
    label_smoothing: float
    blur_p: float


@dataclass
class OptimConfig:
    name: str  # sgd | lars | adamw
    lr: float  # for ref_batch, scaled linearly with the global batch
    ref_batch: Optional[int]  # None: no scaling
    momentum: float
    weight_decay: float
    eta: float  # LARS trust coefficient
    warmup_frac: float
    final_lr_frac: float
    # warm-up from this share of the peak lr (PySlowFast's WARMUP_START_LR), and a cosine over the
    # whole run that the warm-up rises to (PySlowFast's and CVRL's code; moviessl.optim.warmup_schedule)
    warmup_start_frac: float = 0.0
    cosine_over_warmup: bool = False
    nesterov: bool = False  # SGD only (PySlowFast's SOLVER.NESTEROV)


@dataclass
class ProbeConfig:
    num_clips: int  # evenly spaced clips per video, features averaged
    batch_size: int
    weight_decay: float
    max_iter: int  # L-BFGS iterations of the linear probe
    knn_k: int
    knn_t: float
    seed: int
    val_fraction: float  # held out of --data when no --val is given
    # at most this many videos per class from each list (evenly spaced in list order); None: all.
    # The paper preset's cap keeps the probe after a K400 run to an hour, not a day on one GPU.
    max_per_class: Optional[int] = None


@dataclass
class BackboneConfig:
    seed: int
    model: ModelConfig
    data: DataConfig
    augment: AugmentConfig
    cvrl: CVRLConfig
    modist: MoDistConfig
    flow: FlowConfig
    supervised: SupervisedConfig
    optim: OptimConfig
    probe: ProbeConfig
    trainer: TrainerConfig
