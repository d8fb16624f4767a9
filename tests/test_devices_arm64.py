"""ARM64 proven under qemu-user: the same remote runner inside an aarch64 userland, parity against x86.

The sysroot (Debian arm64 python3.11 + aarch64 wheels) is built once into ~/.cache/edgedistill/arm64
by `edgedistill.bench.devices.qemu_sysroot` (about 40 s with the network, measured on a busy shared
machine) and reused; without qemu-aarch64 or without the network to build it, these tests skip.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
from devices_helpers import tiny_onnx

pytest.importorskip("onnxruntime")

from bench_helpers import write_target  # noqa: E402

from edgedistill.bench import bench, gate  # noqa: E402
from edgedistill.bench.devices import qemu_sysroot  # noqa: E402

pytestmark = pytest.mark.slow

FAST = {"measurement": {"warmup_iterations": 1, "min_iterations": 30, "min_seconds": 0.1, "timeout_s": 300}}


@pytest.fixture(scope="module")
def sysroot():
    if shutil.which("qemu-aarch64") is None:
        pytest.skip("qemu-aarch64 not installed (apt-get install qemu-user): no ARM64 emulation here")
    info = qemu_sysroot.sysroot_info()
    if info is None:
        if os.environ.get("EDGEDISTILL_NO_SYSROOT_BUILD") == "1":
            pytest.skip("no arm64 sysroot cached and EDGEDISTILL_NO_SYSROOT_BUILD=1")
        try:
            info = qemu_sysroot.build()
        except (qemu_sysroot.SysrootError, OSError) as exc:  # no network to Debian/PyPI, no apt
            pytest.skip(f"the arm64 sysroot cannot be built here: {str(exc)[:300]}")
    return info


@pytest.fixture(scope="module")
def onnx(tmp_path_factory, tiny_bert_classifier):
    return tiny_onnx(tmp_path_factory, tiny_bert_classifier)


def test_arm64_emulated_bench_proves_onnx_parity_and_never_judges_latency(sysroot, onnx, tmp_path):
    target = write_target(tmp_path, device={"kind": "arm64-emulated"}, **FAST)
    out = tmp_path / "report.json"
    report = bench([onnx["onnx-int8"]], target, out=out)  # int8: the ARM kernels that differ most
    dev = report["device"]
    assert dev["kind"] == "arm64-emulated" and dev["emulated"] is True and dev["machine"] == "aarch64"
    assert "not a device latency" in dev["latency_note"]
    assert "asimd" in dev["hwcap_isa"]  # the emulated CPU's own ISA, from the kernel's HWCAP bits
    for entry in report["artifacts"]:
        assert entry["status"] == "measured", entry.get("reason")
        assert entry["emulated"] is True and entry["device"] == "arm64-emulated"
        parity = entry["device_parity"]
        assert parity["status"] == "measured" and parity["n"] >= 10
        assert parity["top1_agreement"] == 1.0 and parity["cosine_min"] > 0.99, parity
        assert parity["device_runtime"]["onnxruntime"] and parity["host_runtime"]["onnxruntime"]
        tol = 1e-3 if entry["precision"] == "fp32" else 5e-2
        assert parity["max_abs_diff"] < tol, parity
    result = gate(out, target)
    timing = [c for c in result.checks if c.budget in ("p50_latency_ms", "p95_latency_ms")]
    assert timing and all(
        c.status == "skipped" and c.message == "latency under emulation is not a device latency"
        for c in timing
    )
    assert {c.status for c in result.checks if c.budget == "artifact_size_mb"} == {"passed"}
    json.loads(out.read_text())  # the report is written


def test_arm64_gguf_has_no_aarch64_llama_cpp_wheel_and_says_so(sysroot):
    wheels = sysroot["wheels"]
    if wheels.get("llama-cpp-python"):
        pytest.skip("an aarch64 llama-cpp-python wheel exists now: GGUF can be proven too")
    assert wheels["llama-cpp-python"] is None and wheels["onnxruntime"]
