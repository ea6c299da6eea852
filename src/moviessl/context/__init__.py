"""Event-level pretraining of the contextualizer: TxE by event mask prediction (paper §3.3).

- :mod:`.maskpred` -- span masks, max-discrepancy placement, targets, the L2 loss, fill-in accuracy
  (Eq. 1 itself is :func:`moviessl.ssl.losses.info_nce_queue`);
- :mod:`.windows` -- windows of N event tokens from feature folders;
- :mod:`.module` -- the LightningModule; :func:`.pretrain.pretrain_context` -- the library call
  behind ``moviessl pretrain-context`` (:mod:`.cli`).
"""
