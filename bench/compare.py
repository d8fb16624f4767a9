"""Baseline comparisons: candidate and baseline measured in alternating fresh processes, compared as ratios with a significance test."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgedistill.bench.artifact import Artifact
from edgedistill.bench.blocks import _median, _ran_fields
from edgedistill.bench.plan import _Plan
from edgedistill.bench.progress import _Progress


def _interleaved(
    plan: _Plan,
    candidate: Artifact,
    baseline: Artifact,
    candidate_overrides: Mapping[str, Any] | None,
    bar: _Progress,
    rounds: range,
    cand_rounds: list[dict[str, Any]],
    base_rounds: list[dict[str, Any]],
) -> None:
    """Candidate and baseline in alternating fresh processes: A B, B A, A B ... (drift hits both).

    Runs the round numbers in ``rounds`` and appends to ``cand_rounds`` / ``base_rounds``, so an
    extension continues the alternation where the first look stopped."""
    n = rounds.stop
    for r in rounds:
        order = [("A", candidate), ("B", baseline)] if r % 2 == 0 else [("B", baseline), ("A", candidate)]
        for side, artifact in order:
            bar.step(f"{candidate.name} vs {baseline.name}: round {r + 1}/{n} ({side})")
            if side == "A":
                cand_rounds.append(plan.run(plan.job("latency", artifact, candidate_overrides)))
            else:
                base_rounds.append(plan.run(plan.job("latency", artifact)))
            bar.advance()


def _compare_interleaved(
    plan: _Plan,
    candidate: Artifact,
    baseline: Artifact,
    candidate_overrides: Mapping[str, Any] | None,
    bar: _Progress,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Measure candidate vs baseline, then decide; an inconclusive first look is extended once.

    First look: ``compare_rounds`` processes a side. If that is inconclusive (faster or slower
    undecided, or the target's ``speedup_vs_teacher`` budget straddled by the speed-up's bounds,
    as the gate would judge it) and ``max_compare_rounds`` is larger, the alternation continues up
    to ``max_compare_rounds`` a side and the verdict is taken again on all processes (a second
    look). Only an undecided look is extended, so clear answers cost no more time. Every look is
    kept in the comparison (``looks``) so a reader sees what the first look said.
    """
    from edgedistill.bench.gating.relative import speedup_undecided

    m = plan.target.measurement
    cand_rounds: list[dict[str, Any]] = []
    base_rounds: list[dict[str, Any]] = []
    _interleaved(
        plan, candidate, baseline, candidate_overrides, bar, range(m.compare_rounds), cand_rounds, base_rounds
    )
    comparison = _comparison(plan.target, candidate, baseline, cand_rounds, base_rounds)
    looks = [_look(comparison)]
    extend_to = m.max_compare_rounds or m.compare_rounds
    undecided = comparison["result"]["verdict"] == "inconclusive" or speedup_undecided(
        looks[-1]["speedup_bounds"], plan.target.budgets.speedup_vs_teacher
    )
    if undecided and extend_to > m.compare_rounds:
        bar.grow(2 * (extend_to - m.compare_rounds))
        _interleaved(
            plan,
            candidate,
            baseline,
            candidate_overrides,
            bar,
            range(m.compare_rounds, extend_to),
            cand_rounds,
            base_rounds,
        )
        comparison = _comparison(plan.target, candidate, baseline, cand_rounds, base_rounds)
        looks.append(_look(comparison))
    comparison["looks"] = looks
    comparison["extended"] = len(looks) > 1
    return cand_rounds, comparison


def _look(comparison: dict[str, Any]) -> dict[str, Any]:
    from edgedistill.bench.gating.relative import speedup_interval

    result = comparison["result"]
    speedup, lower, upper = speedup_interval(
        comparison["candidate_round_medians_ms"], comparison["baseline_round_medians_ms"]
    )
    return {
        "rounds_per_side": comparison["candidate_rounds"],
        "verdict": result["verdict"],
        "ratio": result["ratio"],
        "p_slower": result["p_slower"],
        "speedup": speedup,
        "speedup_bounds": [lower, upper],
    }


def _comparison(target, candidate: Artifact, baseline: Artifact, rounds, base_rounds) -> dict[str, Any]:
    from edgedistill.bench.stats import compare_processes

    cand = [s for r in rounds for s in r["samples_ms"]]
    base = [s for r in base_rounds for s in r["samples_ms"]]
    cand_medians = [_median(r["samples_ms"]) for r in rounds]
    base_medians = [_median(r["samples_ms"]) for r in base_rounds]
    reg = target.regression
    return {
        "candidate": candidate.name,
        "baseline": baseline.name,
        # what each side ran (read back per process; the first process speaks for its side)
        "candidate_run": _ran_fields(candidate, rounds),
        "baseline_run": _ran_fields(baseline, base_rounds),
        "candidate_path": str(candidate.path),
        "baseline_path": str(baseline.path),
        "metric": "latency_ms",
        "interleaved": True,
        "order": "alternating fresh processes: A B, B A, A B, ...",
        "candidate_samples_ms": cand,
        "baseline_samples_ms": base,
        "candidate_rounds": len(rounds),
        "baseline_rounds": len(base_rounds),
        "baseline_round_medians_ms": base_medians,
        "candidate_round_medians_ms": cand_medians,
        "baseline_peak_rss_mb": max(r["memory"]["peak_rss_mb"] for r in base_rounds),
        "result": compare_processes(
            cand_medians,
            base_medians,
            candidate_n=len(cand),
            baseline_n=len(base),
            min_effect=reg.min_effect,
            p_threshold=reg.p_threshold,
            min_samples=reg.min_samples,
            min_rounds=reg.min_rounds,
        ),
    }


def _baseline_entry(baseline: Artifact, comparisons: list[dict[str, Any]]) -> dict[str, Any]:
    entry = {"role": "baseline", **baseline.describe()}
    if not comparisons:
        entry.update(status="skipped", reason="no candidate was measured against it")
        return entry
    samples = [s for c in comparisons for s in c["baseline_samples_ms"]]
    from edgedistill.bench.stats import summarize

    entry.update(
        status="measured",
        reason=None,
        **comparisons[0]["baseline_run"],
        latency={"unit": "ms", **summarize(samples), "samples_ms": samples},
        memory={"peak_rss_mb": max(c["baseline_peak_rss_mb"] for c in comparisons)},
    )
    return entry
