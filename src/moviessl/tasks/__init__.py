"""Tasks on top of the pretrained hierarchy, one sub-package per benchmark.

- :mod:`.base` -- the benchmark-agnostic layer: the ``TaskSpec`` protocol, the one ``TaskModule``,
  K seeded runs with skip-if-done and mean ± SE;
- :mod:`.encoder` -- the visual side every task shares (backbone -> TxE -> event tokens);
- :mod:`.vidsitu` -- VidSitu's verb / SRL / relation tasks and ``moviessl finetune vidsitu``.
"""
