import math

from moviessl.claims import BEGIN, CLAIMS, END, Claim, claims_markdown, evaluate_claims, readme_summary, update_readme


def _row(table, setting, metric, mean, se, n=10):
    return {"table": table, "setting": setting, "metric": metric, "mean": mean, "se": se, "n": n}


def test_claim_arithmetic_and_verdicts():
    c = Claim("x", "Table 9", "a beats b", "t", "A", "B", "m")
    rows = [_row("t", "A", "m", 12.0, 0.6), _row("t", "B", "m", 10.0, 0.8)]
    (r,) = evaluate_claims(rows, [c])
    assert r["diff"] == 2.0 and r["se"] == 1.0 and r["z"] == 2.0 and r["holds"] is True  # exactly 2 SE: holds
    rows[0]["mean"] = 11.9
    assert evaluate_claims(rows, [c])[0]["holds"] is False
    rows[0]["mean"] = 8.0  # the wrong direction never holds
    assert evaluate_claims(rows, [c])[0]["z"] == -2.0
    assert evaluate_claims(rows[:1], [c])[0]["holds"] is None  # a missing row: not tested
    # a baseline in another table
    c2 = Claim("y", "Table 3", "model beats prior", "rel", "A", "prior", "m", b_table="rel_base")
    r2 = evaluate_claims([_row("rel", "A", "m", 5.0, 0.0), _row("rel_base", "prior", "m", 4.0, 0.0)], [c2])[0]
    assert r2["holds"] is True and math.isinf(r2["z"])


def test_markdown_and_readme_block(tmp_path):
    rows = [_row(c.table, c.a, c.metric, 50.0, 1.0) for c in CLAIMS] + [
        _row(c.b_table or c.table, c.b, c.metric, 40.0, 1.0) for c in CLAIMS
    ]
    claims = evaluate_claims(rows)
    md = claims_markdown(claims)
    assert md.count("\n| ") == len(CLAIMS) + 1 and "**holds**" in md  # header + one line per claim
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{BEGIN}\nold text\n{END}\noutro\n")
    assert update_readme(readme, claims, "results.json")
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old text" not in text
    assert readme_summary(claims, "results.json") in text and not update_readme(readme, claims, "results.json")
