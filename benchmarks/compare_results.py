"""Two demo results.json files, value by value: which (table, setting, metric) rows differ.

    python -m benchmarks.compare_results runs/demo_a/results.json runs/demo_b/results.json [--digits 2]

Compares each row's ``mean ± se`` at ``--digits`` decimals (the precision the tables print) and the
backbone probes; prints the differing rows and the counts, rows and probes that only one file has
among them. Used for "the same tables, digit for digit" checks (e.g. a refactor, a thread count).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def compare(a: dict, b: dict, digits: int = 2) -> dict:
    ia = {(r["table"], r["setting"], r["metric"]): r for r in a["rows"]}
    ib = {(r["table"], r["setting"], r["metric"]): r for r in b["rows"]}
    out = {"same": [], "different": [], "only_a": sorted(set(ia) - set(ib)), "only_b": sorted(set(ib) - set(ia))}

    def fmt(v) -> str:  # null: a value no run gave finite (the demo writes NaN so), as its tables say
        return "n/a" if v is None else f"{v:.{digits}f}"

    for k in sorted(set(ia) & set(ib)):
        fa, fb = (f"{fmt(r['mean'])} ± {fmt(r['se'])}" for r in (ia[k], ib[k]))
        (out["same"] if fa == fb else out["different"]).append((k, fa, fb))
    pa, pb = a.get("backbone_probe") or {}, b.get("backbone_probe") or {}
    keys = ("linear_top1", "knn_top1")
    out["probes_same"] = {m: all(pa[m].get(k) == pb.get(m, {}).get(k) for k in keys) for m in pa if m in pb}
    out["probes_only_a"], out["probes_only_b"] = sorted(set(pa) - set(pb)), sorted(set(pb) - set(pa))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--digits", type=int, default=2)
    args = ap.parse_args(argv)

    def load(path: str) -> dict:  # a wrong path or file is one line naming it, not a traceback
        try:
            obj = json.loads(Path(path).read_text())
            compare(obj, obj)  # reads every field a comparison reads
            return obj
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
            ap.error(f"{path}: not a readable demo results.json ({type(e).__name__}: {e})")

    res = compare(load(args.a), load(args.b), args.digits)
    for k, fa, fb in res["different"]:
        print("differs:", *k, fa, "->", fb)
    for side in ("only_a", "only_b"):
        for k in res[side]:
            print(f"{side}:", *k)
    # a row or probe that one run lacks (e.g. a failed job) is no match: the counts say so, else
    # "different: 0" would read as the same tables
    print(
        f"same: {len(res['same'])}, different: {len(res['different'])}, only in a: {len(res['only_a'])}, "
        f"only in b: {len(res['only_b'])}, probes same: {res['probes_same']}"
        + "".join(f", probes only in {s[-1]}: {res['probes_' + s]}" for s in ("only_a", "only_b") if res["probes_" + s])
    )
    return 0


if __name__ == "__main__":
    from benchmarks import run_main

    run_main(main, "benchmarks.compare_results")
