"""ARM64 parity of a tiny student's artifacts under qemu-user, next to their x86 export parity.

    python benchmarks/arm64_parity.py [--out bench-results/arm64_parity]

Builds a demo-style tiny student (BERT classifier, 2 layers, 64 dims, WordPiece tokenizer trained
here on the parity sentences; untrained weights, seed 0) and a tiny encoder, exports ONNX
fp32/int8 and GGUF q8_0, builds (or reuses) the aarch64 sysroot, and benches them on the
``arm64-emulated`` device. The table puts each artifact's export parity on x86 (artifact vs torch,
from its manifest) beside its outputs on emulated ARM64 vs the same artifact on x86. Latency under
emulation is not a device latency: none is reported.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from common import parser, write_summary


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


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__, out="arm64_parity")
    args = ap.parse_args(argv)
    from edgedistill.bench import bench
    from edgedistill.bench.devices import qemu_sysroot
    from edgedistill.export import ExportConfig, export
    from edgedistill.targets import load_target

    times: dict[str, float] = {}
    t = time.monotonic()
    info = qemu_sysroot.sysroot_info() or qemu_sysroot.build()
    times["sysroot"] = round(time.monotonic() - t, 1)
    work = Path(tempfile.mkdtemp(prefix="arm64-parity-"))
    t = time.monotonic()
    students = tiny_students(work)
    fast = {"parity_samples": 16, "calib_samples": 8, "int8_method": "dynamic"}
    export(
        students["classifier"],
        work / "cls",
        ExportConfig(formats=["onnx"], precisions=["fp32", "int8"], **fast),
    )
    export(
        students["encoder"],
        work / "enc",
        ExportConfig(formats=["gguf"], precisions=["q8_0"], parity_samples=8),
    )
    times["students_and_export"] = round(time.monotonic() - t, 1)
    target = load_target("cpu", {"device": {"kind": "arm64-emulated"}, "measurement.min_iterations": 10,
                                 "measurement.min_seconds": 0.1, "measurement.warmup_iterations": 1,
                                 "runtime.threads": 1, "runtime.cpu_affinity": None})  # fmt: skip
    target.budgets = type(target.budgets)()
    t = time.monotonic()
    artifacts = [work / "cls" / "onnx-fp32", work / "cls" / "onnx-int8", work / "enc" / "gguf-q8_0"]
    report = bench(artifacts, target, out=args.out / "report.json", command=sys.argv)
    times["bench_arm64_emulated"] = round(time.monotonic() - t, 1)
    import json

    rows = ["| artifact | x86: max abs diff vs torch | x86: top-1 vs torch | ARM64 (qemu) vs x86: max abs diff | cosine min | top-1 agreement | ARM64 onnxruntime |",
            "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for entry, path in zip(report["artifacts"], artifacts, strict=True):
        manifest = json.loads((path / "manifest.json").read_text())
        outs = (manifest.get("parity") or {}).get("outputs") or [{}]
        x86_diff = max((o.get("max_abs_diff") or 0.0) for o in outs)
        x86_top1 = outs[0].get("top1_agreement")
        p = entry.get("device_parity") or {}
        if entry["status"] != "measured":
            rows.append(
                f"| {entry['name']} | {x86_diff:.3g} | {x86_top1} | {entry['status']}: {entry['reason'][:90]} | | | |"
            )
            continue
        rt = (p.get("device_runtime") or {}).get("onnxruntime")
        rows.append(
            f"| {entry['name']} | {x86_diff:.3g} | {x86_top1} | {p['max_abs_diff']:.3g} | {p['cosine_min']:.6f} | {p.get('top1_agreement')} | {rt} |"
        )
    dev = report["device"]
    md = "\n".join(
        [f"Device: {dev.get('cpu_model')} ({dev.get('machine')}, HWCAP {' '.join(dev.get('hwcap_isa') or [])}); "
         f"wheels: {info.get('wheels')}", "", *rows, "", f"step seconds (shared busy 2-core machine): {times}"]
    )  # fmt: skip
    write_summary(args.out, {"report": str(args.out / "report.json"), "times": times, "device": dev}, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
