"""Plots: who does what, when, where — the generating variables of every clip and movie.

A plot is a plain JSON-able dict (it is stored in ``ground_truth.json``) that the renderer turns
into frames. Events are drawn from the plot grammar of :mod:`world` (a Markov chain over verbs with
character continuity), so an event is predictable from its neighbours; relations follow from the
plot (:func:`world.relation`). Positions are simulated here (not in the renderer) so that the
direction / location phrases of the annotations are known before any pixel is drawn.
"""

from __future__ import annotations

import numpy as np

from . import world as W

X_MIN, X_MAX = 0.15, 0.85
GROUND_Y = 0.6
DEGRADATIONS = ("occlusion", "low_contrast", "blur", "offscreen")


def sample_characters(rng: np.random.Generator, n: int) -> list[dict]:
    """``n`` characters with distinct (shape, colour) so every phrase names one character."""
    combos = [(s, c) for s in W.SHAPES for c in W.COLOURS]
    pick = rng.choice(len(combos), n, replace=False)
    return [make_character(rng, k, *combos[i]) for k, i in enumerate(pick)]


def make_character(rng, k: int, shape: str, colour: str) -> dict:
    """Character ``k`` of that shape and colour, with a random size and texture."""
    ch = dict(
        id=k,
        shape=shape,
        colour=colour,
        size=str(rng.choice(list(W.SIZES))),
        texture=str(rng.choice(W.TEXTURES, p=[0.7, 0.3])),
    )
    ch["phrase"] = W.character_phrase(ch)
    return ch


def _other(rng, n_chars, not_this):
    choices = [c for c in range(n_chars) if c != not_this]
    return int(rng.choice(choices))


def next_event(rng, T: np.ndarray, prev: dict | None, n_chars: int, main: tuple[int, int] | None = None) -> dict:
    """One Markov step of the grammar with character continuity."""
    if prev is None:
        verb = W.VERB_IDS[rng.choice(len(W.VERBS), p=T.mean(0) / T.mean(0).sum())]
    else:
        verb = W.VERB_IDS[rng.choice(len(W.VERBS), p=T[W.VERB_INDEX[prev["verb"]]])]
    role = W.script_role(prev["verb"], verb) if prev is not None else None
    if role == "A":
        agent, patient = prev["agent"], prev.get("patient")
    elif role == "P" and prev.get("patient") is not None:
        agent, patient = prev["patient"], prev["agent"]
    else:
        pool = list(main) if main is not None and rng.random() < 0.6 else list(range(n_chars))
        agent = prev["agent"] if prev is not None and rng.random() < 0.5 else int(rng.choice(pool))
        patient = None
    return make_event(rng, verb, agent, patient, n_chars)


def make_event(rng, verb: str, agent: int, patient: int | None, n_chars: int) -> dict:
    v = W.VERB_BY_ID[verb]
    if v.transitive:
        if patient is None or patient == agent:
            patient = _other(rng, n_chars, agent)
    else:
        patient = None
    ev = dict(verb=verb, agent=int(agent), patient=None if patient is None else int(patient))
    if any(kind == "object" for _, kind in v.roles):
        ev["object"] = str(rng.choice(W.PROPS))
    return ev


def layout_events(rng, events: list[dict], n_chars: int, event_s: float | list[float]) -> None:
    """Simulate x positions through the plot; sets ``pos`` (start x of every character), ``dir``
    (+1 right / -1 left) and the location / direction / manner phrases of each event, in place."""
    xs = list(np.linspace(0.25, 0.75, n_chars) + rng.uniform(-0.06, 0.06, n_chars))
    rng.shuffle(xs)
    for k, ev in enumerate(events):
        dur = event_s[k] if isinstance(event_s, (list, tuple)) else event_s
        a, p, verb = ev["agent"], ev["patient"], ev["verb"]
        xa = xs[a]
        xp = xs[p] if p is not None else None
        d = 1 if xa < 0.5 else -1
        end = dict()  # character -> end x
        if verb in ("walk.01", "run.02", "throw.01"):
            speed = {"walk.01": 0.125, "run.02": 0.3, "throw.01": 0.0}[verb]
            end[a] = xa + d * speed * dur
        elif verb in ("chase.01", "follow.01"):
            d = 1 if xp < 0.5 else -1
            xa = xs[a] = xp - d * 0.22
            speed = 0.22 if verb == "chase.01" else 0.08
            end[p] = xp + d * speed * dur
            end[a] = xa + d * speed * dur
        elif verb in ("approach.01", "push.01", "hit.01", "confront.01"):
            d = 1 if xp > 0.5 else -1  # agent comes from the open side, towards the patient
            if abs(xa - xp) < 0.35 or np.sign(xp - xa) != d:
                xa = xs[a] = xp - d * 0.4
            if verb == "approach.01":
                end[a] = xp - d * 0.22
            elif verb == "push.01":
                end[p] = xp + d * 0.18
                end[a] = end[p] - d * 0.26
        elif verb in ("flee.01",):
            d = 1 if xp < 0.5 else -1
            xa = xs[a] = xp + d * 0.22
            end[a] = xa + d * 0.25 * dur
        elif verb in (
            "meet.03",
            "give.01",
            "wave.01",
            "explain.01",
            "discuss.01",
            "teach.01",
            "threaten.01",
            "avoid.01",
        ):
            d = 1 if xp > xa else -1
            gap = abs(xp - xa)
            want = 0.55 if verb in ("meet.03", "avoid.01") else 0.34
            if abs(gap - want) > 0.08:
                mid = np.clip((xa + xp) / 2, X_MIN + want / 2, X_MAX - want / 2)
                xa = xs[a] = mid - d * want / 2
                xs[p] = mid + d * want / 2
            if verb == "meet.03":
                mid = (xs[a] + xs[p]) / 2
                end[a], end[p] = mid - d * 0.13, mid + d * 0.13
            elif verb == "avoid.01":
                end[a] = xs[p] + d * 0.27
        ev["pos"] = [round(float(x), 4) for x in xs]
        ev["dir"] = int(d)
        ev["dur"] = float(dur)
        xa = xs[a]
        ev["location"] = "on the left" if xa < 0.4 else ("on the right" if xa > 0.6 else "in the middle")
        ev["direction"] = {"climb.01": "upward", "descend.01": "downward"}.get(
            verb, "to the right" if d > 0 else "to the left"
        )
        ev["manner"] = W.MANNER.get(verb, "slowly")
        for c, x in end.items():
            xs[c] = float(np.clip(x, X_MIN - 0.07, X_MAX + 0.07))
        xs = [float(np.clip(x, X_MIN, X_MAX)) for x in xs]


def add_relations(events: list[dict]) -> None:
    """VidSitu EvRel of every event to the middle one (absent on the middle one itself)."""
    mid = len(events) // 2
    for k, ev in enumerate(events):
        if k == mid:
            ev.pop("relation", None)
        else:
            a, b = (ev, events[mid]) if k < mid else (events[mid], ev)
            ev["relation"] = W.relation(a, b)


def add_structure(rng, plan: dict, verb_context_p: float = 0.0, hidden_agent_p: float = 0.0) -> None:
    """The structure knobs of real data, in place, from their own random streams (so a knob at 0
    leaves a plan exactly as without it, and one knob's setting does not change what the other
    draws: ``hidden_agent_p`` draws from a child stream of ``rng``, spawned without advancing it):

    - ``verb_context_p``: each event shows its verb's prop cue with this probability; an action
      clip (all its events together) also gets its verb's studio background (K400's bias);
    - ``hidden_agent_p``: in movies, a clean event's agent is seen only as a dark silhouette (from
      behind, in shadow) with this probability, while the story goes on -- who it is can only come
      from the neighbouring events (the SRL phrases still name it)."""
    action = plan["kind"] == "action"
    if verb_context_p > 0:
        cue = rng.random() < verb_context_p if action else None
        for ev in plan["events"]:
            ev["cue"] = bool(cue if action else rng.random() < verb_context_p)
        if action and cue:
            plan["shots"][0]["studio"] = list(W.VERB_STUDIO[plan["events"][0]["verb"]])
    if hidden_agent_p > 0 and not action:
        hid_rng = rng.spawn(1)[0]
        for ev in plan["events"]:
            ev["hidden"] = bool(ev.get("degraded") is None and hid_rng.random() < hidden_agent_p)


def degrade(rng, events: list[dict], fraction: float, kinds=DEGRADATIONS) -> None:
    for ev in events:
        ev["degraded"] = str(rng.choice(kinds)) if rng.random() < fraction else None


def sample_scene(rng, scene: str | None = None) -> dict:
    """A background instance: pattern class + two palette colours + period/phase jitter."""
    scene = scene or str(rng.choice(W.SCENES))
    c1, c2 = rng.choice(len(W.BG_PALETTE), 2, replace=False)
    return dict(
        scene=scene,
        c1=int(c1),
        c2=int(c2),
        period=float(rng.uniform(0.85, 1.15)),
        phase=float(rng.uniform(0, 1)),
        floor=float(rng.uniform(0.45, 0.7)),
    )


def furnish_scenes(rng, plan: dict, n: int) -> None:
    """The ``scene_fixtures`` knob, in place, from its own random stream: every scene instance of a
    plan (a room; shots that return to it share it) gets ``n`` pieces of its class's furniture
    (``world.SCENE_FIXTURES``), each with its own place along the wall, size and colour. A scene
    class in real footage is the objects in it (Zhou et al., ICLR 2015, "Object Detectors Emerge in
    Deep Scene CNNs"), arranged differently in every place: what tells two videos apart in a room
    is also what tells the room's class. Studio shots have none."""
    seen = set()
    for shot in plan.get("shots", []):
        inst = shot.get("scene_inst")
        if inst is None or id(inst) in seen:
            continue
        seen.add(id(inst))
        xs = np.sort(rng.uniform(0, 1, n))  # along the wrap-around wall, canvas widths
        others = [c for c in range(len(W.BG_PALETTE)) if c != inst["c1"]]
        inst["fixtures"] = [
            dict(
                x=float(x),
                w=float(rng.uniform(0.2, 0.4)),  # frame sides
                h=float(rng.uniform(0.25, 0.45)),
                colour=int(rng.choice(others)),
            )
            for x in xs
        ]


def sample_year_style(rng, year: int) -> dict:
    st = dict(W.YEAR_STYLE[year])
    st["saturation"] = float(np.clip(st["saturation"] + rng.normal(0, 0.06), 0.05, 1.1))
    st["sepia"] = float(np.clip(st["sepia"] + rng.normal(0, 0.06), 0.0, 0.8))
    st["grain"] = float(max(0.0, st["grain"] + rng.normal(0, 1.5)))
    st["year"] = year
    return st


# ----------------------------------------------------------------------------------------------
# Clips and movies
# ----------------------------------------------------------------------------------------------


def plan_movie_meta(rng) -> dict:
    """Movie-level variables shared by every clip of one (synthetic) YouTube movie."""
    return dict(
        genre=str(rng.choice(W.GENRES)),
        writer=int(rng.integers(10)),
        director=int(rng.integers(10)),
        year=int(rng.integers(9)),
        n_chars=int(rng.integers(2, 5)),
    )


_PRED: dict[str, list[tuple[str, str]]] = {}
_SUCC: dict[str, list[tuple[str, str]]] = {}
for (_a, _b), (_lab, _chk) in W.RELATIONS.items():
    _PRED.setdefault(_b, []).append((_a, _chk))
    _SUCC.setdefault(_a, []).append((_b, _chk))
PIVOTS = tuple(v for v in W.VERB_IDS if v in _PRED and v in _SUCC)


def _related_neighbours(rng, T, chars, related_p):
    """Ev2, Ev3, Ev4 built around the middle event: each neighbour is, with probability
    ``related_p``, one the plot relates to Ev3 (with the characters lined up), else a grammar step."""
    n = len(chars)
    w = np.sqrt([T[:, W.VERB_INDEX[v]].sum() for v in PIVOTS])  # flattened: no verb dominates
    v3 = (
        PIVOTS[rng.choice(len(PIVOTS), p=w / w.sum())]
        if rng.random() < 0.85
        else W.VERB_IDS[rng.integers(len(W.VERBS))]
    )
    ev3 = make_event(rng, v3, int(rng.integers(n)), None, n)
    a3, p3 = ev3["agent"], ev3["patient"]
    if v3 in _PRED and rng.random() < related_p:
        v2, chk = _PRED[v3][rng.integers(len(_PRED[v3]))]
        ev2 = (
            make_event(rng, v2, a3, p3, n)
            if chk == "A"
            else make_event(rng, v2, p3 if p3 is not None else _other(rng, n, a3), a3, n)
        )
    else:
        col = T[:, W.VERB_INDEX[v3]]
        v2 = W.VERB_IDS[rng.choice(len(W.VERBS), p=col / col.sum())]
        ev2 = make_event(rng, v2, a3 if rng.random() < 0.5 else int(rng.integers(n)), None, n)
    if v3 in _SUCC and rng.random() < related_p:
        opts = [(b, c) for b, c in _SUCC[v3] if c == "A" or p3 is not None]
        v4, chk = opts[rng.integers(len(opts))]
        ev4 = make_event(rng, v4, a3, p3, n) if chk == "A" else make_event(rng, v4, p3, a3, n)
    else:
        ev4 = next_event(rng, T, ev3, n)
    return ev2, ev3, ev4


def plan_vidsitu_clip(
    rng, meta: dict, chars: list[dict], degrade_fraction: float, related_p: float = 0.75, event_s: float = 2.0
) -> dict:
    """A 10-s VidSitu-style clip: 5 events of the movie's grammar in one scene (1-2 shots).

    The story is built around Ev3 (VidSitu's relations all point at it): Ev2 / Ev4 are related to
    it with probability ``related_p``, Ev1 / Ev5 continue the grammar backwards / forwards."""
    n_events = 5
    T = W.transition_matrix(meta["genre"], meta["writer"])
    ev2, ev3, ev4 = _related_neighbours(rng, T, chars, related_p)
    col = T[:, W.VERB_INDEX[ev2["verb"]]]
    v1 = W.VERB_IDS[rng.choice(len(W.VERBS), p=col / col.sum())]
    ev1 = make_event(rng, v1, ev2["agent"] if rng.random() < 0.6 else int(rng.integers(len(chars))), None, len(chars))
    events = [ev1, ev2, ev3, ev4, next_event(rng, T, ev4, len(chars))]
    layout_events(rng, events, len(chars), event_s)
    add_relations(events)
    degrade(rng, events, degrade_fraction)
    scene = sample_scene(rng)
    cut = int(rng.integers(1, n_events)) if rng.random() < 0.4 else n_events
    shots = [dict(scene_inst=scene, cam=float(rng.uniform(0, 1)))]
    if cut < n_events:
        shots.append(dict(scene_inst=scene, cam=float(rng.uniform(0, 1))))
    for k, ev in enumerate(events):
        ev["shot"] = 0 if k < cut else 1
        ev["scene"] = scene["scene"]
    return dict(
        kind="vidsitu",
        characters=chars,
        events=events,
        shots=shots,
        director=meta["director"],
        year_style=sample_year_style(rng, meta["year"]),
        genre=meta["genre"],
        writer=meta["writer"],
    )


def plan_action_clip(
    rng, verb: str, duration_s: float, repeat_s: float = 0.0, durations=(2.0,), repeat_rng=None
) -> dict:
    """A 'Kinetics' clip: studio background, bigger centred sprites (the domain gap; see
    :func:`film_action_clip` for the knob that films it like a movie shot instead). One event of
    ``duration_s``; or, with ``repeat_s`` > 0, the action going on for ``repeat_s`` seconds (K400's
    10-s clips): the same verb by the same characters again and again, each time ``durations``,
    drawn from ``repeat_rng`` (default: a child stream of ``rng``, spawned without advancing it), so
    ``rng`` draws the same with the knob on or off."""
    v = W.VERB_BY_ID[verb]
    chars = sample_characters(rng, 2 if v.transitive else int(rng.integers(1, 3)))
    ev = make_event(rng, verb, 0, 1 if v.transitive else None, len(chars))
    events, durs = [ev], [duration_s]
    if repeat_s > 0:  # a clip shorter than one event is that event, cut (it lasted a whole event)
        rr = repeat_rng if repeat_rng is not None else rng.spawn(1)[0]
        durs = [float(min(rr.choice(durations), repeat_s))]
        while sum(durs) < repeat_s - 1e-6:
            events.append(dict(ev))
            durs.append(float(min(rr.choice(durations), repeat_s - sum(durs))))
    layout_events(rng, events, len(chars), durs)
    for e in events:
        e.update(shot=0, scene="studio", degraded=None)
    top, bottom = rng.choice(len(W.BG_PALETTE), 2, replace=False)
    return dict(
        kind="action",
        characters=chars,
        events=events,
        shots=[dict(studio=[int(top), int(bottom)], cam=0.0)],
        director=int(rng.choice([0, 0, 0, 6])),
        year_style=None,
    )


def film_action_clip(rng, plan: dict) -> None:
    """The ``action_film_p`` knob, in place, from its own random stream: an action clip filmed like a
    movie shot instead of in the studio. Kinetics clips are YouTube videos of people in real places,
    often with other people in frame (Kay et al. 2017, "The Kinetics Human Action Video Dataset"), so
    what a K400 backbone learns carries over to movie frames; the studio clips share nothing with the
    VidSitu-style clips but the sprites. Filmed: a movie scene background, the movies' dark outlines
    and sprite scale, a director's camera and a period's colour look, and 0-2 bystanders who stand
    in the shot without acting (the movies' casts are 2-4). The verb, its agent / patient and the
    prop cue (``verb_context_p``) are kept."""
    chars, events = plan["characters"], plan["events"]
    combos = [
        (s, c) for s in W.SHAPES for c in W.COLOURS if (s, c) not in {(ch["shape"], ch["colour"]) for ch in chars}
    ]
    for k in rng.choice(len(combos), int(rng.integers(0, 3)), replace=False):
        chars.append(make_character(rng, len(chars), *combos[k]))
    layout_events(rng, events, len(chars), [ev["dur"] for ev in events])
    scene = sample_scene(rng)
    for ev in events:
        ev["scene"] = scene["scene"]
    plan.update(
        filmed=True,
        shots=[dict(scene_inst=scene, cam=float(rng.uniform(0, 1)))],
        director=int(rng.integers(10)),
        year_style=sample_year_style(rng, int(rng.integers(9))),
    )


def plan_lvu_movie(rng, duration_s: float, degrade_fraction: float = 0.1) -> dict:
    """A long movie whose 9 LVU labels are carried by variables visible only over long spans."""
    meta = plan_movie_meta(rng)
    meta["n_chars"] = int(rng.integers(3, 5))
    rel = str(rng.choice(W.RELATIONSHIPS))
    way = str(rng.choice(W.WAYS_SPEAKING))
    dominant = str(rng.choice(W.SCENES))
    chars = sample_characters(rng, meta["n_chars"])
    T = W.transition_matrix(meta["genre"], meta["writer"])
    n_events = int(round(duration_s / 2.0))
    main = (0, 1)
    events, prev = [], None
    rel_verbs, rel_p = list(W.REL_VERBS[rel]), np.array(list(W.REL_VERBS[rel].values()), float)
    for _ in range(n_events):
        u = rng.random()
        if u < 0.22:  # the two main characters interact the way their relationship dictates
            verb = str(rng.choice(rel_verbs, p=rel_p / rel_p.sum()))
            a = int(rng.integers(2))
            ev = make_event(rng, verb, main[a], main[1 - a], len(chars))
        elif u < 0.36:  # somebody speaks, mostly in the movie's way of speaking
            verb = W.SPEAKING_VERB[way] if rng.random() < 0.7 else str(rng.choice(W.SPEECH_VERBS))
            a = int(rng.choice(main)) if rng.random() < 0.7 else int(rng.integers(len(chars)))
            ev = make_event(rng, verb, a, None, len(chars))
        else:
            ev = next_event(rng, T, prev, len(chars), main)
        events.append(ev)
        prev = ev
    layout_events(rng, events, len(chars), 2.0)
    degrade(rng, events, degrade_fraction)
    style = W.DIRECTORS[meta["director"]]
    shots, k = [], 0
    while k < n_events:
        n = int(rng.integers(style.shot_events[0], style.shot_events[1] + 1))
        scene = dominant if rng.random() < 0.6 else str(rng.choice(W.SCENES))
        # A shot returns to an earlier instance of the same scene (same room) when there is one.
        same = [s["scene_inst"] for s in shots if s["scene_inst"]["scene"] == scene]
        inst = same[0] if same and rng.random() < 0.7 else sample_scene(rng, scene)
        shots.append(dict(scene_inst=inst, cam=float(rng.uniform(0, 1))))
        for ev in events[k : k + n]:
            ev["shot"] = len(shots) - 1
            ev["scene"] = scene
        k += n
    counts = {s: sum(ev["scene"] == s for ev in events) for s in W.SCENES}
    scene_label = max(W.SCENES, key=lambda s: (counts[s], s == dominant))
    # User engagement: noisy functions of visible content (genre, happy events, camera, cast size).
    happy = np.mean([ev["verb"] in ("dance.01", "wave.01", "jump.01", "give.01", "meet.03") for ev in events])
    like_clean = 9.14 + W.GENRE_LIKE[meta["genre"]] + 2.0 * (happy - 0.15)
    like_ratio = float(np.clip(like_clean + rng.normal(0, 0.2), 5.0, 9.95))
    director_pull = np.linspace(-0.8, 0.8, 10)[meta["director"]]
    views_clean = 11.76 + director_pull + 0.35 * (meta["n_chars"] - 3.5)
    log_views = views_clean + rng.normal(0, 0.3)
    total = int(rng.integers(200, 20000))
    like = int(round(total * like_ratio / 10.0))
    labels = dict(
        relationship=W.RELATIONSHIPS.index(rel),
        way_speaking=W.WAYS_SPEAKING.index(way),
        scene=W.SCENES.index(scene_label),
        director=meta["director"],
        writer=meta["writer"],
        year=meta["year"],
        genre=W.GENRES.index(meta["genre"]),
        like_ratio=[like, max(total - like, 1)],
        view_count=int(round(np.exp(log_views))),
    )
    return dict(
        kind="lvu",
        characters=chars,
        events=events,
        shots=shots,
        director=meta["director"],
        year_style=sample_year_style(rng, meta["year"]),
        genre=meta["genre"],
        writer=meta["writer"],
        relationship=rel,
        way_speaking=way,
        dominant_scene=dominant,
        labels=labels,
        clean=dict(like_ratio=float(like_clean), view_count=float(views_clean)),
    )
