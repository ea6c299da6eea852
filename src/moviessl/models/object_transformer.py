"""The Object Transformer (OT) of LVU (Wu & Krähenbühl, "Towards Long-Form Video Understanding",
CVPR 2021), as its code implements it (``chaoyuaw/lvu``: ``src/models/modeling_roberta.py``,
``modeling_bert.py``), plus the scene pathway of OT++ (Xiao et al., CVPR 2022, Fig. 3).

A 60-s span of a video becomes ``[start] + instance tokens + scene tokens + [end]``:

- an **instance token** is one tracked person box in one second: its RoI feature (projected by
  ``reduction``, LVU's ``embeddings.reduction``), plus a spatial embedding ``Linear(5 -> dim)`` of
  ``(x1, y1, x2, y2, area)``, three learned tables of its time in seconds (increasing, decreasing,
  centred), three of its shot id (same three forms) and a table of its track ("link") id;
- a **scene token** (OT++ only) is one 2-s event of the whole frame -- a TxE-contextualised event
  feature ("ours") or a pooled backbone feature ("sup") -- projected by ``scene_proj``, with its own
  learned type vector, the same three time tables as the instances (at the event's second), the
  spatial code of the whole frame, and the "not applicable" id in the shot and link tables;
- start / end tokens have zero features and their own ids in every table.

With ``input_norm`` the instance and scene features are first standardised per dimension by fixed
statistics of the training features (:class:`moviessl.models.txe.Standardize`, buffers saved with
the model; not in LVU, whose RoI features come from a detector's head): pooled post-ReLU backbone
features share a large common component that otherwise dominates ``reduction``'s output.

The sum goes through LayerNorm and dropout (BERT's embedding block), then ``depth`` post-LN
encoder layers (BERT's; :class:`moviessl.models.txe.Block`), and the first token's output through
BERT's pooler (dense + tanh). The task head is dropout + one Linear to the classes (1 for
regression), LVU's ``--train_long_term_linear --train_long_term_dropout``.

Masked-instance pretraining replaces masked instance features by a learned vector in the *input*
feature space before ``reduction`` (LVU's ``masked_embedding``); ``tokens["mask"]`` selects them.

Token tensors (built by :mod:`moviessl.context.ot_spans`), all ``(B, N, ...)``:
``kind`` (PAD / START / END / INSTANCE / SCENE), ``inst`` (instance features, zero elsewhere),
``scene`` (scene features, zero elsewhere; only with ``scene_dim``), ``box`` (5 spatial numbers),
``pos`` and ``shot`` (3 ids each: increasing, decreasing, centred), ``link`` (1 id), optional
``mask`` (bool). Ids: 0 padding, 1 start, 2 end, 3 not applicable, values from :data:`ID_OFFSET`.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from ..errors import BadInputError
from .txe import Block, Standardize

# 254 instance tokens + start + end and spare position ids; inputs used raw (LVU's)
_OT_COMMON = dict(max_positions=258, max_instances=254, input_norm=False)
OT_PRESETS: dict[str, dict[str, Any]] = {
    # LVU's OT: roberta-base config cut to 3 layers, 12 heads, hidden 768, FFN 3072, dropout 0.1 (none
    # inside the FFN, as BERT's intermediate layer).
    "ot_paper": dict(
        dim=768, depth=3, heads=12, mlp_dim=3072, dropout=0.1, attn_dropout=0.1, ffn_dropout=0.0, **_OT_COMMON
    ),
    # Small enough for 2 CPU cores: seconds per fine-tuning run on SynthMovies. No dropout on the
    # attention probabilities: drawing the (B, heads, ~200, ~200) masks took a third of a CPU step.
    "ot_cpu": dict(
        dim=64, depth=2, heads=4, mlp_dim=128, dropout=0.1, attn_dropout=0.0, ffn_dropout=None, **_OT_COMMON
    ),
}

# token kinds
PAD, START, END, INSTANCE, SCENE = 0, 1, 2, 3, 4
# ids in the position / shot / link tables
ID_PAD, ID_START, ID_END, ID_NONE, ID_OFFSET = 0, 1, 2, 3, 4


class ObjectTransformer(nn.Module):
    """``forward(tokens) -> (B, num_outputs)``; ``encode(tokens) -> (B, N, dim)``, ``pooled(h) -> (B, dim)``.

    ``in_dim`` = 0 builds a scene-only model, ``scene_dim`` = 0 an instance-only one (LVU's OT);
    ``num_outputs`` = 0 leaves out the task head (pretraining)."""

    def __init__(
        self,
        in_dim: int = 2304,
        scene_dim: int = 0,
        num_outputs: int = 0,
        dim: int = 768,
        depth: int = 3,
        heads: int = 12,
        mlp_dim: int = 3072,
        dropout: float = 0.1,
        attn_dropout: float = 0.1,
        ffn_dropout: float | None = None,
        max_positions: int = 258,
        max_instances: int = 254,
        input_norm: bool = False,
    ):
        super().__init__()
        if in_dim <= 0 and scene_dim <= 0:
            raise BadInputError("model", "an Object Transformer needs instance features, scene features or both")
        self.in_dim, self.scene_dim, self.num_outputs = int(in_dim), int(scene_dim), int(num_outputs)
        self.dim, self.max_positions, self.max_instances = dim, int(max_positions), int(max_instances)
        if self.in_dim > 0:
            self.reduction = nn.Linear(self.in_dim, dim)
            self.mask_embedding = nn.Parameter(torch.zeros(self.in_dim))
        else:
            self.reduction, self.mask_embedding = None, None
        # identity until set_input_stats; absent without input_norm (older checkpoints load as they are)
        self.inst_norm = Standardize(self.in_dim) if input_norm and self.in_dim > 0 else None
        self.scene_norm = Standardize(self.scene_dim) if input_norm and self.scene_dim > 0 else None
        if self.scene_dim > 0:
            self.scene_proj = nn.Linear(self.scene_dim, dim)
            self.scene_type = nn.Parameter(torch.zeros(dim))
        else:
            self.scene_proj, self.scene_type = None, None
        self.spatial = nn.Linear(5, dim)
        table = lambda: nn.Embedding(self.max_positions, dim, padding_idx=ID_PAD)  # noqa: E731
        self.pos_embed = nn.ModuleList(table() for _ in range(3))  # increasing, decreasing, centred time
        self.shot_embed = nn.ModuleList(table() for _ in range(3))  # the same three forms of the shot id
        self.link_embed = table()
        self.embed_norm = nn.LayerNorm(dim, eps=1e-5)
        self.embed_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(dim, heads, mlp_dim, dropout, False, attn_dropout, "gelu", ffn_dropout) for _ in range(depth)
        )
        self.pooler = nn.Sequential(nn.Linear(dim, dim), nn.Tanh())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, self.num_outputs)) if self.num_outputs else None
        self._init_weights()

    def _init_weights(self) -> None:
        # BERT's initialisation: N(0, 0.02) for linears and tables, zero biases; padding rows zero
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)
                if isinstance(m, nn.Embedding):
                    with torch.no_grad():
                        m.weight[ID_PAD].zero_()
        # the [MASK] vector stays at zeros, as LVU's ``masked_embedding`` does (a bare Parameter that
        # BERT's ``_init_weights`` never visits; chaoyuaw/lvu, src/models/modeling_roberta.py: ``RobertaEmbeddings``)
        if self.scene_type is not None:
            nn.init.normal_(self.scene_type, std=0.02)

    def set_input_stats(
        self,
        inst: tuple[torch.Tensor, torch.Tensor] | None = None,
        scene: tuple[torch.Tensor, torch.Tensor] | None = None,
        overwrite: bool = False,
    ) -> list[str]:
        """Fix the ``(mean, var)`` of the instance / scene features (``input_norm`` only). Statistics
        already set (loaded from a pretrained OT, which was trained with them) are kept unless
        ``overwrite``. Returns the pathways whose statistics were set."""
        done = []
        for name, norm, st in (("inst", self.inst_norm, inst), ("scene", self.scene_norm, scene)):
            if norm is not None and st is not None and (overwrite or not bool(norm.is_set)):
                norm.set_stats(*st)
                done.append(name)
        return done

    def _ids(self, ids: torch.Tensor) -> torch.Tensor:
        return ids.clamp(0, self.max_positions - 1)

    def embed(self, tokens: Mapping[str, torch.Tensor]) -> torch.Tensor:
        kind = tokens["kind"]
        h = self.spatial(tokens["box"].to(self.spatial.weight.dtype))
        if self.reduction is not None and "inst" in tokens:
            x = tokens["inst"].to(h.dtype)
            if x.shape[-1] != self.in_dim:
                raise BadInputError("OT input", f"instance features are {x.shape[-1]}-d, the model takes {self.in_dim}")
            if self.inst_norm is not None:  # start / end / padding keep their zero features
                x = torch.where((kind == INSTANCE)[..., None], self.inst_norm(x), x)
            mask = tokens.get("mask")
            if mask is not None:  # LVU pastes its learned vector in the input feature space
                x = torch.where(mask[..., None], self.mask_embedding.to(x.dtype), x)
            h = h + self.reduction(x) * (kind != SCENE)[..., None]
        if self.scene_proj is not None and "scene" in tokens:
            s = tokens["scene"].to(h.dtype)
            if s.shape[-1] != self.scene_dim:
                raise BadInputError("OT input", f"scene features are {s.shape[-1]}-d, the model takes {self.scene_dim}")
            if self.scene_norm is not None:
                s = self.scene_norm(s)
            is_scene = (kind == SCENE)[..., None]
            h = h + (self.scene_proj(s) + self.scene_type) * is_scene
        pos, shot = self._ids(tokens["pos"]), self._ids(tokens["shot"])
        for k in range(3):
            h = h + self.pos_embed[k](pos[..., k]) + self.shot_embed[k](shot[..., k])
        h = h + self.link_embed(self._ids(tokens["link"]))
        return self.embed_drop(self.embed_norm(h))

    def encode(self, tokens: Mapping[str, torch.Tensor]) -> torch.Tensor:
        h = self.embed(tokens)
        keep = tokens["kind"] != PAD
        attn_mask = keep[:, None, None, :]  # (B,1,1,N): True = may be attended to
        for blk in self.blocks:
            h = blk(h, attn_mask)
        return h

    def pooled(self, h: torch.Tensor) -> torch.Tensor:
        """BERT's pooler on the start token's output."""
        return self.pooler(h[:, 0])

    def forward(self, tokens: Mapping[str, torch.Tensor]) -> torch.Tensor:
        p = self.pooled(self.encode(tokens))
        return self.head(p) if self.head is not None else p


def ot_settings(preset: str = "ot_paper", **overrides: Any) -> dict[str, Any]:
    """The settings of a preset with ``overrides`` (unknown preset or key: ``BadInputError``)."""
    if preset not in OT_PRESETS:
        raise BadInputError(preset, f"unknown Object Transformer preset; choose from {', '.join(OT_PRESETS)}")
    cfg = dict(OT_PRESETS[preset])
    unknown = sorted(set(overrides) - set(cfg))
    if unknown:
        raise BadInputError(f"model.{unknown[0]}", f"unknown Object Transformer option; known: {', '.join(cfg)}")
    cfg.update(overrides)
    return cfg


def check_span_s(span_s: int, max_positions: int) -> None:
    """Refuse a ``data.span_s`` whose time ids would pass the ``max_positions``-row tables:
    :meth:`ObjectTransformer._ids` would clamp them, and distinct seconds would share a row. A span's
    largest id (:func:`moviessl.context.ot_spans.span_tokens`, centred on ``max_positions // 2``) is
    its last second's, increasing (``span_s - 1``) or centred (``halfway + ceil((span_s - 1) / 2)``)."""
    halfway, top = max_positions // 2, max_positions - 1
    need = ID_OFFSET + max(int(span_s) - 1, halfway + int(span_s) // 2)
    if need > top:
        longest = min(top - ID_OFFSET + 1, 2 * (top - ID_OFFSET - halfway) + 1)
        raise BadInputError(
            "data.span_s",
            f"a {span_s}-s span needs time ids up to {need}, past the OT's {max_positions}-row time tables "
            f"(at most {longest} s with model.overrides.max_positions {max_positions})",
        )


def span_checked_settings(preset: str, overrides: Mapping[str, Any], span_s: int) -> dict[str, Any]:
    """:func:`ot_settings`, refusing a ``span_s`` its time tables cannot hold (:func:`check_span_s`)
    before any input is read."""
    ot = ot_settings(preset, **dict(overrides))
    check_span_s(span_s, int(ot["max_positions"]))
    return ot


def build_object_transformer(
    preset: str = "ot_paper", in_dim: int = 2304, scene_dim: int = 0, num_outputs: int = 0, **overrides: Any
) -> ObjectTransformer:
    """An OT from :data:`OT_PRESETS` for ``in_dim``-d instance and ``scene_dim``-d scene features
    (0 = that pathway is absent) and ``num_outputs`` task outputs (0 = no head)."""
    cfg = ot_settings(preset, **overrides)
    return ObjectTransformer(in_dim=int(in_dim), scene_dim=int(scene_dim), num_outputs=int(num_outputs), **cfg)


def load_matching(model: nn.Module, state: Mapping[str, torch.Tensor]) -> dict[str, list[str]]:
    """Load the entries of ``state`` whose name and shape match (LVU's ``--force_load_checkpoint``:
    a pretrained OT's head and a ``reduction`` of another width are dropped). Returns the report
    ``{"loaded", "skipped" (shape mismatch or unknown), "missing" (kept at initialisation)}``."""
    own = model.state_dict()
    use = {k: v for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    for name, m in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(m, Standardize) and any(prefix + k in state and prefix + k not in use for k in ("mean", "scale")):
            # statistics of another width stay behind: their "set" flag alone would keep the identity
            # in place of the statistics set_input_stats computes for these features
            use.pop(prefix + "is_set", None)
    model.load_state_dict(use, strict=False)
    return {
        "loaded": sorted(use),
        "skipped": sorted(k for k in state if k not in use),
        "missing": sorted(k for k in own if k not in use),
    }
