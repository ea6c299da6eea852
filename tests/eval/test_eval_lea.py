"""LEA against hand computations from Moosavi & Strube (2016)'s definitions."""

import pytest

from moviessl.eval.lea import LEAScore, lea_prf, mention_assignments


def test_paper_example():
    # Moosavi & Strube §4: key {a,b,c},{d,e,f,g}; response {a,b},{c,d},{f,g,h,i}.
    key = [["a", "b", "c"], ["d", "e", "f", "g"]]
    sys = [["a", "b"], ["c", "d"], ["f", "g", "h", "i"]]
    p, r, f = lea_prf(key, sys)
    # recall: k1 keeps 1 of 3 links, k2 1 of 6 -> (3*1/3 + 4*1/6) / 7 = 5/21
    assert r == pytest.approx(5 / 21)
    # precision: r1 1/1, r2 0/1, r3 1/6 (h, i are not key mentions) -> (2 + 0 + 4/6) / 8 = 1/3
    assert p == pytest.approx(1 / 3)
    assert f == pytest.approx(2 * (1 / 3) * (5 / 21) / (1 / 3 + 5 / 21))


def test_doc_toy_singletons():
    # vidsitu.md §4.6: key {Ev1_Arg0, Ev2_Arg0}, {Ev1_Arg1}; system all singletons -> P = R = F = 1/3
    key = [["Ev1_Arg0", "Ev2_Arg0"], ["Ev1_Arg1"]]
    sys = [["Ev1_Arg0"], ["Ev2_Arg0"], ["Ev1_Arg1"]]
    assert lea_prf(key, sys) == pytest.approx((1 / 3, 1 / 3, 1 / 3))


def test_perfect_and_missing_mentions():
    key = [["x", "y"], ["z"]]
    assert lea_prf(key, [["y", "x"], ["z"]]) == pytest.approx((1, 1, 1))
    # the singleton z is missing from the response: recall 2/3, precision 1
    p, r, f = lea_prf(key, [["x", "y"]])
    assert (p, r) == pytest.approx((1.0, 2 / 3))
    assert f == pytest.approx(0.8)
    # nothing predicted: F = 0, no division error
    assert lea_prf(key, []) == (0.0, 0.0, 0.0)


def test_micro_sum_over_documents():
    s = LEAScore()
    s.update([["a", "b"]], [["a"], ["b"]])  # P 0/2, R 0/2
    s.update([["c"]], [["c"]])  # P 1/1, R 1/1
    assert (s.p_num, s.p_den, s.r_num, s.r_den) == (1.0, 3, 1.0, 3)
    assert s.f1 == pytest.approx(1 / 3)  # not the mean of per-document F1s (0 and 1)


def test_mention_assignments():
    assert mention_assignments([["a", "b"], ["q"]], [["b"], ["a", "c"]]) == {"a": 1, "b": 0}
    # a mention listed in two clusters on the out side maps to the last (coval's get_mention_assignments
    # fills its dict in cluster order); every other case lists a mention once, so "first" passed too
    assert mention_assignments([["a"]], [["a"], ["b", "a"]]) == {"a": 1}


def test_an_empty_cluster_weighs_nothing():
    """An empty cluster has no links: coval divides by that zero (ZeroDivisionError). Its weight |c|
    is 0, so it leaves both sides' sums as they were."""
    key, sys = [["a", "b"], ["c"]], [["a", "b"], ["d"]]
    assert lea_prf(key + [[]], [[]] + sys) == lea_prf(key, sys)
