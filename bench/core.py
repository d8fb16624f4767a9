"""The `bench` verb: artifact folders x one target -> a JSON report of latency, memory, size and accuracy.

Reads top to bottom like the job it does:

1. load the target and describe the host (CPU model, cores, ISA flags, OS, library versions);
2. open every artifact folder and re-hash it against its manifest (a mismatch stops everything);
3. decide, per artifact, whether the target can run here: hardware present, providers and
   devices available, format and precision accepted; otherwise it is ``skipped`` with the reason;
4. measure latency in fresh processes (``measurement.rounds`` of them, or, with a baseline
   artifact, ``compare_rounds`` each for candidate and baseline in alternating order, extended
   once up to ``max_compare_rounds`` when that first look is inconclusive);
5. with ``--data``, run the eval split through the artifact's runtime and through the
   reference (the float student named in the manifest, or ``--reference``) and compare;
6. write the report atomically (`edgedistill.io.atomic_write_json`).

Budgets are *not* judged here: `edgedistill gate` reads the report and decides.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgedistill import __version__
from edgedistill.bench.accuracy import EvalData, accuracy_block, read_eval_data
from edgedistill.bench.artifact import Artifact, open_artifact
from edgedistill.errors import DataError, EdgeDistillError, MissingDependencyError
from edgedistill.io import atomic_write_json

REPORT_VERSION = 1
REPORT_KIND = "edgedistill-bench-report"

__all__ = [
    "REPORT_KIND",
    "REPORT_VERSION",
    "Artifact",
    "EvalData",
    "accuracy_block",
    "bench",
    "open_artifact",
    "read_eval_data",
]

# --------------------------------------------------------------------------------------------
# Progress
# --------------------------------------------------------------------------------------------


class _Progress:
    """A rich progress bar over measuring processes (silent when ``enabled`` is False)."""

    def __init__(self, enabled: bool, total: int):
        self.enabled = enabled
        self._progress = None
        self._task = None
        self.total = total

    @contextmanager
    def running(self) -> Iterator[_Progress]:
        if not self.enabled:
            yield self
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(
            TextColumn("[bold]bench[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=Console(stderr=True),
            transient=False,
        ) as progress:
            self._progress = progress
            self._task = progress.add_task("", total=self.total)
            yield self

    def step(self, description: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=description)

    def advance(self, steps: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, steps)

    def grow(self, steps: int) -> None:
        """More work than planned (an extended comparison)."""
        self.total += steps
        if self._progress is not None:
            self._progress.update(self._task, total=self.total)


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    """Resolved settings shared by every job of one bench run."""

    target: Any  # edgedistill.targets.Target
    options: dict[str, Any]
    cpus: list[int] | None
    warnings: list[str]
    work_dir: Path

    def job(
        self, kind: str, artifact: Artifact, overrides: Mapping[str, Any] | None = None, **extra: Any
    ) -> dict[str, Any]:
        options = dict(self.options)
        options.update(overrides or {})
        return {
            "kind": kind,
            "artifact": artifact.job_dict(),
            "options": options,
            "workload": self.target.workload.model_dump(),
            "measurement": self.target.measurement.model_dump(),
            "cpus": self.cpus,
            **extra,
        }

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        from edgedistill.bench.harness import run_worker

        folder = Path(tempfile.mkdtemp(prefix=f"{job['kind']}-", dir=self.work_dir))
        m = self.target.measurement
        return run_worker(
            job, timeout_s=m.timeout_s, poll_interval_s=m.rss_poll_interval_ms / 1000.0, work_dir=folder
        )


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
        "warnings": list(plan.warnings) + _debug_warnings({**plan.options, **(overrides or {})}),
    }


def _debug_warnings(options: Mapping[str, Any]) -> list[str]:
    """Say loudly when a test-only slowdown knob was active: such figures are not real."""
    knobs = {k: options.get(k) for k in ("debug_extra_latency_ms", "debug_slowdown_factor")}
    if (knobs["debug_extra_latency_ms"] or 0) > 0 or (knobs["debug_slowdown_factor"] or 1.0) != 1.0:
        return [f"TEST-ONLY slowdown active ({knobs}): these latencies were inflated on purpose"]
    return []


def _hardware_reason(target) -> str | None:
    if target.requires == "cuda":
        from edgedistill.bench.system import nvidia_gpus

        if nvidia_gpus() is None:
            return "target requires a CUDA GPU; this host has none (no NVIDIA driver answers nvidia-smi)"
    return None


def _skip_reason(plan: _Plan, artifact: Artifact, host_reason: str | None) -> str | None:
    from edgedistill.bench.runtimes import get_runtime

    reason = host_reason or plan.target.accepts(artifact.format, artifact.precision)
    if reason:
        return reason
    runtime = get_runtime(artifact.runtime)  # MissingDependencyError propagates: an error, not a skip
    return runtime.unavailable_reason(plan.options, plan.target.requires)


def bench(
    artifacts: Sequence[str | Path],
    target: Any,
    *,
    data: str | Path | None = None,
    text_column: str = "sentence",
    text_pair_column: str | None = None,
    label_column: str | None = "label",
    reference: str | Path | None = None,
    baseline_artifact: str | Path | None = None,
    out: str | Path | None = None,
    progress: bool = False,
    candidate_overrides: Mapping[str, Any] | None = None,
    command: list[str] | None = None,
) -> dict[str, Any]:
    """Measure ``artifacts`` on ``target`` (a `Target`, a built-in name or a YAML path); return the report.

    ``baseline_artifact``: also measure that artifact interleaved with every candidate (alternating
    fresh processes) and record the comparison the gate judges. ``candidate_overrides`` are
    runtime options applied to candidates only (e.g. the test-only ``debug_slowdown_factor``).
    The report is written atomically to ``out`` when given.
    """
    from edgedistill.bench.harness import resolve_cpus
    from edgedistill.bench.system import system_info
    from edgedistill.targets import Target, load_target, resolve_target_path

    started = time.time()
    if isinstance(target, Target):
        target_source = "object"
    else:
        target_source = str(resolve_target_path(target))
        target = load_target(target)
    if not artifacts:
        raise EdgeDistillError("name at least one artifact folder to benchmark")
    opened = [open_artifact(p) for p in artifacts]  # hashes first: a mismatch stops before measuring
    baseline = open_artifact(baseline_artifact) if baseline_artifact is not None else None
    names = [a.name for a in opened]
    for a in opened:  # the same folder name from two export runs: tell them apart
        if names.count(a.name) > 1:
            a.name = f"{a.path.parent.name}/{a.name}"

    cpus, host_problem, warnings = resolve_cpus(target.runtime.cpu_affinity)
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = target.runtime.threads or (len(cpus) if cpus else allowed)
    options = target.runtime.model_dump()
    options["threads"] = threads
    options["cpus"] = cpus
    host_reason = _hardware_reason(target) or host_problem

    needs_labels = any(a.task == "sequence-classification" for a in opened)
    eval_data = None
    if data is not None:
        eval_data = read_eval_data(
            data,
            text_column=text_column,
            text_pair_column=text_pair_column,
            label_column=label_column,
            needs_labels=needs_labels,
            max_samples=target.workload.eval_max_samples,
        )

    work_dir = Path(tempfile.mkdtemp(prefix="edgedistill-bench-"))
    plan = _Plan(target=target, options=options, cpus=cpus, warnings=warnings, work_dir=work_dir)
    texts_file = None
    if eval_data is not None:
        texts_file = work_dir / "texts.json"
        texts_file.write_text(
            json.dumps([list(t) if isinstance(t, tuple) else t for t in eval_data.texts]), encoding="utf-8"
        )

    m = target.measurement
    rounds_per = (2 * m.compare_rounds) if baseline is not None else m.rounds
    jobs_per_artifact = rounds_per + (1 if eval_data is not None else 0)
    total = len(opened) * jobs_per_artifact
    entries: list[dict[str, Any]] = []
    comparisons: list[dict[str, Any]] = []
    reference_cache: dict[str, Any] = {}
    try:
        with _Progress(progress, total).running() as bar:
            for artifact in opened:
                entry = {"role": "candidate", **artifact.describe()}
                entries.append(entry)
                try:
                    reason = _skip_reason(plan, artifact, host_reason)
                except MissingDependencyError as exc:
                    entry.update(status="error", reason=str(exc))
                    bar.advance(jobs_per_artifact)
                    continue
                if reason:
                    entry.update(status="skipped", reason=reason)
                    bar.advance(jobs_per_artifact)
                    continue
                try:
                    if baseline is not None:
                        rounds, comparison = _compare_interleaved(
                            plan, artifact, baseline, candidate_overrides, bar
                        )
                        comparisons.append(comparison)
                    else:
                        rounds = []
                        for r in range(m.rounds):
                            bar.step(f"{artifact.name}: latency {r + 1}/{m.rounds}")
                            rounds.append(plan.run(plan.job("latency", artifact, candidate_overrides)))
                            bar.advance()
                    entry.update(
                        status="measured",
                        reason=None,
                        **_ran_fields(artifact, rounds),
                        applied=_applied_block(plan, rounds, candidate_overrides),
                        latency=_latency_block(rounds, target.workload.batch_size),
                        lm=_lm_block(rounds),
                        memory=_memory_block(rounds),
                    )
                    if eval_data is not None:
                        bar.step(f"{artifact.name}: accuracy")
                        entry["accuracy"] = _accuracy(
                            plan, artifact, eval_data, texts_file, reference, reference_cache
                        )
                        bar.advance()
                except EdgeDistillError as exc:  # figures measured before the failure stay in the entry
                    entry.update(status="error", reason=str(exc))
            if baseline is not None:
                entries.append(_baseline_entry(baseline, comparisons))
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)

    report = {
        "report_version": REPORT_VERSION,
        "kind": REPORT_KIND,
        "edgedistill_version": __version__,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_seconds": round(time.time() - started, 3),
        "command": command,
        "target": {
            "name": target.name,
            "source": target_source,
            "requires": target.requires,
            "emulates": target.emulates,
            "does_not_emulate": target.does_not_emulate,
            "config": json.loads(target.model_dump_json()),
        },
        "host": {
            **system_info(),
            "hardware_skip_reason": host_reason,
            "threads": threads,
            "cpus": cpus,
            "warnings": warnings,
        },
        "data": None
        if eval_data is None
        else {
            "path": eval_data.path,
            "rows": len(eval_data.texts),
            "labelled": eval_data.labels is not None,
            "read": eval_data.report,
        },
        "artifacts": entries,
        "comparisons": comparisons,
    }
    if out is not None:
        atomic_write_json(out, report)
    return report


def _interleaved(
    plan: _Plan,
    candidate: Artifact,
    baseline: Artifact,
    candidate_overrides: Mapping[str, Any] | None,
    bar: _Progress,
    rounds: range,
    cand_rounds: list[dict[str, Any]],
    base_rounds: list[dict[str, Any]],
) -> None:
    """Candidate and baseline in alternating fresh processes: A B, B A, A B ... (drift hits both).

    Runs the round numbers in ``rounds`` and appends to ``cand_rounds`` / ``base_rounds``, so an
    extension continues the alternation where the first look stopped."""
    n = rounds.stop
    for r in rounds:
        order = [("A", candidate), ("B", baseline)] if r % 2 == 0 else [("B", baseline), ("A", candidate)]
        for side, artifact in order:
            bar.step(f"{candidate.name} vs {baseline.name}: round {r + 1}/{n} ({side})")
            if side == "A":
                cand_rounds.append(plan.run(plan.job("latency", artifact, candidate_overrides)))
            else:
                base_rounds.append(plan.run(plan.job("latency", artifact)))
            bar.advance()


def _compare_interleaved(
    plan: _Plan,
    candidate: Artifact,
    baseline: Artifact,
    candidate_overrides: Mapping[str, Any] | None,
    bar: _Progress,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Measure candidate vs baseline, then decide; an inconclusive first look is extended once.

    First look: ``compare_rounds`` processes a side. If that is inconclusive and
    ``max_compare_rounds`` is larger, the alternation continues up to ``max_compare_rounds`` a
    side and the verdict is taken again on all processes (a second look). Only an inconclusive
    look is extended, so clear answers cost no more time. Every look is kept in the comparison
    (``looks``) so a reader sees what the first look said.
    """
    m = plan.target.measurement
    cand_rounds: list[dict[str, Any]] = []
    base_rounds: list[dict[str, Any]] = []
    _interleaved(
        plan, candidate, baseline, candidate_overrides, bar, range(m.compare_rounds), cand_rounds, base_rounds
    )
    comparison = _comparison(plan.target, candidate, baseline, cand_rounds, base_rounds)
    looks = [_look(comparison)]
    extend_to = m.max_compare_rounds or m.compare_rounds
    if comparison["result"]["verdict"] == "inconclusive" and extend_to > m.compare_rounds:
        bar.grow(2 * (extend_to - m.compare_rounds))
        _interleaved(
            plan,
            candidate,
            baseline,
            candidate_overrides,
            bar,
            range(m.compare_rounds, extend_to),
            cand_rounds,
            base_rounds,
        )
        comparison = _comparison(plan.target, candidate, baseline, cand_rounds, base_rounds)
        looks.append(_look(comparison))
    comparison["looks"] = looks
    comparison["extended"] = len(looks) > 1
    return cand_rounds, comparison


def _look(comparison: dict[str, Any]) -> dict[str, Any]:
    result = comparison["result"]
    return {
        "rounds_per_side": comparison["candidate_rounds"],
        "verdict": result["verdict"],
        "ratio": result["ratio"],
        "p_slower": result["p_slower"],
    }


def _comparison(target, candidate: Artifact, baseline: Artifact, rounds, base_rounds) -> dict[str, Any]:
    from edgedistill.bench.stats import compare_processes

    cand = [s for r in rounds for s in r["samples_ms"]]
    base = [s for r in base_rounds for s in r["samples_ms"]]
    cand_medians = [_median(r["samples_ms"]) for r in rounds]
    base_medians = [_median(r["samples_ms"]) for r in base_rounds]
    reg = target.regression
    return {
        "candidate": candidate.name,
        "baseline": baseline.name,
        # what each side ran (read back per process; the first process speaks for its side)
        "candidate_run": _ran_fields(candidate, rounds),
        "baseline_run": _ran_fields(baseline, base_rounds),
        "candidate_path": str(candidate.path),
        "baseline_path": str(baseline.path),
        "metric": "latency_ms",
        "interleaved": True,
        "order": "alternating fresh processes: A B, B A, A B, ...",
        "candidate_samples_ms": cand,
        "baseline_samples_ms": base,
        "candidate_rounds": len(rounds),
        "baseline_rounds": len(base_rounds),
        "baseline_round_medians_ms": base_medians,
        "candidate_round_medians_ms": cand_medians,
        "baseline_peak_rss_mb": max(r["memory"]["peak_rss_mb"] for r in base_rounds),
        "result": compare_processes(
            cand_medians,
            base_medians,
            candidate_n=len(cand),
            baseline_n=len(base),
            min_effect=reg.min_effect,
            p_threshold=reg.p_threshold,
            min_samples=reg.min_samples,
            min_rounds=reg.min_rounds,
        ),
    }


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


def _baseline_entry(baseline: Artifact, comparisons: list[dict[str, Any]]) -> dict[str, Any]:
    entry = {"role": "baseline", **baseline.describe()}
    if not comparisons:
        entry.update(status="skipped", reason="no candidate was measured against it")
        return entry
    samples = [s for c in comparisons for s in c["baseline_samples_ms"]]
    from edgedistill.bench.stats import summarize

    entry.update(
        status="measured",
        reason=None,
        **comparisons[0]["baseline_run"],
        latency={"unit": "ms", **summarize(samples), "samples_ms": samples},
        memory={"peak_rss_mb": max(c["baseline_peak_rss_mb"] for c in comparisons)},
    )
    return entry


def _accuracy(
    plan: _Plan,
    artifact: Artifact,
    eval_data: EvalData,
    texts_file: Path,
    reference: str | Path | None,
    cache: dict[str, Any],
) -> dict[str, Any]:
    import numpy as np

    if artifact.task == "text-generation":
        return {
            "status": "not measured",
            "reason": "accuracy of text-generation artifacts is not measured yet",
        }
    if artifact.task == "sequence-classification" and eval_data.labels is None:
        raise DataError(
            f"{eval_data.path} has no labels (label column missing): classification accuracy needs them"
        )
    result = plan.run(plan.job("accuracy", artifact, texts_file=str(texts_file)))
    predictions = np.load(result["predictions_file"])
    ref_path = Path(reference) if reference is not None else artifact.student_path
    ref_info, ref_pred = None, None
    if ref_path is not None and ref_path.resolve() != artifact.path:
        key = str(ref_path.resolve())
        if key not in cache:
            try:
                ref_artifact = open_artifact(ref_path)
                if ref_artifact.task != artifact.task:
                    raise EdgeDistillError(
                        f"reference {ref_path} is a {ref_artifact.task} model, not {artifact.task}"
                    )
                ref_result = plan.run(plan.job("accuracy", ref_artifact, texts_file=str(texts_file)))
                cache[key] = (
                    {
                        "path": key,
                        "format": ref_artifact.format,
                        "runtime": ref_artifact.runtime,
                        "status": "measured",
                    },
                    np.load(ref_result["predictions_file"]),
                )
            except EdgeDistillError as exc:
                cache[key] = ({"path": key, "status": "error", "reason": str(exc)}, None)
        ref_info, ref_pred = cache[key]
        if ref_pred is not None and ref_pred.shape != predictions.shape:
            ref_info = {
                **ref_info,
                "status": "error",
                "reason": f"reference outputs have shape {list(ref_pred.shape)}, the artifact's {list(predictions.shape)}",
            }
            ref_pred = None
    elif ref_path is None:
        ref_info = {
            "status": "none",
            "reason": "no reference: the manifest names no student folder; pass --reference",
        }
    block = accuracy_block(artifact.task, predictions, eval_data.labels, ref_pred, ref_info)
    block["status"] = "measured"
    block["predict_seconds"] = result["predict_seconds"]
    return block
