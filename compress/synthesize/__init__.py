"""Data-free distillation for classifiers: a transfer set made without any task training sentence.

``edgedistill synthesize --teacher DIR --lm FILE.gguf --out DIR`` (or ``synthesize(SynthesizeConfig(...), out)``):

1. texts (`sources`): an instruction-tuned LM (llama.cpp, the file's chat template) answers ``count``
   prompts drawn, seeded, from a template whose slots never name a label (`prompts`); or, as
   baselines, out-of-domain real sentences (the docstring corpus) or random token sequences from
   the teacher's vocabulary (``source: corpus | random``). They are kept in OUT/texts, a `generate`
   sample store keyed by text index: a rerun after kill -9 makes only the missing ones.
2. labels (`label`): the classifier teacher's probabilities (and a student's, for the disagreement rule).
3. selection (`selection`): clean, filter, deduplicate, then keep the texts that teach most (teacher
   entropy or teacher-student disagreement), balanced over the teacher's classes.
4. OUT/transfer.tsv (sentence, label, teacher_prob_<k>: `distill --train` reads it), OUT/transfer.jsonl,
   OUT/synthesize_report.json (counts, drops by reason, tokens/s, the LM's sha256, prompts, seeds).

Where things are: `config` (SynthesizeConfig), `prompts`, `sources`, `label`, `selection`, `run`
(synthesize), `cli`.
"""

from __future__ import annotations

from edgedistill.compress.synthesize.cli import add_synthesize_parser, cmd_synthesize
from edgedistill.compress.synthesize.config import (
    DEFAULT_SLOTS,
    DEFAULT_TEMPLATE,
    SYNTHESIZE_CONFIG_VERSION,
    LMConfig,
    PromptsConfig,
    RandomConfig,
    SelectionConfig,
    SynthesizeConfig,
    SynthesizeError,
)
from edgedistill.compress.synthesize.prompts import build_prompts
from edgedistill.compress.synthesize.run import REPORT_FILE, TRANSFER_JSONL, TRANSFER_TSV, synthesize
from edgedistill.compress.synthesize.selection import Candidate, clean_text, dedup_key, select

__all__ = [
    "DEFAULT_SLOTS",
    "DEFAULT_TEMPLATE",
    "REPORT_FILE",
    "SYNTHESIZE_CONFIG_VERSION",
    "TRANSFER_JSONL",
    "TRANSFER_TSV",
    "Candidate",
    "LMConfig",
    "PromptsConfig",
    "RandomConfig",
    "SelectionConfig",
    "SynthesizeConfig",
    "SynthesizeError",
    "add_synthesize_parser",
    "build_prompts",
    "clean_text",
    "cmd_synthesize",
    "dedup_key",
    "select",
    "synthesize",
]
