"""The ``gguf`` format of ``edgedistill export``: precisions, export, run and parity as a FormatPlugin."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgedistill.export.config import QAT_EXACT
from edgedistill.export.core import (
    ArtifactResult,
    FormatPlugin,
    RuntimeRun,
    StudentInfo,
    TensorSpec,
    UnsupportedModelError,
)
from edgedistill.export.gguf.checkpoint import resolve_arch
from edgedistill.export.gguf.runner import GGUFRunner, gguf_task, read_gguf_summary
from edgedistill.export.gguf.writer import write_gguf
from edgedistill.quant.gguf_types import PRECISION_ALIASES, PRECISIONS

log = logging.getLogger(__name__)


def _plugin_precisions() -> tuple[str, ...]:
    from edgedistill.export.config import PRECISIONS as CONFIG_PRECISIONS

    return tuple(p for p in CONFIG_PRECISIONS if PRECISION_ALIASES.get(p, p) in PRECISIONS)


class GGUFPlugin(FormatPlugin):
    """``edgedistill export --format gguf``: one ``model.gguf`` for llama.cpp, parity-checked in it.

    Parity runs llama.cpp with an f32 KV cache, so the figures measure the exported weights;
    llama.cpp's default f16 cache adds up to ~1e-2 on tiny-model logits (noted in the manifest).
    """

    name = "gguf"
    precisions = _plugin_precisions()
    tasks = ("feature-extraction", "text-generation")
    requires = (("gguf", "gguf"), ("llama_cpp", "gguf"))
    precision_aliases = PRECISION_ALIASES
    tool_packages = ("gguf", "llama-cpp-python")
    batched_parity = False  # llama.cpp is fed one unpadded sequence at a time
    copy_app_files = True
    deployed_note = (
        "llama.cpp's defaults differ from these settings only in the KV cache (f16 instead of f32), which "
        "rounds decoder logits (up to ~1e-2 on tiny models); its kernels, not its precision, depend on the ISA"
    )
    model_file = "model.gguf"

    def unsupported_reason(self, student: StudentInfo, precision: str, cfg) -> str | None:
        reason = super().unsupported_reason(student, precision, cfg)
        if reason is not None:
            return reason
        try:
            resolve_arch(student.config, student.task)
        except UnsupportedModelError as exc:
            return str(exc)
        return None

    def export(self, student: StudentInfo, precision: str, tmp_dir: Path, cfg) -> ArtifactResult:
        from edgedistill.export.parity import parity_sentences

        result = write_gguf(student.path, Path(tmp_dir) / self.model_file, precision, task=student.task)
        tokenizer_check = self.tokenizer_agreement(
            student, Path(tmp_dir) / self.model_file, parity_sentences(cfg)
        )
        hidden = int(student.config["hidden_size"])
        if student.task == "feature-extraction":
            outputs = [TensorSpec("sentence_embedding", "float32", [1, hidden])]
        else:
            outputs = [TensorSpec("logits", "float32", [1, "sequence", int(result["metadata"]["n_tokens"])])]
        notes = [
            f"GGUF {result['precision']} written by {result['quantizer']}; llama.cpp tokenizes text itself "
            f"({result['metadata']['tokenizer.ggml.model']} vocabulary embedded in the file).",
            "parity ran llama.cpp with an f32 KV cache; its default f16 cache adds a little rounding.",
        ]
        notes += [
            f"fallback: {f['tensor']} stored as {f['got']} instead of {f['wanted']} ({f['reason']})"
            for f in result["fallbacks"]
        ]
        notes += result["warnings"]
        if tokenizer_check["mismatches"]:
            notes.append(
                f"llama.cpp tokenized {len(tokenizer_check['mismatches'])} of {tokenizer_check['sentences']} "
                f"parity sentences differently from the HF tokenizer: feed HF token ids to llama.cpp"
            )
        trained_for = student.gguf_qat_precision
        exact = trained_for is not None and trained_for.lower() == result["precision"]
        if exact:
            notes.append(
                f"GGUF-aware QAT at {trained_for}: the quantized weights equal the trained fake-quant weights, "
                f"and parity holds llama.cpp to that fake-quant student ({QAT_EXACT})"
            )
        elif trained_for is not None:
            notes.append(
                f"the student was trained for GGUF {trained_for}, this artifact is {result['precision']}: "
                "its weights are a post-training quantization"
            )
        elif student.has_qat:
            notes.append(
                "GGUF re-quantizes the float student weights with llama.cpp's block scheme; the QAT "
                "ranges are not carried over."
            )
        quantization = {
            key: result[key]
            for key in (
                "precision",
                "quantizer",
                "tensor_types",
                "fallbacks",
                "overrides",
                "skipped_tensors",
                "metadata",
                "tokenizer_pre_from",
            )
        }
        quantization["tokenizer_parity"] = tokenizer_check
        return ArtifactResult(
            files=[self.model_file],
            inputs=[TensorSpec("input_ids", "int64", [1, "sequence"])],
            outputs=outputs,
            reference="gguf-qat" if exact else "float",
            tolerance=QAT_EXACT if exact else None,
            quantization=quantization,
            notes=notes,
        )

    @staticmethod
    def tokenizer_agreement(student: StudentInfo, gguf_file: Path, sentences: list[str]) -> dict[str, Any]:
        """llama.cpp's tokenization of ``sentences`` vs the HF tokenizer's."""
        tokenizer = student.load_tokenizer()
        mismatches = []
        with GGUFRunner(gguf_file, task=student.task, vocab_only=True) as runner:
            for text in sentences:
                hf_ids = tokenizer(text)["input_ids"]
                gguf_ids = runner.tokenize(text)
                if hf_ids != gguf_ids:
                    mismatches.append({"text": text, "hf": hf_ids, "gguf": gguf_ids})
        for m in mismatches[:3]:
            log.warning("llama.cpp tokenizes %r as %s, HF as %s", m["text"], m["gguf"], m["hf"])
        return {
            "sentences": len(sentences),
            "equal": len(sentences) - len(mismatches),
            "mismatches": mismatches[:5],
        }

    def execute(
        self, artifact_dir: Path, inputs: list[dict[str, np.ndarray]], deployed: bool = False
    ) -> RuntimeRun:
        # declared numerics: the file's tensor types with an f32 KV cache; deployed: llama.cpp's
        # default f16 cache, which adds its own rounding to decoders
        return self.run_file(Path(artifact_dir) / self.model_file, inputs, "f16" if deployed else "f32")

    def run_file(self, gguf_file: Path, inputs: list[dict[str, np.ndarray]], kv_cache: str) -> RuntimeRun:
        """Run one GGUF file in llama.cpp on parity feeds (HF token ids, one unpadded row at a time)."""
        outputs = []
        task = gguf_task(gguf_file)
        feeds = []
        for feed in inputs:
            ids = np.asarray(feed["input_ids"])
            mask = np.asarray(feed.get("attention_mask", np.ones_like(ids)))
            feeds.append((ids, mask, [ids[b][mask[b].astype(bool)].tolist() for b in range(ids.shape[0])]))
        longest = max((len(r) for _, _, rows in feeds for r in rows), default=1)
        with GGUFRunner(gguf_file, task=task, kv_cache=kv_cache, n_ctx=longest) as runner:
            for ids, mask, rows in feeds:
                if task == "feature-extraction":
                    outputs.append({"sentence_embedding": np.stack([runner.embed_ids(r) for r in rows])})
                else:
                    # padded positions stay zero; parity compares real tokens only
                    logits = np.zeros((*ids.shape, runner.llm.n_vocab()), dtype=np.float32)
                    for b, r in enumerate(rows):
                        logits[b, mask[b].astype(bool)] = runner.logits_ids(r)
                    outputs.append({"logits": logits})
            system = runner.system_info()
        types = read_gguf_summary(gguf_file).get("tensor_types") or {}
        return RuntimeRun(
            outputs=outputs,
            settings={"runtime": "llama.cpp", "kv_cache": kv_cache, "n_threads": 1},
            read_back={"llama_cpp_system_info": system},
            ran="+".join(sorted(t.lower() for t in types)) if isinstance(types, dict) and types else None,
        )

    def load_instructions(self, result: ArtifactResult) -> dict[str, Any]:
        return {
            "runtime": "llama.cpp",
            "settings": "defaults; an f32 KV cache (type_k/type_v) reproduces the parity figures of decoders exactly",
            "python": f"llama_cpp.Llama({self.model_file!r}, embedding=..., n_ubatch=<n_ctx for BERT>)",
        }
