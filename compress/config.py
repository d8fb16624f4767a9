"""Typed recipe for `edgedistill distill` and `edgedistill finetune` (version 1).

A recipe reads top to bottom like the pipeline: which task, which teacher, which student,
which data, which losses under which temperature/alpha schedules, how long to train, and
when quantization-aware training starts.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_serializer, model_validator

from edgedistill.compress.model_source import ModelSource
from edgedistill.compress.teachers import Combine, TeacherEntry, output_losses, teachers_problems
from edgedistill.config import StrictModel
from edgedistill.data.config import DataConfig  # noqa: F401  (re-exported: recipes' `data:` section)

RECIPE_VERSION = 1

Task = Literal["sequence-classification", "feature-extraction", "causal-lm"]

# Losses per task: class logits, sentence embeddings, next-token distributions. Layer-wise losses
# (hidden states, attention maps) apply to every task.
LAYER_LOSSES = frozenset({"hidden_mse", "attention_kl"})
TASK_LOSSES = {
    "sequence-classification": frozenset({"soft_kl", "hard_ce"}) | LAYER_LOSSES,
    "feature-extraction": frozenset({"embedding_cosine", "embedding_mse"}) | LAYER_LOSSES,
    "causal-lm": frozenset({"token_kd", "next_token_ce"}) | LAYER_LOSSES,
}


class PruneConfig(StrictModel):
    """How a teacher-initialised student loses heads / feed-forward neurons (compress/pruning.py)."""

    importance: Literal["activation", "magnitude"] = Field(
        "activation",
        description="activation: each unit's mean contribution on training batches (Minitron-style); "
        "magnitude: data-free weight norms.",
    )
    calibration_samples: int = Field(
        256, gt=0, description="Training examples run through the student to score units (activation)."
    )


class StudentConfig(StrictModel):
    """How the student is made: teacher layers (DistilBERT-style), optionally with fewer heads and
    feed-forward neurons pruned by importance, a narrower fresh model, or any HF folder."""

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
        None,
        gt=0,
        description="Feed-forward size. With hidden_size: the fresh model's (default: the teacher's "
        "intermediate/hidden ratio x hidden_size). Without: the teacher-initialised student keeps this many "
        "feed-forward neurons per layer, the most important ones (structured pruning, see `prune`).",
    )
    num_attention_heads: int | None = Field(
        None,
        gt=0,
        description="Heads. With hidden_size: the fresh model's (default keeps the teacher's head size). "
        "Without: the teacher-initialised student keeps this many heads per layer, the most important "
        "ones (grouped key/value heads are pruned by whole groups).",
    )
    prune: PruneConfig = Field(
        default_factory=PruneConfig, description="How heads/neurons are scored when the student is pruned."
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
        if self.path and self.derives:
            raise ValueError(
                "give either `path` (an existing student) or `layers`/`hidden_size`/`intermediate_size`/"
                "`num_attention_heads` (derive one from the teacher), not both"
            )
        return self

    @property
    def derives(self) -> bool:
        """True when the student is to be derived from the teacher (any of the derivation fields is set)."""
        fields = (self.layers, self.hidden_size, self.intermediate_size, self.num_attention_heads)
        return any(v is not None for v in fields)

    def prunes(self, teacher_hidden: int) -> bool:
        """True when the student is the teacher's layers with heads/neurons removed (not a fresh model)."""
        fresh = self.hidden_size is not None and self.hidden_size != teacher_hidden
        return (
            not self.path
            and not fresh
            and (self.intermediate_size is not None or self.num_attention_heads is not None)
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


Divergence = Literal["forward_kl", "reverse_kl", "jsd"]


class LossSpec(StrictModel):
    """One registered loss component with its weight and options."""

    name: Literal[
        "soft_kl",
        "hard_ce",
        "hidden_mse",
        "attention_kl",
        "embedding_cosine",
        "embedding_mse",
        "token_kd",
        "next_token_ce",
    ]
    weight: float = Field(1.0, ge=0)
    layer_map: dict[int, int] | None = Field(
        None,
        description="student layer -> teacher layer (1-based; 0 is the embedding output). Default: derived.",
    )
    divergence: Divergence | None = Field(
        None,
        description="token_kd: forward_kl KL(teacher||student) (default, mode-covering), reverse_kl "
        "KL(student||teacher) (mode-seeking), or jsd, the generalized Jensen-Shannon divergence of GKD with `beta`.",
    )
    beta: float | None = Field(
        None,
        ge=0,
        le=1,
        description="token_kd with divergence jsd: teacher weight of the mixture m = beta*teacher + "
        "(1-beta)*student (default 0.5); near 0 it behaves like forward KL, near 1 like reverse KL.",
    )
    top_k: int | None = Field(
        None,
        gt=0,
        description="token_kd: compare on the teacher's k most likely tokens plus one tail bucket holding the "
        "rest of each distribution's mass (default: the full vocabulary). Needed for top-k teacher caches.",
    )

    @model_validator(mode="after")
    def _token_options(self) -> LossSpec:
        given = [key for key in ("divergence", "beta", "top_k") if getattr(self, key) is not None]
        if given and self.name != "token_kd":
            raise ValueError(f"{', '.join(given)}: option(s) of token_kd only, not of {self.name}")
        if self.beta is not None and self.divergence != "jsd":
            raise ValueError(
                "beta is the mixture weight of divergence: jsd; set divergence: jsd or drop beta"
            )
        return self


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
    """Quantization-aware phase: fake-quant inserted after `start_fraction` of training.

    `mode` names the fake-quant scheme; each mode has one branch in ``qat_phase.insert_mode_fake_quant``.
    """

    mode: Literal["int8", "gguf_q8_0", "gguf_q4_0", "ov_int8_wo", "ov_int4_wo", "none"] = Field(
        "none",
        description="int8: NNCF fake-quant (ONNX/OpenVINO int8 export). gguf_q8_0 / gguf_q4_0 (causal-lm "
        "Llama/Qwen2/Gemma, feature-extraction BERT): the exact GGUF block quantization of the weights and llama.cpp's Q8_0 activations, so the GGUF "
        "export at that precision holds the trained weights. ov_int8_wo / ov_int4_wo (causal-lm): NNCF "
        "weight-only int8 / int4 fake-quant with absorbable LoRA adapters (FQ_LORA), so the OpenVINO "
        "export at int8 / int4 holds the trained compressed weights; activations stay float.",
    )
    start_fraction: float = Field(
        0.5, ge=0, lt=1, description="Fraction of optimiser steps trained in float first."
    )
    calibration_batches: int = Field(
        16, gt=0, description="Training batches used to initialise the int8 ranges (int8 mode)."
    )
    lr_scale: float = Field(
        1.0, gt=0, description="Multiplies the learning rate during the quantization-aware phase."
    )
    group_size: int = Field(
        128,
        description="ov_int4_wo: input channels sharing one int4 scale and zero point (-1: one per output "
        "channel). Rows it does not divide take the largest power of two >= 32 that does (NNCF's ADJUST), "
        "else int8; the report lists the group sizes used.",
    )
    lora_rank: int = Field(
        256,
        gt=0,
        description="ov_*_wo: rank of the LoRA adapters absorbed into each quantized weight (NNCF's "
        "default 256), lowered to the smallest dimension of any quantized weight when that is smaller.",
    )

    @model_validator(mode="after")
    def _check(self) -> QATConfig:
        if self.group_size != -1 and self.group_size < 1:
            raise ValueError(
                f"qat.group_size must be -1 (per channel) or a positive size, not {self.group_size}"
            )
        return self


class OnPolicyConfig(StrictModel):
    """On-policy distillation (GKD) for causal-lm students: see compress/on_policy.py."""

    fraction: float = Field(
        0.0,
        ge=0,
        le=1,
        description="lambda: the share of training batches whose responses the student samples from the "
        "prompts (the teacher scores them live; supervised terms are skipped on them). 0 = off-policy only.",
    )
    max_new_tokens: int = Field(
        64, gt=0, description="Longest sampled response (also capped by data.max_length)."
    )
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the student.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling (1 = the full distribution).")


def default_losses(task: str) -> list[LossSpec]:
    if task == "feature-extraction":
        return [LossSpec(name="embedding_cosine", weight=1.0), LossSpec(name="hidden_mse", weight=1.0)]
    if task == "causal-lm":
        return [LossSpec(name="token_kd", weight=1.0), LossSpec(name="next_token_ce", weight=1.0)]
    return [LossSpec(name="soft_kl", weight=1.0), LossSpec(name="hard_ce", weight=1.0)]


def check_task_data(task: str, data: DataConfig) -> None:
    """Data options that only one task understands (raises ValueError)."""
    if task == "causal-lm" and data.text_pair_column:
        raise ValueError(
            "causal-lm reads plain text (data.text_column) or prompt/response pairs "
            "(data.prompt_column + data.response_column), not data.text_pair_column"
        )
    if task != "causal-lm" and data.prompt_column:
        raise ValueError("data.prompt_column/response_column are for task causal-lm")


class DistillRecipe(StrictModel):
    """Everything `edgedistill distill` needs. `version` pins the recipe format."""

    version: Literal[1] = RECIPE_VERSION
    task: Task = "sequence-classification"
    teacher: ModelSource | None = Field(None, description="The teacher; `teachers:` names several instead.")
    teachers: list[TeacherEntry] | None = Field(
        None,
        description="Several teachers of one student (compress/teachers.py): the student is derived from the "
        "first; each tokenizes the text itself; their outputs are cached (one pass each) and combined.",
    )
    combine: Combine = Field(
        "mean",
        description="teachers: mean (weighted mean of the teachers' tempered probabilities) or confidence "
        "(per example, weight x (1 - the teacher's normalised entropy at temperature 1)).",
    )
    student: StudentConfig = StudentConfig()
    data: DataConfig = DataConfig()
    losses: list[LossSpec] | None = Field(
        None,
        description="Default: soft_kl + hard_ce (classification), embedding_cosine + hidden_mse (embeddings).",
    )
    temperature: Schedule = Field(
        ConstantSchedule(value=4.0),
        description="Softmax temperature of the distillation terms (default 4; 1 for causal-lm, as in MiniLLM/GKD).",
    )
    alpha: Schedule = Field(
        ConstantSchedule(value=0.7),
        description="Weight of the distillation terms; supervised terms get 1 - alpha.",
    )
    training: TrainingConfig = TrainingConfig()
    qat: QATConfig = QATConfig()
    on_policy: OnPolicyConfig = OnPolicyConfig()

    @field_validator("temperature")
    @classmethod
    def _temperature_positive(cls, value: Any) -> Any:
        points = [value.value] if isinstance(value, ConstantSchedule) else [value.start, value.end]
        if any(p <= 0 for p in points):
            raise ValueError(f"the temperature divides the logits: every value must be > 0, got {points}")
        return value

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        # one spelling per dump, so a dump validates again; a one-teacher dump is what it always was
        data = handler(self)
        for key in ("teacher",) if self.teachers is not None else ("teachers", "combine"):
            data.pop(key, None)
        return data

    @model_validator(mode="after")
    def _check(self) -> DistillRecipe:
        if self.losses is None:  # a generalist's embedding output adds its loss to the task's
            extra = [LossSpec(name="embedding_cosine")] if output_losses(self.teachers) else []
            object.__setattr__(self, "losses", default_losses(self.task) + extra)
        if (self.teacher is None) == (self.teachers is None):
            raise ValueError("give `teacher:` (one teacher) or `teachers:` (a list), exactly one of the two")
        if self.teachers is not None:
            problems = teachers_problems(self.task, self.teachers, [spec.name for spec in self.losses])
            if problems:
                raise ValueError("; ".join(problems))
            # the student is derived from the first teacher: it is `teacher` to everything one-teacher
            first = self.teachers[0]
            object.__setattr__(
                self, "teacher", ModelSource(**first.model_dump(include=set(ModelSource.model_fields)))
            )
        elif "combine" in self.model_fields_set:
            raise ValueError("combine: mixes the outputs of `teachers:`; with one `teacher:` drop it")
        if self.task == "causal-lm" and "temperature" not in self.model_fields_set:
            object.__setattr__(self, "temperature", ConstantSchedule(value=1.0))
        allowed = TASK_LOSSES[self.task] | output_losses(self.teachers)
        bad = [spec.name for spec in self.losses if spec.name not in allowed]
        if bad:
            if self.task == "feature-extraction" and set(bad) & {"soft_kl", "hard_ce"}:
                raise ValueError(
                    f"losses {bad} need class logits; feature-extraction students use embedding_*/hidden_mse/attention_kl"
                )
            raise ValueError(
                f"losses {bad} do not apply to task {self.task}; it takes {sorted(TASK_LOSSES[self.task])}"
            )
        check_task_data(self.task, self.data)
        if self.task == "causal-lm" and self.training.cache_teacher_outputs:
            # the cache holds the teacher's top-k log-probs per position at one temperature
            kd = [spec for spec in self.losses if spec.name == "token_kd"]
            if not kd or any(spec.top_k is None for spec in kd):
                raise ValueError(
                    "training.cache_teacher_outputs for causal-lm caches the teacher's top-k log-probs per "
                    "position: give every token_kd loss a top_k (e.g. 64), or turn the cache off"
                )
            if not isinstance(self.temperature, ConstantSchedule):
                raise ValueError(
                    "training.cache_teacher_outputs for causal-lm stores log-probs at one temperature: use a "
                    "constant temperature, or turn the cache off"
                )
        if self.qat.mode.startswith("gguf_") and self.task not in ("causal-lm", "feature-extraction"):
            raise ValueError(
                f"qat.mode {self.qat.mode} simulates llama.cpp, which runs GGUF decoders (task causal-lm) and "
                f"BERT sentence embedders (task feature-extraction), not {self.task} heads: use qat.mode int8 "
                "for a classifier exported to ONNX/OpenVINO"
            )
        if self.qat.mode.startswith("ov_") and self.task != "causal-lm":
            raise ValueError(
                f"qat.mode {self.qat.mode} is NNCF weight-only quantization for OpenVINO decoders: use it with "
                "task causal-lm (int8 is the mode for encoders exported to ONNX/OpenVINO)"
            )
        if self.student.path is None and not self.student.derives:
            raise ValueError(
                "student: give `layers` (K or a list), `hidden_size`, `num_attention_heads`/`intermediate_size` "
                "(pruned teacher layers), or `path`"
            )
        if self.on_policy.fraction > 0:
            if self.task != "causal-lm":
                raise ValueError(
                    "on_policy.fraction > 0 samples responses from a decoder student: task causal-lm only"
                )
            if not self.data.prompt_column:
                raise ValueError(
                    "on_policy.fraction > 0 samples a response after each prompt: the data needs "
                    "data.prompt_column + data.response_column (e.g. the `edgedistill generate` store)"
                )
            if not any(spec.name == "token_kd" for spec in self.losses):
                raise ValueError(
                    "on_policy.fraction > 0 trains the student on its own samples with token_kd: add it"
                )
        return self


class FinetuneRecipe(StrictModel):
    """Plain supervised training: makes a task teacher, or the no-KD baseline of a student."""

    version: Literal[1] = RECIPE_VERSION
    task: Task = "sequence-classification"
    model: ModelSource
    layers: int | list[int] | None = Field(
        None, description="Keep only these (or K uniform) layers before training: a no-KD student."
    )
    num_labels: int | None = Field(
        None,
        ge=2,
        le=100_000,
        description="sequence-classification: classes (labels 0..N-1; others are bad rows). Unset: the "
        "model's classification head, else the labels in the train file (at most 1000).",
    )
    data: DataConfig = DataConfig()
    training: TrainingConfig = TrainingConfig()

    @model_validator(mode="after")
    def _check(self) -> FinetuneRecipe:
        check_task_data(self.task, self.data)
        return self
