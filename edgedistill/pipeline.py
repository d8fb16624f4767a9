"""`edgedistill run`: one recipe from teacher to gated artifacts.

The job reads top to bottom::

    distill  teacher -> OUT/distill/student            (edgedistill.compress.distillation;
             `fit` hands in a student it trained instead: ``run(..., trained=...)``)
    export   student -> OUT/artifacts/<fmt>-<prec>/    (edgedistill.export.export)
    teacher  teacher fp32 -> OUT/reference/: the reports' reference point, and the interleaved
             baseline of a target whose budgets are relative to it (edgedistill.teacher_reference)
    bench    artifacts x targets -> OUT/bench/<target>.json   (edgedistill.bench.bench)
    gate     reports x budgets -> OUT/gate/<target>.{json,xml,md}; the exit code
    report   OUT/summary.json, summary.md, pareto.png, report.html

Each stage records a fingerprint of its inputs (its config, the hashes of the files it reads,
the fingerprint of what the stage before it produced) in ``OUT/run_state.json`` when it
finishes. A re-run skips a stage whose fingerprint is unchanged, ``force`` redoes named stages,
and an interrupted run resumes at the stage it stopped in (distillation itself resumes from its
last checkpoint). The gate and the reports are cheap and always run.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from edgedistill.bench.gating.options import GateOptions
from edgedistill.compress.config import DistillRecipe
from edgedistill.config import StrictModel, dump_config
from edgedistill.errors import EdgeDistillError
from edgedistill.export.config import ExportConfig
from edgedistill.fit.config import FitConfig
from edgedistill.io import atomic_write_json
from edgedistill.run_state import STATE_FILE, RunState, path_digest  # noqa: F401  (STATE_FILE: re-exported)
from edgedistill.run_state import digest as _digest
from edgedistill.signals import interruptible

log = logging.getLogger(__name__)

RUN_RECIPE_VERSION = 1
STAGES = ("distill", "export", "teacher", "bench", "gate")
CACHED_STAGES = ("distill", "export", "bench")


class TargetRef(StrictModel):
    """A target by built-in name or YAML path, with dotted-key overrides (``budgets.p95_latency_ms``)."""

    target: str
    set: dict[str, Any] = Field(default_factory=dict, description="dotted target keys to override")


class BenchStage(StrictModel):
    targets: list[str | TargetRef] = Field(
        default_factory=lambda: ["cpu"],
        description="targets to measure on: names (cpu, mobile-class, gpu-cuda), YAML paths, or {target, set}",
    )
    data: str | None = Field(None, description="eval split for accuracy (default: distill.data.eval)")
    set: dict[str, Any] = Field(
        default_factory=dict,
        description="dotted overrides applied to every target (e.g. measurement.min_seconds)",
    )
    teacher: bool = Field(
        True,
        description="also export the teacher at fp32 (first format; with `fit:` the first searched export) "
        "and measure it on every target: the reports' reference point and speed-up baseline (never gated)",
    )

    def target_refs(self) -> list[TargetRef]:
        return [TargetRef(target=t) if isinstance(t, str) else t for t in self.targets]


class RunRecipe(StrictModel):
    """Everything `edgedistill run` needs: a distill recipe plus export, bench and gate sections."""

    version: Literal[1] = RUN_RECIPE_VERSION
    distill: DistillRecipe
    export: ExportConfig = Field(default_factory=ExportConfig)
    bench: BenchStage = Field(default_factory=BenchStage)
    gate: GateOptions = Field(default_factory=GateOptions)
    fit: FitConfig | None = Field(
        None,
        description="search the student instead of naming it (`edgedistill fit`): distill.student is then "
        "left out, and the budgets of bench.targets[0] are the search's constraints",
    )

    @model_validator(mode="before")
    @classmethod
    def _fit_supplies_the_student(cls, data: Any) -> Any:
        """With `fit:`, each candidate brings its own student; the distill section validates with the first."""
        if not isinstance(data, dict) or not isinstance(data.get("fit"), dict):
            return data
        distill = data.get("distill")
        space = data["fit"].get("space")
        if not isinstance(distill, dict) or not isinstance(space, dict) or not space.get("layers"):
            return data
        student = dict(distill.get("student") or {})
        shaped = [
            k
            for k in ("layers", "hidden_size", "intermediate_size", "num_attention_heads", "path")
            if k in student
        ]
        if shaped:
            raise ValueError(
                f"distill.student.{shaped[0]}: with a `fit:` section the search builds every student; "
                "put the choices in fit.space (layers, intermediate_size, num_attention_heads, hidden_size)"
            )
        student["layers"] = space["layers"][0]
        return {**data, "distill": {**distill, "student": student}}


class RunError(EdgeDistillError):
    """The pipeline cannot go on (a stage's input is missing, an unknown stage was forced...)."""


# ----------------------------------------------------------------------------------------------
# the stages
# ----------------------------------------------------------------------------------------------


def _distill_fingerprint(recipe: RunRecipe) -> str:
    d = recipe.distill
    return _digest(
        {
            "config": dump_config(d),
            "teacher": path_digest(d.teacher.path),
            "student": path_digest(d.student.path),
            "train": path_digest(d.data.train),
            "eval": path_digest(d.data.eval),
            # several teachers: every one's weights, not only the first's (the config holds their paths
            # only); absent for one teacher, so one-teacher fingerprints stay what they were
            **({"teachers": [path_digest(t.path) for t in d.teachers]} if d.teachers else {}),
        }
    )


def stage_distill(recipe: RunRecipe, out: Path, fresh: bool, progress: bool) -> dict[str, Any]:
    from edgedistill.compress.distillation import distill

    report = distill(recipe.distill, out / "distill", overwrite=fresh, progress=progress)
    return {"student": str(out / "distill" / "student"), "metrics": report["student"]["metrics"]}


def adopt_student(distill_dir: Path) -> dict[str, Any]:
    """A distill folder trained elsewhere (by `fit`), recorded as this run's distill stage."""
    report = json.loads((distill_dir / "distill_report.json").read_text(encoding="utf-8"))
    return {
        "student": str(distill_dir / "student"),
        "metrics": report["student"]["metrics"],
        "trained_by": "fit",
    }


def stage_export(recipe: RunRecipe, out: Path, student: Path) -> dict[str, Any]:
    from edgedistill.export import export

    artifacts_dir = out / "artifacts"
    report = export(student, artifacts_dir, recipe.export)
    kept = {Path(a["path"]).name for a in report["artifacts"]}
    for stale in artifacts_dir.iterdir() if artifacts_dir.is_dir() else []:
        if stale.is_dir() and not stale.name.startswith(".") and stale.name not in kept:
            shutil.rmtree(stale)  # an artifact an earlier recipe asked for and this one does not
    return {"artifacts": [a["path"] for a in report["artifacts"]], "skipped": report["skipped"]}


def bench_data(recipe: RunRecipe) -> tuple[str | None, dict[str, Any]]:
    """The eval split and its columns; embeddings need no labels."""
    d = recipe.distill.data
    labels = d.label_column if recipe.distill.task == "sequence-classification" else None
    return recipe.bench.data or d.eval, {
        "text_column": d.text_column,
        "text_pair_column": d.text_pair_column,
        "label_column": labels,
    }


def dotted(overrides: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{measurement: {min_seconds: 3}}`` -> ``{"measurement.min_seconds": 3}`` (both spellings work)."""
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        if isinstance(value, dict) and value:
            flat.update(dotted(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def load_targets(recipe: RunRecipe) -> dict[str, Any]:
    """Validate every target up front, so a typo fails before hours of training, not after."""
    from edgedistill.targets import load_target

    targets = {}
    for ref in recipe.bench.target_refs():
        target = load_target(ref.target, {**dotted(recipe.bench.set), **dotted(ref.set)})
        if target.name in targets:
            raise RunError(f"two bench targets are named {target.name!r}; give each target file its own name")
        targets[target.name] = target
    return targets


def measured_settings(target) -> dict[str, Any]:
    """What a bench report depends on; budgets and regression thresholds only matter to the gate."""
    judged = ("budgets", "regression", "description", "emulates", "does_not_emulate")
    return {k: v for k, v in dump_config(target).items() if k not in judged}


def relative_budgets(target) -> list[str]:
    """The target's budgets judged against the teacher measured in the same report."""
    from edgedistill.bench.gating.relative import RELATIVE_BUDGETS

    return [k for k in RELATIVE_BUDGETS if getattr(target.budgets, k, None) is not None]


def stage_bench(
    recipe: RunRecipe, out: Path, target, artifacts: list[str], progress: bool, baseline: str | None = None
) -> str:
    from edgedistill.bench import bench

    data, columns = bench_data(recipe)
    path = out / "bench" / f"{target.name}.json"
    bench(artifacts, target, data=data, out=path, progress=progress, baseline_artifact=baseline, **columns)
    return str(path)


def stage_gate(recipe: RunRecipe, out: Path, target, report_path: str) -> dict[str, Any]:
    from edgedistill.bench.gating import gate, write_outputs

    result = gate(report_path, target, **recipe.gate.gate_kwargs())
    folder = out / "gate"
    atomic_write_json(folder / f"{target.name}.json", result.to_dict())
    write_outputs(
        result, junit=folder / f"{target.name}.junit.xml", markdown_path=folder / f"{target.name}.md"
    )
    return {"target": target.name, "verdict": result.verdict, "exit_code": result.exit_code}


# ----------------------------------------------------------------------------------------------
# the verb
# ----------------------------------------------------------------------------------------------


@interruptible
def run(
    recipe: RunRecipe,
    out_dir: str | Path,
    *,
    force: Iterable[str] = (),
    progress: bool = True,
    on_stage: Callable[[str, str, float], None] | None = None,
    trained: Path | None = None,
) -> dict[str, Any]:
    """Run (or resume) the pipeline into ``out_dir``; returns the summary (``exit_code`` is the gate's).

    ``trained``: a distill folder already trained for this recipe (``OUT/distill``, `edgedistill fit`'s
    winner): the distill stage records it instead of training.

    ``force``: stages to redo even when their inputs are unchanged (``all`` redoes every one).
    ``on_stage(stage, status, seconds)`` is told about every stage: ``done`` or ``skipped``.
    """
    forced = set(force)
    if "all" in forced:
        forced = set(STAGES)
    unknown = forced - set(STAGES)
    if unknown:
        raise RunError(f"--force takes stages {', '.join(STAGES)} or all, not {', '.join(sorted(unknown))}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "run_recipe.json", dump_config(recipe))
    state = RunState(out)
    tell = on_stage or (lambda stage, status, seconds: None)
    targets = load_targets(recipe)

    def stage(name: str, fingerprint: str, work: Callable[[], Any]) -> Any:
        key = name.split(":")[0]
        if key not in forced and state.is_done(name, fingerprint):
            tell(name, "skipped", 0.0)
            return state.get(name)["outputs"]
        state.mark(name, status="running", fingerprint=fingerprint)
        started = time.perf_counter()
        outputs = work()
        seconds = time.perf_counter() - started
        state.mark(name, status="done", fingerprint=fingerprint, seconds=round(seconds, 2), outputs=outputs)
        tell(name, "done", seconds)
        return outputs

    # 1. distill: start afresh when forced or when the recipe/teacher/data changed since the last run
    fp_distill = _distill_fingerprint(recipe)
    previous = state.get("distill")
    fresh = "distill" in forced or bool(previous and previous.get("fingerprint") != fp_distill)
    if trained is not None:
        distilled = stage("distill", fp_distill, lambda: adopt_student(Path(trained)))
    else:
        distilled = stage("distill", fp_distill, lambda: stage_distill(recipe, out, fresh, progress))
    student = Path(distilled["student"])

    # 2. export: the student's files are its input, so a retrained student re-exports
    fp_export = _digest({"config": dump_config(recipe.export), "student": path_digest(student)})
    exported = stage("export", fp_export, lambda: stage_export(recipe, out, student))
    artifacts = exported["artifacts"]

    # 3. the teacher fp32: the reports' reference point, and the interleaved baseline of relative budgets
    from edgedistill import teacher_reference as ref

    teacher: dict[str, Any] = {}
    if recipe.bench.teacher or any(relative_budgets(t) for t in targets.values()):
        fp_teacher = _digest(
            {
                "config": dump_config(ref.export_config(recipe)),
                "teacher": path_digest(recipe.distill.teacher.path),
            }
        )
        teacher = stage("teacher", fp_teacher, lambda: ref.export_teacher(recipe, out))

    # 4. bench, one report per target (with the teacher interleaved where a budget is relative to it)
    data, _ = bench_data(recipe)
    manifests = {Path(a).name: path_digest(Path(a) / "manifest.json") for a in artifacts}
    reports = {}
    for name, target in targets.items():
        baseline = teacher.get("artifact") if relative_budgets(target) else None
        fp = _digest(
            {
                "target": measured_settings(target),
                "manifests": manifests,
                "data": path_digest(data),
                "baseline": teacher.get("manifest_sha256") if baseline else None,
            }
        )
        reports[name] = stage(
            f"bench:{name}",
            fp,
            lambda target=target, baseline=baseline: stage_bench(
                recipe, out, target, artifacts, progress, baseline
            ),
        )

    # 4b. the teacher measured on its own for the reports (never gated)
    if recipe.bench.teacher:
        for name, target in targets.items():
            fp = _digest({"bench": state.get(f"bench:{name}").get("fingerprint"), "teacher": teacher})
            stage(
                f"teacher:{name}",
                fp,
                lambda target=target: ref.bench_teacher(recipe, out, target, teacher, artifacts, progress),
            )

    # 5. gate (milliseconds: always judged again, so a changed budget takes effect at once)
    verdicts = []
    for name, target in targets.items():
        started = time.perf_counter()
        verdicts.append(stage_gate(recipe, out, target, reports[name]))
        tell(f"gate:{name}", verdicts[-1]["verdict"], time.perf_counter() - started)
    from edgedistill.bench.gating import worst_exit_code

    exit_code = worst_exit_code(v["exit_code"] for v in verdicts)

    from edgedistill.report import write_reports

    return write_reports(out, recipe, state.data, verdicts, exit_code)
