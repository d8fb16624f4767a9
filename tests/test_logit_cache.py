"""Offline teacher top-k log-probs: cached values equal the live teacher's, builds resume, settings are checked."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_llama import SAMPLE_SENTENCES, save_tiny_decoder

from edgedistill.compress.logit_cache import (
    LogitCache,
    LogitCacheError,
    LogitCacheMismatchError,
    build_logit_cache,
    cache_size,
    sequences_fingerprint,
    teacher_fingerprint,
)

K = 8
T = 2.0
# float16 keeps 11 significant bits: relative rounding error <= 2**-11 (plus a little for the
# float32 rounding of two differently batched forward passes).
FP16_RTOL = 2.0**-11
ATOL = 1e-4


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = save_tiny_decoder(tmp_path_factory.mktemp("lc_teacher"), arch="llama", train_steps=20)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    return model, AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def sequences(teacher) -> list[list[int]]:
    _model, tok = teacher
    return tok(SAMPLE_SENTENCES[:13])["input_ids"]  # 13 sequences of 5..25 tokens: 3 shards of 5


def _build(teacher, sequences, root: Path, **kwargs) -> LogitCache:
    model, tok = teacher
    options = dict(k=K, temperature=T, vocab_size=len(tok), shard_size=5, batch_size=4, progress=False)
    return build_logit_cache(model, sequences, root, **{**options, **kwargs})


def _live(model, ids: list[int], k: int, temperature: float, vocab_size: int):
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    logprobs = torch.log_softmax(logits[:, :vocab_size].float() / temperature, -1)
    return logprobs, logprobs.topk(k, -1)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_cached_topk_equals_the_live_teacher(teacher, sequences, tmp_path, dtype):
    model, tok = teacher
    cache = _build(teacher, sequences, tmp_path / dtype, logprob_dtype=dtype)
    assert len(cache) == len(sequences) and cache.num_positions == sum(map(len, sequences))
    rtol = FP16_RTOL if dtype == "float16" else 0.0
    worst = 0.0
    for seq_id, ids in enumerate(sequences):
        indices, logprobs = cache[seq_id]
        assert indices.dtype == torch.int64 and logprobs.dtype == torch.float32
        assert indices.shape == logprobs.shape == (len(ids), K)
        full, top = _live(model, ids, K, T, len(tok))
        assert torch.equal(indices, top.indices), f"sequence {seq_id}: top-k token ids differ"
        torch.testing.assert_close(logprobs, top.values, rtol=rtol, atol=ATOL)
        worst = max(worst, float((logprobs - top.values).abs().max()))
        # the stored values are the log-probs of the stored tokens
        torch.testing.assert_close(full.gather(-1, indices), logprobs, rtol=rtol, atol=ATOL)
    recorded = cache.meta["max_abs_logprob_error"]
    assert recorded <= worst + ATOL
    if dtype == "float32":
        assert recorded == 0.0
    print(f"{dtype}: max |cached - live| = {worst:.2e}, rounding error recorded at build = {recorded:.2e}")


def test_vocab_size_excludes_padded_rows(teacher, sequences, tmp_path):
    model, tok = teacher
    vocab = len(tok) - 100  # as if the last 100 output rows were padding
    cache = _build(teacher, sequences[:4], tmp_path / "c", vocab_size=vocab)
    for seq_id, ids in enumerate(sequences[:4]):
        indices, logprobs = cache[seq_id]
        assert int(indices.max()) < vocab
        _full, top = _live(model, ids, K, T, vocab)
        assert torch.equal(indices, top.indices)
    with pytest.raises(LogitCacheError, match="larger than the teacher's"):
        _build(teacher, sequences, tmp_path / "d", vocab_size=model.config.vocab_size + 1)


def test_interrupted_build_resumes_from_the_last_complete_shard(teacher, sequences, tmp_path):
    model, _tok = teacher
    reference = _build(teacher, sequences, tmp_path / "reference")

    class Killed(Exception):
        pass

    def stop_after_shard_1(shard: int) -> None:
        if shard == 1:
            raise Killed

    root = tmp_path / "cache"
    with pytest.raises(Killed):
        _build(teacher, sequences, root, on_shard=stop_after_shard_1)
    # a kill while shard 2 was being written leaves its temporary folder behind
    stale = root / "shards" / ".00002.abc.tmp"
    stale.mkdir()
    (stale / "indices.npy").write_bytes(b"half")
    with pytest.raises(LogitCacheError, match="incomplete"):
        LogitCache(root)

    rows_run = []
    hook = model.register_forward_pre_hook(
        lambda _m, _args, kwargs: rows_run.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    try:
        cache = _build(teacher, sequences, root)
    finally:
        hook.remove()
    assert sum(rows_run) == len(sequences) - 10  # only shard 2 (sequences 10..12) was computed
    assert not stale.exists()
    for seq_id in range(len(sequences)):
        for got, want in zip(cache.arrays(seq_id), reference.arrays(seq_id), strict=True):
            np.testing.assert_array_equal(got, want)
    assert _build(teacher, sequences, root).meta == cache.meta  # complete: reused as is


def test_other_settings_are_refused(teacher, sequences, tmp_path):
    model, _tok = teacher
    root = tmp_path / "cache"
    _build(teacher, sequences, root)
    with pytest.raises(LogitCacheMismatchError, match="k: cached 8, requested 4"):
        LogitCache.open(root, k=4)
    with pytest.raises(LogitCacheMismatchError, match="temperature: cached 2.0, requested 1.0"):
        LogitCache.open(root, k=K, temperature=1.0)
    with pytest.raises(LogitCacheMismatchError, match="teacher_fingerprint"):
        LogitCache.open(root, teacher_fingerprint="0123")
    with pytest.raises(LogitCacheMismatchError, match="dataset_fingerprint"):
        LogitCache.open(root, dataset_fingerprint=sequences_fingerprint(sequences[:-1]))
    opened = LogitCache.open(
        root,
        k=K,
        temperature=T,
        teacher_fingerprint=teacher_fingerprint(model),
        dataset_fingerprint=sequences_fingerprint(sequences),
    )
    assert opened.k == K

    with pytest.raises(LogitCacheMismatchError, match="(?s)k: cached 8, requested 4.*overwrite=True"):
        _build(teacher, sequences, root, k=4)
    with pytest.raises(LogitCacheMismatchError, match="dataset_fingerprint"):
        _build(teacher, sequences[:-1], root)
    rebuilt = _build(teacher, sequences, root, k=4, overwrite=True)
    assert rebuilt.k == 4 and rebuilt[0][0].shape[1] == 4


def test_size_is_reported(teacher, sequences, tmp_path):
    sizes = {}
    for dtype in ("float16", "float32"):
        root = tmp_path / dtype
        cache = _build(teacher, sequences, root, logprob_dtype=dtype)
        size = cache_size(root)
        files = [p for p in root.rglob("*") if p.is_file() and p.name != "meta.json"]
        assert size["size_bytes"] == sum(p.stat().st_size for p in files) == cache.meta["size_bytes"]
        assert size["num_positions"] == sum(map(len, sequences))
        assert (
            size["bytes_per_position"]
            == cache.meta["bytes_per_position"]
            == cache.size()["bytes_per_position"]
        )
        sizes[dtype] = size
    payload = {"float16": K * (4 + 2), "float32": K * (4 + 4)}
    for dtype, size in sizes.items():
        # the payload, plus per-file .npy headers and the index: a few bytes a position on this tiny cache
        assert payload[dtype] < size["bytes_per_position"] < payload[dtype] + 40
        print(f"k={K} {dtype}: {size['size_bytes']} bytes, {size['bytes_per_position']} bytes/position")


def test_batches_are_padded_to_one_length(teacher, sequences, tmp_path):
    cache = _build(teacher, sequences, tmp_path / "cache")
    ids = [0, 6, 11]  # three shards
    lengths = [len(sequences[i]) for i in ids]
    batch = cache.get_batch(ids)
    assert batch["indices"].shape == (3, max(lengths), K) and batch["indices"].dtype == torch.int64
    assert batch["logprobs"].dtype == torch.float32 and batch["mask"].sum(1).tolist() == lengths
    for row, seq_id in enumerate(ids):
        indices, logprobs = cache[seq_id]
        assert torch.equal(batch["indices"][row, : lengths[row]], indices)
        assert torch.equal(batch["logprobs"][row, : lengths[row]], logprobs)
        assert not batch["logprobs"][row, lengths[row] :].any()

    left = cache.get_batch(torch.tensor(ids), length=40, padding_side="left")
    assert left["mask"].shape == (3, 40) and bool(left["mask"][:, -1].all())
    assert torch.equal(left["indices"][0, 40 - lengths[0] :], cache[0][0])
    with pytest.raises(ValueError, match="shorter than the longest"):
        cache.get_batch(ids, length=3)
    with pytest.raises(IndexError, match="out of range"):
        cache[len(sequences)]
    # DataLoader workers get the cache pickled: paths travel, not the mapped arrays
    assert len(pickle.dumps(cache)) < 10_000
    assert torch.equal(pickle.loads(pickle.dumps(cache))[11][0], cache[11][0])


def test_teacher_fingerprint_is_the_same_at_any_thread_count():
    """A float sum's last bits follow the reduction order, which follows the thread count: the
    same teacher fingerprinted at 1 and 2 threads looked like two teachers, and `generate`
    refused to resume its own store. The fingerprint sums raw bits as integers instead."""
    import torch

    from edgedistill.compress.teacher_cache import _fingerprint

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2048, 2048), torch.nn.Linear(2048, 8))
    threads = torch.get_num_threads()
    prints = {}
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            prints[n] = (teacher_fingerprint(model), _fingerprint(model, [{"input_ids": [1, 2]}], ["logits"]))
    finally:
        torch.set_num_threads(threads)
    assert prints[1] == prints[2]
    with torch.no_grad():
        model[1].weight[3, 5] = torch.nextafter(model[1].weight[3, 5], torch.tensor(1.0))
    assert teacher_fingerprint(model) != prints[1][0]  # one ulp in one weight is another teacher
