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
  the ratios over every (candidate process, baseline process) pair, minus one (``+0.07`` = 7%
  slower); below ``min_effect`` (default 5%) a difference does not matter, however significant;
- the **evidence** is a one-sided Mann-Whitney U test on the process medians
  (``scipy.stats.mannwhitneyu``, exact for small samples); below ``p_threshold`` the difference
  is not noise.

Both are needed for a regression. A large effect without evidence is *inconclusive* (too noisy
to decide), and so is any comparison with fewer than ``min_rounds`` processes or ``min_samples``
iterations on a side: a gate must never pass for lack of data. With 5 processes a side the
smallest possible one-sided p is 1/252, with 10 it is 1/184756; the built-in targets measure
10 processes a side (``measurement.compare_rounds``) in alternating order (A B, B A, ...).

An inconclusive first look can be extended (``measurement.max_compare_rounds``, 20 in the
built-in targets; `edgedistill.bench.core`): the alternation continues and this comparison is
taken again on all processes. That is a second look at the same data, so the p-part's nominal
false-alarm bound is 2 x ``p_threshold`` (Bonferroni over the two looks), not ``p_threshold``;
only inconclusive looks are extended (too few processes, or an effect that reached
``min_effect`` without the evidence), and the A/A rate the gate benchmark measures
(`docs/benchmarks.md`) is the figure to trust.
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


def mann_whitney_u(
    x: Sequence[float], y: Sequence[float], alternative: str = "greater"
) -> tuple[float, float]:
    """U of ``x`` and the p-value of ``scipy.stats.mannwhitneyu`` (exact for small untied samples).

    ``alternative="greater"``: x tends to be larger than y; ``"less"``; ``"two-sided"``.
    """
    from scipy.stats import mannwhitneyu

    result = mannwhitneyu(np.asarray(x, float), np.asarray(y, float), alternative=alternative)
    return float(result.statistic), float(result.pvalue)


def hodges_lehmann_ratio(candidate: Sequence[float], baseline: Sequence[float]) -> float:
    """Median over all (candidate, baseline) pairs of candidate/baseline: the shift estimate that
    goes with the Mann-Whitney test, robust to one odd process on either side."""
    c = np.log(np.asarray(candidate, float))
    b = np.log(np.asarray(baseline, float))
    return float(math.exp(np.median(np.subtract.outer(c, b))))


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
        "p_slower": None,
        "p_faster": None,
        "test": "Mann-Whitney U on process medians, one-sided (scipy.stats.mannwhitneyu)",
        "effect": "Hodges-Lehmann ratio: median of candidate/baseline over all process pairs",
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
        if cand.size > 1 or base.size > 1:
            result["p_slower"] = mann_whitney_u(cand, base, "greater")[1]
            result["p_faster"] = mann_whitney_u(cand, base, "less")[1]
    if short:
        result["verdict"] = "inconclusive"
        result["reason"] = "too few samples: " + "; ".join(short)
        return result
    effect = result["ratio"] - 1.0
    pct = f"{effect * 100:+.1f}%"
    where = f"over {cand.size} + {base.size} processes"
    if effect >= min_effect:
        if result["p_slower"] < p_threshold:
            result["verdict"] = "regressed"
            result["reason"] = (
                f"{pct} vs baseline {where} (limit +{min_effect * 100:.1f}%), "
                f"p={result['p_slower']:.2g} < {p_threshold}"
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
    else:
        result["verdict"] = "unchanged"
        result["reason"] = f"{pct} vs baseline {where} (a regression needs +{min_effect * 100:.1f}%)"
    return result
