"""SynthMovies' ``hidden_agent_p`` knob: a hidden agent must be nameable from the neighbouring
events only -- nothing in its own event's frames or tracks may tell who it is."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from moviessl.synth import world as W
from moviessl.synth.generate import SynthPreset, _tracks, plan_actions, plan_lvu, plan_vidsitu
from moviessl.synth.render import render_plan

SIZE, FPS = 32, 30.0
# verbs whose drawing is placed relative to the agent's radius: contact point, seat, speech bubble
SIZED_VERBS = ("push.01", "hit.01", "sit.01", "stand.01", "confront.01", "explain.01", "teach.01")


@pytest.fixture(scope="module")
def hidden_clips():
    cfg = SynthPreset(n_vidsitu_train=60, n_vidsitu_valid=0, hidden_agent_p=1.0, degrade_fraction=0.0)
    return plan_vidsitu(cfg, 0)


def _events(plan):
    return [f for f, _ in render_plan(plan, SIZE, FPS, 7)]


def _first_clip_with(clips, pred):
    for clip in clips:
        for k, ev in enumerate(clip["plan"]["events"]):
            if pred(clip["plan"], ev):
                return clip["plan"], k
    raise AssertionError("no clip matches")


@pytest.mark.parametrize("verb", SIZED_VERBS)
def test_a_hidden_agents_size_does_not_show_in_its_own_frames(hidden_clips, verb):
    """The silhouette is drawn at one radius, but the contact point of push / hit, the seat of sit /
    stand and the speech bubble followed the agent's true size: changing only that size changed its
    event's frames."""
    plan, k = _first_clip_with(hidden_clips, lambda p, ev: ev["verb"] == verb and ev.get("hidden"))
    agent = plan["events"][k]["agent"]
    frames = []
    for size in W.SIZES:
        p = copy.deepcopy(plan)
        p["characters"][agent]["size"] = size
        frames.append(_events(p))
    # events where the agent is this character (all hidden at p = 1) draw it as the silhouette
    same = [j for j, ev in enumerate(plan["events"]) if ev["agent"] == agent]
    assert k in same
    for j in same:
        np.testing.assert_array_equal(frames[0][j], frames[1][j], err_msg=f"event {j} ({plan['events'][j]['verb']})")


def test_a_hidden_event_shows_only_its_silhouette_and_its_patient(hidden_clips):
    """With the rest of the cast in frame, a viewer who knows the clip's cast named the silhouette as
    the one not seen, from the event's own frames alone."""
    plan, k = _first_clip_with(
        hidden_clips, lambda p, ev: ev.get("hidden") and len(p["characters"]) >= 3 and ev["patient"] is not None
    )
    ev = plan["events"][k]
    out = list(render_plan(plan, SIZE, FPS, 7))
    boxes = out[k][1]
    shown = {int(c) for c in np.nonzero(boxes[..., 4].max(0) > 0)[0]}
    assert shown <= {ev["agent"], ev["patient"]} and ev["patient"] in shown
    bystander = next(c for c in range(len(plan["characters"])) if c not in (ev["agent"], ev["patient"]))
    p = copy.deepcopy(plan)
    p["characters"][bystander]["colour"] = next(
        c for c in W.COLOURS if c not in {ch["colour"] for ch in plan["characters"]}
    )
    np.testing.assert_array_equal(_events(p)[k], out[k][0])


def test_a_hidden_agents_lvu_track_is_not_its_characters():
    """LVU's per-second boxes link instances by track id; a silhouette carrying its character's id
    let the instance pathway read who it is from the track link."""
    cfg = SynthPreset(n_lvu=1, lvu_seconds=(20, 24), hidden_agent_p=0.5, lvu_degrade_fraction=0.0)
    plan = plan_lvu(cfg, 1)[0]["plan"]
    boxes = np.concatenate([b for _, b in render_plan(plan, SIZE, FPS, 0)])
    tracks = _tracks(plan, boxes, FPS, SIZE, "x")
    C = len(plan["characters"])
    ends = np.cumsum([round(ev["dur"] * FPS) for ev in plan["events"]])
    checked = 0
    for sec in tracks["seconds"]:
        k = int(np.searchsorted(ends, min(int((sec["t"] + 0.5) * FPS), len(boxes) - 1), side="right"))
        ev = plan["events"][k]
        if ev.get("hidden"):
            assert ev["agent"] not in sec["track_ids"]
            checked += C + k in sec["track_ids"]
        else:
            assert all(t < C for t in sec["track_ids"])
    assert checked > 0
    # the knob at 0: the tracks file as it always was, to the byte (its description included)
    plan0 = plan_lvu(SynthPreset(n_lvu=1, lvu_seconds=(20, 24), lvu_degrade_fraction=0.0), 1)[0]["plan"]
    boxes0 = np.concatenate([b for _, b in render_plan(plan0, SIZE, FPS, 0)])
    assert _tracks(plan0, boxes0, FPS, SIZE, "x")["track_id"] == "character index, stable within the movie"


def test_the_hidden_agent_knob_and_the_prop_cue_draw_from_streams_of_their_own():
    """Turning the prop cue on changed which agents are hidden (one shared stream), and the other way
    round."""
    base = dict(n_vidsitu_train=60, n_vidsitu_valid=0)

    def flags(key, **knobs):
        return [ev.get(key) for c in plan_vidsitu(SynthPreset(**base, **knobs), 0) for ev in c["plan"]["events"]]

    assert flags("hidden", hidden_agent_p=0.3) == flags("hidden", hidden_agent_p=0.3, verb_context_p=0.5)
    assert flags("cue", verb_context_p=0.5) == flags("cue", verb_context_p=0.5, hidden_agent_p=0.3)


def test_action_repeat_draws_from_a_stream_of_its_own():
    """``action_repeat_s`` drew its repeat durations from the action plan stream, so with it on every
    action clip after the first got other characters and another layout."""
    off = plan_actions(SynthPreset(n_actions=30), 0)
    on = plan_actions(SynthPreset(n_actions=30, action_repeat_s=10.0), 0)
    for a, b in zip(off, on):
        assert json.dumps(a["plan"]["characters"]) == json.dumps(b["plan"]["characters"])
        assert a["plan"]["shots"] == b["plan"]["shots"] and a["plan"]["director"] == b["plan"]["director"]
        assert a["plan"]["events"][0]["pos"] == b["plan"]["events"][0]["pos"]
    assert all(sum(e["dur"] for e in b["plan"]["events"]) == pytest.approx(10.0) for b in on)
