"""The parity check: torch's outputs against the artifact's, as a file and as deployed, each held to the tolerance of what ran."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgedistill.errors import EdgeDistillError
from edgedistill.export.config import ExportConfig, Tolerance
from edgedistill.numerics import mean_pool
from edgedistill.outputs import SENTENCE_EMBEDDING

if TYPE_CHECKING:
    from edgedistill.export.core import ArtifactResult, FormatPlugin, RuntimeRun, StudentInfo

# Varied English: short and long, questions, numbers, punctuation, names, a little noise.
from edgedistill.export.parity.inputs import max_sequence_length, parity_feeds, parity_sentences
from edgedistill.export.parity.report import (
    DeployedParityError,
    OutputParity,
    ParityError,
    ParityReport,
    _loosened_by,
)

# Torch reference and comparison


def torch_outputs(
    model, task: str, feeds: list[dict[str, np.ndarray]], extra_outputs: list[str] = ()
) -> list[dict[str, np.ndarray]]:
    """torch's outputs per feed; ``extra_outputs`` (a generalist's ``sentence_embedding``) beside the task's."""
    import torch

    from edgedistill.export.core import forward_parameters

    accepted = set(forward_parameters(model))
    extra = {"use_cache": False} if task == "text-generation" else {}
    pooled = SENTENCE_EMBEDDING in extra_outputs and task != "feature-extraction"
    if pooled:
        extra["output_hidden_states"] = True
    outputs = []
    with torch.inference_mode():
        for feed in feeds:
            out = model(**{k: torch.from_numpy(v) for k, v in feed.items() if k in accepted}, **extra)
            if pooled:  # the generalist's second output: its last hidden state, mean-pooled
                hidden = out.hidden_states[-1].float().numpy()
                outputs.append(
                    {
                        "logits": out.logits.float().numpy(),
                        SENTENCE_EMBEDDING: mean_pool(hidden, feed["attention_mask"]),
                    }
                )
                continue
            if task == "feature-extraction":
                hidden = out.last_hidden_state.float().numpy()
                outputs.append(
                    {
                        "last_hidden_state": hidden,
                        "sentence_embedding": mean_pool(hidden, feed["attention_mask"]),
                    }
                )
            else:
                outputs.append({"logits": out.logits.float().numpy()})
    return outputs


def reference_outputs(
    student: StudentInfo, reference: str, feeds: list[dict[str, np.ndarray]]
) -> list[dict[str, np.ndarray]]:
    if reference == "gguf-qat":  # the GGUF-aware QAT student as trained: GGUF fake quantization attached
        import platform

        from edgedistill.compress.gguf_quant import attach_gguf_fake_quant

        model = student.load_model()
        # llama.cpp converts matmul inputs as this host's kernels do (the artifact runs here in parity)
        arm = platform.machine().lower().startswith(("arm", "aarch64"))
        with attach_gguf_fake_quant(
            model, str(student.gguf_qat_precision), activation_rounding="arm" if arm else "x86"
        ):
            return torch_outputs(model, student.task, feeds)
    model = student.load_qat_model() if reference == "qat" else student.load_model()
    return torch_outputs(model, student.task, feeds, student.extra_outputs)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64).reshape(-1, a.shape[-1])
    b = b.astype(np.float64).reshape(-1, b.shape[-1])
    num = (a * b).sum(-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return num / np.clip(den, 1e-12, None)


def compare(
    references: list[dict[str, np.ndarray]],
    actuals: list[dict[str, np.ndarray]],
    feeds: list[dict[str, np.ndarray]],
    tolerance: Tolerance,
) -> list[OutputParity]:
    """Per-output figures over all feeds (padded positions excluded) checked against ``tolerance``."""
    if len(actuals) != len(feeds):
        raise EdgeDistillError(f"the runtime returned {len(actuals)} results for {len(feeds)} inputs")
    # derive the sentence embedding when the artifact returns only token states
    for act, feed in zip(actuals, feeds, strict=True):
        if "sentence_embedding" not in act and "last_hidden_state" in act:
            act["sentence_embedding"] = mean_pool(act["last_hidden_state"], feed["attention_mask"])
    names = list(dict.fromkeys(n for act in actuals for n in act))
    results = []
    for name in names:
        diffs, ref_rows, act_rows, shape = [], [], [], []
        known = all(name in ref for ref in references)
        for ref, act, feed in zip(references, actuals, feeds, strict=True):
            a = np.asarray(act[name], dtype=np.float64)
            shape = list(a.shape)
            if not known:
                continue
            r = np.asarray(ref[name], dtype=np.float64)
            if r.shape != a.shape:
                raise EdgeDistillError(
                    f"output {name!r}: artifact shape {list(a.shape)} differs from torch {list(r.shape)}"
                )
            mask = feed["attention_mask"].astype(bool)
            if a.ndim >= 3 and a.shape[:2] == mask.shape:  # per-token output: real tokens only
                r, a = r[mask], a[mask]
            diffs.append(np.abs(a - r).reshape(-1))
            ref_rows.append(r.reshape(-1, r.shape[-1]))
            act_rows.append(a.reshape(-1, a.shape[-1]))
        if not known:
            results.append(OutputParity(name, shape, math.nan, math.nan, checked=False))
            continue
        diff = np.concatenate(diffs)
        ref_all, act_all = np.concatenate(ref_rows), np.concatenate(act_rows)
        item = OutputParity(name, shape, float(diff.max()), float(diff.mean()))
        scale = float(np.abs(ref_all).max()) if ref_all.size else 0.0
        item.max_rel_diff = item.max_abs_diff / scale if scale > 0 else None
        if name == "logits":
            item.top1_agreement = float((ref_all.argmax(-1) == act_all.argmax(-1)).mean())
        else:
            cos = _cosines(ref_all, act_all)
            item.cosine_min, item.cosine_mean = float(cos.min()), float(cos.mean())
        if not np.isfinite(diff).all():
            item.failures.append("non-finite values")
        if tolerance.max_abs_diff is not None and not item.max_abs_diff <= tolerance.max_abs_diff:
            item.failures.append(f"max_abs_diff {item.max_abs_diff:.3g} > {tolerance.max_abs_diff:g}")
        if (
            tolerance.max_rel_diff is not None
            and item.max_rel_diff is not None
            and not item.max_rel_diff <= tolerance.max_rel_diff
        ):
            item.failures.append(f"max_rel_diff {item.max_rel_diff:.3g} > {tolerance.max_rel_diff:g}")
        if (
            item.top1_agreement is not None
            and tolerance.min_top1_agreement is not None
            and item.top1_agreement < tolerance.min_top1_agreement
        ):
            item.failures.append(f"top1 {item.top1_agreement:.3f} < {tolerance.min_top1_agreement:g}")
        # the sentence embedding is what an app uses; per-token cosines are reported, not gated
        if (
            name == "sentence_embedding"
            and tolerance.min_cosine is not None
            and item.cosine_min < tolerance.min_cosine
        ):
            item.failures.append(f"cosine {item.cosine_min:.7g} < {tolerance.min_cosine:.7g}")
        results.append(item)
    if not any(o.checked for o in results):
        raise EdgeDistillError(
            f"the artifact returned {names}, none of which can be compared with torch "
            f"(expected logits, last_hidden_state or sentence_embedding)"
        )
    return results


def check(
    plugin: FormatPlugin,
    student: StudentInfo,
    artifact_dir: Path,
    result: ArtifactResult,
    precision: str,
    cfg: ExportConfig,
    cache: dict[Any, Any] | None = None,
    label: str | None = None,
) -> ParityReport:
    """Run the artifact and torch on the same real inputs; raise `ParityError` outside tolerance.

    ``cache`` (shared across the artifacts of one export) keeps the tokenized feeds and the torch
    outputs, so each reference model runs once however many artifacts are checked.
    """
    cache = cache if cache is not None else {}
    batched = plugin.batched_parity
    if ("feeds", batched) not in cache:
        tokenizer = student.load_tokenizer()
        sentences = parity_sentences(cfg)
        cache[("feeds", batched)] = parity_feeds(
            tokenizer, sentences, max_sequence_length(student, tokenizer, cfg), batched
        )
        cache[("sentences", batched)] = sentences
    feeds = cache[("feeds", batched)]
    key = ("reference", result.reference, batched)
    if key not in cache:
        cache[key] = reference_outputs(student, result.reference, feeds)
    common = {
        "artifact": label or f"{plugin.name}-{precision}",
        "precision": precision,
        "reference": result.reference,
        "samples": len(cache[("sentences", batched)]),
        "runs": len(feeds),
        "lengths": sorted(
            {int(f["attention_mask"][i].sum()) for f in feeds for i in range(len(f["attention_mask"]))}
        ),
    }
    declared = plugin.execute(artifact_dir, feeds)
    missing = [n for n in student.extra_outputs if any(n not in out for out in declared.outputs)]
    if missing:  # every output the student declares is checked, none passes by being absent
        raise EdgeDistillError(
            f"{common['artifact']}: the artifact does not return {missing}, which the student declares "
            f"(edgedistill.json outputs); it returned {sorted(declared.outputs[0]) if declared.outputs else []}"
        )
    tolerance_name = result.tolerance or precision
    common["tolerance_name"] = tolerance_name
    tolerance = cfg.tolerance(tolerance_name)
    report = ParityReport(
        **common,
        tolerance=tolerance.model_dump(),
        outputs=compare(cache[key], declared.outputs, feeds, tolerance),
        runtime=_runtime_block(declared, "declared numerics"),
    )
    if not report.passed:
        raise ParityError(report)
    if not plugin.deployed_defaults_differ:
        report.runtime["deployed"] = plugin.deployed_note
        return report
    deployed = plugin.execute(artifact_dir, feeds, deployed=True)
    deployed_tolerance = tolerance_for_run(cfg, precision, deployed.ran, tolerance_name)
    report.deployed = ParityReport(
        **common,
        tolerance=deployed_tolerance.model_dump(),
        outputs=compare(cache[key], deployed.outputs, feeds, deployed_tolerance),
        runtime=_runtime_block(deployed, "the runtime's defaults on this host"),
    )
    if not report.deployed.passed:
        raise DeployedParityError(report, plugin.load_instructions(result))
    return report


def _runtime_block(run: RuntimeRun, what: str) -> dict[str, Any]:
    return {"what": what, "settings": run.settings, "read_back": run.read_back, "ran": run.ran}


def tolerance_for_run(
    cfg: ExportConfig, precision: str, ran: str | None, tolerance_name: str | None = None
) -> Tolerance:
    """The tolerance of a run in ``ran`` (what the runtime read back) of a ``precision`` artifact.

    A float artifact (fp32/fp16) that the runtime computed in bf16 is held to the bf16 bounds
    (``tolerances.bf16``: ~2^-8 relative, no absolute bound). A quantized artifact keeps its own
    bounds (``tolerance_name``'s, default its precision's), loosened bound by bound where the float
    arithmetic around its int8 ops is looser (an unset bound is unbounded).
    """
    own = cfg.tolerance(tolerance_name or precision)
    run_precision = _loosened_by(ran)
    if run_precision is None or run_precision == precision:
        return own
    other = cfg.tolerance(run_precision)
    if precision in ("fp32", "fp16"):
        return other

    def looser(a: float | None, b: float | None, larger_is_looser: bool) -> float | None:
        if a is None or b is None:
            return None
        return max(a, b) if larger_is_looser else min(a, b)

    return Tolerance(
        max_abs_diff=looser(own.max_abs_diff, other.max_abs_diff, True),
        max_rel_diff=looser(own.max_rel_diff, other.max_rel_diff, True),
        min_top1_agreement=looser(own.min_top1_agreement, other.min_top1_agreement, False),
        min_cosine=looser(own.min_cosine, other.min_cosine, False),
    )
