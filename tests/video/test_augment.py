"""ConsistentAugment: one draw per clip shared by its frames; clips independent; ops exact."""

import math

import numpy as np
import pytest
import torch

from moviessl.video import MEAN, STD, ConsistentAugment, cvrl_augment_pair
from moviessl.video.augment import (
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    gaussian_blur,
    hsv_to_rgb,
    rgb_to_gray,
    rgb_to_hsv,
)


def _clips(b=6, t=4, h=48, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    frame = torch.rand(1, 3, 1, h, w, generator=g)
    return frame.expand(b, 3, t, h, w).contiguous()  # identical frames, identical clips


def test_shape_range_and_generator_determinism():
    aug = ConsistentAugment(32, blur_p=0.5, solarize_p=0.2)
    x = torch.rand(5, 3, 4, 48, 64)
    y1 = aug(x, torch.Generator().manual_seed(3))
    y2 = aug(x, torch.Generator().manual_seed(3))
    y3 = aug(x, torch.Generator().manual_seed(4))
    assert y1.shape == (5, 3, 4, 32, 32) and y1.dtype == torch.float32
    assert torch.equal(y1, y2) and not torch.equal(y1, y3)
    lo, hi = (0 - MEAN[0]) / STD[0], (1 - MEAN[0]) / STD[0]
    assert y1.min() >= lo - 1e-5 and y1.max() <= hi + 1e-5
    u = aug((x * 255).round().to(torch.uint8), torch.Generator().manual_seed(3))  # uint8 accepted
    assert (u - y1).abs().max() < 0.05


def test_temporal_consistency_all_ops_on():
    # All T input frames equal -> all T output frames equal: crop, flip, colour, blur, solarise
    # were applied with the same parameters to every frame of a clip.
    aug = ConsistentAugment(32, blur_p=1.0, solarize_p=0.5, jitter_p=1.0, gray_p=0.5)
    y = aug(_clips(b=8, t=5), torch.Generator().manual_seed(0))
    assert torch.allclose(y, y[:, :, :1].expand_as(y), atol=1e-5)


def test_independent_across_clips():
    aug = ConsistentAugment(32, blur_p=0.5)
    p = aug.sample_params(64, 48, 64, torch.Generator().manual_seed(0))
    assert len({tuple(b.tolist()) for b in p["box"]}) == 64  # a different crop for every clip
    assert 10 < int(p["flip"].sum()) < 54
    assert len({tuple(o.tolist()) for o in p["order"]}) > 5  # colour ops in per-clip random order
    y = aug(_clips(b=8), torch.Generator().manual_seed(1))
    flat = y.flatten(1)
    assert all(not torch.allclose(flat[i], flat[j]) for i in range(8) for j in range(i + 1, 8))


def test_parameter_ranges():
    aug = ConsistentAugment(224)
    H, W = 256, 455
    p = aug.sample_params(2000, H, W, torch.Generator().manual_seed(0))
    y0, x0, ch, cw = p["box"].unbind(1)
    area = ch * cw / (H * W)
    assert area.min() >= 0.3 - 0.01 and area.max() <= 1.0 + 1e-6
    assert (cw / ch).min() >= 0.5 - 0.02 and (cw / ch).max() <= 2.0 + 0.02
    assert (y0 >= 0).all() and (y0 + ch <= H).all() and (x0 >= 0).all() and (x0 + cw <= W).all()
    assert abs(p["jitter"].float().mean() - 0.8) < 0.04 and abs(p["gray"].float().mean() - 0.2) < 0.04
    f = p["factors"]
    assert f.min() >= 0.2 and f.max() <= 1.8 and p["hue"].abs().max() <= 0.2
    # each factor uniform in [1 - s, 1 + s] and the hue shift in [-h, h]: both ends reached, centred
    assert (f.min(0).values < 0.3).all() and (f.max(0).values > 1.7).all() and ((f.mean(0) - 1).abs() < 0.04).all()
    assert p["hue"].min() < -0.18 and p["hue"].max() > 0.18 and p["hue"].mean().abs() < 0.01
    assert p["sigma"].min() >= 0.1 and p["sigma"].max() <= 2.0
    assert aug.blur_kernel == 23  # 224 // 10 -> odd
    a1, a2 = cvrl_augment_pair(224)
    g = torch.Generator().manual_seed(0)
    assert a1.sample_params(1000, H, W, g)["blur"].all() and not a1.sample_params(1000, H, W, g)["solarize"].any()
    q = a2.sample_params(4000, H, W, g)
    assert abs(q["blur"].float().mean() - 0.1) < 0.02 and abs(q["solarize"].float().mean() - 0.2) < 0.02


def test_crop_boxes_aspect_position_and_fallback():
    """torchvision's RandomResizedCrop: aspect log-uniform (as many boxes wider than tall as taller),
    position uniform over every place the box fits, and a frame no attempt fits in gives the whole
    frame cut to the nearest aspect in range."""
    from moviessl.video.augment import random_resized_boxes

    g = torch.Generator().manual_seed(0)
    _, _, ch, cw = random_resized_boxes(4000, 1000, 1000, area=(0.1, 0.2), generator=g)  # every box fits
    assert (cw / ch).log().mean().abs() < 0.03  # uniform aspects in [0.5, 2] would give 0.155
    y0, x0, ch, cw = random_resized_boxes(400, 10, 10, area=(0.81, 0.81), aspect=(1, 1), generator=g)
    assert (ch == 9).all() and (cw == 9).all()
    assert set(y0.tolist()) == {0.0, 1.0} and set(x0.tolist()) == {0.0, 1.0}
    # 40x100 at area 1 and aspect 1.5 is 52 high: the fallback is 40 high, 60 wide; its transpose 60 high, 40 wide
    y0, x0, ch, cw = random_resized_boxes(50, 40, 100, area=(1, 1), aspect=(1.5, 1.5), generator=g)
    assert (ch == 40).all() and (cw == 60).all() and (y0 == 0).all() and x0.max() <= 40
    _, _, ch, cw = random_resized_boxes(50, 100, 40, area=(1, 1), aspect=(1 / 1.5, 1 / 1.5), generator=g)
    assert (ch == 60).all() and (cw == 40).all()


def test_colour_jitter_runs_in_each_clips_drawn_order_and_only_where_drawn():
    """Three identical clips: the first jittered brightness, contrast, saturation, hue; the second
    in the reverse order (clamping makes the orders differ); the third drawn no jitter, unchanged."""
    from moviessl.video.augment import adjust_brightness

    x = _clips(b=3, t=2)
    jit = _only_geometry(out_size=48, area=(1, 1), aspect=(4 / 3, 4 / 3), flip_p=0, jitter_p=1.0)
    p = jit.sample_params(3, 48, 64)
    p["jitter"] = torch.tensor([True, True, False])
    p["factors"] = torch.tensor([[1.8, 0.3, 1.6]] * 3)
    p["hue"] = torch.full((3,), 0.1)
    p["order"] = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0], [0, 1, 2, 3]])
    y = jit.apply_params(x, p)
    ref = _only_geometry(out_size=48, area=(1, 1), aspect=(4 / 3, 4 / 3), flip_p=0)(x)

    def f(v):
        return torch.full((1,), v)

    ops = [lambda c: adjust_brightness(c, f(1.8)), lambda c: adjust_contrast(c, f(0.3))]
    ops += [lambda c: adjust_saturation(c, f(1.6)), lambda c: adjust_hue(c, f(0.1))]
    forward, backward = ref[:1].clone(), ref[1:2].clone()
    for op in ops:
        forward = op(forward)
    for op in reversed(ops):
        backward = op(backward)
    assert not torch.allclose(forward, backward, atol=1e-3)
    torch.testing.assert_close(y[:1], forward, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(y[1:2], backward, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(y[2:], ref[2:], atol=1e-6, rtol=1e-6)


def _only_geometry(**kw):
    base = dict(jitter_p=0.0, gray_p=0.0, blur_p=0.0, solarize_p=0.0, normalize=False)
    base.update(kw)
    return ConsistentAugment(**base)


def test_full_frame_crop_and_flip_are_exact():
    x = torch.rand(2, 3, 3, 40, 40)
    keep = _only_geometry(out_size=40, area=(1, 1), aspect=(1, 1), flip_p=0.0)
    flip = _only_geometry(out_size=40, area=(1, 1), aspect=(1, 1), flip_p=1.0)
    assert torch.allclose(keep(x), x, atol=1e-5)
    assert torch.allclose(flip(x), x.flip(-1), atol=1e-5)


def test_crop_takes_the_drawn_box():
    aug = _only_geometry(out_size=16, flip_p=0.0)
    x = torch.arange(64.0).view(1, 1, 1, 1, 64).expand(1, 3, 2, 64, 64) / 64  # value = column / 64
    p = aug.sample_params(1, 64, 64)
    p["box"] = torch.tensor([[8.0, 16.0, 32.0, 32.0]])  # top 8, left 16, 32x32 -> 2x downsample
    y = aug.apply_params(x, p)
    # output column j samples input x = 16 + (j + 0.5) * 2 - 0.5, i.e. between columns 16+2j and 17+2j
    expect = (16 + 2 * torch.arange(16.0) + 0.5) / 64
    assert torch.allclose(y[0, 0, 0, 0], expect, atol=1e-5)


def test_a_box_of_a_frame_wider_than_tall_is_cut_where_drawn_and_mirrored_within_itself():
    """The crop's affine map scales and shifts x by the frame's width and y by its height: on square
    frames (every check above) swapping the two changed nothing. Here a 20 x 36 frame of distinct
    values, a box as large as the output (so sampling lands on pixel centres): the output is the
    box's pixels, and flipped, the box's pixels mirrored left to right."""
    H, W = 20, 36
    x = torch.arange(float(H * W)).view(1, 1, 1, H, W).expand(1, 3, 2, H, W) / (H * W)
    keep = _only_geometry(out_size=8, flip_p=0.0)
    p = keep.sample_params(1, H, W)
    p["box"] = torch.tensor([[3.0, 21.0, 8.0, 8.0]])  # top 3, left 21, 8 x 8
    box = x[:, :, :, 3:11, 21:29]
    torch.testing.assert_close(keep.apply_params(x, p), box, atol=1e-5, rtol=0)
    p["flip"] = torch.tensor([True])
    torch.testing.assert_close(keep.apply_params(x, p), box.flip(-1), atol=1e-5, rtol=0)


def test_an_aspect_range_off_one_gives_boxes_of_that_width_over_height():
    """torchvision's ``RandomResizedCrop`` ratio is width / height; the default range (0.5, 2) is
    symmetric in log, so boxes drawn with the ratio inverted looked the same there."""
    from moviessl.video.augment import random_resized_boxes

    g = torch.Generator().manual_seed(0)
    _, _, ch, cw = random_resized_boxes(200, 600, 600, area=(0.2, 0.2), aspect=(1.5, 1.5), generator=g)
    assert ((cw / ch - 1.5).abs() < 0.02).all()
    _, _, ch, cw = random_resized_boxes(200, 600, 600, area=(0.2, 0.2), aspect=(1.2, 2.0), generator=g)
    assert (cw > ch).all()


def test_colour_ops():
    x = _clips(b=3, t=2)
    gray = _only_geometry(out_size=48, area=(1, 1), aspect=(4 / 3, 4 / 3), flip_p=0, gray_p=1.0)
    y = gray(x[..., :48, :64])
    assert torch.allclose(y[:, 0], y[:, 1]) and torch.allclose(y[:, 1], y[:, 2])
    sol = _only_geometry(out_size=48, area=(1, 1), aspect=(4 / 3, 4 / 3), flip_p=0, solarize_p=1.0)
    s = sol(x)
    ref = _only_geometry(out_size=48, area=(1, 1), aspect=(4 / 3, 4 / 3), flip_p=0)(x)
    assert torch.allclose(s, torch.where(ref >= 0.5, 1 - ref, ref))
    # brightness is multiplicative: factor 0.5 halves the pixels (other ops off)
    jit = _only_geometry(out_size=48, area=(1, 1), aspect=(4 / 3, 4 / 3), flip_p=0, jitter_p=1.0)
    p = jit.sample_params(3, 48, 64)
    p["factors"] = torch.tensor([[0.5, 1.0, 1.0]] * 3)
    p["hue"] = torch.zeros(3)
    assert torch.allclose(jit.apply_params(x, p), ref * 0.5, atol=1e-5)


def test_hsv_roundtrip_and_hue_shift():
    x = torch.rand(4, 3, 2, 8, 8)
    assert torch.allclose(hsv_to_rgb(rgb_to_hsv(x)), x, atol=1e-5)
    red = torch.zeros(1, 3, 1, 1, 1)
    red[:, 0] = 1
    hsv = rgb_to_hsv(red)
    hsv[:, 0] = (hsv[:, 0] + 1 / 3) % 1  # +120 degrees: red -> green
    assert torch.allclose(hsv_to_rgb(hsv).flatten(), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)


def _edge_case_clips():
    x = torch.rand(6, 3, 3, 9, 11, generator=torch.Generator().manual_seed(0))
    x[0] = x[0, :1]  # gray clip: chroma 0, hue undefined
    x[1, 0] = x[1, 1]  # ties between channels (max found in two of them)
    x[2] = (x[2] * 4).round() / 4  # many exact ties and exact 0 / 1
    x[3, :, :, :3] = 0  # black rows: value 0
    return x, torch.tensor([0.2, -0.2, 0.05, 0.5, -0.11, 0.0])


def test_colour_ops_bit_identical_to_their_formulas():
    # The fast elementwise forms keep every bit of the textbook ones (channel reductions, a stacked
    # HSV tensor), so trainings recorded before the rewrite reproduce exactly.
    x, shift = _edge_case_clips()
    f = (1 + shift) * 1.5
    w = torch.tensor((0.299, 0.587, 0.114)).view(1, 3, 1, 1, 1)
    gray = (x * w).sum(1, keepdim=True)
    assert torch.equal(rgb_to_gray(x), gray)
    m = gray.mean(dim=(1, 2, 3, 4), keepdim=True)
    fb = f.view(-1, 1, 1, 1, 1)
    assert torch.equal(adjust_contrast(x, f), ((x - m) * fb + m).clamp(0, 1))
    assert torch.equal(adjust_saturation(x, f), ((x - gray) * fb + gray).clamp(0, 1))
    r, g, b = x.unbind(1)
    v, c = x.max(1).values, x.max(1).values - x.min(1).values
    s = torch.where(v > 0, c / v.clamp_min(1e-12), torch.zeros_like(v))
    cc = c.clamp_min(1e-12)
    h = torch.where(v == r, ((g - b) / cc) % 6, torch.where(v == g, (b - r) / cc + 2, (r - g) / cc + 4))
    h = torch.where(c > 0, h / 6, torch.zeros_like(h))
    assert torch.equal(rgb_to_hsv(x), torch.stack((h, s, v), 1))
    h = (h + shift.view(-1, 1, 1, 1)) % 1.0
    ref = torch.stack([v - v * s * torch.clamp(torch.minimum((n + h * 6) % 6, 4 - (n + h * 6) % 6), 0, 1)
                       for n in (5.0, 3.0, 1.0)], 1)  # fmt: skip
    assert torch.equal(adjust_hue(x, shift), ref.clamp(0, 1))


def test_hue_rotation_matches_colorsys():
    import colorsys

    x, shift = _edge_case_clips()
    y, g = adjust_hue(x, shift), torch.Generator().manual_seed(1)
    for i in range(x.shape[0]):
        for j in torch.randperm(x[0, 0].numel(), generator=g)[:40].tolist():
            rgb = x[i].reshape(3, -1)[:, j].tolist()
            hh, ss, vv = colorsys.rgb_to_hsv(*rgb)
            want = colorsys.hsv_to_rgb((hh + float(shift[i])) % 1.0, ss, vv)
            assert torch.allclose(y[i].reshape(3, -1)[:, j], torch.tensor(want), atol=1e-5)


def test_blur_preserves_constant_and_smooths():
    c = torch.full((2, 3, 2, 20, 20), 0.3)
    assert torch.allclose(gaussian_blur(c, torch.tensor([0.5, 2.0]), 5), c, atol=1e-6)
    imp = torch.zeros(1, 3, 1, 21, 21)
    imp[..., 10, 10] = 1
    b = gaussian_blur(imp, torch.tensor([1.0]), 7)
    assert abs(b.sum().item() - 3.0) < 1e-4 and b[..., 10, 10].max() < 0.2
    assert torch.allclose(b, b.flip(-1)) and torch.allclose(b, b.transpose(-1, -2))


def _tf_crop_reference(H, W, area, aspect, rng, attempts=100, min_covered=0.1):
    """TensorFlow's sample_distorted_bounding_box with the whole image as the object, one draw at a
    time as its C++ kernel does (GenerateRandomCrop + SatisfiesOverlapConstraints), in plain Python."""
    lo_a, hi_a = area[0] * W * H, area[1] * W * H
    for _ in range(attempts):
        ar = rng.random() * (aspect[1] - aspect[0]) + aspect[0]
        h, h_max = round(math.sqrt(lo_a / ar)), round(math.sqrt(hi_a / ar))
        if round(h_max * ar) > W:
            h_max = int((W + 0.5 - 1e-7) / ar)
            if round(h_max * ar) > W:
                h_max -= 1
        h_max = min(h_max, H)
        if h >= h_max:
            h = h_max
        else:
            h += int(rng.integers(0, h_max - h + 1))
        w = round(h * ar)
        if w * h < lo_a:
            h += 1
            w = round(h * ar)
        if w * h > hi_a:
            h -= 1
            w = round(h * ar)
        if lo_a <= w * h <= hi_a and w <= W and h <= H and w > 0 and h > 0 and w * h >= min_covered * H * W:
            y = int(rng.integers(0, H - h)) if h < H else 0
            x = int(rng.integers(0, W - w)) if w < W else 0
            return y, x, h, w
    return 0, 0, H, W


@pytest.mark.parametrize("H,W,area,aspect", [(256, 455, (0.3, 1.0), (0.5, 2.0)), (64, 64, (0.08, 0.5), (0.75, 1.333))])
def test_tf_crop_sampler_matches_tensorflows_algorithm(H, W, area, aspect):
    """``crop_sampler="tf"`` (CVRL's code) draws the same box distribution as a one-at-a-time transcription
    of TF's kernel: height and aspect uniform, not area uniform and aspect log-uniform (torchvision)."""
    from moviessl.video.augment import random_resized_boxes

    n = 20000
    g = torch.Generator().manual_seed(0)
    y0, x0, ch, cw = (t.numpy() for t in random_resized_boxes(n, H, W, area, aspect, 100, g, "tf"))
    rng = np.random.default_rng(0)
    ref = np.array([_tf_crop_reference(H, W, area, aspect, rng) for _ in range(n)], dtype=float)
    assert (y0 >= 0).all() and (x0 >= 0).all() and (y0 + ch <= H).all() and (x0 + cw <= W).all()
    a = ch * cw / (H * W)
    assert (a >= area[0] - 1e-6).all() and (a <= area[1] + 1e-6).all()
    for ours, theirs in (
        (ch, ref[:, 2]),
        (cw, ref[:, 3]),
        (cw / ch, ref[:, 3] / ref[:, 2]),
        (y0, ref[:, 0]),
        (x0, ref[:, 1]),
    ):
        assert abs(ours.mean() - theirs.mean()) < 0.02 * theirs.std() + 0.2
        assert abs(np.quantile(ours, 0.25) - np.quantile(theirs, 0.25)) <= 0.03 * theirs.std() + 1
        assert abs(np.quantile(ours, 0.75) - np.quantile(theirs, 0.75)) <= 0.03 * theirs.std() + 1
    # and it is not torchvision's distribution
    ty0, tx0, tch, tcw = (t.numpy() for t in random_resized_boxes(n, H, W, area, aspect, 100, g))
    assert abs((cw / ch).mean() - (tcw / tch).mean()) > 0.05 or abs(ch.mean() - tch.mean()) > 0.05 * ch.std()


def test_tf_op_style_is_cvrls_tensorflow_ops():
    """``op_style="tf"``: contrast blends each channel with its own mean over the clip (TF's adjust_contrast
    on the stacked frames), saturation scales HSV saturation (TF's adjust_saturation), the blur pads with
    zeros (depthwise_conv2d 'SAME'); the default keeps torchvision's ops."""
    import colorsys

    from moviessl.video.augment import adjust_contrast_tf, adjust_saturation_tf

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 2, 5, 6, generator=g)
    f = torch.tensor([0.4, 1.7])
    mean = x.mean(dim=(2, 3, 4), keepdim=True)  # per clip and channel
    assert torch.allclose(adjust_contrast_tf(x.clone(), f), ((x - mean) * f.view(2, 1, 1, 1, 1) + mean).clamp(0, 1))
    assert not torch.allclose(adjust_contrast_tf(x.clone(), f), adjust_contrast(x.clone(), f))
    sat = adjust_saturation_tf(x.clone(), f)
    for b in range(2):
        for t, i, j in ((0, 0, 0), (1, 4, 5), (0, 2, 3)):
            h, s, v = colorsys.rgb_to_hsv(*x[b, :, t, i, j].tolist())
            ref = colorsys.hsv_to_rgb(h, min(1.0, s * float(f[b])), v)
            assert torch.allclose(sat[b, :, t, i, j], torch.tensor(ref), atol=1e-5)
    flat = torch.full((1, 3, 2, 12, 12), 0.5)
    sigma = torch.tensor([2.0])
    assert torch.allclose(gaussian_blur(flat, sigma, 7), flat)  # reflect: a flat image stays flat
    zeros = gaussian_blur(flat, sigma, 7, "zeros")
    assert torch.allclose(zeros[..., 6, 6], flat[..., 6, 6]) and (zeros[..., 0, 0] < 0.4).all()
    tf_aug, tv_aug = ConsistentAugment(16, op_style="tf"), ConsistentAugment(16)
    p = tv_aug.sample_params(2, 5, 6, torch.Generator().manual_seed(1))
    p["jitter"][:], p["blur"][:] = True, True
    assert not torch.allclose(tf_aug.apply_params(x.clone(), p), tv_aug.apply_params(x.clone(), p))
    with pytest.raises(ValueError, match="op style"):
        ConsistentAugment(16, op_style="keras")
