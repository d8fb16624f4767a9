"""Parity: an artifact, run in its own runtime, must compute what the torch student computes.

Real sentences of several lengths go through the student's tokenizer; the same token ids feed
torch (float32, or the NNCF fake-quant model for QAT int8 artifacts) and the artifact. Each output
is compared over real (unpadded) tokens: max/mean abs diff, top-1 agreement for logits, cosine for
embeddings. Outside the precision's tolerance, export fails with a per-output table.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgedistill import host
from edgedistill.errors import DataError, EdgeDistillError
from edgedistill.export.config import RUN_PRECISION_TOLERANCES, ExportConfig, Tolerance

if TYPE_CHECKING:
    from edgedistill.export.core import ArtifactResult, FormatPlugin, RuntimeRun, StudentInfo

# Varied English: short and long, questions, numbers, punctuation, names, a little noise.
BUILTIN_SENTENCES = (
    "Great.",
    "I did not like it at all.",
    "What time does the last train to Boston leave tonight?",
    "The film is a wonderful, moving story about two brothers who grow apart and find their way back.",
    "Terrible service; we waited 45 minutes and the soup was cold.",
    "Please remind me to call Dr. Okafor at 3:30 pm tomorrow.",
    "It's not bad, but it's not good either.",
    "The committee approved the budget after a long debate, although several members voted against it "
    "because they believed the spending on infrastructure was too low.",
    "wow!!! best purchase ever :)",
    "Honestly, the plot made no sense and the acting was wooden.",
    "Can you recommend a quiet restaurant near the river?",
    "The battery lasts about two days with normal use.",
    "She said the results were promising, yet more tests are needed before anyone can be sure.",
    "Absolutely loved the soundtrack.",
    "The package arrived damaged and customer support never answered my emails.",
    "In 1969, two astronauts walked on the Moon while millions watched on television.",
    "meh",
    "The new update fixed the crash, but now the app drains the battery much faster than before, "
    "which is frustrating for anyone who relies on it during a long working day away from a charger.",
    "A clever, funny and surprisingly tender comedy.",
    "Where can I find the user manual for this printer?",
    "The weather was grey and the museum was closed, so we spent the afternoon in a small cafe.",
    "I would not recommend this hotel to anyone.",
    "Tiny changes in the input should not flip the prediction of a robust model.",
    "The quick brown fox jumps over the lazy dog.",
)


class ParityError(EdgeDistillError):
    """An artifact's outputs differ from torch beyond the tolerance of its precision."""

    def __init__(self, report: ParityReport, message: str | None = None):
        self.report = report
        super().__init__(
            message
            or (
                f"parity failed for {report.artifact} against {report.reference_name}:\n"
                f"{report.table()}\n"
                f"No artifact was written (an earlier good one is kept). If the difference is expected, "
                f"loosen the bound, e.g. --set tolerances.{report.precision}.<bound>=<value>; a float "
                f"mismatch usually means an op the exporter or runtime handles differently."
            )
        )


class DeployedParityError(ParityError):
    """The file passed parity, but the runtime's defaults on this host compute something else."""

    def __init__(self, report: ParityReport, load: dict[str, Any]):
        deployed = report.deployed
        assert deployed is not None
        ran = deployed.runtime.get("ran")
        props = (
            load.get("compile_properties") or load.get("settings") or "the settings in the manifest's load"
        )
        super().__init__(
            report,
            f"{report.artifact} computes what it declares (parity passed with {report.runtime.get('settings')}), "
            f"but loaded with the runtime's defaults on this CPU ({host.generation()}) it ran {ran} and differs "
            f"from {report.reference_name} beyond the tolerance for that precision:\n{deployed.table()}\n"
            f"No artifact was written. Fix: apps must load it with {props} (the manifest's `load` section "
            f"says so), or accept the difference with --set tolerances.{_loosened_by(ran) or report.precision}"
            f".<bound>=<value>.",
        )


@dataclass
class OutputParity:
    name: str
    shape: list[int]
    max_abs_diff: float
    mean_abs_diff: float
    # max |diff| over max |reference|: the bound that follows the arithmetic (bf16 ~2^-8)
    max_rel_diff: float | None = None
    top1_agreement: float | None = None
    cosine_min: float | None = None
    cosine_mean: float | None = None
    checked: bool = True
    failures: list[str] = field(default_factory=list)


@dataclass
class ParityReport:
    artifact: str
    precision: str
    reference: str
    samples: int
    runs: int
    lengths: list[int]
    tolerance: dict[str, Any]
    outputs: list[OutputParity]
    # the runtime settings asked for, what the runtime read back, and the arithmetic that ran
    runtime: dict[str, Any] = field(default_factory=dict)
    # the same check with the runtime's defaults on this host (None: the defaults are these settings)
    deployed: ParityReport | None = None

    @property
    def passed(self) -> bool:
        return all(not o.failures for o in self.outputs) and (self.deployed is None or self.deployed.passed)

    @property
    def reference_name(self) -> str:
        return {"float": "the float32 torch student", "qat": "the NNCF fake-quant torch student"}.get(
            self.reference, self.reference
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        if self.deployed is not None:
            data["deployed"]["passed"] = self.deployed.passed
        return data

    def table(self) -> str:
        tol = self.tolerance

        def bound(value: float | None, op: str, applies: bool = True) -> str:
            return "-" if value is None or not applies else f"{op}{value:.7g}"

        def num(value: float | None) -> str:
            return "-" if value is None else f"{value:.6g}"

        rows = [
            ("output", "max_abs", "bound", "max_rel", "bound", "top1", "bound", "cos_min", "bound", "result")
        ]
        for o in self.outputs:
            result = (
                "unchecked" if not o.checked else ("FAIL: " + "; ".join(o.failures) if o.failures else "ok")
            )
            rows.append(
                (
                    o.name,
                    num(o.max_abs_diff),
                    bound(tol.get("max_abs_diff"), "<="),
                    num(o.max_rel_diff),
                    bound(tol.get("max_rel_diff"), "<="),
                    num(o.top1_agreement),
                    bound(tol.get("min_top1_agreement"), ">=", o.top1_agreement is not None),
                    num(o.cosine_min),
                    bound(tol.get("min_cosine"), ">=", o.name == "sentence_embedding"),
                    result,
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        lines.append(f"  ({self.samples} sentences, lengths {min(self.lengths)}-{max(self.lengths)} tokens)")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def load_sentences(path: str | Path, column: str | None = None, limit: int | None = None) -> list[str]:
    """Sentences from a text file (one a line), JSONL ({"text": ...}) or TSV/CSV with a header."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist; pass a text file with one sentence a line, or a TSV/CSV")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text ({exc}); re-save it as UTF-8") from None
    suffix = path.suffix.lower()
    sentences: list[str] = []
    if suffix in (".tsv", ".csv"):
        reader = csv.DictReader(text.splitlines(), delimiter="\t" if suffix == ".tsv" else ",")
        fields = reader.fieldnames or []
        name = column or next((c for c in ("sentence", "text", "content") if c in fields), None)
        name = name or (fields[0] if fields else None)
        if name not in fields:
            raise DataError(f"{path} has no column {name!r}; columns are {fields}. Pass --calib-text-column")
        sentences = [row[name] for row in reader if row.get(name)]
    elif suffix == ".jsonl":
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    sentences.append(str(json.loads(line)[column or "text"]))
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise DataError(
                        f"{path}:{number}: expected a JSON object with a {column or 'text'!r} key"
                    ) from None
    else:
        sentences = [line.strip() for line in text.splitlines()]
    sentences = [s.strip() for s in sentences if s and s.strip()]
    if not sentences:
        raise DataError(f"{path} holds no sentences")
    return sentences[:limit] if limit else sentences


def max_sequence_length(student: StudentInfo, tokenizer, cfg: ExportConfig) -> int:
    limits = [cfg.max_length, student.config.get("max_position_embeddings") or cfg.max_length]
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and model_max < 1_000_000:
        limits.append(model_max)
    return int(min(limits))


def encode(tokenizer, sentences: list[str], max_length: int) -> dict[str, np.ndarray]:
    # a single sentence needs no padding (and decoder tokenizers often have no pad token)
    padding = len(sentences) > 1
    enc = tokenizer(sentences, truncation=True, max_length=max_length, padding=padding, return_tensors="np")
    feed = {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()}
    feed.setdefault("attention_mask", np.ones_like(feed["input_ids"]))
    return feed


def parity_sentences(cfg: ExportConfig) -> list[str]:
    source = cfg.parity_data or cfg.calib_data
    if source is not None:
        pool = load_sentences(source, cfg.calib_text_column)
        # spread the picks over the file and keep lengths varied: sort by length, take evenly
        pool = sorted(set(pool), key=len)
    else:
        pool = list(BUILTIN_SENTENCES)
    n = min(cfg.parity_samples, len(pool))
    if n == len(pool):
        return pool
    step = (len(pool) - 1) / max(n - 1, 1)
    return [pool[round(i * step)] for i in range(n)]


def parity_feeds(
    tokenizer, sentences: list[str], max_length: int, batched: bool
) -> list[dict[str, np.ndarray]]:
    """One unpadded feed per sentence, plus (``batched``) one padded batch mixing short and long."""
    feeds = [encode(tokenizer, [s], max_length) for s in sentences]
    if batched and len(sentences) >= 2 and getattr(tokenizer, "pad_token_id", None) is not None:
        by_length = sorted(sentences, key=len)
        mixed = list(
            dict.fromkeys([by_length[0], by_length[-1], by_length[len(by_length) // 2], by_length[1]])
        )
        feeds.append(encode(tokenizer, mixed, max_length))
    return feeds


def calibration_feeds(student: StudentInfo, cfg: ExportConfig) -> tuple[list[dict[str, np.ndarray]], str]:
    """Batch-1 feeds for static int8 calibration, and where the sentences came from."""
    tokenizer = student.load_tokenizer()
    max_length = max_sequence_length(student, tokenizer, cfg)
    if cfg.calib_data is not None:
        sentences = load_sentences(cfg.calib_data, cfg.calib_text_column, cfg.calib_samples)
        source = str(cfg.calib_data)
    else:
        sentences = list(BUILTIN_SENTENCES)[: cfg.calib_samples]
        source = f"built-in sentences ({len(sentences)}); pass --calib-data for in-domain calibration"
    return [encode(tokenizer, [s], max_length) for s in sentences], source


# --------------------------------------------------------------------------------------------
# Torch reference and comparison
# --------------------------------------------------------------------------------------------


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    weights = mask[..., None].astype(np.float64)
    return (hidden.astype(np.float64) * weights).sum(1) / np.clip(weights.sum(1), 1e-9, None)


def torch_outputs(model, task: str, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    import torch

    from edgedistill.export.core import forward_parameters

    accepted = set(forward_parameters(model))
    extra = {"use_cache": False} if task == "text-generation" else {}
    outputs = []
    with torch.inference_mode():
        for feed in feeds:
            out = model(**{k: torch.from_numpy(v) for k, v in feed.items() if k in accepted}, **extra)
            if task == "feature-extraction":
                hidden = out.last_hidden_state.float().numpy()
                outputs.append(
                    {
                        "last_hidden_state": hidden,
                        "sentence_embedding": mean_pool(hidden, feed["attention_mask"]).astype(np.float32),
                    }
                )
            else:
                outputs.append({"logits": out.logits.float().numpy()})
    return outputs


def reference_outputs(
    student: StudentInfo, reference: str, feeds: list[dict[str, np.ndarray]]
) -> list[dict[str, np.ndarray]]:
    model = student.load_qat_model() if reference == "qat" else student.load_model()
    return torch_outputs(model, student.task, feeds)


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
            act["sentence_embedding"] = mean_pool(act["last_hidden_state"], feed["attention_mask"]).astype(
                np.float32
            )
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
    tolerance = cfg.tolerance(precision)
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
    deployed_tolerance = tolerance_for_run(cfg, precision, deployed.ran)
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


def _loosened_by(ran: str | None) -> str | None:
    """The run precision whose tolerance applies to ``ran`` (``bf16``, ``fp16``), if any."""
    words = (ran or "").replace("+", " ").split()
    return next((RUN_PRECISION_TOLERANCES[w] for w in words if w in RUN_PRECISION_TOLERANCES), None)


def tolerance_for_run(cfg: ExportConfig, precision: str, ran: str | None) -> Tolerance:
    """The tolerance of a run in ``ran`` (what the runtime read back) of a ``precision`` artifact.

    A float artifact (fp32/fp16) that the runtime computed in bf16 is held to the bf16 bounds
    (``tolerances.bf16``: ~2^-8 relative, no absolute bound). A quantized artifact keeps its own
    bounds, loosened bound by bound where the float arithmetic around its int8 ops is looser
    (an unset bound is unbounded).
    """
    own = cfg.tolerance(precision)
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
