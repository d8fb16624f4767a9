"""ARM64 parity of exported artifacts under qemu-user (ONNX, OpenVINO, GGUF), next to their x86 figures.

    python benchmarks/arm64_parity.py [--out bench-results/arm64_parity]
    python benchmarks/arm64_parity.py --artifacts runs/demo/run/export --out bench-results/arm64_demo

Without ``--artifacts`` it builds demo-style tiny students (BERT classifier and encoder, 2 layers,
64 dims, WordPiece trained here on the parity sentences; untrained weights, seed 0) and exports
ONNX fp32/int8 and GGUF f32/f16/q8_0/q4_0. With ``--artifacts`` it benches every artifact folder
(one with a ``manifest.json``) under the given folders, e.g. the demo student's. Each is run on the
``arm64-emulated`` device: the aarch64 sysroot (`qemu_sysroot`) and, for GGUF, llama.cpp
cross-built for aarch64 (`qemu_llamacpp`), both built or reused. The table puts each artifact's
export parity on x86 (artifact vs torch, from its manifest) beside its outputs on emulated ARM64 vs
the same artifact and runtime on x86 (the 20 export parity sentences), with the runtime versions
and both CPUs. Latency under emulation is not a device latency: none is reported.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import parser, run_main, write_summary

RUNTIME_KEYS = ("onnxruntime", "openvino", "llama_cpp_python")


def tiny_students(root: Path) -> dict[str, Path]:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    from edgedistill.bench.runtimes.base import WORKLOAD_TEXT
    from edgedistill.export.parity.inputs import BUILTIN_SENTENCES
    from edgedistill.testing import train_bert_wordpiece

    corpus = [*BUILTIN_SENTENCES, *WORKLOAD_TEXT.split(". ")] * 4
    tok = train_bert_wordpiece(corpus, vocab_size=500, model_max_length=128)
    out = {}
    for name, cls in (("classifier", BertForSequenceClassification), ("encoder", BertModel)):
        torch.manual_seed(0)
        cfg = BertConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=256, max_position_embeddings=128, num_labels=2)  # fmt: skip
        folder = root / name
        cls(cfg).save_pretrained(folder)
        tok.save_pretrained(folder)
        out[name] = folder
    return out


def tiny_artifacts(work: Path) -> list[Path]:
    from edgedistill.export import ExportConfig, export

    students = tiny_students(work)
    fast = {"parity_samples": 16, "calib_samples": 8, "int8_method": "dynamic"}
    export(
        students["classifier"],
        work / "cls",
        ExportConfig(formats=["onnx"], precisions=["fp32", "int8"], **fast),
    )
    gguf = ["fp32", "fp16", "q8_0", "q4_0"]
    export(
        students["encoder"], work / "enc", ExportConfig(formats=["gguf"], precisions=gguf, parity_samples=8)
    )
    return [
        work / "cls" / "onnx-fp32",
        work / "cls" / "onnx-int8",
        *(work / "enc" / f"gguf-{p}" for p in gguf),
    ]


def find_artifacts(folders: list[Path]) -> list[Path]:
    found = []
    for folder in folders:
        if (folder / "manifest.json").is_file():
            found.append(folder)
            continue
        found += sorted(
            p.parent
            for p in folder.rglob("manifest.json")
            if not (p.parent.parent / "manifest.json").is_file()
        )
    if not found:
        raise SystemExit(f"no artifact folder (with a manifest.json) under {', '.join(map(str, folders))}")
    return found


def x86_cpu() -> str:
    """This host's CPU: lscpu's model name and the ISA extensions the runtimes pick kernels by."""
    from edgedistill import host

    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=30).stdout
        model = next(
            (ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), None
        )
    except OSError:
        model = None
    isa = [name for name, ok in host.isa().items() if ok]
    return f"{model or host.read_cpuinfo()[0]} ({platform.machine()}; {' '.join(isa)})"


def runtime(info: dict | None) -> str:
    info = info or {}
    key = next((k for k in RUNTIME_KEYS if info.get(k)), None)
    return f"{key.replace('_python', '')} {str(info[key]).split('-')[0]}" if key else "-"


def x86_export_parity(path: Path) -> tuple[str, str]:
    manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    outs = (manifest.get("parity") or {}).get("outputs") or [{}]
    diff = max((o.get("max_abs_diff") or 0.0) for o in outs)
    cos = [
        o.get("cosine_min", o.get("cosine_mean"))
        for o in outs
        if o.get("cosine_min", o.get("cosine_mean")) is not None
    ]
    top1 = outs[0].get("top1_agreement")
    return f"{diff:.3g}", f"{min(cos):.6f}" if cos else (f"top-1 {top1}" if top1 is not None else "-")


def table(report: dict, artifacts: list[Path]) -> list[str]:
    rows = ["| artifact | x86 vs torch: max abs diff | x86 vs torch: cosine min | ARM64 vs x86: max abs diff | ARM64 vs x86: cosine min | top-1 agreement | ARM64 runtime | x86 runtime |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    by_path = {str(Path(e.get("path", "")).resolve()): e for e in report["artifacts"] if e.get("path")}
    for i, path in enumerate(artifacts):
        entry = by_path.get(str(path.resolve())) or report["artifacts"][i]
        x86_diff, x86_cos = x86_export_parity(path)
        p = entry.get("device_parity") or {}
        if entry["status"] != "measured" or p.get("status") != "measured":
            why = entry.get("reason") or p.get("reason") or p.get("status")
            rows.append(
                f"| {entry['name']} | {x86_diff} | {x86_cos} | {entry['status']}: {str(why)[:120]} | | | | |"
            )
            continue
        top1 = p.get("top1_agreement")
        rows.append(
            f"| {entry['name']} | {x86_diff} | {x86_cos} | {p['max_abs_diff']:.3g} | {p['cosine_min']:.6f} | "
            f"{'-' if top1 is None else top1} | {runtime(p.get('device_runtime'))} | {runtime(p.get('host_runtime'))} |"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__, out="arm64_parity")
    ap.add_argument("--artifacts", type=Path, nargs="+", help="artifact folders, or folders holding them")
    ap.add_argument("--qemu-cpu", default=None, help="qemu -cpu model (default: qemu's max)")
    ap.add_argument(
        "--no-llamacpp-build", action="store_true", help="do not cross-build llama.cpp if missing"
    )
    args = ap.parse_args(argv)
    from edgedistill.bench import bench
    from edgedistill.bench.devices import qemu_llamacpp, qemu_sysroot
    from edgedistill.targets import load_target

    times: dict[str, float] = {}
    t = time.monotonic()
    info = qemu_sysroot.sysroot_info() or qemu_sysroot.build()
    lcpp = qemu_llamacpp.build_info()
    if lcpp is None and not args.no_llamacpp_build and qemu_llamacpp.host_version():
        lcpp = qemu_llamacpp.build()
    times["sysroot_and_llamacpp"] = round(time.monotonic() - t, 1)
    t = time.monotonic()
    artifacts = (
        find_artifacts(args.artifacts)
        if args.artifacts
        else tiny_artifacts(Path(tempfile.mkdtemp(prefix="arm64-parity-")))
    )
    times["artifacts"] = round(time.monotonic() - t, 1)
    device = {"kind": "arm64-emulated", **({"qemu_cpu": args.qemu_cpu} if args.qemu_cpu else {})}
    target = load_target("cpu", {"device": device, "measurement.min_iterations": 3, "measurement.min_seconds": 0.1,
                                 "measurement.warmup_iterations": 1, "measurement.timeout_s": 1800,
                                 "runtime.threads": 1, "runtime.cpu_affinity": None})  # fmt: skip
    target.budgets = type(target.budgets)()
    t = time.monotonic()
    report = bench(artifacts, target, out=args.out / "report.json", command=sys.argv)
    times["bench_arm64_emulated"] = round(time.monotonic() - t, 1)
    dev = report["device"]
    build = (dev.get("emulation") or {}).get("llamacpp_build") or {}
    md = [
        f"Emulated ARM64 CPU: {dev.get('cpu_model')} ({dev.get('machine')}; HWCAP {' '.join(dev.get('hwcap_isa') or [])}), "
        f"{dev.get('os')}, Python {dev.get('python')}; under qemu-user on the x86 host",
        f"x86 host CPU: {x86_cpu()}",
        f"ARM64 wheels: {', '.join(v for v in (info.get('wheels') or {}).values() if v)}",
        f"ARM64 llama.cpp: {build.get('summary') or 'not built'}",
        f"ARM64 llama.cpp system_info: {build.get('system_info') or '-'}",
        "",
        *table(report, artifacts),
        "",
        "Latency under emulation is not a device latency: none is reported, and the gate never judges it.",
        f"step seconds (shared busy 2-core machine): {times}",
    ]
    write_summary(
        args.out, {"report": str(args.out / "report.json"), "times": times, "device": dev}, "\n".join(md)
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
