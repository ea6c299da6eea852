"""SynthMovies: a procedural movie benchmark with ground truth, in VidSitu / LVU / Kinetics layouts.

- :func:`generate` writes a whole dataset (``moviessl synth``).
- :func:`render_clip` renders one clip or movie in memory with its generating variables (tests,
  oracles, upper-bound baselines).
- :mod:`world` holds the fixed vocabularies (verbs, scenes, plot grammar, LVU variables),
  :mod:`plot` the plot sampler, :mod:`render` the renderer / encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import plot, world
from .generate import PRESETS, SynthPreset, generate
from .render import encode_video, render_plan


@dataclass
class SynthClip:
    frames: np.ndarray  # uint8 (T, S, S, 3)
    boxes: np.ndarray  # float32 (T, C, 5): x1, y1, x2, y2 (normalised), visible
    plan: dict  # every generating variable (characters, events, shots, labels, ...)
    fps: float


def render_clip(
    kind: str = "vidsitu",
    seed: int = 0,
    size: int = 64,
    fps: float = 30.0,
    *,
    verb: str | None = None,
    duration_s: float | None = None,
    degrade_fraction: float | None = None,
    plan: dict | None = None,
) -> SynthClip:
    """Render one clip in memory with its ground truth.

    kind "action": one event of ``verb`` (random if None) lasting ``duration_s`` (2 s);
    "vidsitu": a 10-s, 5-event clip; "lvu": a movie of ``duration_s`` (60 s) with its 9 labels in
    ``plan["labels"]``. ``degrade_fraction``: the share of degraded events, by default the presets'
    (:class:`SynthPreset`'s ``degrade_fraction`` for a VidSitu clip, ``lvu_degrade_fraction`` for an
    LVU movie). Pass ``plan`` to re-render a plan (e.g.
    one edited by a test).
    """
    rng = np.random.default_rng([seed, 7])
    if plan is None:
        if kind == "action":
            verb = verb or world.VERB_IDS[int(rng.integers(len(world.VERBS)))]
            plan = plot.plan_action_clip(rng, verb, float(duration_s or 2.0))
        elif kind == "vidsitu":
            meta = plot.plan_movie_meta(rng)
            chars = plot.sample_characters(rng, meta["n_chars"])
            share = SynthPreset.degrade_fraction if degrade_fraction is None else degrade_fraction
            plan = plot.plan_vidsitu_clip(rng, meta, chars, share)
        elif kind == "lvu":
            share = SynthPreset.lvu_degrade_fraction if degrade_fraction is None else degrade_fraction
            plan = plot.plan_lvu_movie(rng, float(duration_s or 60.0), share)
        else:
            raise ValueError(f"kind must be action, vidsitu or lvu, got {kind!r}")
    chunks = list(render_plan(plan, size, fps, seed))
    return SynthClip(np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks]), plan, fps)


__all__ = [
    "generate",
    "render_clip",
    "SynthClip",
    "PRESETS",
    "SynthPreset",
    "render_plan",
    "encode_video",
    "world",
    "plot",
]
