"""End-to-end distillation on tiny BERT models: real Trainer, real checkpoints, real NNCF fake-quant."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForSequenceClassification, TrainerCallback

from edgedistill.compress.config import DistillRecipe
from edgedistill.compress.distillation import distill


def recipe(teacher, data, **overrides) -> DistillRecipe:
    raw = {
        "task": "sequence-classification",
        "teacher": {"path": str(teacher)},
        "student": {"layers": 1},
        "data": {"train": str(data["train"]), "eval": str(data["eval"]), "max_length": 32},
        "training": {
            "max_steps": 12,
            "batch_size": 16,
            "lr": 1e-3,
            "logging_steps": 2,
            "save_steps": 4,
            "warmup_ratio": 0.0,
        },
        "temperature": {"kind": "linear", "start": 4.0, "end": 1.0},
        "alpha": {"kind": "cosine", "start": 0.9, "end": 0.5},
    }
    for key, value in overrides.items():
        node = raw
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return DistillRecipe.model_validate(raw)


def test_distill_lowers_kl_and_writes_student(tmp_path, tiny_bert_classifier, tiny_data):
    out = tmp_path / "run"
    # a fresh, narrower student starts far from the teacher, so the drop in KL is distillation's doing
    r = recipe(
        tiny_bert_classifier,
        tiny_data,
        student={"layers": 1, "hidden_size": 32},
        **{"training.lr": 3e-3, "training.max_steps": 48, "training.logging_steps": 4},
    )
    report = distill(r, out, progress=False)
    before = report["student"]["metrics_before_training"]["kl_to_teacher"]
    after = report["student"]["metrics"]["kl_to_teacher"]
    assert after < before * 0.7, (before, after)
    assert {"accuracy", "kl_to_teacher"} <= set(report["student"]["metrics"])
    assert "accuracy" in report["teacher"]["metrics"]
    on_disk = json.loads((out / "distill_report.json").read_text())
    assert on_disk["training"]["steps"] == 48 and on_disk["training"]["samples_per_s"] > 0
    assert on_disk["config"]["student"]["hidden_size"] == 32
    temps = [h["temperature"] for h in on_disk["history"]]
    assert temps[0] > temps[-1], "the temperature schedule must be logged and decreasing"
    student = AutoModelForSequenceClassification.from_pretrained(out / "student")
    assert student.config.num_hidden_layers == 1 and student.config.hidden_size == 32
    assert (out / "student" / "model.safetensors").is_file() and (
        out / "student" / "tokenizer.json"
    ).is_file()
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_all_classification_losses_together(tmp_path, tiny_bert_classifier, tiny_data):
    losses = [{"name": n} for n in ("soft_kl", "hard_ce", "hidden_mse", "attention_kl")]
    report = distill(
        recipe(tiny_bert_classifier, tiny_data, losses=losses, **{"training.max_steps": 4}),
        tmp_path / "run",
        progress=False,
    )
    components = {k for h in report["history"] for k in h if k.startswith("loss/")}
    assert components == {"loss/soft_kl", "loss/hard_ce", "loss/hidden_mse", "loss/attention_kl"}


def test_embedding_distillation_narrow_student(tmp_path, tiny_bert_encoder, tiny_data):
    losses = [{"name": n} for n in ("embedding_cosine", "embedding_mse", "hidden_mse", "attention_kl")]
    r = recipe(
        tiny_bert_encoder,
        tiny_data,
        task="feature-extraction",
        losses=losses,
        student={"layers": 1, "hidden_size": 32},
        **{"training.max_steps": 20},
    )
    report = distill(r, tmp_path / "run", progress=False)
    metrics = report["student"]["metrics"]
    assert 0.0 <= metrics["recall_at_10"] <= 1.0
    assert metrics["cosine_to_teacher"] > report["student"]["metrics_before_training"]["cosine_to_teacher"]
    model = AutoModel.from_pretrained(tmp_path / "run" / "student")
    assert model.config.hidden_size == 32


def test_teacher_output_cache_is_memory_mapped_and_used(tmp_path, tiny_bert_classifier, tiny_data):
    report = distill(
        recipe(tiny_bert_classifier, tiny_data, **{"training.cache_teacher_outputs": True}),
        tmp_path / "run",
        progress=False,
    )
    cached = list((tmp_path / "run" / "teacher_cache").glob("*/logits.npy"))
    assert len(cached) == 1 and report["training"]["teacher_cache_bytes"] == 256 * 2 * 4
    # The student starts from teacher layers (KL ~1e-4): trained on the cached logits it must stay
    # on the teacher. A before/after comparison at that level is noise (it flipped with test order).
    assert report["student"]["metrics"]["kl_to_teacher"] < 1e-2


def test_cache_refuses_per_token_losses(tmp_path, tiny_bert_classifier, tiny_data):
    from edgedistill.errors import EdgeDistillError

    r = recipe(
        tiny_bert_classifier,
        tiny_data,
        losses=[{"name": "hidden_mse"}],
        **{"training.cache_teacher_outputs": True},
    )
    with pytest.raises(EdgeDistillError, match="caches only"):
        distill(r, tmp_path / "run", progress=False)


class InterruptAt(TrainerCallback):
    """Simulates Ctrl-C right after the checkpoint of a given step of a given phase is written."""

    def __init__(self, phase: str, step: int):
        self.phase, self.step = phase, step

    def on_save(self, args, state, control, **kwargs):
        if args.output_dir.endswith(self.phase) and state.global_step >= self.step:
            raise KeyboardInterrupt


def _student_weights(out):
    return load_file(out / "student" / "model.safetensors")


@pytest.mark.parametrize("qat", ["none", "int8"])
def test_interrupted_run_resumes_to_identical_weights(tmp_path, tiny_bert_classifier, tiny_data, qat):
    r = recipe(
        tiny_bert_classifier,
        tiny_data,
        **{"qat.mode": qat, "qat.start_fraction": 0.5, "qat.calibration_batches": 2},
    )
    straight = tmp_path / "straight"
    distill(r, straight, progress=False)
    resumed = tmp_path / "resumed"
    # int8: interrupt inside the QAT phase (step 4 of its 6); none: in the middle of the single phase.
    with pytest.raises(KeyboardInterrupt):
        distill(r, resumed, progress=False, callbacks=[InterruptAt("qat" if qat == "int8" else "float", 4)])
    assert not (resumed / "student").exists(), "an interrupted run must not leave a student behind"
    report = distill(r, resumed, progress=False)
    assert report["training"]["resumed"] is True
    # the CPU ledger counts both sessions (one setup, each session's training to its last save)
    assert report["training"]["cpu_sessions"] == 2 and report["training"]["cpu_s"] > 0
    assert json.loads((straight / "distill_report.json").read_text())["training"]["cpu_sessions"] == 1
    a, b = _student_weights(straight), _student_weights(resumed)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)


def test_qat_inserts_fake_quant_and_saves_state(tmp_path, tiny_bert_classifier, tiny_data):
    r = recipe(
        tiny_bert_classifier,
        tiny_data,
        **{"qat.mode": "int8", "qat.start_fraction": 0.25, "qat.calibration_batches": 2},
    )
    report = distill(r, tmp_path / "run", progress=False)
    qat = report["qat"]
    assert qat["start_step"] == 3
    assert qat["summary"]["weight_quantizers"] > 0 and qat["summary"]["activation_quantizers"] > 0
    assert report["student"]["evaluated_with"].startswith("int8 fake-quant")
    student = tmp_path / "run" / "student"
    assert (student / "qat" / "nncf_config.json").is_file() and (
        student / "qat" / "qat_state.safetensors"
    ).is_file()
    meta = json.loads((student / "edgedistill.json").read_text())
    assert meta["qat"]["mode"] == "int8" and meta["selected_teacher_layers"] == [1]
    # the float weights load as a plain transformers model
    AutoModelForSequenceClassification.from_pretrained(student)


def test_cli_distill_and_finetune(tmp_path, tiny_bert_classifier, tiny_data):
    base = [sys.executable, "-m", "edgedistill"]
    common = [
        "--task",
        "sequence-classification",
        "--train",
        str(tiny_data["train"]),
        "--eval",
        str(tiny_data["eval"]),
        "--max-steps",
        "3",
        "--batch-size",
        "8",
        "--max-length",
        "32",
        "--quiet",
    ]
    proc = subprocess.run(
        base
        + ["finetune", "--model", str(tiny_bert_classifier), "--layers", "1", "--out", str(tmp_path / "ft")]
        + common,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    ft = json.loads((tmp_path / "ft" / "finetune_report.json").read_text())
    assert ft["model"]["layers"] == 1 and "accuracy" in ft["model"]["metrics"]
    proc = subprocess.run(
        base
        + [
            "distill",
            "--teacher",
            str(tiny_bert_classifier),
            "--student-layers",
            "0,",
            "--temperature",
            "linear:4:2",
            "--out",
            str(tmp_path / "kd"),
        ]
        + common,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    kd = json.loads((tmp_path / "kd" / "distill_report.json").read_text())
    assert kd["student"]["selected_teacher_layers"] == [0]
    # a different recipe in the same folder is refused with a way out
    proc = subprocess.run(
        base
        + [
            "distill",
            "--teacher",
            str(tiny_bert_classifier),
            "--student-layers",
            "1",
            "--out",
            str(tmp_path / "kd"),
        ]
        + common,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "--overwrite" in proc.stderr


def test_an_interrupted_teacher_cache_fill_resumes_from_its_last_finished_shard(
    tmp_path, tiny_bert_classifier, monkeypatch
):
    """A big teacher's cache takes longer than a session: a kill keeps the finished shards, the next
    fill runs the teacher on the rest only, and the joined cache equals an uninterrupted one."""
    from edgedistill.compress import teacher_cache
    from edgedistill.compress.teacher_cache import TeacherOutputCache

    monkeypatch.setattr(teacher_cache, "SHARD_BATCHES", 2)
    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_bert_classifier)
    gen = torch.Generator().manual_seed(0)
    dataset = []
    for i in range(38):  # 10 batches of 4 (the last one short), 5 shards of 2 batches
        n = 5 + i % 7
        dataset.append(
            {"input_ids": torch.randint(5, 100, (n,), generator=gen).tolist(), "attention_mask": [1] * n}
        )

    def collate(rows):
        width = max(len(r["input_ids"]) for r in rows)
        pad = [[0] * (width - len(r["input_ids"])) for r in rows]
        return {
            "input_ids": torch.tensor([r["input_ids"] + p for r, p in zip(rows, pad, strict=True)]),
            "attention_mask": torch.tensor([r["attention_mask"] + p for r, p in zip(rows, pad, strict=True)]),
        }

    calls = {"n": 0, "stop_at": 5}
    forward = teacher.forward

    def counted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == calls["stop_at"]:
            raise KeyboardInterrupt  # the kill, in the third shard
        return forward(*args, **kwargs)

    monkeypatch.setattr(teacher, "forward", counted)
    with pytest.raises(KeyboardInterrupt):
        TeacherOutputCache.build(teacher, dataset, collate, {"logits"}, tmp_path / "cache", batch_size=4)
    [folder] = list((tmp_path / "cache").iterdir())
    assert not (folder / "meta.json").exists() and len(list((folder / "parts").glob("logits.*.npy"))) == 2
    calls.update(n=0, stop_at=-1)
    resumed = TeacherOutputCache.build(
        teacher, dataset, collate, {"logits"}, tmp_path / "cache", batch_size=4
    )
    assert calls["n"] == 6  # 10 batches, 4 of them in the two finished shards
    assert not (folder / "parts").exists()
    fresh = TeacherOutputCache.build(teacher, dataset, collate, {"logits"}, tmp_path / "fresh", batch_size=4)
    assert resumed.arrays["logits"].shape == (38, 2)
    assert (resumed.arrays["logits"] == fresh.arrays["logits"]).all()
