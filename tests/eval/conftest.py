"""Builders for VidSitu release folders (split/vinfo/vseg_ann files) used by the eval tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

EVENTS = ("Ev1", "Ev2", "Ev3", "Ev4", "Ev5")
PAIR_EVENTS = ("Ev1", "Ev2", "Ev4", "Ev5")


def event(vseg, verb, roles=(), evrel=None):
    """One annotated event; ``roles`` = [(raw_role, phrase), ...] in form order."""
    ev = {
        "vid_uid": vseg.rpartition("_seg_")[0],
        "vid_seg_int": vseg,
        "Verb": verb.split(".")[0],
        "VerbID": verb,
        "Arg_List": {raw: str(i + 1) for i, (raw, _) in enumerate(roles)},
        "Args": {raw: p for raw, p in roles},
    }
    if evrel is not None:
        ev["EvRel"] = evrel
    return ev


def record(vseg, verbs=("talk.01",) * 5, roles=None, evrels=("NoRel",) * 4):
    """One annotator's record: 5 events, ``roles[k]`` for event k (default none), EvRel on Ev1/2/4/5."""
    roles = roles or [()] * 5
    rels = dict(zip(PAIR_EVENTS, evrels))
    return {ev: event(vseg, verbs[k], roles[k], rels.get(ev)) for k, ev in enumerate(EVENTS)}


def write_release(root: Path, split: str, vsegs, records=None, vbid=None, ann_name=None) -> Path:
    """Write ``root/vidsitu_annotations`` with one split; ``vbid[vseg]`` = 5 lists of verb ids."""
    ann = Path(root) / "vidsitu_annotations"
    for d in ("split_files", "vinfo_files", "vseg_ann_files"):
        (ann / d).mkdir(parents=True, exist_ok=True)
    (ann / "split_files" / f"vseg_split_{split}_lb.json").write_text(json.dumps(list(vsegs)))
    vinfo = []
    for v in vbid or {}:
        yt = v.rpartition("_seg_")[0][2:]
        vinfo.append(
            {
                "vid_uid": "v_" + yt,
                "name": yt,
                "vid_seg_int": v,
                "start": 0,
                "end": 10,
                "genres": "Drama",
                "vbid_lst": {ev: list(vbid[v][k]) for k, ev in enumerate(EVENTS)},
                "vb_lst": {ev: [x.split(".")[0] for x in vbid[v][k]] for k, ev in enumerate(EVENTS)},
                "vb_to_use": {ev: vbid[v][k][0] for k, ev in enumerate(EVENTS)},
            }
        )
    if vinfo:
        (ann / "vinfo_files" / f"vinfo_{split}_lb.json").write_text(json.dumps(vinfo))
    if records is not None:
        name = ann_name or f"vsann_{split}_lb.json"
        (ann / "vseg_ann_files" / name).write_text(json.dumps(records))
    return ann


@pytest.fixture
def release():
    return write_release


@pytest.fixture
def rec():
    return record
