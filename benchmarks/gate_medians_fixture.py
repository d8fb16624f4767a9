"""Record real process medians of one tiny model for the gate's replay test (`tests/data/gate_process_medians.json`).

One A/A comparison through the real path (`edgedistill.bench.bench` with ``baseline_artifact`` = the
artifact itself: candidate and baseline in alternating fresh processes), measured with the
settings of `bench_harness.py --cheap`: the generated tiny BERT (4 layers x 256 hidden, random
weights, seed 0) exported to ONNX fp32, 1 thread, batch 1, 32 tokens, 5 warmup iterations, at
least 20 iterations and 0.2 s per process, ``--rounds`` processes a side. Both sides ran the same
file, so every median is one draw of this host's process-to-process noise; the replay test
multiplies one side by 1.10 or 1.05 to know the truth it asks the gate about.

    .venv/bin/python benchmarks/gate_medians_fixture.py [--rounds 30] [--out tests/data/gate_process_medians.json]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from bench_harness_measure import build_tiny_bert, find_artifacts, make_target
from common import run_main

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30, help="processes a side")
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "gate_process_medians.json")
    args = ap.parse_args()

    from edgedistill.bench import bench, system_info
    from edgedistill.export import ExportConfig, export
    from edgedistill.io import atomic_write_json

    work = Path(tempfile.mkdtemp(prefix="gate-medians-"))
    model = build_tiny_bert(work / "tiny-bert")
    export(model, work / "artifacts", ExportConfig(formats=["onnx"], precisions=["fp32"]))
    onnx = find_artifacts(work / "artifacts")["onnx"]
    settings = argparse.Namespace(threads=1, seq_len=32)
    measurement = {"warmup_iterations": 5, "min_iterations": 20, "min_seconds": 0.2}
    measurement.update(compare_rounds=args.rounds, max_compare_rounds=args.rounds)
    target = make_target(settings, **measurement)
    started = time.time()
    load_start = os.getloadavg()
    report = bench([onnx], target, baseline_artifact=onnx)
    comparison = report["comparisons"][0]
    cpu = system_info().get("cpu") or {}
    atomic_write_json(
        args.out,
        {
            "what": "process medians (ms) of one A/A comparison: the same ONNX artifact on both sides, "
            "alternating fresh processes (A B, B A, ...)",
            "how": "python benchmarks/gate_medians_fixture.py --rounds " + str(args.rounds),
            "model": "generated BertForSequenceClassification, 4 layers x 256 hidden, random weights, seed 0, "
            "ONNX fp32 (edgedistill export)",
            "measurement": {**measurement, "threads": 1, "batch_size": 1, "sequence_length": 32},
            "host": {"cpu": cpu.get("model"), "generation": cpu.get("generation"), "cpus": os.cpu_count()},
            "load_average_start": [round(x, 2) for x in load_start],
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "wall_seconds": round(time.time() - started, 1),
            "timed_iterations_per_side": [
                len(comparison["candidate_samples_ms"]),
                len(comparison["baseline_samples_ms"]),
            ],
            "a_round_medians_ms": [round(v, 5) for v in comparison["candidate_round_medians_ms"]],
            "b_round_medians_ms": [round(v, 5) for v in comparison["baseline_round_medians_ms"]],
        },
    )
    print(f"wrote {args.out} ({time.time() - started:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
