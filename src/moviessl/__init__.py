"""moviessl: hierarchical self-supervised representation learning for movies.

The package mirrors the paper's hierarchy:

- ``moviessl.video``    video files -> clips of T frames at stride s, 2-s events, augmentation
- ``moviessl.models``   Slow-D backbone, TxE contextualizer (and task decoders in ``tasks``)
- ``moviessl.ssl``      clip level: CVRL / MoDist backbone pretraining (one file per method)
- ``moviessl.context``  event level: TxE pretraining by event mask prediction
- ``moviessl.features`` event-feature extraction and the on-disk feature store
- ``moviessl.tasks``    the task layer and one package per benchmark (VidSitu: verbs, roles, relations)
- ``moviessl.eval``     official-semantics metrics (VidSitu), mean +- standard error
- ``moviessl.synth``    SynthMovies, the generated benchmark with ground truth
- ``moviessl.data``     readers of the released dataset layouts (VidSitu, LVU, clip lists)

For notebooks: ``moviessl.load``, ``moviessl.embed_video``, ``moviessl.evaluate_submission``
(:mod:`moviessl.api`, imported on first use so ``import moviessl`` stays light).
"""

__version__ = "0.1.0"

_API = ("load", "embed_video", "evaluate_submission", "Loaded", "Embedding")


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'moviessl' has no attribute {name!r}")
