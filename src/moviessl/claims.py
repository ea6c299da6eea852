"""The paper's claims, tested on a results table: ``a`` beats ``b`` on ``metric`` beyond 2 combined
standard errors, in the paper's direction.

A claim is a row of :data:`CLAIMS`; :func:`evaluate_claims` turns the demo's result rows (table,
setting, metric, mean, se, n) into records ``{"id", "paper", "statement", "a", "b", "metric",
"diff", "se", "z", "holds"}`` with ``diff = mean_a - mean_b``, ``se = sqrt(se_a^2 + se_b^2)``,
``z = diff / se`` and ``holds = z > 2`` (strictly beyond: exactly 2 SE does not hold). A claim
whose rows are missing from the table, or a side without a finite mean and SE, is reported with
``holds = None``. An infinite ``z`` (both sides without spread) is kept in memory and in the
Markdown; ``results.json`` holds it as ``None`` with a ``why`` (:func:`claims_to_json`), as JSON
has no infinity. :func:`claims_markdown` is
the table ``results.md`` opens with, and :func:`readme_summary` the block the README shows
(generated, never typed by hand).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from .utils.io import atomic_write_text

Z_HOLDS = 2.0


@dataclass(frozen=True)
class Claim:
    id: str
    paper: str  # where the paper makes it
    statement: str
    table: str  # the demo table both rows are in
    a: str  # setting of the side the paper says is better
    b: str
    metric: str
    b_table: str | None = None  # when b sits in another table (e.g. a baseline row)


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "t4_cvrl_vs_random",
        "Table 4",
        "CVRL pretraining beats a random-init backbone on verbs",
        "verb",
        "backbone=cvrl,txe=none",
        "backbone=random,txe=none",
        "acc@1",
    ),
    Claim(
        "t4_modist_vs_cvrl",
        "Table 4",
        "MoDist beats CVRL on verbs",
        "verb",
        "backbone=modist,txe=none",
        "backbone=cvrl,txe=none",
        "acc@1",
    ),
    Claim(
        "t4_modist_vs_sup",
        "Table 4",
        "MoDist beats supervised pretraining on verbs",
        "verb",
        "backbone=modist,txe=none",
        "backbone=supervised,txe=none",
        "acc@1",
    ),
    Claim(
        "t1_maskpred_vs_scratch",
        "Table 1",
        "a MaskPred TxE beats a scratch TxE on SRL (CVRL backbone)",
        "srl",
        "backbone=cvrl,txe=maskpred",
        "backbone=cvrl,txe=scratch",
        "cider",
    ),
    Claim(
        "t1_cvrl_vs_sup",
        "Table 1",
        "a CVRL backbone beats a supervised one on SRL (scratch TxE)",
        "srl",
        "backbone=cvrl,txe=scratch",
        "backbone=supervised,txe=scratch",
        "cider",
    ),
    Claim(
        "t2_contrastive_vs_l2",
        "Table 2",
        "Eq. 1 (contrastive) beats the L2 loss for MaskPred",
        "mask_ablation",
        "backbone=cvrl,txe=maskpred,loss=contrastive,mask=1-3",
        "backbone=cvrl,txe=maskpred,loss=l2,mask=1-3",
        "cider",
    ),
    Claim(
        "t2_mask123_vs_1",
        "Table 2",
        "mask sizes {1,2,3} beat {1}",
        "mask_ablation",
        "backbone=cvrl,txe=maskpred,loss=contrastive,mask=1-3",
        "backbone=cvrl,txe=maskpred,loss=contrastive,mask=1",
        "cider",
    ),
    Claim(
        "t2_mask123_vs_1234",
        "Table 2",
        "mask sizes {1,2,3} beat {1,2,3,4}",
        "mask_ablation",
        "backbone=cvrl,txe=maskpred,loss=contrastive,mask=1-3",
        "backbone=cvrl,txe=maskpred,loss=contrastive,mask=1-4",
        "cider",
    ),
    Claim(
        "t3_maskpred_vs_backbone_cvrl",
        "Table 3",
        "a MaskPred TxE beats backbone features on relations (CVRL)",
        "relation",
        "backbone=cvrl,txe=maskpred",
        "backbone=cvrl,txe=none",
        "mean_acc",
    ),
    Claim(
        "t3_maskpred_vs_backbone_modist",
        "Table 3",
        "a MaskPred TxE beats backbone features on relations (MoDist)",
        "relation",
        "backbone=modist,txe=maskpred",
        "backbone=modist,txe=none",
        "mean_acc",
    ),
    Claim(
        "t3_maskpred_vs_scratch",
        "Table 3",
        "a MaskPred TxE beats a scratch TxE on relations (CVRL)",
        "relation",
        "backbone=cvrl,txe=maskpred",
        "backbone=cvrl,txe=scratch",
        "mean_acc",
    ),
    Claim(
        "t3_maskpred_vs_pair_prior",
        "Table 3",
        "a MaskPred TxE beats the pair prior on relations (CVRL)",
        "relation",
        "backbone=cvrl,txe=maskpred",
        "baseline=pair_prior",
        "mean_acc",
    ),
    Claim(
        "t3_modist_vs_cvrl",
        "Table 3",
        "MoDist beats CVRL on relations (MaskPred TxE)",
        "relation",
        "backbone=modist,txe=maskpred",
        "backbone=cvrl,txe=maskpred",
        "mean_acc",
    ),
)


def _index(rows: Iterable[Mapping]) -> dict[tuple[str, str, str], Mapping]:
    return {(r["table"], r["setting"], r["metric"]): r for r in rows}


def evaluate_claims(rows: Iterable[Mapping], claims: Iterable[Claim] = CLAIMS) -> list[dict]:
    idx = _index(rows)
    out = []
    for c in claims:
        ra, rb = idx.get((c.table, c.a, c.metric)), idx.get((c.b_table or c.table, c.b, c.metric))
        rec = {"id": c.id, "paper": c.paper, "statement": c.statement, "a": c.a, "b": c.b, "metric": c.metric}
        if ra is None or rb is None:
            out.append({**rec, "diff": None, "se": None, "z": None, "holds": None})
            continue
        # (a row read back from results.json holds a non-finite mean as null: utils.io.json_ready)
        finite = {k: all(r[k] is not None and math.isfinite(float(r[k])) for r in (ra, rb)) for k in ("mean", "se")}
        if not (finite["mean"] and finite["se"]):
            # a side no run gave a finite value of (summarize's n 0, mean NaN): NaN > 2 read as "does not hold";
            # finite means beside a non-finite SE come from an edited or foreign summary, not from no run
            why = "no finite run" if not finite["mean"] else "no finite standard error"
            out.append({**rec, "diff": None, "se": None, "z": None, "holds": None, "why": why})
            continue
        diff = float(ra["mean"]) - float(rb["mean"])
        if any(int(r["n"]) < 2 and r.get("n_pretrain", 1) != 0 for r in (ra, rb)):
            # one trained run has no standard error (0 is not "no spread"): z would be infinite
            out.append({**rec, "diff": round(diff, 3), "se": None, "z": None, "holds": None, "why": "one run"})
            continue
        se = math.sqrt(float(ra["se"]) ** 2 + float(rb["se"]) ** 2)
        z = diff / se if se > 0 else (math.inf if diff > 0 else -math.inf if diff < 0 else 0.0)
        out.append(
            {
                **rec,
                "diff": round(diff, 3),
                "se": round(se, 3),
                "z": round(z, 2) if math.isfinite(z) else z,
                "holds": bool(z > Z_HOLDS),
                "n_a": int(ra["n"]),
                "n_b": int(rb["n"]),
            }
        )
    return out


ZERO_SE = "SE 0: z infinite"


def claims_to_json(claims: Iterable[Mapping]) -> list[dict]:
    """The claims as ``results.json`` holds them: an infinite z (both sides without spread, a
    difference beyond 0) is ``None`` with ``why`` saying so, as JSON has no infinity (``Infinity``
    is Python's extension: jq and JavaScript's JSON.parse refuse the whole file). Its sign is the
    verdict's (+inf holds, -inf does not), so :func:`claims_from_json` gives it back."""
    out = []
    for c in claims:
        z = c.get("z")
        inf = isinstance(z, float) and math.isinf(z)
        out.append({**c, "z": None, "why": ZERO_SE} if inf else dict(c))
    return out


def claims_from_json(claims: Iterable[Mapping]) -> list[dict]:
    """:func:`claims_to_json`'s records as :func:`evaluate_claims` made them (z = +-inf again)."""
    return [
        {**c, "z": math.inf if c["holds"] else -math.inf}
        if c.get("why") == ZERO_SE and c.get("z") is None and c.get("holds") is not None
        else dict(c)
        for c in claims
    ]


def _verdict(c: Mapping) -> str:
    return "n/a" if c["holds"] is None else ("**holds**" if c["holds"] else "does not hold")


def claims_markdown(claims: list[dict]) -> str:
    lines = [
        "**The paper's claims on this run** (holds = the paper's direction, beyond 2 combined SE)",
        "",
        "| claim (paper) | a | b | metric | a - b | SE | z | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in claims:
        if c["holds"] is None:
            diff = "-" if c.get("diff") is None else f"{c['diff']:+.2f} (one run)"
            lines.append(
                f"| {c['statement']} ({c['paper']}) | `{c['a']}` | `{c['b']}` | {c['metric']} | {diff} | - | - | n/a |"
            )
            continue
        lines.append(
            f"| {c['statement']} ({c['paper']}) | `{c['a']}` | `{c['b']}` | {c['metric']} | "
            f"{c['diff']:+.2f} | {c['se']:.2f} | {c['z']:+.2f} | {_verdict(c)} |"
        )
    return "\n".join(lines)


_ROW = re.compile(
    r"^\| (?P<statement>.+) \((?P<paper>[^()]+)\) \| `(?P<a>[^`]+)` \| `(?P<b>[^`]+)` \| (?P<metric>[^|]+?) \| "
    r"(?P<diff>[^|]+?) \| (?P<se>[^|]+?) \| (?P<z>[^|]+?) \| (?P<verdict>[^|]+?) \|$"
)


def claims_from_markdown(text: str) -> list[dict]:
    """The claims table of a ``results.md`` (:func:`claims_markdown`'s output) read back, at its printed
    precision, so the tables committed under docs/ can be compared after their run folders are gone.
    Ids come from :data:`CLAIMS` (matched by statement and rows); a row naming no known claim is an error."""
    by = {(c.statement, c.a, c.b, c.metric): c for c in CLAIMS}
    out = []
    for line in text.splitlines():
        m = _ROW.match(line.strip())
        if not m:
            continue
        g = m.groupdict()
        claim = by.get((g["statement"], g["a"], g["b"], g["metric"]))
        if claim is None:
            raise ValueError(f"claims table row names no known claim: {g['statement']!r} ({g['a']} vs {g['b']})")
        # the three verdicts _verdict writes, read exactly: a substring test read "no longer holds" as holding
        verdicts = {_verdict({"holds": h}): h for h in (True, False, None)}
        if g["verdict"] not in verdicts:
            raise ValueError(f"claims table row has an unknown verdict {g['verdict']!r}: {g['statement']!r}")
        tested = verdicts[g["verdict"]] is not None
        num = (lambda k: float(g[k])) if tested else (lambda k: None)
        out.append(
            {
                "id": claim.id,
                "paper": claim.paper,
                "statement": claim.statement,
                "a": claim.a,
                "b": claim.b,
                "metric": claim.metric,
                "diff": num("diff"),
                "se": num("se"),
                "z": num("z"),
                "holds": verdicts[g["verdict"]],
            }
        )
    return out


BEGIN, END = "<!-- claims:begin (generated by `python -m moviessl.claims`) -->", "<!-- claims:end -->"


def readme_summary(claims: list[dict], source: str, compared: list[dict] | None = None) -> str:
    """The README's block; ``compared`` (:func:`compare_claims` of this run and others): a claim whose
    verdict differs on another run is marked fragile, with its verdict and z there."""
    held = [c for c in claims if c["holds"]]
    tested = [c for c in claims if c["holds"] is not None]
    flips = {r["id"]: r for r in (compared or []) if r["fragile"]}
    lines = [
        BEGIN,
        f"On SynthMovies ({source}), {len(held)} of {len(tested)} of the paper's claims hold "
        "(beyond 2 combined standard errors):",
        "",
    ]
    for c in claims:
        if c["holds"] is None:
            continue
        note = ""
        if c["id"] in flips:
            r = flips[c["id"]]
            other = [
                f"{'holds' if r['holds'][n] else 'does not hold'} on {n} (z = {r['z'][n]:+.2f})"
                for n in r["holds"]
                if r["holds"][n] is not None and r["holds"][n] != c["holds"]
            ]
            note = " — **fragile**: " + "; ".join(other)
        lines.append(
            f"- {'holds' if c['holds'] else 'does not hold'}: {c['statement']} ({c['paper']}; "
            f"{c['metric']} {c['diff']:+.2f} ± {c['se']:.2f}, z = {c['z']:+.2f}){note}"
        )
    lines.append(END)
    return "\n".join(lines)


def update_readme(readme: Path, claims: list[dict], source: str, compared: list[dict] | None = None) -> bool:
    """Replace the README's generated block; returns whether it changed. A README that cannot be
    read, or has no such block, is :class:`~moviessl.errors.BadInputError` (not a silent no-op)."""
    from .errors import BadInputError

    try:
        text = Path(readme).read_text(encoding="utf-8")  # as written: the locale's may be ASCII
    except (OSError, UnicodeDecodeError) as e:
        raise BadInputError(readme, f"unreadable README ({type(e).__name__}: {e})") from None
    if BEGIN not in text or END not in text.split(BEGIN, 1)[1]:
        raise BadInputError(readme, f"no generated claims block to replace (the lines {BEGIN} ... {END})")
    block = readme_summary(claims, source, compared)
    new = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    if new != text:
        atomic_write_text(readme, new)  # a kill mid-write must not cut the README short
    return new != text


def compare_claims(runs: Mapping[str, list[dict]]) -> list[dict]:
    """The same claims on several runs (e.g. two thread counts or machines): per claim its z and
    verdict on each run, ``fragile`` = the verdict differs between runs that tested it."""
    ids = list(dict.fromkeys(c["id"] for cl in runs.values() for c in cl))
    by = {name: {c["id"]: c for c in cl} for name, cl in runs.items()}
    out = []
    for i in ids:
        recs = {name: by[name].get(i) for name in runs}
        first = next(c for c in recs.values() if c is not None)
        verdicts = {name: c["holds"] for name, c in recs.items() if c is not None and c["holds"] is not None}
        out.append(
            {
                "id": i,
                "paper": first["paper"],
                "statement": first["statement"],
                "z": {name: (c["z"] if c else None) for name, c in recs.items()},
                "holds": {name: (c["holds"] if c else None) for name, c in recs.items()},
                "fragile": len(set(verdicts.values())) > 1,
            }
        )
    return out


def compare_markdown(rows: list[dict]) -> str:
    names = list(rows[0]["z"]) if rows else []
    lines = [
        "| claim (paper) | " + " | ".join(f"z ({n})" for n in names) + " | verdicts | |",
        "|---|" + "---|" * (len(names) + 2),
    ]
    for r in rows:
        zs = [("-" if r["z"][n] is None else f"{r['z'][n]:+.2f}") for n in names]
        vs = "/".join("n/a" if r["holds"][n] is None else ("holds" if r["holds"][n] else "no") for n in names)
        mark = "**fragile**" if r["fragile"] else ""
        lines.append(f"| {r['statement']} ({r['paper']}) | " + " | ".join(zs) + f" | {vs} | {mark} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m moviessl.claims RESULTS_JSON [--readme README.md] [--compare OTHER_RESULTS_JSON ...]``:
    print (or write) the summary (a ``results.md`` is read too: its claims table, at printed
    precision); with ``--compare``, the claims of every run side by side, a claim
    whose verdict differs between them marked fragile (with ``--readme``: the README's block marks
    those claims fragile, naming the other runs by ``--names``)."""
    from .utils.io import stdout_taking_any_text

    with stdout_taking_any_text():  # its tables' ± under an ASCII locale; a caller's stdout given back
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    import argparse
    import json

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("results")
    ap.add_argument("--readme", default=None)
    ap.add_argument("--source", default=None, help="how the README names the run (default: the file's name)")
    ap.add_argument("--compare", nargs="+", default=None, help="other results.json files (same claims)")
    ap.add_argument("--names", nargs="+", default=None, help="names of the compared runs (default: their paths)")
    args = ap.parse_args(argv)
    if args.names and not args.compare:  # they name compared runs: without any they were dropped silently
        ap.error("--names names the --compare runs: give --compare too")

    def load(path: str) -> list[dict]:  # a results.json's claims (evaluated from its rows if absent)
        try:
            if path.endswith(".md"):
                claims = claims_from_markdown(Path(path).read_text(encoding="utf-8"))
                if not claims:
                    raise ValueError("no claims table")
                return claims
            obj = json.loads(Path(path).read_text(encoding="utf-8"))
            return claims_from_json(obj.get("claims") or []) or evaluate_claims(obj["rows"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            ap.error(f"{path}: not a readable results.json / results.md ({type(e).__name__}: {e})")

    claims = load(args.results)
    compared = None
    if args.compare:
        names = list(args.names or [args.results, *args.compare])
        if len(names) == len(args.compare):  # only the others named: this run keeps its path
            names = [args.results, *names]
        if len(names) != len(args.compare) + 1:
            ap.error(f"--names: give {len(args.compare)} or {len(args.compare) + 1} names")
        if args.names and len(set(names)) != len(names):  # runs are keyed by name: one dropped a run silently
            ap.error(f"--names: each run needs its own name, got {', '.join(map(repr, names))}")
        runs = {names[0]: claims, **{name: load(other) for name, other in zip(names[1:], args.compare)}}
        compared = compare_claims(runs)
        if not args.readme:
            print(compare_markdown(compared))
            return 0
    if args.readme:
        from .errors import BadInputError

        try:
            update_readme(Path(args.readme), claims, args.source or Path(args.results).name, compared)
        except BadInputError as e:
            ap.error(str(e))
    else:
        print(readme_summary(claims, Path(args.results).name))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
