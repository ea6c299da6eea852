"""Does a claim hold across backbone pretraining runs, not only on one? (issue 13, Tables 1 and 3)

    python -m benchmarks.across_backbones P [P ...] [--breakdown B.json ...] [--json FILE]

``benchmarks.txe_width`` tests the claims a TxE takes part in on *one* backbone's event features: its
standard errors are over MaskPred pretraining runs and fine-tuning seeds, with the backbone fixed. On
SynthMovies the sign of a MaskPred difference has changed from one backbone run to the next (CVRL of
seed 0 vs seed 1 of one recipe, docs/results.md), so a verdict on one backbone is partly a verdict on
that run. This reads several such runs -- each ``P`` a ``txe_width`` folder (its ``txe_width.json``)
made with one backbone replicate's features, everything else equal -- and treats the backbone run as
the unit:

- per claim, each backbone's difference ``a - b`` with its own SE and z (within the backbone);
- across backbones, the mean of those differences and its SE (sample SD over backbones / sqrt(k)),
  which carries both the backbone's spread and each run's own noise, and its z; "holds" as the demo's
  claims: beyond 2 SE in the claim's direction (a > b);
- how many backbones' own z is beyond +2 and below -2.

``--breakdown`` adds ``benchmarks.srl_breakdown --json`` records (one per backbone, same order): the
rows' paired differences from the record's first row in the scene role's share of SRL CIDEr and
in every other role's, across backbones the same way.

Prints Markdown; ``--json`` writes the numbers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from moviessl.claims import Z_HOLDS  # the demo's verdict: beyond 2 combined SE
from moviessl.errors import BadInputError
from moviessl.utils.io import atomic_write_json

BREAKDOWN_KEYS = ("from AScn", "from all but AScn")  # the overall CIDEr is a claim already


def _read(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInputError(path, f"no such file (expected {what})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadInputError(path, f"not a JSON file ({what}): {e}") from None


def across(diffs: list[float]) -> dict:
    """Mean ± SE over backbones of per-backbone differences, its z and verdict (None with one backbone:
    no spread over backbones to measure)."""
    from moviessl.eval.stats import mean_se

    m, se = mean_se(diffs)
    k = len(diffs)
    z = m / se if k > 1 and se > 0 else None
    return {"k": k, "mean": m, "se": se if k > 1 else None, "z": z, "holds": None if z is None else z > Z_HOLDS}


def summarise(per: list[dict]) -> dict:
    """:func:`across` of the backbones' differences, with them and how many are beyond +-2 of their SE."""
    res = across([p["diff"] for p in per])
    res["backbones"] = per
    res["beyond +2"] = sum(p["z"] is not None and p["z"] > Z_HOLDS for p in per)
    res["beyond -2"] = sum(p["z"] is not None and p["z"] < -Z_HOLDS for p in per)
    return res


def claim_key(c: dict) -> str:
    return f"{c['task']} {c['metric']}: {c['a']} - {c['b']}"


def claims_across(records: list[dict], sources: list[str]) -> dict[str, dict]:
    """Every claim of the first record, each backbone's difference and the mean over backbones; a claim
    missing from a record (another ``--widths`` or ``--txe-lr``) is refused, naming the record."""
    for src, rec in zip(sources, records):
        if not isinstance(rec, dict) or not isinstance(rec.get("claims"), list):
            raise BadInputError(src, "has no list of claims (not a benchmarks.txe_width record)")
    out = {}
    keyed = [{claim_key(c): c for c in rec["claims"]} for rec in records]
    for key in keyed[0]:
        per = []
        for src, claims in zip(sources, keyed):
            if key not in claims:
                raise BadInputError(src, f"has no claim {key!r} (every folder must be run with the same rows)")
            c = claims[key]
            per.append({"diff": c["diff"], "se": c["se"], "z": c["z"]})
        out[key] = summarise(per)
    return out


def breakdown_across(records: list[dict], sources: list[str]) -> dict[str, dict]:
    """The srl_breakdown differences (each row after a record's first, the keys in BREAKDOWN_KEYS)."""
    for src, rec in zip(sources, records):
        if not isinstance(rec, dict) or not rec or not all(isinstance(v, dict) for v in rec.values()):
            raise BadInputError(src, "is not a table of rows (not a benchmarks.srl_breakdown --json record)")
    out = {}
    rows = list(records[0])
    for row in rows[1:]:
        for k in BREAKDOWN_KEYS:
            per = []
            for src, rec in zip(sources, records):
                cell = rec.get(row, {}).get(k)
                if not isinstance(cell, dict) or "diff" not in cell or "diff_se" not in cell:
                    raise BadInputError(src, f"has no difference {k!r} for row {row!r} (compare the same rows)")
                z = cell["diff"] / cell["diff_se"] if cell["diff_se"] > 0 else None
                per.append({"diff": cell["diff"], "se": cell["diff_se"], "z": z})
            out[f"srl cider {k}: {Path(row).name} - {Path(rows[0]).name}"] = summarise(per)
    return out


def markdown(res: dict[str, dict]) -> str:
    k = max(r["k"] for r in res.values())
    head = " | ".join(f"backbone {i + 1}" for i in range(k))
    lines = [
        f"| comparison | {head} | mean over backbones | SE | z | holds | z > 2 / z < -2 |",
        "|---" * (k + 6) + "|",
    ]
    for key, r in res.items():
        cells = [f"{p['diff']:+.2f} ± {p['se']:.2f}" for p in r["backbones"]]
        se = "-" if r["se"] is None else f"{r['se']:.2f}"
        z = "-" if r["z"] is None else f"{r['z']:+.2f}"
        holds = "n/a" if r["holds"] is None else ("**yes**" if r["holds"] else "no")
        lines.append(
            f"| {key} | " + " | ".join(cells) + f" | {r['mean']:+.2f} | {se} | {z} | {holds} | "
            f"{r['beyond +2']} / {r['beyond -2']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", help="benchmarks.txe_width folders, one per backbone replicate")
    ap.add_argument("--breakdown", nargs="*", default=[], help="srl_breakdown --json records, one per folder")
    ap.add_argument("--json", help="write the numbers here")
    a = ap.parse_args(argv)
    if a.breakdown and len(a.breakdown) != len(a.folders):
        ap.error(f"--breakdown: give one record per folder ({len(a.folders)}), got {len(a.breakdown)}")
    files = [str(Path(f) / "txe_width.json") for f in a.folders]
    res = claims_across([_read(Path(f), "benchmarks.txe_width's record") for f in files], files)
    if a.breakdown:
        recs = [_read(Path(b), "benchmarks.srl_breakdown --json's record") for b in a.breakdown]
        res.update(breakdown_across(recs, a.breakdown))
    print(f"Differences a - b per backbone replicate (± SE within it) and over {len(files)} backbones:\n")
    print(markdown(res))
    if a.json:
        atomic_write_json(Path(a.json), res)
    return res


if __name__ == "__main__":
    from benchmarks import run_main

    run_main(main, "benchmarks.across_backbones")
