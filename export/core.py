"""The `export` verb: student folder -> one verified artifact folder per format and precision.

Reads top to bottom like the job it does:

1. inspect the student folder (config, weights, tokenizer, edgedistill.json) and settle the task;
2. pick the (format, precision) pairs, each served by a format plugin from the registry (`plugin`);
3. for each pair, inside a temporary folder beside ``OUT/<format>-<precision>``: the plugin writes
   the model files, the tokenizer files an app needs are copied, the artifact runs in its own
   runtime on real sentences and is compared with torch (hard failure outside tolerance), and
   ``manifest.json`` records hashes, signatures, provenance, parity and tool versions;
4. only then the folder replaces ``OUT/<format>-<precision>`` whole (`edgedistill.io.atomic_dir`).

The pieces: `student` (inspect the folder), `plugin` (the FormatPlugin interface and registry),
`tracing` (what every format traces), `parity` (the checks against torch), `manifest`.

Format plugins are registered by module path and imported only when used, so
``import edgedistill.export`` imports none of onnx, onnxruntime, openvino, optimum, nncf, gguf.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

from edgedistill.errors import (  # noqa: F401  (ExportError, UnsupportedModelError: re-exported)
    EdgeDistillError,
    ExportError,
    MissingDependencyError,
    ModelLoadError,
    UnsupportedModelError,
)
from edgedistill.export.config import ExportConfig

# re-exported: where plugins, tests and users have always imported them from
from edgedistill.export.plugin import (  # noqa: F401
    PLUGINS,
    ArtifactResult,
    FormatPlugin,
    RuntimeRun,
    TensorSpec,
    get_plugin,
    register_plugin,
    tensor_specs_to_json,
)
from edgedistill.export.student import (  # noqa: F401
    APP_FILES,
    STUDENT_META,
    StudentInfo,
    check_safetensors,
    copy_app_files,
    inspect_student,
)
from edgedistill.export.tracing import (  # noqa: F401
    causal_additive_mask,
    clip_narrow_range_on_export,
    example_batch,
    forward_parameters,
    int8_method,
    model_input_names,
    task_output_names,
    traceable,
)
from edgedistill.io import atomic_dir, atomic_write_json
from edgedistill.signals import interruptible

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


REPORT = "export_report.json"


# The verb


def plan(student: StudentInfo, cfg: ExportConfig) -> tuple[list[tuple[str, str]], list[dict[str, str]]]:
    """The (format, precision) pairs to build, and the skipped pairs with the reason.

    A pair a format does not offer is skipped when other pairs remain; a request that yields no
    artifact at all, or a precision no requested format offers, is an error. ``formats: [all]``
    also skips formats whose runtime is not installed (a named format must be installed); ``only``
    keeps the pairs it names out of formats x precisions.
    """
    pairs, skipped = [], []
    plugins: dict[str, FormatPlugin] = {}
    if cfg.formats == ["all"]:
        for name in PLUGINS:
            try:
                plugins[name] = get_plugin(name)
            except (MissingDependencyError, ExportError) as exc:
                skipped += [{"format": name, "precision": p, "reason": str(exc)} for p in cfg.precisions]
    else:
        plugins = {name: get_plugin(name) for name in cfg.formats}
    planned: dict[tuple[str, str], str] = {}  # (format, canonical precision) -> requested name
    for precision in cfg.precisions:
        served = False
        for name, plugin in plugins.items():
            reason = plugin.unsupported_reason(student, precision, cfg)
            if reason is None and not cfg.wants(name, precision):
                reason = "not among export.only"
            canonical = plugin.precision_aliases.get(precision, precision)
            if reason is None and (name, canonical) in planned:
                # e.g. gguf int8 is q8_0: one artifact, not two identical ones under two names
                reason = f"{name} {precision} is the same artifact as {name}-{planned[name, canonical]}"
                served = True
            if reason is None:
                pairs.append((name, precision))
                planned[name, canonical] = precision
                served = True
            else:
                skipped.append({"format": name, "precision": precision, "reason": reason})
        if not served and (cfg.only is None or any(p.precision == precision for p in cfg.only)):
            reasons = "; ".join(s["reason"] for s in skipped if s["precision"] == precision)
            raise UnsupportedModelError(f"no requested format can export {precision}: {reasons}")
    if not pairs and cfg.only is not None:
        raise UnsupportedModelError(
            f"export.only {[f'{p.format}-{p.precision}' for p in cfg.only]} leaves nothing to build of formats "
            f"{cfg.formats} x precisions {cfg.precisions}: {'; '.join(s['reason'] for s in skipped)}"
        )
    return pairs, skipped


def export_artifact(
    student: StudentInfo,
    fmt: str,
    precision: str,
    out_dir: Path,
    cfg: ExportConfig,
    references: dict[Any, Any] | None = None,
) -> dict[str, Any]:
    """Build, verify and atomically publish ``out_dir/<fmt>-<precision>``; returns its manifest."""
    from edgedistill.export import manifest as manifest_lib
    from edgedistill.export import parity as parity_lib

    plugin = get_plugin(fmt)
    reason = plugin.unsupported_reason(student, precision, cfg)
    if reason:
        raise UnsupportedModelError(f"cannot export {student.path} to {fmt} {precision}: {reason}")
    target = Path(out_dir) / f"{fmt}-{precision}"
    references = references if references is not None else {}
    started = time.perf_counter()
    with atomic_dir(target) as tmp:
        with warnings.catch_warnings():
            # tracing a fake-quant model warns on every quantizer (``.item()``, output mismatch of the
            # trace check); parity below is the check that counts, on real inputs in the runtime
            warnings.filterwarnings("ignore", message=".*trace", category=Warning)
            warnings.filterwarnings(
                "ignore", module=r"torch\.jit.*|nncf.*|transformers\.modeling_attn_mask_utils"
            )
            result = plugin.export(student, precision, tmp, cfg)
        missing = [f for f in result.files if not (tmp / f).is_file()]
        if missing:
            raise ExportError(f"the {fmt} exporter reported files it did not write: {missing}")
        if plugin.copy_app_files:
            copy_app_files(student, tmp)
        export_s = time.perf_counter() - started
        parity = parity_lib.check(plugin, student, tmp, result, precision, cfg, references, label=target.name)
        manifest = manifest_lib.build_manifest(
            tmp, plugin, student, precision, result, parity, cfg, export_seconds=export_s
        )
        atomic_write_json(tmp / MANIFEST, manifest)
    log.info("wrote %s (%.1f s)", target, time.perf_counter() - started)
    return manifest


@interruptible
def export(
    student_dir: str | Path,
    out_dir: str | Path,
    cfg: ExportConfig | None = None,
) -> dict[str, Any]:
    """Export ``student_dir`` to every requested format and precision under ``out_dir``.

    Returns the report (also written to ``out_dir/export_report.json``): one entry per artifact
    with its folder, size and parity, plus the pairs skipped and why. Any parity failure raises
    `ParityError` after the artifacts already verified have been published; the failing one
    leaves nothing behind and an earlier good folder of the same name is kept.
    """
    cfg = cfg or ExportConfig()
    out = Path(out_dir)
    student = inspect_student(student_dir, cfg.task)
    pairs, skipped = plan(student, cfg)
    references: dict[Any, Any] = {}
    artifacts = []
    for fmt, precision in pairs:
        manifest = export_artifact(student, fmt, precision, out, cfg, references)
        artifacts.append(
            {
                "format": fmt,
                "precision": precision,
                "path": str(out / f"{fmt}-{precision}"),
                "model_bytes": manifest["model_bytes"],
                "quantization": manifest["quantization"],
                "parity": manifest["parity"],
            }
        )
    report = {
        "student": str(student.path),
        "task": student.task,
        "artifacts": artifacts,
        "skipped": skipped,
        "config": json.loads(cfg.model_dump_json()),
    }
    atomic_write_json(out / REPORT, report)
    return report
