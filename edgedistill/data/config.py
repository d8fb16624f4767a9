"""`data:` of a recipe (version 1): which train/eval files, which columns, how long a row may be."""

from __future__ import annotations

from pydantic import Field, model_validator

from edgedistill.config import StrictModel


class DataConfig(StrictModel):
    """Train/eval files and how to read them."""

    train: str | None = Field(
        None, description="TSV/CSV/JSONL/Parquet file, a datasets folder, or a hub dataset id (id[:split])."
    )
    eval: str | None = Field(None, description="Held-out split, same forms as `train`.")
    text_column: str = Field(
        "sentence", description="The text; for causal-lm plain text every token of it is a target."
    )
    text_pair_column: str | None = Field(
        None, description="Second text of a sentence pair (e.g. NLI, retrieval pairs)."
    )
    prompt_column: str | None = Field(
        None,
        description="causal-lm prompt/response data: the prompt (its tokens are context, masked from the loss). "
        "The store written by `edgedistill generate` has columns `prompt` and `response`.",
    )
    response_column: str | None = Field(
        None, description="causal-lm prompt/response data: the response (its tokens are the targets)."
    )
    append_eos: bool = Field(
        True,
        description="causal-lm: end each text/response with the tokenizer's EOS token (when it fits in "
        "max_length), so the student learns where outputs stop; a response whose finish_reason_column "
        "says it was cut off gets none.",
    )
    finish_reason_column: str | None = Field(
        "finish_reason",
        description="causal-lm: the column saying how each response ended (the `edgedistill generate` "
        "store writes it). Only a response that stopped (stop, eos, eos_token, stop_sequence) gets an EOS "
        "target; one cut at max_new_tokens (length, or any other reason) gets none, so the student is "
        "not taught to stop mid-sentence. Rows without the column, or with an empty value, keep append_eos.",
    )
    label_column: str | None = Field(
        "label", description="Integer class labels; ignored by feature-extraction distillation."
    )
    max_length: int = Field(128, gt=1, le=8192)
    max_train_samples: int | None = Field(None, gt=0, description="Use only the first N training rows.")
    max_eval_samples: int | None = Field(None, gt=0)
    strict: bool = Field(
        False, description="Refuse the data at the first bad row instead of counting and skipping it."
    )
    cache_dir: str | None = Field(
        None,
        description="Where tokenized data is cached (default $EDGEDISTILL_CACHE or ~/.cache/edgedistill; data goes under tokenized/).",
    )

    @model_validator(mode="after")
    def _prompt_response_together(self) -> DataConfig:
        if (self.prompt_column is None) != (self.response_column is None):
            raise ValueError(
                "set both `prompt_column` and `response_column` (prompt/response data), or neither"
            )
        return self
