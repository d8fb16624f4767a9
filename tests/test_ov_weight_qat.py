"""OpenVINO weight-only QAT (qat.mode ov_int4_wo / ov_int8_wo): NNCF FQ_LORA, trained, exported, run.

- the recipe surface: the modes are for causal-lm only, with a message that says so;
- a tiny Llama student distilled through int4 weight-only fake-quant with LoRA adapters: the run
  completes, the QAT loss is finite and falls, the report names the scheme;
- exported by the real OpenVINO exporter (its own parity check runs against the fake-quant
  student), the IR holds u4 weight constants and its logits equal the torch fake-quant student's
  far more closely than a post-training int4 compression of the same float weights does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from tiny_llama import SAMPLE_SENTENCES, lm_recipe, save_tiny_decoder

from edgedistill import numerics
from edgedistill.compress.config import DistillRecipe

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EVAL_TEXTS = SAMPLE_SENTENCES[:8]


def _recipe(tmp_path: Path, lm_teacher: Path, lm_data: dict[str, Path], mode: str) -> DistillRecipe:
    return lm_recipe(
        tmp_path,
        lm_teacher,
        lm_data,
        student={"layers": 2},
        training={"max_steps": 10, "lr": 3e-3, "logging_steps": 1},
        qat={"mode": mode, "start_fraction": 0.2, "lora_rank": 8},
    )


def test_weight_only_modes_are_for_causal_lm():
    base = {"teacher": {"path": "t"}, "student": {"layers": 1}, "qat": {"mode": "ov_int4_wo"}}
    with pytest.raises(ValidationError, match="ov_int4_wo .* task causal-lm"):
        DistillRecipe.model_validate({**base, "task": "sequence-classification"})
    recipe = DistillRecipe.model_validate({**base, "task": "causal-lm"})
    assert recipe.qat.group_size == 128 and recipe.qat.lora_rank == 256
    with pytest.raises(ValidationError, match="group_size"):
        DistillRecipe.model_validate(
            {**base, "task": "causal-lm", "qat": {"mode": "ov_int8_wo", "group_size": 0}}
        )


@pytest.fixture(scope="module")
def int4_run(tmp_path_factory, lm_teacher, lm_data):
    from edgedistill.compress.distillation import distill

    tmp = tmp_path_factory.mktemp("ov_int4_wo")
    report = distill(_recipe(tmp, lm_teacher, lm_data, "ov_int4_wo"), tmp / "run", progress=False)
    return tmp, report


def _kl_to_teacher(teacher_dir: Path, student_dir: Path, qat_dir: Path) -> float:
    """Mean next-token KL(teacher || fake-quant student) on the eval texts, quantizers from ``qat_dir``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from edgedistill.compress import qat as qat_lib

    tok = AutoTokenizer.from_pretrained(teacher_dir)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32).eval()
    plain = AutoModelForCausalLM.from_pretrained(
        student_dir, dtype=torch.float32, attn_implementation="eager"
    )
    student = qat_lib.load_qat_model(plain, qat_dir).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for text in EVAL_TEXTS:
            ids = torch.tensor([tok(text)["input_ids"]])
            t = torch.log_softmax(teacher(input_ids=ids).logits[0], -1)
            s = torch.log_softmax(student(input_ids=ids, use_cache=False).logits[0], -1)
            total += float((t.exp() * (t - s)).sum())
            count += ids.shape[1]
    return total / count


def test_int4_weight_only_distill_trains_lora_and_ranges(int4_run, lm_teacher):
    from safetensors.torch import load_file

    tmp, report = int4_run
    qat = report["qat"]
    assert qat["scheme"] == "nncf_weight_only" and qat["precision"] == "int4", qat
    summary = qat["summary"]
    # 2 layers x 7 projections in int4 (groups of 64: rows of 64 and 128 -> ADJUST), embedding + head int8
    assert summary["bits"] == {"int4": 14, "int8": 2}, summary["bits"]
    assert summary["group_sizes"] == {"64": 12, "128": 2, "-1": 2}, summary["group_sizes"]
    assert summary["lora_rank"] == 8 and summary["with_lora"] == 14
    assert report["student"]["evaluated_with"].startswith("int4 weight-only fake-quant")
    qat_losses = [
        h["loss"] for h in report["history"] if "loss" in h and h["global_step"] > qat["start_step"]
    ]
    assert len(qat_losses) == 8 and all(np.isfinite(qat_losses)), qat_losses
    student = tmp / "run" / "student"
    assert (student / "qat" / "nncf_config.json").is_file()
    assert not any("nncf" in k for k in load_file(student / "model.safetensors"))  # plain transformers keys

    # Training losses of single batches are too noisy over 8 steps; what QAT must do is bring the
    # fake-quant student closer to the teacher than the round-to-nearest start it was given.
    start = _kl_to_teacher(lm_teacher, student, tmp / "run" / "checkpoints" / "qat" / "nncf_init")
    trained = _kl_to_teacher(lm_teacher, student, student / "qat")
    print(
        f"\nKL(teacher || int4 fake-quant student) on {len(EVAL_TEXTS)} texts: RTN start {start:.4g}, after QAT {trained:.4g}"
    )
    assert np.isfinite(trained) and trained < start, (start, trained)


def _ov_logits(xml: Path, sequences: list[list[int]]) -> list[np.ndarray]:
    import openvino as ov

    # the declared numerics: f32, and float activations (OpenVINO would quantize them on VNNI/AMX CPUs)
    compiled = ov.Core().compile_model(str(xml), "CPU", numerics.OPENVINO_FILE_PROPERTIES)
    return [
        compiled({"input_ids": np.array([ids]), "attention_mask": np.ones((1, len(ids)), np.int64)})[0][0]
        for ids in sequences
    ]


def _max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


def test_int4_student_exports_to_an_ir_that_equals_its_fake_quant_model(int4_run):
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedCompressionParameters, GroupSizeFallbackMode

    from edgedistill.export import ExportConfig, export
    from edgedistill.export.core import inspect_student
    from edgedistill.export.openvino import float_model

    tmp, _ = int4_run
    student_dir = tmp / "run" / "student"
    exported = export(
        student_dir, tmp / "export", ExportConfig(formats=["openvino"], precisions=["int4"], parity_samples=8)
    )
    (artifact,) = exported["artifacts"]
    manifest = json.loads((Path(artifact["path"]) / "manifest.json").read_text())
    quantization = manifest["quantization"]
    assert manifest["precision"] == "int4" and quantization["scheme"] == "weight-only", quantization
    assert quantization["method"] == "qat" and manifest["parity"]["reference"] == "qat"
    # held to its fake-quant student by the qat-exact bounds, not int4's generic top-1 0.8 / cosine 0.9
    assert manifest["parity"]["tolerance_name"] == "qat-exact", manifest["parity"]
    assert manifest["parity"]["tolerance"] == ExportConfig().tolerance("qat-exact").model_dump()
    (logits,) = manifest["parity"]["outputs"]
    print(
        f"\nOpenVINO int4 QAT export parity vs fake-quant: max {logits['max_abs_diff']:.3g}, rel {logits['max_rel_diff']:.3g}"
    )
    assert quantization["activations"] == "float32"

    xml = Path(artifact["path"]) / "openvino_model.xml"
    ir = ov.Core().read_model(xml)
    constant_types: dict[str, int] = {}
    for op in ir.get_ops():
        if op.get_type_name() == "Constant":
            kind = op.get_output_element_type(0).get_type_name()
            constant_types[kind] = constant_types.get(kind, 0) + 1
    # 14 int4 weights (+ their u4 zero points) and the int8 embedding table / head (+ u8 zero points)
    assert constant_types.get("u4", 0) >= 14 and constant_types.get("u8", 0) >= 2, constant_types

    student = inspect_student(student_dir)
    tok = student.load_tokenizer()
    sequences = [tok(t)["input_ids"] for t in EVAL_TEXTS]
    with torch.no_grad():
        fake_quant = student.load_qat_model()
        fq_logits = [
            fake_quant(input_ids=torch.tensor([ids]), use_cache=False).logits[0].numpy() for ids in sequences
        ]
    qat_diff = _max_diff(fq_logits, _ov_logits(xml, sequences))

    # the alternative: post-training int4 (same mode and groups) of the same latent float weights
    ptq = nncf.compress_weights(
        float_model(student),
        mode=nncf.CompressWeightsMode.INT4_ASYM,
        group_size=128,
        ratio=1.0,
        advanced_parameters=AdvancedCompressionParameters(
            group_size_fallback_mode=GroupSizeFallbackMode.ADJUST
        ),
    )
    ov.save_model(ptq, tmp / "ptq.xml", compress_to_fp16=False)
    ptq_diff = _max_diff(fq_logits, _ov_logits(tmp / "ptq.xml", sequences))
    with torch.no_grad():
        latent = student.load_model()
        float_logits = [
            latent(input_ids=torch.tensor([ids]), use_cache=False).logits[0].numpy() for ids in sequences
        ]
    print(
        f"\nOpenVINO int4 IR vs torch fake-quant logits: QAT export max {qat_diff:.3g}, PTQ max {ptq_diff:.3g} "
        f"(PTQ IR vs torch float student: max {_max_diff(float_logits, _ov_logits(tmp / 'ptq.xml', sequences)):.3g}, "
        f"fake-quant vs float: max {_max_diff(float_logits, fq_logits):.3g})"
    )
    assert qat_diff < 1e-3, (qat_diff, ptq_diff)
    assert ptq_diff > 50 * qat_diff, (qat_diff, ptq_diff)


def test_int8_weight_only_fake_quant_saves_reloads_and_converts_exactly(tmp_path):
    """ov_int8_wo's building blocks on a tiny Qwen2 with tied embeddings: every weight (the shared
    embedding/head table too) int8 with LoRA, trained a few steps, saved and rebuilt bit for bit,
    converted to an IR of u8 weights in which the head uses the same trained codes as the embedding."""
    import openvino as ov
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from edgedistill.compress import qat as qat_lib
    from edgedistill.export.core import inspect_student
    from edgedistill.export.openvino import convert

    qwen = save_tiny_decoder(tmp_path / "qwen2", "qwen2", train_steps=0)

    def load():
        model = AutoModelForCausalLM.from_pretrained(qwen, dtype=torch.float32, attn_implementation="eager")
        model.config.use_cache = False
        return model

    tok = AutoTokenizer.from_pretrained(qwen)
    texts = EVAL_TEXTS[:4]
    batch = tok(texts, padding=True, return_tensors="pt", return_token_type_ids=False)
    qmodel = qat_lib.insert_weight_only_fake_quant(load(), dict(batch), bits="int8", lora_rank=4)
    summary = qat_lib.weight_only_summary(qmodel)
    assert summary["bits"] == {"int8": 15} and summary["with_lora"] == 15, summary  # tied table: one
    # the model's own weights frozen; adapters and ranges (every float NNCF parameter) trained
    assert all(
        p.requires_grad == ("__nncf_hooks" in n)
        for n, p in qmodel.named_parameters()
        if p.is_floating_point()
    )
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW([p for p in qmodel.parameters() if p.requires_grad], lr=1e-2)
    qmodel.train()
    for _ in range(3):
        qmodel(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    qmodel.eval()
    qat_lib.save_qat_state(qmodel, tmp_path / "qat")
    rebuilt = qat_lib.load_qat_model(load(), tmp_path / "qat").eval()
    sequences = [tok(t)["input_ids"] for t in texts]
    with torch.no_grad():
        want = [qmodel(input_ids=torch.tensor([ids])).logits[0].numpy() for ids in sequences]
        got = [rebuilt(input_ids=torch.tensor([ids])).logits[0].numpy() for ids in sequences]
    assert _max_diff(want, got) == 0.0  # float32 adapters survive the bfloat16 modules NNCF rebuilds

    compressed, converted = qat_lib.compressed_weight_model(rebuilt, load())
    assert converted == {"weights": {"int8": 15}, "scale_dtype": "float32"}
    merged = qat_lib.merged_float_state_dict(rebuilt)  # the latent table, under both of its names
    assert torch.equal(merged["lm_head.weight"], merged["model.embed_tokens.weight"])
    ov.save_model(
        convert(compressed, inspect_student(qwen, "text-generation")),
        tmp_path / "m.xml",
        compress_to_fp16=False,
    )
    kinds = [
        op.get_output_element_type(0).get_type_name()
        for op in ov.Core().read_model(tmp_path / "m.xml").get_ops()
        if op.get_type_name() == "Constant"
    ]
    assert kinds.count("u8") >= 30, kinds  # 15 weights + 15 zero points
    diff = _max_diff(want, _ov_logits(tmp_path / "m.xml", sequences))
    print(f"\nOpenVINO int8 weight-only IR vs torch fake-quant logits: max {diff:.3g}")
    assert diff < 1e-3
