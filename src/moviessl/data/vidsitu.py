"""Reader for VidSitu as released (``vidsitu_annotations/``), and the SRL target-text helpers.

Layout (VidSitu's release, ``TheShadow29/VidSitu``, README and ``vidsitu_code/dat_loader.py``)::

    vidsitu_annotations/
      split_files/vseg_split_{split}_lb.json      flat list of segment ids; position = ann_idx
      vinfo_files/vinfo_{split}_lb.json           per-segment metadata (+ vbid_lst on valid)
      vseg_ann_files/vsann_{split}[_noann]_lb.json  one record per annotator and segment

Everything the official evaluator keys on is kept exactly as in the files: ``vseg_ids`` in split
order (``ann_idx``), records grouped by ``record["Ev1"]["vid_seg_int"]`` in file order, and dict key
order inside events (the evaluator enumerates roles in ``Args`` order). Malformed files raise
:class:`~moviessl.errors.BadInputError` naming the file and the entry.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import BadInputError

EVENTS = ("Ev1", "Ev2", "Ev3", "Ev4", "Ev5")
# Relation label strings as they appear in EvRel; the loader ids below add "Null" (a missing key,
# never a GT pair label, always wrong as a prediction).
RELATIONS = ("Causes", "Reaction To", "Enables", "NoRel")
RELATION_IDS = {"Null": 0, "Causes": 1, "Reaction To": 2, "Enables": 3, "NoRel": 4}
RELATION_NAMES = tuple(RELATION_IDS)  # id -> name
# The 4 scored pairs, earlier event first; the EvRel is stored on the non-Ev3 event of each pair.
PAIRS = (("Ev1", "Ev3"), ("Ev2", "Ev3"), ("Ev3", "Ev4"), ("Ev3", "Ev5"))
PAIR_EVENTS = ("Ev1", "Ev2", "Ev4", "Ev5")
# Short role names (arg_mapper's outputs); only SCORED_ROLES are ever evaluated.
ROLES = ("Arg0", "Arg1", "Arg2", "Arg3", "Arg4", "Arg5", "ADir", "APrp", "AMnr", "ALoc", "AGol", "AScn")
SCORED_ROLES = ("Arg0", "Arg1", "Arg2", "ALoc", "AScn")
# Start tags the reference output parser recognises (<Arg5> is not among them).
PARSE_ROLES = tuple(r for r in ROLES if r != "Arg5")
SPLITS = ("train", "valid", "testvb", "testsrl", "testevrel")
# VidSitu released no ground truth for its test splits (verbs only for testsrl, verbs and roles for
# testevrel, nothing for testvb): they were scored on AI2's leaderboards, so predictions are all a
# run can give for them.
UNSCORED_SPLITS = ("testvb", "testsrl", "testevrel")


def scorable(split: "VidSituSplit") -> bool:
    """Whether ``split``'s ground truth was released (every split but the three test splits)."""
    return split.split not in UNSCORED_SPLITS


_ARGM_RE = re.compile(r"ArgM (.*)")
_ARGM_TYPES = (("direction", "ADir"), ("purpose", "APrp"), ("manner", "AMnr"), ("location", "ALoc"), ("goal", "AGol"))


def arg_mapper(raw_role: str) -> str:
    """Raw annotation role name -> short name (``"Arg0 (talker)"`` -> ``"Arg0"``,
    ``"ArgM (location)"`` -> ``"ALoc"``, ``"Scene of the Event"`` -> ``"AScn"``).

    Same rules and precedence as VidSitu's ``arg_mapper``; an unknown ArgM type raises ValueError
    (the reference raises too)."""
    if not isinstance(raw_role, str):
        raise ValueError(f"role name must be a string, got {type(raw_role).__name__}")
    head = raw_role.split(" ")[0]
    if head in ("Arg0", "Arg1", "Arg2", "Arg3", "Arg4", "Arg5"):
        return head
    if raw_role == "Scene of the Event":
        return "AScn"
    found = _ARGM_RE.findall(raw_role) if head == "ArgM" else []
    if not found:
        raise ValueError(f"unknown role name {raw_role!r}")
    kind = found[0].strip()
    for word, short in _ARGM_TYPES:  # order matters: "direction" wins over "goal" etc.
        if word in kind:
            return short
    raise ValueError(f"unknown ArgM type in role name {raw_role!r}")


class VSegId(NamedTuple):
    vid_uid: str  # "v_{youtube_id}"
    youtube_id: str
    start: int
    end: int


def parse_vseg_id(vseg: str) -> VSegId:
    """``v_{youtube_id}_seg_{start}_{end}`` -> VSegId. YouTube ids may contain ``_``/``-``, so the
    split is on the *last* ``_seg_``."""
    if not isinstance(vseg, str) or "_seg_" not in vseg:
        raise BadInputError(None, f"not a VidSitu segment id: {vseg!r} (expected v_<youtube_id>_seg_<start>_<end>)")
    vid_uid, _, bounds = vseg.rpartition("_seg_")
    parts = bounds.split("_")
    try:
        start, end = (int(p) for p in parts)
    except ValueError:
        raise BadInputError(None, f"not a VidSitu segment id: {vseg!r} (bad start/end {bounds!r})") from None
    youtube_id = vid_uid[2:] if vid_uid.startswith("v_") else vid_uid
    return VSegId(vid_uid, youtube_id, start, end)


# --------------------------------------------------------------------------- SRL target text


def roles_in_order(event: dict) -> list[tuple[str, str]]:
    """``[(short_role, phrase), ...]`` of one annotated event, sorted by ``int(Arg_List[raw])``
    (the annotation form's order; ties keep file order, as Python's stable sort in the reference).
    All roles are returned, not only the scored ones."""
    arg_list, args = event.get("Arg_List", {}), event.get("Args", {})
    ordered = sorted(arg_list, key=lambda raw: int(arg_list[raw]))
    return [(arg_mapper(raw), args[raw]) for raw in ordered]


def srl_role_text(event: dict) -> str:
    """The role part of the SRL target: ``" <Arg0> phrase <Arg1> phrase ..."`` (leading space,
    start tags only), exactly as VidSitu builds it before tokenisation."""
    return "".join(f" <{short}> {phrase}" for short, phrase in roles_in_order(event))


def srl_target(event: dict) -> str:
    """Full target text ``"verb_id <Arg0> phrase ..."``; the verb id is a single added token."""
    return f"{event['VerbID']}{srl_role_text(event)}"


def parse_srl_output(text: str) -> dict:
    """Decoded generator output -> one event of a submission's ``vb_output``.

    Mirrors VidSitu's ``conv_seq_to_srl``: split on single spaces; the first token must contain
    ``.`` (a verb id) or the event is ``{}``; every known start tag opens a role whose value is
    the text up to the next tag (a repeated tag overwrites; text before the first tag lands under
    the key ``""``, as in the reference)."""
    toks = text.split(" ")
    if "." not in toks[0]:
        return {}
    out: dict[str, str] = {"vb_id": toks[0]}
    tags = {f"<{r}>": r for r in PARSE_ROLES}
    name, words = "", []
    for ix, tok in enumerate(toks[1:], start=1):
        if tok in tags:
            if ix > 1:
                out[name] = " ".join(words)
            name, words = tags[tok], []
        else:
            words.append(tok)
    out[name] = " ".join(words)
    return out


# --------------------------------------------------------------------------- split loading


@dataclass
class VidSituSplit:
    """One split as released. ``vseg_ids[ann_idx]`` is the segment of a submission entry;
    ``records[vseg]`` are the annotation records in file order (empty where none are released);
    ``vinfo[vseg]`` the metadata dict (empty where no vinfo file is released)."""

    root: Path
    split: str
    vseg_ids: list[str]
    vinfo: dict[str, dict]
    records: dict[str, list[dict]]
    files: dict[str, Path | None] = field(default_factory=dict)  # split / vinfo / ann

    def __len__(self) -> int:
        return len(self.vseg_ids)

    @property
    def ann_idx(self) -> dict[str, int]:
        """vseg -> ann_idx (first occurrence)."""
        out: dict[str, int] = {}
        for i, v in enumerate(self.vseg_ids):
            out.setdefault(v, i)
        return out


def resolve_ann_root(root: str | Path) -> Path:
    """Accept the ``vidsitu_annotations`` folder itself, or a folder holding it (also the
    SynthMovies root, which holds ``vidsitu/vidsitu_annotations``)."""
    root = Path(root)
    for cand in (root, root / "vidsitu_annotations", root / "vidsitu" / "vidsitu_annotations"):
        if (cand / "split_files").is_dir():
            return cand
    raise BadInputError(
        root,
        "not a VidSitu annotation folder "
        "(no split_files/ here, in vidsitu_annotations/ or in vidsitu/vidsitu_annotations/)",
    )


def segment_splits(ann_root: str | Path) -> dict[str, str]:
    """Segment id -> split name, from every ``split_files/vseg_split_<split>_lb.json`` of a release."""
    root = resolve_ann_root(ann_root)
    out: dict[str, str] = {}
    for path in sorted((root / "split_files").glob("vseg_split_*_lb.json")):
        split = path.name[len("vseg_split_") : -len("_lb.json")]
        ids = _read_json(path)
        if not isinstance(ids, list):
            raise BadInputError(path, f"expected a JSON list of segment ids, got {type(ids).__name__}")
        for v in ids:
            out.setdefault(str(v), split)
    return out


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except FileNotFoundError:
        raise BadInputError(path, "file not found") from None
    # ValueError: a JSONDecodeError, or an integer past Python's digit limit (int_max_str_digits,
    # 4300), which json raises as a plain ValueError; recursion: nested too deep
    except (ValueError, RecursionError) as e:
        raise BadInputError(path, f"invalid JSON: {e}") from None


def _check_event(path: Path, where: str, ev: str, event: Any) -> None:
    if not isinstance(event, dict):
        raise BadInputError(path, f"{where} {ev}: expected an object, got {type(event).__name__}")
    if "VerbID" in event and not isinstance(event["VerbID"], str):
        raise BadInputError(path, f"{where} {ev}: VerbID must be a string")
    if "EvRel" in event and event["EvRel"] not in RELATIONS:
        raise BadInputError(path, f"{where} {ev}: unknown EvRel {event['EvRel']!r} (expected one of {list(RELATIONS)})")
    args, arg_list = event.get("Args"), event.get("Arg_List")
    if args is None and arg_list is None:
        return  # verb-only records (test noann files)
    if not isinstance(args, dict) or not isinstance(arg_list, dict):
        raise BadInputError(path, f"{where} {ev}: Args and Arg_List must both be objects")
    if set(args) != set(arg_list):
        raise BadInputError(
            path, f"{where} {ev}: Args and Arg_List name different roles ({sorted(args)} vs {sorted(arg_list)})"
        )
    for raw, phrase in args.items():
        try:
            arg_mapper(raw)
        except ValueError as e:
            raise BadInputError(path, f"{where} {ev}: {e}") from None
        if not isinstance(phrase, str):
            raise BadInputError(path, f"{where} {ev}: phrase of {raw!r} must be a string, got {type(phrase).__name__}")
        pos = arg_list[raw]
        try:
            int(pos)
        except (TypeError, ValueError, OverflowError):  # overflow: JSON's Infinity
            raise BadInputError(
                path, f"{where} {ev}: Arg_List position of {raw!r} is not an integer: {pos!r}"
            ) from None


def _ann_file(root: Path, split: str) -> Path | None:
    for name in (f"vsann_{split}_lb.json", f"vsann_{split}_noann_lb.json"):
        p = root / "vseg_ann_files" / name
        if p.is_file():
            return p
    return None


def load_split(ann_root: str | Path, split: str = "valid", split_file: str | Path | None = None) -> VidSituSplit:
    """Read one split of the released annotations.

    ``split`` names the files (``train``, ``valid``, ``testsrl``, ...). ``split_file`` replaces the
    segment list, e.g. val without the LVU-overlap videos; ann_idx then refers to that list.
    Missing vinfo/annotation files give empty dicts (the test splits release none); a missing
    split file is an error."""
    root = resolve_ann_root(ann_root)
    split_path = Path(split_file) if split_file is not None else root / "split_files" / f"vseg_split_{split}_lb.json"
    vseg_ids = _read_json(split_path)
    if not isinstance(vseg_ids, list):
        raise BadInputError(split_path, f"expected a JSON list of segment ids, got {type(vseg_ids).__name__}")
    for i, v in enumerate(vseg_ids):
        if not isinstance(v, str):
            raise BadInputError(split_path, f"entry {i}: segment id must be a string, got {v!r}")

    vinfo_path = root / "vinfo_files" / f"vinfo_{split}_lb.json"
    vinfo: dict[str, dict] = {}
    if vinfo_path.is_file():
        data = _read_json(vinfo_path)
        if not isinstance(data, list):
            raise BadInputError(vinfo_path, f"expected a JSON list, got {type(data).__name__}")
        for i, info in enumerate(data):
            vseg = info.get("vid_seg_int") if isinstance(info, dict) else None
            if not isinstance(vseg, str):
                raise BadInputError(vinfo_path, f"entry {i}: expected an object with a string 'vid_seg_int'")
            if vseg in vinfo:
                raise BadInputError(vinfo_path, f"entry {i}: duplicate segment {vseg}")
            vbid = info.get("vbid_lst")
            if vbid is not None:
                if not isinstance(vbid, dict) or any(not isinstance(vbid.get(ev), list) for ev in EVENTS):
                    raise BadInputError(
                        vinfo_path, f"entry {i} ({vseg}): vbid_lst must map Ev1..Ev5 to lists of verb ids"
                    )
                for ev in EVENTS:
                    if any(not isinstance(x, str) for x in vbid[ev]):
                        raise BadInputError(vinfo_path, f"entry {i} ({vseg}): vbid_lst[{ev}] must hold verb-id strings")
            vinfo[vseg] = info

    ann_path = _ann_file(root, split)
    records: dict[str, list[dict]] = {}
    if ann_path is not None:
        data = _read_json(ann_path)
        if not isinstance(data, list):
            raise BadInputError(ann_path, f"expected a JSON list of records, got {type(data).__name__}")
        for i, rec in enumerate(data):
            if not isinstance(rec, dict) or any(ev not in rec for ev in EVENTS):
                raise BadInputError(ann_path, f"record {i}: expected an object with keys Ev1..Ev5")
            vseg = rec["Ev1"].get("vid_seg_int") if isinstance(rec["Ev1"], dict) else None
            if not isinstance(vseg, str):
                raise BadInputError(ann_path, f"record {i}: Ev1 has no string 'vid_seg_int'")
            where = f"record {i} ({vseg})"
            for ev in EVENTS:
                _check_event(ann_path, where, ev, rec[ev])
            records.setdefault(vseg, []).append(rec)

    return VidSituSplit(
        root=root,
        split=split,
        vseg_ids=vseg_ids,
        vinfo=vinfo,
        records=records,
        files={"split": split_path, "vinfo": vinfo_path if vinfo else None, "ann": ann_path},
    )
