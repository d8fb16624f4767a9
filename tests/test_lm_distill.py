"""Distillation of causal language models: token-level losses, data masking, tiny Llama end to end.

The teacher is a tiny LlamaForCausalLM (2 layers x 64, ByteLevel BPE trained here) from
tests/tiny_llama.py; nothing is downloaded.
"""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from gguf_qat_helpers import assert_q4_0_export_holds_trained_weights
from pydantic import ValidationError
from tiny_llama import lm_recipe, pairs_data, save_tiny_decoder, train_bytelevel_bpe

from edgedistill.compress.config import DataConfig, DistillRecipe, LossSpec, StudentConfig
from edgedistill.compress.losses import (
    LossContext,
    LossInputs,
    StudentOutputs,
    TeacherOutputs,
    build_loss,
    teacher_topk,
)
from edgedistill.compress.losses.token import divergence

DIVERGENCES = ["forward_kl", "reverse_kl", "jsd"]


# --------------------------------------------------------------------------- helpers and fixtures


def _ctx(vocab: int) -> LossContext:
    return LossContext(1, 2, 64, 64, 4, 4, None, vocab_size=vocab)


def _loss(vocab: int, name: str = "token_kd", **options):
    return build_loss(LossSpec(name=name, **options), _ctx(vocab))


def _inputs(student_logits, teacher_logits, labels, temperature: float = 2.0, **teacher_fields) -> LossInputs:
    return LossInputs(
        StudentOutputs(student_logits, None, None, None),
        TeacherOutputs(logits=teacher_logits, **teacher_fields),
        torch.ones(labels.shape, dtype=torch.long),
        labels,
        temperature,
    )


def _token_batch(batch: int = 2, length: int = 8, vocab: int = 24, seed: int = 0):
    """Student and teacher logits, and labels with a 3-token prompt and right padding on row 1."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, vocab, (batch, length), generator=generator)
    labels[:, :3] = -100
    labels[1, 6:] = -100
    student = torch.randn(batch, length, vocab, generator=generator)
    teacher = 3 * torch.randn(batch, length, vocab, generator=generator)
    return student, teacher, labels


# --------------------------------------------------------------------------- losses


@pytest.mark.parametrize("top_k", [None, 5])
@pytest.mark.parametrize("kind", DIVERGENCES)
def test_token_kd_decreases_under_optimisation(kind, top_k):
    _, teacher, labels = _token_batch()
    student = torch.zeros(teacher.shape, requires_grad=True)
    loss = _loss(teacher.shape[-1], divergence=kind, top_k=top_k)
    optimizer = torch.optim.Adam([student], lr=0.1)
    values = []
    for _ in range(25):
        value = loss(_inputs(student, teacher, labels))
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        values.append(value.item())
    assert all(torch.isfinite(torch.tensor(values)))
    assert values[-1] < 0.5 * values[0], values


@pytest.mark.parametrize("kind", DIVERGENCES)
def test_top_k_over_the_whole_vocabulary_equals_full_logits(kind):
    student, teacher, labels = _token_batch()
    vocab = teacher.shape[-1]
    results = []
    for top_k in (None, vocab):
        logits = student.clone().requires_grad_()
        value = _loss(vocab, divergence=kind, top_k=top_k)(_inputs(logits, teacher, labels))
        value.backward()
        results.append((value.detach(), logits.grad))
    (full, full_grad), (topk, topk_grad) = results
    torch.testing.assert_close(topk, full, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(topk_grad, full_grad, rtol=1e-3, atol=1e-5)


def test_cached_top_k_equals_live_top_k_and_checks_temperature():
    student, teacher, labels = _token_batch()
    vocab = teacher.shape[-1]
    loss = _loss(vocab, divergence="forward_kl", top_k=6)
    live = loss(_inputs(student, teacher, labels))
    # What a top-k teacher logit cache hands over: k=8 stored, the loss uses its first 6.
    cached = teacher_topk(teacher, 8, 2.0, vocab_size=vocab)
    assert cached.indices.dtype == torch.int64 and cached.logprobs.dtype == torch.float32
    from_cache = _inputs(
        student,
        None,
        labels,
        topk_indices=cached.indices,
        topk_logprobs=cached.logprobs,
        topk_temperature=2.0,
    )
    torch.testing.assert_close(loss(from_cache), live)
    from_cache.temperature = 1.0
    with pytest.raises(ValueError, match="temperature 2.0"):
        loss(from_cache)


def test_generalized_jsd_limits():
    torch.manual_seed(0)  # float64: the limits are approached at beta = 1e-7
    teacher = torch.log_softmax(2 * torch.randn(6, 30, dtype=torch.float64), -1)
    student = torch.log_softmax(2 * torch.randn(6, 30, dtype=torch.float64), -1)
    forward = divergence(teacher, student, "forward_kl")
    reverse = divergence(teacher, student, "reverse_kl")
    torch.testing.assert_close(divergence(teacher, student, "jsd", 0.0), forward)
    torch.testing.assert_close(divergence(teacher, student, "jsd", 1.0), reverse)
    beta = 1e-7  # the definition vanishes at the ends; scaled, it tends to forward / reverse KL
    torch.testing.assert_close(
        divergence(teacher, student, "jsd", beta) / beta, forward, rtol=1e-2, atol=1e-4
    )
    torch.testing.assert_close(
        divergence(teacher, student, "jsd", 1 - beta) / beta, reverse, rtol=1e-2, atol=1e-4
    )
    half = divergence(teacher, student, "jsd", 0.5)  # the symmetric Jensen-Shannon divergence, <= log 2
    torch.testing.assert_close(half, divergence(student, teacher, "jsd", 0.5))
    assert bool((half >= 0).all() and (half <= torch.log(torch.tensor(2.0)) + 1e-9).all())


def test_prompt_and_padding_positions_do_not_count():
    student, teacher, labels = _token_batch()
    vocab = teacher.shape[-1]
    # logits at position t predict labels[t + 1]: positions whose next label is -100 (and the last) are out
    outside = torch.ones(labels.shape, dtype=torch.bool)
    outside[:, :-1] = labels[:, 1:] == -100
    losses = [
        _loss(vocab),
        _loss(vocab, divergence="reverse_kl", top_k=5),
        _loss(vocab, divergence="jsd", beta=0.3),
        _loss(vocab, name="next_token_ce"),
    ]
    for loss in losses:
        base = loss(_inputs(student, teacher, labels))
        s, t = student.clone(), teacher.clone()
        s[outside] = 10 * torch.randn(int(outside.sum()), vocab)
        t[outside] = 10 * torch.randn(int(outside.sum()), vocab)
        torch.testing.assert_close(loss(_inputs(s, t, labels)), base)
        s = student.clone()
        s[0, 4] += 5 * torch.randn(vocab)  # labels[0, 5] is a target
        assert not torch.allclose(loss(_inputs(s, teacher, labels)), base)


def test_padded_vocabulary_rows_are_ignored():
    student, teacher, labels = _token_batch()
    vocab = teacher.shape[-1]
    b, length, _ = teacher.shape
    # Embedding tables padded past the tokenizer (151936 vs 152064 in real models), with large junk logits.
    padded_student = torch.cat([student, 30 + torch.randn(b, length, 8)], -1)
    padded_teacher = torch.cat([teacher, 30 + torch.randn(b, length, 4)], -1)
    for options in ({}, {"top_k": 6}, {"divergence": "jsd"}, {"divergence": "reverse_kl", "top_k": 3}):
        loss = _loss(vocab, **options)
        torch.testing.assert_close(
            loss(_inputs(padded_student, padded_teacher, labels)), loss(_inputs(student, teacher, labels))
        )
    ce = _loss(vocab, name="next_token_ce")
    torch.testing.assert_close(ce(_inputs(padded_student, None, labels)), ce(_inputs(student, None, labels)))
    assert int(teacher_topk(padded_teacher, 6, 2.0, vocab_size=vocab).indices.max()) < vocab


def test_recipe_surface_for_causal_lm():
    recipe = DistillRecipe.model_validate(
        {"task": "causal-lm", "teacher": {"path": "t"}, "student": {"layers": 1}}
    )
    assert [s.name for s in recipe.losses] == ["token_kd", "next_token_ce"]
    assert recipe.temperature.value == 1.0  # unless set: token-level KD papers distil at T = 1
    with pytest.raises(ValidationError, match="do not apply to task causal-lm"):
        DistillRecipe.model_validate(
            {
                "task": "causal-lm",
                "teacher": {"path": "t"},
                "student": {"layers": 1},
                "losses": [{"name": "soft_kl"}],
            }
        )
    with pytest.raises(ValidationError, match="token_kd only"):
        LossSpec(name="soft_kl", top_k=5)
    with pytest.raises(ValidationError, match="divergence: jsd"):
        LossSpec(name="token_kd", beta=0.3)
    with pytest.raises(ValidationError, match="response_column"):
        DataConfig(prompt_column="prompt")


# --------------------------------------------------------------------------- students and data


def test_decoder_students_from_layers_and_narrower():
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from edgedistill.compress.models import derive_from_layers, derive_narrower

    torch.manual_seed(0)
    common = dict(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    qwen = Qwen2ForCausalLM(Qwen2Config(**common, tie_word_embeddings=True)).eval()
    student, selected = derive_from_layers(qwen, 1)
    assert selected == [1] and student.config.num_hidden_layers == 1
    assert student.lm_head.weight.data_ptr() == student.model.embed_tokens.weight.data_ptr(), "tie kept"
    torch.testing.assert_close(student.model.embed_tokens.weight, qwen.model.embed_tokens.weight)
    torch.testing.assert_close(student.model.norm.weight, qwen.model.norm.weight)
    torch.testing.assert_close(
        student.model.layers[0].self_attn.q_proj.weight, qwen.model.layers[1].self_attn.q_proj.weight
    )

    llama = LlamaForCausalLM(LlamaConfig(**common, tie_word_embeddings=False))
    narrow = derive_narrower(llama, StudentConfig(hidden_size=32, layers=1))
    c = narrow.config
    assert (c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.intermediate_size) == (
        32,
        2,
        1,
        16,
        64,
    )
    assert narrow(input_ids=torch.randint(0, 96, (2, 7))).logits.shape == (2, 7, 96)
    odd = derive_narrower(llama, StudentConfig(hidden_size=48, num_attention_heads=3))
    assert odd.config.num_attention_heads % odd.config.num_key_value_heads == 0
    assert odd(input_ids=torch.randint(0, 96, (1, 5))).logits.shape == (1, 5, 96)


def test_prompt_tokens_are_masked_and_batches_padded(tmp_path, lm_teacher, lm_data):
    from transformers import AutoTokenizer

    from edgedistill.compress.data import collator_for, load_split

    tok = AutoTokenizer.from_pretrained(lm_teacher)
    tok.padding_side = "left"  # training still pads on the right
    cfg = DataConfig(
        prompt_column="prompt", response_column="response", max_length=48, cache_dir=str(tmp_path)
    )
    pairs = load_split(
        str(lm_data["pairs_eval"]), cfg, tok, needs_labels=False, num_labels=None, causal_lm=True
    )
    example, item = pairs.examples[0], pairs[0]
    prompt = tok(example.text)["input_ids"]
    response = tok(example.text_pair, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert item["input_ids"] == prompt + response
    assert item["labels"] == [-100] * len(prompt) + response
    items = [pairs[i] for i in range(4)]
    batch = collator_for(tok, "causal-lm")(items)
    for i, row in enumerate(items):
        n = len(row["input_ids"])
        assert batch["input_ids"][i, :n].tolist() == row["input_ids"]
        assert batch["labels"][i, :n].tolist() == row["labels"]
        assert bool((batch["labels"][i, n:] == -100).all() and (batch["attention_mask"][i, n:] == 0).all())

    plain_cfg = DataConfig(text_column="text", max_length=48, cache_dir=str(tmp_path))
    plain = load_split(
        str(lm_data["eval"]), plain_cfg, tok, needs_labels=False, num_labels=None, causal_lm=True
    )
    assert plain[0]["labels"] == plain[0]["input_ids"] and plain[0]["input_ids"][-1] == tok.eos_token_id
    again = load_split(
        str(lm_data["eval"]), plain_cfg, tok, needs_labels=False, num_labels=None, causal_lm=True
    )
    assert again.from_cache and again[0] == plain[0]


def test_student_with_another_tokenizer_is_rejected(tmp_path, lm_teacher, lm_data):
    from edgedistill.compress.distillation import distill
    from edgedistill.errors import ModelLoadError

    train_bytelevel_bpe(tmp_path / "other_tokenizer", vocab_size=500)
    student = save_tiny_decoder(
        tmp_path / "student", "llama", tokenizer_dir=tmp_path / "other_tokenizer", train_steps=0
    )
    recipe = DistillRecipe.model_validate(
        {
            "task": "causal-lm",
            "teacher": {"path": str(lm_teacher)},
            "student": {"path": str(student)},
            "data": {"train": str(lm_data["train"]), "eval": str(lm_data["eval"]), "text_column": "text"},
        }
    )
    with pytest.raises(ModelLoadError) as info:
        distill(recipe, tmp_path / "run", progress=False)
    message = str(info.value)
    assert str(student) in message and str(lm_teacher) in message and "student.layers" in message


# --------------------------------------------------------------------------- end to end


def test_cli_distill_causal_lm(tmp_path, lm_teacher, lm_data):
    from transformers import AutoModelForCausalLM

    from edgedistill.cli import main

    recipe = {
        "task": "causal-lm",
        "teacher": {"path": str(lm_teacher)},
        "student": {"layers": 1},
        "data": pairs_data(tmp_path, lm_data, max_length=48),
        "losses": [
            {"name": "token_kd", "divergence": "jsd", "beta": 0.5, "top_k": 16},
            {"name": "next_token_ce"},
            {"name": "hidden_mse", "weight": 0.5},
        ],
        "training": {"max_steps": 16, "batch_size": 8, "lr": 3e-3, "logging_steps": 4, "warmup_ratio": 0.0},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    out = tmp_path / "run"
    assert main(["distill", str(path), "--out", str(out), "--quiet"]) == 0

    report = json.loads((out / "distill_report.json").read_text())
    teacher, student = report["teacher"]["metrics"], report["student"]["metrics"]
    before = report["student"]["metrics_before_training"]
    assert teacher["perplexity"] > 1 and teacher["eval_tokens"] == student["eval_tokens"] > 0
    assert 0.0 <= student["top1_agreement_with_teacher"] <= 1.0
    assert student["perplexity"] < before["perplexity"], (before, student)
    components = {k for h in report["history"] for k in h if k.startswith("loss/")}
    assert components == {"loss/token_kd", "loss/next_token_ce", "loss/hidden_mse"}
    model = AutoModelForCausalLM.from_pretrained(out / "student")
    assert model.config.num_hidden_layers == 1 and model.config.use_cache
    assert json.loads((out / "student" / "edgedistill.json").read_text())["task"] == "causal-lm"


def test_int8_qat_on_a_decoder_student(tmp_path, lm_teacher, lm_data):
    from transformers import AutoModelForCausalLM

    from edgedistill.compress.distillation import distill

    recipe = lm_recipe(
        tmp_path, lm_teacher, lm_data, qat={"mode": "int8", "start_fraction": 0.5, "calibration_batches": 1}
    )
    report = distill(recipe, tmp_path / "run", progress=False)
    summary = report["qat"]["summary"]
    assert summary["weight_quantizers"] > 0 and summary["activation_quantizers"] > 0
    assert report["student"]["evaluated_with"].startswith("int8 fake-quant")
    assert report["student"]["metrics"]["perplexity"] > 1
    student = tmp_path / "run" / "student"
    assert (student / "qat" / "nncf_config.json").is_file()
    assert AutoModelForCausalLM.from_pretrained(student).config.use_cache


def test_tied_embedding_student_checkpoints_and_resumes(tmp_path, lm_teacher, lm_data):
    """A Qwen2 teacher with tied embeddings gives a tied student: its mid-run checkpoint holds
    embed_tokens/lm_head once (HF's Trainer refused to write the shared tensor), and an
    interrupted run resumes to the weights of an uninterrupted one."""
    from safetensors.torch import load_file
    from test_distill import InterruptAt
    from transformers import AutoConfig

    from edgedistill.compress.distillation import distill

    teacher = save_tiny_decoder(tmp_path / "qwen2", "qwen2", train_steps=0, tokenizer_dir=lm_teacher)
    recipe = lm_recipe(tmp_path, teacher, lm_data, training={"save_steps": 2})
    distill(recipe, tmp_path / "straight", progress=False)
    with pytest.raises(KeyboardInterrupt):
        distill(recipe, tmp_path / "resumed", progress=False, callbacks=[InterruptAt("float", 2)])
    report = distill(recipe, tmp_path / "resumed", progress=False)
    assert report["training"]["resumed"] is True
    student = tmp_path / "resumed" / "student"
    assert AutoConfig.from_pretrained(student).tie_word_embeddings
    a = load_file(tmp_path / "straight" / "student" / "model.safetensors")
    b = load_file(student / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)


def test_top_k_teacher_logit_cache_trains_like_the_live_teacher(tmp_path, lm_teacher, lm_data):
    """training.cache_teacher_outputs on causal-lm: the teacher's top-k log-probs are cached once
    (memory-mapped shards) and read instead of running the teacher; the run matches a live-teacher
    run up to the float16 rounding of the cached log-probs."""
    from edgedistill.compress.distillation import distill
    from edgedistill.compress.logit_cache import LogitCache

    def run(name: str, cache: bool) -> dict:
        recipe = lm_recipe(
            tmp_path,
            lm_teacher,
            lm_data,
            losses=[{"name": "token_kd", "top_k": 8}, {"name": "next_token_ce"}],
            training={"cache_teacher_outputs": cache},
        )
        return distill(recipe, tmp_path / name, progress=False)

    cached, live = run("cached", True), run("live", False)
    cache = LogitCache.open(tmp_path / "cached" / "teacher_cache", k=8, temperature=1.0)
    assert cache.meta["complete"] and cached["training"]["teacher_cache_bytes"] > 0
    got, want = cached["student"]["metrics"], live["student"]["metrics"]
    assert got["perplexity"] == pytest.approx(want["perplexity"], rel=0.01)
    assert got["top1_agreement_with_teacher"] == pytest.approx(want["top1_agreement_with_teacher"], abs=0.02)

    with pytest.raises(ValidationError, match="top_k"):
        DistillRecipe.model_validate(
            {
                "task": "causal-lm",
                "teacher": {"path": str(lm_teacher)},
                "student": {"layers": 1},
                "data": {"train": "x.jsonl", "text_column": "text"},
                "losses": [{"name": "token_kd"}],
                "training": {"cache_teacher_outputs": True},
            }
        )


@pytest.mark.slow
def test_gguf_q4_0_qat_student_exports_to_the_weights_it_trained_with(
    tmp_path, lm_teacher, lm_data, monkeypatch
):
    """qat.mode gguf_q4_0 end to end: distill, save the latent weights, export GGUF q4_0 with the
    real exporter (its parity runs the file in llama.cpp), and the file's quantized tensors equal
    the fake-quant weights of the saved student."""
    pytest.importorskip("llama_cpp")

    from edgedistill.compress.distillation import distill

    recipe = lm_recipe(tmp_path, lm_teacher, lm_data, qat={"mode": "gguf_q4_0", "start_fraction": 0.5})
    report = distill(recipe, tmp_path / "run", progress=False)
    assert report["qat"]["scheme"] == "gguf" and report["qat"]["precision"] == "q4_0"
    assert report["qat"]["tensor_types"].get("Q4_0", 0) > 0
    assert report["student"]["evaluated_with"].startswith("GGUF q4_0 fake-quant")
    assert_q4_0_export_holds_trained_weights(
        tmp_path / "run" / "student", tmp_path / "export", "model.layers.0.mlp.down_proj.weight"
    )

    # the qat-exact bounds tell the trained weights from others: held against the float student (the
    # reference this export had before), the same file fails them, naming the bound to loosen
    import edgedistill.export.parity.checker as checker
    from edgedistill.export import ExportConfig, ParityError, export

    reference_outputs = checker.reference_outputs
    monkeypatch.setattr(checker, "reference_outputs", lambda s, r, f: reference_outputs(s, "float", f))
    with pytest.raises(ParityError) as err:
        export(
            tmp_path / "run" / "student",
            tmp_path / "float-ref",
            ExportConfig(formats=["gguf"], precisions=["q4_0"]),
        )
    assert "tolerances.qat-exact" in str(err.value) and "max_rel_diff" in str(err.value), str(err.value)


def test_cli_finetune_causal_lm(tmp_path, lm_teacher, lm_data):
    from transformers import AutoModelForCausalLM

    from edgedistill.cli import main

    out = tmp_path / "ft"
    args = ["finetune", "--task", "causal-lm", "--model", str(lm_teacher), "--layers", "1"]
    args += ["--train", str(lm_data["train"]), "--eval", str(lm_data["eval"]), "--text-column", "text"]
    args += ["--max-steps", "4", "--batch-size", "8", "--max-length", "48", "--quiet", "--out", str(out)]
    args += ["--set", f"data.cache_dir={tmp_path / 'cache'}"]
    assert main(args) == 0
    report = json.loads((out / "finetune_report.json").read_text())
    assert report["model"]["layers"] == 1 and report["model"]["metrics"]["perplexity"] > 1
    assert AutoModelForCausalLM.from_pretrained(out / "model").config.num_hidden_layers == 1


def test_eos_ends_only_responses_the_teacher_stopped(tmp_path):
    """A response cut at max_new_tokens (finish_reason "length") gets no EOS target: the teacher did
    not stop there. A stopped one does; rows without a finish reason (a plain TSV) keep append_eos."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tiny_llama import train_bytelevel_bpe

    from edgedistill.compress.data import load_split

    tok = train_bytelevel_bpe(tmp_path / "tok", vocab_size=300)
    eos = tok.eos_token_id
    rows = [
        {"prompt": "the film was", "response": " good and kind", "finish_reason": "stop"},
        {"prompt": "the film was", "response": " long and then it", "finish_reason": "length"},
        {"prompt": "a story of", "response": " love", "finish_reason": "eos_token"},
        {"prompt": "a story of", "response": " loss", "finish_reason": None},
    ]
    store = tmp_path / "samples.jsonl"
    store.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    pq.write_table(pa.table({k: [r[k] for r in rows] for k in rows[0]}), tmp_path / "samples.parquet")
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("prompt\tresponse\n" + "".join(f"{r['prompt']}\t{r['response']}\n" for r in rows))

    def last_targets(path, **options):
        cfg = DataConfig(
            prompt_column="prompt",
            response_column="response",
            max_length=48,
            cache_dir=str(tmp_path),
            **options,
        )
        data = load_split(str(path), cfg, tok, needs_labels=False, num_labels=None, causal_lm=True)
        return [data[i]["labels"][-1] == eos for i in range(len(data))]

    assert last_targets(store) == [True, False, True, True]
    assert last_targets(tmp_path / "samples.parquet") == [True, False, True, True]
    assert last_targets(tsv) == [True, True, True, True]  # no finish reason: append_eos as before
    assert last_targets(store, finish_reason_column=None) == [True, True, True, True]
    assert last_targets(store, append_eos=False) == [False, False, False, False]
    again = load_split(
        str(store),
        DataConfig(
            prompt_column="prompt", response_column="response", max_length=48, cache_dir=str(tmp_path)
        ),
        tok,
        needs_labels=False,
        num_labels=None,
        causal_lm=True,
    )
    assert again.from_cache and [ex.stopped for ex in again.examples] == [True, False, True, None]
