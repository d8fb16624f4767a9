"""Fuzz the GGUF header reader and the manifest reader with hypothesis: N inputs each, time and peak RSS.

Runs the fuzz targets of tests/hostile/_artifacts_fuzz.py (random bytes, mutated valid files,
manifests with fields swapped for random JSON) until each has run ``--examples`` inputs; any
exception other than ArtifactError is a failure (exit 1, the input printed). Prints, per reader,
the examples run, the seconds taken and the process's peak RSS.

    python benchmarks/fuzz_artifacts.py --examples 10000
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

from common import run_main

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "hostile"), str(ROOT / "tests")]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(name: str, target, strategy, examples: int) -> dict:
    from hypothesis import HealthCheck, given, settings

    count = [0]

    @settings(
        max_examples=examples,
        deadline=1000,
        database=None,
        suppress_health_check=list(HealthCheck),
        derandomize=False,
    )
    @given(strategy)
    def fuzz(data: bytes) -> None:
        count[0] += 1
        target(data)

    start = time.perf_counter()
    fuzz()
    return {
        "reader": name,
        "examples_run": count[0],
        "seconds": round(time.perf_counter() - start, 2),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=10_000, help="inputs per reader (default 10000)")
    ap.add_argument("--only", choices=["gguf", "manifest"], help="fuzz one reader only")
    args = ap.parse_args()

    import test_artifacts_fuzz as t
    from _artifacts_fuzz import fuzz_gguf, fuzz_manifest
    from hypothesis import strategies as st

    readers = {
        "gguf": (fuzz_gguf, st.one_of(st.binary(max_size=512), t._mutate(t.SEED_GGUF))),
        "manifest": (
            fuzz_manifest,
            st.one_of(st.binary(max_size=256), t._mutate(t.SEED_MANIFEST), t._field_swaps()),
        ),
    }
    results = []
    for name, (target, strategy) in readers.items():
        if args.only and name != args.only:
            continue
        results.append(run(name, target, strategy, args.examples))
        print(json.dumps(results[-1]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
