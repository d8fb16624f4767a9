"""The Markdown summary of `bench_harness.py`, and the host it ran on."""

from __future__ import annotations

import os
import platform
import statistics
from typing import Any

from bench_harness_measure import OPENVINO_PROPERTIES


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
        ours = {k: v for k, v in first["ours"]["effective"].items() if k in OPENVINO_PROPERTIES}
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
