"""Semantic role prediction (paper §4.1, Table 1): TxD writes ``verb_id <Arg0> phrase ...`` per event.

Training: teacher forcing, logits[:-1] against tokens[1:], cross-entropy ignoring pad; the verb token
is the first input and is never predicted (VidSitu's ``vidsitu_code/dat_loader.py``). Decoding:
greedy, the ground-truth verb's token(s) forced first, then the ids are parsed back into roles
(short names).

What event i's decoder cross-attends to (``memory``): ``"self"`` (default, VidSitu's choice) = one
vector, event i's own token. Without a TxE that is its backbone feature, so any context must come
from the TxE, which is exactly the comparison of Table 1 (TxD vs TxE+TxD, scratch vs MaskPred).
``"all"`` = all 5 tokens, the own one marked by a learned vector, for users who want the decoder to
look at neighbours directly. ``"self_input"`` = two vectors, event i's token and a learned projection
of its own (standardised) input feature, marked by a learned vector: a skip around the TxE, so the
decoder can read who is in view from the event itself and who is not from the context (a diagnostic
of whether the TxE's mixing costs the event's own content; not the paper's model).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ...checkpoint import arch_spec
from ...data.vidsitu import EVENTS, roles_in_order
from ...errors import BadInputError
from ...models.txd import TxD, build_txd, txd_options
from ...utils.digest import content_digest
from ...utils.io import atomic_write_text
from ..encoder import EventEncoder, build_encoder
from .config import SRLConfig
from .tokenizer import SRLTokenizer

log = logging.getLogger(__name__)


class SRLDecoder(nn.Module):
    def __init__(self, encoder: EventEncoder, txd: TxD, memory: str = "self", pad_id: int = 0, eos_id: int = 1):
        super().__init__()
        if memory not in ("self", "all", "self_input"):
            raise BadInputError(None, f"srl.memory must be 'self', 'all' or 'self_input', got {memory!r}")
        self.encoder, self.txd, self.memory = encoder, txd, memory
        self.pad_id, self.eos_id = pad_id, eos_id
        if memory == "all":
            self.self_marker = nn.Parameter(torch.zeros(encoder.out_dim))
        if memory == "self_input":
            self.input_skip = nn.Linear(encoder.in_dim, encoder.out_dim)
            self.input_marker = nn.Parameter(torch.zeros(encoder.out_dim))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs (B,E,...) -> (B*E, M, d): what each event's decoder cross-attends to."""
        if self.memory != "self_input":
            return self.memory_of(self.encoder(x))
        tokens, z = self.encoder(x, with_inputs=True)
        skip = self.input_skip(z) + self.input_marker
        return torch.stack([tokens, skip], dim=2).flatten(0, 1)

    def memory_of(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B,E,d) event tokens -> (B*E, M, d) memory per event (``self`` / ``all``)."""
        B, E, d = tokens.shape
        if self.memory == "self":
            return tokens.reshape(B * E, 1, d)
        eye = torch.eye(E, device=tokens.device, dtype=tokens.dtype)
        mem = tokens[:, None] + eye[None, :, :, None] * self.self_marker  # (B, E_query, E_key, d)
        return mem.reshape(B * E, E, d)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``y`` (B,5,L) token ids right-padded with pad (an all-pad row = no target for that event)."""
        mem = self.encode(x)
        seqs = y.flatten(0, 1)
        keep = seqs[:, 0] != self.pad_id
        if not (keep[:, None] & (seqs[:, 1:] != self.pad_id)).any():
            # no target token in the batch (every event unannotated, or every clip failed to decode;
            # :meth:`loss_items` is 0): a zero through every parameter, as verb and relation give, not
            # max() of nothing -- under DDP the other processes would wait in a collective for this one
            return self.txd(seqs[:1, :1], mem[:1]).sum() * 0.0
        seqs, mem = seqs[keep], mem[keep]
        L = int((seqs != self.pad_id).sum(1).max())  # trim the batch to its longest target
        seqs = seqs[:, :L]
        logits = self.txd(seqs[:, :-1], mem)
        return F.cross_entropy(logits.flatten(0, 1).float(), seqs[:, 1:].flatten(), ignore_index=self.pad_id)

    def loss_items(self, y: torch.Tensor) -> torch.Tensor:
        """What :meth:`loss` means over: the target tokens after each kept event's first (under DDP,
        :class:`~moviessl.tasks.base.TaskModule`), counted where ``y`` is."""
        return ((y[..., :1] != self.pad_id) & (y[..., 1:] != self.pad_id)).sum()

    @torch.no_grad()
    def predict(self, x: torch.Tensor, prefix: torch.Tensor, max_len: int = 60) -> torch.Tensor:
        """``prefix`` (B,5,P) forced verb tokens, -1 padded -> generated ids (B,5,L)."""
        mem = self.encode(x)
        out = self.txd.generate(mem, prefix.flatten(0, 1), max_len=max_len, eos_id=self.eos_id)
        return out.view(x.shape[0], len(EVENTS), -1)


def build_srl_model(
    in_dim: int,
    vocab_size: int,
    txd_preset: str = "txd_cpu",
    txd_overrides: Mapping | None = None,
    memory: str = "self",
    pad_id: int = 0,
    eos_id: int = 1,
    backbone_arch: Mapping | None = None,
    txe_arch: Mapping | None = None,
    input_norm: str = "fixed",
) -> SRLDecoder:
    encoder = build_encoder(in_dim, backbone_arch, txe_arch, input_norm)
    txd = build_txd(txd_preset, vocab_size=vocab_size, mem_dim=encoder.out_dim, **dict(txd_overrides or {}))
    return SRLDecoder(encoder, txd, memory, pad_id, eos_id)


def train_phrases(split) -> list[str]:
    return [
        p for recs in split.records.values() for rec in recs[:1] for ev in EVENTS for _, p in roles_in_order(rec[ev])
    ]


class SRLTask:
    """Tokenizer, targets and submission entries for semantic role prediction.

    The tokenizer is a user's ``tokenizer.json`` (``tokenizer``), else the one a job already trained
    from the same phrases and settings (``OUT/tokenizer.json``, its key in ``OUT/tokenizer.key``:
    every seed of a job shares one vocabulary), else trained now on the train phrases; it is saved
    to ``OUT/tokenizer.json``."""

    name = "srl"
    uses_tokenizer = True  # writes text: a user's tokenizer.json applies (other tasks refuse one)
    metric_keys = ("cider", "cider_verb", "cider_arg", "rouge_l", "lea")
    baselines: tuple[str, ...] = ()
    end_to_end = False
    ignore_index = None
    eval_needs_records = True
    eval_records_hint = "given verbs (VidSitu released them for testsrl and testevrel)"

    def __init__(
        self,
        cfg: SRLConfig,
        train_split,
        tokenizer: str | os.PathLike | None = None,
        out: str | os.PathLike | None = None,
        save: bool = True,
        **_: Any,
    ):
        self.cfg = cfg
        self.max_len = cfg.max_len
        # checked now, before a tokenizer is trained or a seed starts
        txd_len = int(txd_options(cfg.txd, **dict(cfg.txd_overrides or {}))["max_len"])
        if cfg.max_len < 3:  # verb, a role tag, a word at least: shorter cut every target to its verb
            raise BadInputError("srl.max_len", f"must be >= 3 target tokens (VidSitu: 60), got {cfg.max_len}")
        if cfg.max_len > txd_len:  # else a long target fails mid-training and decoding stops at the TxD's
            raise BadInputError(
                "srl.max_len",
                f"{cfg.max_len} tokens is above the TxD's max_len {txd_len} (srl.txd {cfg.txd}); raise "
                "srl.txd_overrides.max_len with it",
            )
        # save False: OUT's tokenizer is read where its key matches, never written (a check of the
        # settings finished runs were trained with, which must leave their folder as it was)
        saved = Path(out) / "tokenizer.json" if out is not None else None
        if tokenizer is not None:
            self.tok = SRLTokenizer.from_file(tokenizer)
            # a user's tokenizer may lower-case, strip accents or write <unk>: the model can then never
            # write those phrases as the annotators did, and VidSitu scores them case-sensitively
            lost, n, example = self.tok.unfaithful(train_phrases(train_split))
            if lost:
                log.warning(
                    "%s: %d of %d distinct train phrases do not come back unchanged through this tokenizer "
                    "(e.g. %r -> %r); predictions cannot hold what it loses",
                    tokenizer,
                    lost,
                    n,
                    *example,
                )
            if saved is not None and save:
                saved.with_suffix(".key").unlink(missing_ok=True)  # the user's, not one trained from a key
                self.tok.save(saved)
            return
        verbs = [
            rec[ev]["VerbID"]
            for recs in train_split.records.values()
            for rec in recs[:1]
            for ev in EVENTS
            if isinstance(rec[ev].get("VerbID"), str)
        ]
        phrases = train_phrases(train_split)
        # what the vocabulary is made of: another vocab_size or edited annotations train a new one
        key = content_digest(phrases, verbs, cfg.vocab_size, cfg.min_frequency)
        key_file = saved.with_suffix(".key") if saved is not None else None
        if key_file is not None and saved.is_file() and key_file.is_file() and key_file.read_text() == key:
            self.tok = SRLTokenizer.from_file(saved)
            return
        self.tok = SRLTokenizer.train(phrases, verbs, vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency)
        if saved is not None and save:
            self.tok.save(saved)
            atomic_write_text(key_file, key)  # after the vocabulary: a kill between leaves one retrained

    def _verb(self, vseg: str, records: list[dict], ev: str) -> str:
        verb = records[0][ev].get("VerbID")
        if not isinstance(verb, str):
            raise BadInputError(None, f"{vseg} {ev}: no VerbID in the first annotation")
        return verb

    def train_target(self, vseg: str, records: list[dict]) -> torch.Tensor:
        """(5, max_len) ids, pad-filled; only annotation 0 is used (as VidSitu)."""
        # a loader's target: on the CPU, not torch's default device (data.collate)
        y = torch.full((len(EVENTS), self.max_len), self.tok.pad_id, dtype=torch.long, device="cpu")
        for e, ev in enumerate(EVENTS):
            try:
                roles = roles_in_order(records[0][ev])
            except (ValueError, KeyError) as err:
                raise BadInputError(None, f"{vseg} {ev}: {err}") from None
            ids = self.tok.encode_target(self._verb(vseg, records, ev), roles, self.max_len)
            y[e, : len(ids)] = torch.tensor(ids, device="cpu")
        return y

    def targets_key(self, ys: list[torch.Tensor]) -> list[torch.Tensor] | None:
        """What of the training targets the settings hash takes beside the annotations they come
        from: the ids themselves where one fills ``max_len`` (cut there, or exactly that long), else
        nothing. How a long target is cut changed (after its eos, then as VidSitu ending with it), so
        a run finished on the other ids of the same annotations must not be reused; a target that
        fits is the same under either rule, and so are the hashes of its runs."""
        return ys if any(bool((y[:, -1] != self.tok.pad_id).any()) for y in ys) else None

    label_hint = "a role in its Args / Arg_List"

    def labelled(self, y: torch.Tensor) -> bool:
        """Whether a training target teaches anything beyond its given verb (a role on some event)."""
        return any(int(i) in self.tok.id_to_role for i in y.unique())

    def eval_target(self, vseg: str, records: list[dict]) -> torch.Tensor:
        """(5, P) forced prefixes: the GT verb of annotation 0 (the val prompt), -1 padded."""
        # an empty VerbID encodes to no token, and decoding needs one forced token per event: eos
        # stands in, so that event parses to {} (no verb id, as VidSitu's parser) and the others decode
        prefixes = [self.tok.verb_prefix(self._verb(vseg, records, ev)) or [self.tok.eos_id] for ev in EVENTS]
        P = max(len(p) for p in prefixes)
        out = torch.full((len(EVENTS), P), -1, dtype=torch.long, device="cpu")  # as train_target's
        for e, p in enumerate(prefixes):
            out[e, : len(p)] = torch.tensor(p, device="cpu")
        return out

    def build_model(
        self, in_dim: int, backbone_arch=None, txe_arch=None, input_norm: str = "fixed"
    ) -> tuple[nn.Module, dict]:
        arch = arch_spec(
            "moviessl.tasks.vidsitu.srl:build_srl_model",
            in_dim=int(in_dim),
            vocab_size=self.tok.vocab_size,
            txd_preset=self.cfg.txd,
            txd_overrides=dict(self.cfg.txd_overrides),
            memory=self.cfg.memory,
            pad_id=self.tok.pad_id,
            eos_id=self.tok.eos_id,
            backbone_arch=backbone_arch,
            txe_arch=txe_arch,
            input_norm=input_norm,
        )
        return build_srl_model(**arch["kwargs"]), arch

    def entries(
        self,
        model: SRLDecoder,
        x: torch.Tensor,
        prefix: torch.Tensor,
        ann_idx: list[int],
        vsegs: list[str] | None = None,
    ) -> list[dict]:
        ids = model.predict(x, prefix, self.max_len)
        return [
            {"ann_idx": int(ai), "vb_output": {ev: self.tok.parse(ids[b, e].tolist()) for e, ev in enumerate(EVENTS)}}
            for b, ai in enumerate(ann_idx)
        ]

    def loss_kwargs(self) -> dict:
        return {}

    def fallback(self, ann_idx: int, vseg: str, split) -> dict:
        """No inputs for this segment: the verb alone, every role scored as ""."""
        recs = split.records.get(vseg) or []
        vb = {ev: ({"vb_id": recs[0][ev].get("VerbID", "")} if recs else {}) for ev in EVENTS}
        return {"ann_idx": int(ann_idx), "vb_output": vb}

    def meta(self) -> dict:
        return {"tokenizer": self.tok.to_str(), "max_len": self.max_len}
