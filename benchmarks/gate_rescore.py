"""Re-score recorded gate comparisons under other decision rules (not an independent measurement).

Reads the ``runs`` that ``benchmarks/bench_harness.py --sections gate`` recorded (every
comparison's per-process medians) and prints, for the 1-sided Mann-Whitney test at p < 0.05 and
p < 0.10 and for a Welch t-test on log medians, how many A/A comparisons would have been false
alarms and how many injected slowdowns detected, always with the same Hodges-Lehmann effect floor.
It also prints the spread of the baseline process medians. Use it to choose a rule, then confirm
the rule with a fresh run of bench_harness.py: the same data cannot both pick and prove it.

    .venv/bin/python benchmarks/gate_rescore.py [bench-results/bench_harness_gate/summary.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from common import RESULTS, run_main
from scipy.stats import mannwhitneyu, ttest_ind

from edgedistill.bench.stats import hodges_lehmann_ratio

DEFAULT = RESULTS / "bench_harness_gate" / "summary.json"


def flagged(cand: list[float], base: list[float], p_threshold: float, test: str, min_effect: float) -> bool:
    if hodges_lehmann_ratio(cand, base) < 1.0 + min_effect:
        return False
    if test == "mann-whitney":
        p = mannwhitneyu(cand, base, alternative="greater").pvalue
    else:
        p = ttest_ind(np.log(cand), np.log(base), alternative="greater", equal_var=False).pvalue
    return p < p_threshold


def main() -> int:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT
    gate = json.loads(path.read_text())["sections"]["gate"]
    runs, min_effect = gate["runs"], gate["regression"]["min_effect"]
    base = [m for r in runs for m in r["baseline_round_medians_ms"]]
    base += [m for r in runs if r["kind"] == "A/A" for m in r["candidate_round_medians_ms"]]
    q = np.percentile(base, [5, 50, 95])
    print(f"{len(base)} baseline process medians: p5 {q[0]:.1f}, p50 {q[1]:.1f}, p95 {q[2]:.1f} ms")
    for test in ("mann-whitney", "welch-t on log"):
        for p in (0.05, 0.10):
            fa = sum(
                flagged(r["candidate_round_medians_ms"], r["baseline_round_medians_ms"], p, test, min_effect)
                for r in runs
                if r["kind"] == "A/A"
            )
            det = sum(
                flagged(r["candidate_round_medians_ms"], r["baseline_round_medians_ms"], p, test, min_effect)
                for r in runs
                if r["kind"] != "A/A"
            )
            n_aa = sum(r["kind"] == "A/A" for r in runs)
            print(f"{test}, p < {p}: false alarms {fa}/{n_aa}, detected {det}/{len(runs) - n_aa}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
