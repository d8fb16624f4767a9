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


BERT_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast")


def bert_problems(config: dict[str, Any]) -> list[str]:
    """Why llama.cpp's BERT graph cannot run this BERT config (empty when it can).

    The GGUF writer refuses such a checkpoint and GGUF-aware QAT refuses such a student before
    training, with the same reasons.
    """
    problems = []
    if config.get("position_embedding_type", "absolute") != "absolute":
        problems.append(f"position_embedding_type={config['position_embedding_type']!r} (needs 'absolute')")
    if config.get("hidden_act", "gelu") not in BERT_ACTIVATIONS:
        problems.append(f"hidden_act={config['hidden_act']!r} (llama.cpp's BERT uses GELU)")
    if config.get("pruned_heads"):
        heads = int(config["num_attention_heads"])
        problems.append(
            "attention heads pruned per layer (config.pruned_heads; llama.cpp's BERT needs all "
            f"{heads} heads in every layer): export it to ONNX or OpenVINO, or distill without "
            "student.num_attention_heads"
        )
    return problems


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
