"""The backbone config's [min, max] pairs are checked when it is loaded."""

import pytest

from moviessl.config import load_config
from moviessl.errors import BadInputError


@pytest.mark.parametrize(
    "setting",
    [
        "augment.area=[0.9,0.1]",  # TF's sampler: no box between, so every crop was the whole frame
        "augment.area=[0.3,1.5]",
        "augment.area=[0.5]",
        "augment.aspect=[0,2]",  # math domain error at the first step, after the caches were built
        "augment.aspect=[2,0.5]",
        "augment.blur_sigma=[0,2]",  # sigma 0 is a NaN kernel, and a NaN loss
        "augment.blur_sigma=[2,0.1]",
        "data.shift_s=[10,0.5]",  # every pair's shift drawn anywhere in the video instead
        "data.shift_s=[-1,3]",  # a negative shift put the second clip before the video's start
        "data.shift_s=[5]",  # a ValueError traceback in the loader
        "data.shift_s=[0.5,10,20]",
    ],
)
def test_a_range_that_is_not_min_max_is_refused_at_config_load(setting):
    key = setting.split("=")[0]
    with pytest.raises(BadInputError, match=key.replace(".", r"\.")):
        load_config("backbone", "paper", [setting])


def test_the_presets_ranges_and_their_edges_load():
    for preset in ("paper", "cpu"):
        load_config("backbone", preset)
    cfg = load_config(
        "backbone",
        "paper",
        ["augment.area=[1,1]", "augment.aspect=[1,1]", "augment.blur_sigma=[0.5,0.5]", "data.shift_s=[0,0]"],
    )
    assert cfg.augment.area == [1.0, 1.0] and cfg.data.shift_s == [0.0, 0.0]


def test_pretrain_backbone_help_says_where_decoded_frames_are_cached(capsys):
    """Pretraining on a user's own movies (`--data my_movies/clips.txt`) left a hidden
    `my_movies/.moviessl_cache` of decoded frames (GBs for a feature film at the cpu preset's 64 px)
    that no help text or README line mentioned."""
    import pytest

    from moviessl import cli

    with pytest.raises(SystemExit):
        cli.main(["pretrain-backbone", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "cached in <list folder>/.moviessl_cache" in out and "data.cache_dir" in out
    assert "OUT/cache where that folder is not writable" in out
