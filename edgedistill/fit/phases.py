"""The phases of `fit` that touch the device: the teacher reference, screening every shape, the finalists.

Measurements and training never overlap on this machine: a measurement holds the device lock
exclusively, a training run holds it shared (`device_lock`), so a second worker on the same
machine waits instead of timing a candidate while the other trains. An ssh device at a loopback
address is this machine too, and takes the same lock; the process measuring there (started over
ssh by the bench's runner) takes none, so the lock cannot wait on itself.
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import ip_address
from pathlib import Path
from typing import Any

from edgedistill.fit import cost as cost_lib
from edgedistill.fit.config import ExportChoice
from edgedistill.fit.cost_model import CostModel, features
from edgedistill.fit.space import Shape, teacher_digest
from edgedistill.io import atomic_write_json

log = logging.getLogger(__name__)


def this_machine(device) -> bool:
    """The local device, or an ssh device at a loopback address: measured on the cores that train."""
    if device.kind == "local":
        return True
    if device.kind != "ssh" or not device.host:
        return False
    if device.host == "localhost":
        return True
    try:
        return ip_address(device.host.strip("[]")).is_loopback
    except ValueError:
        return False


@contextmanager
def device_lock(cache_dir: Path, target, exclusive: bool) -> Iterator[None]:
    """Exclusive while measuring on this machine, shared while training (other devices: no lock)."""
    if not this_machine(target.device):
        yield
        return
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / "local-device.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def screening_target(target, cfg):
    """The target with the short screening measurement (budgets unchanged)."""
    return target.model_copy(update={"measurement": target.measurement.model_copy(update=cfg.measurement)})


class Screening:
    """Screen shapes on the target: export + short bench, cached, judged against the budgets."""

    def __init__(self, recipe, target, fit_dir: Path, teacher_config: dict[str, Any], progress):
        from edgedistill import pipeline

        self.recipe = recipe
        self.cfg = recipe.fit
        self.target = target
        self.short = screening_target(target, self.cfg.cost)
        self.fit_dir = fit_dir
        self.cache_dir = cost_lib.default_cache_dir(self.cfg.cost)
        self.cache = cost_lib.CostCache(self.cache_dir)
        # this search's own measurements, also those the device cache refuses (a busy host): a later
        # session in the same OUT (after --screen-only, or a kill) measures none of them again
        self.screened = cost_lib.CostCache(fit_dir / "screened")
        self.budgets = target.budgets.model_dump()
        self.progress = progress
        self.base_key = {
            "teacher": teacher_digest(teacher_config),
            "task": recipe.distill.task,
            "target": pipeline.measured_settings(self.short),
            "device": cost_lib.device_fingerprint(target),
            "max_length": recipe.export.max_length,
        }
        self._teacher = None
        self.teacher_config = teacher_config

    def _models(self):
        if self._teacher is None:
            from edgedistill.compress.model_folder import load_teacher

            self._teacher = load_teacher(self.recipe.distill.teacher, self.recipe.distill.task)
        return self._teacher

    def teacher_folder(self) -> str:
        """What an exporter reads as the teacher: its own folder, or a GGUF-file teacher saved where
        screening measures the teacher."""
        from edgedistill.compress.model_folder import teacher_folder

        d = self.recipe.distill
        return teacher_folder(d.teacher, d.task, self.fit_dir / "shapes" / cost_lib.TEACHER, self._models)

    def _key(self, shape: Shape | None, choice: ExportChoice) -> str:
        key_parts = {**self.base_key, "shape": shape.to_dict() if shape else cost_lib.TEACHER}
        return self.cache.key({**key_parts, "format": choice.format, "precision": choice.precision})

    def _measure(self, shape: Shape | None, choice: ExportChoice) -> dict[str, Any]:
        name = shape.key if shape else cost_lib.TEACHER
        key = self._key(shape, choice)
        cached = self._cached(key)
        if cached is not None:
            return cached
        teacher, tokenizer = self._models()
        with device_lock(self.cache_dir, self.target, exclusive=True):
            # another worker may have measured it while this one waited for the device
            cached = self._cached(key)
            if cached is not None:
                return cached
            folder = self.fit_dir / "shapes" / name
            cost_lib.build_shape(teacher, tokenizer, shape, self.recipe.distill.task, folder)
            measured = cost_lib.measure(
                folder,
                choice,
                self.short,
                self.recipe.export,
                self.cache,
                key,
                self.fit_dir / "work" / name,
                self.cfg.cost.cache_max_other_cpu,
            )
        if measured["figures"].get("status") == "measured":
            self.screened.put(key, {k: v for k, v in measured.items() if k != "cached"})
        return measured

    def _cached(self, key: str) -> dict[str, Any] | None:
        """This search's own record of ``key`` (a resumed search keeps its screening's verdicts), else the
        device cache's; ``cached`` says which."""
        for where, cache in (("run", self.screened), ("device", self.cache)):
            record = cache.get(key)
            if record is not None:
                return {**record, "key": key, "cached": where}
        return None

    def teacher(self) -> dict[str, Any]:
        """The teacher fp32 in its reference format, screened the same way (relative budgets' yardstick)."""
        from edgedistill.teacher_reference import reference_format

        choice = ExportChoice(format=reference_format(self.recipe), precision="fp32")
        yardstick = self.short.model_copy(update={"precisions": None, "formats": None})
        saved, self.short = self.short, yardstick
        try:
            return {"export": choice.model_dump(), **self._measure(None, choice)}
        finally:
            self.short = saved

    def shapes(self, shapes: list[Shape], teacher: dict[str, Any]) -> list[dict[str, Any]]:
        """Every shape x export: figures, verdict; a shape is feasible when one of its exports is.

        Measured from the cheapest shape to the dearest; with ``cost.skip_hopeless`` the cost model
        fitted to the points so far skips an export it predicts clearly over (`cost_model`).
        """
        cost = self.cfg.cost
        model = (
            CostModel(cost.model_min_points, cost.model_max_residual, cost.reject_margin, cost.size_margin)
            if cost.skip_hopeless
            else None
        )
        decoder = self.recipe.distill.task == "causal-lm"
        feats = {
            s.key: features(s, self.teacher_config, self.recipe.export.max_length, decoder) for s in shapes
        }
        order = sorted(shapes, key=lambda s: feats[s.key]["macs"])
        rows: dict[str, dict[str, Any]] = {}
        total, done = len(shapes) * len(self.cfg.space.exports), 0
        for shape in order:
            exports = []
            for choice in self.cfg.space.exports:
                done += 1
                pair = (choice.format, choice.precision)
                key = self._key(shape, choice)
                skip = None
                if model is not None and self._cached(key) is None:
                    skip = model.hopeless(pair, feats[shape.key], teacher["figures"], self.budgets)
                if skip is not None:
                    self.progress(f"[{done}/{total}] {shape.key} {choice.format}-{choice.precision}: skipped")
                    exports.append(_skipped(choice, key, skip))
                    continue
                self.progress(f"[{done}/{total}] {shape.key} {choice.format}-{choice.precision}")
                measured = self._measure(shape, choice)
                if model is not None:
                    model.add(pair, feats[shape.key], measured["figures"])
                verdict = cost_lib.judge(
                    measured["figures"],
                    teacher["figures"],
                    self.budgets,
                    cost.reject_margin,
                    cost.size_margin,
                )
                exports.append(
                    {
                        "format": choice.format,
                        "precision": choice.precision,
                        "figures": measured["figures"],
                        "cached": measured.get("cached", False),
                        "key": measured.get("key"),
                        "feasible": verdict.feasible,
                        "over": verdict.over,
                        "close": verdict.close,
                        "unjudged": verdict.unjudged,
                        "judged": verdict.figures,
                    }
                )
            rows[shape.key] = {
                "shape": shape.to_dict(),
                "features": feats[shape.key],
                "exports": exports,
                "feasible": any(e["feasible"] for e in exports),
            }
        ordered = [rows[s.key] for s in shapes]  # the space's order, as planned
        atomic_write_json(self.fit_dir / "costs.json", {"teacher": teacher, "candidates": ordered})
        return ordered


def _skipped(choice: ExportChoice, key: str, why: dict[str, Any]) -> dict[str, Any]:
    """An export the cost model judged hopeless: not measured, never feasible, with the prediction."""
    return {
        "format": choice.format,
        "precision": choice.precision,
        "figures": {"status": "skipped", "reason": why["reason"]},
        "cached": False,
        "key": key,
        "feasible": False,
        "over": [why["reason"]],  # "<budget>: predicted ...": infeasible_message reads the budget
        "close": [],
        "unjudged": [],
        "judged": [],
        "predicted": why,
    }


def feasible_set(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every feasible shape with its feasible exports: what `fit --screen-only` answers."""
    return [
        {
            "shape": row["shape"]["key"],
            "exports": [f"{e['format']}-{e['precision']}" for e in row["exports"] if e["feasible"]],
        }
        for row in rows
        if row["feasible"]
    ]


def infeasible_message(rows: list[dict[str, Any]]) -> str:
    """ "no candidate meets p95_latency_ms <= 3 (best: 4.2 ms, L5 onnx-int8)", for every budget all missed."""
    best: dict[str, tuple[float, dict[str, Any], str]] = {}
    missed_by_all = None
    for row in rows:
        for e in row["exports"]:
            over = {text.split(":", 1)[0] for text in e["over"]}
            missed_by_all = over if missed_by_all is None else missed_by_all & over
            for fig in e["judged"]:
                where = f"{row['shape']['key']} {e['format']}-{e['precision']}"
                better = fig["value"] if fig["kind"] == "max" else -fig["value"]
                if fig["budget"] not in best or better < best[fig["budget"]][0]:
                    best[fig["budget"]] = (better, fig, where)
    parts = []
    for key in sorted(missed_by_all or ()):
        if key not in best:
            continue
        _, fig, where = best[key]
        op = "<=" if fig["kind"] == "max" else ">="
        unit = "x" if fig["unit"] == "x" else f" {fig['unit']}"
        parts.append(
            f"no candidate meets {key} {op} {fig['limit']:.4g} (best: {fig['value']:.4g}{unit}, {where})"
        )
    return "; ".join(parts) or "no candidate could be measured (see fit/costs.json)"
