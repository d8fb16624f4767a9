"""The HF architectures GGUF knows: llama.cpp's architecture per model_type, and which checkpoint tensors convert."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GGUFArch:
    """One supported HF ``model_type``: its llama.cpp architecture and the task llama.cpp runs it for."""

    model_type: str
    gguf_arch: str  # gguf.MODEL_ARCH member name
    task: str
    hf_class: str


ARCHITECTURES = {
    "bert": GGUFArch("bert", "BERT", "feature-extraction", "BertModel"),
    "llama": GGUFArch("llama", "LLAMA", "causal-lm", "LlamaForCausalLM"),
    "qwen2": GGUFArch("qwen2", "QWEN2", "causal-lm", "Qwen2ForCausalLM"),
}


def supported_architectures() -> str:
    return ", ".join(f"{a.model_type} ({a.hf_class}, {a.task})" for a in ARCHITECTURES.values())


def _converted_name(arch: GGUFArch, config: dict[str, Any], name: str) -> tuple[str, bool]:
    """(name the tensor is converted under, whether it is converted): BERT drops its ``bert.`` prefix;
    buffers, BERT's pooler/heads and a tied ``lm_head`` are skipped on purpose."""
    if arch.model_type == "bert":
        name = name.removeprefix("bert.")
        # position_ids is a buffer; pooler/cls heads are not part of the embedding model.
        skip = name == "embeddings.position_ids" or name.startswith(("pooler.", "cls.", "classifier."))
        return name, not skip
    if name.endswith("rotary_emb.inv_freq"):
        return name, False
    if name == "lm_head.weight" and config.get("tie_word_embeddings"):
        return name, False  # llama.cpp reuses token_embd when output.weight is absent
    return name, True


# Architectures whose tensor rule is known (llama.cpp's names, via gguf's tensor-name maps) but
# that `write_gguf` does not export yet: QAT can target them, export refuses them clearly.
RULE_ONLY_ARCHITECTURES = {
    "gemma": GGUFArch("gemma", "GEMMA", "causal-lm", "GemmaForCausalLM"),
    "gemma2": GGUFArch("gemma2", "GEMMA2", "causal-lm", "Gemma2ForCausalLM"),
    "gemma3_text": GGUFArch("gemma3_text", "GEMMA3", "causal-lm", "Gemma3ForCausalLM"),
}
