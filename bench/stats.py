"""Latency statistics and the noise-aware comparison of a candidate with its baseline.

The comparison answers "is the candidate slower than the baseline by an amount that matters?":

- the **effect** is the ratio of median latencies minus one (``+0.07`` = 7% slower); below
  ``min_effect`` (default 5%) a difference does not matter, however significant;
- the **evidence** is a one-sided Mann-Whitney U test on the per-iteration latencies pooled over
  every measuring process of each side; below ``p_threshold`` the difference is not noise.

Both are needed for a regression. A large effect without evidence is *inconclusive* (too noisy
to decide), and so is any comparison with fewer than ``min_samples`` iterations or
``min_rounds`` processes on a side: a gate must never pass for lack of data.

Iterations of one process are not independent (they share a memory layout, a clock state, a
neighbour's load), so the p-value alone over-detects; the effect floor carries the decision,
and measuring both sides interleaved in alternating processes spreads drift over both.

`mann_whitney_u` uses ``scipy.stats.mannwhitneyu`` when scipy is installed, otherwise the normal
approximation with tie and continuity corrections (what scipy does for large samples).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

PERCENTILES = (50, 90, 95, 99)
# fewest samples for which a percentile is more than the sample maximum in disguise
MIN_SAMPLES_FOR_PERCENTILE = {50: 1, 90: 10, 95: 20, 99: 100}


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


def _rank_with_ties(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average ranks (1-based) of ``values`` and the size of every group of tied values."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    starts = np.cumsum(counts) - counts  # 0-based rank of the first member of each group
    average = starts + (counts + 1) / 2.0
    return average[inverse], counts


def _normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def mann_whitney_normal(
    x: Sequence[float], y: Sequence[float], alternative: str = "greater"
) -> tuple[float, float]:
    """U of ``x`` and its p-value from the normal approximation with tie and continuity corrections.

    ``alternative="greater"``: x tends to be larger than y; ``"less"``; ``"two-sided"``.
    """
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n1, n2 = a.size, b.size
    if n1 == 0 or n2 == 0:
        raise ValueError("both samples need at least one value")
    ranks, ties = _rank_with_ties(np.concatenate([a, b]))
    u1 = float(ranks[:n1].sum() - n1 * (n1 + 1) / 2.0)
    n = n1 + n2
    tie_term = float((ties.astype(np.float64) ** 3 - ties).sum())
    variance = n1 * n2 / 12.0 * ((n + 1) - tie_term / (n * (n - 1))) if n > 1 else 0.0
    if variance <= 0:  # every value tied: no evidence either way
        return u1, 1.0
    sigma = math.sqrt(variance)
    mu = n1 * n2 / 2.0
    if alternative == "greater":
        p = _normal_sf((u1 - mu - 0.5) / sigma)
    elif alternative == "less":
        p = 1.0 - _normal_sf((u1 - mu + 0.5) / sigma)
    elif alternative == "two-sided":
        p = min(1.0, 2.0 * _normal_sf((abs(u1 - mu) - 0.5) / sigma))
    else:
        raise ValueError(f"alternative must be greater, less or two-sided, not {alternative!r}")
    return u1, min(1.0, max(0.0, p))


def mann_whitney_u(
    x: Sequence[float], y: Sequence[float], alternative: str = "greater"
) -> tuple[float, float, str]:
    """U of ``x``, p-value, and the method used (scipy when installed, else the normal approximation)."""
    try:
        from scipy.stats import mannwhitneyu
    except ImportError:
        u, p = mann_whitney_normal(x, y, alternative)
        return u, p, "normal approximation (tie + continuity corrected)"
    result = mannwhitneyu(np.asarray(x, float), np.asarray(y, float), alternative=alternative)
    return float(result.statistic), float(result.pvalue), "scipy.stats.mannwhitneyu"


def compare_samples(
    candidate_ms: Sequence[float],
    baseline_ms: Sequence[float],
    *,
    candidate_rounds: int,
    baseline_rounds: int,
    min_effect: float = 0.05,
    p_threshold: float = 0.01,
    min_samples: int = 30,
    min_rounds: int = 3,
) -> dict[str, Any]:
    """Verdict on candidate vs baseline latencies: ``regressed``, ``unchanged``, ``improved`` or ``inconclusive``.

    Returns the verdict, the reason in words, and every figure it rests on.
    """
    cand, base = np.asarray(candidate_ms, float), np.asarray(baseline_ms, float)
    result: dict[str, Any] = {
        "candidate_n": int(cand.size),
        "baseline_n": int(base.size),
        "candidate_rounds": candidate_rounds,
        "baseline_rounds": baseline_rounds,
        "min_effect": min_effect,
        "p_threshold": p_threshold,
        "min_samples": min_samples,
        "min_rounds": min_rounds,
        "candidate_median_ms": float(np.median(cand)) if cand.size else None,
        "baseline_median_ms": float(np.median(base)) if base.size else None,
        "ratio_of_medians": None,
        "p_slower": None,
        "p_faster": None,
        "test": None,
    }
    short = []
    if cand.size < min_samples or base.size < min_samples:
        short.append(f"{cand.size} candidate / {base.size} baseline iterations (need {min_samples} each)")
    if candidate_rounds < min_rounds or baseline_rounds < min_rounds:
        short.append(
            f"{candidate_rounds} candidate / {baseline_rounds} baseline processes (need {min_rounds} each)"
        )
    if cand.size and base.size:
        ratio = result["candidate_median_ms"] / result["baseline_median_ms"]
        result["ratio_of_medians"] = ratio
        _, p_slower, method = mann_whitney_u(cand, base, "greater")
        _, p_faster, _ = mann_whitney_u(cand, base, "less")
        result.update(p_slower=p_slower, p_faster=p_faster, test=f"Mann-Whitney U, one-sided ({method})")
    if short:
        result["verdict"] = "inconclusive"
        result["reason"] = "too few samples: " + "; ".join(short)
        return result
    effect = result["ratio_of_medians"] - 1.0
    pct = f"{effect * 100:+.1f}%"
    if effect >= min_effect:
        if result["p_slower"] < p_threshold:
            result["verdict"] = "regressed"
            result["reason"] = (
                f"median {pct} vs baseline (limit +{min_effect * 100:.1f}%), p={result['p_slower']:.2g} < {p_threshold}"
            )
        else:
            result["verdict"] = "inconclusive"
            result["reason"] = (
                f"median {pct} vs baseline but p={result['p_slower']:.2g} >= {p_threshold}: too noisy to decide"
            )
    elif effect <= -min_effect and result["p_faster"] < p_threshold:
        result["verdict"] = "improved"
        result["reason"] = f"median {pct} vs baseline, p={result['p_faster']:.2g}"
    else:
        result["verdict"] = "unchanged"
        result["reason"] = f"median {pct} vs baseline (a regression needs +{min_effect * 100:.1f}%)"
    return result
