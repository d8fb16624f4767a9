"""On-policy distillation (GKD) of a tiny Llama student: sampling keeps every prompt, labels only the
student's own tokens, is reproducible from the seed, and distill trains on such batches with the
teacher run live (also beside a top-k teacher cache used by the off-policy batches)."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from tiny_llama import lm_recipe, pairs_data
from transformers import AutoModelForCausalLM, AutoTokenizer

from edgedistill.compress import on_policy
from edgedistill.compress.config import DistillRecipe
from edgedistill.compress.data import collator_for, load_split

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _batch(lm_teacher, lm_data, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(lm_teacher)
    recipe = lm_recipe(tmp_path, lm_teacher, lm_data, data=pairs_data(tmp_path, lm_data, max_length=40))
    ds = load_split(
        str(lm_data["pairs_train"]),
        recipe.data,
        tokenizer,
        needs_labels=False,
        num_labels=None,
        causal_lm=True,
        max_samples=6,
    )
    batch = collator_for(tokenizer, "causal-lm")([ds[i] for i in range(6)])
    return tokenizer, batch


def test_sampled_batch_keeps_prompts_and_labels_only_the_students_tokens(lm_teacher, lm_data, tmp_path):
    tokenizer, batch = _batch(lm_teacher, lm_data, tmp_path)
    student = AutoModelForCausalLM.from_pretrained(lm_teacher).train()
    kwargs = dict(
        max_new_tokens=12,
        temperature=1.0,
        top_p=1.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        max_length=40,
    )
    prompts = on_policy.prompt_lengths(batch["labels"], batch["attention_mask"])
    assert all(n >= 1 for n in prompts)
    sampled = on_policy.sample_responses(student, batch, seed=7, **kwargs)
    again = on_policy.sample_responses(student, batch, seed=7, **kwargs)
    other = on_policy.sample_responses(student, batch, seed=8, **kwargs)
    assert torch.equal(sampled["input_ids"], again["input_ids"]), "same seed, same samples"
    assert not torch.equal(sampled["input_ids"], other["input_ids"])
    responses_differ = 0
    for i, n in enumerate(prompts):
        row_len = int(sampled["attention_mask"][i].sum())
        ids, labels = sampled["input_ids"][i], sampled["labels"][i]
        assert torch.equal(ids[:n], batch["input_ids"][i, :n]), "the prompt is kept as is"
        assert (labels[:n] == -100).all() and (labels[row_len:] == -100).all()
        assert torch.equal(labels[n:row_len], ids[n:row_len]), "targets are exactly the sampled tokens"
        assert n < row_len <= min(40, n + 12)
        response = ids[n:row_len].tolist()
        assert tokenizer.eos_token_id not in response[:-1], "sampling stops at the first end of sequence"
        original = batch["input_ids"][i, n : int(batch["attention_mask"][i].sum())].tolist()
        responses_differ += response != original
    assert responses_differ > 0
    assert student.training, "sampling runs in eval mode and restores the training mode"


def test_batch_draws_follow_the_fraction_and_are_reproducible():
    ids = torch.arange(12).view(2, 6)
    seeds = [on_policy.batch_seed(42, step, ids) for step in range(400)]
    assert seeds == [on_policy.batch_seed(42, step, ids) for step in range(400)]
    share = sum(on_policy.goes_on_policy(0.25, s) for s in seeds) / len(seeds)
    assert 0.18 < share < 0.32, share
    assert not any(on_policy.goes_on_policy(0.0, s) for s in seeds)
    assert all(on_policy.goes_on_policy(1.0, s) for s in seeds)


def test_on_policy_recipe_errors_name_the_fix(lm_teacher, lm_data, tmp_path):
    with pytest.raises(ValidationError, match="prompt_column"):
        lm_recipe(tmp_path, lm_teacher, lm_data, on_policy={"fraction": 0.5})
    with pytest.raises(ValidationError, match="task causal-lm only"):
        DistillRecipe.model_validate(
            {"teacher": {"path": "t"}, "student": {"layers": 1}, "on_policy": {"fraction": 0.5}}
        )
    with pytest.raises(ValidationError, match="token_kd"):
        lm_recipe(
            tmp_path,
            lm_teacher,
            lm_data,
            data=pairs_data(tmp_path, lm_data, max_length=40),
            losses=[{"name": "next_token_ce"}],
            on_policy={"fraction": 0.5},
        )


@pytest.mark.parametrize("cache", [False, True], ids=["live-teacher", "with-topk-cache"])
def test_distill_trains_on_student_samples(lm_teacher, lm_data, tmp_path, cache):
    from edgedistill.compress.distillation import distill

    training = {"max_steps": 6, "logging_steps": 2, "save_steps": 100}
    if cache:
        training |= {"cache_teacher_outputs": True, "teacher_cache_dir": str(tmp_path / "topk")}
    recipe = lm_recipe(
        tmp_path,
        lm_teacher,
        lm_data,
        data=pairs_data(tmp_path, lm_data, max_length=40),
        losses=[
            {"name": "token_kd", "divergence": "jsd", "beta": 0.5, "top_k": 16},
            {"name": "next_token_ce"},
        ],
        training=training,
        on_policy={"fraction": 1.0 if not cache else 0.5, "max_new_tokens": 8},
    )
    report = distill(recipe, tmp_path / "run", progress=False)
    history = [h for h in report["history"] if "loss" in h]
    shares = [h["on_policy_batches"] for h in history]
    assert len(history) >= 3 and all(0.0 <= s <= 1.0 for s in shares)
    if not cache:
        assert set(shares) == {1.0}
        # every batch was the student's own samples: the supervised term never ran
        assert all("loss/next_token_ce" not in h for h in history)
        assert all(h["loss/token_kd"] > 0 for h in history)
    else:
        assert 0.0 < sum(shares) < len(shares), shares  # both kinds of batch in 6 steps at lambda 0.5
    assert report["config"]["on_policy"]["fraction"] == (1.0 if not cache else 0.5)
    assert (tmp_path / "run" / "student" / "model.safetensors").is_file()
