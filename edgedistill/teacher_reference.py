"""The teacher as the reference point of `edgedistill run`: exported fp32, measured, never gated.

A student's figures mean little alone: the run report shows each artifact's speed-up over the
teacher and its task metric as a share of the teacher's. So the pipeline exports the teacher at
fp32 in one format (`reference_format`: the recipe's first; a `fit` recipe's first searched export,
also in the winner's final run) (``OUT/reference/teacher/<format>-fp32``) and benches it on
every target like the artifacts (``OUT/reference/<target>.json``; a target that accepts only
quantized artifacts measures it anyway, since it is the yardstick, not a candidate). The gate
never sees it.

For sentence embeddings the bench scores each artifact against its own torch student (a cosine
near 1.0 for every artifact, which says the export is faithful, not that the student is good).
Here each artifact is also run once against the teacher, on the first target only
(``OUT/reference/<target>.vs_teacher.json``: a short accuracy run, its latency not used): its
cosine to the teacher, the figure a user of the embeddings cares about; the teacher's own is 1 by
definition, so its bench measures latency only. For classification the bench's accuracy on
labelled data already is the task metric; the teacher's, measured the same way, is the reference.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from edgedistill.errors import EdgeDistillError
from edgedistill.io import sha256_file

log = logging.getLogger(__name__)

REFERENCE_DIR = "reference"
# what `distill` calls a task -> the export task of the same model
_EXPORT_TASKS = {"causal-lm": "text-generation"}
# a pass over the eval data is all the vs-teacher run needs; its latency figures are not used
_ACCURACY_ONLY = {"warmup_iterations": 0, "min_iterations": 1, "min_seconds": 0.0, "rounds": 1}


def reference_format(recipe: Any) -> str:
    """The format of the teacher's fp32 reference: every artifact's relative budgets are judged
    against the teacher in this one runtime. A `fit` recipe's is its first searched export, in the
    search and in the winner's final run alike (whose export keeps only the winner's formats): one
    yardstick, so a finalist that passed ``speedup_vs_teacher`` is judged against the same teacher
    at the gate."""
    fit = getattr(recipe, "fit", None)
    return fit.space.exports[0].format if fit is not None else recipe.export.formats[0]


def export_config(recipe: Any) -> Any:
    """The recipe's export settings for one fp32 artifact in its reference format."""
    task = recipe.distill.task
    return recipe.export.just(
        reference_format(recipe), "fp32", task=_EXPORT_TASKS.get(task, task), int8_method="auto"
    )


def export_teacher(recipe: Any, out: Path) -> dict[str, Any]:
    """Export the teacher; ``{"artifact": path, "manifest_sha256": ...}``, or ``{"error": why}``."""
    from edgedistill.compress.model_folder import teacher_folder
    from edgedistill.export import export

    try:
        source = teacher_folder(
            recipe.distill.teacher, recipe.distill.task, out / REFERENCE_DIR / "teacher-model"
        )
        report = export(source, out / REFERENCE_DIR / "teacher", export_config(recipe))
    except EdgeDistillError as exc:
        log.warning("the teacher could not be exported as a reference point, so no row shows it: %s", exc)
        return {"error": str(exc)}
    if not report["artifacts"]:
        reasons = "; ".join(str(s) for s in report.get("skipped", [])) or "nothing exported"
        log.warning("the teacher could not be exported as a reference point: %s", reasons)
        return {"error": reasons}
    artifact = Path(report["artifacts"][0]["path"])
    return {"artifact": str(artifact), "manifest_sha256": sha256_file(artifact / "manifest.json")}


def bench_teacher(
    recipe: Any, out: Path, target: Any, teacher: dict[str, Any], artifacts: list[str], progress: bool
) -> dict[str, Any]:
    """Bench the exported teacher on ``target``; for embeddings, score ``artifacts`` against the teacher."""
    from edgedistill.bench import bench
    from edgedistill.pipeline import bench_data, load_targets

    if not teacher.get("artifact"):
        return {"error": teacher.get("error") or "the teacher was not exported"}
    data, columns = bench_data(recipe)
    embeddings = recipe.distill.task == "feature-extraction"
    folder = out / REFERENCE_DIR
    outputs: dict[str, Any] = {"report": str(folder / f"{target.name}.json"), "vs_teacher": None}
    yardstick = target.model_copy(update={"precisions": None, "formats": None})
    try:
        bench(
            [teacher["artifact"]],
            yardstick,
            data=None if embeddings else data,  # an embedder's cosine to itself is 1
            reference=teacher["artifact"],  # itself: accuracy on the labels, no second (torch) pass
            out=outputs["report"],
            progress=progress,
            **columns,
        )
        first_target = next(iter(load_targets(recipe)))
        if data is not None and embeddings and artifacts and target.name == first_target:
            quick = target.model_copy(
                update={"measurement": target.measurement.model_copy(update=_ACCURACY_ONLY)}
            )
            outputs["vs_teacher"] = str(folder / f"{target.name}.vs_teacher.json")
            bench(
                artifacts,
                quick,
                data=data,
                reference=recipe.distill.teacher.path,
                out=outputs["vs_teacher"],
                progress=progress,
                **columns,
            )
    except EdgeDistillError as exc:
        log.warning("the teacher reference on %s was not measured: %s", target.name, exc)
        return {"error": str(exc)}
    return outputs


# ----------------------------------------------------------------------------------------------
# reading it back, for the reports
# ----------------------------------------------------------------------------------------------


def _read(path: str) -> dict[str, Any] | None:
    return json.loads(Path(path).read_text(encoding="utf-8")) if Path(path).is_file() else None


def _teacher_outputs(state: dict[str, Any]) -> list[dict[str, Any]]:
    stages = state.get("stages") or {}
    return [(r or {}).get("outputs") or {} for name, r in stages.items() if name.startswith("teacher:")]


def candidates(report: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [e for e in (report or {}).get("artifacts", []) if e.get("role") == "candidate"]


def measured(entry: dict[str, Any]) -> dict[str, Any]:
    """A bench entry's status and figures as the report's table shows them: the same columns for the
    teacher's row and the artifacts' rows beneath it."""
    latency = entry.get("latency") or {}
    return {
        "status": entry.get("status"),
        "reason": entry.get("reason"),
        "size_mb": entry.get("size_mb"),
        "p50_ms": latency.get("p50_ms"),
        "p95_ms": latency.get("p95_ms"),
        "peak_rss_mb": (entry.get("memory") or {}).get("peak_rss_mb"),
    }


def task_metric(task: str | None, entry: dict[str, Any] | None) -> tuple[str | None, float | None]:
    """The task metric of a bench entry whose reference was the teacher (or of the teacher itself)."""
    acc = (entry or {}).get("accuracy") or {}
    if acc.get("status") != "measured":
        return None, None
    if task == "sequence-classification":
        return "accuracy", acc.get("accuracy")
    if task == "feature-extraction":
        return "cosine to teacher", acc.get("cosine_mean")
    return None, None


def teacher_row(
    out: Path, state: dict[str, Any], target: str, task: str | None
) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]]]:
    """The teacher's row on ``target`` and, for embeddings, each artifact's entry scored against the teacher."""
    outputs = ((state.get("stages") or {}).get(f"teacher:{target}") or {}).get("outputs") or {}
    if not outputs.get("report"):
        return None, {}
    entries = candidates(_read(outputs["report"]))
    if not entries:
        return None, {}
    entry = entries[0]
    metric, value = task_metric(task, entry)
    if task == "feature-extraction" and entry.get("status") == "measured":
        metric, value = "cosine to teacher", 1.0  # by definition
    row = {
        "target": target,
        "artifact": f"teacher {entry.get('name')}",
        "label": f"teacher {entry.get('label') or entry.get('name')}",
        **measured(entry),
        "task_metric": metric,
        "task_value": value,
    }
    # measured on the first target only: the same files against the same teacher on every target
    scored = [o.get("vs_teacher") for o in _teacher_outputs(state) if o.get("vs_teacher")]
    vs_teacher = candidates(_read(scored[0])) if scored else []
    return row, {e.get("name"): e for e in vs_teacher}


def against_teacher(row: dict[str, Any], teacher: dict[str, Any] | None, task: str | None, scored) -> None:
    """Add the row's task metric, its share of the teacher's, and its speed-up over the teacher."""
    metric, value = (
        task_metric(task, scored)
        if task == "feature-extraction"
        else ("accuracy", row["value"])
        if row["metric"] == "accuracy"
        else (None, None)
    )
    teacher_value = (teacher or {}).get("task_value")
    teacher_p50 = (teacher or {}).get("p50_ms")
    row["task_metric"], row["task_value"] = metric, value
    row["pct_of_teacher"] = (
        round(100 * value / teacher_value, 2)
        if task == "sequence-classification" and value is not None and teacher_value
        else None
    )
    row["speedup_vs_teacher"] = (
        round(teacher_p50 / row["p50_ms"], 3) if teacher_p50 and row.get("p50_ms") else None
    )
    row["speedup_basis"] = "sequential p50" if row["speedup_vs_teacher"] else None
