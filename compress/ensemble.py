"""Several teachers of one student at run time (`teachers:`; the recipe side is compress/teachers.py).

`check_teacher_configs` refuses, before the run folder is made, every teacher that cannot load or
that cannot teach its output (a logits teacher without a classification head or with another
number of labels than the first's; an embedding teacher whose width is not the student's), all in
one error. `load_ensemble` then runs every teacher once over the training data, each on its own
tokenization of the same rows in the same order (so teachers need not share a vocabulary), into
its own `TeacherOutputCache` (class logits, or the mean-pooled embedding for the teacher of
``output: embedding``): extra teachers cost one pass each, not one per epoch, and are freed after
it. Training reads all caches by example index (`Ensemble.lookup`, the trainer's teacher cache);
soft_kl combines the logits teachers (`losses.logits.ensemble_target`), the embedding losses read
the embedding teacher's vectors. On the eval split the ensemble reports each teacher's metrics,
the ensemble's own accuracy, the student's top-1 agreement with each logits teacher and its
cosine and recall@10 to the embedding teacher (per output: `Ensemble.report`'s ``outputs``).
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
from edgedistill.compress.evaluate import classification_metrics, collect_outputs, embedding_metrics
from edgedistill.compress.losses import TeacherOutputs
from edgedistill.compress.losses.base import EnsembleLogits
from edgedistill.compress.losses.logits import ensemble_target
from edgedistill.compress.teacher_cache import TeacherOutputCache
from edgedistill.compress.teachers import TeacherEntry, teacher_names, teacher_output
from edgedistill.errors import ConfigError, EdgeDistillError, ModelLoadError
from edgedistill.outputs import RECIPE_OUTPUTS

log = logging.getLogger(__name__)


def _config(entry: TeacherEntry) -> dict:
    """A teacher's config.json, read alone (no weights)."""
    if entry.gguf_file is not None:
        return models.load_gguf_config(entry.path)
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(entry.path, trust_remote_code=entry.trust_remote_code).to_dict()
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"could not read the config of {entry.path}: {exc}") from exc


def _num_labels(config: dict) -> int:
    """The classes of a teacher's classification head."""
    labels = config.get("id2label")
    return len(labels) if labels else int(config.get("num_labels", 2))


def _output_problem(recipe: DistillRecipe, i: int, config: dict, first: dict | None) -> str | None:
    """Why teacher ``i`` (its ``config``) cannot teach the output it names (None: it can)."""
    entry = recipe.teachers[i]
    output = teacher_output(entry, recipe.task)
    architectures = config.get("architectures") or []
    if output == "embedding":
        width = recipe.student.hidden_size or (first or {}).get("hidden_size")
        hidden = config.get("hidden_size")
        if width is not None and hidden is not None and hidden != width:
            return (
                f"{entry.path} embeds in {hidden} dimensions but the student's hidden states have {width}: "
                "the student's sentence_embedding is its mean-pooled last hidden state, with no projection head "
                "(not built); give output 'embedding' a teacher of the student's width"
            )
        return None
    if architectures and not any(a.endswith("ForSequenceClassification") for a in architectures):
        return (
            f"{entry.path} is a {architectures[0]}, not a sequence classifier, and cannot teach output 'logits' "
            "(the class head); a sentence-embedding teacher teaches output: embedding"
        )
    if i > 0 and first is not None and _num_labels(config) != _num_labels(first):
        return (
            f"{entry.path} classifies into {_num_labels(config)} labels but the first teacher into "
            f"{_num_labels(first)}: teachers of one output must share the task (the same labels in the same order)"
        )
    return None


def check_teacher_configs(recipe: DistillRecipe) -> None:
    """Every teacher's folder checked and its config against the output it teaches; all problems at once."""
    problems: list[tuple[str, str]] = []
    configs: list[dict | None] = []
    for i, (entry, name) in enumerate(zip(recipe.teachers, teacher_names(recipe.teachers), strict=True)):
        try:
            models.check_model_folder(
                entry.path, f"teacher {name}", entry.allow_pickle, entry.trust_remote_code
            )
            configs.append(_config(entry))
        except ModelLoadError as exc:
            problems.append((f"teachers[{i}].path", str(exc)))
            configs.append(None)
    for i, config in enumerate(configs):
        problem = None if config is None else _output_problem(recipe, i, config, configs[0])
        if problem:
            key = f"teachers[{i}]" if recipe.teachers[i].output is None else f"teachers[{i}].output"
            problems.append((key, problem))
    if problems:
        raise ConfigError("teachers", problems)


@dataclass
class Member:
    """One teacher after its pass: its train-set cache and eval outputs (class logits, or sentence
    embeddings for ``output == "embedding"``); the model itself is gone."""

    entry: TeacherEntry
    name: str
    cache: TeacherOutputCache
    eval_outputs: torch.Tensor
    metrics: dict
    parameters: int
    layers: int
    provenance: dict | None
    output: str = "logits"


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

    @property
    def logit_members(self) -> list[Member]:
        return [m for m in self.members if m.output == "logits"]

    @property
    def embedding_member(self) -> Member | None:
        return next((m for m in self.members if m.output == "embedding"), None)

    def lookup(
        self, example_index: torch.Tensor, device: torch.device, length: int | None = None
    ) -> TeacherOutputs:
        """Every teacher's cached outputs of these examples: the logits teachers' for soft_kl to combine at
        the step's temperature, the embedding teacher's for the embedding losses."""
        logits = torch.stack([m.cache.lookup(example_index, device).logits for m in self.logit_members])
        embedder = self.embedding_member
        embedding = None if embedder is None else embedder.cache.lookup(example_index, device).embedding
        return TeacherOutputs(logits=logits[0], embedding=embedding, ensemble=self._logits(logits))

    def _logits(self, logits: torch.Tensor) -> EnsembleLogits:
        members = self.logit_members
        return EnsembleLogits(
            logits, [m.entry.weight for m in members], [m.entry.temperature for m in members], self.combine
        )

    def eval_predictions(self) -> torch.Tensor:
        """The ensemble's class per eval example: its combined distribution with every teacher at its
        own temperature, or 1 (its plain probabilities) where it has none."""
        logits = torch.stack([m.eval_outputs for m in self.logit_members])
        return ensemble_target(self._logits(logits), 1.0).argmax(-1)

    def student_agreement(self, student_logits: torch.Tensor) -> dict[str, Any]:
        """The student's top-1 agreement with each logits teacher and with the ensemble on the eval split."""
        preds = student_logits.argmax(-1)
        return {
            "agreement_with_teachers": {
                m.name: float((preds == m.eval_outputs.argmax(-1)).float().mean()) for m in self.logit_members
            },
            "agreement_with_ensemble": float((preds == self.eval_predictions()).float().mean()),
        }

    def student_embedding_metrics(self, student_embedding: torch.Tensor) -> dict[str, Any]:
        """The student's sentence embedding against the embedding teacher's: cosine and recall@10."""
        member = self.embedding_member
        metrics = embedding_metrics({"embedding": student_embedding}, {"embedding": member.eval_outputs})
        return {**metrics, "teacher": member.name}

    def report(self, student_metrics: dict) -> dict[str, Any]:
        """The report's ``teachers`` entries, ``ensemble`` block (the logits teachers) and ``outputs``
        (per student output: its teachers and the student's metrics on it)."""
        agreement = student_metrics.get("agreement_with_teachers", {})
        embedding = student_metrics.get(RECIPE_OUTPUTS["embedding"])
        teachers = [
            {
                "name": m.name,
                "path": m.entry.path,
                "gguf": m.provenance,
                "weight": m.entry.weight,
                "temperature": m.entry.temperature,
                "output": m.output,
                "parameters": m.parameters,
                "layers": m.layers,
                "metrics": m.metrics,
                "student_agreement": agreement.get(m.name),
                **({"student_embedding": embedding} if m.output == "embedding" else {}),
                "cache": str(m.cache.folder),
            }
            for m in self.members
        ]
        metrics: dict[str, Any] = {"examples": len(self.logit_members[0].eval_outputs)}
        if self.labels is not None:
            metrics["accuracy"] = float((self.eval_predictions() == self.labels).float().mean())
        ensemble = {
            "combine": self.combine,
            "metrics": metrics,
            "student_agreement": student_metrics.get("agreement_with_ensemble"),
        }
        logits_keys = (
            "accuracy",
            "agreement_with_teacher",
            "kl_to_teacher",
            "agreement_with_ensemble",
            "examples",
        )
        outputs = {
            "logits": {
                "teachers": [m.name for m in self.logit_members],
                "student": {k: student_metrics[k] for k in logits_keys if k in student_metrics},
            }
        }
        if self.embedding_member is not None:
            outputs["embedding"] = {
                "teachers": [self.embedding_member.name],
                "exported_as": RECIPE_OUTPUTS["embedding"],
                "pooling": "mean of the last hidden state over real tokens",
                "student": embedding,
            }
        return {"teachers": teachers, "ensemble": ensemble, "outputs": outputs}


def _member_task(recipe: DistillRecipe, entry: TeacherEntry) -> str:
    """The task a teacher is loaded for: its output's (an embedding teacher is a bare encoder)."""
    return "feature-extraction" if teacher_output(entry, recipe.task) == "embedding" else recipe.task


def load_ensemble(recipe: DistillRecipe, out: Path, sources, teacher_eval: dict) -> Ensemble:
    """Each teacher once over the training data (its own tokens) into its cache; the first is ``sources.teacher``."""
    cache_root = Path(recipe.training.teacher_cache_dir or out / "teacher_cache")
    num_labels = sources.teacher.config.num_labels
    members = []
    for i, (entry, name) in enumerate(zip(recipe.teachers, teacher_names(recipe.teachers), strict=True)):
        task = _member_task(recipe, entry)
        output = teacher_output(entry, recipe.task)
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
        field = "embedding" if output == "embedding" else "logits"
        cache = TeacherOutputCache.build(model, train_ds, collator, {field}, cache_root)
        if cache.arrays[field].shape[0] != len(sources.train_ds):
            raise EdgeDistillError(
                f"teacher {name}: its cache {cache.folder} does not hold one row per example"
            )
        members.append(
            Member(
                entry=entry,
                name=name,
                cache=cache,
                eval_outputs=eval_out[field],
                metrics=classification_metrics(eval_out)
                if field == "logits"
                else {"examples": len(eval_out[field]), "note": "reference of output embedding"},
                parameters=models.count_parameters(model),
                layers=model.config.num_hidden_layers,
                provenance=models.teacher_provenance(entry.path),
                output=output,
            )
        )
        log.info("teacher %s (%s): %s", name, output, members[-1].metrics)
        del model  # an extra teacher is not needed after its pass
    return Ensemble(members, recipe.combine, teacher_eval.get("labels"))
