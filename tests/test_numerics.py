"""Numerics by CPU generation: what each runtime computes here, what export and bench record of it.

OpenVINO's CPU plugin runs fp32 IRs in bf16 on AVX-512 BF16 / AMX CPUs and quantizes activations
next to compressed weights to int8 on VNNI/AMX CPUs; ONNX Runtime and llama.cpp never change the
precision. Every strict check here runs on the hardware it is about and asserts the other branch
elsewhere, so the suite means the same on an AVX2-only CPU and on a VNNI/BF16/AMX one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bench_helpers import exported_artifacts, write_target

from edgedistill import host, numerics

AVX2_EPYC = "model name\t: AMD EPYC 7B12\nflags\t\t: fpu sse4_2 avx avx2 fma f16c\n"
ZEN4_EPYC = "model name\t: AMD EPYC 9B14\nflags\t\t: avx avx2 fma avx512f avx512bw avx512vl avx512_vnni avx512_bf16 avx_vnni\n"
SAPPHIRE_RAPIDS = (
    "model name\t: Intel(R) Xeon(R) Platinum 8481C\nflags\t\t: avx2 avx512f avx512_vnni avx512_bf16 "
    "avx512_fp16 amx_tile amx_int8 amx_bf16\n"
)
GRAVITON = "processor\t: 0\nFeatures\t: fp asimd asimddp i8mm bf16\nCPU part\t: 0xd40\n"


def test_cpu_generations_are_named_from_cpuinfo():
    cases = {
        AVX2_EPYC: ("AVX2", False, False),
        ZEN4_EPYC: ("AVX-512 VNNI BF16", True, True),
        SAPPHIRE_RAPIDS: ("AVX-512 VNNI BF16 FP16 AMX", True, True),
    }
    for text, (generation, vnni, bf16) in cases.items():
        model, flags = host.parse_cpuinfo(text)
        assert model and model.startswith(("AMD", "Intel"))
        assert host.generation(flags).endswith(generation), (host.generation(flags), generation)
        assert host.has_vnni(flags) is vnni and host.has_bf16(flags) is bf16
    _, arm = host.parse_cpuinfo(GRAVITON)
    assert {"asimd", "asimddp", "i8mm"} <= arm and not host.has_vnni(arm)
    # this machine: the summary every manifest and report row carries
    summary = host.cpu_summary()
    assert summary["model"] and summary["generation"] and set(summary["isa_flags"]) <= set(host.ISA_FLAGS)


# ---------------------------------------------------------------------------------------------
# OpenVINO on this CPU: small graphs built with openvino's own opset (no torch, fast)
# ---------------------------------------------------------------------------------------------


def _ir(tmp_path: Path, compressed: bool) -> tuple[Path, np.ndarray]:
    """An IR with one float MatMul (and, if ``compressed``, one u8 weight-compressed one) and an input."""
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)
    x = ops.parameter([1, 32, 128], np.float32, name="x")
    y = ops.matmul(x, ops.constant(rng.standard_normal((256, 128)).astype(np.float32)), False, True)
    if compressed:
        codes = ops.convert(ops.constant(rng.integers(0, 255, (256, 256)).astype(np.uint8)), np.float32)
        zero = ops.convert(ops.constant(np.full((256, 1), 128, np.uint8)), np.float32)
        scale = ops.constant((rng.random((256, 1)) * 0.01).astype(np.float32))
        y = ops.matmul(ops.relu(y), ops.multiply(ops.subtract(codes, zero), scale), False, True)
    model = ov.Model([y], [x], "probe")
    path = tmp_path / ("compressed.xml" if compressed else "float.xml")
    numerics.openvino_ir_rt_info(model)
    ov.save_model(model, path, compress_to_fp16=False)
    return path, rng.standard_normal((1, 32, 128)).astype(np.float32)


def _compile(path: Path, properties: dict):
    import openvino as ov

    return ov.Core().compile_model(str(path), "CPU", properties)


def test_openvino_runs_fp32_in_the_precision_this_cpu_defaults_to_and_reads_it_back(tmp_path):
    path, feed = _ir(tmp_path, compressed=False)
    declared = _compile(path, numerics.OPENVINO_FILE_PROPERTIES)
    native = _compile(path, {})
    declared_back, native_back = numerics.openvino_read_back(declared), numerics.openvino_read_back(native)
    assert numerics.openvino_ran(declared_back) == "f32"
    assert declared_back["compute_precisions"] == {"f32": 1}, declared_back
    exact = declared(feed)[0]
    diff = float(np.abs(native(feed)[0] - exact).max() / np.abs(exact).max())
    if host.has_bf16():  # AVX-512 BF16 / AMX: the default is bf16, and it moves the numbers
        assert numerics.openvino_ran(native_back) == "bf16", native_back
        assert native_back["compute_precisions"] == {"bf16": 1}, native_back
        assert 1e-4 < diff < 2**-6, diff
    else:  # AVX2 / AVX-512 without BF16: the default is f32 and nothing moves
        assert numerics.openvino_ran(native_back) == "f32", native_back
        assert diff < 1e-6, diff


def test_the_ir_carries_dynamic_quantization_off_but_not_the_precision_hint(tmp_path):
    path, feed = _ir(tmp_path, compressed=True)
    plain = numerics.openvino_read_back(_compile(path, {}))
    # stored in rt_info and honoured: an app passing nothing gets it
    assert plain["properties"]["DYNAMIC_QUANTIZATION_GROUP_SIZE"] == "0"
    assert plain["compressed_weight_layers"] == 1 and plain["int8_layers"] == 0, plain
    # a stored precision hint would be ignored, so the IR does not pretend to carry one
    assert "INFERENCE_PRECISION_HINT" not in numerics.OPENVINO_IR_CARRIES
    assert plain["properties"]["INFERENCE_PRECISION_HINT"] == ("bf16" if host.has_bf16() else "f32")
    # an explicit property still wins over the IR's
    forced = numerics.openvino_read_back(_compile(path, {"DYNAMIC_QUANTIZATION_GROUP_SIZE": "32"}))
    assert forced["properties"]["DYNAMIC_QUANTIZATION_GROUP_SIZE"] == "32"


def test_dynamic_activation_quantization_moves_compressed_layers_only_on_vnni_cpus(tmp_path):
    path, feed = _ir(tmp_path, compressed=True)
    exact = _compile(path, numerics.OPENVINO_FILE_PROPERTIES)(feed)[0]
    dynamic = _compile(path, {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "32"})
    assert numerics.openvino_ran(numerics.openvino_read_back(dynamic)) == "f32 dynquant32"
    diff = float(np.abs(dynamic(feed)[0] - exact).max() / np.abs(exact).max())
    if host.has_vnni():
        assert diff > 1e-4, diff  # activations went through int8 (measured 4e-3 on AMX)
    else:
        assert diff < 1e-6, diff


@pytest.mark.skipif(
    not host.has_vnni(), reason="needs a VNNI/AMX CPU: the claim is about emulating a CPU without it"
)
def test_onednn_max_cpu_isa_does_not_make_openvino_behave_like_an_older_cpu(tmp_path):
    """Why the suite does not fake AVX2 with ONEDNN_MAX_CPU_ISA: OpenVINO's CPU plugin reads CPUID
    itself for its dynamic quantization (and precision) decisions; oneDNN's cap only removes kernels."""
    path, _ = _ir(tmp_path, compressed=True)
    script = (
        "import sys, numpy as np, openvino as ov\n"
        "from edgedistill import numerics\n"
        "core = ov.Core()\n"
        "feed = np.random.default_rng(0).standard_normal((1, 32, 128)).astype(np.float32)\n"
        f"m = {str(path)!r}\n"
        "a = core.compile_model(m, 'CPU', dict(numerics.OPENVINO_FILE_PROPERTIES))(feed)[0]\n"
        "b = core.compile_model(m, 'CPU', {'INFERENCE_PRECISION_HINT': 'f32', 'DYNAMIC_QUANTIZATION_GROUP_SIZE': '32'})(feed)[0]\n"
        "print(float(np.abs(a - b).max() / np.abs(a).max()))\n"
    )
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}  # AVX-512 without VNNI
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.split()[-1]) > 1e-4, out.stdout  # still quantized: no emulation


# ---------------------------------------------------------------------------------------------
# export: parity of the file, the as-deployed check, the manifest
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, tiny_bert_classifier, tiny_bert_encoder):
    return exported_artifacts(tmp_path_factory, tiny_bert_classifier, tiny_bert_encoder)


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


def test_openvino_manifest_records_host_settings_read_back_and_how_to_load(artifacts):
    manifest = _manifest(artifacts["openvino-fp32"])
    assert manifest["host"]["generation"] == host.generation()
    assert manifest["host"]["isa_flags"] == host.cpu_summary()["isa_flags"]
    parity = manifest["parity"]
    runtime = parity["runtime"]
    assert runtime["settings"]["compile_properties"] == numerics.OPENVINO_FILE_PROPERTIES
    assert runtime["read_back"]["properties"]["INFERENCE_PRECISION_HINT"] == "f32"
    assert runtime["read_back"]["properties"]["DYNAMIC_QUANTIZATION_GROUP_SIZE"] == "0"
    assert runtime["ran"] == "f32" and parity["passed"]
    deployed = parity["deployed"]
    assert deployed["passed"] and deployed["runtime"]["settings"]["compile_properties"].startswith("none")
    (logits,) = (o for o in parity["outputs"] if o["name"] == "logits")
    (deployed_logits,) = (o for o in deployed["outputs"] if o["name"] == "logits")
    if host.has_bf16():
        assert deployed["runtime"]["ran"] == "bf16"
        # held to the bf16 bounds, not fp32's absolute 1e-3, and really further from torch than f32
        assert deployed["tolerance"]["max_abs_diff"] is None and deployed["tolerance"]["max_rel_diff"] > 1e-3
        assert deployed_logits["max_rel_diff"] > 10 * logits["max_rel_diff"], (deployed_logits, logits)
    else:
        assert deployed["runtime"]["ran"] == "f32" and deployed["tolerance"] == parity["tolerance"]
    assert logits["max_rel_diff"] < 1e-5, logits
    load = manifest["load"]
    assert load["compile_properties"] == numerics.OPENVINO_FILE_PROPERTIES
    assert load["stored_in_ir_rt_info"] == {"DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}
    assert "INFERENCE_PRECISION_HINT" in load["not_stored_in_ir"]
    # the IR really holds what the manifest says it holds
    import openvino as ov

    model = ov.Core().read_model(str(artifacts["openvino-fp32"] / "openvino_model.xml"))
    assert model.get_rt_info(["runtime_options", "DYNAMIC_QUANTIZATION_GROUP_SIZE"]).astype(str) == "0"


def test_onnx_manifest_records_what_ran_and_that_defaults_are_the_parity_settings(artifacts):
    for name, ran in (("onnx-fp32", "f32"), ("onnx-int8", "f32+int8")):
        manifest = _manifest(artifacts[name])
        parity = manifest["parity"]
        assert parity["runtime"]["ran"] == ran and parity["deployed"] is None, parity["runtime"]
        assert "defaults" in parity["runtime"]["deployed"]
        assert manifest["load"]["runtime"] == "onnxruntime"
        assert manifest["host"]["model"] == host.cpu_summary()["model"]


@pytest.mark.skipif(
    not host.has_bf16(),
    reason="needs an AVX-512 BF16 / AMX CPU: elsewhere OpenVINO's defaults run f32, so there is no "
    "deployed difference to fail on",
)
def test_a_deployed_difference_beyond_tolerance_fails_the_export_and_names_the_setting(
    tmp_path, tiny_bert_classifier
):
    from edgedistill.export import ExportConfig, export
    from edgedistill.export.parity import DeployedParityError

    cfg = ExportConfig(
        formats=["openvino"],
        precisions=["fp32"],
        parity_samples=6,
        tolerances={"bf16": {"max_rel_diff": 1e-9}},
    )
    with pytest.raises(DeployedParityError) as err:
        export(tiny_bert_classifier, tmp_path, cfg)
    message = str(err.value)
    assert "ran bf16" in message and "'INFERENCE_PRECISION_HINT': 'f32'" in message, message
    assert "tolerances.bf16" in message and host.generation() in message
    assert not (tmp_path / "openvino-fp32").exists(), "a failed artifact must leave nothing behind"


# ---------------------------------------------------------------------------------------------
# bench: the precision policy, and every row saying what ran
# ---------------------------------------------------------------------------------------------


def test_bench_precision_policy_runs_the_declared_or_the_native_precision_and_labels_it(artifacts, tmp_path):
    from edgedistill.bench import bench
    from edgedistill.bench.cli import _summary
    from edgedistill.bench.gating import gate, markdown

    quick = {"measurement": {"min_iterations": 10, "min_seconds": 0.05, "warmup_iterations": 1}}
    native_ran = "bf16" if host.has_bf16() else "f32"
    for policy, expected in (("auto", "f32"), ("artifact", "f32"), ("native", native_ran)):
        target = write_target(tmp_path, f"{policy}.yaml", runtime={"precision_policy": policy}, **quick)
        report = bench([artifacts["openvino-fp32"], artifacts["openvino-int8"]], target)
        fp32, int8 = report["artifacts"]
        assert fp32["status"] == "measured" and fp32["ran"] == expected, (policy, fp32.get("ran"))
        assert fp32["label"] == f"openvino-fp32 (ran {expected})"
        effective = fp32["applied"]["effective"]
        assert effective["INFERENCE_PRECISION_HINT"] == expected  # read back, not the request
        # int8 (weight-only here): auto means native; its float part follows the CPU
        assert int8["precision_policy"] == ("artifact" if policy == "artifact" else "native")
        assert int8["ran"].startswith("f32" if policy == "artifact" else native_ran), int8["ran"]
        assert f"openvino-fp32 (ran {expected})" in _summary(report)
        text = markdown(gate(report, target))
        assert f"`openvino-fp32 (ran {expected})`" in text and host.generation() in text


def test_llama_cpp_loads_without_its_extra_buffers_only_on_amx_cpus():
    """llama.cpp's AMX matmul crashed every GGUF test on a Xeon with amx_int8 (issue #20824)."""
    pytest.importorskip("llama_cpp")
    import llama_cpp.llama_cpp as bindings

    assert numerics.llama_cpp_extra_buffers_default() is (not host.isa()["amx_int8"])
    assert bindings.llama_model_default_params().use_extra_bufts is True  # llama.cpp's own default
    with numerics.llama_cpp_extra_buffers(False):
        assert bindings.llama_model_default_params().use_extra_bufts is False
    assert bindings.llama_model_default_params().use_extra_bufts is True  # restored


AVX2_BUILD = "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | LLAMAFILE = 1 | REPACK = 1 |"
VNNI_BUILD = AVX2_BUILD.replace(
    "BMI2 = 1", "BMI2 = 1 | AVX512 = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | AVX_VNNI = 1"
)


def test_llama_cpp_build_gap_names_the_host_extensions_the_wheel_was_not_compiled_for():
    sapphire = {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "fma"}
    assert numerics.llama_cpp_unused_isa(AVX2_BUILD, sapphire) == [
        "AVX512", "AVX512_VNNI", "AVX_VNNI", "AVX512_BF16", "AMX_INT8",
    ]  # fmt: skip
    assert numerics.llama_cpp_unused_isa(VNNI_BUILD, sapphire) == ["AMX_INT8"]
    assert numerics.llama_cpp_unused_isa(AVX2_BUILD, {"avx2", "fma"}) == []  # an AVX2 host: nothing missing
    assert numerics.llama_cpp_unused_isa("", {"avx2"}) == ["AVX2"]
    assert "pip install --no-cache-dir" in numerics.llama_cpp_rebuild_hint(["AVX512_VNNI"])


def test_the_installed_llama_cpp_is_checked_against_this_host():
    llama_cpp = pytest.importorskip("llama_cpp")
    info = llama_cpp.llama_print_system_info().decode(errors="replace")
    unused = numerics.llama_cpp_unused_isa(info)
    built = {p.split("=")[0].strip() for p in info.split("|") if p.strip().endswith("= 1")}
    for flag, name in numerics.LLAMA_CPP_ISA_NAMES.items():
        if flag in host.cpu_flags():
            assert (name in unused) is (name not in built)
        else:
            assert name not in unused
