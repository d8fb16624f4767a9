"""`fit`: from a teacher and a target's budgets to the most accurate student that passes the gate.

The verb reads as its phases::

    plan       the space as shapes, every impossible choice refused at once; the validation split
    cost       the teacher and every (shape, format, precision) exported and measured on the target
               (short runs, cached per device); clearly-over shapes are dropped here, untrained
    proxy      an Optuna study: short fake-quant distillations, successive halving over rungs,
               ranked on the validation split carved from the training data
    finalists  the best proxies distilled in full (the recipe's training, QAT), exported, measured
               in full interleaved with the teacher, and gated (on the validation split)
    winner     the most accurate finalist that passes; `edgedistill run` then exports, benches and
               gates it on the recipe's eval split into OUT (an ordinary run folder), reports in OUT/fit

Every phase resumes: costs are cached (per device, and per run in OUT/fit/screened), the study
lives in its storage, each rung and each finalist is a resumable distill folder; each phase's
CPU seconds add up over every session in OUT/fit/times.json. ``worker=True`` runs plan, cost
and proxy only: another process (or machine, with a shared ``--storage``) helping the same
study. ``screen_only=True`` runs plan and cost only ("which shapes fit my device?"): the report
lists every candidate's measured cost and the feasible set, and a later full `fit` in the same
OUT starts from that screening.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from edgedistill.errors import EdgeDistillError
from edgedistill.fit import phases, proxy
from edgedistill.fit.data import carve
from edgedistill.fit.report import write_fit_report
from edgedistill.fit.space import Shape, plan_shapes, read_teacher_config
from edgedistill.fit.times import PhaseTimes
from edgedistill.io import atomic_dir, atomic_write_json
from edgedistill.signals import interruptible

log = logging.getLogger(__name__)

EXIT_NO_CANDIDATE = 1


class NoCandidateError(EdgeDistillError):
    """No shape of the space meets the target's budgets (exit 1, like a failed gate)."""

    exit_code = EXIT_NO_CANDIDATE


def _distill_recipe(recipe, shape: Shape, train: str, eval_: str, **training: Any):
    from edgedistill.compress.config import DistillRecipe
    from edgedistill.config import dump_config

    raw = dump_config(recipe.distill)
    raw["student"] = {**shape.student_config(), "prune": raw.get("student", {}).get("prune", {})}
    raw["data"] = {**raw["data"], "train": train, "eval": eval_, "max_train_samples": None}
    raw["training"] = {**raw["training"], **training}
    return DistillRecipe.model_validate(raw)


class _Proxy:
    """Trains one shape rung by rung; each rung continues the previous rung's student."""

    def __init__(self, recipe, split: dict[str, Any], fit_dir: Path, lock):
        self.recipe, self.split, self.fit_dir, self.lock = recipe, split, fit_dir, lock
        self.metric = proxy.METRIC[recipe.distill.task]

    def __call__(self, shape: Shape, index: int, steps: int) -> float:
        rungs = self.recipe.fit.proxy.rungs()
        folder = self.fit_dir / "trials" / shape.key / f"rung-{index}"
        previous = rungs[index - 1] if index else 0
        recipe = _distill_recipe(
            self.recipe,
            shape,
            self.split["train"],
            self.split["val"],
            max_steps=steps - previous,
            save_steps=max(1, steps - previous),
            **_teacher_cache(self.recipe, self.fit_dir),
        )
        if index:  # continue from the last rung's student (its float weights learned through fake-quant)
            student = recipe.student.model_copy(
                update={"path": str(self.fit_dir / "trials" / shape.key / f"rung-{index - 1}" / "student"),
                        "layers": None, "intermediate_size": None, "num_attention_heads": None, "hidden_size": None}
            )  # fmt: skip
            recipe = recipe.model_copy(update={"student": student})
        report_path = folder / "distill_report.json"
        if not report_path.is_file():
            _timed_distill(recipe, folder, folder / RUNG_CPU, self.lock)
        report = json.loads(report_path.read_text(encoding="utf-8"))
        return float(report["student"]["metrics"][self.metric])


RUNG_CPU = "cpu.json"  # in each rung's folder: the CPU seconds its distillation took


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


def proxy_trials_cpu(fit_dir: Path) -> float:
    """CPU seconds of every finished proxy rung of OUT, whichever session or worker trained it."""
    total = 0.0
    for path in sorted((fit_dir / "trials").glob(f"*/rung-*/{RUNG_CPU}")):
        total += float(json.loads(path.read_text(encoding="utf-8"))["cpu_s"])
    return round(total, 2)


def _teacher_cache(recipe, fit_dir: Path) -> dict[str, Any]:
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


def _finalist(
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
    full = _distill_recipe(recipe, shape, split["train"], split["val"], **_teacher_cache(recipe, fit_dir))
    cpu_file = folder / "distill_cpu.json"  # what the bar compares the search with: one full distillation
    if not (folder / "distill" / "distill_report.json").is_file():
        _timed_distill(full, folder / "distill", cpu_file, lock)
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
        "distill_cpu_note": None if record.get("cpu_s") is not None else "not recorded",
    }


def _accuracy_budget(budget: str) -> bool:
    return budget in ("min_accuracy", "max_accuracy_drop", "min_agreement", "min_cosine")


def _entry(report_path: Path) -> dict[str, Any]:
    report = json.loads(report_path.read_text(encoding="utf-8"))
    entry = next((e for e in report["artifacts"] if e.get("role", "candidate") == "candidate"), {})
    return entry.get("latency") or {}


@interruptible
def fit(recipe, out_dir: str | Path, *, storage: str | None = None, worker: bool = False, progress: bool = True,
        on_phase=None, screen_only: bool = False) -> dict[str, Any]:  # fmt: skip
    """Search, distill and gate the student; returns the fit report (``exit_code`` as `run`'s).

    ``screen_only``: plan and cost only; the report's status is "screened" (exit 0) when some
    candidate is feasible, `NoCandidateError` (exit 1) otherwise."""
    from edgedistill.pipeline import load_targets

    cfg = recipe.fit
    if cfg is None:
        raise EdgeDistillError(
            "the recipe has no `fit:` section; `edgedistill run` distills its fixed student"
        )
    out = Path(out_dir)
    fit_dir = out / "fit"
    fit_dir.mkdir(parents=True, exist_ok=True)
    tell = on_phase or (lambda phase, text: None)
    ledger = PhaseTimes(fit_dir, "screen-only" if screen_only else "worker" if worker else "full")
    lap = ledger.lap

    # 1. plan --------------------------------------------------------------------------------------
    d = recipe.distill
    target = next(iter(load_targets(recipe).values()))
    shapes = plan_shapes(cfg, read_teacher_config(d.teacher.path), d.task, target)
    split = carve(d, fit_dir / "data", cfg.proxy, cfg.seed)
    tell("plan", f"{len(shapes)} shapes x {len(cfg.space.exports)} exports on target {target.name}; "
                 f"{split['train_count']} training / {split['val_count']} validation rows")  # fmt: skip
    lap("plan")

    # 2. cost --------------------------------------------------------------------------------------
    screening = phases.Screening(
        recipe, target, fit_dir, read_teacher_config(d.teacher.path), lambda s: tell("cost", s)
    )
    teacher = screening.teacher()
    rows = screening.shapes(shapes, teacher)
    feasible = [r for r in rows if r["feasible"]]
    tell(
        "cost",
        f"{len(feasible)} of {len(rows)} shapes within the budgets (x{cfg.cost.reject_margin:g} margin)",
    )
    lap("cost")
    if not feasible:
        message = phases.infeasible_message(rows)
        report = {"status": "no candidate", "message": message, "screen_only": screen_only, "feasible": [],
                  "times": ledger.totals(), "sessions": ledger.sessions()}  # fmt: skip
        write_fit_report(out, report, rows, [], [], target, d.task)
        raise NoCandidateError(f"fit: {message}")
    if screen_only:
        report = {
            "status": "screened",
            "message": f"{len(feasible)} of {len(rows)} shapes within the budgets at screening "
            f"(x{cfg.cost.reject_margin:g} margin); run without --screen-only to train and gate them",
            "feasible": phases.feasible_set(rows),
            "teacher_source": _teacher_source(d.teacher),
            "times": ledger.totals(),
            "sessions": ledger.sessions(),
            "exit_code": 0,
        }
        return write_fit_report(out, report, rows, [], [], target, d.task)

    # 3. proxy -------------------------------------------------------------------------------------
    url = proxy.storage_url(cfg, fit_dir, storage)
    study = proxy.open_study(cfg, proxy.open_storage(url))
    by_key = {Shape.from_dict(r["shape"]).key: Shape.from_dict(r["shape"]) for r in feasible}
    proxy.enqueue(study, proxy.promising_first(feasible))

    def lock(exclusive: bool):
        return phases.device_lock(screening.cache_dir, target, exclusive)

    def on_trial(trial) -> None:
        shape = (trial.user_attrs.get("shape") or {}).get("key", "-")
        value = f" {trial.value:.4f}" if trial.value is not None else ""
        at = f" ({trial.user_attrs['pruned_at']})" if trial.user_attrs.get("pruned_at") else ""
        tell("proxy", f"{shape} {trial.state.name.lower()}{value}{at}; {proxy.waiting(study)} shape(s) left")

    tell("proxy", f"{proxy.waiting(study)} shape(s) to train, rungs at {cfg.proxy.rungs()} steps")
    for attempt in range(3):
        proxy.run_study(study, by_key, _Proxy(recipe, split, fit_dir, lock), cfg, on_trial=on_trial)
        trials = proxy.trial_rows(study)
        unfinished = [t for t in trials if t["state"] in ("running", "waiting")]
        if worker or not unfinished or attempt == 2:
            break
        # another worker's trials: finished there, or failed by their stale heartbeats and retried here
        tell(
            "proxy",
            f"{len(unfinished)} trial(s) running elsewhere; waiting {proxy.GRACE_S + proxy.HEARTBEAT_S} s",
        )
        time.sleep(proxy.GRACE_S + proxy.HEARTBEAT_S)
    lap("proxy")
    if worker:
        return {"status": "worker done", "trials": trials, "times": ledger.totals(), "exit_code": 0}
    if unfinished:
        raise EdgeDistillError(
            f"fit: {len(unfinished)} trial(s) of study {cfg.study_name!r} are still running on other workers "
            f"({', '.join(str(t['worker']) for t in unfinished)}); run this command again when they finish"
        )

    # 4. finalists ---------------------------------------------------------------------------------
    # a study outlives its screening: a shape the budgets now reject is trained but never a finalist
    ranked = proxy.finalist_order([t for t in trials if t["shape"]["key"] in by_key])
    costs = {Shape.from_dict(r["shape"]).key: r for r in rows}
    teacher_art = _teacher_artifact(recipe, fit_dir, screening)
    finalists = []
    for row in ranked[: cfg.finalists]:
        tell("finalists", f"distilling {row['shape']['key']} in full")
        finalists.append(_finalist(recipe, row, costs, teacher_art, split, fit_dir, lock, target))
    lap("finalists")

    # 5. winner ------------------------------------------------------------------------------------
    passing = [f for f in finalists if f["passes"]]
    if not passing:
        message = "; ".join(
            f"{f['shape']['key']}: " + ", ".join(x for a in f["artifacts"] for x in a["failed"][:2])
            for f in finalists
        )
        report = {"status": "no finalist passes", "message": message, "times": ledger.totals()}
        write_fit_report(out, report, rows, trials, finalists, target, d.task)
        raise NoCandidateError(f"fit: no finalist passes the target's budgets at full measurement: {message}")
    winner = max(passing, key=lambda f: f["val_metric"])
    winner["reason"] = (
        f"the best {winner['metric']} on the validation split ({winner['val_metric']:.4f}) among the "
        f"{len(passing)} finalist(s) whose full measurement passed every cost budget"
    )
    # the run report of the winner shows the search: its report is written before the final run
    write_fit_report(
        out,
        {"status": "final run", "winner": winner, "times": ledger.totals()},
        rows,
        trials,
        finalists,
        target,
        d.task,
    )
    summary = _final_run(recipe, out, winner, split, progress)
    lap("final")
    times = ledger.totals()  # every session's: a --screen-only run's screening counts here too
    # the proxy's rungs as their folders record them: the ledger loses a killed session's phase,
    # not its finished rungs; the larger of the two, so neither account's gap flatters the search
    times["proxy_trials_cpu_s"] = proxy_trials_cpu(fit_dir)
    search_cpu = times["cost_cpu_s"] + max(times["proxy_cpu_s"], times["proxy_trials_cpu_s"])
    report = {
        "status": "done",
        "winner": winner,
        "teacher_source": _teacher_source(d.teacher),
        "times": times,
        "sessions": ledger.sessions(),
        "search_cpu_s": round(search_cpu, 2),
        # the bar: the search (cost + proxy) costs at most 2x one full distillation of the winner
        "search_cpu_vs_winner_distill": round(search_cpu / winner["distill_cpu_s"], 3)
        if winner.get("distill_cpu_s")
        else None,  # not judged: winner["distill_cpu_note"] says why
        "exit_code": summary["exit_code"],
    }
    return write_fit_report(out, report, rows, trials, finalists, target, d.task)


def _teacher_source(teacher) -> dict[str, Any]:
    """Where the teacher came from: its path and, for a GGUF file, its sha256 and quantization."""
    from edgedistill.compress import models

    return {"path": teacher.path, "gguf": models.teacher_provenance(teacher)}


def _teacher_artifact(recipe, fit_dir: Path, screening: phases.Screening) -> str | None:
    """The teacher fp32 in the first export format: the interleaved baseline of relative budgets."""
    from edgedistill.export import export

    fmt = recipe.fit.space.exports[0].format
    art = fit_dir / "teacher" / f"{fmt}-fp32"
    if not (art / "manifest.json").is_file():
        export(screening.teacher_folder(), fit_dir / "teacher", recipe.export.just(fmt, "fp32"))
    return str(art)


def _final_run(
    recipe, out: Path, winner: dict[str, Any], split: dict[str, Any], progress: bool
) -> dict[str, Any]:
    """OUT becomes an ordinary run folder of the winner: exported, benched on the eval split, gated."""
    from edgedistill.pipeline import run

    shape = Shape.from_dict(winner["shape"])
    # the pairs that passed the full measurement, not the cross product of their formats and precisions
    pairs = [Path(a["path"]).name.split("-", 1) for a in winner["artifacts"] if a["passes_cost"]]
    formats, precisions = sorted({f for f, _ in pairs}), sorted({p for _, p in pairs})
    only = [{"format": f, "precision": p} for f, p in pairs]
    final = recipe.model_copy(
        update={
            "distill": _distill_recipe(
                recipe, shape, split["train"], recipe.distill.data.eval or split["val"]
            ),
            "export": recipe.export.model_validate(
                {**recipe.export.model_dump(), "formats": formats, "precisions": precisions, "only": only}
            ),
        }
    )
    distill_dir = out / "distill"
    if not (distill_dir / "distill_report.json").is_file():
        with atomic_dir(distill_dir) as tmp:
            shutil.copytree(
                winner["distill"], tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("checkpoints")
            )
    atomic_write_json(out / "fit" / "winner.json", winner)
    return run(final, out, progress=progress, trained=distill_dir)
