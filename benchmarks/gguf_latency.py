"""Where a GGUF encoder's time goes: the harness, llama.cpp's settings, or llama.cpp's kernels (issue 13, part 2).

The encoder is the demo's shape: the first 3 layers of all-MiniLM-L6-v2 (384 wide), exported by
`edgedistill export` to GGUF fp32 / fp16 / q8_0 / q4_0 and ONNX fp32 / int8. Each measurement runs
in a fresh process on ONE thread and counts the CPU time of that process (`time.process_time`), not
wall time: on a shared 2-core machine wall time moves by 2x with the neighbours' load, CPU time by a
few percent. Variants alternate round by round.

1. Harness overhead: the bench runtime's own steps around llama.cpp's decode (clearing the context,
   filling the batch, reading the pooled embedding), timed separately from the decode.
2. llama.cpp settings on the same file: extra weight buffers (CPU repack; AMX on AMX CPUs) on/off,
   flash attention on/off.
3. GGUF types against ONNX Runtime on the same 128 tokens.
4. With ``--llama-bench PATH`` (llama.cpp's own `llama-bench`, built from the llama.cpp that
   llama-cpp-python vendors): its prompt processing of the same file and 128 tokens with the same
   settings (`--repack` = extra buffers, `-fa`), as CPU ms per pass, against the harness's.

    python benchmarks/gguf_latency.py [--out bench-results/gguf_latency] [--rounds 3] [--llama-bench PATH]
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import minilm, parser, run_main, write_summary

TOKENS = 128
GGUF_TYPES = ("fp32", "fp16", "q8_0", "q4_0")
ONNX_TYPES = ("fp32", "int8")


def build_student(folder: Path) -> Path:
    """The first 3 layers of MiniLM (the demo student's shape), saved as a model folder."""
    if (folder / "config.json").is_file():
        return folder
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(minilm())
    model.encoder.layer = model.encoder.layer[:3]
    model.config.num_hidden_layers = 3
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm()).save_pretrained(folder)
    return folder


def export(student: Path, out: Path) -> None:
    wanted = [f"gguf-{p}" for p in GGUF_TYPES] + [f"onnx-{p}" for p in ONNX_TYPES]
    if all((out / w / "manifest.json").is_file() for w in wanted):
        return
    for fmt, precisions in (("gguf", GGUF_TYPES), ("onnx", ONNX_TYPES)):
        cmd = [sys.executable, "-m", "edgedistill", "export", str(student), "--format", fmt]
        cmd += ["--precision", ",".join(precisions), "--task", "feature-extraction", "--out", str(out)]
        # llama.cpp's float GGUFs differ from torch by ~1.5e-3 on these (unnormalized) pretrained
        # embeddings (cosine 1.00000): the latency study does not need the 1e-3 fp32 bound.
        cmd += ["--set", "tolerances.fp32.max_abs_diff=0.01"]
        subprocess.run(cmd, check=True, stderr=sys.stderr)  # its summary and errors: the console


# --------------------------------------------------------------------------------------------
# One measurement, in a fresh process (`python gguf_latency.py --child JSON`)
# --------------------------------------------------------------------------------------------


def child(spec: dict) -> dict:
    iterations, warmup = spec["iterations"], spec["warmup"]
    if spec["kind"] == "gguf":
        import llama_cpp

        from edgedistill import numerics

        with numerics.llama_cpp_extra_buffers(spec["extra_buffers"]):
            llm = llama_cpp.Llama(
                model_path=spec["path"], n_ctx=512, n_batch=512, n_ubatch=512, n_threads=spec["threads"],
                n_threads_batch=spec["threads"], embedding=True, flash_attn=spec["flash_attn"],
                pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN, verbose=False,
            )  # fmt: skip
        ids = llm.tokenize(b"the quick brown fox jumps over the lazy dog " * 30, add_bos=True)
        ids = ids[: TOKENS - 1] + ids[-1:]
        prep, decode, fetch, wall = [], [], [], []
        for i in range(warmup + iterations):
            w0 = time.perf_counter()
            t0 = time.process_time()
            llm._ctx.kv_cache_clear()  # the bench runtime's steps (bench/runtimes/llamacpp.py)
            llm._batch.reset()
            llm._batch.add_sequence(ids, 0, True)
            t1 = time.process_time()
            llm._ctx.decode(llm._batch)
            t2 = time.process_time()
            llm._batch.reset()
            llama_cpp.llama_get_embeddings_seq(llm._ctx.ctx, 0)[: llm.n_embd()]
            t3 = time.process_time()
            if i >= warmup:
                prep.append(t1 - t0), decode.append(t2 - t1), fetch.append(t3 - t2)
                wall.append(time.perf_counter() - w0)
        return {
            "cpu_ms": 1e3 * float(np.median(np.add(np.add(prep, decode), fetch))),
            "decode_ms": 1e3 * float(np.median(decode)),
            "harness_ms": 1e3 * float(np.median(np.add(prep, fetch))),
            "wall_ms": 1e3 * float(np.median(wall)),
        }
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = spec["threads"]
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(spec["path"], options, providers=["CPUExecutionProvider"])
    feed = {i.name: np.ones((1, TOKENS), dtype=np.int64) for i in session.get_inputs()}
    times, wall = [], []
    for i in range(warmup + iterations):
        w0 = time.perf_counter()
        t0 = time.process_time()
        session.run(None, feed)
        if i >= warmup:
            times.append(time.process_time() - t0)
            wall.append(time.perf_counter() - w0)
    return {"cpu_ms": 1e3 * float(np.median(times)), "wall_ms": 1e3 * float(np.median(wall))}


def measure(spec: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _cpu_seconds_of(cmd: list[str]) -> tuple[float, str]:
    """Run ``cmd``; the CPU seconds (user + system) it used, and its stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError((proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1])
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), proc.stdout


def llama_bench(binary: Path, gguf: Path, extra_buffers: bool, flash_attn: bool, threads: int) -> dict:
    """llama.cpp's own prompt processing of the same 128 tokens (`llama-bench -p 128 -n 0 -embd 1`).

    CPU ms per pass: two runs that differ only in repetitions (4 and 24), so loading the model and
    llama-bench's warm-up cancel out: (cpu(24) - cpu(4)) / 20. Wall ms: llama-bench's own average.
    """
    base = [str(binary), "-m", str(gguf), "-p", str(TOKENS), "-n", "0", "-t", str(threads), "-embd", "1"]
    base += ["-fa", "on" if flash_attn else "off", "--repack", "1" if extra_buffers else "0", "-o", "json"]
    try:
        short, _ = _cpu_seconds_of(base + ["-r", "4"])
        long, stdout = _cpu_seconds_of(base + ["-r", "24"])
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        return {"error": str(exc)}
    row = json.loads(stdout[stdout.index("[") :])[0]
    return {
        "cpu_ms": round(1e3 * (long - short) / 20, 3),
        "wall_ms": round(float(row["avg_ns"]) / 1e6, 3),
        "command": " ".join(base + ["-r", "24"]),
    }


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        print(json.dumps(child(json.loads(sys.argv[2]))))
        return 0
    ap = parser(__doc__, out="gguf_latency")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument(
        "--threads", type=int, default=1, help="threads per runtime (CPU time is summed over them)"
    )
    ap.add_argument("--llama-bench", type=Path, default=None, help="llama.cpp's llama-bench binary")
    args = ap.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    student = build_student(out / "student3")
    export(student, out / "artifacts")

    from edgedistill import host, numerics

    variants = []
    for p in GGUF_TYPES:
        for extra in (False, True):
            for fa in (False, True):
                path = out / "artifacts" / f"gguf-{p}" / "model.gguf"
                variants.append(
                    {
                        "kind": "gguf",
                        "precision": p,
                        "path": str(path),
                        "extra_buffers": extra,
                        "flash_attn": fa,
                    }
                )
    for p in ONNX_TYPES:
        variants.append(
            {"kind": "onnx", "precision": p, "path": str(out / "artifacts" / f"onnx-{p}" / "model.onnx")}
        )
    results: dict[int, list[dict]] = {i: [] for i in range(len(variants))}
    for r in range(args.rounds):
        for i, v in enumerate(variants):
            res = measure({**v, "iterations": args.iterations, "warmup": 5, "threads": args.threads})
            results[i].append(res)
            print(f"round {r + 1}/{args.rounds} {v['kind']}-{v['precision']} "
                  f"extra={v.get('extra_buffers')} fa={v.get('flash_attn')}: {res}", flush=True)  # fmt: skip

    rows = []
    for i, v in enumerate(variants):
        ok = [x for x in results[i] if "error" not in x]
        row = {k: v[k] for k in v if k != "path"}
        row["rounds"] = len(ok)
        row["errors"] = [x["error"] for x in results[i] if "error" in x]
        for key in ("cpu_ms", "wall_ms", "decode_ms", "harness_ms"):
            if ok and key in ok[0]:
                row[key] = round(float(np.median([x[key] for x in ok])), 3)
        if args.llama_bench and v["kind"] == "gguf":
            row["llama_bench"] = llama_bench(
                args.llama_bench, Path(v["path"]), v["extra_buffers"], v["flash_attn"], args.threads
            )
        rows.append(row)
    ort_int8 = next(r for r in rows if r["kind"] == "onnx" and r["precision"] == "int8").get("cpu_ms")

    lines = [
        "# GGUF encoder latency: harness vs llama.cpp",
        "",
        f"CPU: {host.read_cpuinfo()[0]} ({host.generation()}); {args.threads} thread(s), {TOKENS} tokens, CPU ms per inference "
        f"(median of {args.rounds} fresh processes x {args.iterations} iterations). Default extra-buffer "
        f"policy here: {'on' if numerics.llama_cpp_extra_buffers_default() else 'off (AMX CPU)'}.",
        "",
        "| artifact | extra buffers | flash attn | CPU ms | of which harness ms | x ORT int8 (CPU) | wall ms | llama-bench pp128 CPU ms |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        name = f"{r['kind']}-{r['precision']}"
        if r.get("cpu_ms") is None:
            lines.append(
                f"| {name} | {r.get('extra_buffers', '-')} | {r.get('flash_attn', '-')} | failed: {r['errors'][:1]} | | | |"
            )
            continue
        lb = r.get("llama_bench", {})
        lbs = f"{lb['cpu_ms']:.2f}" if "cpu_ms" in lb else (str(lb.get("error", "-")) if lb else "-")
        ratio = f"{r['cpu_ms'] / ort_int8:.2f}" if ort_int8 else "-"
        lines.append(
            f"| {name} | {'on' if r.get('extra_buffers') else 'off' if r['kind'] == 'gguf' else '-'} "
            f"| {'on' if r.get('flash_attn') else 'off' if r['kind'] == 'gguf' else '-'} | {r['cpu_ms']:.2f} "
            f"| {r.get('harness_ms', 0):.3f} | {ratio} | {r.get('wall_ms', 0):.2f} | {lbs} |"
        )
    summary = {
        "host": {"cpu": host.read_cpuinfo()[0], "generation": host.generation()},
        "tokens": TOKENS,
        "rows": rows,
    }
    write_summary(out, summary, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
