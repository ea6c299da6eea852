"""The LightningModule of event mask prediction: TxE + prediction head, span masks, Eq. 1 against
a FIFO queue of past targets (or Table 2's L2 loss), on windows of cached event features."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from ..checkpoint import arch_spec, save_checkpoint
from ..config import check_shares, from_dict, to_dict
from ..dist import global_mean_share, is_dist, times_share
from ..errors import BadInputError
from ..models.heads import MaskPredHead
from ..models.txe import TXE_PRESETS, build_txe
from ..optim import lr_scheduler, make_optimizer, param_groups, warmup_steps
from ..ssl.losses import info_nce_queue
from ..ssl.queue import MemoryQueue
from ..training import OnHost
from . import maskpred as mp
from .config import ContextConfig

# a training batch's notes, made on the host before the transfer: whether a window has fewer real
# tokens than maskpred.keys_per_sample; its span masks and their positions (row, token indices)
SHORT_KEY, MASKS_KEY, MASKED_AT_KEY = "short_windows", "span_masks", "span_masked_at"
# with ``replace`` < 1: (span masks, real tokens) on the host, for BERT's corruption to decide there
HOST_SELECT_KEY = "span_select_on_host"


def txe_kwargs(cfg: ContextConfig) -> dict[str, Any]:
    """The TxE preset overrides a config sets (None = the preset's value)."""
    return {k: v for k, v in vars(cfg.model.txe_overrides).items() if v is not None}


def no_decay_txe(name: str, p: torch.nn.Parameter) -> bool:
    # norms, biases, position embeddings and the [MASK] token are not weight-decayed
    return p.ndim < 2 or "pos" in name or "mask" in name


def mask_sizes(cfg: ContextConfig) -> list[int]:
    """The allowed span sizes (:func:`~moviessl.context.maskpred.mask_size_set`), or one line naming
    ``maskpred.mask_sizes`` when a size does not fit ``data.window``."""
    try:
        return mp.mask_size_set(cfg.data.window, cfg.maskpred.alpha, cfg.maskpred.mask_sizes)
    except ValueError as e:
        raise BadInputError("maskpred.mask_sizes", f"{e} (data.window={cfg.data.window})") from None


def sizes_drawn(sizes: list[int] | None, window: int) -> list[int] | None:
    """The mask sizes a run recorded as ``sizes`` at ``window`` drew, for a record made before sizes
    stopped at ``window - 1`` (:func:`~moviessl.context.maskpred.mask_size_set`; ``alpha = 1``
    recorded 1..window, an explicit window was accepted): a span keeps one token visible, so only the
    sizes up to ``window - 1`` were drawn (uniformly over those), or ``window - 1`` when none was.
    Sizes within the window are returned as they are."""
    top = max(1, int(window) - 1)
    if not sizes or max(sizes) <= top:
        return sizes
    return [s for s in sizes if s <= top] or [top]


def check_txe(cfg: ContextConfig) -> None:
    """One line, named by this stage's keys, for TxE settings that cannot build or cannot read a
    ``data.window``-token window -- before any feature file is read (the window otherwise failed only
    in the first training step, and the build's errors named ``model.<key>``, a key the config lacks)."""
    try:
        with torch.device("meta"):  # nothing allocated
            txe = build_txe(cfg.model.txe, in_dim=1, **txe_kwargs(cfg))
    except BadInputError as e:
        if (e.path or "").startswith("model."):
            raise BadInputError(f"model.txe_overrides.{e.path[6:]}", e.cause) from None
        raise BadInputError("model.txe", e.cause) from None
    if cfg.data.window > txe.max_len:
        raise BadInputError(
            "data.window",
            f"{cfg.data.window} tokens exceed the TxE's max_len {txe.max_len} (model.txe_overrides.max_len)",
        )


class MaskPredModule(pl.LightningModule):
    """TxE + prediction head trained by event mask prediction.

    Only ``self.txe`` is exported (stage ``context``); the head, the fixed target centre/projection
    and the queue are training-only.
    """

    def __init__(self, cfg: ContextConfig | dict, in_dim: int, feature_stride_s: float = 2.0):
        super().__init__()
        if not isinstance(cfg, ContextConfig):  # from a Lightning checkpoint's hyper-parameters
            # checkpoints from before replace / swap existed masked the whole span (the paper); before
            # the layer settings, every TxE had GELU with dropout on attention and inside the FFN
            cfg = {**cfg, "maskpred": {"replace": 1.0, "swap": 0.0, **cfg["maskpred"]}}
            model = dict(cfg["model"])
            ov = dict(model.get("txe_overrides") or {})
            if "activation" not in ov:  # None means "the preset's" here, so the old values are spelt out
                p = ov.get("dropout")
                p = TXE_PRESETS[model["txe"]]["dropout"] if p is None else p
                ov = {"activation": "gelu", "attn_dropout": p, "ffn_dropout": p, **ov}
            cfg = {**cfg, "model": {**model, "txe_overrides": ov}}
            # resolved before sizes stopped at window - 1: rebuilt with the sizes the run drew
            sizes = sizes_drawn(cfg["maskpred"].get("mask_sizes"), cfg["data"]["window"])
            cfg = {**cfg, "maskpred": {**cfg["maskpred"], "mask_sizes": sizes}}
            cfg = from_dict("context", cfg)
        mpc = cfg.maskpred
        if mpc.sampling not in ("uniform", "max_discrepancy"):
            raise BadInputError("maskpred.sampling", f"must be uniform or max_discrepancy, got '{mpc.sampling}'")
        if mpc.loss not in ("infonce", "l2"):
            raise BadInputError("maskpred.loss", f"must be infonce or l2, got '{mpc.loss}'")
        check_shares("maskpred", mpc.replace, mpc.swap)
        self.cfg, self.in_dim, self.feature_stride_s = cfg, int(in_dim), float(feature_stride_s)
        self.txe = build_txe(cfg.model.txe, in_dim=self.in_dim, **txe_kwargs(cfg))
        self.window, self.sizes = cfg.data.window, mask_sizes(cfg)
        # plain values only, so `load_from_checkpoint` works with torch.load(weights_only=True); the
        # mask sizes as resolved (unset: 1..floor(alpha x window)), as model.pt's meta records them --
        # logs/hparams.yaml kept `mask_sizes: null`. Built again from them, the same sizes.
        hp = to_dict(cfg)
        hp["maskpred"] = {**hp["maskpred"], "mask_sizes": list(self.sizes)}
        self.save_hyperparameters({"cfg": hp, "in_dim": int(in_dim), "feature_stride_s": float(feature_stride_s)})
        self.sampling, self.loss_name, self.tau = mpc.sampling, mpc.loss, mpc.tau
        self.replace, self.swap = mpc.replace, mpc.swap
        self.keys_per_sample = mpc.keys_per_sample
        self.tdim = mpc.target_dim or self.in_dim
        if mpc.target_dim:  # fixed Gaussian projection: cosines preserved (JL), a smaller queue
            # drawn on the CPU with its own generator, the same projection on every device, then put
            # where the module's parameters are made (torch's default device: `.to` moves it with them);
            # drawn there, a user's set_default_device("cuda") refused the CPU generator
            g = torch.Generator().manual_seed(0)
            proj = torch.randn(self.in_dim, self.tdim, generator=g, device="cpu") / math.sqrt(self.tdim)
            self.register_buffer("target_proj", proj.to(torch.get_default_device()))
        else:
            self.target_proj = None
        self.register_buffer("target_mean", torch.zeros(self.in_dim))
        self.head = MaskPredHead(self.txe.dim, self.tdim, cfg.model.head_hidden)
        # distractors are real past targets only; each row keeps the id of its event
        self.queue = MemoryQueue(mpc.queue_size, self.tdim, track_ids=True, init="empty")

    # --- pieces -----------------------------------------------------------------------------
    def set_target_mean(self, mean: np.ndarray | torch.Tensor) -> None:
        self.target_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))

    def set_input_stats(self, mean: np.ndarray | torch.Tensor, var: np.ndarray | torch.Tensor) -> None:
        """The TxE's fixed input normalisation (exported with it, so fine-tuning sees the same)."""
        self.txe.input_norm.set_stats(torch.as_tensor(mean), torch.as_tensor(var))

    def targets(self, v: torch.Tensor) -> torch.Tensor:
        return mp.feature_targets(v, self.target_mean, self.target_proj)

    def sample_masks(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        if self.sampling == "max_discrepancy":
            was = self.txe.training
            self.txe.eval()  # the discrepancy of the model itself, not of a dropout sample
            try:
                return mp.max_discrepancy_masks(self.txe, x, self.sizes, pad)
            finally:
                self.txe.train(was)
        return mp.sample_span_masks(self.window, self.sizes, pad=pad)

    def masked_predictions(self, batch: dict, masks: torch.Tensor | None = None):
        """Outputs at the selected span, their targets and ids. In training with ``replace`` < 1 the
        span is corrupted BERT's way (not only [MASK]); validation masks it whole, so its fill-in
        retrieval measures the same thing whatever the corruption."""
        x, pad, uid = batch["x"], batch["pad"], batch["uid"]
        inputs, to_mask, at = x, masks, None
        if masks is None:
            masks, at = batch.get(MASKS_KEY), batch.get(MASKED_AT_KEY)  # drawn on the host (on_before_batch_transfer)
            if masks is None:
                masks = self.sample_masks(x, pad)
            to_mask = masks
            if self.replace < 1.0:  # == 1: no draw, so the paper's runs keep their random stream
                # decided on the host where the masks were drawn there (from device masks the swap
                # pool's and the swaps' counts were read, two waits for the GPU a step)
                select = batch.get(HOST_SELECT_KEY)
                selected, candidates = select.value if select is not None else (masks, ~pad)
                inputs, to_mask = mp.corrupt_selected(x, selected, candidates, self.replace, self.swap)
        out = self.txe(inputs, mask=to_mask, pad=pad)
        # the masked positions, found once (t[mask] is t[mask.nonzero(as_tuple=True)]: each boolean
        # index read its count on the host, three waits for the GPU a step), on the host if drawn there
        at = masks.nonzero(as_tuple=True) if at is None else at
        pred = self.head(out[at])
        return pred, self.targets(x[at]), uid[at], masks

    def compute_loss(self, pred, target, tuid):
        keys, kuid = self.queue.get(filled_only=True), self.queue.get_ids(filled_only=True)
        if self.loss_name == "l2":
            loss = mp.maskpred_l2_loss(pred, target)
        else:
            loss = info_nce_queue(pred, target, keys, self.tau, tuid, kuid)
        return loss, mp.retrieval_hits(pred.detach().float(), target, keys, tuid, kuid)

    @torch.no_grad()
    def enqueue(self, batch: dict) -> None:
        """A fixed number of targets per window (equal sizes on every process for the all-gather)."""
        x, pad, uid = batch["x"], batch["pad"], batch["uid"]
        b, k = x.shape[0], self.keys_per_sample
        weights = (~pad).float()  # a padded slot is never a distractor
        short = (~pad).sum(1) < k
        # whether any window is short, as on_before_batch_transfer found on the host (asked of the
        # device tensor, every step waited for the GPU)
        any_short = batch.get(SHORT_KEY)
        if not (short.any() if any_short is None else any_short):
            pick = torch.multinomial(weights, k, replacement=False)
        else:  # a window with fewer real tokens repeats some; the others still draw k distinct ones
            pick = torch.empty(b, k, dtype=torch.long, device=x.device)
            if not short.all():
                pick[~short] = torch.multinomial(weights[~short], k, replacement=False)
            w = weights[short]
            w[w.sum(1) == 0] = 1.0  # (a window of padding only: nothing real to draw)
            pick[short] = torch.multinomial(w, k, replacement=True)
        rows = torch.arange(b, device=x.device)[:, None].expand_as(pick)
        self.queue.enqueue(self.targets(x[rows, pick].reshape(-1, x.shape[-1])), uid[rows, pick].reshape(-1))

    # --- Lightning ----------------------------------------------------------------------------
    def items_in_batch(self, batch: dict) -> torch.Tensor:
        # tokens; a tensor, which the throughput callback reads only when it logs (int() here made
        # every step wait for the GPU)
        return (~batch["pad"]).sum()

    def on_before_batch_transfer(self, batch, dataloader_idx: int = 0):
        """What a training step decides from the batch's padding alone, decided here on the host: on a
        GPU, deciding it in the step from device tensors made the step wait for the device. The
        uniform span masks are drawn here (and where they fall), from the same CPU stream and in the
        same order as the step drew them: nothing draws between this hook and the step."""
        # _trainer: Lightning's `trainer` raises where none is attached (a module stepped by hand)
        if self._trainer is not None and self._trainer.training and isinstance(batch, dict) and "pad" in batch:
            pad = batch["pad"]
            extra: dict[str, Any] = {SHORT_KEY: bool(((~pad).sum(1) < self.keys_per_sample).any())}
            if self.sampling == "uniform":
                masks = mp.sample_span_masks(self.window, self.sizes, pad=pad)
                extra.update({MASKS_KEY: masks, MASKED_AT_KEY: masks.nonzero(as_tuple=True)})
                if self.replace < 1.0:  # BERT's corruption draws in the step, deciding on these
                    extra[HOST_SELECT_KEY] = OnHost((masks, ~pad))
            batch = {**batch, **extra}
        return batch

    def training_step(self, batch: dict, batch_idx: int):
        # an empty queue (a run's first step: it holds real past targets only) leaves no distractor:
        # InfoNCE over the positive alone is 0 with no gradient and every token is "retrieved" (chance
        # 1 / (K + 1) = 1), values of no model that started a curve at a perfect 0 and 1.0. The step
        # still returns its loss as computed; only the logged points wait for a distractor.
        distractors = self.queue.num_filled > 0
        pred, target, tuid, masks = self.masked_predictions(batch)
        loss, acc = self.compute_loss(pred, target, tuid)
        self.enqueue(batch)
        bs = batch["x"].shape[0]
        if distractors or self.loss_name == "l2":  # the L2 loss is the prediction's, queue or not
            self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        if distractors:
            self.log("train/retrieval_acc", acc, batch_size=bs)
        self.log("train/mask_size", masks.sum(1).float().mean(), batch_size=bs)
        if is_dist():  # the logged loss stays this process's mean over its masked tokens
            # a mean over this process's masked tokens, whose count varies with the span sizes drawn:
            # weighted so that DDP's averaged gradient is that of the mean over every process's tokens
            loss = times_share(loss, global_mean_share(len(pred), loss.device))
        return loss

    def validation_masks(self, pad: torch.Tensor, uid: torch.Tensor) -> torch.Tensor:
        """The same masks every validation, each window's its own (seeded by its first event's id), so
        the metrics do not depend on which batch or process a window falls in."""
        rows = [
            mp.sample_span_masks(
                self.window, self.sizes, pad=pad[i : i + 1], generator=torch.Generator().manual_seed(1000 + int(u))
            )
            for i, u in enumerate(uid[:, 0].tolist())
        ]
        return torch.cat(rows)

    def on_validation_epoch_start(self) -> None:
        # float64 (exact token counts); on the CPU under Apple's MPS, which has no float64 (one
        # device there: the reduce below has no other process to reach)
        dev = torch.device("cpu") if self.device.type == "mps" else self.device
        self._val_sums = torch.zeros(3, dtype=torch.float64, device=dev)  # loss, retrieved, tokens

    def validation_step(self, batch: dict, batch_idx: int):
        real = batch.get("real")
        if real is not None:  # a copy that pads the set to a multiple of the processes counts nowhere
            batch = {k: v[real] for k, v in batch.items() if k != "real"}
        if not batch["x"].shape[0]:
            return
        masks = self.validation_masks(batch["pad"], batch["uid"])
        pred, target, tuid, _ = self.masked_predictions(batch, masks)
        if len(pred):
            loss, acc = self.compute_loss(pred, target, tuid)
            n = len(pred)
            loss = loss.detach().to(self._val_sums.device).double()
            hits = acc.to(self._val_sums.device).double() * n  # the float32 fraction times n, in float64
            self._val_sums += torch.stack([loss * n, hits, loss.new_tensor(n)])

    def on_validation_epoch_end(self) -> None:
        # Means over every masked token of the held-out set, summed over the processes here: Lightning's
        # sync_dist of a batch-weighted mean divides by the processes' counts averaged as integers, so
        # an odd total on 2 processes lost one.
        loss, hits, n = self.trainer.strategy.reduce(self._val_sums, reduce_op="sum").tolist()
        if n > 0:  # the same values on every rank; sync_dist only so that Lightning does not warn
            self.log("val/loss", loss / n, prog_bar=True, batch_size=1, sync_dist=True)
            self.log("val/retrieval_acc", hits / n, prog_bar=True, batch_size=1, sync_dist=True)

    def configure_optimizers(self):
        o = self.cfg.optim
        opt = make_optimizer(
            param_groups(self.named_parameters(), o.weight_decay, no_decay_txe), "adamw", o.lr, betas=o.betas
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        return {"optimizer": opt, "lr_scheduler": lr_scheduler(opt, total, warmup_steps(o.warmup_frac, total))}

    # --- export -------------------------------------------------------------------------------
    def export(self, path, meta: dict | None = None):
        """Write the TxE as a moviessl ``context`` checkpoint (contract meta + ``meta``)."""
        mpc = self.cfg.maskpred
        m = {
            "window": self.window,
            "token_stride_s": self.cfg.data.token_stride_s,
            "in_dim": self.in_dim,
            "loss": self.loss_name,
            "mask_sizes": list(self.sizes),
            "sampling": self.sampling,
            "replace": self.replace,
            "swap": self.swap,
            "tau": self.tau,
            "queue_size": self.queue.size,
            "target": "centred input feature" + (f", projected to {self.tdim}" if mpc.target_dim else ""),
            "feature_stride_s": self.feature_stride_s,
            "dim": int(self.txe.dim),
        }
        m.update(meta or {})
        arch = arch_spec(
            "moviessl.models.txe:build_txe", preset=self.cfg.model.txe, in_dim=self.in_dim, **txe_kwargs(self.cfg)
        )
        return save_checkpoint(
            path, stage="context", arch=arch, state_dict=self.txe.state_dict(), config=to_dict(self.cfg), meta=m
        )
