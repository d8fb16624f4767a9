"""Cost, measured: each shape is built, exported and timed on the target itself, before any training.

A shape's latency, memory and size depend on its architecture, not on its weights' values, so
the screening student is the teacher's layers copied and pruned by weight magnitude (data-free,
deterministic); it is exported like any student (`edgedistill.export.export`, with parity) and
measured through the target's device with the harness's fresh-process protocol
(`edgedistill.bench.bench`), only shorter (`fit.cost.measurement`). An int8 screening artifact
is post-training quantized (ONNX Runtime dynamic for ONNX): the finalists' own QAT artifacts get
the full, interleaved measurement that the gate judges.

Measurements are cached across searches, keyed by the shape, the (format, precision), the
target's measured settings and the device fingerprint (CPU model, ISA flags, runtime versions,
device address): a second search on the same device costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgedistill.errors import EdgeDistillError
from edgedistill.fit.config import CostConfig, ExportChoice
from edgedistill.fit.space import Shape
from edgedistill.io import atomic_write_json

log = logging.getLogger(__name__)

COST_CACHE_VERSION = 1
TEACHER = "teacher"

# absolute budgets a screening run can speak for: (budget key, figure key, "max"/"min", unit)
ABSOLUTE = (
    ("p50_latency_ms", "p50_ms", "max", "ms"),
    ("p95_latency_ms", "p95_ms", "max", "ms"),
    ("p99_latency_ms", "p99_ms", "max", "ms"),
    ("min_throughput_per_s", "throughput_per_s", "min", "seq/s"),
    ("ttft_ms", "ttft_ms", "max", "ms"),
    ("min_decode_tokens_per_s", "decode_tokens_per_s", "min", "tok/s"),
    ("peak_rss_mb", "peak_rss_mb", "max", "MB"),
    ("artifact_size_mb", "size_mb", "max", "MB"),
)
TIMING = {"p50_ms", "p95_ms", "p99_ms", "throughput_per_s", "ttft_ms", "decode_tokens_per_s", "peak_rss_mb"}


def device_fingerprint(target) -> dict[str, Any]:
    """What a measurement depends on besides the artifact: the device and its runtimes."""
    from edgedistill.bench.system import library_versions
    from edgedistill.host import cpu_summary

    spec = target.device.model_dump()
    fingerprint: dict[str, Any] = {"device": spec, "libraries": library_versions()}
    if target.device.kind == "local":
        fingerprint["cpu"] = cpu_summary()
    return fingerprint


def figures(entry: dict[str, Any]) -> dict[str, Any]:
    """The figures of one bench report entry that budgets judge."""
    latency = entry.get("latency") or {}
    lm = entry.get("lm") or {}
    return {
        "status": entry.get("status"),
        "reason": entry.get("reason"),
        "p50_ms": latency.get("p50_ms"),
        "p50_bounds_ms": median_bounds_ms(latency.get("samples_ms") or []),
        "p95_ms": latency.get("p95_ms"),
        "p99_ms": latency.get("p99_ms"),
        "throughput_per_s": latency.get("throughput_per_s"),
        "ttft_ms": (lm.get("ttft_ms") or {}).get("p50_ms"),
        "decode_tokens_per_s": (lm.get("decode_tokens_per_s") or {}).get("p50"),
        "peak_rss_mb": (entry.get("memory") or {}).get("peak_rss_mb"),
        "size_mb": entry.get("size_mb"),
        "iterations": latency.get("n"),
        "other_cpu_share": other_cpu_share(entry),
        "emulated": bool(entry.get("emulated")),
        "ran": entry.get("ran"),
    }


def median_bounds_ms(samples_ms: list[float], z: float = 1.96) -> list[float] | None:
    """Distribution-free 95 % bounds of the median: the order statistics n/2 -+ z*sqrt(n)/2 (the
    normal approximation of the binomial). Samples of one process are not independent, so these
    bounds say how precisely this screening run pinned its own median, not how another run would
    land; they are what "within noise" between two screenings may rest on."""
    import math

    n = len(samples_ms)
    if n < 10:
        return None
    ordered = sorted(samples_ms)
    low = max(0, math.floor(n / 2 - z * math.sqrt(n) / 2) - 1)
    high = min(n - 1, math.ceil(n / 2 + z * math.sqrt(n) / 2) - 1)
    return [round(ordered[low], 6), round(ordered[high], 6)]


def other_cpu_share(entry: dict[str, Any]) -> float | None:
    """CPU time other processes used while the entry was timed, as a share of the host's CPUs."""
    import os

    rounds = (entry.get("latency") or {}).get("rounds") or []
    seconds = sum(r.get("measure_seconds") or 0.0 for r in rounds)
    other = sum(r.get("other_cpu_seconds") or 0.0 for r in rounds)
    if not seconds:
        return None
    return round(other / seconds / (os.cpu_count() or 1), 3)


def cacheable(figures: dict[str, Any], max_other_cpu: float) -> bool:
    """A measurement worth keeping for later searches: measured (a skip or an error may be the device's
    mood), and on a host that other processes left mostly alone (a busy host is a passing state)."""
    share = figures.get("other_cpu_share")
    quiet = share is None or max_other_cpu >= 1.0 or share <= max_other_cpu  # 1.0: cache them all
    return figures.get("status") == "measured" and quiet


@dataclass
class Verdict:
    """A screened (shape, export) against the budgets: ``over`` names every budget it clearly misses."""

    over: list[str] = field(default_factory=list)
    close: list[str] = field(default_factory=list)
    unjudged: list[str] = field(default_factory=list)
    # every judged budget: {"budget", "value", "limit", "kind"}, for "no candidate meets ... (best: ...)"
    figures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def feasible(self) -> bool:
        return not self.over


SIZE_BUDGETS = ("artifact_size_mb", "size_vs_teacher")


def judge(
    measured: dict[str, Any],
    teacher: dict[str, Any] | None,
    budgets: dict[str, Any],
    margin: float,
    size_margin: float = 1.0,
) -> Verdict:
    """Clearly over (beyond ``margin``; ``size_margin`` for file sizes, which are exact) is rejected;
    within the margin is ``close`` (the full run decides)."""
    verdict = Verdict()
    if measured.get("status") != "measured":
        verdict.over.append(f"not measured: {measured.get('reason')}")
        return verdict
    checks: list[tuple[str, float | None, float, str, str]] = []
    for key, fig, kind, unit in ABSOLUTE:
        if budgets.get(key) is not None:
            checks.append((key, measured.get(fig), float(budgets[key]), kind, unit))
    teacher = teacher or {}
    if budgets.get("speedup_vs_teacher") is not None:
        t, c = teacher.get("p50_ms"), measured.get("p50_ms")
        speedup = t / c if t and c else None
        checks.append(("speedup_vs_teacher", speedup, float(budgets["speedup_vs_teacher"]), "min", "x"))
    for key, fig in (("size_vs_teacher", "size_mb"), ("rss_vs_teacher", "peak_rss_mb")):
        if budgets.get(key) is not None:
            t, c = teacher.get(fig), measured.get(fig)
            checks.append((key, c / t if t and c is not None else None, float(budgets[key]), "max", "x"))
    for key, value, limit, kind, unit in checks:
        if measured.get("emulated") and (key in ("speedup_vs_teacher", "rss_vs_teacher") or _timing(key)):
            verdict.unjudged.append(f"{key}: not measured under emulation")
            continue
        if value is None:
            verdict.unjudged.append(f"{key}: no figure")
            continue
        verdict.figures.append({"budget": key, "value": value, "limit": limit, "kind": kind, "unit": unit})
        over = value > limit if kind == "max" else value < limit
        m = margin_of(key, margin, size_margin)
        clearly = clearly_over(value, limit, kind, m)
        text = f"{key}: {value:.4g}{unit if unit == 'x' else ' ' + unit} {'>' if kind == 'max' else '<'} {limit:.4g}"
        if clearly:
            verdict.over.append(text + (f" (beyond the x{m:g} margin)" if m > 1 else ""))
        elif over:
            verdict.close.append(text + f" (within the x{m:g} screening margin)")
    return verdict


def margin_of(budget: str, margin: float, size_margin: float) -> float:
    """The screening margin of a budget: ``size_margin`` for file sizes (exact), ``margin`` otherwise."""
    return size_margin if budget in SIZE_BUDGETS else margin


def clearly_over(value: float, limit: float, kind: str, margin: float) -> bool:
    """Beyond ``limit`` by more than ``margin``: a ``max`` budget above limit x margin, a ``min`` one
    below limit / margin."""
    return value > limit * margin if kind == "max" else value * margin < limit


def _timing(key: str) -> bool:
    return any(key == k and fig in TIMING for k, fig, _, _ in ABSOLUTE)


class CostCache:
    """One JSON file per measured (shape, export, target settings, device): written atomically."""

    def __init__(self, folder: Path):
        self.folder = folder

    def key(self, parts: dict[str, Any]) -> str:
        blob = json.dumps({"version": COST_CACHE_VERSION, **parts}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def get(self, key: str) -> dict[str, Any] | None:
        path = self.folder / f"{key}.json"
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            log.warning("cost cache entry %s is damaged; measuring again", path)
            return None
        return record if isinstance(record, dict) and isinstance(record.get("figures"), dict) else None

    def put(self, key: str, record: dict[str, Any]) -> None:
        atomic_write_json(self.folder / f"{key}.json", record)


def default_cache_dir(cfg: CostConfig) -> Path:
    return (
        Path(cfg.cache_dir).expanduser()
        if cfg.cache_dir
        else Path.home() / ".cache" / "edgedistill" / "fit-costs"
    )


def build_shape(teacher, tokenizer, shape: Shape | None, task: str, folder: Path) -> Path:
    """Save the screening student of ``shape`` (``None``: the teacher itself) as a model folder."""
    from edgedistill.compress import models, pruning
    from edgedistill.compress.config import StudentConfig
    from edgedistill.compress.model_folder import save_model_folder

    def model_and_tokenizer():
        if shape is None:
            return teacher, tokenizer
        cfg = StudentConfig(**shape.student_config())
        model, _ = models.build_student(teacher, cfg, task)
        if cfg.prunes(teacher.config.hidden_size):
            # magnitude: data-free and deterministic; the values do not change the cost, the shape does
            pruning.prune_student(model, cfg.num_attention_heads, cfg.intermediate_size, "magnitude")
        return model, tokenizer

    return save_model_folder(folder, task, model_and_tokenizer)


def measure(
    model_dir: Path,
    choice: ExportChoice,
    target,
    export_cfg,
    cache: CostCache,
    key: str,
    work: Path,
    max_other_cpu: float = 0.25,
) -> dict[str, Any]:
    """Export ``model_dir`` as ``choice``, measure it on ``target`` and cache it under ``key`` (the
    caller looked the key up: `phases.Screening` does, before and again under the device lock)."""
    from edgedistill.bench import bench
    from edgedistill.export import export

    artifacts = work / "artifacts"
    # The screening student is untrained (copied, pruned teacher layers): its class scores are near
    # ties that int8 flips freely, so its top-1 agreement says nothing about the export and must not
    # drop a shape (the finalists' exports are held to every bound). Value bounds still apply.
    tolerances = {
        precision: bound.model_copy(update={"min_top1_agreement": None})
        for precision, bound in export_cfg.tolerances.items()
    }
    cfg = export_cfg.just(choice.format, choice.precision, tolerances=tolerances)
    try:
        export(model_dir, artifacts, cfg)
    except EdgeDistillError as exc:  # an export failure is this candidate's result, not the search's
        return {
            "figures": {"status": "error", "reason": f"export failed: {exc}"},
            "cached": False,
            "key": key,
        }
    artifact = artifacts / f"{choice.format}-{choice.precision}"
    report = bench([artifact], target, out=work / f"bench-{choice.format}-{choice.precision}.json")
    entry = report["artifacts"][0]
    record = {
        "figures": figures(entry),
        "device": report.get("device"),
        "host": (report.get("host") or {}).get("cpu"),
        "measured_utc": report.get("finished_utc") or report.get("started_utc"),
    }
    if cacheable(record["figures"], max_other_cpu):
        cache.put(key, record)
    elif record["figures"]["status"] == "measured":
        log.warning(
            "%s %s-%s was measured while other processes used %.0f%% of the CPUs: kept for this search, "
            "not cached", model_dir.name, choice.format, choice.precision, 100 * record["figures"]["other_cpu_share"],
        )  # fmt: skip
    shutil.rmtree(artifacts, ignore_errors=True)
    return {**record, "cached": False, "key": key}
