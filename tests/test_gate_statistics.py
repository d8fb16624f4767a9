"""The gate's statistics without timing anything: exact p-values, the Hodges-Lehmann confidence
bounds, and a replay of recorded process medians at the operating point the gate claims (a +5%
slowdown that matters, p 0.05), +10% and +5% injected into real A/A measurements.

`tests/data/gate_process_medians.json` holds 30 + 30 process medians of one A/A comparison of a
tiny ONNX model on this project's shared 2-core host (how they were made is in the file:
`benchmarks/gate_medians_fixture.py`). Multiplying one side by 1.10 makes a comparison whose
truth is known: a +10% slowdown, with this host's real process-to-process noise.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
from bench_helpers import FAST_TARGET, write_target

from edgedistill.bench.gating import gate
from edgedistill.bench.stats import (
    compare_processes,
    hodges_lehmann_ratio,
    mann_whitney_u,
    p_value_method,
    ratio_bounds,
)
from edgedistill.targets import load_target

RECORDED = json.loads((Path(__file__).parent / "data" / "gate_process_medians.json").read_text())
A = np.array(RECORDED["a_round_medians_ms"])
B = np.array(RECORDED["b_round_medians_ms"])


def test_p_is_exact_with_10_a_side_and_a_permutation_p_when_medians_tie():
    # fully separated 10 vs 10: the exact one-sided p is 1 / C(20, 10); scipy's default ("auto",
    # the normal approximation above 8 a side) said 9.1e-5, the figure docs/benchmarks.md quoted
    slow, fast = [10.0 + i for i in range(10)], [1.0 + i / 10 for i in range(10)]
    assert mann_whitney_u(slow, fast, "greater")[1] == pytest.approx(1 / math.comb(20, 10), rel=1e-9)
    assert "exact Mann-Whitney U distribution" in p_value_method(slow, fast)
    # ties: the exact permutation distribution of the mid-rank sum, checked against enumeration
    x, y = [1.0, 2.0, 2.0, 3.0, 5.0, 5.0], [2.0, 3.0, 3.0, 4.0, 5.0, 6.0]
    assert "permutation" in p_value_method(x, y)
    values = np.array(x + y)
    ranks = np.argsort(np.argsort(values, kind="stable"), kind="stable") + 1.0
    for v in np.unique(values):  # mid-ranks
        ranks[values == v] = ranks[values == v].mean()
    observed = ranks[:6].sum()
    sums = [ranks[list(c)].sum() for c in itertools.combinations(range(12), 6)]
    for alternative, expected in (
        ("greater", np.mean([s >= observed - 1e-9 for s in sums])),
        ("less", np.mean([s <= observed + 1e-9 for s in sums])),
    ):
        assert mann_whitney_u(x, y, alternative)[1] == pytest.approx(expected, rel=1e-12)
    # beyond 120 processes in all: the normal approximation, and the report says so
    many = list(np.linspace(1, 2, 61))
    assert p_value_method(many, [v + 0.001 for v in many]).startswith("normal approximation")


def test_hodges_lehmann_bounds_are_order_statistics_at_the_exact_u_quantile():
    cand, base = [1.10, 1.20, 1.05, 1.30, 1.15], [1.00, 0.95, 1.02, 1.08, 0.99]
    # 5 a side: P(U <= 4) = 12/252 <= 0.05 < P(U <= 5) = 19/252, so k = 5: the 5th smallest and
    # the 5th largest of the 25 pairwise log-ratios
    d = sorted(math.log(c / b) for c in cand for b in base)
    lower, upper = ratio_bounds(cand, base, 0.05)
    assert lower == pytest.approx(math.exp(d[4])) and upper == pytest.approx(math.exp(d[20]))
    assert lower < hodges_lehmann_ratio(cand, base) < upper
    assert ratio_bounds([1.0, 2.0], [1.0, 2.0], 0.05) == (None, None)  # 2 a side: P(U = 0) = 1/6
    # coverage: a true +10% is above the one-sided 95% upper bound in at most ~5% of samples
    rng = random.Random(0)
    misses = 0
    for _ in range(400):
        c = [1.1 * math.exp(rng.gauss(0, 0.04)) for _ in range(10)]
        b = [math.exp(rng.gauss(0, 0.04)) for _ in range(10)]
        misses += ratio_bounds(c, b, 0.05)[1] < 1.1
    assert misses / 400 <= 0.08


def _replay(factor: float, start: int, per_side: int = 10) -> dict:
    cand = A[start : start + per_side] * factor
    base = B[start : start + per_side]
    return compare_processes(cand, base, candidate_n=40 * per_side, baseline_n=40 * per_side)


@pytest.mark.parametrize("per_side", [10, 20])
def test_replay_of_recorded_medians_at_plus_10_and_plus_5_percent(per_side):
    """Every window of the recorded processes, as a first look (10 a side) and an extended one (20)."""
    starts = range(len(A) - per_side + 1)
    aa = [_replay(1.0, s, per_side) for s in starts]
    plus5 = [_replay(1.05, s, per_side) for s in starts]
    plus10 = [_replay(1.10, s, per_side) for s in starts]
    # an artifact against itself never fails the gate
    assert not [r for r in aa if r["verdict"] == "regressed"]
    # a slowdown that matters (+5% is the limit, +10% twice it) is never called unchanged
    assert not [r for r in plus5 + plus10 if r["verdict"] in ("unchanged", "improved")]
    # what the old rule (unchanged whenever the point estimate is under +5%) passed here
    if per_side == 10:
        old_passes = [r for r in plus10 if r["ratio"] < 1.05]
        assert old_passes, "the recording no longer holds the case the upper-bound rule exists for"
        assert all(r["verdict"] == "inconclusive" and r["ratio_upper"] > 1.05 for r in old_passes)
    # more processes decide more: all 30 a side detect the +10%
    assert compare_processes(A * 1.10, B, candidate_n=1200, baseline_n=1200)["verdict"] == "regressed"


def test_a_replayed_slowdown_measured_under_5_percent_does_not_pass_the_gate(tmp_path):
    start = next(s for s in range(21) if _replay(1.10, s)["ratio"] < 1.05)
    budgets = dict.fromkeys(FAST_TARGET["budgets"])
    target_file = write_target(tmp_path, budgets={**budgets, "artifact_size_mb": 50})
    target = load_target(target_file)
    cand, base = list(A[start : start + 10] * 1.10), list(B[start : start + 10])
    entry = {
        "role": "candidate",
        "name": "onnx-int8",
        "format": "onnx",
        "precision": "int8",
        "task": "sequence-classification",
        "size_mb": 10.0,
        "status": "measured",
        "latency": {"n": 400, "p50_ms": 5.0, "rounds": [{"n": 40, "median_ms": m} for m in cand]},
    }
    report = {
        "report_version": 1,
        "kind": "edgedistill-bench-report",
        "target": {"name": target.name, "config": json.loads(target.model_dump_json())},
        "artifacts": [entry],
        "comparisons": [
            {
                "candidate": "onnx-int8",
                "baseline": "onnx-int8-main",
                "candidate_samples_ms": [5.0] * 400,
                "baseline_samples_ms": [5.0] * 400,
                "candidate_round_medians_ms": cand,
                "baseline_round_medians_ms": base,
            }
        ],
    }
    result = gate(report, target)
    [check] = [c for c in result.checks if c.budget.startswith("regression_latency")]
    assert check.status == "inconclusive" and "upper bound" in check.message and check.value < 1.05
    assert result.exit_code == 3
    assert gate(report, target, allow_inconclusive=True).exit_code == 0
