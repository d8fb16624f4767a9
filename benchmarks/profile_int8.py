"""Where the time goes in our ONNX int8 model vs dynamic int8 (issue: export).

Our int8 ONNX (static QDQ graph from the NNCF QAT ranges, weights folded to int8) is slower at
batch 1 than ORT/optimum dynamic int8 of the same float student. For the four ONNX artifacts of
`benchmarks/export_sst2.py` (ours QDQ int8, ours fp32, ORT quantize_dynamic, optimum
ORTQuantizer avx2 dynamic) this measures, with ONNX Runtime on CPU (2 intra-op threads,
graph optimization level ALL):

1. the op-type counts of the graph ORT actually runs (dumped with
   ``SessionOptions.optimized_model_filepath``): what QDQ / MatMulInteger was fused into and
   what stayed unfused;
2. ORT's built-in profiler, one model loaded at a time (so no other session's idle worker threads
   spin beside it), over SST-2 dev sentences (tokenized as in export_sst2.py) and over a fixed
   128-token input: kernel time per op type (total ms, ms per run, share) and the p50 of ORT's own
   ``model_run`` events.

3. end to end, in fresh processes: the bench harness measures ours against optimum's int8 as its
   baseline (``edgedistill.bench.bench(ours, cpu, baseline_artifact=optimum)``: 10 alternating
   fresh processes a side, the gate's comparison), at 32 and at 128 tokens.

Results go to ``bench-results/profile_int8/summary.{json,md}`` (and the optimized graphs and raw
profiler traces next to them).

    .venv/bin/python benchmarks/profile_int8.py [--profile-sentences 200] [--fixed-iters 100]
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from common import DEFAULT_DATA, RESULTS, ROOT, parser, run_main, write_summary

EXPORTS = RESULTS / "export_sst2"
THREADS = 2

MODELS = {
    "ours QDQ int8": EXPORTS / "ours" / "onnx-int8",
    "ours fp32": EXPORTS / "ours" / "onnx-fp32",
    "ORT quantize_dynamic int8": EXPORTS / "ort-dynamic" / "onnx-int8",
    "optimum avx2 dynamic int8": EXPORTS / "optimum" / "int8",
}


def model_file(folder: Path) -> Path:
    files = sorted(folder.glob("*.onnx"))
    if not files:
        raise FileNotFoundError(f"no .onnx file in {folder}")
    return files[0]


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def session_options(optimized_path: Path | None = None, profile_prefix: Path | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if optimized_path is not None:
        opts.optimized_model_filepath = str(optimized_path)
    if profile_prefix is not None:
        opts.enable_profiling = True
        opts.profile_file_prefix = str(profile_prefix)
    return opts


class OrtModel:
    def __init__(self, path: Path, opts):
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]

    def __call__(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, {n: feed[n] for n in self.names})[0]


def read_sentences(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as fh:
        header = fh.readline().rstrip("\n").split("\t")
        col = header.index("sentence")
        return [line.rstrip("\n").split("\t")[col] for line in fh]


def sentence_feeds(tokenizer, texts: list[str]) -> list[dict[str, np.ndarray]]:
    """Batch-1 feeds exactly as benchmarks/export_sst2.py builds them (no padding, max 128)."""
    from edgedistill.export.parity import encode

    return [encode(tokenizer, [t], 128) for t in texts]


def fixed_feed(tokenizer, texts: list[str], length: int = 128) -> dict[str, np.ndarray]:
    """One input of exactly ``length`` tokens: dev sentences joined, truncated."""
    from edgedistill.export.parity import encode

    feed = encode(tokenizer, [" ".join(texts)], length)
    assert feed["input_ids"].shape == (1, length), feed["input_ids"].shape
    return feed


def optimized_op_counts(path: Path) -> dict[str, int]:
    import onnx

    model = onnx.load(str(path))
    counts = Counter(
        n.op_type if n.domain in ("", "ai.onnx") else f"{n.op_type} ({n.domain})" for n in model.graph.node
    )
    return dict(sorted(counts.items()))


def profile_breakdown(path: Path, prefix: Path, feeds: list[dict], warmup: int) -> dict:
    """Kernel time by op type from ORT's profiler; the first ``warmup`` runs are left out."""
    model = OrtModel(path, session_options(profile_prefix=prefix))
    for feed in feeds[:warmup]:
        model(feed)
    for feed in feeds:
        model(feed)
    trace_file = Path(model.session.end_profiling())
    events = json.loads(trace_file.read_text())
    runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])[warmup:]
    start = runs[0]["ts"]
    by_op: dict[str, float] = defaultdict(float)
    by_node: dict[str, float] = defaultdict(float)
    node_op: dict[str, str] = {}
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time") or e["ts"] < start:
            continue
        op = e["args"].get("op_name", "?")
        node = e["name"][: -len("_kernel_time")]
        by_op[op] += e["dur"] / 1e3
        by_node[node] += e["dur"] / 1e3
        node_op[node] = op
    total = sum(by_op.values())
    n = len(runs)
    run_ms = [e["dur"] / 1e3 for e in runs]
    ops = [
        {
            "op": op,
            "total_ms": round(ms, 2),
            "ms_per_run": round(ms / n, 3),
            "share_pct": round(100 * ms / total, 1),
        }
        for op, ms in sorted(by_op.items(), key=lambda kv: -kv[1])
    ]
    nodes = [
        {"node": node, "op": node_op[node], "ms_per_run": round(ms / n, 4)}
        for node, ms in sorted(by_node.items(), key=lambda kv: -kv[1])
    ]
    return {
        "trace": str(trace_file.relative_to(ROOT)),
        "runs": n,
        "kernel_ms_per_run": round(total / n, 3),
        "model_run_p50_ms": round(statistics.median(run_ms), 3),
        "ops": ops,
        "top_nodes": nodes[:30],
    }


def fresh_process_comparison(out: Path) -> dict:
    """Ours vs optimum's int8 through the bench harness, per sequence length: the gate's verdict."""
    from edgedistill.bench import bench
    from edgedistill.targets import load_target

    results = {}
    for length in (32, 128):
        print(f"fresh-process comparison at {length} tokens ...", flush=True)
        target = load_target("cpu", {"runtime.threads": THREADS, "workload.sequence_lengths": [length]})
        report = bench(
            [MODELS["ours QDQ int8"]],
            target,
            baseline_artifact=MODELS["optimum avx2 dynamic int8"],
            out=out / f"bench_seq{length}.json",
        )
        comp = report["comparisons"][0]
        results[f"seq{length}"] = {
            "candidate_round_medians_ms": comp["candidate_round_medians_ms"],
            "baseline_round_medians_ms": comp["baseline_round_medians_ms"],
            **{k: comp["result"][k] for k in ("ratio", "p_slower", "p_faster", "verdict", "reason")},
        }
    return results


def markdown(summary: dict, top: int) -> str:
    names = list(summary["models"])
    lines = [
        f"ONNX Runtime {summary['onnxruntime']}, CPUExecutionProvider, {THREADS} intra-op threads, "
        "graph optimization ALL, batch 1.",
        "",
        "## Op counts of the optimized graph (what ORT runs)",
        "",
    ]
    all_ops = sorted({op for m in summary["models"].values() for op in m["optimized_op_counts"]})
    lines += ["| op | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for op in all_ops:
        cells = [str(summary["models"][n]["optimized_op_counts"].get(op, "")) for n in names]
        lines.append(f"| {op} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Time per run (ORT profiler, one model loaded at a time)",
        "",
        f"Dev sentences: {summary['sentences']['count']} (mean {summary['sentences']['mean_tokens']:.1f} "
        "tokens); fixed: one 128-token input.",
        "",
        "| model | sentences: model_run p50 ms | sentences: kernel ms/run | 128 tok: model_run p50 ms "
        "| 128 tok: kernel ms/run |",
        "|---|---|---|---|---|",
    ]
    for n in names:
        p, f = summary["models"][n]["profile"], summary["models"][n]["profile_fixed_128"]
        lines.append(
            f"| {n} | {p['model_run_p50_ms']:.2f} | {p['kernel_ms_per_run']:.2f} | "
            f"{f['model_run_p50_ms']:.2f} | {f['kernel_ms_per_run']:.2f} |"
        )
    if summary.get("fresh_process_comparison"):
        lines += [
            "",
            "## End to end: ours vs optimum int8 in alternating fresh processes (bench harness)",
            "",
            "| tokens | ours: median of process medians | optimum | ratio (Hodges-Lehmann) | p (slower) | verdict |",
            "|---|---|---|---|---|---|",
        ]
        for label, c in summary["fresh_process_comparison"].items():
            lines.append(
                f"| {label[3:]} | {statistics.median(c['candidate_round_medians_ms']):.2f} ms | "
                f"{statistics.median(c['baseline_round_medians_ms']):.2f} ms | {c['ratio']:.3f} | "
                f"{c['p_slower']:.2g} | {c['verdict']} |"
            )
    for key, what in (("profile", "dev sentences"), ("profile_fixed_128", "128 tokens")):
        lines += ["", f"## Kernel time by op type, {what} (top {top})", ""]
        for n in names:
            prof = summary["models"][n][key]
            lines += [
                f"### {n}",
                "",
                f"{prof['runs']} runs profiled; kernel time {prof['kernel_ms_per_run']:.2f} ms/run, "
                f"model_run p50 {prof['model_run_p50_ms']:.2f} ms.",
                "",
                "| op | total ms | ms/run | share |",
                "|---|---|---|---|",
            ]
            for row in prof["ops"][:top]:
                lines.append(
                    f"| {row['op']} | {row['total_ms']:.1f} | {row['ms_per_run']:.3f} | {row['share_pct']:.1f}% |"
                )
            lines.append("")
    return "\n".join(lines)


def main() -> int:
    ap = parser(__doc__, "profile_int8")
    ap.add_argument(
        "--data", type=Path, default=DEFAULT_DATA / "dev.tsv", help="SST-2 dev.tsv, or the folder holding it"
    )
    ap.add_argument("--profile-sentences", type=int, default=200, help="dev sentences profiled")
    ap.add_argument("--fixed-iters", type=int, default=100, help="runs of the fixed 128-token input")
    ap.add_argument(
        "--no-bench", dest="bench", action="store_false", help="skip the fresh-process comparison"
    )
    ap.add_argument("--top", type=int, default=12, help="op types listed per model in summary.md")
    args = ap.parse_args()
    if args.data.is_dir():
        args.data = args.data / "dev.tsv"

    import onnxruntime as ort
    from transformers import AutoTokenizer

    out = args.out
    (out / "optimized").mkdir(parents=True, exist_ok=True)
    (out / "traces").mkdir(parents=True, exist_ok=True)
    paths = {name: model_file(folder) for name, folder in MODELS.items()}
    tokenizer = AutoTokenizer.from_pretrained(str(MODELS["ours QDQ int8"]))
    texts = read_sentences(args.data)
    feeds = sentence_feeds(tokenizer, texts[: args.profile_sentences])
    fixed = fixed_feed(tokenizer, texts[:50])

    results = {}
    for name, path in paths.items():
        # 1. the graph ORT actually runs (dumping it does not change the run)
        optimized = out / "optimized" / f"{slug(name)}.onnx"
        OrtModel(path, session_options(optimized_path=optimized))
        results[name] = {
            "model": str(path.relative_to(ROOT)),
            "optimized_op_counts": optimized_op_counts(optimized),
        }
        # 2. profiler, this model alone
        print(f"profiling {name} ...", flush=True)
        results[name]["profile"] = profile_breakdown(path, out / "traces" / slug(name), feeds, warmup=10)
        results[name]["profile_fixed_128"] = profile_breakdown(
            path, out / "traces" / f"{slug(name)}_128", [fixed] * args.fixed_iters, warmup=10
        )

    comparisons = fresh_process_comparison(out) if args.bench else {}

    summary = {
        "onnxruntime": ort.__version__,
        "threads": THREADS,
        "sentences": {
            "count": len(feeds),
            "mean_tokens": float(np.mean([f["input_ids"].shape[1] for f in feeds])),
        },
        "models": results,
        "fresh_process_comparison": comparisons,
    }
    write_summary(out, summary, markdown(summary, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
