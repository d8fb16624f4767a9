"""ONNX and OpenVINO export of tiny BERT students, each artifact run in its real runtime.

Exports are shared per module (one export call per model covers every precision), so the file
stays fast on two cores; tests needing a QAT student are marked ``slow``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import tiny_qat_recipe
from edgedistill import numerics
from edgedistill.errors import ConfigError, MissingDependencyError, ModelLoadError
from edgedistill.export import ExportConfig, ParityError, UnsupportedModelError, export, inspect_student

FORMATS = ["onnx", "openvino"]
PRECISIONS = ["fp32", "fp16", "int8"]
# lean settings for tiny models: fewer parity sentences and calibration samples
FAST = {"parity_samples": 8, "calib_samples": 8}
SENTENCES = [
    "the acting is superb , honestly",
    "a boring waste of two hours",
    "an absolute delight from start to finish for sure",
    "badly shot and poorly told , really",
]


def _cfg(**kw) -> ExportConfig:
    return ExportConfig(**{**FAST, **kw})


@pytest.fixture(scope="module")
def cls_export(tmp_path_factory, tiny_bert_classifier):
    out = tmp_path_factory.mktemp("export_cls")
    report = export(tiny_bert_classifier, out, _cfg(formats=FORMATS, precisions=PRECISIONS))
    return out, report


@pytest.fixture(scope="module")
def enc_export(tmp_path_factory, tiny_bert_encoder):
    out = tmp_path_factory.mktemp("export_enc")
    report = export(tiny_bert_encoder, out, _cfg(formats=FORMATS, precisions=PRECISIONS))
    return out, report


def _torch_outputs(folder: Path, task: str, sentences: list[str]) -> tuple[np.ndarray, dict]:
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    cls = AutoModelForSequenceClassification if task == "sequence-classification" else AutoModel
    model = cls.from_pretrained(folder).eval()
    batch = tok(sentences, padding=True, return_tensors="np")
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v) for k, v in batch.items()})
    ref = out.logits if task == "sequence-classification" else out.last_hidden_state
    return ref.numpy(), dict(batch)


def _run_artifact(folder: Path, feed: dict) -> np.ndarray:
    """Load an artifact the way an app would (its own runtime, its own tokenizer files)."""
    if (folder / "model.onnx").is_file():
        import onnxruntime as ort

        session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        return session.run(None, {n: feed[n] for n in names})[0].astype(np.float32)
    import openvino as ov

    # with the properties its manifest says an app must pass (OpenVINO would run bf16 on BF16/AMX CPUs)
    load = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))["load"]
    compiled = ov.Core().compile_model(str(folder / "openvino_model.xml"), "CPU", load["compile_properties"])
    names = [p.get_any_name() for p in compiled.inputs]
    return np.asarray(compiled({n: feed[n] for n in names})[compiled.outputs[0]], dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# light: imports, config, registry, refusals
# ---------------------------------------------------------------------------------------------


def test_import_export_package_imports_no_runtime():
    heavy = ["onnx", "onnxruntime", "openvino", "optimum", "llama_cpp", "nncf", "gguf"]
    code = (
        "import sys, edgedistill.export, edgedistill.export.core, edgedistill.export.config, "
        "edgedistill.export.onnx, edgedistill.export.openvino, edgedistill.export.cli\n"
        "from edgedistill.export import export, ExportConfig, FormatPlugin\n"
        f"print([m for m in {heavy!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_config_merges_tolerances_and_refuses_unknown_keys():
    from edgedistill.config import load_config
    from edgedistill.export.config import DEFAULT_TOLERANCES

    cfg = load_config(ExportConfig, None, {"tolerances.int8.min_top1_agreement": 1.0, "formats": ["all"]})
    assert cfg.tolerance("int8").min_top1_agreement == 1.0
    assert cfg.tolerance("int8").min_cosine == DEFAULT_TOLERANCES["int8"]["min_cosine"]  # kept
    assert cfg.formats == ["all"] and cfg.version == 1
    with pytest.raises(ConfigError) as err:
        load_config(ExportConfig, None, {"precisions": ["int3"], "tolerances.fp32.max_abs": 1, "oops": 1})
    text = str(err.value)
    assert "int3" in text and "max_abs" in text and "oops" in text  # every problem at once


def test_every_registered_plugin_imports_and_declares_known_precisions():
    from edgedistill.export.config import PRECISIONS
    from edgedistill.export.core import PLUGINS, ExportError, FormatPlugin, get_plugin

    for name in PLUGINS:
        try:
            plugin = get_plugin(name)
        except (ExportError, MissingDependencyError) as exc:
            if name in FORMATS:
                raise
            pytest.skip(f"{name}: {exc}")
        assert isinstance(plugin, FormatPlugin) and plugin.name == name
        assert set(plugin.precisions) <= set(PRECISIONS), (name, plugin.precisions)


def test_missing_runtime_names_the_pip_extra(monkeypatch):
    import importlib.util

    from edgedistill.export.core import get_plugin

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a)
    )
    with pytest.raises(MissingDependencyError, match=r"pip install 'edgedistill\[openvino\]'"):
        get_plugin("openvino")


def test_plan_skips_pairs_a_format_does_not_offer(tiny_bert_encoder):
    from edgedistill.export.core import plan

    student = inspect_student(tiny_bert_encoder)
    pairs, skipped = plan(student, _cfg(formats=FORMATS, precisions=["fp32", "int4"]))
    assert ("openvino", "int4") in pairs and ("onnx", "int4") not in pairs
    assert any(s["format"] == "onnx" and s["precision"] == "int4" for s in skipped)
    with pytest.raises(UnsupportedModelError, match="q8_0"):
        plan(student, _cfg(formats=FORMATS, precisions=["q8_0"]))
    # `all` covers every registered format that applies, and says why the others are left out
    pairs, skipped = plan(student, _cfg(formats=["all"], precisions=["fp32"]))
    assert {("onnx", "fp32"), ("openvino", "fp32")} <= set(pairs)
    assert {(s["format"], s["precision"]) for s in skipped} | set(pairs) >= {("gguf", "fp32")}


def test_only_builds_the_named_pairs_not_the_cross_product(tiny_bert_encoder):
    """fit's winner passed onnx-int8 and openvino-fp32: its final run builds those two, not four."""
    from edgedistill.export.core import plan

    student = inspect_student(tiny_bert_encoder)
    only = [{"format": "onnx", "precision": "int8"}, {"format": "openvino", "precision": "fp32"}]
    pairs, skipped = plan(student, _cfg(formats=["onnx", "openvino"], precisions=["fp32", "int8"], only=only))
    assert pairs == [("openvino", "fp32"), ("onnx", "int8")]
    assert {(s["format"], s["precision"]) for s in skipped if s["reason"] == "not among export.only"} == {
        ("onnx", "fp32"),
        ("openvino", "int8"),
    }
    with pytest.raises(ValueError, match=r"only: \['gguf-q8_0'\] not among formats"):
        _cfg(formats=["onnx"], precisions=["fp32"], only=[{"format": "gguf", "precision": "q8_0"}])
    with pytest.raises(ValueError, match="builds nothing"):
        _cfg(only=[])
    # settings copied for another pair keep no stale `only`: just() drops it, and a copy that kept it
    # is refused instead of building nothing (the run's teacher fp32 reference once did, silently)
    winner = _cfg(formats=["onnx"], precisions=["int8"], only=[{"format": "onnx", "precision": "int8"}])
    assert plan(student, winner.just("onnx", "fp32"))[0] == [("onnx", "fp32")]
    with pytest.raises(UnsupportedModelError, match="leaves nothing to build"):
        plan(student, winner.model_copy(update={"precisions": ["fp32"]}))


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_corrupted_student_folders_fail_with_the_fix(tmp_path, tiny_bert_classifier):
    bad_config = _copy(tiny_bert_classifier, tmp_path / "bad_config")
    (bad_config / "config.json").write_text('{"model_type": "bert", ', encoding="utf-8")
    with pytest.raises(ModelLoadError, match=r"config\.json.*not valid JSON.*save_pretrained"):
        export(bad_config, tmp_path / "out", _cfg())

    truncated = _copy(tiny_bert_classifier, tmp_path / "truncated")
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match=r"truncated.*(Copy the file again|save_pretrained)"):
        export(truncated, tmp_path / "out", _cfg())

    no_weights = _copy(tiny_bert_classifier, tmp_path / "no_weights")
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="no weights"):
        inspect_student(no_weights)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_unsupported_architecture_and_task_name_the_fix(tmp_path, tiny_bert_classifier):
    masked = _copy(tiny_bert_classifier, tmp_path / "masked_lm")
    config = json.loads((masked / "config.json").read_text())
    config["architectures"] = ["BertForMaskedLM"]
    (masked / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModelError, match=r"BertForMaskedLM.*--task feature-extraction"):
        export(masked, tmp_path / "out", _cfg())
    # with the suggested fix the encoder exports
    assert inspect_student(masked, "feature-extraction").task == "feature-extraction"

    with pytest.raises(UnsupportedModelError, match="text-generation"):
        export(tiny_bert_classifier, tmp_path / "out", _cfg(task="text-generation", formats=FORMATS))

    alien = _copy(tiny_bert_classifier, tmp_path / "alien")
    config["model_type"], config["architectures"] = "my_custom_net", ["MyCustomNetModel"]
    (alien / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModelError, match="remote code"):
        inspect_student(alien)


# ---------------------------------------------------------------------------------------------
# float students: every format x precision in its real runtime
# ---------------------------------------------------------------------------------------------


def test_classifier_artifacts_load_in_their_runtime_and_agree_with_torch(cls_export, tiny_bert_classifier):
    out, report = cls_export
    assert {(a["format"], a["precision"]) for a in report["artifacts"]} == {
        (f, p) for f in FORMATS for p in PRECISIONS
    }
    ref, feed = _torch_outputs(tiny_bert_classifier, "sequence-classification", SENTENCES)
    for art in report["artifacts"]:
        folder = Path(art["path"])
        assert art["parity"]["passed"] and art["parity"]["reference"] == "float"
        logits = _run_artifact(folder, feed)
        assert (logits.argmax(-1) == ref.argmax(-1)).all(), art["path"]
        bound = {"fp32": 1e-4, "fp16": 2e-2, "int8": 0.2}[art["precision"]]
        assert np.abs(logits - ref).max() < bound, (art["path"], np.abs(logits - ref).max())
        # an app needs the tokenizer and the labels beside the model (transformers 5 saves a fast
        # tokenizer as tokenizer.json only; 4.x also writes vocab.txt, which is copied when present)
        for name in ("tokenizer.json", "tokenizer_config.json", "config.json"):
            assert (folder / name).is_file(), (folder, name)
        if (tiny_bert_classifier / "vocab.txt").is_file():
            assert (folder / "vocab.txt").is_file(), folder
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{f}-{p}" for f in FORMATS for p in PRECISIONS] + ["export_report.json"]
    ), "no temporary folders may be left behind"


def test_int8_artifacts_are_quantized_and_smaller(cls_export):
    out, report = cls_export
    sizes = {(a["format"], a["precision"]): a["model_bytes"] for a in report["artifacts"]}
    for fmt in FORMATS:
        assert sizes[(fmt, "int8")] < sizes[(fmt, "fp16")] < sizes[(fmt, "fp32")], sizes
    import onnx

    ops = {n.op_type for n in onnx.load(str(out / "onnx-int8" / "model.onnx")).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops, ops
    assert "FakeQuantize" in (out / "openvino-int8" / "openvino_model.xml").read_text()
    manifest = json.loads((out / "openvino-int8" / "manifest.json").read_text())
    assert manifest["quantization"]["method"] == "static"
    assert manifest["quantization"]["low_bit_weight_constants"] > 0


def test_manifest_hashes_every_file_and_records_signature(cls_export):
    from edgedistill.export import verify_manifest

    out, _ = cls_export
    for folder in sorted(p for p in out.iterdir() if p.is_dir()):
        manifest = json.loads((folder / "manifest.json").read_text())
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        assert sorted(manifest["files"]) == [f for f in files if f != "manifest.json"]
        for name, entry in manifest["files"].items():
            assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == entry["sha256"], name
        assert [i["name"] for i in manifest["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
        assert all(i["dtype"] == "int64" for i in manifest["inputs"])
        assert manifest["inputs"][0]["shape"] == ["batch_size", "sequence_length"]
        assert manifest["outputs"][0]["name"] == "logits" and manifest["outputs"][0]["shape"][-1] == 2
        assert manifest["labels"] and manifest["task"] == "sequence-classification"
        assert manifest["parity"]["passed"] and manifest["parity"]["samples"] == 8
        assert {"torch", "transformers"} <= set(manifest["tools"])
        assert ("onnxruntime" if manifest["format"] == "onnx" else "openvino") in manifest["tools"]
        assert manifest["provenance"]["student_weights_sha256"]
        verify_manifest(folder)
    # a changed file is caught
    model = out / "onnx-fp32" / "model.onnx"
    backup = model.read_bytes()
    try:
        model.write_bytes(backup + b"\0")
        with pytest.raises(Exception, match="sha256 differs"):
            verify_manifest(out / "onnx-fp32")
    finally:
        model.write_bytes(backup)


def test_encoder_artifacts_match_torch_embeddings(enc_export, tiny_bert_encoder):
    _, report = enc_export
    ref, feed = _torch_outputs(tiny_bert_encoder, "feature-extraction", SENTENCES)
    ref_emb = numerics.mean_pool(ref, feed["attention_mask"])
    for art in report["artifacts"]:
        checked = {o["name"]: o for o in art["parity"]["outputs"]}
        assert {"last_hidden_state", "sentence_embedding"} <= set(checked)
        emb = numerics.mean_pool(_run_artifact(Path(art["path"]), feed), feed["attention_mask"])
        cos = (emb * ref_emb).sum(-1) / np.linalg.norm(emb, axis=-1) / np.linalg.norm(ref_emb, axis=-1)
        floor = {"fp32": 0.99999, "fp16": 0.999, "int8": 0.98}[art["precision"]]
        assert cos.min() > floor, (art["path"], cos)
        assert checked["sentence_embedding"]["cosine_min"] > floor


def test_default_onnx_export_needs_no_optimum(cls_export):
    """The default route is torch.onnx: optimum-onnx (which pins transformers<4.58) is never needed."""
    _, report = cls_export
    for art in (a for a in report["artifacts"] if a["format"] == "onnx"):
        assert art["quantization"]["exporter"] == "torch.onnx (TorchScript exporter)", art
    code = (
        "import sys, edgedistill.export.onnx as o\n"
        "from edgedistill.export.core import get_plugin\n"
        "get_plugin('onnx')\n"
        "print('optimum' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_dynamo_exporter_matches_torch(tmp_path, tiny_bert_encoder):
    import onnx

    report = export(tiny_bert_encoder, tmp_path, _cfg(precisions=["fp32", "int8"], onnx_exporter="dynamo"))
    ref, feed = _torch_outputs(tiny_bert_encoder, "feature-extraction", SENTENCES)
    for art in report["artifacts"]:
        assert art["parity"]["passed"], art
        assert art["quantization"]["exporter"] == "torch.onnx (dynamo exporter)"
        model = onnx.load(str(Path(art["path"]) / "model.onnx"))
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 18
    hidden = _run_artifact(tmp_path / "onnx-fp32", feed)
    mask = feed["attention_mask"].astype(bool)
    assert np.abs(hidden - ref)[mask].max() < 1e-4


def test_optimum_exporter_without_optimum_names_the_extra(tmp_path, tiny_bert_classifier, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name.startswith("optimum") else real(name, *a),
    )
    with pytest.raises(MissingDependencyError, match=r"edgedistill\[optimum\]") as err:
        export(tiny_bert_classifier, tmp_path / "out", _cfg(onnx_exporter="optimum"))
    assert "edgedistill[optimum]" in str(err.value) and "transformers<4.58" in str(err.value)
    assert not (tmp_path / "out" / "onnx-fp32").exists()


def test_optimum_exporter_when_installed(tmp_path, tiny_bert_classifier):
    """The optional route for transformers 4.x installs (`make test-compat` installs optimum-onnx)."""
    pytest.importorskip("optimum.exporters.onnx", reason="optimum-onnx is not installed (extra [optimum])")
    report = export(
        tiny_bert_classifier, tmp_path, _cfg(precisions=["fp32", "int8"], onnx_exporter="optimum")
    )
    for art in report["artifacts"]:
        assert art["parity"]["passed"] and art["quantization"]["exporter"] == "optimum-onnx main_export"
    manifest = json.loads((tmp_path / "onnx-fp32" / "manifest.json").read_text())
    assert "optimum-onnx" in manifest["tools"]


def test_onnx_static_int8_calibrated_on_a_tsv(tmp_path, tiny_bert_classifier, tiny_data):
    import onnx

    report = export(
        tiny_bert_classifier, tmp_path / "out", _cfg(precisions=["int8"], calib_data=tiny_data["train"])
    )
    (art,) = report["artifacts"]
    assert art["quantization"]["method"] == "static"
    assert art["quantization"]["calibration"] == str(tiny_data["train"])
    assert art["quantization"]["calibration_samples"] == 8
    ops = {n.op_type for n in onnx.load(str(tmp_path / "out" / "onnx-int8" / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # parity sentences come from the calibration file when no parity file is given
    assert art["parity"]["passed"] and art["parity"]["outputs"][0]["top1_agreement"] >= 0.9


# ---------------------------------------------------------------------------------------------
# atomicity: a failed parity or an interrupt leaves nothing and keeps a good artifact
# ---------------------------------------------------------------------------------------------


def _cli(argv: list[str]) -> int:
    from edgedistill.export.cli import add_export_parser

    parser = argparse.ArgumentParser(prog="edgedistill")
    add_export_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_failed_parity_keeps_the_good_artifact_and_leaves_nothing(
    tmp_path, tiny_bert_classifier, monkeypatch
):
    out = tmp_path / "artifacts"
    calib = tmp_path / "calib.txt"
    calib.write_text("\n".join(SENTENCES * 3) + "\n", encoding="utf-8")
    base = ["export", str(tiny_bert_classifier), "--format", "onnx", "--precision", "int8", "--out", str(out)]
    base += ["--parity-samples", "6", "--int8-method", "dynamic", "--parity-data", str(calib)]
    assert _cli(base) == 0
    good = _snapshot(out / "onnx-int8")

    with pytest.raises(ParityError) as err:
        _cli([*base, "--set", "tolerances.int8.max_abs_diff=0"])
    message = str(err.value)
    assert "logits" in message and "max_abs_diff" in message and "No artifact was written" in message
    assert _snapshot(out / "onnx-int8") == good, "a failed export must not touch the good artifact"
    assert sorted(p.name for p in out.iterdir()) == ["export_report.json", "onnx-int8"]

    # an interrupt in the middle (while the runtime checks the file) is just as clean
    from edgedistill.export.onnx import OnnxPlugin

    def interrupted(self, artifact_dir, inputs, deployed=False):
        raise KeyboardInterrupt

    monkeypatch.setattr(OnnxPlugin, "execute", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export(tiny_bert_classifier, out, _cfg(precisions=["fp32"]))
    assert sorted(p.name for p in out.iterdir()) == ["export_report.json", "onnx-int8"]
    assert _snapshot(out / "onnx-int8") == good


# ---------------------------------------------------------------------------------------------
# a QAT student: int8 from the learned ranges
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qat_student(tmp_path_factory, tiny_bert_classifier, tiny_data) -> Path:
    from edgedistill.compress.distillation import distill

    recipe = tiny_qat_recipe(tiny_bert_classifier, tiny_data)
    out = tmp_path_factory.mktemp("qat_run")
    distill(recipe, out, progress=False)
    return out / "student"


def _x86_int8_saturates() -> bool:
    """True on x86 CPUs without VNNI/AMX: their int8 GEMMs (``vpmaddubsw``) add u8*s8 products in
    pairs into int16 and saturate there; VNNI (``vpdpbusd``) and AMX accumulate in int32."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return True  # unknown: assume the worst
    return not {"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags)


def _run_without_int8_kernels(folder: Path, feed: dict) -> np.ndarray:
    """The artifact's own graph and numbers, with float arithmetic where the runtime would pick int8 kernels.

    ONNX Runtime: ``session.disable_quant_qdq`` keeps QuantizeLinear/DequantizeLinear as nodes (no
    fusion into MatMulIntegerToFloat). OpenVINO: each activation FakeQuantize is rewritten into the
    float ops its specification defines, so the CPU plugin's low-precision pass finds nothing to fuse.
    """
    if (folder / "model.onnx").is_file():
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.add_session_config_entry("session.disable_quant_qdq", "1")
        session = ort.InferenceSession(
            str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        return session.run(None, {i.name: feed[i.name] for i in session.get_inputs()})[0].astype(np.float32)
    import openvino as ov
    import openvino.opset13 as ops

    core = ov.Core()
    model = core.read_model(str(folder / "openvino_model.xml"))
    for fq in [op for op in model.get_ops() if op.get_type_name() == "FakeQuantize"]:
        x, in_low, in_high, out_low, out_high = (fq.input_value(i) for i in range(5))
        steps = ops.constant(np.float32(fq.get_levels() - 1))
        clamped = ops.minimum(ops.maximum(x, in_low), in_high)
        q = ops.round(
            ops.multiply(ops.divide(ops.subtract(clamped, in_low), ops.subtract(in_high, in_low)), steps),
            "half_to_even",
        )
        y = ops.add(ops.multiply(ops.divide(q, steps), ops.subtract(out_high, out_low)), out_low)
        fq.output(0).replace(y.output(0))
    # f32, and no dynamic int8 quantization of activations next to the int8 weight constants
    compiled = core.compile_model(model, "CPU", numerics.OPENVINO_FILE_PROPERTIES)
    names = [p.get_any_name() for p in compiled.inputs]
    return np.asarray(compiled({n: feed[n] for n in names})[compiled.outputs[0]], dtype=np.float32)


@pytest.mark.slow
def test_qat_student_int8_carries_learned_ranges(tmp_path, qat_student, tiny_data):
    import onnx
    import torch
    from onnx import numpy_helper

    from edgedistill.export.parity import load_sentences

    student = inspect_student(qat_student)
    assert student.has_qat
    qat_out, ptq_out = tmp_path / "qat", tmp_path / "ptq"
    report = export(qat_student, qat_out, _cfg(formats=FORMATS, precisions=["int8"]))
    # post-training int8 of the same float weights, each in the runtime it is compared in
    export(qat_student, ptq_out, _cfg(precisions=["int8"], int8_method="dynamic"))
    export(qat_student, ptq_out, _cfg(formats=["openvino"], precisions=["int8"], int8_method="static"))

    by_format = {a["format"]: a for a in report["artifacts"]}
    for art in by_format.values():
        assert art["quantization"]["method"] == "qat" and art["parity"]["reference"] == "qat"
        assert art["quantization"]["narrow_range_quantizers_clipped_on_export"] > 0
    model = onnx.load(str(qat_out / "onnx-int8" / "model.onnx"))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops or any(o.startswith("QLinear") for o in ops), ops
    assert not {"Min", "Max", "Clip"} & ops, "the export-time clamp of the weights must be folded away"
    int8_weights = [
        i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 2
    ]
    assert len(int8_weights) >= 5, "weights must be stored as int8 initializers"
    q = by_format["onnx"]["quantization"]
    assert q["weights_folded_to_int8"] > 0 and q["embeddings_gathered_int8"] > 0
    assert by_format["onnx"]["model_bytes"] < q["raw_qdq_bytes"] / 2.5, q
    assert "FakeQuantize" in (qat_out / "openvino-int8" / "openvino_model.xml").read_text()

    fake_quant = student.load_qat_model()
    tok = student.load_tokenizer()
    sentences = load_sentences(tiny_data["eval"])
    feed = dict(tok(sentences, padding=True, truncation=True, max_length=64, return_tensors="np"))
    with torch.no_grad():
        ref = fake_quant(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.numpy()

    def mean_diff(x: np.ndarray) -> float:
        return float(np.abs(x - ref).mean())

    # 1. The files carry the learned grid. NNCF trains int8 weights on the narrow grid -127..127;
    # its export would allow -128 (98 weights of this student took it, in ONNX and OpenVINO alike).
    import openvino as ov

    ir = ov.Core().read_model(str(qat_out / "openvino-int8" / "openvino_model.xml"))
    ir_int8 = [
        op.get_data()
        for op in ir.get_ops()
        if op.get_type_name() == "Constant" and op.get_output_element_type(0) == ov.Type.i8
    ]
    assert len(ir_int8) >= 5
    for weights in [numpy_helper.to_array(i) for i in int8_weights] + ir_int8:
        assert weights.min() >= -127, "a weight left the narrow grid it was trained on"
    # Run with float arithmetic in place of int8 kernels, both artifacts compute what the
    # fake-quant model computes up to float rounding (~1e-7 on logits of size ~1.3) -- except where
    # an activation sits on a rounding boundary and the runtime's float ops (another op order,
    # its own erf/tanh) put it one quantum away from torch's: then that sentence moves by
    # 2e-4..1.1e-3. Measured over 9 fixture builds: ONNX 0-2 of 64 sentences off by more than 1e-5,
    # OpenVINO 0-8 (mean up to 8e-5). Before the narrow-range fix: 37 of 64, mean 2.2e-4, max 1.1e-3.
    onnx_graph = _run_without_int8_kernels(qat_out / "onnx-int8", feed)
    ov_graph = _run_without_int8_kernels(qat_out / "openvino-int8", feed)
    for name, out in (("onnx", onnx_graph), ("openvino", ov_graph)):
        diff = np.abs(out - ref)
        rows_off = int((diff.max(-1) > 1e-5).sum())
        assert rows_off <= len(ref) // 4 and diff.max() < 5e-3, (name, float(diff.max()), rows_off)

    # 2. The runtimes' int8 kernels. On x86 without VNNI/AMX (this 2-core EPYC: AVX2 only) both
    # ONNX Runtime (MLAS U8S8, MatMulIntegerToFloat) and OpenVINO (oneDNN jit_gemm_I8) use
    # vpmaddubsw: u8 activation x s8 weight products are added in pairs into int16 and saturate.
    # NNCF's activations are asymmetric u8 with zero points ~128-136, so raw values are large and
    # 0.2-0.4 % of the pairs overflow; emulating that saturation in numpy reproduces the runtime
    # outputs of single layers to 1e-7. It is systematic (every sentence moves), not a rare
    # one-quantum flip, and post-training int8 suffers it as well. ORT keeps the pooler and
    # classifier Gemms float; OpenVINO runs them int8 too, so it saturates in 9 layers against
    # ORT's 7 (the classifier alone moves logits by ~2e-3) and the two runtimes differ by up to
    # 0.016. Measured over 28 fixture models (mean |diff| vs fake-quant, logits ~1.1-1.6):
    #   ORT:      QAT 0.0007-0.0026  vs  ORT dynamic PTQ 0.012-0.022    (ratio <= 0.19)
    #   OpenVINO: QAT 0.0066-0.015   vs  OpenVINO static PTQ 0.024-0.067 (ratio 0.14-0.50)
    # (Those models differed because the fixture tokenizer's vocabulary did, run to run, until
    # edgedistill.testing fixed it; one of them reached 0.503 in CI and failed a 2x check on
    # OpenVINO.) So ORT must beat its PTQ twice over, OpenVINO, whose saturation hits QAT and PTQ
    # alike, only beat it. The fixture is now the same model on every run: 0.04 and 0.26 here.
    # OpenVINO QAT vs *ORT* dynamic PTQ is only 0.45-0.75 (the old check, which failed), because
    # the two saturate in different layers; so each QAT artifact is compared with post-training
    # int8 run by the same runtime. With VNNI/AMX, products accumulate in int32: nothing
    # saturates and the runtimes should give the graph numbers of part 1, hence the strict checks.
    onnx_qat = _run_artifact(qat_out / "onnx-int8", feed)
    ov_qat = _run_artifact(qat_out / "openvino-int8", feed)
    ptq = _run_artifact(ptq_out / "onnx-int8", feed)
    ov_ptq = _run_artifact(ptq_out / "openvino-int8", feed)
    mean_qat, mean_ov, mean_ptq, mean_ov_ptq = (mean_diff(x) for x in (onnx_qat, ov_qat, ptq, ov_ptq))
    numbers = {
        "onnx_qat": mean_qat,
        "ov_qat": mean_ov,
        "onnx_ptq": mean_ptq,
        "ov_ptq": mean_ov_ptq,
        "onnx_graph": mean_diff(onnx_graph),
        "ov_graph": mean_diff(ov_graph),
        "onnx_graph_rows_off": int((np.abs(onnx_graph - ref).max(-1) > 1e-5).sum()),
        "ov_graph_rows_off": int((np.abs(ov_graph - ref).max(-1) > 1e-5).sum()),
        "logit_scale": float(np.abs(ref).mean()),
    }
    print("\nQAT int8 parity (mean |diff| vs fake-quant):", {k: f"{v:.2g}" for k, v in numbers.items()})
    assert (onnx_qat.argmax(-1) == ref.argmax(-1)).all() and (ov_qat.argmax(-1) == ref.argmax(-1)).all()
    # the learned ranges beat post-training quantization of the same float weights, same runtime
    assert mean_qat * 2 < mean_ptq and mean_ov < mean_ov_ptq, numbers
    if not _x86_int8_saturates():
        assert mean_ov * 2 < mean_ptq, numbers
        # both runtimes carry the same learned grid
        assert np.abs(onnx_qat - ov_qat).max() < 1e-3
