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

The pieces: `plan` (what is measured), `progress`, `blocks` (report blocks from rounds),
`compare` (interleaved baseline comparisons), `accuracy`, `artifact`, `harness` (fresh processes).

Budgets are *not* judged here: `edgedistill gate` reads the report and decides.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edgedistill import __version__
from edgedistill.bench.accuracy import EvalData, accuracy_block, embedding_block, read_eval_data
from edgedistill.bench.artifact import Artifact, open_artifact
from edgedistill.bench.blocks import _applied_block, _latency_block, _lm_block, _memory_block, _ran_fields
from edgedistill.bench.compare import _baseline_entry, _compare_interleaved
from edgedistill.bench.device_run import device_parity, open_target_device
from edgedistill.bench.plan import _Plan
from edgedistill.bench.progress import _Progress
from edgedistill.errors import DataError, EdgeDistillError, MissingDependencyError
from edgedistill.io import atomic_write_json
from edgedistill.outputs import SENTENCE_EMBEDDING
from edgedistill.signals import interruptible

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
    if plan.device is not None:  # the runtime must import on the device, not here
        return plan.device.runtime_reason(runtime)
    return runtime.unavailable_reason(plan.options, plan.target.requires)


def _remove_dead_scratch(tmp_root: Path) -> None:
    """Scratch folders of benches that were SIGKILLed (their ``finally`` never ran) are removed."""
    for folder in tmp_root.glob("edgedistill-bench-*-*"):
        pid = folder.name.split("-")[2]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:
            pass


def _device_block(target, device, reason: str | None) -> dict[str, Any]:
    if target.device.kind == "local":
        return {"kind": "local", "emulated": False, "note": "the bench host itself (see host)"}
    if device is None:
        return {
            "kind": target.device.kind,
            "status": "unavailable",
            "reason": reason,
            "emulated": target.device.kind == "arm64-emulated",
        }
    block = {"status": "used", **device.describe()}
    if device.emulated:
        block["latency_note"] = (
            "latency under emulation is not a device latency: the gate never judges a latency budget on it"
        )
    return block


@interruptible
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
    _unique_names(opened)

    work_dir = Path(tempfile.mkdtemp(prefix=f"edgedistill-bench-{os.getpid()}-"))
    device, device_reason = open_target_device(target, work_dir)
    cpus, host_problem, warnings = resolve_cpus(target.runtime.cpu_affinity)
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    host_threads = target.runtime.threads or (len(cpus) if cpus else allowed)
    threads = host_threads
    if target.device.kind != "local":  # the device's CPUs, not this host's
        cpus, host_problem = None, None
        threads = target.runtime.threads or int((device.facts.get("cpu_count") if device else None) or 1)
        if target.runtime.cpu_affinity is not None:
            warnings = [
                f"cpu_affinity is not applied on a {target.device.kind} device (threads: {threads} are)"
            ]
    options = target.runtime.model_dump()
    options["threads"] = threads
    options["cpus"] = cpus
    options["host_threads"] = host_threads
    host_reason = device_reason or _hardware_reason(target) or host_problem

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

    _remove_dead_scratch(Path(tempfile.gettempdir()))
    plan = _Plan(
        target=target, options=options, cpus=cpus, warnings=warnings, work_dir=work_dir, device=device
    )
    texts_file = None
    if eval_data is not None:
        texts_file = work_dir / "texts.json"
        texts_file.write_text(
            json.dumps([list(t) if isinstance(t, tuple) else t for t in eval_data.texts]), encoding="utf-8"
        )

    m = target.measurement
    rounds_per = (2 * m.compare_rounds) if baseline is not None else m.rounds
    jobs_per_artifact = rounds_per + (1 if eval_data is not None else 0)
    # the baseline's own accuracy on the same data: a report that quotes "x % of the teacher" needs it
    total = len(opened) * jobs_per_artifact + (1 if baseline is not None and eval_data is not None else 0)
    entries: list[dict[str, Any]] = []
    comparisons: list[dict[str, Any]] = []
    reference_cache: dict[str, Any] = {}
    try:
        with _Progress(progress, total).running() as bar:
            for artifact in opened:
                entry = {"role": "candidate", **artifact.describe()}
                if target.device.kind != "local":
                    entry.update(device=target.device.kind, emulated=bool(device and device.emulated))
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
                    if device is not None and target.device.parity:
                        bar.step(f"{artifact.name}: parity on the device")
                        entry["device_parity"] = device_parity(plan, artifact, device)
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
                if eval_data is not None and entries[-1]["status"] == "measured":
                    bar.step(f"{baseline.name} (baseline): accuracy")
                    try:
                        entries[-1]["accuracy"] = _accuracy(
                            plan, baseline, eval_data, texts_file, reference, reference_cache
                        )
                    except EdgeDistillError as exc:  # its latency stands; the missing figure says why
                        entries[-1]["accuracy"] = {"status": "error", "reason": str(exc)}
                    bar.advance()
    finally:
        if device is not None:
            device.close()
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
        "device": _device_block(target, device, device_reason),
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


def _reference_for(artifact: Artifact, ref_path: Path, info: dict, predictions, outputs: dict) -> tuple:
    """The reference's (info, task predictions, other outputs) as this artifact compares with them.

    A reference of another task is refused, but for one case: a sentence-embedding model (say the
    embedding teacher) as the reference of a generalist, whose sentence_embedding it then measures.
    """
    task = info.get("task")
    if predictions is None or task == artifact.task:
        return info, predictions, outputs
    if task == "feature-extraction" and SENTENCE_EMBEDDING in artifact.extra_outputs:
        compared = (
            "sentence_embedding only: an embedding model is the reference of the generalist's embedding"
        )
        return {**info, "compared": compared}, None, {SENTENCE_EMBEDDING: predictions}
    reason = f"reference {ref_path} is a {task} model, not {artifact.task}"
    return {**info, "status": "error", "reason": reason}, None, {}


def _unique_names(opened: list[Artifact]) -> None:
    """The same folder name from two export runs: each takes the shortest tail of its path that no
    other artifact of the report shares (comparisons and relative figures are looked up by name)."""
    names = [a.name for a in opened]
    renamed = []
    for i, a in enumerate(opened):
        if names.count(names[i]) < 2:
            renamed.append(a.name)
            continue
        others = [b.path.resolve().parts for j, b in enumerate(opened) if j != i and names[j] == names[i]]
        parts = a.path.resolve().parts
        depth = 2
        while depth < len(parts) and any(o[-depth:] == parts[-depth:] for o in others):
            depth += 1
        renamed.append("/".join(parts[-depth:]))
    for a, name in zip(opened, renamed, strict=True):
        a.name = name


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
    ref_info, ref_pred, ref_outputs = None, None, {}
    if ref_path is not None and ref_path.resolve() != artifact.path:
        key = str(ref_path.resolve())
        if key not in cache:
            try:
                ref_artifact = open_artifact(ref_path)
                ref_job = plan.job("accuracy", ref_artifact, texts_file=str(texts_file))
                ref_result = plan.run(ref_job, local=True)  # the reference runs here
                cache[key] = (
                    {
                        "path": key,
                        "format": ref_artifact.format,
                        "runtime": ref_artifact.runtime,
                        "task": ref_artifact.task,
                        "status": "measured",
                    },
                    np.load(ref_result["predictions_file"]),
                    {n: np.load(f) for n, f in (ref_result.get("output_files") or {}).items()},
                )
            except EdgeDistillError as exc:
                cache[key] = ({"path": key, "status": "error", "reason": str(exc)}, None, {})
        ref_info, ref_pred, ref_outputs = cache[key]
        ref_info, ref_pred, ref_outputs = _reference_for(artifact, ref_path, ref_info, ref_pred, ref_outputs)
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
    for name, file in (result.get("output_files") or {}).items():  # a generalist's other outputs
        block[name] = embedding_block(np.load(file), ref_outputs.get(name))
    block["status"] = "measured"
    block["predict_seconds"] = result["predict_seconds"]
    return block
