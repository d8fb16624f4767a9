"""Benchmark of the export stage on SST-2 (issue: export).

For one quantization-aware SST-2 student (from `benchmarks/compress_sst2.py`, or built here on a
subset of SST-2 with the same CLI commands when none is given), side by side in one run:

1. our artifacts (`edgedistill export`): ONNX and OpenVINO at fp32 and int8 (int8 from the learned
   QAT ranges), and ONNX int8 by plain ONNX Runtime dynamic quantization of the same float weights;
2. what optimum's `ORTQuantizer` makes of the same float student (dynamic int8, the
   avx512_vnni / avx2 config matching this CPU);
3. per artifact: size, parity figures from the manifest, SST-2 dev accuracy through its own
   runtime, agreement with the torch fake-quant student, and p50/p95 latency at batch 1 with
   2 threads, all models timed interleaved (one sentence through each model in turn) so machine
   noise hits them alike.

    python benchmarks/export_sst2.py [--student DIR] [--data ../shared/data/sst2]

GGUF is not in the table: llama.cpp runs BERT as an embedding model and has no
sequence-classification head for it; the GGUF encoders are measured in `make test` (parity).
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from common import CLI, RESULTS, minilm, parser, run, run_main, sst2_flags, sst2_missing, write_summary

THREADS = 2


def build_student(data: Path, out: Path, train_samples: int) -> Path:
    """Teacher fine-tune + 3-layer KD+QAT student on the first ``train_samples`` SST-2 rows."""
    common = [*sst2_flags(data), "--max-train-samples", str(train_samples)]
    log = out / "commands.log"
    run(
        [
            *CLI, "finetune", "--model", str(minilm()), "--epochs", "1", "--lr", "5e-5", "--out", str(out / "teacher"),
        ] + common,
        out / "teacher" / "finetune_report.json",
        log,
    )  # fmt: skip
    run(
        [
            *CLI, "distill", "--teacher", str(out / "teacher" / "model"), "--student-layers", "3", "--epochs", "1",
            "--lr", "1e-4", "--qat", "int8", "--qat-start", "0.5", "--losses", "soft_kl:1,hard_ce:1",
            "--temperature", "4", "--alpha", "0.7", "--out", str(out / "3L-KD-QAT"),
        ] + common,
        out / "3L-KD-QAT" / "distill_report.json",
        log,
    )  # fmt: skip
    return out / "3L-KD-QAT" / "student"


def read_dev(path: Path) -> tuple[list[str], np.ndarray]:
    texts, labels = [], []
    with open(path, encoding="utf-8") as fh:
        header = fh.readline().rstrip("\n").split("\t")
        ti, li = header.index("sentence"), header.index("label")
        for line in fh:
            cols = line.rstrip("\n").split("\t")
            texts.append(cols[ti])
            labels.append(int(cols[li]))
    return texts, np.asarray(labels)


def batched_feeds(
    tokenizer, texts: list[str], batch: int, max_length: int = 128
) -> list[dict[str, np.ndarray]]:
    from edgedistill.export.parity import encode

    return [encode(tokenizer, texts[i : i + batch], max_length) for i in range(0, len(texts), batch)]


def logits_of(outputs: list[dict[str, np.ndarray]]) -> np.ndarray:
    return np.concatenate([o["logits"] for o in outputs])


def optimum_dynamic_int8(student: Path, work: Path) -> tuple[Path, str]:
    """optimum's textbook route: main_export, then ORTQuantizer dynamic with the CPU's config."""
    from edgedistill.plugins import is_installed

    if not is_installed("optimum.onnxruntime"):
        raise SystemExit(
            "benchmarks/export_sst2.py compares with optimum's ORTQuantizer, which the default install no "
            "longer has (optimum-onnx pins transformers<4.58). Run it in the 4.57 line: "
            "`make .venv-compat/.edgedistill-installed` then `.venv-compat/bin/python benchmarks/run_all.py`."
        )
    from optimum.exporters.onnx import main_export
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    from edgedistill.bench.system import cpu_info

    fp32 = work / "fp32"
    main_export(
        str(student), output=str(fp32), task="text-classification", opset=17, local_files_only=True,
        do_validation=False,
    )  # fmt: skip
    name = "avx512_vnni" if cpu_info()["isa"]["avx512_vnni"] else "avx2"
    qconfig = getattr(AutoQuantizationConfig, name)(is_static=False, per_channel=False)
    ORTQuantizer.from_pretrained(str(fp32)).quantize(save_dir=str(work / "int8"), quantization_config=qconfig)
    return next((work / "int8").glob("*.onnx")), name


class OrtModel:
    def __init__(self, path: Path):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = THREADS
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]

    def __call__(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, {n: feed[n] for n in self.names})[0]


class OvModel:
    def __init__(self, xml: Path):
        import openvino as ov

        compiled = ov.Core().compile_model(
            str(xml), "CPU",
            {"INFERENCE_NUM_THREADS": THREADS, "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": "f32"},
        )  # fmt: skip
        self.request = compiled.create_infer_request()
        self.names = [p.get_any_name() for p in compiled.inputs]
        self.output = compiled.outputs[0]

    def __call__(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        return np.array(self.request.infer({n: feed[n] for n in self.names})[self.output])


def interleaved_latency(models: dict, feeds: list[dict[str, np.ndarray]], rounds: int) -> dict[str, dict]:
    """Batch-1 latency: each feed goes through every model in turn, so noise hits all alike."""
    for model in models.values():  # warmup
        for feed in feeds[:10]:
            model(feed)
    times: dict[str, list[float]] = {name: [] for name in models}
    for r in range(rounds):
        order = list(models.items()) if r % 2 == 0 else list(reversed(models.items()))
        for feed in feeds:
            for name, model in order:
                started = time.perf_counter()
                model(feed)
                times[name].append((time.perf_counter() - started) * 1e3)
    return {
        name: {
            "p50_ms": statistics.median(t),
            "p95_ms": float(np.percentile(t, 95)),
            "iterations": len(t),
        }
        for name, t in times.items()
    }


def main() -> int:
    ap = parser(__doc__, "export_sst2", sst2=True)
    ap.add_argument(
        "--student", type=Path, help="a QAT student folder (default: compress benchmark's 3L-KD-QAT)"
    )
    ap.add_argument("--train-samples", type=int, default=8000, help="SST-2 rows used when building a student")
    ap.add_argument("--latency-sentences", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    if sst2_missing(args.data, ("dev.tsv",)):
        return 2
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    student = args.student
    if student is None:
        from_compress = RESULTS / "compress_sst2" / "3L-KD-QAT" / "student"
        student = (
            from_compress if from_compress.is_dir() else build_student(args.data, out, args.train_samples)
        )
    print(f"student: {student}", flush=True)

    from edgedistill.export import ExportConfig, export, inspect_student
    from edgedistill.export.core import get_plugin

    calib = {"calib_data": args.data / "dev.tsv", "calib_text_column": "sentence", "parity_samples": 32}
    export(
        student,
        out / "ours",
        ExportConfig(formats=["onnx", "openvino"], precisions=["fp32", "int8"], **calib),
    )
    export(
        student,
        out / "ort-dynamic",
        ExportConfig(formats=["onnx"], precisions=["int8"], int8_method="dynamic", **calib),
    )
    optimum_path, optimum_config = optimum_dynamic_int8(student, out / "optimum")

    info = inspect_student(student)
    tokenizer = info.load_tokenizer()
    texts, labels = read_dev(args.data / "dev.tsv")
    eval_feeds = batched_feeds(tokenizer, texts, 32)

    # --- accuracy through each runtime ---------------------------------------------------------
    from edgedistill.export.parity import torch_outputs

    fq_logits = logits_of(torch_outputs(info.load_qat_model(), info.task, eval_feeds))
    float_logits = logits_of(torch_outputs(info.load_model(), info.task, eval_feeds))
    rows: dict[str, dict] = {
        "torch fp32 (QAT student's float weights)": {"logits": float_logits, "bytes": None},
        "torch fake-quant int8 (reference)": {"logits": fq_logits, "bytes": None},
    }
    artifacts = {
        "ONNX fp32 (ours)": (out / "ours" / "onnx-fp32", "onnx"),
        "ONNX int8 from QAT ranges (ours)": (out / "ours" / "onnx-int8", "onnx"),
        "OpenVINO fp32 (ours)": (out / "ours" / "openvino-fp32", "openvino"),
        "OpenVINO int8 from QAT ranges (ours)": (out / "ours" / "openvino-int8", "openvino"),
        "ONNX int8, ORT quantize_dynamic (ours, --int8-method dynamic)": (
            out / "ort-dynamic" / "onnx-int8",
            "onnx",
        ),
    }
    manifests = {}
    for name, (folder, fmt) in artifacts.items():
        manifest = json.loads((folder / "manifest.json").read_text())
        manifests[name] = manifest
        outputs = get_plugin(fmt).run(folder, eval_feeds)
        rows[name] = {
            "logits": logits_of(outputs),
            "bytes": manifest["model_bytes"],
            "parity": manifest["parity"],
        }
    optimum_model = OrtModel(optimum_path)
    rows[f"ONNX int8, optimum ORTQuantizer {optimum_config} dynamic"] = {
        "logits": np.concatenate([optimum_model(f) for f in eval_feeds]),
        "bytes": optimum_path.stat().st_size,
    }
    fq_pred = fq_logits.argmax(-1)
    fq_acc = float((fq_pred == labels).mean())
    for row in rows.values():
        pred = row.pop("logits").argmax(-1)
        row["dev_accuracy"] = float((pred == labels).mean())
        row["points_vs_fake_quant"] = round(100 * (row["dev_accuracy"] - fq_acc), 2)
        row["agreement_with_fake_quant"] = float((pred == fq_pred).mean())

    # --- latency, batch 1, 2 threads, interleaved ------------------------------------------------
    lat_texts = texts[: args.latency_sentences]
    lat_feeds = [batched_feeds(tokenizer, [t], 1)[0] for t in lat_texts]
    timed = {
        "ONNX fp32 (ours)": OrtModel(out / "ours" / "onnx-fp32" / "model.onnx"),
        "ONNX int8 from QAT ranges (ours)": OrtModel(out / "ours" / "onnx-int8" / "model.onnx"),
        "ONNX int8, ORT quantize_dynamic (ours, --int8-method dynamic)": OrtModel(
            out / "ort-dynamic" / "onnx-int8" / "model.onnx"
        ),
        f"ONNX int8, optimum ORTQuantizer {optimum_config} dynamic": optimum_model,
        "OpenVINO fp32 (ours)": OvModel(out / "ours" / "openvino-fp32" / "openvino_model.xml"),
        "OpenVINO int8 from QAT ranges (ours)": OvModel(
            out / "ours" / "openvino-int8" / "openvino_model.xml"
        ),
    }
    latency = interleaved_latency(timed, lat_feeds, args.rounds)
    base = latency["ONNX fp32 (ours)"]["p50_ms"]
    for name, figures in latency.items():
        rows[name].update(figures, speedup_vs_onnx_fp32=round(base / figures["p50_ms"], 2))

    from edgedistill.bench.system import system_info

    summary = {
        "student": str(student),
        "dev_sentences": len(texts),
        "latency": {"batch": 1, "threads": THREADS, "sentences": len(lat_feeds), "rounds": args.rounds},
        "system": system_info(),
        "python": platform.python_version(),
        "rows": rows,
    }
    write_summary(out, summary, markdown(summary))
    return 0


def markdown(summary: dict) -> str:
    lines = [
        f"Student: `{summary['student']}`; SST-2 dev ({summary['dev_sentences']} sentences); latency at batch 1, "
        f"{summary['latency']['threads']} threads, {summary['latency']['sentences']} sentences x "
        f"{summary['latency']['rounds']} rounds, models interleaved.",
        "",
        "| model | size MB | dev acc | points vs fake-quant | agree w/ fake-quant | p50 ms | p95 ms | speed-up vs ONNX fp32 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in summary["rows"].items():
        size = f"{r['bytes'] / 1e6:.1f}" if r.get("bytes") else "-"
        p50 = f"{r['p50_ms']:.2f}" if "p50_ms" in r else "-"
        p95 = f"{r['p95_ms']:.2f}" if "p95_ms" in r else "-"
        speed = f"{r['speedup_vs_onnx_fp32']:.2f}x" if "speedup_vs_onnx_fp32" in r else "-"
        lines.append(
            f"| {name} | {size} | {100 * r['dev_accuracy']:.2f} | {r['points_vs_fake_quant']:+.2f} "
            f"| {100 * r['agreement_with_fake_quant']:.1f}% | {p50} | {p95} | {speed} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(run_main(main))
