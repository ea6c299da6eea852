import numpy as np
import pytest

from moviessl.optim import warmup_schedule as warmup_cosine
from moviessl.ssl.data import cvrl_gap, sample_cvrl_starts
from moviessl.video.timeline import clip_timeline, timeline_length, timeline_to_native


def _gaps(total, n, s, p, k=6000, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(k):
        a, b, wrap = sample_cvrl_starts(total, n, s, p, rng)
        assert not wrap
        out.append(abs(a - b))
    return np.array(out)


def _cdf(k, m, p):
    return -(k ** (p + 1)) / (p * m ** (p + 1)) + k * (p + 1) / (p * m)


@pytest.mark.parametrize("p", [1.0, 2.0, 0.5])
def test_gap_distribution_matches_cdf(p):
    total, n, s = 400, 16, 4
    m = total - (n - 1) * s  # 340
    g = _gaps(total, n, s, p)
    assert g.min() >= 0 and g.max() <= m
    # KS statistic against the (floored) analytic CDF: P(gap <= k) = F(k + 1)
    ks = np.arange(0, m)
    emp = np.searchsorted(np.sort(g), ks, side="right") / len(g)
    ks_stat = np.abs(emp - _cdf(np.minimum(ks + 1, m), m, p)).max()
    assert ks_stat < 1.36 / np.sqrt(len(g)) + 1.0 / m, ks_stat  # 95% KS bound (+ one frame of flooring)
    if p == 1.0:
        assert abs(g.mean() - m / 3) < 0.03 * m  # triangular density: mean M/3


def test_uniform_u_gives_decreasing_histogram_and_closed_form():
    assert cvrl_gap(90, 0.0) == 0 and cvrl_gap(90, 0.75) == 45  # 90 * (1 - sqrt(0.25))
    h, _ = np.histogram(_gaps(200, 8, 4, 1.0, k=5000), bins=4)
    assert np.all(np.diff(h) < 0)


def test_clips_fit_and_order_is_random():
    rng = np.random.default_rng(1)
    firsts_later = 0
    for _ in range(2000):
        a, b, _ = sample_cvrl_starts(100, 8, 4, 1.0, rng)
        assert 0 <= a <= 100 - 1 - 28 and 0 <= b <= 100 - 1 - 28  # both clips end by the last frame, 99
        firsts_later += a > b
    assert 800 < firsts_later < 1200


def test_degenerate_short_video_wraps():
    rng = np.random.default_rng(0)
    # a clip of 16 x 4 spans 61 timeline frames: 60 frames are still too short, so the starts are
    # free draws over the video (tiled), not both 0 (M = 0 left no room for any start)
    draws = [sample_cvrl_starts(60, 16, 4, 1.0, rng) for _ in range(50)]
    assert all(w for _, _, w in draws) and len({(a, b) for a, b, _ in draws}) > 40
    a, b, wrap = sample_cvrl_starts(20, 16, 4, 1.0, rng)
    assert wrap and 0 <= a < 20 and 0 <= b < 20
    idx = clip_timeline(a, 16, 4, 20)
    assert idx.max() < 20 and len(idx) == 16
    # a clip longer than the video tiles it from its first frame again (clamping to the last frame
    # also kept every index below 20)
    assert clip_timeline(5, 6, 4, 20).tolist() == [5, 9, 13, 17, 1, 5]
    assert clip_timeline(2, 3, 4, 100).tolist() == [2, 6, 10]


def test_timeline_mapping():
    assert timeline_length(60, 15.0) == 120
    # a whole-frame timeline only: 7 frames at 25 fps last 0.28 s = 8.4 timeline frames -> 8
    # (ceil gave 9, one timeline frame past the video; every case above was a whole number)
    assert timeline_length(7, 25.0) == 8 and timeline_length(100, 30000 / 1001) == 100
    assert timeline_length(0, 30.0) == 1 and timeline_length(12, 0.0) == 12
    np.testing.assert_array_equal(timeline_to_native(np.array([0, 1, 2, 3, 200]), 60, 15.0), [0, 0, 1, 1, 59])
    np.testing.assert_array_equal(timeline_to_native(np.array([0, 5, 9]), 10, 30.0), [0, 5, 9])


def test_warmup_cosine():
    assert warmup_cosine(0, 100, 10) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10) == pytest.approx(0.5)
    assert warmup_cosine(100, 100, 10) == pytest.approx(0.0)


def test_shift_pair_reaches_every_gap_the_video_allows():
    """MoDist's shift pair on a video shorter than the largest shift: the gap is clamped to the last
    start, m - 1 (clips at the first and the last start), and is drawn there too; ``int(uniform(lo,
    hi))`` with hi = m - 1 never drew m - 1. Unclamped, the gap spans [lo, hi] frames."""
    from moviessl.ssl.data import sample_shift_starts

    rng = np.random.default_rng(0)
    total, frames, stride = 64, 8, 2  # m = 64 - 14 = 50 starts
    gaps = []
    for _ in range(3000):
        a, b, wrap = sample_shift_starts(total, frames, stride, (0.5, 10.0), rng)
        assert not wrap and 0 <= min(a, b) and max(a, b) + (frames - 1) * stride < total
        gaps.append(abs(a - b))
    assert min(gaps) >= 15 and max(gaps) == 49
    gaps = [abs(a - b) for a, b, _ in (sample_shift_starts(400, 8, 2, (0.1, 0.2), rng) for _ in range(2000))]
    assert set(gaps) == {3, 4, 5, 6}
