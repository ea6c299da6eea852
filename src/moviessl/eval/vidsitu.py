"""VidSitu metrics with the official evaluator's semantics (TheShadow29/VidSitu ``evl_fns.py``).

Every selection, ordering and averaging rule below is the reference's, so the numbers equal what
VidSitu reports on the same files (``vidsitu_code/evl_fns.py`` of ``TheShadow29/VidSitu``); only the output is scaled to
percent, as in the paper's tables. CIDEr-D and ROUGE-L are pycocoevalcap's own scorers, called the
way VidSitu calls them (``{item_id: [str]}`` dicts, no tokenisation); METEOR (Java) is not run
since it is never reported; LEA is :mod:`moviessl.eval.lea`.

    evaluate("verb", preds, split)      -> {"acc@1", "acc@5", "recall@5"}
    evaluate("srl", preds, split)       -> {"cider", "cider_verb", "cider_arg", "rouge_l", "lea"}
    evaluate("relation", preds, split)  -> {"mean_acc", "top1_acc"}

``details=True`` adds the reference's secondary outputs (Acc@2..4, per-segment accuracy, recall at
every threshold, per-role CIDEr/ROUGE, per-class relation accuracy, item counts).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ..data.vidsitu import EVENTS, PAIR_EVENTS, SCORED_ROLES, VidSituSplit, arg_mapper, load_split, scorable
from ..errors import BadInputError
from .lea import LEAScore
from .submission import TASK_ALIASES, check_relation, check_srl, check_verb, index_submission, load_submission

METRIC_KEYS = {
    "verb": ("acc@1", "acc@5", "recall@5"),
    "srl": ("cider", "cider_verb", "cider_arg", "rouge_l", "lea"),
    "relation": ("mean_acc", "top1_acc"),
}
SRL_SEED = 5  # np.random.seed(5) before the per-segment reference permutations
SRL_DROP_IX = 3  # the shuffled record at this index is dropped ...
SRL_NUM_GT = 3  # ... and the first 3 remaining are the references
# (with 3 kept, dropping index 3 changes nothing: the official evaluator's steps, mirrored as written
# so that a change to either constant upstream maps onto one here)

log = logging.getLogger(__name__)
_REC5_WARNED: set[tuple[str, int]] = set()


def _avg(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else 0.0


def _pct(d: dict[str, float]) -> dict[str, float]:
    return {k: 100.0 * float(v) for k, v in d.items()}


def evaluate(task: str, preds: list, split: VidSituSplit, details: bool = False, source: str | None = None) -> dict:
    """Score a loaded submission (list of dicts) against ``split``; values in percent.
    ``task`` is ``verb|srl|relation`` (VidSitu's ``vb|vb_arg|evrel`` also accepted)."""
    if task not in TASK_ALIASES:
        raise BadInputError(None, f"unknown task {task!r}; expected one of verb, srl, relation")
    task = TASK_ALIASES[task]
    src = source or "submission"
    if not scorable(split):  # its missing vinfo / 1-record noann file would be named as the problem
        raise BadInputError(
            split.files.get("split"),
            f"VidSitu released no ground truth for its test split '{split.split}' (it was scored on AI2's "
            "leaderboard): a submission for it can be written (moviessl finetune vidsitu "
            f"data.eval_split={split.split}), not scored here",
        )
    if len(split.vseg_ids) == 0:
        raise BadInputError(split.files.get("split"), "the split has no segments")
    by_idx = index_submission(preds, task, len(split.vseg_ids), source=src)
    fn = {"verb": verb_metrics, "srl": srl_metrics, "relation": relation_metrics}[task]
    out = fn(by_idx, split, src)
    main = {k: out[k] for k in METRIC_KEYS[task]}
    if details:
        main.update({k: v for k, v in out.items() if k not in main})
    return main


def evaluate_files(
    task: str,
    pred_path: str | Path,
    ann_root: str | Path,
    split: str = "valid",
    split_file: str | Path | None = None,
    details: bool = False,
) -> dict:
    """Load a submission (``.pkl`` or ``.json``) and the released annotations, then :func:`evaluate`."""
    preds = load_submission(pred_path)
    sp = load_split(ann_root, split, split_file=split_file)
    return evaluate(task, preds, sp, details=details, source=str(pred_path))


# --------------------------------------------------------------------------- verb


def verb_truth(split: VidSituSplit, ann_idx: int) -> dict:
    """The vinfo entry holding segment ``ann_idx``'s verb ground truth (``vbid_lst``), checked."""
    vseg = split.vseg_ids[ann_idx]
    if not split.vinfo:
        path = split.root / "vinfo_files" / f"vinfo_{split.split}_lb.json"
        if path.is_file():  # read, but a JSON list of no entries: "not found" sent users looking for the file
            raise BadInputError(path, "holds no entries: verb ground truth (vbid_lst) is read from it")
        what = "is a folder, not the file" if path.is_dir() else "not found"
        raise BadInputError(path, f"{what}: verb ground truth (vbid_lst) is read from it (released for valid only)")
    vinfo_file = split.files.get("vinfo") or split.root / "vinfo_files"
    info = split.vinfo.get(vseg)
    if info is None or info.get("vbid_lst") is None:  # a null vbid_lst is a missing one, as the reader takes it
        raise BadInputError(
            vinfo_file,
            f"segment {vseg} (ann_idx {ann_idx}) has no vbid_lst (verb ground truth is released for valid only)",
        )
    if len(info["vbid_lst"]["Ev1"]) < 9:  # the reference loader asserts this
        raise BadInputError(
            vinfo_file,
            f"segment {vseg}: vbid_lst has {len(info['vbid_lst']['Ev1'])} verbs per event, at least 9 expected",
        )
    return info


def verb_metrics(by_idx: dict[int, Any], split: VidSituSplit, src: str) -> dict[str, float]:
    """Acc@K (``Per_Ev_Top_K``), per-segment accuracy and Rec@5 (``recall_macro_1_th_9``)."""
    corr = {k: [] for k in range(1, 6)}
    corr_vid = {k: [] for k in range(1, 6)}
    hits_by_verb: dict[str, list[int]] = {}
    for ann_idx in sorted(by_idx):
        vseg = split.vseg_ids[ann_idx]
        where = f"entry with ann_idx {ann_idx} ({vseg})"
        hyp_all = check_verb(by_idx[ann_idx], where, src)
        info = verb_truth(split, ann_idx)
        ev_corr = {k: [] for k in range(1, 6)}
        for k_ev, ev in enumerate(EVENTS):
            gt = info["vbid_lst"][ev][:10]
            hyp = hyp_all[k_ev][:5]
            for k in range(1, 6):
                c = int(len(set(hyp[:k]).intersection(gt)) > 0)
                corr[k].append(c)
                ev_corr[k].append(c)
            # Rec@5: every verb named by >= 2 of the 10 annotators is a positive of that verb.
            for verb, count in Counter(gt).most_common():
                if count >= 2:
                    hits_by_verb.setdefault(verb, []).append(int(verb in set(hyp)))
        for k in range(1, 6):
            corr_vid[k].append(int(all(c == 1 for c in ev_corr[k])))
    out = {f"acc@{k}": _avg(corr[k]) for k in range(1, 6)}
    out.update({f"seg_acc@{k}": _avg(corr_vid[k]) for k in range(1, 6)})
    # sorted by recall, descending and stable, as the reference (sets the summation order only)
    per_verb = sorted(((_avg(v), len(v)) for v in hits_by_verb.values()), key=lambda x: x[0], reverse=True)
    for t in range(10):
        sel = [r for r, n in per_verb if n > t]
        out[f"recall_th_{t}"] = _avg(sel)
    out["recall@5"] = out["recall_th_9"]
    undefined_key = (str(split.files.get("vinfo")), len(split.vseg_ids))
    if not any(n > 9 for _, n in per_verb) and undefined_key not in _REC5_WARNED:
        # the reference's get_avg gives 0 for an empty list, as _avg here; only tiny splits have no
        # such verb. Said once per split: a training run scores the same split every seed.
        _REC5_WARNED.add(undefined_key)
        log.warning(
            "%s: Rec@5 is undefined on this split (no verb has 10 positive events); reported as 0.0, "
            "the value VidSitu's evaluator gives too",
            split.files.get("vinfo") or src,
        )
    res = _pct(out)
    res.update({f"num_verbs_th_{t}": float(sum(1 for _, n in per_verb if n > t)) for t in range(10)})
    res["num_events"] = float(len(corr[1]))
    return res


# --------------------------------------------------------------------------- semantic roles


def _eval_records(split: VidSituSplit, ann_idx: int) -> list[dict]:
    """The annotation records of segment ``ann_idx``, at least the 3 that SRL and relations are
    scored against (the reference's valid loader asserts >= 3; with fewer it would score every
    segment against fewer annotators without a word)."""
    vseg = split.vseg_ids[ann_idx]
    recs = split.records.get(vseg) or []
    if len(recs) < SRL_NUM_GT:
        raise BadInputError(
            split.files.get("ann") or split.root / "vseg_ann_files",
            f"segment {vseg} (ann_idx {ann_idx}) has {len(recs)} annotation records; "
            f"VidSitu's evaluation needs at least {SRL_NUM_GT}",
        )
    return recs


def srl_references(split: VidSituSplit) -> dict[int, list[dict]]:
    """ann_idx -> the 3 reference records, selected exactly as the official evaluator:
    one ``np.random.seed(5)``, then a permutation per segment in split order, drop shuffled
    index 3, keep the first 3. Uses a private RandomState, so the global numpy RNG is untouched.

    Every event of every selected record must carry ``Args``: the coreference score (LEA) reads
    each reference annotator's roles of all five events, and a verb-only event there would
    otherwise end the evaluation in a ``KeyError`` (the official evaluator's as well)."""
    ann_file = split.files.get("ann") or split.root / "vseg_ann_files"
    rng = np.random.RandomState(SRL_SEED)  # same stream as np.random.seed(5) + np.random.permutation
    out = {}
    for ix in range(len(split.vseg_ids)):
        recs = _eval_records(split, ix)
        shuffled = [recs[r] for r in rng.permutation(len(recs))]
        out[ix] = [r for j, r in enumerate(shuffled) if j != SRL_DROP_IX][:SRL_NUM_GT]
        for rec in out[ix]:
            for ev in EVENTS:
                if "Args" not in rec[ev]:
                    k = next(i for i, r in enumerate(recs) if r is rec)
                    raise BadInputError(
                        ann_file,
                        f"segment {split.vseg_ids[ix]} (ann_idx {ix}): annotation record {k + 1} of {len(recs)} "
                        f"(file order) has no Args on {ev}, but it is one of the 3 records the SRL evaluation scores "
                        "against (every event of those needs its roles)",
                    )
    return out


def _cider(gts: dict, res: dict) -> float:
    from pycocoevalcap.cider.cider import Cider

    # pycocoevalcap crashes (max() of no document frequencies) when no reference has a word;
    # every n-gram vector is then empty and every similarity 0, so the score is 0.
    if not any(ref.split() for refs in gts.values() for ref in refs):
        return 0.0
    return float(Cider().compute_score(gts, res)[0])


def _rouge(gts: dict, res: dict) -> float:
    from pycocoevalcap.rouge.rouge import Rouge

    return float(Rouge().compute_score(gts, res)[0])


def srl_items(by_idx: dict[int, Any], split: VidSituSplit, refs: dict[int, list[dict]], src: str):
    """The scored items: one per (segment, event, role of the first reference annotation) with a
    short name in SCORED_ROLES. Returns ``(hyps, gts, verb_of, role_of)`` keyed by item id."""
    ann_file = split.files.get("ann") or split.root / "vseg_ann_files"
    hyps, gts, verb_of, role_of = {}, {}, {}, {}
    aix = 0
    for ann_idx in sorted(by_idx):
        vseg = split.vseg_ids[ann_idx]
        hyp = by_idx[ann_idx]
        gto = refs[ann_idx]
        for ev in EVENTS:
            first = gto[0][ev]
            if "Args" not in first or "VerbID" not in first:
                raise BadInputError(
                    ann_file, f"segment {vseg} {ev}: annotation has no Args/VerbID (not an SRL-annotated split)"
                )
            for raw in first["Args"]:
                short = arg_mapper(raw)
                if short not in SCORED_ROLES:
                    continue
                try:
                    gts[aix] = [g[ev]["Args"][raw] for g in gto]
                except KeyError:
                    raise BadInputError(
                        ann_file, f"segment {vseg} {ev}: role {raw!r} is missing from another annotator's record"
                    ) from None
                hyps[aix] = [hyp[ev][short]] if ev in hyp and short in hyp[ev] else [""]
                verb_of[aix] = first["VerbID"]
                role_of[aix] = short
                aix += 1
    return hyps, gts, verb_of, role_of


def _grouped(hyps: dict, gts: dict, group_of: dict) -> dict[str, dict[str, float]]:
    """Separate CIDEr/ROUGE calls per group (so CIDEr's N and document frequencies are the
    group's own), in first-seen group order as the reference."""
    groups: dict[str, list[int]] = {}
    for ix, g in group_of.items():
        groups.setdefault(g, []).append(ix)
    out = {}
    for g, ixs in groups.items():
        gh, gg = {k: hyps[k] for k in ixs}, {k: gts[k] for k in ixs}
        out[g] = {"cider": _cider(gg, gh), "rouge": _rouge(gg, gh)}
    return out


def _key_clusters(record: dict) -> list[list[str]]:
    """One annotator's coreference clusters: mentions ``EvK_role`` grouped by identical phrase."""
    by_phrase: dict[str, list[str]] = {}
    for ev in EVENTS:
        for raw, phrase in record[ev]["Args"].items():
            short = arg_mapper(raw)
            if short in SCORED_ROLES:
                by_phrase.setdefault(phrase, []).append(f"{ev}_{short}")
    return list(by_phrase.values())


def _sys_clusters(pred: dict, record: dict) -> list[list[str]]:
    """Predicted clusters over the mentions of this annotator's roles: identical predicted
    strings (two "" included) corefer; roles the prediction lacks are missing mentions."""
    by_phrase: dict[str, list[str]] = {}
    for ev in EVENTS:
        for raw in record[ev]["Args"]:
            short = arg_mapper(raw)
            if short in SCORED_ROLES and short in pred[ev]:
                by_phrase.setdefault(pred[ev][short], []).append(f"{ev}_{short}")
    return list(by_phrase.values())


def srl_lea(by_idx: dict[int, Any], refs: dict[int, list[dict]], split: VidSituSplit) -> tuple[float, list[LEAScore]]:
    """LEA per reference annotator, micro-summed over segments; returns (mean F1, [scores]) -- each
    score's precision and recall say whether a prediction links too many mentions or too few."""
    keys = sorted(by_idx)
    n_ann = len(refs[keys[0]])
    scores = []
    for j in range(n_ann):
        score = LEAScore()
        for ann_idx in keys:
            pred = by_idx[ann_idx]
            if "Ev1" not in pred:  # the reference skips such predictions for coreference
                continue
            gt = refs[ann_idx][j]
            score.update(_key_clusters(gt), _sys_clusters(pred, gt))
        scores.append(score)
    return _avg(s.f1 for s in scores), scores


def _raw_role_keys(by_idx: dict[int, Any]) -> list[str]:
    """Role keys of a submission that are raw annotation names of a scored role (``'Arg0 (walker)'``)."""
    raw = []
    for payload in by_idx.values():
        for roles in payload.values():
            for r in roles:
                if isinstance(r, str) and r not in SCORED_ROLES:
                    try:
                        if arg_mapper(r) in SCORED_ROLES:
                            raw.append(r)
                    except ValueError:
                        pass
    return raw


def srl_metrics(by_idx: dict[int, Any], split: VidSituSplit, src: str) -> dict[str, float]:
    """CIDEr, CIDEr-verb, CIDEr-arg, ROUGE-L and LEA as VidSitu's ``EvalFnCap``."""
    for ann_idx in by_idx:
        check_srl(by_idx[ann_idx], f"entry with ann_idx {ann_idx} ({split.vseg_ids[ann_idx]})", src)
    raw = _raw_role_keys(by_idx)
    if raw:
        # The reference looks roles up by short name only, so these score as missing ("") -- scored
        # the same here, but said, since it is almost always a submission-writing mistake.
        log.warning(
            "%s: %d role keys are raw annotation names (first: %r); VidSitu reads short names (%s), "
            "so they are scored as missing",
            src,
            len(raw),
            raw[0],
            ", ".join(SCORED_ROLES),
        )
    refs = srl_references(split)
    hyps, gts, verb_of, role_of = srl_items(by_idx, split, refs, src)
    if not hyps:
        raise BadInputError(
            split.files.get("ann"), f"no scorable roles ({', '.join(SCORED_ROLES)}) in the split's annotations"
        )
    by_verb = _grouped(hyps, gts, verb_of)
    by_role = _grouped(hyps, gts, role_of)
    lea, lea_scores = srl_lea(by_idx, refs, split)
    out = {
        "cider": _cider(gts, hyps),
        "cider_verb": _avg(v["cider"] for v in by_verb.values()),
        "cider_arg": _avg(v["cider"] for v in by_role.values()),
        "rouge_l": _rouge(gts, hyps),
        "lea": lea,
        "rouge_verb": _avg(v["rouge"] for v in by_verb.values()),
        "rouge_arg": _avg(v["rouge"] for v in by_role.values()),
    }
    for role, v in by_role.items():
        out[f"{role}_cider"] = v["cider"]
        out[f"{role}_rouge"] = v["rouge"]
    for j, sc in enumerate(lea_scores):
        out[f"lea_annotator{j}"] = sc.f1
    out["lea_precision"] = _avg(sc.precision for sc in lea_scores)
    out["lea_recall"] = _avg(sc.recall for sc in lea_scores)
    res = _pct(out)
    res.update({"num_items": float(len(hyps)), "num_verb_groups": float(len(by_verb))})
    return res


# --------------------------------------------------------------------------- event relations


def relation_truth(split: VidSituSplit, ann_idx: int) -> list[list[str]]:
    """Per pair of ``PAIR_EVENTS``, the ``EvRel`` labels of segment ``ann_idx``'s first 3 records in
    file order (not shuffled, as the reference), checked."""
    ann_file = split.files.get("ann") or split.root / "vseg_ann_files"
    vseg = split.vseg_ids[ann_idx]
    recs = _eval_records(split, ann_idx)
    out = []
    for ev in PAIR_EVENTS:
        try:
            out.append([r[ev]["EvRel"] for r in recs[:3]])
        except KeyError:
            raise BadInputError(ann_file, f"segment {vseg} {ev}: a record has no EvRel") from None
    return out


def relation_metrics(by_idx: dict[int, Any], split: VidSituSplit, src: str) -> dict[str, float]:
    """Top-1 and mean per-class accuracy over majority-agreed pair labels (VidSitu's
    ``simple_acc_evrel``); classes with no scored comparison are skipped in the mean."""
    ann_file = split.files.get("ann") or split.root / "vseg_ann_files"
    scored: list[tuple[str, bool]] = []  # (GT label, correct) for every counted comparison
    # Class order = first appearance, masked pairs included, as the reference's dict (it only
    # decides the float summation order of the mean).
    per_class: dict[str, list[bool]] = {}
    for ann_idx in sorted(by_idx):
        vseg = split.vseg_ids[ann_idx]
        truth = relation_truth(split, ann_idx)
        hyp = check_relation(by_idx[ann_idx], f"entry with ann_idx {ann_idx} ({vseg})", src, len(truth[0]))
        for k, gt in enumerate(truth):
            ((top, count),) = Counter(gt).most_common(1)
            per_class.setdefault(top, [])
            if count < 2:  # no 2-of-3 majority: the pair is masked out
                continue
            scored += [(g, h == g) for h, g in zip(hyp[k], gt) if g == top]
    if not scored:
        raise BadInputError(
            ann_file, "no relation pair has a majority label (needs >= 2 agreeing annotations); nothing to score"
        )
    for g, c in scored:
        per_class[g].append(c)
    # The reference divides by zero on a class seen only as the top label of masked pairs; skip it.
    class_acc = {g: _avg(v) for g, v in per_class.items() if v}
    out = {"mean_acc": _avg(class_acc.values()), "top1_acc": _avg(c for _, c in scored)}
    out.update({f"acc_{g.replace(' ', '_')}": a for g, a in class_acc.items()})
    res = _pct(out)
    res["num_scored"] = float(len(scored))
    return res
