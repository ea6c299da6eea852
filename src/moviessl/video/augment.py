"""Batched, temporally consistent augmentation for self-supervised video training (pure torch).

CVRL (Qian et al. 2021, section 3.2; the official code's ``video_ssl_preprocess_ops.py``) draws
every random parameter once per clip and applies it to all T frames, so the augmentation cannot
inject fake motion; two clips of a pair are augmented independently. Here a whole batch
``(B, 3, T, H, W)`` is augmented at once on its device (call it from ``on_after_batch_transfer``):
the crop/flip is one ``grid_sample`` with a per-clip affine grid shared by the clip's frames, and
colour ops act on per-clip factors.

Order (CVRL): random resized crop -> flip -> colour jitter (p, random op order, clip to [0,1]
after each) -> grayscale -> Gaussian blur -> solarise -> clip -> normalise.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .transforms import MEAN, STD, normalize

_GRAY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as torchvision / TF rgb_to_grayscale


def rgb_to_gray(x: torch.Tensor) -> torch.Tensor:
    """``(N, 3, ...)`` -> ``(N, 1, ...)`` luma (three scaled adds: the same bits as a weighted sum over
    the channel dim, without its strided reduction)."""
    r, g, b = x.unbind(1)
    return (r * _GRAY[0]).add_(g * _GRAY[1]).add_(b * _GRAY[2]).unsqueeze(1)


def _bcast(f: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return f.view(-1, *([1] * (x.dim() - 1)))


def _blend(x: torch.Tensor, anchor: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """``(x - anchor) * f + anchor`` clipped to [0, 1], in one buffer."""
    return (x - anchor).mul_(_bcast(f, x)).add_(anchor).clamp_(0, 1)


def adjust_brightness(x, f):
    """Multiplicative brightness (SimCLR v2 / CVRL), factor per clip."""
    return (x * _bcast(f, x)).clamp_(0, 1)


def adjust_contrast(x, f):
    """Blend with the clip's mean luma (over all frames, so every frame gets the same blend)."""
    return _blend(x, rgb_to_gray(x).mean(dim=tuple(range(1, x.dim())), keepdim=True), f)


def adjust_saturation(x, f):
    return _blend(x, rgb_to_gray(x), f)


def adjust_contrast_tf(x, f):
    """TensorFlow's ``adjust_contrast`` on the clip stacked into one tall image, as CVRL's
    ``random_color_jitter_3d``: each channel blended with its own mean over the whole clip."""
    return _blend(x, x.mean(dim=tuple(range(2, x.dim())), keepdim=True), f)


def adjust_saturation_tf(x, f):
    """TensorFlow's ``adjust_saturation``: the HSV saturation scaled by ``f`` and clipped to [0, 1]."""
    h, s, v = _hsv(x)
    return _hsv_to_rgb(h, (s * _bcast(f, s)).clamp_(0, 1), v).clamp_(0, 1)


def _hsv(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hue (fraction of the circle), saturation and value of ``(N, 3, ...)``, each ``(N, ...)``.
    Channel max / min as elementwise chains: a reduction over the strided channel dim is several
    times slower on CPU."""
    r, g, b = x.unbind(1)
    v = torch.maximum(torch.maximum(r, g), b)
    c = v - torch.minimum(torch.minimum(r, g), b)
    s = torch.where(v > 0, c / v.clamp_min(1e-12), torch.zeros_like(v))
    cc = c.clamp_min(1e-12)
    h = torch.where(v == r, ((g - b) / cc) % 6, torch.where(v == g, (b - r) / cc + 2, (r - g) / cc + 4))
    h = torch.where(c > 0, h / 6, torch.zeros_like(h))
    return h, s, v


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    h6, vs = h * 6, v * s
    out = torch.empty((h.shape[0], 3, *h.shape[1:]), dtype=h.dtype, device=h.device)
    for i, n in enumerate((5.0, 3.0, 1.0)):  # R, G, B
        k = (n + h6) % 6
        torch.sub(v, vs * torch.clamp(torch.minimum(k, 4 - k), 0, 1), out=out[:, i])
    return out


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """Channel dim 1, all in [0, 1] (hue as a fraction of the circle)."""
    return torch.stack(_hsv(x), 1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    return _hsv_to_rgb(*x.unbind(1))


def adjust_hue(x, shift):
    """Rotate hue by ``shift`` (fraction of the circle, per clip)."""
    h, s, v = _hsv(x)
    return _hsv_to_rgb((h + _bcast(shift, h)) % 1.0, s, v).clamp_(0, 1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel: int, padding: str = "reflect") -> torch.Tensor:
    """Separable Gaussian blur of ``(N, C, T, H, W)`` with one sigma per clip; ``padding`` "reflect" or
    "zeros" (SimCLR's and CVRL's ``depthwise_conv2d(padding='SAME')``: the borders darken)."""
    n, c, t, h, w = x.shape
    r = kernel // 2
    pos = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(pos[None] ** 2) / (2 * sigma[:, None].to(x.dtype) ** 2))
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c * t, 0)  # (n*c*t, kernel)
    y = x.reshape(1, n * c * t, h, w)
    mode = {"reflect": "reflect", "zeros": "constant"}[padding]
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode=mode), k[:, None, None, :], groups=n * c * t)
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode=mode), k[:, None, :, None], groups=n * c * t)
    return y.reshape(n, c, t, h, w)


def solarize(x, threshold: float = 0.5):
    return torch.where(x >= threshold, 1 - x, x)


_JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
# op_style: "torchvision" (contrast with the clip's mean luma, saturation as a blend with grey, blur
# padded by reflection) or "tf", CVRL's TensorFlow ops (video_ssl_preprocess_ops.py).
OP_STYLES = {
    "torchvision": (_JITTER_OPS, "reflect"),
    "tf": ((adjust_brightness, adjust_contrast_tf, adjust_saturation_tf, adjust_hue), "zeros"),
}


def to_device(params: dict, device) -> dict:
    """Drawn parameters on ``device``, copied without waiting: a blocking copy from the host first
    waits for all the work queued on a GPU (one wait per parameter, every step)."""
    return {k: v.to(device, non_blocking=True) for k, v in params.items()}


def _uniform(shape, generator: torch.Generator | None = None) -> torch.Tensor:
    """U[0, 1) draws on the generator's device (CPU without one)."""
    return torch.rand(shape, generator=generator, device=generator.device if generator is not None else "cpu")


CROP_SAMPLERS = ("torchvision", "tf")
TF_MIN_OBJECT_COVERED = 0.1  # CVRL's ``min_object_covered``


def random_resized_boxes(
    batch: int,
    height: int,
    width: int,
    area=(0.3, 1.0),
    aspect=(0.5, 2.0),
    attempts: int = 100,
    generator=None,
    sampler: str = "torchvision",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random resized crop boxes of an ``height x width`` frame, one per clip: ``(top, left, height,
    width)`` in pixels (float tensors of ``batch``), rejection sampling vectorised over ``attempts``.

    ``sampler="torchvision"`` (``RandomResizedCrop``): area fraction uniform in ``area``, aspect (w/h)
    log-uniform in ``aspect``; the first box that fits, else the whole frame with its aspect clamped
    into range; position uniform. ``sampler="tf"``: TensorFlow's ``sample_distorted_bounding_box``
    with the whole image as the object (what CVRL's code calls): see :func:`_tf_boxes`."""
    B, H, W = batch, height, width

    def rand(shape):
        return _uniform(shape, generator)

    if sampler == "tf":
        return _tf_boxes(B, H, W, area, aspect, attempts, rand)
    if sampler != "torchvision":
        raise ValueError(f"unknown crop sampler {sampler!r} ({' | '.join(CROP_SAMPLERS)})")

    a = area[0] + (area[1] - area[0]) * rand((B, attempts))
    lo, hi = math.log(aspect[0]), math.log(aspect[1])
    ar = torch.exp(lo + (hi - lo) * rand((B, attempts)))
    cw = torch.round(torch.sqrt(a * H * W * ar))
    ch = torch.round(torch.sqrt(a * H * W / ar))
    ok = (cw >= 1) & (ch >= 1) & (cw <= W) & (ch <= H)
    first = ok.float().argmax(1)
    cw = cw.gather(1, first[:, None])[:, 0]
    ch = ch.gather(1, first[:, None])[:, 0]
    # Fallback when no attempt fits: the whole frame with the aspect clamped into range.
    fw, fh = float(W), float(H)
    if W / H < aspect[0]:
        fh = round(W / aspect[0])
    elif W / H > aspect[1]:
        fw = round(H * aspect[1])
    none = ~ok.any(1)
    cw = torch.where(none, torch.full_like(cw, fw), cw)
    ch = torch.where(none, torch.full_like(ch, fh), ch)
    y0 = torch.floor(rand(B) * (H - ch + 1))
    x0 = torch.floor(rand(B) * (W - cw + 1))
    return y0, x0, ch, cw


def _tf_boxes(B: int, H: int, W: int, area, aspect, attempts: int, rand):
    """TensorFlow's ``sample_distorted_bounding_box`` (``GenerateRandomCrop`` in
    ``tensorflow/core/kernels/image/sample_distorted_bounding_box_op.cc``), vectorised over attempts:
    aspect **uniform** in ``aspect``; the box's *height* uniform over the integers between the heights
    of the smallest and the largest allowed area at that aspect (the largest first cut so the width
    fits, then to the frame's height); width = round(height x aspect), nudged by one row if rounding
    leaves the area range; rejected if it still does not fit. Position uniform in ``[0, H - h)`` and
    ``[0, W - w)`` (0 when the box fills that side); no attempt fitting -> the whole frame. The box must
    also cover ``min_object_covered`` (CVRL: 0.1) of the object, here the whole image."""
    lo_a, hi_a = area[0] * H * W, area[1] * H * W
    ar = aspect[0] + (aspect[1] - aspect[0]) * rand((B, attempts))
    h_min = torch.round(torch.sqrt(lo_a / ar))
    h_max = torch.round(torch.sqrt(hi_a / ar))
    too_wide = torch.round(h_max * ar) > W
    h_fit = torch.floor((W + 0.5 - 1e-7) / ar)
    h_fit = torch.where(torch.round(h_fit * ar) > W, h_fit - 1, h_fit)
    h_max = torch.where(too_wide, h_fit, h_max).clamp(max=H)
    h = torch.minimum(h_min, h_max)
    h = h + torch.floor(rand((B, attempts)) * (h_max - h + 1)).clamp(min=0)
    w = torch.round(h * ar)
    small = w * h < lo_a
    h = torch.where(small, h + 1, h)
    w = torch.round(h * ar)
    big = w * h > hi_a
    h = torch.where(big, h - 1, h)
    w = torch.round(h * ar)
    ok = (w * h >= lo_a) & (w * h <= hi_a) & (w <= W) & (h <= H) & (w >= 1) & (h >= 1)
    ok &= w * h >= TF_MIN_OBJECT_COVERED * H * W  # the whole image is the object
    first = ok.float().argmax(1, keepdim=True)
    none = ~ok.any(1)
    ch = torch.where(none, torch.full_like(none, H, dtype=h.dtype), h.gather(1, first)[:, 0])
    cw = torch.where(none, torch.full_like(none, W, dtype=w.dtype), w.gather(1, first)[:, 0])
    y0 = torch.floor(rand(B) * (H - ch))
    x0 = torch.floor(rand(B) * (W - cw))
    return y0, x0, ch, cw


class ConsistentAugment(nn.Module):
    """Temporally consistent clip augmentation: ``(B,3,T,H,W)`` float [0,1] (or uint8) -> normalised
    ``(B,3,T,S,S)``. One random draw per clip, shared by its T frames; clips are independent.

    Args (CVRL defaults): ``out_size`` S; ``blur_p`` (CVRL: 1.0 for clip 1, 0.1 for clip 2);
    ``solarize_p`` (CVRL: 0.2 on clip 2 only); ``area`` / ``aspect`` ranges of the random resized
    crop (``crop_sampler``: torchvision's, aspect drawn log-uniformly, 100 attempts, then a centre
    fallback; or TensorFlow's, as CVRL's code: :func:`random_resized_boxes`); ``op_style`` of contrast,
    saturation and blur (torchvision's or CVRL's TensorFlow ops: :data:`OP_STYLES`); ``flip_p``;
    ``jitter_p`` and strengths ``brightness, contrast, saturation`` (factor in [1-s, 1+s]) and
    ``hue`` (shift in [-h, h]); ``gray_p``; ``blur_sigma``; ``blur_kernel`` (default S//10, odd);
    ``normalize`` with ``mean`` / ``std``.
    """

    def __init__(
        self,
        out_size: int = 224,
        blur_p: float = 0.5,
        solarize_p: float = 0.0,
        area=(0.3, 1.0),
        aspect=(0.5, 2.0),
        flip_p: float = 0.5,
        jitter_p: float = 0.8,
        brightness: float = 0.8,
        contrast: float = 0.8,
        saturation: float = 0.8,
        hue: float = 0.2,
        gray_p: float = 0.2,
        blur_sigma=(0.1, 2.0),
        blur_kernel: int | None = None,
        normalize: bool = True,
        mean=MEAN,
        std=STD,
        attempts: int = 100,
        crop_sampler: str = "torchvision",
        op_style: str = "torchvision",
    ):
        super().__init__()
        if crop_sampler not in CROP_SAMPLERS:
            raise ValueError(f"unknown crop sampler {crop_sampler!r} ({' | '.join(CROP_SAMPLERS)})")
        if op_style not in OP_STYLES:
            raise ValueError(f"unknown op style {op_style!r} ({' | '.join(OP_STYLES)})")
        self.out_size, self.crop_sampler, self.op_style = int(out_size), crop_sampler, op_style
        self._jitter_ops, self._blur_padding = OP_STYLES[op_style]
        self.blur_p, self.solarize_p, self.flip_p, self.jitter_p, self.gray_p = (
            blur_p,
            solarize_p,
            flip_p,
            jitter_p,
            gray_p,
        )
        self.area, self.aspect = tuple(area), tuple(aspect)
        self.strength = (brightness, contrast, saturation, hue)
        self.blur_sigma = tuple(blur_sigma)
        k = blur_kernel or max(3, self.out_size // 10)
        self.blur_kernel = k + 1 - k % 2  # odd, centred (224 -> 23 taps as in CVRL)
        self.normalize, self.mean, self.std, self.attempts = normalize, tuple(mean), tuple(std), attempts

    _rand = staticmethod(_uniform)

    def sample_params(self, batch: int, height: int, width: int, generator: torch.Generator | None = None) -> dict:
        """One draw per clip (CPU or the generator's device): crop box, flip, colour, blur, solarise."""
        g, B = generator, batch
        y0, x0, ch, cw = random_resized_boxes(
            B, height, width, self.area, self.aspect, self.attempts, g, self.crop_sampler
        )
        s = self.strength
        factors = torch.stack([1 + s[i] * (2 * self._rand(B, g) - 1) for i in range(3)], 1)  # (B,3)
        return {
            "box": torch.stack((y0, x0, ch, cw), 1),  # pixels: top, left, height, width
            "flip": self._rand(B, g) < self.flip_p,
            "jitter": self._rand(B, g) < self.jitter_p,
            "factors": factors,  # brightness, contrast, saturation
            "hue": s[3] * (2 * self._rand(B, g) - 1),
            "order": self._rand((B, 4), g).argsort(1),  # colour-op order per clip
            "gray": self._rand(B, g) < self.gray_p,
            "blur": self._rand(B, g) < self.blur_p,
            "sigma": self.blur_sigma[0] + (self.blur_sigma[1] - self.blur_sigma[0]) * self._rand(B, g),
            "solarize": self._rand(B, g) < self.solarize_p,
        }

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError(f"expected (B, 3, T, H, W) clips, got {tuple(x.shape)}")
        B, _, _, H, W = x.shape
        host = self.sample_params(B, H, W, generator)
        return self.apply_params(x, to_device(host, x.device), host=host)

    def apply_params(self, x: torch.Tensor, p: dict, host: dict | None = None) -> torch.Tensor:
        """Apply drawn parameters ``p`` (from :meth:`sample_params`) to ``x``. ``host``: the same
        parameters where they were drawn (the CPU), from which the clips each colour op, grayscale,
        blur and solarisation touches are chosen; chosen from ``p`` on a GPU, every op first waited
        for the device (a boolean mask's count is read on the host), some twenty times a step.

        Not named ``apply``: that is ``nn.Module.apply(fn)``, which a parent module calls on each
        child (a weight init over a CVRL / MoDist / supervised module, which hold augmenters)."""
        h = p if host is None else host

        def rows(sel: torch.Tensor) -> torch.Tensor | None:
            # the selected clips' indices, on x's device; ``y[idx]`` is what ``y[mask]`` computes
            idx = sel.nonzero().squeeze(1)
            return idx.to(x.device, non_blocking=True) if len(idx) else None

        if not x.is_floating_point():
            x = x.float().div_(255.0)
        B, C, T, H, W = x.shape
        S = self.out_size
        y0, x0, ch, cw = p["box"].to(x.dtype).unbind(1)
        # Affine map from output to input normalised coords (align_corners=False): the crop box's
        # pixel edges map to [-1, 1]; a negative x scale mirrors the clip (flip).
        sx = torch.where(p["flip"], -cw / W, cw / W)
        theta = torch.zeros(B, 2, 3, dtype=x.dtype, device=x.device)
        theta[:, 0, 0], theta[:, 0, 2] = sx, (2 * x0 + cw) / W - 1
        theta[:, 1, 1], theta[:, 1, 2] = ch / H, (2 * y0 + ch) / H - 1
        grid = F.affine_grid(theta, (B, C * T, S, S), align_corners=False)
        y = F.grid_sample(
            x.reshape(B, C * T, H, W), grid, mode="bilinear", padding_mode="border", align_corners=False
        ).reshape(B, C, T, S, S)

        jit = h["jitter"]
        if jit.any():
            args = (p["factors"][:, 0], p["factors"][:, 1], p["factors"][:, 2], p["hue"])
            for slot in range(4):
                for op in range(4):
                    sel = rows(jit & (h["order"][:, slot] == op))
                    if sel is not None:
                        y[sel] = self._jitter_ops[op](y[sel], args[op][sel])
        if (sel := rows(h["gray"])) is not None:
            y[sel] = rgb_to_gray(y[sel]).expand(-1, 3, -1, -1, -1)
        if (sel := rows(h["blur"])) is not None:
            y[sel] = gaussian_blur(y[sel], p["sigma"][sel], self.blur_kernel, self._blur_padding)
        if (sel := rows(h["solarize"])) is not None:
            y[sel] = solarize(y[sel])
        y = y.clamp_(0, 1)
        return normalize(y, self.mean, self.std) if self.normalize else y

    def extra_repr(self) -> str:
        return (
            f"out_size={self.out_size}, area={self.area}, aspect={self.aspect}, crop_sampler={self.crop_sampler}, "
            f"op_style={self.op_style}, "
            f"flip_p={self.flip_p}, "
            f"jitter_p={self.jitter_p}, strength={self.strength}, gray_p={self.gray_p}, "
            f"blur_p={self.blur_p}, blur_kernel={self.blur_kernel}, solarize_p={self.solarize_p}"
        )


def cvrl_augment_pair(out_size: int = 224, **kwargs) -> tuple[ConsistentAugment, ConsistentAugment]:
    """CVRL's asymmetric pair: blur p=1.0 on clip 1; blur p=0.1 and solarise p=0.2 on clip 2."""
    return (
        ConsistentAugment(out_size, blur_p=1.0, solarize_p=0.0, **kwargs),
        ConsistentAugment(out_size, blur_p=0.1, solarize_p=0.2, **kwargs),
    )
