import numpy as np
import pytest

from moviessl.video import clip_indices, event_centers, timeline_indices


def test_vidsitu_reference_windows():
    # VidSitu get_sequence: range(c - 32, c + 32, 4) around c = int((k - 0.5) * 60), clamped to [0, 299]
    for k in range(1, 6):
        c = int((k - 0.5) * 60)
        ref = np.clip(np.arange(c - 32, c + 32, 4), 0, 299)
        assert clip_indices(2 * k - 1.0, 16, 4, 30.0, 300).tolist() == ref.tolist()
    assert clip_indices(1.0, 16, 4, 30.0, 300)[:2].tolist() == [0, 2]
    assert clip_indices(9.0, 16, 4, 30.0, 300)[-1] == 298


def test_other_rates_and_clamping():
    # 60 fps: timeline frame j -> native 2j; 15 fps: j -> j // 2; short video clamps at the end
    assert clip_indices(5.0, 8, 2, 60.0, 600).tolist() == [2 * j for j in range(142, 158, 2)]
    assert clip_indices(5.0, 8, 2, 15.0, 150).tolist() == [j // 2 for j in range(142, 158, 2)]
    assert clip_indices(0.5, 16, 4, 30.0, 20).tolist() == [min(max(j, 0), 19) for j in range(-17, 47, 4)]
    # 29.97: timeline time j/30 -> floor(j / 30 * 29.97)
    fps = 30000 / 1001
    got = clip_indices(300.0, 4, 4, fps, 100000)
    assert got.tolist() == [int(np.floor(j / 30 * fps + 1e-6)) for j in range(9000 - 8, 9000 + 8, 4)]
    with pytest.raises(ValueError):
        clip_indices(1.0, 16, 4, 30.0, 0)


def test_event_centers():
    assert event_centers(10.0) == [1.0, 3.0, 5.0, 7.0, 9.0]
    assert event_centers(9.97) == [1.0, 3.0, 5.0, 7.0, 9.0]  # VidSitu segments a frame short
    assert event_centers(10.9) == [1.0, 3.0, 5.0, 7.0, 9.0]
    assert event_centers(11.0) == [1.0, 3.0, 5.0, 7.0, 9.0, 11.0]
    assert event_centers(0.4) == [1.0]
    assert event_centers(6.0, stride_s=1.0) == [0.5, 1.5, 2.5, 3.5, 4.5, 5.5]
    assert event_centers(9.0, stride_s=3.0) == [1.5, 4.5, 7.5]


def test_centres_off_the_whole_second_take_the_timeline_frame_they_fall_in():
    """Every test above centres a clip on a whole second; centres of other strides (``--stride 1.2``:
    0.6, 1.8, 3.0 s) and half frames take ``c = floor(center_s * 30)`` as VidSitu's ``int()`` does:
    1.8 s is frame 54 though 1.2 * 1.5 * 30 is 53.99999999999999 in floats, and 0.25 s (7.5 frames)
    is frame 7, not 8."""
    centres = event_centers(4.0, stride_s=1.2)
    assert centres[1] * 30 < 54  # the float product falls short of the frame
    assert timeline_indices(centres[1], 4, 2).tolist() == [50, 52, 54, 56]
    assert clip_indices(centres[1], 4, 2, 30.0, 300).tolist() == [50, 52, 54, 56]
    assert timeline_indices(0.25, 4, 2).tolist() == [3, 5, 7, 9]
    assert timeline_indices(0.25 + 2 / 30, 4, 2).tolist() == [5, 7, 9, 11]  # 9.5 frames: frame 9
