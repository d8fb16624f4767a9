"""Several teachers of one student at run time (`teachers:`; the recipe side is compress/teachers.py).

`check_teacher_configs` refuses, before the run folder is made, every teacher that cannot load or
whose task differs from the first's (another number of labels), all in one error. `load_ensemble`
then runs every teacher once over the training data, each on its own tokenization of the same
rows in the same order (so teachers need not share a vocabulary), into its own
`TeacherOutputCache`: extra teachers cost one pass each, not one per epoch, and are freed after
it. Training reads all caches by example index (`Ensemble.lookup`, the trainer's teacher cache);
soft_kl combines them (`losses.logits.ensemble_target`). On the eval split the ensemble reports
each teacher's metrics, the ensemble's own accuracy and the student's top-1 agreement with each.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from edgedistill.compress import models
from edgedistill.compress.config import DistillRecipe
from edgedistill.compress.data import collator_for, load_train_eval
from edgedistill.compress.evaluate import classification_metrics, collect_outputs
from edgedistill.compress.losses import TeacherOutputs
from edgedistill.compress.losses.base import EnsembleLogits
from edgedistill.compress.losses.logits import ensemble_target
from edgedistill.compress.teacher_cache import TeacherOutputCache
from edgedistill.compress.teachers import TeacherEntry, teacher_names
from edgedistill.errors import ConfigError, EdgeDistillError, ModelLoadError

log = logging.getLogger(__name__)


def _num_labels(entry: TeacherEntry) -> int:
    """The classes of a teacher's classification head, from its config alone (no weights read)."""
    if entry.gguf_file is not None:
        config = models.load_gguf_config(entry.path)
    else:
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(
                entry.path, trust_remote_code=entry.trust_remote_code
            ).to_dict()
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"could not read the config of {entry.path}: {exc}") from exc
    labels = config.get("id2label")
    return len(labels) if labels else int(config.get("num_labels", 2))


def check_teacher_configs(recipe: DistillRecipe) -> None:
    """Every teacher's folder checked and its label count compared with the first's; all problems at once."""
    problems: list[tuple[str, str]] = []
    counts: list[int | None] = []
    for i, (entry, name) in enumerate(zip(recipe.teachers, teacher_names(recipe.teachers), strict=True)):
        try:
            models.check_model_folder(
                entry.path, f"teacher {name}", entry.allow_pickle, entry.trust_remote_code
            )
            counts.append(_num_labels(entry))
        except ModelLoadError as exc:
            problems.append((f"teachers[{i}].path", str(exc)))
            counts.append(None)
    first = counts[0]
    for i, count in enumerate(counts[1:], start=1):
        if first is not None and count is not None and count != first:
            problems.append(
                (
                    f"teachers[{i}]",
                    f"{recipe.teachers[i].path} classifies into {count} labels but the first teacher into {first}: "
                    "teachers of one student must share the task (the same labels in the same order)",
                )
            )
    if problems:
        raise ConfigError("teachers", problems)


@dataclass
class Member:
    """One teacher after its pass: its train-set cache and eval logits; the model itself is gone."""

    entry: TeacherEntry
    name: str
    cache: TeacherOutputCache
    eval_logits: torch.Tensor
    metrics: dict
    parameters: int
    layers: int
    provenance: dict | None


def _check_aligned(first, other, name: str, split: str) -> None:
    """Another teacher's tokenization holds the same rows in the same order (example i is row i)."""
    if len(other) != len(first):
        raise EdgeDistillError(
            f"teacher {name}: its tokenization of the {split} split has {len(other)} rows, the first teacher's "
            f"{len(first)}: rows must be the same for every teacher"
        )
    for i, (a, b) in enumerate(zip(first.examples, other.examples, strict=True)):
        if (a.text, a.text_pair, a.label) != (b.text, b.text_pair, b.label):
            raise EdgeDistillError(
                f"teacher {name}: {split} row {i} differs from the first teacher's row {i}"
            )


@dataclass
class Ensemble:
    """The teachers of ``teachers:``: the trainer's teacher cache, and their part of the report."""

    members: list[Member]
    combine: str
    labels: torch.Tensor | None  # eval labels

    @property
    def nbytes(self) -> int:
        return sum(m.cache.nbytes for m in self.members)

    def lookup(
        self, example_index: torch.Tensor, device: torch.device, length: int | None = None
    ) -> TeacherOutputs:
        """Every teacher's cached logits of these examples; soft_kl combines them at the step's temperature."""
        logits = torch.stack([m.cache.lookup(example_index, device).logits for m in self.members])
        return TeacherOutputs(logits=logits[0], ensemble=self._logits(logits))

    def _logits(self, logits: torch.Tensor) -> EnsembleLogits:
        return EnsembleLogits(
            logits,
            [m.entry.weight for m in self.members],
            [m.entry.temperature for m in self.members],
            self.combine,
        )

    def eval_predictions(self) -> torch.Tensor:
        """The ensemble's class per eval example: its combined distribution with every teacher at its
        own temperature, or 1 (its plain probabilities) where it has none."""
        logits = torch.stack([m.eval_logits for m in self.members])
        return ensemble_target(self._logits(logits), 1.0).argmax(-1)

    def student_agreement(self, student_logits: torch.Tensor) -> dict[str, Any]:
        """The student's top-1 agreement with each teacher and with the ensemble on the eval split."""
        preds = student_logits.argmax(-1)
        return {
            "agreement_with_teachers": {
                m.name: float((preds == m.eval_logits.argmax(-1)).float().mean()) for m in self.members
            },
            "agreement_with_ensemble": float((preds == self.eval_predictions()).float().mean()),
        }

    def report(self, student_metrics: dict) -> dict[str, Any]:
        """The report's ``teachers`` entries and ``ensemble`` block."""
        agreement = student_metrics.get("agreement_with_teachers", {})
        teachers = [
            {
                "name": m.name,
                "path": m.entry.path,
                "gguf": m.provenance,
                "weight": m.entry.weight,
                "temperature": m.entry.temperature,
                "output": m.entry.output or "logits",
                "parameters": m.parameters,
                "layers": m.layers,
                "metrics": m.metrics,
                "student_agreement": agreement.get(m.name),
                "cache": str(m.cache.folder),
            }
            for m in self.members
        ]
        metrics: dict[str, Any] = {"examples": len(self.members[0].eval_logits)}
        if self.labels is not None:
            metrics["accuracy"] = float((self.eval_predictions() == self.labels).float().mean())
        ensemble = {
            "combine": self.combine,
            "metrics": metrics,
            "student_agreement": student_metrics.get("agreement_with_ensemble"),
        }
        return {"teachers": teachers, "ensemble": ensemble}


def load_ensemble(recipe: DistillRecipe, out: Path, sources, teacher_eval: dict) -> Ensemble:
    """Each teacher once over the training data (its own tokens) into its cache; the first is ``sources.teacher``."""
    task = recipe.task
    cache_root = Path(recipe.training.teacher_cache_dir or out / "teacher_cache")
    num_labels = sources.teacher.config.num_labels
    members = []
    for i, (entry, name) in enumerate(zip(recipe.teachers, teacher_names(recipe.teachers), strict=True)):
        if i == 0:
            model, train_ds, collator, eval_out = (
                sources.teacher,
                sources.train_ds,
                sources.collator,
                teacher_eval,
            )
        else:
            model = models.freeze(models.load_model(entry, task, f"teacher {name}"))
            tokenizer = models.load_tokenizer(entry.path, entry.trust_remote_code)
            train_ds, eval_ds = load_train_eval(
                recipe.data, tokenizer, needs_labels=True, num_labels=num_labels
            )
            _check_aligned(sources.train_ds, train_ds, name, "train")
            _check_aligned(sources.eval_ds, eval_ds, name, "eval")
            collator = collator_for(tokenizer, task)
            eval_out = collect_outputs(model, eval_ds, collator, task)
        cache = TeacherOutputCache.build(model, train_ds, collator, {"logits"}, cache_root)
        if cache.arrays["logits"].shape[0] != len(sources.train_ds):
            raise EdgeDistillError(
                f"teacher {name}: its cache {cache.folder} does not hold one row per example"
            )
        members.append(
            Member(
                entry=entry,
                name=name,
                cache=cache,
                eval_logits=eval_out["logits"],
                metrics=classification_metrics(eval_out),
                parameters=models.count_parameters(model),
                layers=model.config.num_hidden_layers,
                provenance=models.teacher_provenance(entry.path),
            )
        )
        log.info("teacher %s: %s", name, members[-1].metrics)
        del model  # an extra teacher is not needed after its pass
    return Ensemble(members, recipe.combine, teacher_eval.get("labels"))
