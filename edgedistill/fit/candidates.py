"""A screened shape trained and judged: the proxy's rungs, a finalist's full distillation, export,
interleaved bench and gate, and the CPU seconds each distillation took.

`Proxy` trains one shape rung by rung for the Optuna study (each rung continues the last rung's
student, in ``OUT/fit/trials/<shape>/rung-<i>``); `finalist` distills a shape in full with the
recipe's training into ``OUT/fit/final/<shape>``, exports its feasible (format, precision) pairs,
benches each interleaved with the teacher under the device lock and gates it. Every candidate
reads the teacher's outputs from one cache (`teacher_cache`). Each distillation's CPU seconds go
to a file beside it (`edgedistill.cpu_ledger` counts them across kills): the search's cost and
the bar "search CPU against one full distillation of the winner" are built from them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgedistill.fit import proxy
from edgedistill.fit.distill_cache import DistillCache
from edgedistill.fit.space import Shape
from edgedistill.io import atomic_write_json


def distill_recipe(recipe, shape: Shape, train: str, eval_: str, **training: Any):
    from edgedistill.compress.config import DistillRecipe
    from edgedistill.config import dump_config

    raw = dump_config(recipe.distill)
    raw["student"] = {**shape.student_config(), "prune": raw.get("student", {}).get("prune", {})}
    raw["data"] = {**raw["data"], "train": train, "eval": eval_, "max_train_samples": None}
    raw["training"] = {**raw["training"], **training}
    return DistillRecipe.model_validate(raw)


class Proxy:
    """Trains one shape rung by rung; each rung continues the previous rung's student."""

    def __init__(self, recipe, split: dict[str, Any], fit_dir: Path, lock):
        self.recipe, self.split, self.fit_dir, self.lock = recipe, split, fit_dir, lock
        self.metric = proxy.METRIC[recipe.distill.task]
        self.cache = distill_cache(recipe)

    def __call__(self, shape: Shape, index: int, steps: int) -> float:
        rungs = self.recipe.fit.proxy.rungs()
        folder = self.fit_dir / "trials" / shape.key / f"rung-{index}"
        previous = rungs[index - 1] if index else 0
        recipe = distill_recipe(
            self.recipe,
            shape,
            self.split["train"],
            self.split["val"],
            max_steps=steps - previous,
            save_steps=max(1, steps - previous),
            **teacher_cache(self.recipe, self.fit_dir),
        )
        if index:  # continue from the last rung's student (its float weights learned through fake-quant)
            student = recipe.student.model_copy(
                update={"path": str(self.fit_dir / "trials" / shape.key / f"rung-{index - 1}" / "student"),
                        "layers": None, "intermediate_size": None, "num_attention_heads": None, "hidden_size": None}
            )  # fmt: skip
            recipe = recipe.model_copy(update={"student": student})
        report_path = folder / "distill_report.json"
        if not report_path.is_file():
            _trained_or_reused(recipe, folder, folder / RUNG_CPU, self.lock, self.cache)
        report = json.loads(report_path.read_text(encoding="utf-8"))
        return float(report["student"]["metrics"][self.metric])


RUNG_CPU = "cpu.json"  # in each rung's folder: the CPU seconds its distillation took


def distill_cache(recipe) -> DistillCache | None:
    return DistillCache(recipe.fit.distill_cache) if recipe.fit.distill_cache else None


def _trained_or_reused(recipe, dest: Path, cpu_file: Path, lock, cache: DistillCache | None) -> None:
    """The cached distillation of this recipe where there is one; else distilled here (and cached)."""
    if cache is not None and cache.restore(recipe, dest, cpu_file):
        return
    _timed_distill(recipe, dest, cpu_file, lock)
    if cache is not None:
        cache.store(recipe, dest, cpu_file)


def _timed_distill(recipe, dest: Path, cpu_file: Path, lock) -> None:
    """`distill` into DEST under the device's shared lock; its CPU seconds go to CPU_FILE.

    Written when the distillation finishes, so a rung or finalist counts in whichever session (or
    worker) finished it. A distillation resumed after a kill counts what one uninterrupted run
    costs, from its own `edgedistill.cpu_ledger` (``sessions`` says how many it took).
    """
    from edgedistill.compress.distillation import distill

    with lock(exclusive=False):
        report = distill(recipe, dest, progress=False)
    training = report.get("training") or {}
    atomic_write_json(
        cpu_file,
        {
            "cpu_s": training.get("cpu_s"),
            "sessions": training.get("cpu_sessions"),
            "complete": training.get("cpu_complete"),
        },
    )


def proxy_trials_cpu(fit_dir: Path) -> dict[str, float]:
    """CPU seconds of every finished proxy rung of OUT, whichever session or worker trained it:
    ``trained`` here, and ``reused`` (what the rungs taken from the distill cache cost where they ran)."""
    total = {"trained": 0.0, "reused": 0.0}
    for path in sorted((fit_dir / "trials").glob(f"*/rung-*/{RUNG_CPU}")):
        record = json.loads(path.read_text(encoding="utf-8"))
        total["reused" if record.get("reused_from") else "trained"] += float(record.get("cpu_s") or 0.0)
    return {k: round(v, 2) for k, v in total.items()}


def teacher_cache(recipe, fit_dir: Path) -> dict[str, Any]:
    """Teacher outputs computed once for every candidate, where the losses allow a cache."""
    d = recipe.distill
    # the per-example cache serves logits and embeddings; layer losses need the live teacher, and a
    # causal-lm cache needs a top_k on token_kd (the recipe's own choice)
    if d.task == "causal-lm" or any(s.name in ("hidden_mse", "attention_kl") for s in d.losses):
        return {}
    # the recipe's own folder lets several searches over one teacher and data share it (its entries
    # are keyed by the teacher's weights and the tokenized rows, so a mismatch is computed anew)
    where = d.training.teacher_cache_dir or str(fit_dir / "teacher_cache")
    return {"cache_teacher_outputs": True, "teacher_cache_dir": where}


def finalist(
    recipe, row: dict[str, Any], costs: dict[str, Any], teacher_art: str | None, split, fit_dir, lock, target
):
    """Distill a finalist in full, export its feasible pairs, bench them interleaved with the teacher, gate."""
    from edgedistill.bench import bench
    from edgedistill.bench.gating import gate
    from edgedistill.export import export

    shape = Shape.from_dict(row["shape"])
    folder = fit_dir / "final" / shape.key
    pairs = [(e["format"], e["precision"]) for e in costs[shape.key]["exports"] if e["feasible"]]
    d = recipe.distill
    full = distill_recipe(recipe, shape, split["train"], split["val"], **teacher_cache(recipe, fit_dir))
    cpu_file = folder / "distill_cpu.json"  # what the bar compares the search with: one full distillation
    if not (folder / "distill" / "distill_report.json").is_file():
        _trained_or_reused(full, folder / "distill", cpu_file, lock, distill_cache(recipe))
    artifacts = []
    for fmt, precision in pairs:
        art = folder / "artifacts" / f"{fmt}-{precision}"
        if not (art / "manifest.json").is_file():
            cfg = recipe.export.just(fmt, precision)
            export(folder / "distill" / "student", folder / "artifacts", cfg)
        artifacts.append(str(art))
    from edgedistill.pipeline import bench_data

    _, columns = bench_data(recipe)
    results = []
    for art in artifacts:
        name = Path(art).name
        report_path = folder / "bench" / f"{name}.json"
        if not report_path.is_file():
            with lock(exclusive=True):
                bench(
                    [art],
                    target,
                    data=split["val"],
                    baseline_artifact=teacher_art,
                    out=report_path,
                    **columns,
                )
        result = gate(report_path, target)
        cost_checks = [c for c in result.checks if not _accuracy_budget(c.budget)]
        results.append(
            {
                "artifact": name,
                "path": art,
                "exit_code": result.exit_code,
                "verdict": result.verdict,
                # a budget that does not apply to the task is skipped; anything else undecided does not pass
                "passes_cost": any(c.status == "passed" for c in cost_checks)
                and not any(c.status in ("failed", "error", "inconclusive") for c in cost_checks),
                "failed": [
                    f"{c.budget}: {c.message}"
                    for c in cost_checks
                    if c.status in ("failed", "error", "inconclusive")
                ],
                "failed_budgets": sorted(
                    {c.budget for c in cost_checks if c.status in ("failed", "error", "inconclusive")}
                ),
                "p50_ms": _entry(report_path).get("p50_ms"),
                "p95_ms": _entry(report_path).get("p95_ms"),
            }
        )
    distilled = json.loads((folder / "distill" / "distill_report.json").read_text(encoding="utf-8"))
    metric = proxy.METRIC[d.task]
    return {
        "shape": row["shape"],
        "proxy_value": row["proxy_value"],
        "val_metric": distilled["student"]["metrics"].get(metric),
        "metric": metric,
        "distill": str(folder / "distill"),
        **_distill_cpu(cpu_file),
        "artifacts": results,
        "passes": any(r["passes_cost"] for r in results),
    }


def _distill_cpu(cpu_file: Path) -> dict[str, Any]:
    """A finalist's distillation CPU seconds (and the sessions it took), or None and why."""
    record = json.loads(cpu_file.read_text(encoding="utf-8")) if cpu_file.is_file() else {}
    # written before the CPU ledger, or resumed from a run begun before it: later sessions only
    if record.get("resumed") or record.get("complete") is False:
        return {"distill_cpu_s": None, "distill_cpu_note": (
            f"resumed after a kill: {record['cpu_s']} CPU s of its later sessions only; delete "
            f"{cpu_file.parent / 'distill'} and run fit again to measure one uninterrupted distillation")}  # fmt: skip
    return {
        "distill_cpu_s": record.get("cpu_s"),
        "distill_cpu_sessions": record.get("sessions"),
        "distill_reused_from": record.get("reused_from"),
        "distill_cpu_note": None if record.get("cpu_s") is not None else "not recorded",
    }


def choose_finalists(
    ranked: list[dict[str, Any]],
    cfg,
    costs: dict[str, Any],
    distill_one: Callable[[dict[str, Any], bool], dict],
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The first ``cfg.finalists`` of the ranking distilled and measured in full (``distill_one``); when
    none passes, up to ``cfg.fallback_finalists`` more, next in the ranking, passing over a shape that
    would miss a latency budget the same way (`no_faster_than_a_miss`). Returns the finalists (a
    fallback one marked) and why each passed-over shape was."""
    finalists = [distill_one(row, False) for row in ranked[: cfg.finalists]]
    passed_over: dict[str, str] = {}
    for row in ranked[cfg.finalists :]:
        if any(f["passes"] for f in finalists) or len(finalists) - cfg.finalists >= cfg.fallback_finalists:
            break
        if (why := no_faster_than_a_miss(row, finalists, costs)) is not None:
            passed_over[row["shape"]["key"]] = why
            continue
        finalists.append({**distill_one(row, True), "fallback": True})
    return finalists, passed_over


LATENCY_BUDGETS = {
    "speedup_vs_teacher", "p50_latency_ms", "p95_latency_ms", "p99_latency_ms", "min_throughput_per_s",
    "ttft_ms", "min_decode_tokens_per_s",
}  # fmt: skip


def no_faster_than_a_miss(
    row: dict[str, Any], finalists: list[dict[str, Any]], costs: dict[str, Any]
) -> str | None:
    """Why a fallback finalist would miss too, or None: every feasible export of ``row`` screened no
    faster (p50) than the same export of a finalist that failed, or left undecided, a latency budget
    at full measurement."""
    missed: dict[str, tuple[float, str]] = {}  # export -> the fastest screened p50 that missed, and whose
    for f in finalists:
        screened = {f"{e['format']}-{e['precision']}": e["figures"].get("p50_ms")
                    for e in costs[f["shape"]["key"]]["exports"]}  # fmt: skip
        for a in f["artifacts"]:
            p50 = screened.get(a["artifact"])
            if p50 is not None and LATENCY_BUDGETS.intersection(a["failed_budgets"]):
                if a["artifact"] not in missed or p50 < missed[a["artifact"]][0]:
                    missed[a["artifact"]] = (p50, f["shape"]["key"])
    reasons = []
    for e in costs[row["shape"]["key"]]["exports"]:
        if not e["feasible"]:
            continue
        name, p50 = f"{e['format']}-{e['precision']}", e["figures"].get("p50_ms")
        if name not in missed or p50 is None or p50 < missed[name][0]:
            return None
        reasons.append(
            f"{name} screened p50 {p50:.3f} ms, no faster than {missed[name][1]}'s {missed[name][0]:.3f} ms"
        )
    return (
        "passed over as a fallback finalist: "
        + "; ".join(reasons)
        + ", which missed a latency budget in full"
    )


def _accuracy_budget(budget: str) -> bool:
    return budget in ("min_accuracy", "max_accuracy_drop", "min_agreement", "min_cosine")


def _entry(report_path: Path) -> dict[str, Any]:
    report = json.loads(report_path.read_text(encoding="utf-8"))
    entry = next((e for e in report["artifacts"] if e.get("role", "candidate") == "candidate"), {})
    return entry.get("latency") or {}
