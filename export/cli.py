"""`edgedistill export`: the command-line face of `edgedistill.export.export`.

Wire it into the main parser with ``add_export_parser(subparsers)``; the parser's ``func`` is
`cmd_export`. Flags map onto `ExportConfig` keys; ``--set KEY=VALUE`` reaches any other key
(``--set tolerances.int8.min_top1_agreement=0.95``), ``--config FILE`` reads them from YAML.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from edgedistill.cliargs import add_set_flag

FORMAT_CHOICES = ("onnx", "openvino", "gguf", "ort", "executorch", "all")


def _listed(value: str) -> list[str]:
    """`onnx,openvino` -> ['onnx', 'openvino'] (flags may also repeat)."""
    return [v.strip().lower() for v in value.split(",") if v.strip()]


def add_export_parser(subparsers) -> argparse.ArgumentParser:
    from edgedistill.export.config import PRECISIONS

    p = subparsers.add_parser(
        "export",
        help="export a student to ONNX / OpenVINO / GGUF, each artifact parity-checked in its runtime",
        description=(
            "Write OUT/<format>-<precision>/ for every requested pair: model file(s), tokenizer files and "
            "manifest.json. Each artifact runs in its runtime on real sentences and must match torch within "
            "the precision's tolerance, or nothing is written."
        ),
    )
    p.add_argument("student", help="student folder (from `edgedistill distill`, or any HF model folder)")
    p.add_argument(
        "--format",
        dest="formats",
        action="append",
        type=_listed,
        metavar="|".join(FORMAT_CHOICES),
        help="output format; repeat it or use commas (default: onnx)",
    )
    p.add_argument(
        "--precision",
        dest="precisions",
        action="append",
        type=_listed,
        metavar="PRECISION",
        help=f"repeat it or use commas (default: fp32); one of {', '.join(PRECISIONS)}",
    )
    p.add_argument(
        "--out", required=True, help="output folder; OUT/<format>-<precision>/ is replaced atomically"
    )
    p.add_argument("--task", choices=["sequence-classification", "feature-extraction", "text-generation"])
    p.add_argument(
        "--int8-method",
        dest="int8_method",
        choices=["auto", "qat", "dynamic", "static"],
        help="auto (default): QAT ranges when present, else static with --calib-data, else dynamic",
    )
    p.add_argument(
        "--calib-data", dest="calib_data", help="text file (a sentence a line) or TSV/CSV for calibration"
    )
    p.add_argument(
        "--calib-text-column", dest="calib_text_column", help="text column of a TSV/CSV calib file"
    )
    p.add_argument("--calib-samples", dest="calib_samples", type=int)
    p.add_argument("--parity-samples", dest="parity_samples", type=int, help="sentences run for parity")
    p.add_argument(
        "--parity-data", dest="parity_data", help="sentences for parity (default: calib data or built-in)"
    )
    p.add_argument("--max-length", dest="max_length", type=int)
    p.add_argument("--opset", dest="opset", type=int)
    p.add_argument("--config", dest="config", help="ExportConfig YAML (flags override it)")
    add_set_flag(p, "any ExportConfig key", "tolerances.fp16.max_abs_diff=0.1")
    p.set_defaults(func=cmd_export)
    return p


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    keys = (
        "task",
        "int8_method",
        "calib_data",
        "calib_text_column",
        "calib_samples",
        "parity_samples",
        "parity_data",
        "max_length",
        "opset",
    )
    overrides: dict[str, Any] = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    for key in ("formats", "precisions"):
        groups = getattr(args, key, None)
        if groups:
            overrides[key] = [item for group in groups for item in group]
    overrides.update(dict(args.sets))
    return overrides


def _summary(report: dict[str, Any]) -> str:
    lines = []
    for art in report["artifacts"]:
        figures = []
        for out in art["parity"]["outputs"]:
            if not out["checked"]:
                continue
            text = f"{out['name']} max_abs={out['max_abs_diff']:.2e}"
            if out["top1_agreement"] is not None:
                text += f" top1={out['top1_agreement']:.3f}"
            if out["cosine_min"] is not None:
                text += f" cos_min={out['cosine_min']:.5f}"
            figures.append(text)
        size_mb = art["model_bytes"] / 1e6
        reference = art["parity"]["reference"]
        if art["parity"].get("tolerance_name") not in (None, "", art["precision"]):
            reference += f" ({art['parity']['tolerance_name']})"  # e.g. gguf-qat (qat-exact)
        lines.append(
            f"  {art['format'] + '-' + art['precision']:<16} {size_mb:9.2f} MB  "
            f"{art['quantization'].get('method', '')}  vs torch {reference}: {'; '.join(figures)}"
        )
    for skip in report["skipped"]:
        lines.append(f"  skipped {skip['format']}-{skip['precision']}: {skip['reason']}")
    return "\n".join(lines)


def cmd_export(args: argparse.Namespace) -> int:
    from edgedistill.config import load_config
    from edgedistill.export.config import ExportConfig
    from edgedistill.export.core import export

    cfg = load_config(ExportConfig, getattr(args, "config", None), _overrides(args))
    report = export(args.student, args.out, cfg)
    print(
        f"exported {report['student']} ({report['task']}) to {args.out}:\n{_summary(report)}", file=sys.stderr
    )
    return 0
