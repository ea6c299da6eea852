"""What the Object Transformer reads per LVU video: scene features read on demand."""

import numpy as np
import pytest

import moviessl.features.instances as ins
from moviessl.context.ot_spans import SpanVideo, event_seconds, input_stats, span_tails, span_tokens
from moviessl.errors import BadInputError
from moviessl.tasks.lvu.data import load_inputs, scene_arrays


@pytest.fixture
def small_cache(monkeypatch):
    monkeypatch.setattr(ins, "_feature_cache", type(ins._feature_cache)())
    monkeypatch.setattr(ins, "_feature_cache_bytes", 0)
    monkeypatch.setattr(ins, "FEATURE_CACHE_BYTES", ins.FEATURE_CACHE_BYTES)  # restored after the test
    ins.set_feature_cache(2 * 45 * 8 * 4 / 2**20)  # data.instance_cache_mb: two 45-event films of 8-d float32


def _folder(root, lengths, dim=8, seed=0):
    """VidSitu's layout (no index), films of any length: ``{id}_feats.npy`` and ``{id}_ctx.npy``."""
    rng = np.random.default_rng(seed)
    root.mkdir(exist_ok=True)
    arrays = {}
    for vid, n in lengths.items():
        arrays[vid] = rng.normal(size=(n, dim)).astype(np.float32)
        np.save(root / f"{vid}_feats.npy", arrays[vid])
        np.save(root / f"{vid}_ctx.npy", 2 * arrays[vid] + 1)
    return arrays


def test_scene_features_are_read_on_demand_and_equal_the_eager_ones(tmp_path, small_cache):
    """A task's scene pathway holds every film's event seconds but reads its features when a span
    needs them: spans and input statistics equal those of the arrays in RAM, and the per-process
    cache (shared with the instance features) keeps no more than its bound."""
    arrays = _folder(tmp_path / "ev", {f"m{i}": 45 for i in range(6)})
    scene, stride, desc = scene_arrays(tmp_path / "ev", "feats")
    assert stride == 2.0 and desc.endswith(":feats") and sorted(scene) == sorted(arrays)
    assert all(isinstance(a, ins.LazyFeatures) for a in scene.values())
    assert len(ins._feature_cache) == 2 and ins._feature_cache_bytes == 2 * 45 * 8 * 4  # the last two read
    lazy = load_inputs(scene=scene, scene_stride_s=stride)
    assert lazy.scene_dim == 8 and all(isinstance(v.scene, ins.LazyFeatures) for v in lazy.videos.values())
    eager = {v: SpanVideo(v, scene=a, scene_sec=event_seconds(len(a), stride)) for v, a in arrays.items()}
    for vid, e in eager.items():
        z = lazy.videos[vid]
        np.testing.assert_array_equal(z.scene_sec, e.scene_sec)
        assert span_tails(z, 30) == span_tails(e, 30)
        for tail in span_tails(e, 30):
            a, b = span_tokens(e, tail, 30), span_tokens(z, tail, 30)
            assert a.keys() == b.keys()
            for k in a:
                np.testing.assert_array_equal(a[k], b[k])
    (m1, v1), (m2, v2) = input_stats(list(eager.values()))[1], input_stats(list(lazy.videos.values()))[1]
    assert bool((m1 == m2).all()) and bool((v1 == v2).all())
    assert len(ins._feature_cache) == 2  # still bounded after every film was read again
    ctx, _, _ = scene_arrays(tmp_path / "ev", "ctx", ids=["m1", "m4", "nope"])
    assert sorted(ctx) == ["m1", "m4"]
    np.testing.assert_array_equal(np.asarray(ctx["m4"]), 2 * arrays["m4"] + 1)
    # a file rewritten under a running job must not hand other features to the seconds held in RAM
    np.save(tmp_path / "ev" / "m0_feats.npy", arrays["m1"][:40])
    with pytest.raises(BadInputError, match=r"^\S*m0_feats.npy: rewritten since this job first read it"):
        scene["m0"][0]


def test_a_bad_scene_file_is_one_line_when_the_folder_is_opened(tmp_path, small_cache):
    """Each file is read and checked once when the pathway is built, as before it was read on demand;
    a film without its TxE outputs says how to make them."""
    _folder(tmp_path / "ev", {"m0": 10, "m1": 12})
    (tmp_path / "ev" / "m1_ctx.npy").unlink()
    with pytest.raises(BadInputError, match=r"^\S*m1_ctx.npy: no contextualized features \(extract with --cont"):
        scene_arrays(tmp_path / "ev", "ctx")
    bad = np.ones((12, 8), np.float32)
    bad[3, 5] = np.nan
    np.save(tmp_path / "ev" / "m1_feats.npy", bad)
    with pytest.raises(BadInputError, match=r"^\S*m1_feats.npy: 1 non-finite value"):
        scene_arrays(tmp_path / "ev", "feats")
