"""Verb prediction (paper §4.3, Table 4): a 2-layer MLP head on each event's token.

Head d -> d/2 -> |verbs| as VidSitu's, cross-entropy on the train annotation's verb. The tokens come
from frozen features (``--features``), optionally through a TxE, or from Slow-D fine-tuned end to
end on each event's 16x4 clip (``--videos --backbone``). Predictions: top-5 verb ids and their
softmax scores per event, VidSitu's submission format.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ...checkpoint import arch_spec
from ...data.vidsitu import EVENTS
from ...models.heads import MLPHead
from ..encoder import EventEncoder, build_encoder
from .config import VerbConfig

IGNORE = -100


class VerbClassifier(nn.Module):
    def __init__(self, encoder: EventEncoder, num_verbs: int, hidden: int | None = None, dropout: float = 0.0):
        super().__init__()
        d = encoder.out_dim
        self.encoder = encoder
        self.head = MLPHead(d, hidden or max(1, d // 2), num_verbs, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B,5,num_verbs)
        return self.head(self.encoder(x))

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over events; ``y`` (B,5) verb indices, IGNORE where unlabelled."""
        logits = self(x)
        if not (y != IGNORE).any():  # e.g. every clip of the batch failed to decode: no signal, no NaN
            return logits.sum() * 0.0
        return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), ignore_index=IGNORE)

    @staticmethod
    def loss_items(y: torch.Tensor) -> torch.Tensor:
        """What :meth:`loss` means over: the labelled events (under DDP, :class:`~moviessl.tasks.base.TaskModule`),
        counted where ``y`` is (read on the host, a count waited for the GPU)."""
        return (y != IGNORE).sum()

    @torch.no_grad()
    def predict(self, x: torch.Tensor, y: Any = None, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (scores (B,5,k), indices (B,5,k)) of the top-k softmax probabilities."""
        probs = self(x).float().softmax(-1)
        return probs.topk(min(k, probs.shape[-1]), dim=-1)


def build_verb_model(
    in_dim: int,
    num_verbs: int,
    hidden: int | None = None,
    dropout: float = 0.0,
    backbone_arch: Mapping | None = None,
    txe_arch: Mapping | None = None,
    input_norm: str = "fixed",
) -> VerbClassifier:
    return VerbClassifier(build_encoder(in_dim, backbone_arch, txe_arch, input_norm), num_verbs, hidden, dropout)


class VerbTask:
    """Targets and submission entries for verb prediction. With videos, Slow-D is fine-tuned end to
    end on the event clips (VidSitu's verb model); a clip that fails to decode mid-run gets no loss."""

    name = "verb"
    metric_keys = ("acc@1", "acc@5", "recall@5")
    baselines: tuple[str, ...] = ()
    end_to_end = True
    ignore_index = IGNORE
    eval_needs_records = False

    def __init__(self, cfg: VerbConfig, train_split, **_: Any):
        self.cfg = cfg
        counts = Counter(
            recs[0][ev]["VerbID"]
            for recs in train_split.records.values()
            if recs
            for ev in EVENTS
            if isinstance(recs[0][ev].get("VerbID"), str) and recs[0][ev]["VerbID"].strip()
        )  # (an empty VerbID is no verb: it became a class "" that could be predicted)
        # frequency order (ties by name), like VidSitu's verb vocabulary; val verbs never seen in
        # training cannot be predicted (as in the reference)
        self.verbs = [v for v, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
        self.index = {v: i for i, v in enumerate(self.verbs)}

    def train_target(self, vseg: str, records: list[dict]) -> torch.Tensor:
        ev = records[0]
        ids = [self.index.get(ev[e].get("VerbID"), IGNORE) for e in EVENTS]
        return torch.tensor(ids, dtype=torch.long, device="cpu")  # a loader's target: on the CPU (data.collate)

    def eval_target(self, vseg: str, records: list[dict]) -> None:
        return None

    label_hint = "a VerbID"

    def labelled(self, y: torch.Tensor) -> bool:
        """Whether a training target teaches anything (a known verb on some event)."""
        return bool((y != IGNORE).any())

    def build_model(
        self, in_dim: int, backbone_arch=None, txe_arch=None, input_norm: str = "fixed"
    ) -> tuple[nn.Module, dict]:
        arch = arch_spec(
            "moviessl.tasks.vidsitu.verb:build_verb_model",
            in_dim=int(in_dim),
            num_verbs=len(self.verbs),
            hidden=self.cfg.hidden,
            dropout=self.cfg.dropout,
            backbone_arch=backbone_arch,
            txe_arch=txe_arch,
            input_norm=input_norm,
        )
        return build_verb_model(**arch["kwargs"]), arch

    def entries(
        self, model: VerbClassifier, x: torch.Tensor, y_eval: Any, ann_idx: list[int], vsegs: list[str] | None = None
    ) -> list[dict]:
        scores, idx = model.predict(x)
        out = []
        for b, ai in enumerate(ann_idx):
            vbs = [[self.verbs[j] for j in idx[b, e].tolist()] for e in range(len(EVENTS))]
            sc = [[float(s) for s in scores[b, e].tolist()] for e in range(len(EVENTS))]
            out.append({"ann_idx": int(ai), "pred_vbs_ev": vbs, "pred_scores_ev": sc})
        return out

    def loss_kwargs(self) -> dict:
        return {}

    def fallback(self, ann_idx: int, vseg: str, split) -> dict:
        """A segment without inputs (missing/bad feature file or video): the 5 most frequent train verbs."""
        top = self.verbs[:5]
        return {
            "ann_idx": int(ann_idx),
            "pred_vbs_ev": [list(top) for _ in EVENTS],
            "pred_scores_ev": [[0.0] * len(top) for _ in EVENTS],
        }

    def meta(self) -> dict:
        return {"verbs": self.verbs}
