"""`edgedistill generate` configuration (version 1): teacher, prompts, sampling, and what makes a run the same run."""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Literal

from pydantic import Field, model_validator

from edgedistill.compress.config import ModelSource
from edgedistill.config import StrictModel, dump_config
from edgedistill.errors import EdgeDistillError

logger = logging.getLogger(__name__)


GENERATE_CONFIG_VERSION = 1


# Config keys that do not change what is generated: a resume may change them freely. The engine
# and its llama.cpp settings are added back by identity_of as what they resolve to.
_NOT_IDENTITY = {"batch_size", "device", "output_format", "teacher", "prompts", "engine", "llama_cpp"}


class GenerateError(EdgeDistillError):
    """Generation cannot start or go on (bad prompts, a store made with other settings...)."""


class SamplingConfig(StrictModel):
    """How each response is drawn. ``do_sample: false`` is greedy decoding (the temperature and
    top-k/top-p filters are then unused)."""

    num_samples: int = Field(1, gt=0, description="Responses drawn per prompt.")
    max_new_tokens: int = Field(128, gt=0, description="Longest response, in tokens.")
    do_sample: bool = Field(True, description="Sample (true) or decode greedily (false).")
    temperature: float = Field(1.0, gt=0, description="Divides the logits before sampling.")
    top_p: float = Field(
        1.0, gt=0, le=1, description="Nucleus sampling: keep the smallest set with this mass."
    )
    top_k: int = Field(0, ge=0, description="Keep the k most likely tokens (0: no limit).")
    repetition_penalty: float = Field(
        1.0, gt=0, description="CTRL-style penalty on tokens already seen (1: off)."
    )
    seed: int = Field(
        0, ge=0, description="Base seed; each sample's seed derives from it, the prompt and the index."
    )


class LlamaCppConfig(StrictModel):
    """llama.cpp settings of ``engine: llama.cpp`` (the teacher's GGUF file run as it is, not dequantized)."""

    threads: int | None = Field(
        None,
        gt=0,
        description="llama.cpp threads (prompt and decoding). None: the cores this process may use that the "
        "1-minute load average leaves idle, at least 1. llama.cpp's workers spin at every barrier: with "
        "another busy process on the machine, more threads than idle cores run several times slower.",
    )
    prompt_batch: int = Field(
        512,
        gt=0,
        description="llama.cpp n_batch: prompt tokens evaluated per call (it changes the rounding, so it is "
        "part of what is generated). With 1 thread, SmolLM2's 43-token chat prompt took 0.27 CPU s at 64 "
        "and 0.6 at 1 here.",
    )


class GenerateConfig(StrictModel):
    """Everything `edgedistill generate` needs. `version` pins the format."""

    version: Literal[1] = GENERATE_CONFIG_VERSION
    teacher: ModelSource = Field(
        description="The teacher: an HF causal-LM folder, one .gguf file (path: DIR/NAME.gguf), or a hub id."
    )
    prompts: str = Field(
        description="Prompts file: .txt (one prompt a line), .jsonl/.json (a `prompt` field), or .tsv/.csv/.parquet."
    )
    prompt_column: str = Field("prompt", description="Field/column holding the prompt (not for .txt).")
    chat_template: bool = Field(
        False, description="Wrap each prompt as a user message with the tokenizer's chat template."
    )
    system_prompt: str | None = Field(None, description="System message (needs chat_template).")
    sampling: SamplingConfig = SamplingConfig()
    batch_size: int = Field(
        8, gt=0, description="Sequences generated together (left-padded; llama.cpp runs one at a time)."
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto",
        description="Teacher weights (engine torch): auto = float32 on CPU, the checkpoint's dtype on GPU.",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    engine: Literal["auto", "torch", "llama.cpp"] = Field(
        "auto",
        description="What runs the teacher. torch: transformers (a GGUF file is dequantized to float32); "
        "llama.cpp: the GGUF file itself, on the CPU (several times faster there); auto: llama.cpp for a "
        "GGUF teacher on the CPU, else torch. Part of what is generated: a store keeps one engine.",
    )
    llama_cpp: LlamaCppConfig = LlamaCppConfig()
    output_format: Literal["jsonl", "parquet"] = Field(
        "jsonl", description="jsonl: samples.jsonl only; parquet: also samples.parquet at the end."
    )

    @model_validator(mode="after")
    def _check(self) -> GenerateConfig:
        if self.system_prompt is not None and not self.chat_template:
            raise ValueError(
                "system_prompt needs chat_template: true (a system message needs a chat template)"
            )
        if self.engine == "llama.cpp":
            if self.teacher.gguf_file is None:
                raise ValueError(
                    f"engine: llama.cpp runs a GGUF file, but teacher.path {self.teacher.path!r} is not a .gguf "
                    "file. Name the teacher's .gguf file (teacher: {path: DIR/NAME.gguf}, CLI --teacher "
                    "DIR/NAME.gguf), or use engine: torch (CLI --engine torch) for a folder or hub id."
                )
            if self.device == "cuda":
                raise ValueError(
                    "engine: llama.cpp runs on the CPU here, but device is cuda. Use device: cpu (or auto), "
                    "or engine: torch (CLI --engine torch) to generate on the GPU."
                )
        return self


def resolve_engine(cfg: GenerateConfig) -> str:
    """The engine that runs: ``engine``, or for auto llama.cpp when the teacher is a GGUF file and the
    device is the CPU (device auto without a GPU), else torch."""
    if cfg.engine != "auto":
        return cfg.engine
    if cfg.teacher.gguf_file is None or cfg.device == "cuda":
        return "torch"
    if cfg.device == "auto":
        import torch

        if torch.cuda.is_available():
            return "torch"
    return "llama.cpp"


def identity_of(cfg: GenerateConfig) -> dict[str, Any]:
    """The config values that decide what is generated (a resume must not change them): the engine
    as it resolves (a store from before engines existed counts as torch), llama.cpp's prompt batch
    (not its threads, which change the speed only), and dtype for torch alone."""
    identity = {k: v for k, v in dump_config(cfg).items() if k not in _NOT_IDENTITY}
    identity["engine"] = resolve_engine(cfg)
    if identity["engine"] == "llama.cpp":
        identity.pop("dtype")
        identity["llama_cpp"] = {"prompt_batch": cfg.llama_cpp.prompt_batch}
    return identity


def sample_seed(seed: int, prompt_id: int, sample_index: int) -> int:
    """The seed of one sample: a 63-bit hash of (seed, prompt_id, sample_index), the same in every run."""
    digest = hashlib.sha256(f"edgedistill-generate:{seed}:{prompt_id}:{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
