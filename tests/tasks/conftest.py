"""A small VidSitu fixture in the released layout, with learnable random features.

Each segment's 5 events get a verb from a small set; an event's (D,) feature is that verb's random
direction plus noise, so a head can learn verbs (and the role phrases that depend on the verb). The
relation of (EvX, Ev3) is a function of the two verbs."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

EVENTS = ("Ev1", "Ev2", "Ev3", "Ev4", "Ev5")
VERBS = {  # verb id -> (raw role name, phrase) list in Arg_List order
    "push.01": [
        ("Arg0 (pusher)", "the man"),
        ("Arg1 (thing pushed)", "a red box"),
        ("Scene of the Event", "warehouse"),
    ],
    "fall.01": [
        ("Arg1 (thing falling)", "a red box"),
        ("ArgM (direction)", "down"),
        ("Scene of the Event", "warehouse"),
    ],
    "run.02": [("Arg0 (runner)", "the woman"), ("ArgM (location)", "on the street"), ("Arg5 (extra)", "fast")],
    "talk.01": [("Arg0 (talker)", "the woman"), ("Arg2 (hearer)", "the man"), ("Scene of the Event", "a kitchen")],
}
VERB_LIST = sorted(VERBS)


def relation_of(a: str, b: str) -> str:
    if a == "push.01" and b == "fall.01":
        return "Causes"
    if a == "fall.01" or b == "fall.01":
        return "Reaction To"
    if a == b:
        return "Enables"
    return "NoRel"


def _event(vseg, verb):
    roles = VERBS[verb]
    order = list(range(len(roles)))
    return {
        "vid_uid": vseg.rpartition("_seg_")[0],
        "vid_seg_int": vseg,
        "Verb": verb.split(".")[0],
        "VerbID": verb,
        "Arg_List": {raw: str(i + 1) if i % 2 else i + 1 for i, (raw, _) in zip(order, roles)},
        "Args": {raw: ph for raw, ph in roles},
    }


def make_vidsitu(root: Path, n_train: int = 24, n_valid: int = 8, dim: int = 32, seed: int = 0, noise: float = 0.3):
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    protos = {v: nrng.normal(size=dim).astype(np.float32) for v in VERB_LIST}
    ann = root / "vidsitu_annotations"
    for sub in ("split_files", "vinfo_files", "vseg_ann_files"):
        (ann / sub).mkdir(parents=True, exist_ok=True)
    feats = root / "feats"
    feats.mkdir(parents=True, exist_ok=True)
    k = 0
    for split, n in (("train", n_train), ("valid", n_valid)):
        vsegs, vinfos, records = [], [], []
        for _ in range(n):
            yt = f"yt{k:04d}_a-b"[:11].ljust(11, "x")
            k += 1
            vseg = f"v_{yt}_seg_{10 * k}_{10 * k + 10}"
            verbs = [rng.choice(VERB_LIST) for _ in EVENTS]
            vsegs.append(vseg)
            info = {
                "vid_uid": f"v_{yt}",
                "vid_seg_int": vseg,
                "name": yt,
                "start": 10 * k,
                "end": 10 * k + 10,
                "genres": ["drama"],
                "duration": 100.0,
            }
            if split == "valid":
                info["vbid_lst"] = {ev: [v] * 8 + [rng.choice(VERB_LIST)] * 2 for ev, v in zip(EVENTS, verbs)}
                info["vb_lst"] = {ev: [x.split(".")[0] for x in info["vbid_lst"][ev]] for ev in EVENTS}
                info["vb_to_use"] = {ev: v.split(".")[0] for ev, v in zip(EVENTS, verbs)}
            vinfos.append(info)
            for r in range(1 if split == "train" else 3):
                rec = {ev: _event(vseg, v) for ev, v in zip(EVENTS, verbs)}
                for ev in ("Ev1", "Ev2", "Ev4", "Ev5"):
                    i = EVENTS.index(ev)
                    a, b = (verbs[i], verbs[2]) if i < 2 else (verbs[2], verbs[i])
                    rec[ev]["EvRel"] = (
                        relation_of(a, b) if r < 2 else rng.choice(["Causes", "NoRel", "Enables", "Reaction To"])
                    )
                records.append(rec)
            f = np.stack([protos[v] + noise * nrng.normal(size=dim).astype(np.float32) for v in verbs])
            np.save(feats / f"{vseg}_feats.npy", f.astype(np.float32))
        (ann / "split_files" / f"vseg_split_{split}_lb.json").write_text(json.dumps(vsegs))
        (ann / "vinfo_files" / f"vinfo_{split}_lb.json").write_text(json.dumps(vinfos))
        (ann / "vseg_ann_files" / f"vsann_{split}_lb.json").write_text(json.dumps(records))
    return ann, feats


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Tiny models: one intra-op thread is as fast, and far faster on a shared, loaded machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def vidsitu_fixture(tmp_path_factory):
    root = tmp_path_factory.mktemp("vidsitu")
    return make_vidsitu(root)
