"""Shared pieces of `distill` and `finetune`: TrainingArguments, step counting, run folders."""

from __future__ import annotations

import logging
import math
import os
import shutil
from pathlib import Path

import torch
from transformers import TrainerCallback

from edgedistill.compress.config import TrainingConfig
from edgedistill.config import dump_config
from edgedistill.errors import EdgeDistillError, TrainingError
from edgedistill.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def total_optimizer_steps(num_examples: int, tc: TrainingConfig) -> int:
    if tc.max_steps is not None:
        return tc.max_steps
    per_step = tc.batch_size * tc.grad_accum * world_size()
    return max(1, math.ceil(tc.epochs * math.ceil(num_examples / per_step)))


def training_arguments(
    tc: TrainingConfig, output_dir: Path, max_steps: int, *, seed: int, learning_rate: float
):
    import dataclasses

    from transformers import TrainingArguments

    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    # transformers 5 folded warmup_ratio into warmup_steps (a float below 1 is a ratio) and always
    # saves safetensors (save_safetensors is gone); 4.x has both arguments.
    version_specific = (
        {"warmup_ratio": tc.warmup_ratio, "save_safetensors": True}
        if "warmup_ratio" in fields
        else {"warmup_steps": tc.warmup_ratio}
    )
    return TrainingArguments(
        output_dir=str(output_dir),
        max_steps=max_steps,
        per_device_train_batch_size=tc.batch_size,
        gradient_accumulation_steps=tc.grad_accum,
        learning_rate=learning_rate,
        weight_decay=tc.weight_decay,
        logging_steps=tc.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=tc.save_steps,
        save_total_limit=tc.save_total_limit,
        eval_strategy="no",
        report_to=[],
        disable_tqdm=True,
        seed=seed,
        data_seed=seed,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
        ddp_find_unused_parameters=world_size() > 1,
        ddp_backend="gloo" if not torch.cuda.is_available() and world_size() > 1 else None,
        **version_specific,
    )


def checkpoint_is_complete(folder: Path) -> bool:
    """A Trainer checkpoint is complete when its ``trainer_state.json`` (written last) parses and
    names the step in the folder's name, and its weights and optimizer state are there."""
    import json

    try:
        state = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    step = folder.name.rpartition("-")[2]
    has_weights = any((folder / n).is_file() for n in ("model.safetensors", "pytorch_model.bin"))
    has_optimizer = (folder / "optimizer.pt").is_file() and (folder / "scheduler.pt").is_file()
    has_rng = any(folder.glob("rng_state*.pth"))  # without it a resumed run draws other numbers
    return str(state.get("global_step")) == step and has_weights and has_optimizer and has_rng


def last_checkpoint(folder: Path) -> str | None:
    """The newest COMPLETE ``checkpoint-N`` in ``folder`` (None when there is none).

    A process killed while Trainer writes a checkpoint leaves a torn or empty folder; resuming
    from it fails (HF's ``get_last_checkpoint`` only looks at the names). Torn folders newer than
    the last complete one are removed by rank 0, so Trainer's rotation never counts them either.
    """
    import re

    if not folder.is_dir():
        return None
    found = []
    for entry in folder.iterdir():
        match = re.fullmatch(r"checkpoint-(\d+)", entry.name)
        if match and entry.is_dir():
            found.append((int(match.group(1)), entry))
    complete = None
    for _step, entry in sorted(found, reverse=True):
        if checkpoint_is_complete(entry):
            complete = entry
            break
        if int(os.environ.get("RANK", "0")) == 0:
            log.warning("%s is incomplete (interrupted while saving); resuming from an earlier one", entry)
            shutil.rmtree(entry, ignore_errors=True)
    return str(complete) if complete is not None else None


def _wait_for_rank_zero(out: Path, run_id: str, timeout_s: float = 300.0) -> None:
    """Under `accelerate launch`/torchrun, other ranks wait until rank 0 has prepared ``out``."""
    import time

    ready = out / ".rank0-ready"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready.is_file() and ready.read_text(encoding="utf-8") == run_id:
            return
        time.sleep(0.2)
    raise EdgeDistillError(f"rank 0 did not prepare {out} within {timeout_s:.0f} s; see rank 0's error above")


def prepare_run_dir(out: Path, resolved: dict, overwrite: bool, kind: str) -> bool:
    """Create ``out`` or check it holds the same run; returns True when an earlier run is resumed.

    In a multi-process launch only rank 0 checks, deletes (``overwrite``) and writes; the
    other ranks wait for it, so no rank reads a folder that rank 0 is still replacing.
    """
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if world_size() > 1 and run_id and int(os.environ.get("RANK", "0")) != 0:
        _wait_for_rank_zero(out, run_id)
        return (out / f"{kind}_config.json").is_file()
    resumed = _prepare(out, resolved, overwrite, kind)
    if world_size() > 1 and run_id:
        atomic_write_text(out / ".rank0-ready", run_id)
    return resumed


def _prepare(out: Path, resolved: dict, overwrite: bool, kind: str) -> bool:
    marker = out / f"{kind}_config.json"
    if overwrite and out.exists():
        shutil.rmtree(out)
    if marker.is_file():
        import json

        previous = json.loads(marker.read_text(encoding="utf-8"))
        if previous != resolved:
            changed = sorted(k for k in set(previous) | set(resolved) if previous.get(k) != resolved.get(k))
            raise EdgeDistillError(
                f"{out} holds an earlier {kind} run with a different recipe (changed: {', '.join(changed)}). "
                f"Resume it with the same recipe, pass --overwrite to start again, or choose another --out."
            )
        return True
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(marker, resolved)
    return False


def resolved_config(recipe) -> dict:
    return dump_config(recipe)


def check_finite_loss(loss: torch.Tensor, step: int) -> None:
    """A NaN/inf loss stops training at ``step``, before its gradients reach the weights."""
    if not bool(torch.isfinite(loss.detach()).all()):
        raise TrainingError(
            f"training step {step}: the loss is {float(loss.detach().float().mean())} (not finite); nothing "
            "from this step was applied or saved. Lower training.lr, check the temperature and the data."
        )


def check_finite_weights(model: torch.nn.Module, step: int | str) -> None:
    """Refuse to go on (or save) with a NaN/inf weight, naming the first such parameter."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.is_floating_point() and not bool(torch.isfinite(param).all()):
                when = f"training step {step}" if isinstance(step, int) else step
                raise TrainingError(
                    f"{when}: weight {name} is not finite, so the model is not saved. "
                    "Lower training.lr (or use warmup), check the data, or start from a finite checkpoint."
                )


class CpuLedgerCallback(TrainerCallback):
    """Every Trainer checkpoint a resume can start from moves the run's `CpuLedger` on."""

    def __init__(self, ledger):
        self.ledger = ledger

    def on_save(self, args, state, control, **kwargs):
        self.ledger.saved()


class FiniteWeightsCallback(TrainerCallback):
    """Checks the weights at every logging step and before every checkpoint."""

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is not None and (control.should_save or state.global_step % max(1, args.logging_steps) == 0):
            check_finite_weights(model, state.global_step)


class FiniteGuardMixin:
    """For Trainer subclasses (put first): the loss of every training step, and the weights, stay finite."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_callback(FiniteWeightsCallback())

    def training_step(self, model, inputs, *args, **kwargs):
        loss = super().training_step(model, inputs, *args, **kwargs)
        check_finite_loss(loss, self.state.global_step + 1)
        return loss
