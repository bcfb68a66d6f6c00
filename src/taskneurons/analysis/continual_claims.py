"""The paper's continual-learning claims, each decided by one statistic over orders and seeds.

PAPER.md §4 (Table 5) makes directional claims: NCFT forgets less than SeqFT, SeqLoRA and EPI
(and scores higher after the last task), W-NCFT beats NCFT, O-LoRA sits above W-NCFT. Each
claim compares two methods on one metric; the units are the ``(order, seed)`` runs where both
ran, ``d_u = metric(a) - metric(b)`` (the methods of one unit share the seed's data order and
test examples).

* **Estimate and interval**: the mean of ``d_u`` over the ``n`` units with
  ``± t(n-1) · sqrt(s²/n + se²)``: ``s²`` the variance of ``d_u`` between units (seeds and
  orders), ``se`` the test-example standard error of the difference, added once because every
  unit scores the same test examples of the same tasks: per order ``sqrt(se_a² + se_b²)``
  (each method's binomial se, treated as independent: conservative when the two methods err on
  the same examples), averaged over the orders (as if fully shared across orders). Units that
  are not independent (see *p over clusters*) make ``s²/n`` too small, so the interval is also
  computed over clusters, ``± t(C-1) · sqrt(se_C² + se²)`` with ``se_C`` the cluster-robust
  (CR1) standard error of the mean (:func:`clustered_se`; ``s/√n`` when every unit is its own
  cluster), and the wider of the two is the claim's interval (added with order 3 running,
  before it had a result: it can only widen the interval).
* **p**: the exact two-sided sign-flip p of the mean of ``d_u`` (all ``2^n`` sign patterns;
  a random 100,000 of them, seeded, beyond 16 units); the floor is ``2 / 2^n`` (2/512 at
  3 orders x 3 seeds). **Holm** across the claims tested together.
* **p over clusters**: flipping units one by one assumes they are independent; runs of one
  seed whose orders begin with the same task train the same model first (orders 1 and 2 of
  the standard benchmark share dbpedia -> amazon), so they flip together: the clustered
  sign-flip p (floor ``2 / 2^C`` over ``C`` clusters: 2/64 for orders 1-3 x 3 seeds), Holm
  across the claims too. The verdict takes the larger of the two Holm p's (added after order
  1 and 2 were seen, before order 3: it can only turn a held claim undecided).
* **Verdict** (fixed here, before any run): ``held`` when the interval lies on the paper's side
  of 0 and the Holm p < 0.05; ``not held`` when the interval lies on the other side of 0;
  else ``undecided``.

Example:
    >>> r = claim_statistic([[3.0, 5.0, 4.0]], [0.0])
    >>> r["mean"], r["n_units"], r["p"]
    (4.0, 3, 0.25)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from taskneurons.analysis.grid_test import holm

#: units up to which the sign-flip distribution is enumerated exactly
EXACT_UNITS = 16


@dataclass(frozen=True)
class Claim:
    """``metric(a) > metric(b)`` as the paper states it (``metric``: ``CL`` or ``BWT``)."""

    metric: str
    a: str
    b: str
    text: str


#: PAPER.md §4's claims, in the order they are reported
PAPER_CLAIMS = (
    Claim("BWT", "ncft", "seqft", "NCFT forgets less than SeqFT"),
    Claim("BWT", "ncft", "seqlora", "NCFT forgets less than SeqLoRA"),
    Claim("BWT", "ncft", "epi", "NCFT forgets less than EPI"),
    Claim("CL", "ncft", "seqft", "NCFT scores higher than SeqFT after the last task"),
    Claim("CL", "ncft", "seqlora", "NCFT scores higher than SeqLoRA after the last task"),
    Claim("CL", "ncft", "epi", "NCFT scores higher than EPI after the last task"),
    Claim("CL", "wncft", "ncft", "W-NCFT beats NCFT"),
    Claim("CL", "olora", "wncft", "O-LoRA scores above W-NCFT (its place in Table 5)"),
)


def sign_flip_p(
    d: Sequence[float], n_random: int = 100_000, seed: int = 0, clusters: Sequence | None = None
) -> float:
    """Two-sided sign-flip p of ``mean(d)``: the share of sign patterns whose |mean| reaches
    the observed one (exact up to :data:`EXACT_UNITS` patterns' positions, else ``n_random``
    patterns). ``clusters`` (a label per value): the values of one cluster flip together
    (units that are not independent under the null: runs that trained the same model first).

    Example:
        >>> sign_flip_p([1.0, 2.0])  # patterns: +3, +1, -1, -3 over 2; |mean| >= 1.5: 2 of 4
        0.5
        >>> sign_flip_p([1.0, 2.0], clusters=["a", "a"])  # +3, -3: both reach 1.5
        1.0
    """
    x = np.asarray(d, dtype=float)  # [units]
    labels = list(range(x.size)) if clusters is None else list(clusters)
    index = {c: i for i, c in enumerate(dict.fromkeys(labels))}
    member = np.zeros((len(index), x.size))  # [clusters, units]
    member[[index[c] for c in labels], np.arange(x.size)] = 1.0
    if len(index) <= EXACT_UNITS:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(index))))
    else:
        signs = np.random.default_rng(seed).choice((1.0, -1.0), size=(n_random, len(index)))
    null = np.abs(signs @ member @ x) / x.size  # [patterns]
    observed = abs(float(x.mean()))
    return float(np.mean(null >= observed - 1e-12 * max(1.0, observed)))


def clustered_se(d: Sequence[float], clusters: Sequence) -> float:
    """Cluster-robust (CR1) standard error of ``mean(d)`` when the values of one cluster may be
    correlated: ``sqrt(C/(C-1) · Σ_c r_c²) / n``, ``r_c`` the sum of the residuals
    ``d_u - mean(d)`` over cluster ``c``; ``s/√n`` (``s`` the sd, ``ddof=1``) when every value
    is its own cluster; ``inf`` with one cluster.

    Example:
        >>> clustered_se([1.0, 3.0, 8.0], ["a", "a", "b"])  # r = -4, 4: sqrt(2 · 32) / 3
        2.6666666666666665
    """
    x = np.asarray(d, dtype=float)  # [units]
    labels = list(clusters)
    if len(labels) != x.size:
        raise ValueError(f"{len(labels)} cluster labels for {x.size} units")
    sums: dict = {}
    for label, r in zip(labels, x - x.mean(), strict=True):
        sums[label] = sums.get(label, 0.0) + float(r)
    c = len(sums)
    if c < 2:
        return math.inf
    return math.sqrt(c / (c - 1) * sum(r * r for r in sums.values())) / x.size


def clustered_half_width(d: Sequence[float], clusters: Sequence, test_se: float = 0.0) -> float:
    """95 % half-width of ``mean(d)`` over clusters: ``t(C-1) · sqrt(se_C² + test_se²)``
    (:func:`clustered_se`; ``inf`` with one cluster).

    Example:
        >>> round(clustered_half_width([1.0, 3.0, 8.0], ["a", "a", "b"]), 2)  # 12.71 · 8/3
        33.88
    """
    c = len(set(clusters))
    if c < 2:
        return math.inf
    se_c = clustered_se(d, clusters)
    return float(stats.t.ppf(0.975, c - 1)) * math.sqrt(se_c**2 + test_se**2)


def _half_widths(d: np.ndarray, labels: list, test_se: float) -> tuple[float, float]:
    """95 % half-widths over units (``t(n-1)``) and over clusters (``t(C-1)``, CR1 se)."""
    units = float(stats.t.ppf(0.975, d.size - 1)) * math.sqrt(d.var(ddof=1) / d.size + test_se**2)
    return units, clustered_half_width(d, labels, test_se)


def claim_statistic(
    diffs: Sequence[Sequence[float]], ses: Sequence[float], clusters: Sequence | None = None
) -> dict:
    """Mean difference, interval and sign-flip p of one claim (see the module docstring).

    Args:
        diffs: per order, ``metric(a) - metric(b)`` per seed.
        ses: per order, the test-example se of that difference (``nan``: not known, left out).
        clusters: a label per unit (in the order of ``diffs`` flattened) for ``p_clusters``:
            units of one label flip together; default: each unit its own.

    Returns:
        ``mean``, ``lo``, ``hi``, ``half_width`` (the wider of ``half_width_units`` and
        ``half_width_clusters``), ``between_sd``, ``test_se``, ``n_units``, ``p``,
        ``n_clusters``, ``p_clusters``.
    """
    d = np.array([v for order in diffs for v in order], dtype=float)  # [units]
    if d.size < 2:
        raise ValueError(f"a claim needs at least 2 (order, seed) units, got {d.size}")
    labels = list(range(d.size)) if clusters is None else list(clusters)
    if len(labels) != d.size:
        raise ValueError(f"{len(labels)} cluster labels for {d.size} units")
    known = [s for s in ses if not math.isnan(s)]
    test_se = float(np.mean(known)) if known else 0.0
    by_units, by_clusters = _half_widths(d, labels, test_se)
    half = max(by_units, by_clusters)
    mean = float(d.mean())
    return {
        "mean": mean, "lo": mean - half, "hi": mean + half, "half_width": half,
        "half_width_units": by_units, "half_width_clusters": by_clusters,
        "between_sd": float(d.std(ddof=1)), "test_se": test_se, "n_units": int(d.size), "p": sign_flip_p(d),
        "n_clusters": len(set(labels)), "p_clusters": sign_flip_p(d, clusters=labels),
    }  # fmt: skip


def verdict(lo: float, hi: float, p_holm: float, alpha: float = 0.05) -> str:
    """``held`` / ``not held`` / ``undecided`` for a claim that the difference is above 0.

    Example:
        >>> verdict(1.0, 5.0, 0.01), verdict(-5.0, -1.0, 0.01), verdict(-1.0, 5.0, 0.01)
        ('held', 'not held', 'undecided')
    """
    if lo > 0 and p_holm < alpha:
        return "held"
    if hi < 0:
        return "not held"
    return "undecided"


def decide_claims(stats_by_claim: dict[Claim, dict]) -> list[dict]:
    """Holm across the tested claims, of the units' p and of the clusters' p, and each claim's
    verdict on the larger of the two (input order kept)."""
    claims = list(stats_by_claim)
    adjusted = holm([stats_by_claim[c]["p"] for c in claims]) if claims else []
    clustered = holm([stats_by_claim[c]["p_clusters"] for c in claims]) if claims else []
    out = []
    for claim, p_holm, p_cl in zip(claims, adjusted, clustered, strict=True):
        s = stats_by_claim[claim]
        p_rule = max(float(p_holm), float(p_cl))
        out.append({"claim": claim, **s, "p_holm": float(p_holm), "p_holm_clusters": float(p_cl),
                    "verdict": verdict(s["lo"], s["hi"], p_rule)})  # fmt: skip
    return out
