"""RoIAlign on grid_sample against hand computations."""

import pytest
import torch

from moviessl.models.roi import roi_align, roi_features


def test_linear_map_gives_the_bin_centres():
    # bilinear interpolation is exact on a linear map, and the mean of the sub-samples of a bin
    # is the value at the bin's centre: f(y, x) = 10 y + x at pixel centres (integer indices)
    H, W = 5, 6
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    fmap = (10 * ys + xs)[None, None]
    # box [x1, y1, x2, y2] = [1, 1, 4, 3] in pixel-edge coordinates; aligned: pixel-index = coord - 0.5
    out = roi_align(fmap, torch.tensor([[0, 1.0, 1.0, 4.0, 3.0]]), (2, 3), sampling_ratio=2, aligned=True)
    # bins are 1 x 1; centres at x = 1.5, 2.5, 3.5 and y = 1.5, 2.5 (edge coords) -> index - 0.5
    want = torch.tensor(
        [[10 * 1.0 + 1.0, 10 * 1.0 + 2.0, 10 * 1.0 + 3.0], [10 * 2.0 + 1.0, 10 * 2.0 + 2.0, 10 * 2.0 + 3.0]]
    )
    assert out.shape == (1, 1, 2, 3)
    assert torch.allclose(out[0, 0], want, atol=1e-5)


def test_two_by_two_map_by_hand():
    # map [[0, 1], [2, 3]]; one bin, sampling ratio 1, box = the whole map [0, 0, 2, 2]:
    # the single sample is at the box centre (1, 1) -> index (0.5, 0.5): mean of the 4 values
    fmap = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    out = roi_align(fmap, torch.tensor([[0, 0.0, 0.0, 2.0, 2.0]]), 1, sampling_ratio=1)
    assert out.item() == pytest.approx(1.5)
    # sampling ratio 2: samples at index (0, 0), (0, 1), (1, 0), (1, 1) -> the mean again, 1.5
    assert roi_align(fmap, torch.tensor([[0, 0.0, 0.0, 2.0, 2.0]]), 1, sampling_ratio=2).item() == pytest.approx(1.5)
    # box [0, 0, 1, 1] (the top-left pixel), 2x2 bins, ratio 1: samples at index (-0.25, -0.25)...
    # clamped to 0 (within one pixel of the map, torchvision's border rule) and at 0.25:
    #   bin (0,0): (-0.25,-0.25) -> f(0,0) = 0
    #   bin (0,1): (y=-0.25 -> 0, x=0.25) -> 0.75*0 + 0.25*1 = 0.25
    #   bin (1,0): (y=0.25, x -> 0) -> 0.75*0 + 0.25*2 = 0.5
    #   bin (1,1): (0.25, 0.25) -> 0.5625*0 + 0.1875*1 + 0.1875*2 + 0.0625*3 = 0.75
    out = roi_align(fmap, torch.tensor([[0, 0.0, 0.0, 1.0, 1.0]]), 2, sampling_ratio=1)
    assert torch.allclose(out[0, 0], torch.tensor([[0.0, 0.25], [0.5, 0.75]]))
    # legacy (aligned=False): box [0, 0, 1, 1] -> samples at 0.25 / 0.75 in index space
    out = roi_align(fmap, torch.tensor([[0, 0.0, 0.0, 1.0, 1.0]]), 2, sampling_ratio=1, aligned=False)
    f = lambda y, x: (1 - y) * (1 - x) * 0 + (1 - y) * x * 1 + y * (1 - x) * 2 + y * x * 3  # noqa: E731
    want = torch.tensor([[f(0.25, 0.25), f(0.25, 0.75)], [f(0.75, 0.25), f(0.75, 0.75)]])
    assert torch.allclose(out[0, 0], want)


def test_far_outside_is_zero_and_batch_index_picks_the_map():
    fmap = torch.stack([torch.ones(1, 3, 3), 2 * torch.ones(1, 3, 3)])
    rois = torch.tensor([[1, 0.0, 0.0, 3.0, 3.0], [0, 10.0, 10.0, 12.0, 12.0]])
    out = roi_align(fmap, rois, 2)
    assert torch.allclose(out[0], torch.full((1, 2, 2), 2.0))  # the second map
    assert torch.allclose(out[1], torch.zeros(1, 2, 2))  # more than a pixel beyond the map


def test_roi_features_pools_time_and_bins():
    # (B, C, T, H, W): temporal mean then RoIAlign then spatial max over the bins
    fmap = torch.zeros(1, 2, 2, 4, 4)
    fmap[0, 0, 0] = 4.0  # channel 0: mean over time = 2
    fmap[0, 1, :, 0, 0] = 8.0  # channel 1: only the top-left cell
    f = roi_features(fmap, torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([0]), resolution=4, sampling_ratio=1)
    assert f.shape == (1, 2)
    assert f[0, 0].item() == pytest.approx(2.0)
    assert f[0, 1].item() == pytest.approx(8.0)  # the max over bins finds the corner
    avg = roi_features(fmap, torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([0]), 4, 1, pool="avg")
    assert avg[0, 1].item() == pytest.approx(8.0 / 16)


@pytest.mark.parametrize("index", [-1.0, 2.0, 0.5])
def test_a_batch_index_outside_the_batch_is_refused(index):
    """-1 silently pooled the last map (Python's negative indexing), 0.5 the first (truncated), 2 of a
    batch of 2 an IndexError from deep in the gather."""
    fmap = torch.stack([torch.ones(1, 3, 3), 2 * torch.ones(1, 3, 3)])
    with pytest.raises(ValueError, match=r"batch indices must be whole numbers in \[0, 2\)"):
        roi_align(fmap, torch.tensor([[0, 0.0, 0.0, 3.0, 3.0], [index, 0.0, 0.0, 3.0, 3.0]]), 2)
