"""The headroom module's pixel statistics at every valid SynthMovies frame size."""

from __future__ import annotations

import numpy as np
import pytest

from moviessl.synth.headroom import pixel_event_features, pixel_movie_features


@pytest.mark.parametrize("size", [32, 36, 52, 64, 66, 112])
def test_pixel_features_at_any_valid_size(size):
    """Any even size >= 32 is a valid dataset (``--size``): the event statistics' 4x4 motion cells
    crashed where the small map's side is not a multiple of 4 (36, 52, ...), and their length must
    not depend on the size (the transfer row fits on 64-px action clips, reads the movies' events)."""
    frames = np.random.default_rng(0).integers(0, 255, (60, size, size, 3), dtype=np.uint8)
    f = pixel_event_features(frames)
    assert f.shape == (39,) and np.isfinite(f).all()
    assert np.isfinite(pixel_movie_features(frames[::30])).all()


def test_main_on_a_folder_that_is_not_synthmovies_is_one_line(tmp_path, capsys):
    """It ended in a FileNotFoundError traceback."""
    from moviessl.synth.headroom import main

    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "nowhere")])
    assert e.value.code == 2
    assert "not a SynthMovies folder" in capsys.readouterr().err
