"""Report blocks from measurement rounds: latency (percentiles over processes), LM throughput, memory, applied settings, what ran."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from edgedistill.bench.artifact import Artifact
from edgedistill.bench.plan import _Plan


def _latency_block(rounds: list[dict[str, Any]], batch_size: int) -> dict[str, Any]:
    import numpy as np

    from edgedistill.bench.stats import summarize

    samples = [s for r in rounds for s in r["samples_ms"]]
    summary = summarize(samples)
    block: dict[str, Any] = {
        "unit": "ms",
        **summary,
        "throughput_per_s": batch_size * 1000.0 / summary["mean_ms"] if summary.get("mean_ms") else None,
        "session_create_ms": float(np.median([r["session_create_ms"] for r in rounds])),
        "first_inference_ms": float(np.median([r["first_inference_ms"] for r in rounds])),
        "runtime_import_ms": float(np.median([r["import_ms"] for r in rounds])),
        "rounds": [
            {
                "n": len(r["samples_ms"]),
                "median_ms": float(np.median(r["samples_ms"])),
                "session_create_ms": r["session_create_ms"],
                "first_inference_ms": r["first_inference_ms"],
                "measure_seconds": r["measure_seconds"],
                "peak_rss_mb": r["memory"]["peak_rss_mb"],
                "other_cpu_seconds": r["host"]["other_cpu_seconds"],
            }
            for r in rounds
        ],
        "samples_ms": samples,
    }
    feeds = rounds[0].get("feeds") or []
    if len(feeds) > 1:
        by_feed = {}
        for k, label in enumerate(feeds):
            picked = [
                s for r in rounds for s, f in zip(r["samples_ms"], r["sample_feed"], strict=True) if f == k
            ]
            by_feed[label] = {
                key: v for key, v in summarize(picked).items() if key in ("n", "p50_ms", "p95_ms", "mean_ms")
            }
        block["by_workload"] = by_feed
    elif feeds:
        block["workload"] = feeds[0]
    return block


def _lm_block(rounds: list[dict[str, Any]]) -> dict[str, Any] | None:
    if "ttft_ms" not in rounds[0]:
        return None
    import numpy as np

    ttft = [v for r in rounds for v in r["ttft_ms"]]
    tps = [v for r in rounds for v in r["decode_tokens_per_s"]]
    return {
        "prompt_tokens": rounds[0]["prompt_tokens"],
        "generate_tokens": rounds[0]["generate_tokens"],
        "ttft_ms": {
            "n": len(ttft),
            "p50_ms": float(np.percentile(ttft, 50)),
            "p95_ms": float(np.percentile(ttft, 95)),
            "mean_ms": float(np.mean(ttft)),
        },
        "decode_tokens_per_s": {
            "n": len(tps),
            "p50": float(np.percentile(tps, 50)),
            "p5": float(np.percentile(tps, 5)),
            "mean": float(np.mean(tps)),
        },
        "ttft_samples_ms": ttft,
        "decode_tokens_per_s_samples": tps,
    }


def _memory_block(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    first = rounds[0]["memory"]
    return {
        "unit": "MB (10^6 bytes)",
        "peak_rss_mb": max(r["memory"]["peak_rss_mb"] for r in rounds),
        "peak_rss_mb_per_round": [r["memory"]["peak_rss_mb"] for r in rounds],
        "polled_peak_rss_mb": first.get("polled_peak_rss_mb"),
        "child_vmhwm_mb": first.get("vmhwm_mb"),
        "rss_start_mb": first.get("rss_start_mb"),
        "rss_after_runtime_import_mb": first.get("rss_after_import_mb"),
        "rss_after_session_mb": first.get("rss_after_load_mb"),
        "rss_polls": first.get("polls"),
        "note": "whole measuring process: Python interpreter, numpy and the runtime's bindings included",
    }


def _applied_block(
    plan: _Plan, rounds: list[dict[str, Any]], overrides: Mapping[str, Any] | None
) -> dict[str, Any]:
    first = rounds[0]
    return {
        "threads": plan.options["threads"],
        "cpu_affinity_requested": plan.target.runtime.cpu_affinity,
        "cpus": first["process"]["cpus"],
        "pinned": plan.cpus is not None,
        "threads_env": first["process"]["threads_env"],
        "effective": first["effective_options"],
        "runtime_info": first["runtime_info"],
        "overrides": dict(overrides or {}),
        "warnings": list(plan.warnings)
        + list(first["runtime_info"].get("warnings", []))
        + _debug_warnings({**plan.options, **(overrides or {})}),
    }


def _debug_warnings(options: Mapping[str, Any]) -> list[str]:
    """Say loudly when a test-only slowdown knob was active: such figures are not real."""
    knobs = {k: options.get(k) for k in ("debug_extra_latency_ms", "debug_slowdown_factor")}
    if (knobs["debug_extra_latency_ms"] or 0) > 0 or (knobs["debug_slowdown_factor"] or 1.0) != 1.0:
        return [f"TEST-ONLY slowdown active ({knobs}): these latencies were inflated on purpose"]
    return []


def _ran_fields(artifact: Artifact, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """``ran`` (read back by the runtime, else what export parity read back for the file), the
    precision policy that applied, and ``label``: the name every row, console line and report shows."""
    ran = rounds[0].get("ran") or artifact.declared_ran()
    return {
        "ran": ran,
        "precision_policy": rounds[0].get("precision_policy"),
        "label": f"{artifact.name} (ran {ran or '?'})",
    }


def _median(values: Sequence[float]) -> float:
    import numpy as np

    return float(np.median(values))
