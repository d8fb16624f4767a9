"""The typed `fit:` section (version 1): which students may be built, how each is costed and ranked.

A fit recipe is a run recipe (`edgedistill.pipeline.RunRecipe`) whose ``distill`` section names
the teacher, data, losses and training budget but no student: the search supplies each
candidate's student. The budgets are the target's (``bench.targets[0]``), absolute and relative.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from edgedistill.config import StrictModel

FIT_CONFIG_VERSION = 1


class ExportChoice(StrictModel):
    """One (format, precision) an artifact may ship as; the search picks among them per shape."""

    format: str = Field(description="onnx, openvino, gguf, ort, executorch")
    precision: str = Field(description="fp32, int8, q8_0, q4_0 ... (what the format offers for the task)")


class SearchSpace(StrictModel):
    """Every student shape is one choice from each list (their product); ``null`` keeps the teacher's."""

    layers: list[int | list[int]] = Field(
        description="K (K teacher layers spread uniformly, first and last kept) or explicit teacher layer lists."
    )
    intermediate_size: list[int | None] = Field(
        default_factory=lambda: [None],
        description="Feed-forward neurons per layer (the most important ones are kept; null: the teacher's).",
    )
    num_attention_heads: list[int | None] = Field(
        default_factory=lambda: [None],
        description="Heads per layer, pruned by importance where the installed transformers can prune them.",
    )
    hidden_size: list[int | None] = Field(
        default_factory=lambda: [None],
        description="A narrower residual width (a freshly initialised student; null: the teacher's width).",
    )
    exports: list[ExportChoice] = Field(
        default_factory=lambda: [ExportChoice(format="onnx", precision="int8")],
        description="(format, precision) pairs the artifact may ship as; each shape is measured in every one.",
    )

    @field_validator("layers", "intermediate_size", "num_attention_heads", "hidden_size", "exports")
    @classmethod
    def _not_empty(cls, value: list) -> list:
        if not value:
            raise ValueError("give at least one choice (null keeps the teacher's value)")
        if len(value) > 64:
            raise ValueError("at most 64 choices per dimension")
        return value


class CostConfig(StrictModel):
    """How each (shape, format, precision) is measured on the target before any training."""

    measurement: dict[str, float | int] = Field(
        # Three fresh processes, not one: on a 2-core AMD EPYC VM the per-process median of one ONNX Runtime
        # int8 student ranged 2.95-4.84 ms over 6 processes (docs/benchmarks.md section 12), and two one-process
        # screenings of the same 18 artifacts disagreed on one feasibility verdict
        default_factory=lambda: {
            "min_iterations": 40,
            "min_seconds": 1.0,
            "warmup_iterations": 5,
            "rounds": 3,
        },
        description="Overrides of the target's `measurement` for the short screening run (latency percentiles "
        "pool `rounds` fresh processes).",
    )
    reject_margin: float = Field(
        1.25,
        ge=1.0,
        description="A screened figure beyond budget x this margin is clearly over: rejected without a full "
        "measurement. Anything closer is measured again in full before it may become a finalist's cost.",
    )
    size_margin: float = Field(
        1.05,
        ge=1.0,
        description="The reject margin of the size budgets (artifact_size_mb, size_vs_teacher). A file's size "
        "is exact, not noisy; the margin only covers the final export's quantizer (the learned QAT ranges) "
        "against the screening's post-training one (a QDQ graph is about 1 % larger than a dynamic one).",
    )
    cache_max_other_cpu: float = Field(
        0.25,
        ge=0,
        le=1,
        description="A screening run during which other processes used more than this share of the CPUs is "
        "used by this search but not cached (1.0: cache every measurement).",
    )
    skip_hopeless: bool = Field(
        True,
        description="Measure shapes cheapest first and fit a cost model to the measured points (per format and "
        "precision: latency against multiply-accumulates, size against parameters); an export it predicts "
        "clearly over a budget even at the most optimistic measured ratio is skipped: never measured, trained "
        "or a finalist (edgedistill.fit.cost_model).",
    )
    model_min_points: int = Field(
        3, ge=2, description="Measured shapes (distinct features) the cost model needs before it skips any."
    )
    model_max_residual: float = Field(
        0.25,
        gt=0,
        description="The cost model skips nothing while a measured point lies further than this share from its fit.",
    )
    cache_dir: str | None = Field(
        None,
        description="Where measured costs are kept across searches (default ~/.cache/edgedistill/fit-costs); "
        "keyed by shape, format, precision, the target's measured settings and the device fingerprint.",
    )


class ProxyConfig(StrictModel):
    """Short distillation runs that rank feasible shapes, with successive halving over rungs."""

    validation_fraction: float = Field(
        0.1, gt=0, lt=0.5, description="Share of the training rows held out to rank candidates."
    )
    validation_max_rows: int = Field(2000, ge=16, description="At most this many validation rows.")
    train_rows: int | None = Field(
        None, ge=16, description="Train the proxies on at most this many rows (default: all of the rest)."
    )
    min_steps: int = Field(40, ge=1, description="Optimiser steps of the first rung.")
    max_steps: int = Field(360, ge=1, description="Optimiser steps a candidate trains at most.")
    reduction_factor: int = Field(
        3, ge=2, description="Successive halving: 1 in N candidates is promoted to the next rung."
    )

    @model_validator(mode="after")
    def _rungs(self) -> ProxyConfig:
        if self.max_steps < self.min_steps:
            raise ValueError(f"max_steps ({self.max_steps}) must be >= min_steps ({self.min_steps})")
        return self

    def rungs(self) -> list[int]:
        """Cumulative optimiser steps after each rung: min_steps x reduction_factor^k, capped at max_steps."""
        steps, out = self.min_steps, []
        while steps < self.max_steps:
            out.append(steps)
            steps *= self.reduction_factor
        return [*out, self.max_steps]


class FitConfig(StrictModel):
    """`fit:` — search the student that passes the target's budgets, then distill it in full."""

    version: Literal[1] = FIT_CONFIG_VERSION
    space: SearchSpace
    cost: CostConfig = Field(default_factory=CostConfig)
    proxy: ProxyConfig = Field(default_factory=ProxyConfig)
    finalists: int = Field(2, ge=1, le=16, description="Best proxies distilled in full, measured and gated.")
    fallback_finalists: int = Field(
        2,
        ge=0,
        le=16,
        description="When no finalist passes at full measurement, up to this many more are distilled and "
        "measured, next in the proxy's ranking; a shape no faster at screening than a finalist that missed a "
        "latency budget in the same export is passed over (it would miss it too).",
    )
    storage: str | None = Field(
        None,
        description="Optuna storage URL (default sqlite:///OUT/fit/study.db); postgresql://... lets several "
        "machines work one study.",
    )
    study_name: str = Field("fit", description="Study name inside the storage.")
    distill_cache: str | None = Field(
        None,
        description="A folder where finished proxy rungs and finalist distillations are kept across searches "
        "(edgedistill.fit.distill_cache): a distillation with the same recipe, the same content of the files it "
        "reads and the same libraries, CPU and thread count is reused, not trained again. Null: none.",
    )
    seed: int = 0
