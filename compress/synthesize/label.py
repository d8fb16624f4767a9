"""The classifier teacher's soft outputs on the texts (and a student's, for the disagreement rule)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from edgedistill.compress.model_source import ModelSource
from edgedistill.compress.synthesize.config import SynthesizeError

logger = logging.getLogger(__name__)


@dataclass
class Classifier:
    """A loaded sequence-classification model with its own tokenizer."""

    role: str
    path: str
    model: Any
    tokenizer: Any

    @property
    def num_labels(self) -> int:
        return int(self.model.config.num_labels)

    @property
    def label_names(self) -> list[str]:
        id2label = getattr(self.model.config, "id2label", None) or {}
        return [str(id2label.get(i, i)) for i in range(self.num_labels)]


def check_classifier(source: ModelSource, role: str) -> None:
    """Refuse, before any text is made, a missing folder and one without a classification head
    (transformers would add a random head, and its "labels" would be noise)."""
    from edgedistill.compress.models import check_model_folder
    from edgedistill.io import read_json_object

    folder = check_model_folder(source.path, role, source.allow_pickle, source.trust_remote_code)
    if folder is None or not (folder / "config.json").is_file():  # a hub id, or a GGUF file
        return
    architectures = (
        read_json_object(
            folder / "config.json", "pass a model folder written by save_pretrained", SynthesizeError
        ).get("architectures")
        or []
    )
    if architectures and not any(str(a).endswith("ForSequenceClassification") for a in architectures):
        raise SynthesizeError(
            f"the {role} {source.path} is a {architectures[0]}, not a sequence classifier: its labels would "
            "come from a randomly initialised head. Pass a fine-tuned classifier folder (e.g. the model/ "
            "of `edgedistill finetune --task sequence-classification`)."
        )


def load_classifier(source: ModelSource, role: str) -> Classifier:
    """Load ``source`` as a sequence classifier (checked first with `check_classifier`)."""
    from edgedistill.compress.models import load_model, load_tokenizer

    check_classifier(source, role)
    model = load_model(source, "sequence-classification", role=role)
    model.eval()
    tokenizer = load_tokenizer(source.path, trust_remote_code=source.trust_remote_code)
    return Classifier(role, source.path, model, tokenizer)


def check_pair(teacher: Classifier, student: Classifier | None) -> None:
    if student is not None and student.num_labels != teacher.num_labels:
        raise SynthesizeError(
            f"the student {student.path} has {student.num_labels} labels, the teacher {teacher.path} "
            f"{teacher.num_labels}: the disagreement rule compares the same classes. Pass a student of this task."
        )


def probabilities(clf: Classifier, texts: list[str], max_length: int, batch_size: int) -> list[list[float]]:
    """softmax(logits) at temperature 1 for every text, in order (float32, rounded to 6 digits on disk)."""
    import torch

    rows: list[list[float]] = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = clf.tokenizer(
                texts[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            logits = clf.model(**batch).logits.float()
            rows.extend(logits.softmax(-1).tolist())
    return rows
