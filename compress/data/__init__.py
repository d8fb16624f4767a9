"""Train/eval data for distillation: read labelled text, tokenize once, cache, pad per batch.

The path from a recipe's `data:` section to training batches:

1. `read_examples` (`edgedistill.data`, shared with bench) reads the source into `Example`s
   and a `DataReport` of bad rows.
2. `load_split` (`cache`) tokenizes the kept examples (truncated to `max_length`, not padded)
   into a `TokenizedDataset` (`tokenize`), caching the result under a key built from the file's
   content, the tokenizer and every option that changes the output, so a second run skips the work.
3. `PadCollator` (`collate`) pads each batch to its longest row and returns int64 tensors.

Causal language models (`causal_lm=True`) read plain text (`data.text_column`: every token is a
target) or prompt/response pairs (`data.prompt_column` + `data.response_column`, e.g. the JSONL
store of `edgedistill generate`: prompt tokens are context only). Their rows carry `labels`: the
input ids with -100 wherever there is no target (transformers' convention; the losses shift them
for next-token prediction), and the collator pads labels with -100.

The cache holds JSON and `.npy` arrays only (no pickle), written atomically.
"""

from __future__ import annotations

from edgedistill.compress.data.cache import (
    CACHE_FORMAT_VERSION,
    load_split,
    load_train_eval,
    tokenizer_fingerprint,
)
from edgedistill.compress.data.collate import PadCollator, collator_for
from edgedistill.compress.data.tokenize import PairMode, TokenizedDataset
from edgedistill.data import (
    FILE_SUFFIXES,
    BadRow,
    DataConfig,
    DataReport,
    Example,
    iter_jsonl,
    read_examples,
)

__all__ = [
    "CACHE_FORMAT_VERSION",
    "FILE_SUFFIXES",
    "BadRow",
    "DataConfig",
    "DataReport",
    "Example",
    "PadCollator",
    "PairMode",
    "TokenizedDataset",
    "collator_for",
    "iter_jsonl",
    "load_split",
    "load_train_eval",
    "read_examples",
    "tokenizer_fingerprint",
]
