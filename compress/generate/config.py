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


# Config keys that do not change what is generated: a resume may change them freely.
_NOT_IDENTITY = {"batch_size", "device", "output_format", "teacher", "prompts"}


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
    batch_size: int = Field(8, gt=0, description="Sequences generated together (left-padded).")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="Teacher weights: auto = float32 on CPU, the checkpoint's dtype on GPU."
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    output_format: Literal["jsonl", "parquet"] = Field(
        "jsonl", description="jsonl: samples.jsonl only; parquet: also samples.parquet at the end."
    )

    @model_validator(mode="after")
    def _check(self) -> GenerateConfig:
        if self.system_prompt is not None and not self.chat_template:
            raise ValueError(
                "system_prompt needs chat_template: true (a system message needs a chat template)"
            )
        return self


def identity_of(cfg: GenerateConfig) -> dict[str, Any]:
    """The config values that decide what is generated (a resume must not change them)."""
    return {k: v for k, v in dump_config(cfg).items() if k not in _NOT_IDENTITY}


def sample_seed(seed: int, prompt_id: int, sample_index: int) -> int:
    """The seed of one sample: a 63-bit hash of (seed, prompt_id, sample_index), the same in every run."""
    digest = hashlib.sha256(f"edgedistill-generate:{seed}:{prompt_id}:{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
