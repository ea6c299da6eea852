"""moviessl: hierarchical self-supervised representation learning for movies.

The package mirrors the paper's hierarchy:

- ``moviessl.video``    video files -> clips of T frames at stride s, 2-s events, augmentation
- ``moviessl.models``   Slow-D backbone, TxE contextualizer (and task decoders in ``tasks``)
- ``moviessl.ssl``      CVRL / MoDist backbone pretraining, event mask prediction for TxE
- ``moviessl.features`` event-feature extraction and the on-disk feature store
- ``moviessl.tasks``    VidSitu verb / semantic roles (TxD) / event relations
- ``moviessl.eval``     official-semantics metrics (VidSitu), mean +- standard error
- ``moviessl.synth``    SynthMovies, the generated benchmark with ground truth
- ``moviessl.data``     readers of the released dataset layouts (VidSitu, LVU, clip lists)
"""

__version__ = "0.1.0"
