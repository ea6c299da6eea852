"""Event features: extraction (``moviessl extract``) and the feature-folder reader."""

from .store import CTX_SUFFIX, FEATS_SUFFIX, INDEX_NAME, FeatureStore, read_index

__all__ = ["FeatureStore", "read_index", "FEATS_SUFFIX", "CTX_SUFFIX", "INDEX_NAME"]
