"""Latency statistics and the noise-aware comparison of a candidate with its baseline.

The comparison answers "is the candidate slower than the baseline by an amount that matters?".
Its unit of evidence is the **measuring process**, not the iteration: iterations of one process
share a memory layout, a thread placement and a clock state, so they are strongly correlated
(on the 2-core benchmark host, process medians of one model scatter by +-4% while iterations
inside a process scatter far less). Pooling iterations into one test treats a lucky or unlucky
process as thousands of independent observations; `docs/benchmarks.md` section 5 measured what
that costs (8% false alarms on A/A comparisons). So each side is reduced to one median per
process, and:

- the **effect** is the Hodges-Lehmann estimate of the ratio candidate/baseline: the median of
  the ratios over every (candidate process, baseline process) pair;
- its **confidence bounds** are the distribution-free ones that go with it (Lehmann 1963, Moses):
  order statistics of the m x n pairwise log-ratios, at the quantile of the exact Mann-Whitney U
  distribution; each bound is one-sided at ``1 - p_threshold`` (together a ``1 - 2 p_threshold``
  interval, 90% at the default 0.05);
- the **evidence** is a one-sided Mann-Whitney U test on the process medians, its p-value from
  the exact distribution of U (``scipy.stats.mannwhitneyu(method="exact")``) when no two process
  medians tie, else from the exact permutation distribution of the tied (mid-)rank sum, computed
  here; both are exact for any sample the targets allow up to ``EXACT_MAX_PROCESSES`` processes,
  beyond that the normal approximation (with tie correction) is used and the report says so.

Verdicts: **regressed** when the Hodges-Lehmann slowdown reaches ``min_effect`` (default 5%)
*and* p_slower < ``p_threshold``; **unchanged** only when the upper confidence bound of the ratio
is below ``1 + min_effect`` (a slowdown that matters is excluded, not merely unestimated: a
+10% slowdown measured as +2.6% with a bound at +9% is *not* unchanged); **improved** when the
estimate is at least ``min_effect`` faster and p_faster < ``p_threshold``; everything else is
**inconclusive**, and so is any comparison with fewer than ``min_rounds`` processes or
``min_samples`` iterations on a side: a gate must never pass for lack of data. With 10
processes a side the smallest possible one-sided p is 1/184756 (exact); the built-in targets
measure 10 processes a side (``measurement.compare_rounds``) in alternating order (A B, B A, ...).

An inconclusive first look can be extended (``measurement.max_compare_rounds``, 20 in the
built-in targets; `edgedistill.bench.compare`): the alternation continues and this comparison is
taken again on all processes. That is a second look at the same data, so each one-sided error
bound is 2 x ``p_threshold`` (Bonferroni over the two looks), not ``p_threshold``; the A/A and
slowdown rates the gate benchmark measures (`docs/benchmarks.md` section 5) are the figures to trust.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

PERCENTILES = (50, 90, 95, 99)
# fewest samples for which a percentile is more than the sample maximum in disguise
MIN_SAMPLES_FOR_PERCENTILE = {50: 1, 90: 10, 95: 20, 99: 100}
# exact distributions up to this many processes (both sides together); beyond, normal approximation
EXACT_MAX_PROCESSES = 120


def summarize(samples_ms: Sequence[float]) -> dict[str, Any]:
    """n, mean, stdev, min, max and p50/p90/p95/p99 of latencies in milliseconds."""
    values = np.asarray(samples_ms, dtype=np.float64)
    if values.size == 0:
        return {"n": 0}
    summary: dict[str, Any] = {
        "n": int(values.size),
        "mean_ms": float(values.mean()),
        "stdev_ms": float(values.std(ddof=1)) if values.size > 1 else 0.0,
        "min_ms": float(values.min()),
        "max_ms": float(values.max()),
    }
    for q in PERCENTILES:
        summary[f"p{q}_ms"] = float(np.percentile(values, q))
    return summary


# The exact distributions


def _subset_sum_counts(scores: Sequence[int], m: int) -> np.ndarray:
    """counts[s]: how many m-element subsets of ``scores`` (non-negative integers) sum to s."""
    total = int(sum(scores))
    ways = np.zeros((m + 1, total + 1), dtype=np.float64)
    ways[0, 0] = 1.0
    for score in scores:
        # take this element into subsets of size j-1 -> j (high j first, so each is taken once)
        ways[1:, score:] += ways[:-1, : total + 1 - score]  # numpy buffers the overlapping operands
    return ways[m]


@lru_cache(maxsize=64)
def _u_null_cdf(m: int, n: int) -> np.ndarray:
    """cdf[u] = P(U <= u) of the Mann-Whitney U of m vs n untied observations, exactly."""
    counts = _subset_sum_counts(range(1, m + n + 1), m)
    offset = m * (m + 1) // 2  # the smallest rank sum: U = W - offset
    pmf = counts[offset : offset + m * n + 1]
    return np.cumsum(pmf) / pmf.sum()


def _tied_permutation_p(x: np.ndarray, y: np.ndarray, alternative: str) -> float:
    """Exact permutation p of the rank sum of ``x`` with mid-ranks (ties), conditional on the ties."""
    from scipy.stats import rankdata

    ranks2 = np.rint(2 * rankdata(np.concatenate([x, y]))).astype(np.int64)  # 2 x mid-rank: integers
    counts = _subset_sum_counts([int(r) for r in ranks2], x.size)
    observed = int(ranks2[: x.size].sum())
    total = counts.sum()
    greater = counts[observed:].sum() / total  # P(W >= observed)
    less = counts[: observed + 1].sum() / total  # P(W <= observed)
    if alternative == "greater":
        return float(min(1.0, greater))
    if alternative == "less":
        return float(min(1.0, less))
    return float(min(1.0, 2 * min(greater, less)))


def p_value_method(x: Sequence[float], y: Sequence[float]) -> str:
    """How `mann_whitney_u` computes the p-value of these samples (see the module doc)."""
    both = np.concatenate([np.asarray(x, float), np.asarray(y, float)])
    if both.size > EXACT_MAX_PROCESSES:
        return "normal approximation with tie correction (too many processes for the exact distribution)"
    if np.unique(both).size < both.size:
        return "exact permutation distribution of the mid-rank sum (tied process medians)"
    return "exact Mann-Whitney U distribution (scipy.stats.mannwhitneyu, method='exact')"


def mann_whitney_u(
    x: Sequence[float], y: Sequence[float], alternative: str = "greater"
) -> tuple[float, float]:
    """U of ``x`` and its p-value, exact as `p_value_method` says.

    ``alternative="greater"``: x tends to be larger than y; ``"less"``; ``"two-sided"``.
    """
    from scipy.stats import mannwhitneyu

    xa, ya = np.asarray(x, float), np.asarray(y, float)
    method = p_value_method(xa, ya)
    if method.startswith("normal"):
        result = mannwhitneyu(xa, ya, alternative=alternative, method="asymptotic")
        return float(result.statistic), float(result.pvalue)
    result = mannwhitneyu(xa, ya, alternative=alternative, method="exact")
    if method.startswith("exact permutation"):
        return float(result.statistic), _tied_permutation_p(xa, ya, alternative)
    return float(result.statistic), float(result.pvalue)


def hodges_lehmann_ratio(candidate: Sequence[float], baseline: Sequence[float]) -> float:
    """Median over all (candidate, baseline) pairs of candidate/baseline: the shift estimate that
    goes with the Mann-Whitney test, robust to one odd process on either side."""
    c = np.log(np.asarray(candidate, float))
    b = np.log(np.asarray(baseline, float))
    return float(math.exp(np.median(np.subtract.outer(c, b))))


def ratio_bounds(
    candidate: Sequence[float], baseline: Sequence[float], alpha: float
) -> tuple[float | None, float | None]:
    """One-sided ``1 - alpha`` lower and upper confidence bounds of the ratio candidate/baseline.

    The distribution-free bounds of the Hodges-Lehmann estimate: with D the m x n pairwise
    log-ratios sorted and k the largest integer with P(U <= k - 1) <= alpha under the exact null
    distribution of U, the bounds are exp(D_(k)) and exp(D_(mn+1-k)). None where the samples are
    too small for any bound at this level (k = 0: with 2 a side P(U = 0) = 1/6 > 0.05).
    """
    c = np.log(np.asarray(candidate, float))
    b = np.log(np.asarray(baseline, float))
    m, n = c.size, b.size
    if not m or not n:
        return None, None
    if m + n <= EXACT_MAX_PROCESSES:
        k = int(np.searchsorted(_u_null_cdf(m, n), alpha, side="right"))  # cdf[0..k-1] <= alpha
    else:
        from scipy.stats import norm

        k = int(math.floor(m * n / 2 - norm.ppf(1 - alpha) * math.sqrt(m * n * (m + n + 1) / 12)))
    if k < 1:
        return None, None
    d = np.sort(np.subtract.outer(c, b).ravel())
    return float(math.exp(d[k - 1])), float(math.exp(d[m * n - k]))


def _pct(ratio: float) -> str:
    return f"{(ratio - 1) * 100:+.1f}%"


def compare_processes(
    candidate_medians_ms: Sequence[float],
    baseline_medians_ms: Sequence[float],
    *,
    candidate_n: int,
    baseline_n: int,
    min_effect: float = 0.05,
    p_threshold: float = 0.05,
    min_samples: int = 30,
    min_rounds: int = 5,
) -> dict[str, Any]:
    """Verdict on candidate vs baseline: ``regressed``, ``unchanged``, ``improved`` or ``inconclusive``.

    ``*_medians_ms`` hold one median latency per measuring process; ``*_n`` count the timed
    iterations behind them. Returns the verdict, the reason in words, and every figure it rests on.
    """
    cand = np.asarray(candidate_medians_ms, float)
    base = np.asarray(baseline_medians_ms, float)
    result: dict[str, Any] = {
        "unit": "process medians",
        "candidate_rounds": int(cand.size),
        "baseline_rounds": int(base.size),
        "candidate_n": int(candidate_n),
        "baseline_n": int(baseline_n),
        "min_effect": min_effect,
        "p_threshold": p_threshold,
        "min_samples": min_samples,
        "min_rounds": min_rounds,
        "candidate_median_ms": float(np.median(cand)) if cand.size else None,
        "baseline_median_ms": float(np.median(base)) if base.size else None,
        "ratio": None,
        "ratio_lower": None,
        "ratio_upper": None,
        "confidence": 1.0 - p_threshold,
        "p_slower": None,
        "p_faster": None,
        "p_method": None,
        "test": "Mann-Whitney U on process medians, one-sided",
        "effect": "Hodges-Lehmann ratio: median of candidate/baseline over all process pairs",
        "interval": "distribution-free bounds of the Hodges-Lehmann ratio (Lehmann/Moses): order statistics "
        "of the pairwise log-ratios at the exact Mann-Whitney U quantile, each one-sided at `confidence`",
    }
    short = []
    if candidate_n < min_samples or baseline_n < min_samples:
        short.append(f"{candidate_n} candidate / {baseline_n} baseline iterations (need {min_samples} each)")
    if cand.size < min_rounds or base.size < min_rounds:
        short.append(
            f"{cand.size} candidate / {base.size} baseline processes (need {min_rounds} each: "
            "raise measurement.compare_rounds, or measurement.rounds for a baseline report)"
        )
    if cand.size and base.size:
        result["ratio"] = hodges_lehmann_ratio(cand, base)
        result["ratio_lower"], result["ratio_upper"] = ratio_bounds(cand, base, p_threshold)
        if cand.size > 1 or base.size > 1:
            result["p_slower"] = mann_whitney_u(cand, base, "greater")[1]
            result["p_method"] = p_value_method(cand, base)
            result["p_faster"] = mann_whitney_u(cand, base, "less")[1]
    if short:
        result["verdict"] = "inconclusive"
        result["reason"] = "too few samples: " + "; ".join(short)
        return result
    ratio, upper = result["ratio"], result["ratio_upper"]
    effect = ratio - 1.0
    pct = _pct(ratio)
    where = f"over {cand.size} + {base.size} processes"
    limit = f"+{min_effect * 100:.1f}%"
    conf = f"{result['confidence']:.0%}"
    bound = (
        f"{conf} upper bound {_pct(upper)}"
        if upper is not None
        else f"no {conf} upper bound (too few processes)"
    )
    if effect >= min_effect:
        if result["p_slower"] < p_threshold:
            result["verdict"] = "regressed"
            result["reason"] = (
                f"{pct} vs baseline {where} (limit {limit}), p={result['p_slower']:.2g} < {p_threshold}"
            )
        else:
            result["verdict"] = "inconclusive"
            result["reason"] = (
                f"{pct} vs baseline {where} but p={result['p_slower']:.2g} >= {p_threshold}: "
                "too noisy to decide (more compare_rounds, or a quieter machine)"
            )
    elif effect <= -min_effect and result["p_faster"] < p_threshold:
        result["verdict"] = "improved"
        result["reason"] = f"{pct} vs baseline {where}, p={result['p_faster']:.2g}"
    elif upper is not None and upper < 1.0 + min_effect:
        result["verdict"] = "unchanged"
        result["reason"] = f"{pct} vs baseline {where}, {bound} < {limit}"
    else:
        result["verdict"] = "inconclusive"
        result["reason"] = (
            f"{pct} vs baseline {where}, but {bound}: a {limit} slowdown is not excluded, "
            "too noisy to call it unchanged (more compare_rounds, or a quieter machine)"
        )
    return result
