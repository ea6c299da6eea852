"""The SynthMovies world: the fixed vocabularies every generated movie draws from.

Everything here is a constant table (never seeded by the user's ``--seed``), so a class id means
the same thing in every generated dataset: verb 7 is always ``fall.01``, director 3 is always the
hand-held camera, writer 5 always has the same favourite plot twists.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# --------------------------------------------------------------------------------------------
# Verbs. ``motion`` names the motion program in render.py. ``roles`` lists the VidSitu raw role
# names in annotation-form order, each with the generating variable that fills it:
#   agent / patient / object / recipient (a character or prop phrase), manner, direction,
#   location (where the agent is), scene (the shot's scene class).
# ``syn``: near-synonyms that extra annotators use instead (VidSitu's 10-annotator disagreement).
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verb:
    id: str
    name: str
    roles: tuple[tuple[str, str], ...]
    syn: tuple[str, ...] = ()
    transitive: bool = False  # has a patient character
    speech: bool = False


def _v(vid, name, roles, syn=(), transitive=False, speech=False):
    return Verb(vid, name, tuple(roles), tuple(syn), transitive, speech)


_SCN = ("Scene of the Event", "scene")
_LOC = ("ArgM (location)", "location")
_DIR = ("ArgM (direction)", "direction")
_MNR = ("ArgM (manner)", "manner")

VERBS: tuple[Verb, ...] = (
    _v("walk.01", "walk", [("Arg0 (walker)", "agent"), _DIR, _MNR, _SCN], ("stroll.01", "move.01")),
    _v("run.02", "run", [("Arg0 (runner)", "agent"), _DIR, _MNR, _SCN], ("sprint.01", "rush.01")),
    _v("jump.01", "jump", [("Arg0 (jumper)", "agent"), _LOC, _SCN], ("leap.01", "hop.01")),
    _v("fall.01", "fall", [("Arg1 (thing falling)", "agent"), _LOC, _SCN], ("collapse.01", "drop.01")),
    _v("spin.01", "spin", [("Arg0 (spinner)", "agent"), _MNR, _SCN], ("twirl.01", "turn.01")),
    _v(
        "wave.01",
        "wave",
        [("Arg0 (waver)", "agent"), ("Arg2 (waved at)", "patient"), _SCN],
        ("greet.01", "gesture.01"),
        True,
    ),
    _v("grow.01", "grow", [("Arg1 (thing growing)", "agent"), _MNR, _SCN], ("expand.01", "swell.01")),
    _v("shrink.01", "shrink", [("Arg1 (thing shrinking)", "agent"), _MNR, _SCN], ("contract.01", "cower.01")),
    _v(
        "push.01",
        "push",
        [("Arg0 (pusher)", "agent"), ("Arg1 (thing pushed)", "patient"), _DIR, _SCN],
        ("shove.01", "hit.01"),
        True,
    ),
    _v(
        "hit.01",
        "hit",
        [("Arg0 (hitter)", "agent"), ("Arg1 (thing hit)", "patient"), _MNR, _SCN],
        ("strike.01", "punch.01"),
        True,
    ),
    _v(
        "chase.01",
        "chase",
        [("Arg0 (chaser)", "agent"), ("Arg1 (thing chased)", "patient"), _DIR, _SCN],
        ("pursue.01", "follow.01"),
        True,
    ),
    _v(
        "follow.01",
        "follow",
        [("Arg0 (follower)", "agent"), ("Arg1 (thing followed)", "patient"), _MNR, _SCN],
        ("trail.01", "walk.01"),
        True,
    ),
    _v(
        "approach.01",
        "approach",
        [("Arg0 (approacher)", "agent"), ("Arg1 (thing approached)", "patient"), _MNR, _SCN],
        ("near.01", "walk.01"),
        True,
    ),
    _v(
        "flee.01",
        "flee",
        [("Arg0 (fleer)", "agent"), ("Arg1 (thing fled from)", "patient"), _DIR, _SCN],
        ("escape.01", "run.02"),
        True,
    ),
    _v("hide.01", "hide", [("Arg0 (hider)", "agent"), _LOC, _SCN], ("disappear.01", "vanish.01")),
    _v("appear.01", "appear", [("Arg1 (thing appearing)", "agent"), _LOC, _SCN], ("emerge.01", "arrive.01")),
    _v("sit.01", "sit", [("Arg1 (sitter)", "agent"), _LOC, _SCN], ("crouch.01", "rest.01")),
    _v("stand.01", "stand", [("Arg1 (thing standing)", "agent"), _LOC, _SCN], ("rise.01", "get_up.01")),
    _v("shake.01", "shake", [("Arg0 (shaker)", "agent"), _MNR, _SCN], ("tremble.01", "shiver.01")),
    _v("circle.01", "circle", [("Arg0 (circler)", "agent"), _LOC, _SCN], ("orbit.01", "turn.01")),
    _v("climb.01", "climb", [("Arg0 (climber)", "agent"), _DIR, _SCN], ("ascend.01", "rise.01")),
    _v("descend.01", "descend", [("Arg0 (descender)", "agent"), _DIR, _SCN], ("lower.01", "drop.01")),
    _v(
        "meet.03",
        "meet",
        [("Arg0 (one party)", "agent"), ("Arg1 (other party)", "patient"), _LOC, _SCN],
        ("greet.01", "approach.01"),
        True,
    ),
    _v(
        "avoid.01",
        "avoid",
        [("Arg0 (avoider)", "agent"), ("Arg1 (thing avoided)", "patient"), _DIR, _SCN],
        ("dodge.01", "walk.01"),
        True,
    ),
    _v(
        "give.01",
        "give",
        [("Arg0 (giver)", "agent"), ("Arg1 (thing given)", "object"), ("Arg2 (entity given to)", "recipient"), _SCN],
        ("hand.01", "pass.01"),
        True,
    ),
    _v(
        "throw.01",
        "throw",
        [("Arg0 (thrower)", "agent"), ("Arg1 (thing thrown)", "object"), _DIR, _SCN],
        ("toss.01", "fling.01"),
    ),
    _v("nod.01", "nod", [("Arg0 (nodder)", "agent"), _MNR, _SCN], ("agree.01", "bow.01")),
    _v("dance.01", "dance", [("Arg0 (dancer)", "agent"), _MNR, _SCN], ("bounce.01", "jump.01")),
    _v("wait.01", "wait", [("Arg1 (waiter)", "agent"), _LOC, _SCN], ("stand.01", "stay.01")),
    _v(
        "explain.01",
        "explain",
        [("Arg0 (explainer)", "agent"), ("Arg2 (listener)", "patient"), _MNR, _SCN],
        ("talk.01", "speak.01"),
        True,
        True,
    ),
    _v(
        "confront.01",
        "confront",
        [("Arg0 (confronter)", "agent"), ("Arg1 (confronted)", "patient"), _MNR, _SCN],
        ("argue.01", "yell.01"),
        True,
        True,
    ),
    _v(
        "discuss.01",
        "discuss",
        [("Arg0 (discusser)", "agent"), ("Arg2 (other party)", "patient"), _MNR, _SCN],
        ("talk.01", "chat.01"),
        True,
        True,
    ),
    _v(
        "teach.01",
        "teach",
        [("Arg0 (teacher)", "agent"), ("Arg2 (student)", "patient"), _MNR, _SCN],
        ("explain.01", "show.01"),
        True,
        True,
    ),
    _v(
        "threaten.01",
        "threaten",
        [("Arg0 (threatener)", "agent"), ("Arg1 (threatened)", "patient"), _MNR, _SCN],
        ("warn.01", "yell.01"),
        True,
        True,
    ),
)
VERB_IDS: tuple[str, ...] = tuple(v.id for v in VERBS)
VERB_INDEX: dict[str, int] = {v: i for i, v in enumerate(VERB_IDS)}
VERB_BY_ID: dict[str, Verb] = {v.id: v for v in VERBS}
SPEECH_VERBS = tuple(v.id for v in VERBS if v.speech)

# How the verb is done, fixed per verb so the ArgM (manner) phrase is predictable from the verb.
MANNER = {
    "walk.01": "slowly",
    "run.02": "quickly",
    "spin.01": "in circles",
    "grow.01": "suddenly",
    "shrink.01": "slowly",
    "hit.01": "hard",
    "follow.01": "slowly",
    "approach.01": "carefully",
    "shake.01": "nervously",
    "nod.01": "slowly",
    "dance.01": "happily",
    "explain.01": "calmly",
    "confront.01": "angrily",
    "discuss.01": "at length",
    "teach.01": "patiently",
    "threaten.01": "loudly",
}

# --------------------------------------------------------------------------------------------
# Plot grammar. SCRIPT[v] = likely successors (verb, weight, role map). Role map "A": the same
# agent acts again; "P": the previous patient becomes the agent (and the previous agent the
# patient). RELATIONS[(earlier, later)] = (label, role check) is what the plot *means*: the pair is
# related only when the characters line up (check "A": same agent; "P": later agent = earlier
# patient). Every related pair is also a likely script transition, so the relations are common.
# --------------------------------------------------------------------------------------------

SCRIPT: dict[str, list[tuple[str, float, str]]] = {
    "walk.01": [("approach.01", 0.35, "A"), ("run.02", 0.15, "A"), ("wait.01", 0.1, "A"), ("wave.01", 0.1, "A")],
    "run.02": [("jump.01", 0.3, "A"), ("walk.01", 0.2, "A"), ("flee.01", 0.1, "A"), ("fall.01", 0.1, "A")],
    "jump.01": [("fall.01", 0.3, "A"), ("jump.01", 0.15, "A"), ("run.02", 0.2, "A"), ("dance.01", 0.1, "A")],
    "fall.01": [("flee.01", 0.35, "A"), ("stand.01", 0.35, "A"), ("shake.01", 0.1, "A")],
    "spin.01": [("fall.01", 0.3, "A"), ("dance.01", 0.3, "A"), ("wait.01", 0.1, "A")],
    "wave.01": [("wave.01", 0.35, "P"), ("approach.01", 0.3, "P"), ("meet.03", 0.15, "A")],
    "grow.01": [("threaten.01", 0.4, "A"), ("push.01", 0.2, "A"), ("shrink.01", 0.1, "A")],
    "shrink.01": [("hide.01", 0.4, "A"), ("flee.01", 0.3, "A")],
    "push.01": [("fall.01", 0.5, "P"), ("spin.01", 0.15, "P"), ("flee.01", 0.15, "P")],
    "hit.01": [("fall.01", 0.4, "P"), ("shake.01", 0.3, "P"), ("flee.01", 0.1, "P")],
    "chase.01": [("flee.01", 0.35, "P"), ("hide.01", 0.3, "P"), ("push.01", 0.15, "A")],
    "follow.01": [("approach.01", 0.4, "A"), ("chase.01", 0.25, "A")],
    "approach.01": [
        ("push.01", 0.3, "A"),
        ("hit.01", 0.15, "A"),
        ("give.01", 0.15, "A"),
        ("confront.01", 0.1, "A"),
        ("discuss.01", 0.1, "A"),
    ],
    "flee.01": [("hide.01", 0.45, "A"), ("run.02", 0.2, "A"), ("climb.01", 0.1, "A")],
    "hide.01": [("appear.01", 0.6, "A"), ("wait.01", 0.1, "A")],
    "appear.01": [("wave.01", 0.3, "A"), ("approach.01", 0.25, "A"), ("walk.01", 0.15, "A")],
    "sit.01": [("stand.01", 0.4, "A"), ("wait.01", 0.25, "A"), ("discuss.01", 0.15, "A")],
    "stand.01": [("walk.01", 0.4, "A"), ("run.02", 0.2, "A"), ("wave.01", 0.2, "A")],
    "shake.01": [("fall.01", 0.3, "A"), ("flee.01", 0.3, "A")],
    "circle.01": [("spin.01", 0.3, "A"), ("jump.01", 0.3, "A"), ("wait.01", 0.1, "A")],
    "climb.01": [("jump.01", 0.45, "A"), ("descend.01", 0.3, "A")],
    "descend.01": [("walk.01", 0.35, "A"), ("sit.01", 0.35, "A")],
    "meet.03": [("dance.01", 0.35, "A"), ("discuss.01", 0.3, "A"), ("give.01", 0.15, "A")],
    "avoid.01": [("walk.01", 0.3, "A"), ("run.02", 0.3, "A"), ("hide.01", 0.2, "A")],
    "give.01": [("nod.01", 0.35, "P"), ("wave.01", 0.2, "P"), ("dance.01", 0.2, "P")],
    "throw.01": [("run.02", 0.3, "A"), ("jump.01", 0.3, "A")],
    "nod.01": [("discuss.01", 0.3, "A"), ("explain.01", 0.2, "A"), ("wait.01", 0.2, "A")],
    "dance.01": [("spin.01", 0.3, "A"), ("jump.01", 0.3, "A"), ("dance.01", 0.1, "A")],
    "wait.01": [("walk.01", 0.25, "A"), ("sit.01", 0.25, "A"), ("wave.01", 0.2, "A"), ("nod.01", 0.1, "A")],
    "explain.01": [("nod.01", 0.45, "P"), ("discuss.01", 0.2, "A"), ("teach.01", 0.15, "A")],
    "confront.01": [("push.01", 0.3, "A"), ("threaten.01", 0.2, "A"), ("flee.01", 0.25, "P")],
    "discuss.01": [("nod.01", 0.3, "P"), ("explain.01", 0.25, "A"), ("discuss.01", 0.15, "P")],
    "teach.01": [("nod.01", 0.45, "P"), ("explain.01", 0.25, "A")],
    "threaten.01": [("flee.01", 0.5, "P"), ("shrink.01", 0.2, "P"), ("hide.01", 0.1, "P")],
}

RELATION_LABELS = ("Causes", "Reaction To", "Enables", "NoRel")
RELATIONS: dict[tuple[str, str], tuple[str, str]] = {
    ("push.01", "fall.01"): ("Causes", "P"),
    ("hit.01", "fall.01"): ("Causes", "P"),
    ("hit.01", "shake.01"): ("Causes", "P"),
    ("push.01", "spin.01"): ("Causes", "P"),
    ("give.01", "dance.01"): ("Causes", "P"),
    ("threaten.01", "shrink.01"): ("Causes", "P"),
    ("approach.01", "push.01"): ("Enables", "A"),
    ("approach.01", "hit.01"): ("Enables", "A"),
    ("approach.01", "give.01"): ("Enables", "A"),
    ("approach.01", "confront.01"): ("Enables", "A"),
    ("meet.03", "dance.01"): ("Enables", "A"),
    ("climb.01", "jump.01"): ("Enables", "A"),
    ("stand.01", "walk.01"): ("Enables", "A"),
    ("stand.01", "run.02"): ("Enables", "A"),
    ("hide.01", "appear.01"): ("Enables", "A"),
    ("fall.01", "flee.01"): ("Reaction To", "A"),
    ("threaten.01", "flee.01"): ("Reaction To", "P"),
    ("chase.01", "hide.01"): ("Reaction To", "P"),
    ("chase.01", "flee.01"): ("Reaction To", "P"),
    ("wave.01", "wave.01"): ("Reaction To", "P"),
    ("confront.01", "flee.01"): ("Reaction To", "P"),
    ("push.01", "flee.01"): ("Reaction To", "P"),
    ("explain.01", "nod.01"): ("Reaction To", "P"),
    ("teach.01", "nod.01"): ("Reaction To", "P"),
    ("give.01", "nod.01"): ("Reaction To", "P"),
}

# --------------------------------------------------------------------------------------------
# Characters and scenes.
# --------------------------------------------------------------------------------------------
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring")
COLOURS = {  # name -> RGB
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (40, 80, 230),
    "yellow": (240, 220, 40),
    "purple": (150, 50, 200),
    "orange": (245, 140, 20),
    "white": (245, 245, 245),
    "pink": (250, 120, 190),
}
SIZES = {"small": 0.10, "big": 0.14}  # radius as a fraction of the frame's short side
TEXTURES = ("plain", "striped")
PROPS = ("ball", "box", "flower", "letter")

# Verb context cues (the ``verb_context_p`` knob): K400's representation bias (Li et al., ECCV 2018,
# "RESOUND"; Choi et al., NeurIPS 2019) -- the objects and scenes around an action tell what it is.
# Each verb owns one prop icon (shape x colour, a small sprite on the floor where its agent starts)
# and, in action clips, one studio background; fixed tables, like everything here.
_cue_rng = np.random.default_rng(2026)
_cue_combos = [(s, c) for s in SHAPES for c in COLOURS]
VERB_CUES: dict[str, tuple[str, str]] = {
    v: _cue_combos[i] for v, i in zip(VERB_IDS, _cue_rng.permutation(len(_cue_combos))[: len(VERB_IDS)])
}
VERB_STUDIO: dict[str, tuple[int, int]] = {
    v: (int(i) // 10, int(i) % 10)
    for v, i in zip(
        VERB_IDS,
        _cue_rng.choice([a * 10 + b for a in range(10) for b in range(10) if a != b], len(VERB_IDS), replace=False),
    )
}
CUE_SIZE = 0.06  # radius as a fraction of the frame

# LVU's six scene classes; a scene class is a background *pattern*; its colours are drawn per
# instance from one shared palette, so mean colour says nothing about the class.
SCENES = ("office", "airport", "school", "hotel", "prison", "restaurant")
# Each scene class's furniture (the ``scene_fixtures`` knob): one silhouette per class, drawn on the
# wall / floor of a room; render.fixture_mask draws it. Not class-specific: size, place, colour.
SCENE_FIXTURES = {
    "office": "desk",
    "airport": "seat_row",
    "school": "easel",
    "hotel": "armchair",
    "prison": "bunk",
    "restaurant": "round_table",
}
SCENE_PHRASES = {
    "office": ("in an office", "office", "in the office room"),
    "airport": ("at an airport", "airport", "in the terminal"),
    "school": ("in a school", "school", "in the classroom"),
    "hotel": ("in a hotel", "hotel", "in the hotel lobby"),
    "prison": ("in a prison", "prison", "in a prison cell"),
    "restaurant": ("in a restaurant", "restaurant", "in the dining room"),
}
BG_PALETTE = np.array(
    [
        (70, 90, 110),
        (120, 100, 80),
        (90, 120, 90),
        (140, 130, 120),
        (100, 80, 120),
        (60, 110, 120),
        (150, 120, 90),
        (110, 110, 140),
        (80, 80, 80),
        (130, 150, 130),
    ],
    dtype=np.float32,
)

# --------------------------------------------------------------------------------------------
# Movie-level (LVU) variables. Names follow LVU's class names; ids are the class ids in the files.
# --------------------------------------------------------------------------------------------
RELATIONSHIPS = ("friend", "ex-boyfriend_ex-girlfriend", "husband_wife", "boyfriend_girlfriend")
# Interaction verbs between the two main characters, per relationship (overlapping on purpose).
REL_VERBS = {
    "friend": {"wave.01": 3, "approach.01": 2, "discuss.01": 2, "follow.01": 2, "jump.01": 1},
    "ex-boyfriend_ex-girlfriend": {"avoid.01": 3, "flee.01": 2, "confront.01": 2, "push.01": 2, "wave.01": 1},
    "husband_wife": {"give.01": 3, "sit.01": 2, "follow.01": 2, "discuss.01": 2, "nod.01": 1},
    "boyfriend_girlfriend": {"meet.03": 3, "dance.01": 2, "approach.01": 2, "give.01": 2, "wave.01": 1},
}
WAYS_SPEAKING = ("explains", "confronts", "discuss", "teaches", "threatens")
SPEAKING_VERB = dict(zip(WAYS_SPEAKING, ("explain.01", "confront.01", "discuss.01", "teach.01", "threaten.01")))
GENRES = ("Comedy", "Action-Crime-Adventure", "Romance", "Thriller-Horror")
GENRE_VERBS = {
    "Comedy": ("jump.01", "spin.01", "dance.01", "fall.01", "shrink.01", "grow.01", "wave.01"),
    "Action-Crime-Adventure": ("chase.01", "run.02", "push.01", "hit.01", "flee.01", "throw.01", "climb.01"),
    "Romance": ("approach.01", "meet.03", "dance.01", "give.01", "wave.01", "follow.01", "sit.01"),
    "Thriller-Horror": ("hide.01", "appear.01", "flee.01", "shake.01", "avoid.01", "threaten.01", "descend.01"),
}
GENRE_LIKE = {"Comedy": 0.35, "Action-Crime-Adventure": -0.1, "Romance": 0.2, "Thriller-Horror": -0.45}
YEARS = tuple(str(1930 + 10 * k) for k in range(9))  # decade class ids 0..8
WRITER_NAMES = ("\\N",) + tuple(f"nm98{k:05d}" for k in range(1, 10))  # class 0 is IMDb's null, as in LVU
DIRECTOR_NAMES = tuple(f"nm97{k:05d}" for k in range(10))


@dataclass(frozen=True)
class CameraStyle:
    """A director's camera: what the renderer does with the frame, shot after shot."""

    pan: float = 0.0  # background pan speed, frame widths per second
    tilt: float = 0.0  # vertical background pan, frame heights per second
    shake: float = 0.0  # hand-held jitter, fraction of the frame
    zoom: float = 0.0  # zoom-in per shot (fractional scale gain over a shot)
    letterbox: float = 0.0  # black bars, fraction of the height each
    vignette: float = 0.0  # corner darkening strength
    shot_events: tuple[int, int] = (2, 5)  # events per shot (min, max)
    extra: dict = field(default_factory=dict, hash=False, compare=False)


DIRECTORS: tuple[CameraStyle, ...] = (
    CameraStyle(),  # 0 static tripod, long shots
    CameraStyle(pan=0.08, shot_events=(3, 6)),  # 1 slow tracking
    CameraStyle(pan=0.35, shot_events=(2, 4)),  # 2 fast whip pans
    CameraStyle(shake=0.025, shot_events=(2, 4)),  # 3 hand-held
    CameraStyle(shot_events=(1, 1)),  # 4 a cut every event
    CameraStyle(letterbox=0.12, shot_events=(2, 5)),  # 5 widescreen
    CameraStyle(zoom=0.35, shot_events=(2, 4)),  # 6 slow push-in
    CameraStyle(vignette=0.7, shot_events=(2, 5)),  # 7 vignette
    CameraStyle(tilt=0.12, shot_events=(2, 4)),  # 8 tilting
    CameraStyle(pan=0.12, shake=0.012, letterbox=0.06, shot_events=(1, 3)),  # 9 restless
)

# Year = palette and film stock: saturation, sepia, grain (sigma in 8-bit levels), flicker.
# Neighbouring decades differ little on purpose (jittered per clip: plot.sample_year_style), so year is hard.
YEAR_STYLE = tuple(
    dict(
        saturation=0.15 + 0.1 * k,
        sepia=max(0.0, 0.6 - 0.1 * k),
        grain=max(0.0, 14.0 - 1.6 * k),
        flicker=max(0.0, 0.08 - 0.01 * k),
    )
    for k in range(9)
)


def _writer_twists() -> tuple[dict[tuple[str, str], float], ...]:
    # Each writer has four signature transitions that they use far more than anybody else.
    rng = np.random.default_rng(20210617)
    out = []
    for _ in range(10):
        twists = {}
        while len(twists) < 4:
            a, b = rng.choice(len(VERBS), 2, replace=False)
            twists[(VERB_IDS[a], VERB_IDS[b])] = 1.5
        out.append(twists)
    return tuple(out)


WRITER_TWISTS = _writer_twists()


def transition_matrix(genre: str | None = None, writer: int | None = None, floor: float = 0.15) -> np.ndarray:
    """Row-stochastic (V, V) Markov matrix of the plot grammar, for a genre and a writer.

    Rows: the script successors (mass ~0.6-0.8), a uniform floor, genre-favoured verbs x3, and the
    writer's four signature twists. Used both to generate plots and by the context oracle.
    """
    V = len(VERBS)
    T = np.full((V, V), floor / V)
    for a, succ in SCRIPT.items():
        for b, w, _ in succ:
            T[VERB_INDEX[a], VERB_INDEX[b]] += w
    if genre is not None:
        fav = np.ones(V)
        fav[[VERB_INDEX[v] for v in GENRE_VERBS[genre]]] = 3.0
        T = T * fav[None, :]
    T = T / T.sum(1, keepdims=True)
    if writer is not None:
        for (a, b), w in WRITER_TWISTS[writer].items():
            T[VERB_INDEX[a], VERB_INDEX[b]] += w * T[VERB_INDEX[a]].max()
        T = T / T.sum(1, keepdims=True)
    return T


def script_role(a: str, b: str) -> str | None:
    for v, _, role in SCRIPT.get(a, ()):
        if v == b:
            return role
    return None


def relation(earlier: dict, later: dict) -> str:
    """The plot's relation of two events (earlier first), from verbs and who does what."""
    rule = RELATIONS.get((earlier["verb"], later["verb"]))
    if rule is None:
        return "NoRel"
    label, check = rule
    who = earlier["agent"] if check == "A" else earlier.get("patient")
    return label if who is not None and later["agent"] == who else "NoRel"


def character_phrase(ch: dict, variant: int = 0) -> str:
    """VidSitu-style noun phrase; variant 0 is canonical, others are annotators' paraphrases."""
    size = ch["size"] if variant != 2 else {"small": "little", "big": "large"}[ch["size"]]
    tex = "striped " if ch["texture"] == "striped" else ""
    if variant == 1:
        return f"a {size} {tex}{ch['colour']} {ch['shape']}"
    if variant == 3:
        return f"the {ch['colour']} {ch['shape']}"
    return f"the {size} {tex}{ch['colour']} {ch['shape']}"
