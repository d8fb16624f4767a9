"""NNCF int8 quantization-aware training helpers (compress/qat/) on the tiny BERT fixtures.

The first test that touches fake-quant makes NNCF JIT-compile its C++ kernels once per machine
and torch version (~30 s on an idle 2-core machine, 94 s measured while another job trained);
later runs load them from the torch-extensions cache in well under a second.
"""

from __future__ import annotations

import copy
import gc
import json
import logging
import os
import subprocess
import sys
import time

import pytest
import torch

from conftest import make_sentences
from edgedistill.compress import qat
from edgedistill.errors import ModelLoadError

pytest.importorskip("nncf")


# ----------------------------------------------------------------------------------------------
# fixtures
# ----------------------------------------------------------------------------------------------


def _load_classifier(folder):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(folder, attn_implementation="eager").eval()


def _batches(folder, n_batches: int, seed: int, batch_size: int = 8) -> list[dict[str, torch.Tensor]]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    rows = make_sentences(n_batches * batch_size, seed=seed)
    out = []
    for i in range(n_batches):
        texts = [t for t, _ in rows[i * batch_size : (i + 1) * batch_size]]
        enc = tok(texts, padding=True, return_tensors="pt")
        out.append({k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")})
    return out


@pytest.fixture(scope="module")
def quantized(tiny_bert_classifier):
    """(float model, fake-quant model, calibration batches, held-out batch) -- treat as read-only."""
    started = time.perf_counter()
    qat.ensure_nncf_extensions()  # may compile NNCF's C++ kernels once (see module docstring)
    print(f"\nensure_nncf_extensions: {time.perf_counter() - started:.1f} s")
    float_model = _load_classifier(tiny_bert_classifier)
    calibration = _batches(tiny_bert_classifier, 4, seed=11)
    qmodel = qat.insert_fake_quant(float_model, calibration)
    held_out = _batches(tiny_bert_classifier, 1, seed=12)[0]
    return float_model, qmodel, calibration, held_out


def _train_steps(qmodel: torch.nn.Module, batches, steps: int = 3) -> None:
    qmodel.train()
    optimiser = torch.optim.AdamW([p for p in qmodel.parameters() if p.requires_grad], lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for step in range(steps):
        batch = batches[step % len(batches)]
        labels = torch.randint(0, 2, (batch["input_ids"].shape[0],), generator=generator)
        logits = qmodel(**batch).logits
        torch.nn.functional.cross_entropy(logits, labels).backward()
        optimiser.step()
        optimiser.zero_grad()
    qmodel.eval()


def _logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


# ----------------------------------------------------------------------------------------------
# import hygiene
# ----------------------------------------------------------------------------------------------


def test_importing_qat_does_not_import_nncf():
    code = "import sys, edgedistill.compress.qat\nprint('nncf' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_missing_nncf_says_how_to_install_it(monkeypatch):
    from edgedistill.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "nncf", None)  # makes `import nncf` fail like a missing package
    with pytest.raises(MissingDependencyError, match="pip install"):
        qat.insert_fake_quant(torch.nn.Linear(2, 2), [{"x": torch.ones(1, 2)}])
    with pytest.raises(MissingDependencyError, match="nncf"):
        qat.ensure_nncf_extensions()


# ----------------------------------------------------------------------------------------------
# insert_fake_quant
# ----------------------------------------------------------------------------------------------


def test_insert_fake_quant_quantizes_every_linear_and_embedding_weight_and_activations(quantized):
    float_model, qmodel, _, held_out = quantized
    assert qmodel is not float_model and type(qmodel) is type(float_model)  # NNCF deep-copies
    assert not qat._hooks(float_model), "the float model must stay untouched"

    summary = qat.qat_summary(qmodel)
    quantized_params = {p for q in summary["quantizers"] if q["kind"] == "weight" for p in q["parameters"]}
    expected = {
        f"{name}.weight"
        for name, module in float_model.named_modules()
        if isinstance(module, (torch.nn.Linear, torch.nn.Embedding))
    }
    assert quantized_params == expected
    for q in summary["quantizers"]:
        assert q["num_bits"] == 8
        if q["kind"] == "weight":
            assert (q["mode"], q["per_channel"]) == ("symmetric", True)
    activation_modes = {
        (q["mode"], q["per_channel"]) for q in summary["quantizers"] if q["kind"] == "activation"
    }
    # mixed preset: asymmetric per-tensor, except NNCF's symmetric ones on the attention q/k matmul inputs
    assert ("asymmetric", False) in activation_modes and all(not per_ch for _, per_ch in activation_modes)
    assert summary["activation_quantizers"] > 0

    # SmoothQuant and bias correction off: no extra ops, float weights identical to the input model
    assert {type(m).__name__ for _, m in qat._hooks(qmodel)} <= {"SymmetricQuantizer", "AsymmetricQuantizer"}
    original = float_model.state_dict()
    float_weights = qat.float_state_dict(qmodel)
    assert list(float_weights) == list(original)
    assert all(torch.equal(float_weights[k], original[k]) for k in original)

    # fake-quant changes the outputs a little, not a lot
    reference, fake_quant = _logits(float_model, held_out), _logits(qmodel, held_out)
    diff = (reference - fake_quant).abs().max().item()
    assert 0 < diff < 0.1 * reference.abs().max().item()
    assert torch.equal(reference.argmax(-1), fake_quant.argmax(-1))


def test_insert_fake_quant_rejects_bad_input(quantized):
    float_model, qmodel, calibration, _ = quantized
    with pytest.raises(qat.QATError, match="at least one calibration batch"):
        qat.insert_fake_quant(float_model, [])
    with pytest.raises(qat.QATError, match="preset"):
        qat.insert_fake_quant(float_model, calibration, preset="int4")
    with pytest.raises(qat.QATError, match="already has NNCF fake-quant"):
        qat.insert_fake_quant(qmodel, calibration)


def test_training_steps_change_float_weights_and_quantizer_ranges(quantized):
    _, qmodel, calibration, _ = quantized
    qmodel = copy.deepcopy(qmodel)
    trainable = {n for n, p in qmodel.named_parameters() if p.requires_grad}
    assert any(n.endswith("_scale_param_storage") for n in trainable)
    assert any(n.endswith("input_low") for n in trainable)

    # gradients reach both the float weights and the quantizer parameters through fake-quant
    qmodel.train()
    batch = calibration[0]
    logits = qmodel(**batch).logits
    torch.nn.functional.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long)).backward()
    grads = {n: p.grad for n, p in qmodel.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(not qat._is_hook_key(n) for n in grads)
    assert any(n.endswith("_scale_param_storage") for n in grads)
    assert any(n.endswith("_input_range_param_storage") for n in grads)
    qmodel.zero_grad()

    before = {k: v.clone() for k, v in qmodel.state_dict().items()}
    _train_steps(qmodel, calibration)
    changed = {k for k, v in qmodel.state_dict().items() if not torch.equal(v, before[k])}
    assert any(not qat._is_hook_key(k) and k.endswith(".weight") for k in changed)
    assert any(qat._is_hook_key(k) and k.endswith(".scale") for k in changed)
    assert any(qat._is_hook_key(k) and k.endswith(".input_range") for k in changed)


# ----------------------------------------------------------------------------------------------
# qat_summary
# ----------------------------------------------------------------------------------------------


def test_qat_summary_counts_are_consistent_and_names_real(quantized):
    float_model, qmodel, _, _ = quantized
    import nncf

    summary = qat.qat_summary(qmodel)
    assert json.loads(json.dumps(summary)) == summary
    assert summary["weight_quantizers"] > 0 and summary["activation_quantizers"] > 0
    assert summary["weight_quantizers"] + summary["activation_quantizers"] == len(summary["quantizers"])
    assert summary["ops_with_fake_quant"] == len(summary["quantized_ops"]) > 0
    assert summary["unmatched_hooks"] == [] and summary["notes"] == []
    assert summary["fake_quant_kernels"] in ("cpp_extension", "reference")

    # every hook named in the summary is a hook NNCF's own config lists
    config_hooks = {
        h for cmd in nncf.torch.get_config(qmodel)["compression_state"] for h in cmd["hook_names_in_model"]
    }
    assert {h for q in summary["quantizers"] for h in q["hooks"]} == config_hooks
    assert summary["quantizer_insertion_points"] == len(config_hooks)
    # every quantized op names a real module; every weight names a real parameter
    modules = dict(float_model.named_modules())
    params = dict(float_model.named_parameters())
    for op in summary["quantized_op_details"]:
        assert op["module"] is None or op["module"] in modules, op
    for q in summary["quantizers"]:
        assert all(p in params for p in q.get("parameters", [])), q
    # 2 layers x (q, k, v, attention-out, intermediate, output) + pooler + classifier + 3 embeddings,
    # plus the two attention score matmuls (query x key)
    assert summary["ops_with_fake_quant"] == 2 * 6 + 2 + 3 + 2

    float_types = {op["type"]: op for op in summary["float_ops"]}
    assert {"softmax", "gelu", "layer_norm"} <= set(float_types)
    assert float_types["softmax"]["reason_code"] == "no_int8_kernel"
    assert float_types["gelu"]["reason_code"] == "no_int8_kernel"
    assert all(op["reason"] for op in summary["float_ops"])
    assert sum(summary["float_ops_by_reason"].values()) == len(summary["float_ops"])
    # the attention-probabilities x value matmuls are excluded by NNCF's TRANSFORMER pattern
    pattern_ops = [op for op in summary["float_ops"] if op["reason_code"] == "transformer_ignored_pattern"]
    assert len(pattern_ops) == 2 and all(op["type"] == "matmul" for op in pattern_ops)
    assert "multihead_attention_output" in pattern_ops[0]["reason"]
    # no Linear or Embedding lost its weight quantizer
    linear_like = {
        f"{n}.weight" for n, m in modules.items() if isinstance(m, (torch.nn.Linear, torch.nn.Embedding))
    }
    lost = {p for op in summary["weighted_ops_without_weight_quantizer"] for p in op["parameters"]}
    assert not lost & linear_like


# ----------------------------------------------------------------------------------------------
# save / load / float weights
# ----------------------------------------------------------------------------------------------


def test_save_and_load_reproduce_the_trained_model_exactly(quantized, tiny_bert_classifier, tmp_path):
    _, qmodel, calibration, held_out = quantized
    qmodel = copy.deepcopy(qmodel)
    _train_steps(qmodel, calibration, steps=2)  # learned scales differ from their initial values

    qat.save_qat_state(qmodel, tmp_path / "qat")
    assert sorted(os.listdir(tmp_path / "qat")) == ["nncf_config.json", "qat_state.safetensors"]

    fresh = _load_classifier(tiny_bert_classifier)
    restored = qat.load_qat_model(fresh, tmp_path / "qat")
    assert restored is fresh  # load_from_config wraps the given model in place
    assert torch.equal(_logits(restored, held_out), _logits(qmodel, held_out))
    original_state, restored_state = qmodel.state_dict(), restored.state_dict()
    assert list(original_state) == list(restored_state)
    assert all(torch.equal(original_state[k], restored_state[k]) for k in original_state)
    assert qat.qat_summary(restored)["unmatched_hooks"] == []  # traced from the transformers dummy input

    # saving again over an existing folder works (atomic replace) and leaves no temp files
    qat.save_qat_state(restored, tmp_path / "qat")
    assert sorted(os.listdir(tmp_path / "qat")) == ["nncf_config.json", "qat_state.safetensors"]


def test_load_qat_model_names_the_folder_when_files_are_missing_or_corrupted(
    quantized, tiny_bert_classifier, tmp_path
):
    _, qmodel, _, held_out = quantized
    folder = tmp_path / "qat"
    with pytest.raises(ModelLoadError, match="missing nncf_config.json, qat_state.safetensors") as err:
        qat.load_qat_model(_load_classifier(tiny_bert_classifier), folder)
    assert str(folder) in str(err.value)

    qat.save_qat_state(qmodel, folder)
    good_state = (folder / "qat_state.safetensors").read_bytes()
    (folder / "qat_state.safetensors").write_bytes(good_state[: len(good_state) // 2])
    with pytest.raises(ModelLoadError, match="corrupted") as err:
        qat.load_qat_model(_load_classifier(tiny_bert_classifier), folder)
    assert str(folder) in str(err.value)

    (folder / "qat_state.safetensors").write_bytes(good_state)
    (folder / "nncf_config.json").write_text('{"compression_state": [', encoding="utf-8")
    with pytest.raises(ModelLoadError, match="corrupted") as err:
        qat.load_qat_model(_load_classifier(tiny_bert_classifier), folder)
    assert str(folder) in str(err.value)

    # a state that does not fit: the error names the folder and the float model is left usable
    qat.save_qat_state(qmodel, folder)
    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / "qat_state.safetensors"))
    state.pop(next(k for k in state if qat._is_hook_key(k)))
    save_file(state, str(folder / "qat_state.safetensors"))
    float_model = _load_classifier(tiny_bert_classifier)
    expected = _logits(float_model, held_out)
    with pytest.raises(ModelLoadError, match="does not fit") as err:
        qat.load_qat_model(float_model, folder)
    assert str(folder) in str(err.value)
    assert torch.equal(_logits(float_model, held_out), expected)


def test_float_state_dict_is_a_plain_transformers_model(quantized, tiny_bert_classifier, tmp_path):
    from transformers import AutoModelForSequenceClassification

    float_model, qmodel, calibration, held_out = quantized
    qmodel = copy.deepcopy(qmodel)
    _train_steps(qmodel, calibration, steps=2)

    weights = qat.float_state_dict(qmodel)
    assert list(weights) == list(float_model.state_dict())
    assert not any(
        torch.equal(weights[k], v) for k, v in float_model.state_dict().items() if k.endswith("query.weight")
    )

    plain = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert_classifier, attn_implementation="eager"
    )
    plain.load_state_dict(weights)
    plain.save_pretrained(tmp_path / "student")
    reloaded = AutoModelForSequenceClassification.from_pretrained(
        tmp_path / "student", attn_implementation="eager"
    )

    # the float model = the QAT model with its quantizers switched off
    for _, quantizer in qat._hooks(qmodel):
        quantizer.disable_quantization()
    assert torch.allclose(_logits(reloaded.eval(), held_out), _logits(qmodel, held_out), atol=1e-6)


# ----------------------------------------------------------------------------------------------
# ensure_nncf_extensions
# ----------------------------------------------------------------------------------------------


def _cpu_build_dir() -> str:
    from nncf.torch.quantization.extensions import QuantizedFunctionsCPULoader

    return QuantizedFunctionsCPULoader.get_build_dir()  # follows $TORCH_EXTENSIONS_DIR at call time


def test_ensure_nncf_extensions_removes_a_stale_lock_and_keeps_a_held_one(
    quantized, tmp_path, monkeypatch, caplog
):
    # `quantized` already loaded the real extension in this process, so nothing is rebuilt here
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "torch_extensions"))
    monkeypatch.delenv("NNCF_EXTENSION_LOAD_TIMEOUT", raising=False)
    lock = os.path.join(_cpu_build_dir(), "lock")
    assert lock.startswith(str(tmp_path))

    open(lock, "w").close()  # left behind by a killed build: nobody holds it open
    an_hour_ago = time.time() - 3600
    os.utime(lock, (an_hour_ago, an_hour_ago))
    with caplog.at_level(logging.WARNING, logger="edgedistill.compress.qat"):
        qat.ensure_nncf_extensions(timeout_s=7.5)
    assert not os.path.exists(lock)
    assert any("stale torch-extension build lock" in r.message for r in caplog.records)
    assert os.environ["NNCF_EXTENSION_LOAD_TIMEOUT"] == "8"  # whole seconds, as NNCF parses it

    fd = os.open(lock, os.O_CREAT | os.O_EXCL)  # a build in progress holds its lock open
    try:
        os.utime(lock, (an_hour_ago, an_hour_ago))
        qat.ensure_nncf_extensions()
        assert os.path.exists(lock)
    finally:
        os.close(fd)
        os.unlink(lock)


def test_ensure_nncf_extensions_falls_back_to_reference_functions_on_timeout(tmp_path, monkeypatch, caplog):
    """NNCF itself raises on a load timeout; we keep training on its reference functions instead."""
    from nncf.torch.extensions import ExtensionLoader, ExtensionNamespace, ExtensionsType
    from nncf.torch.quantization import quantize_functions
    from nncf.torch.quantization.reference import ReferenceQuantizedFunctions

    class HangingLoader(ExtensionLoader):  # waits like a load blocked on someone else's lock
        @classmethod
        def extension_type(cls):
            return ExtensionsType.CPU

        @classmethod
        def name(cls):
            return "edgedistill_test_hanging"

        @classmethod
        def load(cls):
            time.sleep(1.5)

    namespace = ExtensionNamespace(HangingLoader())
    monkeypatch.setattr(quantize_functions, "QuantizedFunctionsCPU", namespace)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "torch_extensions"))
    monkeypatch.setenv("NNCF_EXTENSION_LOAD_TIMEOUT", "1")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="edgedistill.compress.qat"):
        qat.ensure_nncf_extensions()
    assert time.monotonic() - started < 4
    assert namespace._loaded_namespace is ReferenceQuantizedFunctions
    assert qat.fake_quant_backend() == "reference"
    assert any("did not build/load within 1 s" in r.message for r in caplog.records)
    # let NNCF's abandoned loader thread finish and its ThreadPool be collected while the interpreter
    # is alive (collected at shutdown, it prints "Exception ignored in Pool.__del__")
    time.sleep(1)
    gc.collect()
