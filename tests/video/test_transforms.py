import numpy as np
import pytest
import torch

from moviessl.video import MEAN, STD, crop_box, denormalize, normalize, preprocess, resize_short_side, to_uint8_cthw


def test_resize_short_side_shapes_and_values():
    f = np.full((3, 360, 640, 3), 200, np.uint8)
    assert resize_short_side(f, 256).shape == (3, 256, 455, 3)  # floor(640/360*256) = 455
    assert resize_short_side(f.transpose(0, 2, 1, 3), 256).shape == (3, 455, 256, 3)
    assert (resize_short_side(f, 128) == 200).all()  # a constant image stays constant
    t = torch.full((3, 2, 360, 640), 200, dtype=torch.uint8)
    r = resize_short_side(t, 256)
    assert r.shape == (3, 2, 256, 455) and r.dtype == torch.uint8 and (r == 200).all()
    assert resize_short_side(f, 360) is f


def test_preprocess_layout_and_normalisation():
    f = np.zeros((4, 300, 400, 3), np.uint8)
    f[..., 0] = 255  # red
    x = preprocess(f, short_side=256, crop=224)
    assert x.shape == (3, 4, 224, 224) and x.dtype == torch.float32
    assert torch.allclose(x[0], torch.tensor((1 - MEAN[0]) / STD[0]))
    assert torch.allclose(x[1], torch.tensor((0 - MEAN[1]) / STD[1]))
    assert torch.allclose(denormalize(x)[0], torch.ones(1))
    assert preprocess(f, None, None).shape == (3, 4, 300, 400)


def test_crop_modes_pick_expected_regions():
    f = np.zeros((1, 100, 300, 3), np.uint8)
    f[:, :, :100] = 50
    f[:, :, 100:200] = 150
    f[:, :, 200:] = 250
    vals = {m: preprocess(f, None, 100, m) for m in ("left", "center", "right")}
    for m, v in zip(("left", "center", "right"), (50, 150, 250)):
        assert torch.allclose(denormalize(vals[m]) * 255, torch.tensor(float(v)), atol=1e-3)
    assert crop_box(300, 100, 100, "right") == (200, 0)  # portrait: right means bottom
    g = torch.Generator().manual_seed(0)
    boxes = {crop_box(100, 300, 100, "random", g) for _ in range(20)}
    assert len(boxes) > 5 and all(y == 0 and 0 <= x <= 200 for y, x in boxes)
    with pytest.raises(ValueError):
        crop_box(100, 100, 50, "diagonal")


def test_random_crop_draws_on_the_cpu_whatever_the_default_device():
    """Under a user's ``torch.set_default_device("cuda")`` the offsets were drawn on the GPU: a CPU
    generator was refused, and without one they came from the GPU's stream. They are drawn on the
    CPU, the offsets those drawn before."""
    from default_device import gpu_like_default_device

    expected = [(22, 1), (27, 16), (25, 18)]
    g = torch.Generator().manual_seed(1)
    assert [crop_box(40, 30, 8, "random", g) for _ in range(3)] == expected
    with gpu_like_default_device():
        g = torch.Generator().manual_seed(1)
        assert [crop_box(40, 30, 8, "random", g) for _ in range(3)] == expected
        torch.manual_seed(1)  # no generator: the CPU's default one, as on a CPU default device
        assert [crop_box(40, 30, 8, "random") for _ in range(3)] == expected


def test_center_crop_takes_pyslowfasts_offset_for_odd_margins():
    """PySlowFast's uniform_crop (slowfast/datasets/transform.py) centres at ceil(margin / 2): an odd
    margin leaves its extra pixel above / left of the crop (a 16:9 frame at short side 256: x 116)."""
    assert crop_box(256, 455, 224, "center") == (16, 116)
    assert crop_box(455, 256, 224, "center") == (116, 16)
    assert crop_box(257, 257, 224, "center") == (17, 17)
    assert crop_box(256, 456, 224, "center") == (16, 116)  # even margins: unchanged
    assert crop_box(257, 455, 224, "left") == (17, 0) and crop_box(257, 455, 224, "right") == (17, 231)
    f = np.zeros((1, 5, 9, 3), np.uint8)
    f[0, :, :, 0] = np.arange(9)[None, :]
    f[0, :, :, 1] = np.arange(5)[:, None]
    x = preprocess(f, None, 2, "center")
    got = (denormalize(x) * 255).round()
    assert got[0, 0, 0, 0] == 4 and got[1, 0, 0, 0] == 2  # x ceil(7 / 2) = 4, y ceil(3 / 2) = 2


def test_normalize_batched_and_uint8_layout():
    x = torch.rand(2, 3, 4, 5, 6)
    y = normalize(x)
    assert torch.allclose(y[:, 1], (x[:, 1] - MEAN[1]) / STD[1])
    u = to_uint8_cthw(np.zeros((4, 360, 640, 3), np.uint8), short_side=128)
    assert u.shape == (3, 4, 128, 227) and u.dtype == torch.uint8


def test_squash_keeps_the_whole_frame():
    """VidSitu's loader squashes a 16:9 frame to 224x224: both ends of the long side survive, where a
    centre crop drops them."""
    f = np.zeros((2, 90, 160, 3), np.uint8)
    f[:, :, :20] = 50  # left eighth
    f[:, :, 140:] = 250  # right eighth
    x = denormalize(preprocess(f, 256, 64, "squash")) * 255
    assert x.shape == (3, 2, 64, 64)
    assert torch.allclose(x[..., :7], torch.tensor(50.0), atol=1) and torch.allclose(
        x[..., -7:], torch.tensor(250.0), atol=1
    )
    c = denormalize(preprocess(f, 64, 64, "center")) * 255  # the centre crop keeps neither end
    assert (
        not torch.isclose(c, torch.tensor(50.0), atol=1).any()
        and not torch.isclose(c, torch.tensor(250.0), atol=1).any()
    )
    with pytest.raises(ValueError):
        preprocess(f, 256, None, "squash")


def test_the_dataset_forms_stay_on_the_cpu_whatever_the_default_device():
    """``to_uint8_cthw`` and ``resize_short_side`` of a tensor made their result with ``torch.as_tensor``
    on torch's default device: under a user's ``torch.set_default_device("cuda")`` a CPU clip (a
    dataset's, in a forked loader worker) was moved to the GPU. They keep it on the CPU, the values
    those made before."""
    from default_device import gpu_like_default_device

    frames = np.random.default_rng(0).integers(0, 256, (2, 12, 16, 3), dtype=np.uint8)
    clip = torch.from_numpy(frames).permute(0, 3, 1, 2)

    def made():
        return [to_uint8_cthw(frames), to_uint8_cthw(frames, short_side=6), resize_short_side(clip, 6)]

    cpu = made()
    with gpu_like_default_device():
        got = made()
    assert all(t.device.type == "cpu" and torch.equal(t, c) for t, c in zip(got, cpu))


def test_normalisation_of_a_cpu_clip_stays_on_the_cpu_whatever_the_default_device():
    """The mean and std were made on torch's default device and copied to the clip's: under a user's
    ``torch.set_default_device("cuda")`` a CPU clip (a loader's, the frozen verb cache's) was
    normalised through the GPU, and a meta default device could not copy them at all."""
    from default_device import gpu_like_default_device

    x = torch.rand(2, 3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    want = normalize(x)
    with gpu_like_default_device():
        got = normalize(x)
    assert got.device.type == "cpu" and torch.equal(got, want)


def test_shrinking_filters_the_frame_as_it_says_not_samples_it():
    """Resizing to the short side shrinks with OpenCV's area filter (numpy) or antialiased bilinear
    (torch): columns of period 4 (255, 0, 0, 0) shrunk 4x are their mean, 63.75, everywhere. Every
    check above resized a constant frame, which a point-sampling filter keeps too; it would read
    column 1.5 of each block here, giving 0 (the bright column aliased away)."""
    f = np.zeros((1, 64, 128, 3), np.uint8)
    f[:, :, ::4] = 255
    r = resize_short_side(f, 16)
    assert r.shape == (1, 16, 32, 3) and np.abs(r.astype(float) - 63.75).max() <= 1
    t = torch.from_numpy(np.ascontiguousarray(f.transpose(3, 0, 1, 2)))  # (3, 1, 64, 128)
    rt = resize_short_side(t, 16)
    # (the antialiasing kernel spans 8 columns: at the frame's two edges it is cut and renormalised)
    assert rt.shape == (3, 1, 16, 32) and (rt[..., 1:-1].float() - 63.75).abs().max() <= 1
