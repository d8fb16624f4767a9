"""Typed recipe for `edgedistill distill` and `edgedistill finetune` (version 1).

A recipe reads top to bottom like the pipeline: which task, which teacher, which student,
which data, which losses under which temperature/alpha schedules, how long to train, and
when quantization-aware training starts.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from edgedistill.config import StrictModel

RECIPE_VERSION = 1

Task = Literal["sequence-classification", "feature-extraction"]


class ModelSource(StrictModel):
    """Where a model comes from: a local HF folder or a hub id."""

    path: str = Field(description="Local folder written by save_pretrained, or a Hugging Face hub id.")
    trust_remote_code: bool = Field(
        False, description="Run modelling code shipped with the model. Off unless you trust it."
    )
    allow_pickle: bool = Field(
        False,
        description="Accept pickle weights (pytorch_model.bin). Pickle can execute code: only for files you trust.",
    )


class StudentConfig(StrictModel):
    """How the student is made: teacher layers (DistilBERT-style), a narrower fresh model, or any HF folder."""

    path: str | None = Field(
        None, description="Use this HF folder as the student instead of deriving one from the teacher."
    )
    layers: int | list[int] | None = Field(
        None,
        description="K (keep K teacher layers chosen uniformly) or an explicit list of teacher layer indices.",
    )
    hidden_size: int | None = Field(
        None, gt=0, description="Narrower hidden size: the student is freshly initialised."
    )
    intermediate_size: int | None = Field(
        None, gt=0, description="Feed-forward size (default 4 x hidden_size when narrower)."
    )
    num_attention_heads: int | None = Field(
        None, gt=0, description="Heads (default keeps the teacher's head size)."
    )
    trust_remote_code: bool = False
    allow_pickle: bool = False

    @field_validator("layers")
    @classmethod
    def _layers_positive(cls, v: int | list[int] | None) -> int | list[int] | None:
        if isinstance(v, int) and v <= 0:
            raise ValueError("must be a positive number of layers")
        if isinstance(v, list):
            if not v:
                raise ValueError("an explicit layer list must not be empty")
            if any(i < 0 for i in v) or len(set(v)) != len(v):
                raise ValueError("layer indices must be distinct and >= 0")
        return v

    @model_validator(mode="after")
    def _path_excludes_derivation(self) -> StudentConfig:
        if self.path and (self.layers is not None or self.hidden_size is not None):
            raise ValueError(
                "give either `path` (an existing student) or `layers`/`hidden_size` (derive one), not both"
            )
        return self


class DataConfig(StrictModel):
    """Train/eval files and how to read them."""

    train: str | None = Field(
        None, description="TSV/CSV/JSONL/Parquet file, a datasets folder, or a hub dataset id (id[:split])."
    )
    eval: str | None = Field(None, description="Held-out split, same forms as `train`.")
    text_column: str = "sentence"
    text_pair_column: str | None = Field(
        None, description="Second text of a sentence pair (e.g. NLI, retrieval pairs)."
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


class ConstantSchedule(StrictModel):
    kind: Literal["constant"] = "constant"
    value: float


class RampSchedule(StrictModel):
    """Goes from `start` to `end` over training, linearly or along a half cosine."""

    kind: Literal["linear", "cosine"]
    start: float
    end: float


Schedule = Annotated[ConstantSchedule | RampSchedule, Field(discriminator="kind")]


class LossSpec(StrictModel):
    """One registered loss component with its weight and options."""

    name: Literal["soft_kl", "hard_ce", "hidden_mse", "attention_kl", "embedding_cosine", "embedding_mse"]
    weight: float = Field(1.0, ge=0)
    layer_map: dict[int, int] | None = Field(
        None,
        description="student layer -> teacher layer (1-based; 0 is the embedding output). Default: derived.",
    )


class TrainingConfig(StrictModel):
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, gt=0, description="Overrides epochs when set.")
    lr: float = Field(5e-5, gt=0)
    batch_size: int = Field(32, gt=0)
    grad_accum: int = Field(1, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    seed: int = 42
    save_steps: int = Field(
        500, gt=0, description="Checkpoint every N optimiser steps (resume picks the latest)."
    )
    save_total_limit: int = Field(2, gt=0)
    logging_steps: int = Field(10, gt=0)
    cache_teacher_outputs: bool = Field(
        False,
        description="Run the teacher over the train set once and reuse its outputs from a memory-mapped file.",
    )
    teacher_cache_dir: str | None = Field(
        None,
        description="Where cached teacher outputs live (default OUT/teacher_cache); share it across runs.",
    )


class QATConfig(StrictModel):
    """Quantization-aware phase: NNCF int8 fake-quant inserted after `start_fraction` of training."""

    mode: Literal["int8", "none"] = "none"
    start_fraction: float = Field(
        0.5, ge=0, lt=1, description="Fraction of optimiser steps trained in float first."
    )
    calibration_batches: int = Field(
        16, gt=0, description="Training batches used to initialise the int8 ranges."
    )
    lr_scale: float = Field(
        1.0, gt=0, description="Multiplies the learning rate during the quantization-aware phase."
    )


def default_losses(task: str) -> list[LossSpec]:
    if task == "feature-extraction":
        return [LossSpec(name="embedding_cosine", weight=1.0), LossSpec(name="hidden_mse", weight=1.0)]
    return [LossSpec(name="soft_kl", weight=1.0), LossSpec(name="hard_ce", weight=1.0)]


class DistillRecipe(StrictModel):
    """Everything `edgedistill distill` needs. `version` pins the recipe format."""

    version: Literal[1] = RECIPE_VERSION
    task: Task = "sequence-classification"
    teacher: ModelSource
    student: StudentConfig = StudentConfig()
    data: DataConfig = DataConfig()
    losses: list[LossSpec] | None = Field(
        None,
        description="Default: soft_kl + hard_ce (classification), embedding_cosine + hidden_mse (embeddings).",
    )
    temperature: Schedule = ConstantSchedule(value=4.0)
    alpha: Schedule = Field(
        ConstantSchedule(value=0.7),
        description="Weight of the distillation terms; supervised terms get 1 - alpha.",
    )
    training: TrainingConfig = TrainingConfig()
    qat: QATConfig = QATConfig()

    @model_validator(mode="after")
    def _check(self) -> DistillRecipe:
        if self.losses is None:
            object.__setattr__(self, "losses", default_losses(self.task))
        if self.task == "feature-extraction":
            bad = [spec.name for spec in self.losses if spec.name in ("soft_kl", "hard_ce")]
            if bad:
                raise ValueError(
                    f"losses {bad} need class logits; feature-extraction students use embedding_*/hidden_mse/attention_kl"
                )
        if self.student.path is None and self.student.layers is None and self.student.hidden_size is None:
            raise ValueError("student: give `layers` (K or a list), `hidden_size`, or `path`")
        return self


class FinetuneRecipe(StrictModel):
    """Plain supervised training: makes a task teacher, or the no-KD baseline of a student."""

    version: Literal[1] = RECIPE_VERSION
    task: Task = "sequence-classification"
    model: ModelSource
    layers: int | list[int] | None = Field(
        None, description="Keep only these (or K uniform) layers before training: a no-KD student."
    )
    data: DataConfig = DataConfig()
    training: TrainingConfig = TrainingConfig()
