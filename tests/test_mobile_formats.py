"""The formats mobile apps ship: ONNX Runtime's ``.ort`` (with a reduced build's operator config) and
ExecuTorch's ``.pte`` lowered to XNNPACK, each exported from the tiny models, run in its own runtime
(an ONNX Runtime session on the .ort file, ``executorch.runtime`` on the .pte) against torch, and
measured by the bench harness through the same runtimes.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from bench_helpers import write_target  # noqa: E402

from edgedistill.errors import MissingDependencyError, UnsupportedModelError  # noqa: E402
from edgedistill.export import ExportConfig, export, inspect_student  # noqa: E402
from edgedistill.plugins import is_installed  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = {"parity_samples": 6, "calib_samples": 6}
needs_executorch = pytest.mark.skipif(
    not is_installed("executorch"),
    reason="executorch is not installed (pip install 'edgedistill[executorch]'; `make install` includes it)",
)


@pytest.fixture(scope="module")
def ort_cls(tmp_path_factory, tiny_bert_classifier):
    out = tmp_path_factory.mktemp("ort_cls")
    report = export(
        tiny_bert_classifier, out, ExportConfig(formats=["ort"], precisions=["fp32", "int8"], **FAST)
    )
    return out, report


@pytest.fixture(scope="module")
def pte_cls(tmp_path_factory, tiny_bert_classifier):
    if not is_installed("executorch"):
        pytest.skip("executorch is not installed (pip install 'edgedistill[executorch]')")
    out = tmp_path_factory.mktemp("pte_cls")
    cfg = ExportConfig(formats=["executorch"], precisions=["fp32", "int8"], **FAST)
    return out, export(tiny_bert_classifier, out, cfg)


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


def _torch_logits(folder: Path, sentences: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    batch = {
        k: np.asarray(v, dtype=np.int64) for k, v in tok(sentences, padding=True, return_tensors="np").items()
    }
    with torch.no_grad():
        return model(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits.numpy(), batch


SENTENCES = ["the acting is superb , honestly", "a boring waste of two hours", "meh"]


# --------------------------------------------------------------------------------------- ort


def test_ort_artifacts_pass_parity_and_list_real_operators(ort_cls):
    out, report = ort_cls
    assert [(a["format"], a["precision"]) for a in report["artifacts"]] == [("ort", "fp32"), ("ort", "int8")]
    for precision in ("fp32", "int8"):
        folder = out / f"ort-{precision}"
        manifest = _manifest(folder)
        assert manifest["parity"]["passed"] and manifest["model_files"] == ["model.ort"]
        assert not (folder / "model.onnx").exists()  # the app ships the .ort file only
        assert (folder / "model.ort").read_bytes()[4:8] == b"ORTM"  # the ORT flatbuffer identifier
        config = (folder / "required_operators_and_types.config").read_text()
        assert "ai.onnx;" in config
        ops = {op for names in manifest["quantization"]["ort_format"]["operators"].values() for op in names}
        assert {"Gather", "Softmax"} <= ops, ops
        assert manifest["load"]["session_config"] == {"session.enable_saved_runtime_optimizations": "1"}
    fp32_ops = set().union(*_manifest(out / "ort-fp32")["quantization"]["ort_format"]["operators"].values())
    int8_ops = set().union(*_manifest(out / "ort-int8")["quantization"]["ort_format"]["operators"].values())
    assert "MatMulInteger" in int8_ops and "MatMulInteger" not in fp32_ops  # dynamic int8 kept its int8 ops
    assert _manifest(out / "ort-int8")["parity"]["runtime"]["ran"] == "f32+int8"
    fp32 = _manifest(out / "ort-fp32")["parity"]
    assert fp32["outputs"][0]["max_abs_diff"] <= 1e-3 and fp32["outputs"][0]["top1_agreement"] == 1.0


def test_ort_file_loads_like_an_app_would_and_matches_torch(ort_cls, tiny_bert_classifier):
    import onnxruntime as ort

    out, _ = ort_cls
    ref, batch = _torch_logits(tiny_bert_classifier, SENTENCES)
    so = ort.SessionOptions()
    so.add_session_config_entry("session.enable_saved_runtime_optimizations", "1")
    session = ort.InferenceSession(
        str(out / "ort-fp32" / "model.ort"), so, providers=["CPUExecutionProvider"]
    )
    got = session.run(None, {i.name: batch[i.name] for i in session.get_inputs()})[0]
    assert np.abs(got - ref).max() < 1e-4


def test_ort_refuses_fp16_and_decoders_with_the_reason(tiny_bert_encoder, tmp_path):
    with pytest.raises(UnsupportedModelError, match="fp32 and int8"):
        export(tiny_bert_encoder, tmp_path, ExportConfig(formats=["ort"], precisions=["fp16"], **FAST))
    from edgedistill.export.core import get_plugin

    student = dataclasses.replace(inspect_student(tiny_bert_encoder), task="text-generation")
    assert "decoders" in (get_plugin("ort").unsupported_reason(student, "fp32", ExportConfig()) or "")


# --------------------------------------------------------------------------------- executorch


@needs_executorch
def test_pte_fp32_and_int8_pass_parity_in_executorch_runtime(pte_cls, tiny_bert_classifier):
    out, report = pte_cls
    fp32, int8 = _manifest(out / "executorch-fp32"), _manifest(out / "executorch-int8")
    for manifest in (fp32, int8):
        assert manifest["parity"]["passed"] and manifest["model_files"] == ["model.pte"]
        assert manifest["parity"]["runtime"]["settings"]["runtime"] == "executorch.runtime"
        assert manifest["quantization"]["graph"]["xnnpack_delegates"] >= 1
    # fp32 on XNNPACK: rounding error only (the default fp32 bound, 1e-3 absolute, holds with room)
    logits = fp32["parity"]["outputs"][0]
    assert logits["max_abs_diff"] < 1e-4 and logits["top1_agreement"] == 1.0
    assert int8["quantization"]["method"] == "static" and "calibrated" in int8["quantization"]["ranges"]
    assert int8["quantization"]["calibration_samples"] == FAST["calib_samples"]
    assert int8["parity"]["runtime"]["ran"] == "f32+int8"
    assert int8["model_bytes"] < fp32["model_bytes"] * 0.6  # int8 weights
    # the file as an app loads it: positional inputs in executorch_io.json's order, padded batch
    import torch
    from executorch.runtime import Runtime

    order = json.loads((out / "executorch-fp32" / "executorch_io.json").read_text())["inputs"]
    ref, batch = _torch_logits(tiny_bert_classifier, SENTENCES)
    method = Runtime.get().load_program(str(out / "executorch-fp32" / "model.pte")).load_method("forward")
    got = method.execute([torch.from_numpy(batch[n]) for n in order])[0].numpy()
    assert np.abs(got - ref).max() < 1e-4


@needs_executorch
@pytest.mark.slow  # one more XNNPACK lowering (~25 s on a busy 2-core machine)
def test_pte_encoder_fp32_matches_torch_embeddings(tmp_path, tiny_bert_encoder):
    report = export(
        tiny_bert_encoder, tmp_path, ExportConfig(formats=["executorch"], precisions=["fp32"], **FAST)
    )
    parity = {o["name"]: o for o in report["artifacts"][0]["parity"]["outputs"]}
    assert parity["sentence_embedding"]["cosine_min"] > 0.99999
    assert parity["last_hidden_state"]["max_abs_diff"] < 1e-3


@needs_executorch
def test_pte_refuses_qat_ranges_and_decoders(tiny_bert_encoder, tmp_path):
    cfg = ExportConfig(formats=["executorch"], precisions=["int8"], int8_method="qat", **FAST)
    with pytest.raises(UnsupportedModelError, match="learned QAT ranges"):
        export(tiny_bert_encoder, tmp_path, cfg)


def test_missing_executorch_names_the_extra(monkeypatch):
    import builtins

    from edgedistill.export.core import get_plugin

    real_import = builtins.__import__

    def no_executorch(name, *args, **kwargs):
        if name.split(".")[0] == "executorch":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr("edgedistill.plugins.is_installed", lambda m: m.split(".")[0] != "executorch")
    monkeypatch.setattr(builtins, "__import__", no_executorch)
    with pytest.raises(MissingDependencyError, match=r"edgedistill\[executorch\]"):
        get_plugin("executorch")


# -------------------------------------------------------------------------------------- bench


def test_bench_measures_ort_and_pte_through_their_runtimes(tmp_path, ort_cls, request):
    from edgedistill.bench import bench

    folders = [ort_cls[0] / "ort-fp32", ort_cls[0] / "ort-int8"]
    if is_installed("executorch"):
        pte_out, _ = request.getfixturevalue("pte_cls")
        folders += [pte_out / "executorch-fp32", pte_out / "executorch-int8"]
    target = write_target(tmp_path, workload={"sequence_lengths": [16]}, measurement={"min_iterations": 20})
    report = bench(folders, target, out=tmp_path / "report.json")
    by_name = {(a["format"], a["precision"]): a for a in report["artifacts"]}
    assert ("ort", "fp32") in by_name and ("ort", "int8") in by_name
    for (fmt, _), entry in by_name.items():
        assert entry["runtime"] == {"ort": "onnxruntime", "executorch": "executorch"}[fmt], entry
        assert entry["status"] == "measured", entry
        assert entry["latency"]["p50_ms"] > 0, entry
        effective = entry["applied"]["effective"]
        if fmt == "ort":  # the saved runtime optimizations replayed, as in export parity
            assert effective["session_config"]["session.enable_saved_runtime_optimizations"] == "1"
        else:  # XNNPACK's thread pool sized to the target's threads
            assert effective["xnnpack_threadpool_threads"] == 1 and entry["ran"] in ("f32", "f32+int8")
    if not is_installed("executorch"):
        pytest.skip("executorch not installed: .pte not measured")


def test_import_export_stays_light_with_the_mobile_formats():
    heavy = ["onnxruntime", "executorch", "torchao", "onnx", "coremltools"]
    code = (
        "import sys, edgedistill.export, edgedistill.export.config, edgedistill.export.plugin, "
        "edgedistill.bench.runtimes\n"
        "from edgedistill.export.config import FORMATS\n"
        "assert 'ort' in FORMATS and 'executorch' in FORMATS\n"
        f"print([m for m in {heavy!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
