"""Offline teacher logits for language models: top-k log-probs per position, computed once, memory-mapped.

Token-level KD on a causal LM needs the teacher's next-token distribution at every position of
every training sequence. Running the teacher each epoch costs as much as training the student,
and the full distributions (vocab-sized float rows) are far too large to keep. This cache keeps
the top ``k`` log-probs per position, once, and every epoch reads them back through np.memmap.

The contract (what the losses consume): for a sequence ``input_ids`` of length L::

    logprobs, indices = torch.log_softmax(teacher_logits[..., :vocab_size].float() / T, -1).topk(k, -1)

``indices`` int64 [L, k] and ``logprobs`` float32 [L, k]; row t is the teacher's distribution
over the token *after* ``input_ids[t]`` (the logits at position t, not shifted). ``vocab_size``
is the tokenizer's vocabulary: rows a model pads its embedding matrix with are never returned.

On disk (``root/``)::

    meta.json                       what was cached (k, T, vocab_size, fingerprints, dtypes, counts, size)
    index.npy                       int64 [num_sequences, 3]: shard, first position in the shard, length
    shards/00000/indices.npy        int32 [positions, k]
    shards/00000/logprobs.npy       float16 (default) or float32 [positions, k]
    shards/00000/offsets.npy        int64 [sequences_in_shard + 1]
    shards/00000/shard.json         first sequence, counts, measured float16 rounding error

Shard s holds sequences [s * shard_size, (s + 1) * shard_size). Each shard folder is written
under a temporary name and renamed when complete, so a killed build leaves only complete shards
and the next build continues after them. ``index.npy`` and ``meta.json`` (with
``"complete": true``) are written last.

float16 log-probs keep 11 significant bits: the rounding error is at most 2**-11 of the value
(about 0.005 at a log-prob of -10, i.e. a 0.5 % relative error on a probability of 4.5e-5); the
build measures the largest error and stores it as ``max_abs_logprob_error``.

Where things are: `meta` (format, fingerprints, identity checks, cache_size), `build`
(build_logit_cache), `read` (LogitCache, TopKTeacherCache).
"""

from __future__ import annotations

from edgedistill.compress.logit_cache.build import build_logit_cache
from edgedistill.compress.logit_cache.meta import (
    FORMAT,
    FORMAT_VERSION,
    IDENTITY_KEYS,
    META_FILE,
    LogitCacheError,
    LogitCacheMismatchError,
    cache_size,
    sequences_fingerprint,
    teacher_fingerprint,
)
from edgedistill.compress.logit_cache.read import LogitCache, TopKTeacherCache

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "IDENTITY_KEYS",
    "META_FILE",
    "LogitCache",
    "LogitCacheError",
    "LogitCacheMismatchError",
    "TopKTeacherCache",
    "build_logit_cache",
    "cache_size",
    "sequences_fingerprint",
    "teacher_fingerprint",
]
