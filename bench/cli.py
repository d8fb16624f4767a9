"""`edgedistill bench` and `edgedistill gate`: the command-line face of `edgedistill.bench`.

Wire them into the main parser with ``add_bench_parsers(subparsers)``; each parser's ``func``
returns the exit code. ``main(argv)`` runs them standalone (``python -m edgedistill.bench.cli``).

    edgedistill bench OUT/onnx-int8 OUT/openvino-int8 --target mobile-class --data sst2/dev.tsv --out report.json
    edgedistill gate report.json --target mobile-class --junit gate.xml --markdown "$GITHUB_STEP_SUMMARY"
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from edgedistill.cliargs import add_set_flag
from edgedistill.errors import EdgeDistillError


def add_bench_parsers(subparsers) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """Add the ``bench`` and ``gate`` sub-commands; returns both parsers."""
    p = subparsers.add_parser(
        "bench",
        help="measure artifacts' latency, memory, size and accuracy on a device target",
        description=(
            "Measure every artifact folder on one target, each measurement in a fresh process, and write a JSON "
            "report (judge it with `edgedistill gate`). Artifacts are re-hashed against their manifest first."
        ),
    )
    p.add_argument(
        "artifacts", nargs="+", metavar="ARTIFACT_DIR", help="OUT/<format>-<precision> folders from export"
    )
    p.add_argument(
        "--target", required=True, help="built-in target name (cpu, mobile-class, gpu-cuda) or a YAML file"
    )
    p.add_argument("--out", required=True, help="report JSON to write (atomically)")
    p.add_argument(
        "--data", help="eval split with text and labels (TSV/CSV/JSONL/Parquet), e.g. SST-2 dev.tsv"
    )
    p.add_argument("--text-column", default="sentence")
    p.add_argument("--text-pair-column", default=None)
    p.add_argument("--label-column", default="label")
    p.add_argument(
        "--reference",
        help="reference model for agreement (default: the student folder named in each artifact's manifest)",
    )
    p.add_argument(
        "--baseline-artifact",
        help="also measure this artifact, interleaved with each candidate in alternating fresh processes",
    )
    add_set_flag(p, "a target key", "measurement.min_seconds=10")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_bench)

    g = subparsers.add_parser(
        "gate",
        help="judge a bench report against a target's budgets (exit 0 pass, 1 fail, 2 invalid, "
        "3 inconclusive, 4 not judged)",
        description=(
            "Check every artifact x budget of a bench report, plus regressions against a baseline. Exit codes: "
            "0 pass, 1 a budget or regression failed (or an artifact errored), 2 invalid input, 3 inconclusive "
            "(measured but undecided), 4 not judged (nothing measured, or a budget without its figure)."
        ),
    )
    g.add_argument("report", help="report JSON from `edgedistill bench --out`")
    g.add_argument("--target", required=True, help="built-in target name or YAML file whose budgets apply")
    g.add_argument(
        "--baseline",
        help="an earlier bench report to compare with (separate job: less robust than --baseline-artifact)",
    )
    g.add_argument("--junit", help="write JUnit XML here (one testcase per artifact x budget)")
    g.add_argument("--markdown", help="write a Markdown summary here (e.g. $GITHUB_STEP_SUMMARY)")
    g.add_argument("--json", dest="json_out", help="write the gate result as JSON here")
    add_gate_flags(g)
    g.add_argument(
        "--min-effect", type=float, help="smallest slowdown that counts (default: the target's, 0.05)"
    )
    g.add_argument(
        "--p-threshold",
        type=float,
        help="Mann-Whitney p-value threshold over process medians, and the one-sided error of the ratio's "
        "confidence bounds (default: the target's)",
    )
    add_set_flag(g, "a target key", "budgets.p95_latency_ms=12")
    g.set_defaults(func=cmd_gate)
    return p, g


def add_gate_flags(parser: argparse.ArgumentParser) -> None:
    """``--allow-skipped``, ``--allow-inconclusive`` (`edgedistill run` has them too) and the no-op ``--strict``."""
    parser.add_argument(
        "--allow-skipped",
        action="store_true",
        help="exit 0, not 4, when nothing was judged or a budget could not be (board off, no --data, no teacher)",
    )
    parser.add_argument(
        "--allow-inconclusive",
        action="store_true",
        help="exit 0, not 3, when a check was measured but could not decide (noisy comparison, few iterations)",
    )
    parser.add_argument(
        "--strict",
        dest="strict_gate",
        action="store_true",
        help="accepted for old CI scripts and ignored: inconclusive exits 3 by default now",
    )


def _summary(report: dict[str, Any]) -> str:
    lines = []
    for a in report["artifacts"]:
        label = f"{a.get('label') or a['name']}{' (baseline)' if a.get('role') == 'baseline' else ''}"
        if a["status"] != "measured":
            lines.append(f"  {label:<36} {a['status'].upper()}: {a.get('reason')}")
            continue
        lat = a.get("latency") or {}
        text = f"  {label:<36} p50 {lat.get('p50_ms', 0):8.3f} ms  p95 {lat.get('p95_ms', 0):8.3f} ms  n={lat.get('n')}"
        mem = (a.get("memory") or {}).get("peak_rss_mb")
        if mem is not None:
            text += f"  rss {mem:7.1f} MB"
        text += f"  size {a['size_mb']:.2f} MB"
        lm = a.get("lm")
        if lm:
            text += f"  ttft {lm['ttft_ms']['p50_ms']:.2f} ms  decode {lm['decode_tokens_per_s']['p50']:.1f} tok/s"
        acc = a.get("accuracy") or {}
        if acc.get("accuracy") is not None:
            text += f"  acc {acc['accuracy']:.4f}"
        if acc.get("agreement") is not None:
            text += f"  agree {acc['agreement']:.4f}"
        if acc.get("cosine_mean") is not None:
            text += f"  cos {acc['cosine_mean']:.5f}"
        embedding = acc.get("sentence_embedding") or {}  # a generalist's second output
        if embedding.get("cosine_mean") is not None:
            text += f"  embedding cos {embedding['cosine_mean']:.5f} r@10 {embedding['recall_at_10']:.3f}"
        lines.append(text)
        for warning in ((a.get("applied") or {}).get("runtime_info") or {}).get("warnings", []):
            lines.append(f"    warning: {warning}")
    for c in report.get("comparisons") or []:
        r = c["result"]
        cand, base = (
            (c.get(f"{side}_run") or {}).get("label") or c[side] for side in ("candidate", "baseline")
        )
        lines.append(f"  {cand} vs {base}: {r['verdict']} ({r['reason']})")
    return "\n".join(lines)


def cmd_bench(args: argparse.Namespace) -> int:
    from edgedistill.bench.core import bench
    from edgedistill.targets import load_target

    target = load_target(args.target, dict(args.sets))
    report = bench(
        args.artifacts,
        target,
        data=args.data,
        text_column=args.text_column,
        text_pair_column=args.text_pair_column,
        label_column=args.label_column,
        reference=args.reference,
        baseline_artifact=args.baseline_artifact,
        out=args.out,
        progress=not args.quiet,
        command=list(sys.argv),
    )
    cpu = report["host"]["cpu"]
    isa = ",".join(k for k, v in cpu["isa"].items() if v)
    print(
        f"bench on {target.name} ({cpu['model']}, {cpu.get('generation')}, {report['host']['threads']} threads, "
        f"ISA {isa}):\n"
        f"{_summary(report)}\nreport: {args.out}  (judge it with `edgedistill gate {args.out} --target {args.target}`)",
        file=sys.stderr,
    )
    failed = [e for e in report["artifacts"] if e.get("status") == "error"]
    for entry in failed:  # a measurement that failed is never a success: exit 2, the reason said
        print(
            f"edgedistill bench: error: {entry.get('name')} could not be measured: {entry.get('reason')}",
            file=sys.stderr,
        )
    return 2 if failed else 0


def cmd_gate(args: argparse.Namespace) -> int:
    from edgedistill.bench.gating import GateInputError, gate, text_summary, write_outputs
    from edgedistill.errors import ConfigError
    from edgedistill.io import atomic_write_json
    from edgedistill.targets import load_target

    try:
        target = load_target(args.target, dict(args.sets))
    except ConfigError as exc:
        raise GateInputError(str(exc)) from None
    result = gate(
        args.report,
        target,
        baseline=args.baseline,
        allow_skipped=args.allow_skipped,
        allow_inconclusive=args.allow_inconclusive,
        min_effect=args.min_effect,
        p_threshold=args.p_threshold,
    )
    write_outputs(result, junit=args.junit, markdown_path=args.markdown)
    if args.json_out:
        atomic_write_json(args.json_out, result.to_dict())
    print(text_summary(result))
    return result.exit_code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgedistill", description="bench and gate")
    sub = parser.add_subparsers(dest="command", required=True)
    add_bench_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``bench`` or ``gate`` like the main CLI does (errors raised on purpose print, exit 2)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: bad usage is invalid input
        return int(exc.code) if isinstance(exc.code, int) else 2
    try:
        return args.func(args)
    except EdgeDistillError as exc:
        print(f"edgedistill {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
