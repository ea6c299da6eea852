"""LEA, the link-based entity-aware coreference metric (Moosavi & Strube, ACL 2016).

For a cluster ``c`` (a list of mentions) with ``links(c) = |c|(|c|-1)/2``::

    resolution(c) = #(links of c whose two mentions fall in one cluster on the other side) / links(c)
    recall        = sum_k |k| * resolution(k) / sum_k |k|        over key clusters
    precision     = same with the system clusters resolved against the key

A singleton has one self-link, resolved iff its mention sits in a singleton on the other side.
Numerators and denominators are plain sums, so they can be accumulated over documents (micro)
before the F1, which is what :class:`LEAScore` does. Semantics follow the ``coval`` implementation
used by VidSitu (TheShadow29/coval), including its treatment of mentions missing on the other side.
"""

from __future__ import annotations

from typing import Hashable, Sequence

Cluster = Sequence[Hashable]


def mention_assignments(inp_clusters: Sequence[Cluster], out_clusters: Sequence[Cluster]) -> dict:
    """mention of ``inp_clusters`` -> index of its cluster in ``out_clusters`` (absent mentions
    are left out; a mention listed twice on the out side maps to its last cluster, as in coval)."""
    where = {m: i for i, c in enumerate(out_clusters) for m in c}
    return {m: where[m] for c in inp_clusters for m in c if m in where}


def lea(
    input_clusters: Sequence[Cluster], output_clusters: Sequence[Cluster], mention_to_out: dict
) -> tuple[float, float]:
    """One side of LEA: ``(sum |c| * resolution(c), sum |c|)`` over ``input_clusters``.
    Recall is ``lea(key, sys, key->sys)``, precision ``lea(sys, key, sys->key)``."""
    num, den = 0.0, 0
    for c in input_clusters:
        if not c:  # weight |c| = 0 (coval divides by its zero links); a caller's empty list, not a fault
            continue
        if len(c) == 1:
            all_links = 1.0
            m = c[0]
            common = 1 if (m in mention_to_out and len(output_clusters[mention_to_out[m]]) == 1) else 0
        else:
            all_links = len(c) * (len(c) - 1) / 2.0
            common = 0
            for i, m in enumerate(c):
                if m not in mention_to_out:
                    continue
                for m2 in c[i + 1 :]:
                    if m2 in mention_to_out and mention_to_out[m] == mention_to_out[m2]:
                        common += 1
        num += len(c) * common / all_links
        den += len(c)
    return num, den


def f1(p_num: float, p_den: float, r_num: float, r_den: float) -> float:
    p = 0.0 if p_den == 0 else p_num / p_den
    r = 0.0 if r_den == 0 else r_num / r_den
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


class LEAScore:
    """Micro-accumulated LEA over documents: ``update(key, sys)`` per document, then ``.f1``."""

    def __init__(self) -> None:
        self.p_num = self.p_den = self.r_num = self.r_den = 0.0

    def update(self, key_clusters: Sequence[Cluster], sys_clusters: Sequence[Cluster]) -> None:
        pn, pd = lea(sys_clusters, key_clusters, mention_assignments(sys_clusters, key_clusters))
        rn, rd = lea(key_clusters, sys_clusters, mention_assignments(key_clusters, sys_clusters))
        self.p_num += pn
        self.p_den += pd
        self.r_num += rn
        self.r_den += rd

    @property
    def precision(self) -> float:
        return 0.0 if self.p_den == 0 else self.p_num / self.p_den

    @property
    def recall(self) -> float:
        return 0.0 if self.r_den == 0 else self.r_num / self.r_den

    @property
    def f1(self) -> float:
        return f1(self.p_num, self.p_den, self.r_num, self.r_den)


def lea_prf(key_clusters: Sequence[Cluster], sys_clusters: Sequence[Cluster]) -> tuple[float, float, float]:
    """(precision, recall, F1) of one document."""
    s = LEAScore()
    s.update(key_clusters, sys_clusters)
    return s.precision, s.recall, s.f1
