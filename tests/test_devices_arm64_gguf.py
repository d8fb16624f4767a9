"""GGUF proven on ARM64: llama.cpp cross-built for aarch64, a tiny GGUF benched under qemu-user, parity vs x86.

PyPI has no aarch64 llama-cpp-python wheel, so `edgedistill.bench.devices.qemu_llamacpp` cross-builds
the llama.cpp that the installed llama-cpp-python vendors. That build takes minutes (too long for the
timed suite), so the device test skips, saying so, when it is not in the cache. Build it once with

    apt-get install -y gcc-aarch64-linux-gnu g++-aarch64-linux-gnu cmake qemu-user
    python -m edgedistill.bench.devices.qemu_llamacpp      # ~/.cache/edgedistill/arm64/llamacpp/...

The cache's own rules (no trusted half build, the missing tool named) are tested without it.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

pytest.importorskip("llama_cpp")

from bench_helpers import write_target  # noqa: E402

from edgedistill.bench import bench, gate  # noqa: E402
from edgedistill.bench.devices import qemu_llamacpp, qemu_sysroot  # noqa: E402

FAST = {
    "measurement": {"warmup_iterations": 1, "min_iterations": 5, "min_seconds": 0.05, "timeout_s": 300},
    "workload": {"sequence_lengths": [16], "eval_max_length": 32},
}
ELF_AARCH64 = 183  # e_machine of an aarch64 ELF file


@pytest.fixture(scope="module")
def lcpp():
    if shutil.which("qemu-aarch64") is None:
        pytest.skip("qemu-aarch64 not installed (apt-get install qemu-user): no ARM64 emulation here")
    info = qemu_llamacpp.build_info()
    if info is None or qemu_sysroot.sysroot_info() is None:
        pytest.skip(
            f"no aarch64 llama.cpp build of llama-cpp-python {qemu_llamacpp.host_version()} in "
            f"{qemu_llamacpp.build_dir()}: cross-build it once (minutes) with "
            "`python -m edgedistill.bench.devices.qemu_llamacpp`"
        )
    return info


@pytest.fixture(scope="module")
def gguf(tmp_path_factory, tiny_bert_encoder):
    from edgedistill.export import ExportConfig, export

    root = tmp_path_factory.mktemp("arm64_gguf")
    export(
        tiny_bert_encoder, root, ExportConfig(formats=["gguf"], precisions=["fp32", "q8_0"], parity_samples=4)
    )
    return {"gguf-f32": root / "gguf-fp32", "gguf-q8_0": root / "gguf-q8_0"}


def test_arm64_emulated_benches_gguf_with_cross_built_llama_cpp_and_matches_x86(lcpp, gguf, tmp_path):
    target = write_target(tmp_path, device={"kind": "arm64-emulated"}, **FAST)
    out = tmp_path / "report.json"
    report = bench([gguf["gguf-f32"], gguf["gguf-q8_0"]], target, out=out)
    dev = report["device"]
    assert dev["machine"] == "aarch64" and dev["emulated"] is True
    build = dev["emulation"]["llamacpp_build"]  # the report names the llama.cpp build
    assert build["llama_cpp_python"] == qemu_llamacpp.host_version() and build["arch"] in build["summary"]
    assert "-DGGML_NATIVE=OFF" in build["cmake_flags"]
    for entry in report["artifacts"]:
        assert entry["status"] == "measured", entry.get("reason")
        assert entry["emulated"] is True and entry["device"] == "arm64-emulated"
        parity = entry["device_parity"]
        assert parity["status"] == "measured" and parity["n"] >= 10, parity
        there, here = parity["device_runtime"], parity["host_runtime"]
        assert there["llama_cpp_python"] == here["llama_cpp_python"] == qemu_llamacpp.host_version()
        # the aarch64 kernels ran (compile-time NEON + dotprod), not x86's
        assert "NEON = 1" in there["system_info"] and "DOTPROD = 1" in there["system_info"], there
        assert "NEON = 1" not in here["system_info"]
        assert not there.get("warnings"), there  # no "rebuild for AVX2" hint from the x86 cpuinfo qemu shows
        tol = 1e-4 if entry["name"].endswith("f32") or entry["precision"] in ("fp32", "f32") else 2e-2
        assert parity["max_abs_diff"] < tol and parity["cosine_min"] > 0.999, (entry["name"], parity)
    result = gate(out, target)
    timing = [c for c in result.checks if c.budget in ("p50_latency_ms", "p95_latency_ms")]
    assert timing and all(c.status == "skipped" and "emulation" in c.message for c in timing)
    json.loads(out.read_text())


def test_cross_built_libraries_are_aarch64_and_the_build_is_recorded(lcpp):
    lib = os.path.join(lcpp["site"], "llama_cpp", "lib")
    for name in qemu_llamacpp.LIBS:
        with open(os.path.join(lib, name), "rb") as fh:
            head = fh.read(20)
        assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == ELF_AARCH64, name
    assert lcpp["arch"] == qemu_llamacpp.ARCH and f"-DGGML_CPU_ARM_ARCH={lcpp['arch']}" in lcpp["cmake_flags"]
    assert set(lcpp["libs_sha256"]) and all(len(h) == 64 for h in lcpp["libs_sha256"].values())


def test_a_build_folder_without_build_json_is_never_trusted_and_stale_tmp_is_removed(tmp_path):
    version = qemu_llamacpp.host_version()
    final = qemu_llamacpp.build_dir(tmp_path, version)
    (final / "site" / "llama_cpp" / "lib").mkdir(parents=True)  # what a killed rename could leave
    assert qemu_llamacpp.build_info(tmp_path, version) is None
    stale = final.parent / f".tmp-{final.name}-999999999"  # a killed builder's staging folder
    stale.mkdir()
    (stale / "build.json").write_text("{}", encoding="utf-8")
    qemu_llamacpp._clean_stale(final.parent)
    assert not stale.exists() and qemu_llamacpp.build_info(tmp_path, version) is None
    (final / "build.json").write_text(
        json.dumps({"llama_cpp_python": version, "arch": "x"}), encoding="utf-8"
    )
    assert qemu_llamacpp.build_info(tmp_path, version)["site"] == str(final / "site")


def test_a_missing_cross_compiler_is_named_with_the_apt_get_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # a machine without the toolchain
    with pytest.raises(qemu_llamacpp.LlamaCppBuildError) as info:
        qemu_llamacpp.build(tmp_path / "cache")
    msg = str(info.value)
    assert "aarch64-linux-gnu-gcc" in msg and "apt-get install -y gcc-aarch64-linux-gnu" in msg
    assert not (tmp_path / "cache").exists()  # nothing half-made
