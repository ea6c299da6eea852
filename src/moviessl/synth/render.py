"""Rendering a plot to frames (numpy) and to H.264 (PyAV).

Per event, a motion program turns the verb into per-frame states of every character (x, y, scale,
angle, alpha, squash, facing) plus a prop and a speech bubble; sprites are drawn on small patches
(cheap), backgrounds are crops of a pre-drawn wrap-around canvas (pans are slices, not resamples),
and film look (palette, grain, flicker, letterbox, vignette) is applied per 2-s chunk. Degraded
events hide the verb's evidence (occlusion, low contrast, long-exposure blur, camera off the
action) while keeping the scene, so only context can tell what happened.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from ..utils.io import _FILE_MODE
from . import plot as P
from . import world as W

SHAPE_INDEX = {s: i for i, s in enumerate(W.SHAPES)}
PROP_COLOURS = {"ball": (250, 250, 250), "box": (160, 110, 60), "flower": (255, 90, 200), "letter": (235, 235, 200)}


# ------------------------------------------------------------------------------------------
# Colour / film look
# ------------------------------------------------------------------------------------------


def colour_matrix(year_style: dict | None) -> np.ndarray:
    """3x3 linear colour transform of a film stock: desaturation then a sepia blend."""
    if not year_style:
        return np.eye(3, dtype=np.float32)
    s = year_style["saturation"]
    lum = np.array([0.299, 0.587, 0.114], np.float32)
    desat = s * np.eye(3, dtype=np.float32) + (1 - s) * np.tile(lum, (3, 1))
    sepia = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], np.float32)
    a = year_style["sepia"]
    return ((1 - a) * np.eye(3, dtype=np.float32) + a * sepia) @ desat


def _tone(rgb, M) -> np.ndarray:
    return np.clip(np.asarray(rgb, np.float32) @ M.T, 0, 255)


# ------------------------------------------------------------------------------------------
# Backgrounds: a scene class is a pattern; its colours are not class-specific
# ------------------------------------------------------------------------------------------


def build_canvas(shot: dict, S: int, M: np.ndarray) -> np.ndarray:
    """Wrap-around background canvas (2S, 3S, 3) uint8 for one shot."""
    H, Wd = 2 * S, 3 * S
    yy, xx = np.mgrid[0:H, 0:Wd].astype(np.float32)
    if "studio" in shot:  # action clips: plain vertical gradient, no pattern (domain gap)
        top, bot = W.BG_PALETTE[shot["studio"][0]] * 1.3, W.BG_PALETTE[shot["studio"][1]] * 0.9
        t = (yy % S / S)[..., None]
        img = top * (1 - t) + bot * t
        return np.clip(_tone(img, M), 0, 255).astype(np.uint8)
    inst = shot["scene_inst"]
    c1, c2 = W.BG_PALETTE[inst["c1"]], W.BG_PALETTE[inst["c2"]]
    P = S / 4.0 * inst["period"]
    ph = inst["phase"] * P
    x, y = (xx + ph) % P / P, (yy + ph) % P / P  # position inside one period, [0, 1)
    scene = inst["scene"]
    if scene == "office":  # window grid
        m = (x > 0.15) & (x < 0.85) & (y > 0.2) & (y < 0.8)
    elif scene == "airport":  # wide horizontal bands
        m = ((yy + ph) % (P * 1.2)) < P * 0.45
    elif scene == "school":  # diagonal stripes
        m = ((xx + yy + ph) % P) < P * 0.4
    elif scene == "hotel":  # diamond wallpaper
        m = (np.abs(x - 0.5) + np.abs(y - 0.5)) < 0.3
    elif scene == "prison":  # thin vertical bars
        m = ((xx + ph) % (P * 0.7)) < P * 0.14
    else:  # restaurant: polka dots
        m = (x - 0.5) ** 2 + (y - 0.5) ** 2 < 0.07
    img = np.where(m[..., None], c2, c1)
    floor = (yy % S) > FLOOR_Y * S
    img = np.where(floor[..., None], c1 * inst["floor"], img)
    for f in inst.get("fixtures", ()):  # the scene_fixtures knob: the room's furniture, on the floor line
        fw, fh = max(int(f["w"] * S), 4), max(int(f["h"] * S), 4)
        v, u = np.mgrid[0:fh, 0:fw].astype(np.float32)
        mask = fixture_mask(W.SCENE_FIXTURES[scene], (u + 0.5) / fw, (v + 0.5) / fh)
        cols = (int(f["x"] * Wd) + np.arange(fw)) % Wd
        for base in range(0, H, S):  # the canvas repeats the wall vertically (tilts wrap around)
            rows = (base + int(FLOOR_Y * S) - fh + np.arange(fh)) % H
            patch = img[rows[:, None], cols[None, :]]
            img[rows[:, None], cols[None, :]] = np.where(mask[..., None], W.BG_PALETTE[f["colour"]] * 0.8, patch)
    return np.clip(_tone(img, M), 0, 255).astype(np.uint8)


FLOOR_Y = 0.78  # the floor line, a fraction of the frame height


def fixture_mask(kind: str, u, v):
    """One piece of a scene class's furniture in its box (``u`` left to right, ``v`` top to bottom,
    both in [0, 1]): a silhouette a small network can tell from the other five at 64 px."""
    if kind == "desk":  # a top and two legs
        return (v < 0.25) | ((u < 0.12) | (u > 0.88))
    if kind == "seat_row":  # three seat backs on a bench, two legs
        backs, bench = (v < 0.55) & ((u * 3) % 1 < 0.6), (v >= 0.55) & (v < 0.72)
        return backs | bench | ((v >= 0.72) & ((u < 0.08) | (u > 0.92)))
    if kind == "easel":  # a triangle standing on its base
        return np.abs(u - 0.5) < 0.5 * v
    if kind == "armchair":  # a high back on the left, a low arm on the right, a seat, short legs
        body = (v < 0.82) & (((u < 0.25) & (v > 0.05)) | ((u > 0.8) & (v > 0.45)) | (v > 0.6))
        return body | ((v >= 0.82) & ((u < 0.1) | (u > 0.9)))
    if kind == "bunk":  # two bunks between two posts
        return (u < 0.1) | (u > 0.9) | ((v > 0.15) & (v < 0.3)) | ((v > 0.6) & (v < 0.75))
    if kind == "round_table":  # an oval top on one leg and a foot
        top = ((u - 0.5) / 0.5) ** 2 + ((v - 0.15) / 0.15) ** 2 < 1
        return top | (np.abs(u - 0.5) < 0.07) | ((v > 0.88) & (np.abs(u - 0.5) < 0.3))
    raise ValueError(f"unknown fixture {kind!r}")


def _crop(canvas: np.ndarray, oy: int, ox: int, S: int) -> np.ndarray:
    H, Wd = canvas.shape[:2]
    oy, ox = oy % H, ox % Wd
    rows = canvas[oy : oy + S] if oy + S <= H else np.concatenate([canvas[oy:], canvas[: oy + S - H]])
    return (
        rows[:, ox : ox + S].copy() if ox + S <= Wd else np.concatenate([rows[:, ox:], rows[:, : ox + S - Wd]], axis=1)
    )


def _zoom_crop(canvas, oy, ox, S, z):
    H, Wd = canvas.shape[:2]
    idx = ((np.arange(S) - S / 2) / z + S / 2).astype(np.int64)
    return canvas[((oy + idx) % H)[:, None], ((ox + idx) % Wd)[None, :]]


# ------------------------------------------------------------------------------------------
# Motion programs: verb -> per-frame states
# ------------------------------------------------------------------------------------------


def _smooth(t):
    t = np.clip(t, 0, 1)
    return t * t * (3 - 2 * t)


SILHOUETTE_SIZE = 0.12  # a hidden agent's radius whatever its size (the hidden_agent_p knob)


def drawn_size(ev: dict, chars: list[dict], c: int) -> float:
    """Character ``c``'s radius as drawn in event ``ev``: a hidden agent's silhouette has one radius,
    and everything placed relative to it (contact point, seat, speech bubble) uses that radius too --
    its true size would tell who it is from its own frames."""
    if ev.get("hidden") and c == ev["agent"]:
        return SILHOUETTE_SIZE
    return W.SIZES[chars[c]["size"]]


def drawn_cast(ev: dict, n_chars: int) -> list[int]:
    """The characters drawn in event ``ev``: all of them, except in a hidden-agent event, which shows
    only its silhouette and its patient -- with the rest of the cast in frame, a viewer who knows the
    cast would name the silhouette as the one not seen, from the event's own frames."""
    if ev.get("hidden"):
        return [c for c in (ev["agent"], ev.get("patient")) if c is not None]
    return list(range(n_chars))


def simulate_event(ev: dict, chars: list[dict], n: int, fps: float) -> dict:
    """Per-frame states (n frames) of all characters for one event (normalised coordinates)."""
    C = len(chars)
    t = (np.arange(n) + 0.5) / n
    tau = t * n / fps  # seconds
    pos = ev["pos"]
    X = np.tile(np.asarray(pos, np.float32), (n, 1))
    Y = np.full((n, C), 0.6, np.float32)
    Sc, Al, Sq = np.ones((n, C), np.float32), np.ones((n, C), np.float32), np.ones((n, C), np.float32)
    Ang = np.zeros((n, C), np.float32)
    Face = np.tile(np.where(np.asarray(pos) < 0.5, 1.0, -1.0).astype(np.float32), (n, 1))
    prop = np.zeros((n, 3), np.float32)  # x, y, visible
    bubble = np.zeros((n, 2), np.int32)  # character speaking (or -1), red?
    bubble[:, 0] = -1
    a, p, d, verb = ev["agent"], ev["patient"], ev["dir"], ev["verb"]
    r = lambda c: drawn_size(ev, chars, c)  # noqa: E731
    xa = pos[a]
    xp = pos[p] if p is not None else None
    if p is not None:
        Face[:, a] = 1.0 if xp > xa else -1.0
        Face[:, p] = -Face[0, a]
    if verb == "walk.01":
        X[:, a] = xa + d * 0.125 * tau
        Y[:, a] -= 0.015 * np.abs(np.sin(2 * np.pi * tau))
        Face[:, a] = d
    elif verb == "run.02":
        X[:, a] = xa + d * 0.3 * tau
        Y[:, a] -= 0.03 * np.abs(np.sin(4 * np.pi * tau))
        Ang[:, a] = d * 12
        Face[:, a] = d
    elif verb == "jump.01":
        Y[:, a] -= 0.24 * np.abs(np.sin(np.pi * tau))
    elif verb == "fall.01":
        s = _smooth((t - 0.15) / 0.4)
        Ang[:, a] = d * 90 * s
        Sq[:, a] = 1 - 0.3 * s
        Y[:, a] += 0.06 * s
    elif verb == "spin.01":
        Ang[:, a] = 360 * tau
    elif verb == "wave.01":
        Ang[:, a] = 28 * np.sin(2 * np.pi * 2 * tau)
    elif verb == "grow.01":
        Sc[:, a] = 1 + 0.6 * _smooth(t)
    elif verb == "shrink.01":
        Sc[:, a] = 1 - 0.5 * _smooth(t)
    elif verb == "push.01":
        contact = xp - d * (r(a) + r(p)) * 0.95
        s1, s2 = _smooth(t / 0.4), _smooth((t - 0.4) / 0.6)
        X[:, a] = xa + (contact - xa) * s1 + d * 0.18 * s2
        X[:, p] = xp + d * 0.18 * s2
        Ang[:, p] = d * 15 * s2 * (1 - s2) * 4
    elif verb == "hit.01":
        contact = xp - d * (r(a) + r(p)) * 0.95
        go = np.where(t < 0.35, _smooth(t / 0.35), _smooth((0.7 - t) / 0.35))
        X[:, a] = xa + (contact - xa) * go
        hit = t > 0.35
        X[:, p] = xp + hit * 0.025 * np.sin(2 * np.pi * 8 * tau) * np.exp(-3 * (t - 0.35).clip(0))
    elif verb in ("chase.01", "follow.01"):
        speed = 0.22 if verb == "chase.01" else 0.08
        X[:, a] = xa + d * speed * tau
        X[:, p] = xp + d * speed * tau
        Face[:, a] = Face[:, p] = d
        if verb == "chase.01":
            Y[:, [a, p]] -= 0.025 * np.abs(np.sin(4 * np.pi * tau))[:, None]
    elif verb == "approach.01":
        X[:, a] = xa + ((xp - d * 0.22) - xa) * t
        Y[:, a] -= 0.012 * np.abs(np.sin(2 * np.pi * tau))
    elif verb == "flee.01":
        X[:, a] = xa + d * 0.25 * tau * (0.5 + t)
        Y[:, a] -= 0.03 * np.abs(np.sin(4 * np.pi * tau))
        Face[:, a] = d
        Face[:, p] = d
    elif verb == "hide.01":
        Al[:, a] = 1 - _smooth(t / 0.8)
        Sc[:, a] = 1 - 0.25 * t
        Y[:, a] += 0.05 * t
    elif verb == "appear.01":
        Al[:, a] = _smooth(t / 0.8)
        Sc[:, a] = 0.75 + 0.25 * t
    elif verb == "sit.01":
        Sq[:, a] = 1 - 0.45 * _smooth(t / 0.6)
        Y[:, a] += r(a) * (1 - Sq[:, a])
    elif verb == "stand.01":
        Sq[:, a] = 0.55 + 0.45 * _smooth(t / 0.6)
        Y[:, a] += r(a) * (1 - Sq[:, a])
    elif verb == "shake.01":
        X[:, a] = xa + 0.03 * np.sin(2 * np.pi * 7 * tau)
    elif verb == "circle.01":
        phi = np.pi * tau
        X[:, a] = xa + d * 0.13 * np.sin(phi)
        Y[:, a] = 0.6 - 0.13 * (1 - np.cos(phi))
    elif verb == "climb.01":
        Y[:, a] = 0.6 - 0.14 * tau
        X[:, a] = xa + 0.02 * np.sin(2 * np.pi * 2 * tau)
    elif verb == "descend.01":
        Y[:, a] = 0.6 - 0.28 + 0.14 * tau
    elif verb == "meet.03":
        mid = (xa + xp) / 2
        X[:, a] = xa + ((mid - d * 0.13) - xa) * t
        X[:, p] = xp + ((mid + d * 0.13) - xp) * t
    elif verb == "avoid.01":
        X[:, a] = xa + ((xp + d * 0.27) - xa) * t
        Y[:, a] = 0.6 - 0.3 * np.sin(np.pi * t)
        Face[:, a] = d
    elif verb == "give.01":
        s = _smooth((t - 0.25) / 0.5)
        prop[:, 0] = xa + (xp - xa) * s
        prop[:, 1] = 0.6 - 0.02 - 0.08 * np.sin(np.pi * s)
        prop[:, 2] = t > 0.1
    elif verb == "throw.01":
        s = np.clip((t - 0.2) / 0.7, 0, 1)
        prop[:, 0] = xa + d * 0.5 * s
        prop[:, 1] = 0.55 - 0.3 * np.sin(np.pi * s)
        prop[:, 2] = (t > 0.15) & (t < 0.95)
        Ang[:, a] = d * 25 * np.sin(np.pi * np.clip((t - 0.1) / 0.2, 0, 1))
        Face[:, a] = d
    elif verb == "nod.01":
        Y[:, a] += 0.035 * np.abs(np.sin(2 * np.pi * 1.5 * tau))
    elif verb == "dance.01":
        Y[:, a] -= 0.07 * np.abs(np.sin(2 * np.pi * 2 * tau))
        Ang[:, a] = 18 * np.sin(2 * np.pi * tau)
    elif verb == "wait.01":
        Sc[:, a] = 1 + 0.02 * np.sin(np.pi * tau)
    elif verb == "explain.01":  # slow blinking bubble, still speaker
        bubble[:, 0] = np.where(np.sin(2 * np.pi * 1.0 * tau) > -0.3, a, -1)
    elif verb == "confront.01":  # fast bubble, lunging at the other
        bubble[:, 0] = np.where(np.sin(2 * np.pi * 4 * tau) > 0, a, -1)
        X[:, a] = xa + d * 0.06 * np.abs(np.sin(2 * np.pi * tau))
    elif verb == "discuss.01":  # the bubble goes back and forth
        bubble[:, 0] = np.where(np.sin(2 * np.pi * 0.75 * tau) > 0, a, p)
    elif verb == "teach.01":  # steady bubble, pointing
        bubble[:, 0] = a
        Ang[:, a] = Face[0, a] * 20 * np.abs(np.sin(2 * np.pi * tau))
    elif verb == "threaten.01":  # red bubble, looming and shaking
        bubble[:, 0] = a
        bubble[:, 1] = 1
        Sc[:, a] = 1 + 0.3 * _smooth(t / 0.5)
        X[:, a] = xa + 0.015 * np.sin(2 * np.pi * 6 * tau)
    return dict(X=X, Y=Y, Sc=Sc, Ang=Ang, Al=Al, Sq=Sq, Face=Face, prop=prop, bubble=bubble)


# ------------------------------------------------------------------------------------------
# Sprites
# ------------------------------------------------------------------------------------------


def _shape_mask(k: int, u, v):
    if k == 0:
        return u * u + v * v <= 1.0
    if k == 1:
        return (np.abs(u) <= 0.85) & (np.abs(v) <= 0.85)
    if k == 2:
        return (v <= 0.75) & (v >= 2.0 * np.abs(u) - 1.05)
    if k == 3:
        return np.abs(u) + np.abs(v) <= 1.1
    if k == 4:
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.4) & (av <= 1.0)) | ((av <= 0.4) & (au <= 1.0))
    d2 = u * u + v * v
    return (d2 <= 1.0) & (d2 >= 0.3)


def _patch(frame, cx, cy, R):
    S_h, S_w = frame.shape[:2]
    x0, x1 = max(int(cx - R), 0), min(int(cx + R) + 1, S_w)
    y0, y1 = max(int(cy - R), 0), min(int(cy + R) + 1, S_h)
    if x0 >= x1 or y0 >= y1:
        return None
    return x0, x1, y0, y1


def _put(patch, mask, colour, alpha):
    if alpha >= 0.99:
        patch[mask] = colour
    else:
        patch[mask] = (patch[mask] * (1 - alpha) + np.asarray(colour, np.float32) * alpha).astype(np.uint8)


def draw_sprite(
    frame, cx, cy, rad, shape, colour, colour2, ang_deg, alpha, squash, face, outline=(20, 20, 20), eye=True
):
    """Draw one character (pixel units) in place: shape, optional stripes, outline, an eye that
    shows where it faces and how it turns."""
    if alpha < 0.02 or rad < 1:
        return
    R = rad * 1.25 + 1
    box = _patch(frame, cx, cy, R)
    if box is None:
        return
    x0, x1, y0, y1 = box
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] - cx
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] - cy
    a = math.radians(ang_deg)
    c, s = math.cos(a), math.sin(a)
    u = (dx * c + dy * s) / rad
    v = (-dx * s + dy * c) / (rad * squash)
    patch = frame[y0:y1, x0:x1]
    outer = _shape_mask(shape, u / 1.16, v / 1.16)
    inner = _shape_mask(shape, u, v)
    _put(patch, outer & ~inner, outline, alpha)
    if colour2 is not None:
        stripe = (np.floor(u * 2.5) % 2) == 0
        _put(patch, inner & stripe, colour, alpha)
        _put(patch, inner & ~stripe, colour2, alpha)
    else:
        _put(patch, inner, colour, alpha)
    if eye:
        e = (u - 0.42 * face) ** 2 + (v + 0.3) ** 2 <= 0.05
        _put(patch, e, (10, 10, 10), alpha)


def _disc(frame, cx, cy, rad, colour, alpha=1.0, ry=None):
    ry = ry or rad
    box = _patch(frame, cx, cy, max(rad, ry) + 1)
    if box is None:
        return
    x0, x1, y0, y1 = box
    dx = (np.arange(x0, x1, dtype=np.float32)[None, :] - cx) / rad
    dy = (np.arange(y0, y1, dtype=np.float32)[:, None] - cy) / ry
    _put(frame[y0:y1, x0:x1], dx * dx + dy * dy <= 1, colour, alpha)


# ------------------------------------------------------------------------------------------
# Whole videos
# ------------------------------------------------------------------------------------------


def render_plan(plan: dict, size: int, fps: float, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(frames uint8 (n,S,S,3), boxes float32 (n,C,5))`` per event; boxes are
    (x1,y1,x2,y2) normalised + visible flag, after the camera, 0 where a detector would see nothing."""
    S = size
    rng = np.random.default_rng(seed)
    M = colour_matrix(plan.get("year_style"))
    style = W.DIRECTORS[plan["director"]]
    action = plan["kind"] == "action" and not plan.get("filmed")  # the studio look (domain gap)
    chars = plan["characters"]
    C = len(chars)
    big = 1.2 if action else 1.0
    cols = [_tone(W.COLOURS[ch["colour"]], M) for ch in chars]
    cols2 = [(c * 0.55).astype(np.float32) if ch["texture"] == "striped" else None for c, ch in zip(cols, chars)]
    outline = _tone((235, 235, 235) if action else (20, 20, 20), M)  # action clips: light outlines
    bubble_cols = [_tone((250, 250, 250), M), _tone((230, 30, 30), M)]
    shadow = _tone((45, 45, 45), M)  # a hidden agent (the hidden_agent_p knob): no colour, texture or shape
    canvases: dict[int, np.ndarray] = {}
    ys = plan.get("year_style") or {}
    grain = float(ys.get("grain", 0.0))
    flicker = float(ys.get("flicker", 0.0))
    noise_bank = rng.normal(0, grain, (6, S, S, 1)).astype(np.float32) if grain > 0.5 else None
    vign = None
    if style.vignette > 0:
        yy, xx = np.mgrid[0:S, 0:S] / (S - 1) - 0.5
        vign = (1 - style.vignette * np.clip((xx**2 + yy**2) * 2.0 - 0.15, 0, 1))[..., None].astype(np.float32)
    shot_t0: dict[int, float] = {}
    frame_no = 0
    for ev in plan["events"]:
        n = int(round(ev["dur"] * fps))
        shot = ev["shot"]
        if shot not in canvases:
            canvases[shot] = build_canvas(plan["shots"][shot], S, M)
            shot_t0[shot] = frame_no / fps
        canvas = canvases[shot]
        st = simulate_event(ev, chars, n, fps)
        deg = ev.get("degraded")
        frames = np.empty((n, S, S, 3), np.uint8)
        boxes = np.zeros((n, C, 5), np.float32)
        cam0 = plan["shots"][shot]["cam"]
        for i in range(n):
            ts = (frame_no + i) / fps - shot_t0[shot]  # seconds into the shot
            ox = int((cam0 * 3 * S + style.pan * S * ts))
            oy = int(style.tilt * S * ts) if style.tilt else 0
            z = 1.0 + style.zoom * min(ts / 6.0, 1.0) if style.zoom else 1.0
            if action and plan["director"] == 6:
                z = 1.0 + 0.25 * (i / n)
            sx = sy = 0.0
            if style.shake:
                sx, sy = rng.normal(0, style.shake, 2) * S
            frames[i] = _zoom_crop(canvas, oy, ox, S, z) if z != 1.0 else _crop(canvas, oy, ox, S)
            if deg == "offscreen":
                continue  # the camera looks away from the action
            faint = {"low_contrast": 0.05, "blur": 0.25}.get(deg, 1.0)  # blur: out of focus, then smeared below
            if ev.get("cue"):  # the verb's prop on the floor where its agent started (verb_context_p)
                shape, colour = W.VERB_CUES[ev["verb"]]
                draw_sprite(
                    frames[i],
                    ((ev["pos"][ev["agent"]] - 0.5) * z + 0.5) * S + sx,
                    ((P.GROUND_Y + 0.16 - 0.6) * z + 0.6) * S + sy,
                    W.CUE_SIZE * S * z * big,
                    SHAPE_INDEX[shape],
                    _tone(W.COLOURS[colour], M),
                    None,
                    0.0,
                    faint,
                    1.0,
                    0.0,
                    outline,
                    eye=False,
                )
            order = sorted(drawn_cast(ev, C), key=lambda c: st["Y"][i, c])  # farther up = drawn first
            for c in order:
                hid = bool(ev.get("hidden")) and c == ev["agent"]
                rad = drawn_size(ev, chars, c) * S * st["Sc"][i, c] * z * big
                cx = ((st["X"][i, c] - 0.5) * z + 0.5) * S + sx
                cy = ((st["Y"][i, c] - 0.6) * z + 0.6) * S + sy
                al = float(st["Al"][i, c]) * faint
                draw_sprite(
                    frames[i],
                    cx,
                    cy,
                    rad,
                    0 if hid else SHAPE_INDEX[chars[c]["shape"]],
                    shadow if hid else cols[c],
                    None if hid else cols2[c],
                    float(st["Ang"][i, c]),
                    al,
                    float(st["Sq"][i, c]),
                    float(st["Face"][i, c]),
                    outline,
                    eye=not hid,
                )
                if al >= 0.3 and deg is None:
                    h = rad * 1.16
                    boxes[i, c] = (
                        (cx - h) / S,
                        (cy - h * st["Sq"][i, c]) / S,
                        (cx + h) / S,
                        (cy + h * st["Sq"][i, c]) / S,
                        1.0,
                    )
            if st["prop"][i, 2] > 0:
                pr = 0.045 * S * z * big
                _disc(
                    frames[i],
                    ((st["prop"][i, 0] - 0.5) * z + 0.5) * S + sx,
                    ((st["prop"][i, 1] - 0.6) * z + 0.6) * S + sy,
                    pr,
                    _tone(PROP_COLOURS.get(ev.get("object"), (250, 250, 250)), M),
                    faint,
                )
            b = st["bubble"][i, 0]
            if b >= 0:
                rad = drawn_size(ev, chars, b) * S * z * big
                bx = ((st["X"][i, b] - 0.5) * z + 0.5) * S + sx + 0.5 * rad * st["Face"][i, b]
                by = ((st["Y"][i, b] - 0.6) * z + 0.6) * S + sy - 1.6 * rad
                _disc(frames[i], bx, by, 0.55 * rad, outline * 0 + 15, faint, ry=0.4 * rad)
                _disc(frames[i], bx, by, 0.48 * rad, bubble_cols[st["bubble"][i, 1]], faint, ry=0.33 * rad)
        np.clip(boxes[..., :4], 0, 1, out=boxes[..., :4])
        # a character that has left the frame (a flee runs past the edge) is drawn nowhere: its clipped
        # box has no area, and a detector would not see it
        boxes[(boxes[..., 2] <= boxes[..., 0]) | (boxes[..., 3] <= boxes[..., 1])] = 0
        frames = _post(frames, deg, rng, style, vign, noise_bank, flicker, S)
        frame_no += n
        yield frames, boxes


def _post(frames, deg, rng, style, vign, noise_bank, flicker, S):
    """Per-event film look and degradations on a whole chunk."""
    if deg == "occlusion":  # something passes right in front of the camera
        y0, y1, x0, x1 = int(0.08 * S), int(0.97 * S), int(0.03 * S), int(0.97 * S)
        shade = rng.integers(30, 70)
        frames[:, y0:y1, x0:x1] = shade
        frames[:, y0:y1, x0 : x1 : max(S // 16, 2)] = shade + 25
    elif deg == "blur":  # long exposure + heavy defocus: only the scene's average survives
        mean = frames.astype(np.float32).mean(0)
        k = max(S // 4, 2)
        if S % k == 0:
            small = mean.reshape(S // k, k, S // k, k, 3).mean((1, 3))
            frames[:] = np.repeat(np.repeat(small, k, 0), k, 1).astype(np.uint8)[None]
        else:  # a side that k does not divide (any even size is valid): a shorter last block
            starts = np.arange(0, S, k)
            widths = np.diff(np.append(starts, S))
            sums = np.add.reduceat(np.add.reduceat(mean, starts, 0), starts, 1)
            small = sums / (widths[:, None, None] * widths[None, :, None])
            frames[:] = np.repeat(np.repeat(small, widths, 0), widths, 1).astype(np.uint8)[None]
    elif deg == "low_contrast":
        f = frames.astype(np.float32)
        m = f.mean((1, 2), keepdims=True)
        frames = np.clip(m + 0.35 * (f - m) + rng.normal(0, 4, (1, S, S, 1)).astype(np.float32), 0, 255).astype(
            np.uint8
        )
    need = noise_bank is not None or flicker > 0 or vign is not None
    if need:
        f = frames.astype(np.float32)
        if flicker > 0:
            f *= (1 + flicker * rng.standard_normal(len(f)).astype(np.float32))[:, None, None, None]
        if noise_bank is not None:
            f += noise_bank[rng.integers(0, len(noise_bank), len(f))]
        if vign is not None:
            f *= vign
        frames = np.clip(f, 0, 255).astype(np.uint8)
    if style.letterbox:
        b = int(style.letterbox * S)
        frames[:, :b] = 0
        frames[:, S - b :] = 0
    return frames


def encode_video(path: str | os.PathLike, chunks, fps: float, size: int, crf: int = 23, preset: str = "veryfast"):
    """Encode frame chunks to H.264 mp4 (single-threaded x264: byte-identical for identical frames).
    Written to a temporary name and renamed, so a killed run leaves no half file. Returns whatever
    the chunk iterator yields besides frames (collected in a list)."""
    import av  # heavy import, only where videos are written

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a temporary name of this writer's own: the pool workers of a killed run finish the video they are
    # on, so a rerun may write the same video at the same time (one shared name: the first rename took
    # the other's file away and the rerun crashed)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    extras = []
    try:
        with av.open(tmp, "w", format="mp4") as out:
            st = out.add_stream("libx264", rate=int(round(fps)))
            st.width = st.height = size
            st.pix_fmt = "yuv420p"
            st.options = {"crf": str(crf), "preset": preset, "threads": "1", "g": str(int(round(fps)) * 2)}
            st.codec_context.thread_count = 1
            for frames, extra in chunks:
                extras.append(extra)
                for f in frames:
                    for pkt in st.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                        out.mux(pkt)
            for pkt in st.encode():
                out.mux(pkt)
        os.chmod(tmp, _FILE_MODE)  # what open() would give, not mkstemp's 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return extras
