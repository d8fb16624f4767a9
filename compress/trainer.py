"""The distillation Trainer: a `transformers.Trainer` whose loss is a weighted sum of registered losses.

Everything the ecosystem already does well (checkpoints, resume, optimiser/scheduler,
gradient accumulation, `accelerate launch` for DDP/FSDP) comes from Trainer. What is ours:

- ``DistillationModule`` wraps the student together with the loss modules, so learned
  projections are trained, checkpointed and (under DDP) synchronised with the student;
- ``DistillTrainer.compute_loss`` runs the frozen teacher (or reads its cached outputs),
  evaluates the T and alpha schedules at the *global* step, and logs every loss component;
- the learning-rate schedule is one warmup + linear decay over the whole run, so the float
  phase and the quantization-aware phase continue the same curve.

Causal language models run through the same path: the batch carries input_ids, attention_mask
and per-token labels (-100 where there is no target), and the teacher is run on exactly the
token ids the batch carries. On-policy distillation (GKD, ``on_policy.fraction``) replaces the
responses of a share of batches with the student's own samples in ``prepare_batch``
(compress/on_policy.py); the teacher then runs live on them and supervised terms are skipped.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from transformers import Trainer, TrainerCallback

from edgedistill.compress.config import DistillRecipe, LossSpec
from edgedistill.compress.losses import DistillLoss, LossInputs, StudentOutputs, TeacherOutputs, mean_pool
from edgedistill.compress.schedules import schedule_value
from edgedistill.compress.training import FiniteGuardMixin

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: batch[k] for k in MODEL_INPUTS if k in batch}


class DistillationModule(nn.Module):
    """The student plus its loss modules; ``forward`` returns (total loss, {component: value})."""

    def __init__(
        self, student: nn.Module, specs: Sequence[LossSpec], losses: Sequence[DistillLoss], task: str
    ):
        super().__init__()
        self.student = student
        self.losses = nn.ModuleList(losses)
        self.weights = [spec.weight for spec in specs]
        self.task = task
        # a feature-extraction student's output, or a generalist's second output (`edgedistill.outputs`)
        self.embeds = task == "feature-extraction" or any("embedding" in loss.needs for loss in losses)
        self.need_hidden = any("hidden_states" in loss.student_needs for loss in losses) or self.embeds
        self.need_attentions = any("attentions" in loss.student_needs for loss in losses)
        # A decoder's key/value cache is for generation; training forwards never reuse it.
        self.forward_options = {"use_cache": False} if task == "causal-lm" else {}
        roles = {loss.role for loss in losses}
        # alpha mixes the distillation and supervised groups only when both are present.
        self.mix_with_alpha = roles == {"distill", "supervised"}

    def student_forward(self, inputs: dict[str, torch.Tensor]) -> StudentOutputs:
        out = self.student(
            **inputs,
            **self.forward_options,
            output_hidden_states=self.need_hidden,
            output_attentions=self.need_attentions,
            return_dict=True,
        )
        hidden = getattr(out, "hidden_states", None)
        embedding = None
        if self.embeds:  # a classifier's last hidden state is the last of its hidden_states
            last = out.last_hidden_state if self.task == "feature-extraction" else hidden[-1]
            embedding = mean_pool(last, inputs["attention_mask"])
        return StudentOutputs(
            logits=getattr(out, "logits", None),
            hidden_states=hidden,
            attentions=getattr(out, "attentions", None),
            embedding=embedding,
        )

    def forward(
        self,
        inputs: dict[str, torch.Tensor],
        teacher: TeacherOutputs,
        labels: torch.Tensor | None,
        temperature: float,
        alpha: float,
        supervised: bool = True,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``supervised=False`` (batches sampled from the student): distillation terms only, unmixed."""
        student = self.student_forward(inputs)
        loss_inputs = LossInputs(student, teacher, inputs["attention_mask"], labels, temperature)
        total = torch.zeros((), device=inputs["input_ids"].device)
        components = {}
        for loss, weight in zip(self.losses, self.weights, strict=True):
            if not supervised and loss.role == "supervised":
                continue
            value = loss(loss_inputs)
            components[loss.name] = value.detach()
            group = 1.0
            if self.mix_with_alpha and supervised:
                group = alpha if loss.role == "distill" else 1.0 - alpha
            total = total + weight * group * value
        return total, components


def global_linear_schedule(total_steps: int, warmup_steps: int, offset: int):
    """LR multiplier at phase step s: warmup then linear decay over the *whole* run (offset = steps already done)."""

    def factor(step: int) -> float:
        g = step + offset
        if g < warmup_steps:
            return (g + 1) / max(1, warmup_steps)
        return max(0.0, (total_steps - g) / max(1, total_steps - warmup_steps))

    return factor


def _tied_keys(module: nn.Module) -> set[str]:
    """State-dict keys of ``module`` that share their storage with another key (tied weights)."""
    by_storage: dict[tuple, list[str]] = defaultdict(list)
    for name, tensor in module.state_dict().items():
        if tensor.device.type != "meta" and tensor.numel():
            by_storage[(tensor.untyped_storage().data_ptr(), tensor.device)].append(name)
    return {name for names in by_storage.values() if len(names) > 1 for name in names}


class DistillTrainer(FiniteGuardMixin, Trainer):
    """Trainer whose model is a ``DistillationModule`` and whose teacher stays frozen outside it."""

    def __init__(
        self,
        *args,
        teacher: nn.Module,
        recipe: DistillRecipe,
        teacher_needs: set[str],
        total_steps: int,
        step_offset: int = 0,
        teacher_cache=None,
        token_ids: dict[str, int | None] | None = None,
        **kwargs,
    ):
        """``token_ids``: the collator's ``pad`` and the tokenizer's ``eos`` id (on-policy sampling)."""
        super().__init__(*args, **kwargs)
        self.token_ids = token_ids or {}
        self.teacher = teacher.to(self.args.device)
        self.recipe = recipe
        self.teacher_needs = teacher_needs
        self.total_steps = total_steps
        self.step_offset = step_offset
        self.teacher_cache = teacher_cache
        self._component_sums: dict[str, float] = defaultdict(float)
        self._component_counts: dict[str, int] = defaultdict(int)
        self._batches = 0
        self._on_policy_batches = 0

    # --- schedules -----------------------------------------------------------------------
    def progress(self) -> float:
        return (self.step_offset + self.state.global_step) / max(1, self.total_steps)

    def current_temperature(self) -> float:
        return schedule_value(self.recipe.temperature, self.progress())

    def current_alpha(self) -> float:
        return schedule_value(self.recipe.alpha, self.progress())

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            warmup = math.ceil(self.recipe.training.warmup_ratio * self.total_steps)
            self.lr_scheduler = LambdaLR(
                optimizer or self.optimizer,
                global_linear_schedule(self.total_steps, warmup, self.step_offset),
            )
            self._created_lr_scheduler = True
        return self.lr_scheduler

    # --- checkpoints ---------------------------------------------------------------------
    def _save(self, output_dir: str | None = None, state_dict=None):
        """Checkpoint weights that may share memory (a student with tied embeddings).

        The module is not a ``PreTrainedModel``, so HF's Trainer writes its state dict with
        ``safetensors.save_file``, which refuses tensors sharing storage (a tied
        ``embed_tokens``/``lm_head``). ``safetensors.torch.save_model`` writes each shared tensor
        once; on resume HF loads the file non-strictly and the tied twin is the same parameter,
        so it comes back with it.
        """
        if state_dict is not None or not _tied_keys(self.model):
            return super()._save(output_dir, state_dict)
        import os

        from safetensors.torch import save_model
        from transformers.trainer import SAFE_WEIGHTS_NAME, TRAINING_ARGS_NAME

        output_dir = output_dir if output_dir is not None else self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        save_model(self.model, os.path.join(output_dir, SAFE_WEIGHTS_NAME), metadata={"format": "pt"})
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    def _issue_warnings_after_load(self, load_result):
        """A tied twin that `_save` wrote once is loaded through the other name; warn about the rest
        (HF's own check reads ``_keys_to_ignore_on_save``, which only a PreTrainedModel has)."""
        from transformers.utils import logging as hf_logging

        missing = sorted(set(load_result.missing_keys) - _tied_keys(self.model))
        if missing:
            hf_logging.get_logger("transformers.trainer").warning(
                f"There were missing keys in the checkpoint model loaded: {missing}."
            )
        if load_result.unexpected_keys:
            hf_logging.get_logger("transformers.trainer").warning(
                f"There were unexpected keys in the checkpoint model loaded: {load_result.unexpected_keys}."
            )

    # --- teacher -------------------------------------------------------------------------
    @torch.no_grad()
    def teacher_outputs(
        self, inputs: dict[str, torch.Tensor], example_index: torch.Tensor | None
    ) -> TeacherOutputs:
        """The teacher's outputs for the token ids in ``inputs`` (or its cached outputs for these examples).

        Live teacher outputs depend only on the ids the batch carries, never on where they came
        from (the data, or samples of the student for on-policy distillation).
        """
        if self.teacher_cache is not None and example_index is not None:
            return self.teacher_cache.lookup(
                example_index, device=inputs["input_ids"].device, length=inputs["input_ids"].shape[1]
            )
        self.teacher.eval()
        extra = {"use_cache": False} if self.recipe.task == "causal-lm" else {}
        out = self.teacher(
            **inputs,
            **extra,
            output_hidden_states="hidden_states" in self.teacher_needs,
            output_attentions="attentions" in self.teacher_needs,
            return_dict=True,
        )
        embedding = None
        if "embedding" in self.teacher_needs:
            embedding = mean_pool(out.last_hidden_state, inputs["attention_mask"])
        return TeacherOutputs(
            logits=getattr(out, "logits", None),
            hidden_states=getattr(out, "hidden_states", None),
            attentions=getattr(out, "attentions", None),
            embedding=embedding,
        )

    # --- loss ----------------------------------------------------------------------------
    def prepare_batch(
        self, inputs: dict[str, torch.Tensor], training: bool
    ) -> tuple[dict[str, torch.Tensor], bool]:
        """The batch the student and teacher see, and whether it was sampled from the student.

        Off-policy: the data's tokens as they are. With ``on_policy.fraction`` = lambda, that share
        of training batches gets each response replaced by the student's sample after the same
        prompt (labels -100 on the prompt); the example index is dropped, so the teacher runs live.
        """
        cfg = self.recipe.on_policy
        if not training or cfg.fraction <= 0:
            return inputs, False
        from edgedistill.compress import on_policy

        step = self.step_offset + self.state.global_step
        seed = on_policy.batch_seed(self.recipe.training.seed, step, inputs["input_ids"])
        if not on_policy.goes_on_policy(cfg.fraction, seed):
            return inputs, False
        student = self.accelerator.unwrap_model(self.model).student
        sampled = on_policy.sample_responses(
            student,
            inputs,
            seed=seed,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            pad_token_id=self.token_ids.get("pad", 0),
            eos_token_id=self.token_ids.get("eos"),
            max_length=self.recipe.data.max_length,
        )
        return sampled, True

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs, sampled = self.prepare_batch(inputs, model.training)
        labels = inputs.get("labels")
        example_index = inputs.get("example_index")
        features = model_inputs(inputs)
        teacher = self.teacher_outputs(features, example_index)
        total, components = model(
            features,
            teacher,
            labels,
            self.current_temperature(),
            self.current_alpha(),
            supervised=not sampled,
        )
        if model.training:
            for name, value in components.items():
                self._component_sums[name] += float(value)
                self._component_counts[name] += 1
            self._batches += 1
            self._on_policy_batches += int(sampled)
        return (total, components) if return_outputs else total

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs and self._batches:
            for name, value in self._component_sums.items():
                logs[f"loss/{name}"] = round(value / self._component_counts[name], 6)
            logs["temperature"] = round(self.current_temperature(), 6)
            logs["alpha"] = round(self.current_alpha(), 6)
            if self.recipe.on_policy.fraction > 0:
                logs["on_policy_batches"] = round(self._on_policy_batches / self._batches, 6)
            logs["global_step"] = self.step_offset + self.state.global_step
            self._component_sums.clear()
            self._component_counts.clear()
            self._batches = self._on_policy_batches = 0
        super().log(logs, *args, **kwargs)


class RichProgressCallback(TrainerCallback):
    """A rich progress bar per training phase (Trainer's tqdm is switched off)."""

    def __init__(self, description: str):
        self.description = description
        self.progress = None
        self.task = None

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeRemainingColumn(),
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task(
            self.description, total=state.max_steps, completed=state.global_step, status=""
        )

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.progress is not None and logs and "loss" in logs:
            self.progress.update(self.task, status=f"loss {logs['loss']:.4f}")

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)
            self.progress.stop()
            self.progress = None
