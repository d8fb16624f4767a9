"""What each runtime computes on this CPU generation, measured on the real MiniLM encoder (issue 12).

One run, on whatever CPU it finds (the figures are labelled with its model and ISA flags):

1. `edgedistill export` of all-MiniLM-L6-v2 (feature-extraction) to OpenVINO fp32 / int8 (weight-only)
   / int4 (weight-only), ONNX fp32 / int8 (dynamic) and GGUF q8_0: each manifest's file-parity figures
   (declared numerics) next to its as-deployed ones (the runtime's defaults on this host), and what
   the runtime read back.
2. OpenVINO's dynamic int8 quantization of activations on the weight-only IRs: f32 with
   ``DYNAMIC_QUANTIZATION_GROUP_SIZE`` 32 (OpenVINO's default) vs 0 (what the IR stores).
3. ``ONEDNN_MAX_CPU_ISA``: whether capping oneDNN's ISA makes OpenVINO behave like an older CPU.
4. llama.cpp with and without its extra weight buffers (AMX repack on AMX CPUs), in fresh processes
   (one may crash): does it run, and does the embedding change.
5. Latency of the fp32 IR in f32 vs in OpenVINO's native precision, `edgedistill bench` with the
   artifact measured against itself as baseline, alternating fresh processes (precision policy
   `artifact` for the baseline, `native` for the candidate).

    python benchmarks/isa_numerics.py [--out bench-results/isa_numerics] [--rounds 6]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from common import minilm, parser, run_main, write_summary

THREADS = 2


def export_all(out: Path) -> dict[str, dict]:
    from edgedistill.export import ExportConfig, export

    manifests = {}
    plans = [
        # int4 weight-only is meant for decoders: MiniLM keeps a worst-sentence cosine of ~0.84
        (
            ["openvino"],
            ["fp32", "int8", "int4"],
            {"int8_method": "dynamic", "tolerances": {"int4": {"min_cosine": 0.8}}},
        ),
        (["onnx"], ["fp32", "int8"], {"int8_method": "dynamic"}),
        (["gguf"], ["q8_0"], {}),
    ]
    for formats, precisions, extra in plans:
        missing = [p for p in precisions if not (out / f"{formats[0]}-{p}" / "manifest.json").is_file()]
        if missing:
            export(
                minilm(),
                out,
                ExportConfig(
                    formats=formats, precisions=missing, task="feature-extraction", parity_samples=24, **extra
                ),
            )
        for p in precisions:
            manifests[f"{formats[0]}-{p}"] = json.loads(
                (out / f"{formats[0]}-{p}" / "manifest.json").read_text()
            )
    return manifests


def _figures(parity: dict) -> dict:
    out = {o["name"]: o for o in parity["outputs"] if o.get("checked", True)}
    emb = out.get("sentence_embedding") or next(iter(out.values()))
    return {
        "ran": parity["runtime"].get("ran"),
        "max_abs_diff": emb["max_abs_diff"],
        "max_rel_diff": emb.get("max_rel_diff"),
        "cosine_min": emb.get("cosine_min"),
        "passed": parity.get("passed"),
    }


def parity_table(manifests: dict[str, dict]) -> list[dict]:
    rows = []
    for name, m in manifests.items():
        parity = m["parity"]
        deployed = parity.get("deployed")
        rows.append(
            {
                "artifact": name,
                "declared": _figures(parity),
                "deployed": _figures(deployed) if deployed else "same settings (the runtime's defaults)",
                "read_back": parity["runtime"].get("read_back"),
            }
        )
    return rows


def dynamic_quantization(out: Path) -> list[dict]:
    import openvino as ov

    from edgedistill import numerics
    from edgedistill.export.config import ExportConfig
    from edgedistill.export.core import inspect_student
    from edgedistill.export.parity import encode, parity_sentences

    student = inspect_student(minilm(), "feature-extraction")
    tokenizer = student.load_tokenizer()
    feeds = [encode(tokenizer, [s], 128) for s in parity_sentences(ExportConfig(parity_samples=24))]
    core = ov.Core()
    rows = []
    for name in ("openvino-int8", "openvino-int4"):
        xml = str(out / name / "openvino_model.xml")
        off = core.compile_model(xml, "CPU", numerics.OPENVINO_FILE_PROPERTIES)
        on = core.compile_model(
            xml, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "32"}
        )
        names = [p.get_any_name() for p in off.inputs]
        diffs, rels = [], []
        for feed in feeds:
            a = off({n: feed[n] for n in names})[0]
            b = on({n: feed[n] for n in names})[0]
            diffs.append(float(np.abs(a - b).max()))
            rels.append(diffs[-1] / float(np.abs(a).max()))
        rows.append(
            {
                "artifact": name,
                "ran_with_dynamic_quantization": numerics.openvino_ran(numerics.openvino_read_back(on)),
                "max_abs_diff_vs_group_size_0": max(diffs),
                "max_rel_diff_vs_group_size_0": max(rels),
            }
        )
    return rows


_CAP_PROBE = """
import json, numpy as np, openvino as ov
from edgedistill import numerics
core = ov.Core()
xml = {xml!r}
feed = {{p.get_any_name(): np.ones((1, 16), np.int64) for p in core.read_model(xml).inputs}}
result = {{"default_precision": numerics.openvino_precision_name(core.get_property("CPU", "INFERENCE_PRECISION_HINT"))}}
try:
    core.compile_model(xml, "CPU")
    result["default_compile"] = "ok"
except RuntimeError as exc:
    result["default_compile"] = "fails: " + str(exc).strip().splitlines()[-1][:120]
try:
    a = core.compile_model(xml, "CPU", numerics.OPENVINO_FILE_PROPERTIES)(feed)[0]
    b = core.compile_model(xml, "CPU", {{"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "32"}})(feed)[0]
    result["dynamic_quantization_moves_max_abs"] = float(np.abs(a - b).max())
except RuntimeError as exc:
    result["dynamic_quantization_moves_max_abs"] = "compile fails: " + str(exc).strip().splitlines()[-1][:120]
print(json.dumps(result))
"""


def onednn_cap(out: Path) -> list[dict]:
    rows = []
    xml = str(out / "openvino-int8" / "openvino_model.xml")
    for cap in (None, "AVX512_CORE_AMX", "AVX512_CORE_VNNI", "AVX512_CORE", "AVX2_VNNI", "AVX2"):
        env = dict(os.environ)
        env.pop("ONEDNN_MAX_CPU_ISA", None)
        if cap:
            env["ONEDNN_MAX_CPU_ISA"] = cap
        proc = subprocess.run(
            [sys.executable, "-c", _CAP_PROBE.format(xml=xml)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        row = {"ONEDNN_MAX_CPU_ISA": cap or "(unset)"}
        row.update(json.loads(proc.stdout) if proc.returncode == 0 else {"error": proc.stderr[-300:]})
        rows.append(row)
    return rows


_LLAMA_PROBE = """
import json, numpy as np
from edgedistill import numerics
from edgedistill.export.gguf import GGUFRunner
numerics.llama_cpp_extra_buffers_default = lambda: {extra}
with GGUFRunner({path!r}, task="feature-extraction") as r:
    print(json.dumps({{"embedding": r.embed_ids(r.tokenize("The quick brown fox jumps over the lazy dog.")).tolist(),
                      "system_info": r.system_info()}}))
"""


def llama_cpp_buffers(out: Path) -> dict:
    path = str(out / "gguf-q8_0" / "model.gguf")
    if not Path(path).is_file():
        path = str(next((out / "gguf-q8_0").glob("*.gguf")))
    results = {}
    for extra in (False, True):
        proc = subprocess.run(
            [sys.executable, "-c", _LLAMA_PROBE.format(extra=extra, path=path)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        key = "extra_buffers_on" if extra else "extra_buffers_off"
        if proc.returncode == 0:
            results[key] = json.loads(proc.stdout.strip().splitlines()[-1])
        else:
            results[key] = {
                "exit_code": proc.returncode,
                "crashed": proc.returncode < 0,
                "stderr": proc.stderr[-300:],
            }
    on, off = results["extra_buffers_on"], results["extra_buffers_off"]
    if "embedding" in on and "embedding" in off:
        a, b = np.array(on["embedding"]), np.array(off["embedding"])
        results["max_abs_diff_on_vs_off"] = float(np.abs(a - b).max())
    for r in (on, off):
        r.pop("embedding", None)
    return results


def latency(out: Path, rounds: int) -> dict:
    from edgedistill.bench import bench
    from edgedistill.targets import load_target

    target = load_target(
        "cpu",
        {
            "runtime.threads": THREADS,
            "runtime.precision_policy": "artifact",
            "measurement.compare_rounds": rounds,
            "measurement.max_compare_rounds": rounds,
            "measurement.min_seconds": 2.0,
        },
    )
    fp32 = out / "openvino-fp32"
    report = bench([fp32], target, baseline_artifact=fp32, candidate_overrides={"precision_policy": "native"})
    (comparison,) = report["comparisons"]
    return {
        "candidate": comparison["candidate_run"]["label"] + " [policy native]",
        "baseline": comparison["baseline_run"]["label"] + " [policy artifact]",
        "candidate_p50_ms": float(np.median(comparison["candidate_round_medians_ms"])),
        "baseline_p50_ms": float(np.median(comparison["baseline_round_medians_ms"])),
        "ratio_native_over_artifact": comparison["result"]["ratio"],
        "processes_a_side": comparison["candidate_rounds"],
        "threads": THREADS,
        "sequence_length": target.workload.sequence_lengths,
    }


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def markdown(summary: dict) -> str:
    cpu = summary["host"]
    lines = [
        f"# Numerics by ISA on {cpu['model']} ({cpu['generation']})",
        "",
        f"ISA flags: {', '.join(cpu['isa_flags'])}. Command: `python benchmarks/isa_numerics.py`.",
        "",
        "## 1. Parity of all-MiniLM-L6-v2 artifacts: declared numerics vs the runtime's defaults",
        "",
        "| artifact | ran (declared) | max abs | max rel | cos min | ran (defaults) | max abs | max rel | cos min |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in summary["parity"]:
        d, p = r["declared"], r["deployed"]
        if isinstance(p, dict):
            tail = f"{p['ran']} | {_fmt(p['max_abs_diff'])} | {_fmt(p['max_rel_diff'])} | {_fmt(p['cosine_min'])}"
        else:
            tail = "same settings | | |"
        lines.append(
            f"| {r['artifact']} | {d['ran']} | {_fmt(d['max_abs_diff'])} | {_fmt(d['max_rel_diff'])} | "
            f"{_fmt(d['cosine_min'])} | {tail} |"
        )
    lines += [
        "",
        "## 2. OpenVINO dynamic int8 activations on weight-only IRs (f32, group 32 vs 0)",
        "",
        "| artifact | ran | max abs diff | max rel diff |",
        "|---|---|---:|---:|",
    ]
    for r in summary["dynamic_quantization"]:
        lines.append(
            f"| {r['artifact']} | {r['ran_with_dynamic_quantization']} | {_fmt(r['max_abs_diff_vs_group_size_0'])} "
            f"| {_fmt(r['max_rel_diff_vs_group_size_0'])} |"
        )
    lines += [
        "",
        "## 3. ONEDNN_MAX_CPU_ISA and OpenVINO (int8 weight-only MiniLM IR)",
        "",
        "| ONEDNN_MAX_CPU_ISA | default precision | default compile | dynamic quantization moves (max abs) |",
        "|---|---|---|---|",
    ]
    for r in summary["onednn_cap"]:
        lines.append(
            f"| {r['ONEDNN_MAX_CPU_ISA']} | {r.get('default_precision', '-')} | {r.get('default_compile', r.get('error', '-'))} "
            f"| {_fmt(r.get('dynamic_quantization_moves_max_abs', '-'))} |"
        )
    ll = summary["llama_cpp"]
    lines += [
        "",
        "## 4. llama.cpp extra weight buffers (GGUF q8_0 MiniLM)",
        "",
        f"- off: {json.dumps({k: v for k, v in ll['extra_buffers_off'].items() if k != 'system_info'})}",
        f"- on: {json.dumps({k: v for k, v in ll['extra_buffers_on'].items() if k != 'system_info'})}",
        f"- max |diff| of the embedding, on vs off: {_fmt(ll.get('max_abs_diff_on_vs_off', '-'))}",
        f"- llama.cpp system info: `{ll['extra_buffers_off'].get('system_info')}`",
    ]
    lat = summary["latency"]
    lines += [
        "",
        "## 5. OpenVINO fp32 IR latency: native precision vs declared f32",
        "",
        f"{lat['processes_a_side']} alternating fresh processes a side, {lat['threads']} threads, "
        f"{lat['sequence_length']} tokens: {lat['candidate']} p50 {lat['candidate_p50_ms']:.2f} ms vs "
        f"{lat['baseline']} p50 {lat['baseline_p50_ms']:.2f} ms (ratio {lat['ratio_native_over_artifact']:.3f}).",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    ap = parser(__doc__, "isa_numerics")
    ap.add_argument("--rounds", type=int, default=6, help="fresh processes a side for the latency comparison")
    args = ap.parse_args()
    from edgedistill import host

    artifacts = args.out / "artifacts"
    manifests = export_all(artifacts)
    summary = {
        "host": host.cpu_summary(),
        "parity": parity_table(manifests),
        "dynamic_quantization": dynamic_quantization(artifacts),
        "onednn_cap": onednn_cap(artifacts),
        "llama_cpp": llama_cpp_buffers(artifacts),
        "latency": latency(artifacts, args.rounds),
    }
    write_summary(args.out, summary, markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
