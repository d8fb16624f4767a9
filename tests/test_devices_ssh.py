"""The ssh runner FOR REAL: an sshd on 127.0.0.1 (started here), a tiny ONNX artifact benched through it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from devices_helpers import tiny_onnx

from edgedistill.loopback_ssh import Sshd, free_port, sshd_missing_reason

pytest.importorskip("onnxruntime")

from bench_helpers import write_target  # noqa: E402

from edgedistill.bench import bench, gate  # noqa: E402

pytestmark = pytest.mark.skipif(sshd_missing_reason() is not None, reason=str(sshd_missing_reason()))

DEVICE_PYTHON = sys.executable  # a python3 with numpy, tokenizers and onnxruntime: the "board's" Python
FAST = {
    "measurement": {
        "warmup_iterations": 2,
        "min_iterations": 30,
        "min_seconds": 0.1,
        "compare_rounds": 2,
        "timeout_s": 120,
    }
}


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = Sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def onnx(tmp_path_factory, tiny_bert_classifier):
    return tiny_onnx(tmp_path_factory, tiny_bert_classifier)


def _target(tmp_path: Path, device: dict, **changes) -> Path:
    return write_target(tmp_path, device=device, **{**FAST, **changes})


def test_ssh_bench_report_has_device_block_hash_check_and_device_rss(sshd, onnx, tmp_path):
    workdir = tmp_path / "board"
    target = _target(tmp_path, sshd.device(python=DEVICE_PYTHON, workdir=str(workdir)))
    out = tmp_path / "report.json"
    report = bench([onnx["onnx-int8"]], target, out=out)
    assert json.loads(out.read_text())["device"]["kind"] == "ssh"
    dev = report["device"]
    assert (
        dev["status"] == "used" and dev["address"] == f"ssh://{sshd.device()['user']}@127.0.0.1:{sshd.port}"
    )
    assert dev["machine"] and dev["uname"] and dev["cpu_model"] and dev["cpuinfo_flags"] and dev["python"]
    assert dev["emulated"] is False
    assert "bundle.zip" in dev["runner"]  # the device side ran from the shipped zip
    (entry,) = report["artifacts"]
    assert entry["status"] == "measured", entry.get("reason")
    assert entry["device"] == "ssh" and entry["emulated"] is False
    assert entry["latency"]["n"] >= 30 and entry["memory"]["peak_rss_mb"] > 10
    # the artifact was copied and re-hashed on the device; the worker there ran from the shipped bundle
    copies = list((workdir / "artifacts").glob("*.sha256.json"))
    assert len(copies) == 1
    hashes = json.loads(copies[0].read_text())
    assert "model.onnx" in hashes and "manifest.json" in hashes
    parity = entry["device_parity"]
    assert (
        parity["status"] == "measured" and parity["top1_agreement"] == 1.0 and parity["max_abs_diff"] < 1e-4
    )
    # the FAST target's accuracy budgets have no figure (no --data): not judged, exit 4
    assert gate(out, target).exit_code == 4
    assert gate(out, target, allow_skipped=True).exit_code == 0
    # the same report, had it come from an emulated device: the gate judges no latency or memory on it
    raw = json.loads(out.read_text())
    raw["device"]["emulated"] = raw["artifacts"][0]["emulated"] = True
    out.write_text(json.dumps(raw))
    checks = {c.budget: c for c in gate(out, target).checks}
    assert checks["p50_latency_ms"].status == checks["p95_latency_ms"].status == "skipped"
    assert checks["p50_latency_ms"].message == "latency under emulation is not a device latency"
    assert checks["peak_rss_mb"].status == "skipped" and checks["artifact_size_mb"].status == "passed"


def test_ssh_corrupted_copy_on_device_is_an_error_not_a_pass(sshd, onnx, tmp_path):
    from edgedistill.bench.devices import open_device
    from edgedistill.bench.devices.base import DeviceError

    device = open_device(sshd.device(python=DEVICE_PYTHON, workdir=str(tmp_path / "board")), tmp_path / "run")
    device.open()
    remote = Path(device.push_artifact(onnx["onnx-fp32"]))
    with open(remote / "model.onnx", "r+b") as fh:  # flip a byte of the device's copy
        fh.seek(100)
        byte = fh.read(1)
        fh.seek(100)
        fh.write(bytes([byte[0] ^ 0xFF]))
    check = device.remote("verify", str(remote), f"{remote}.sha256.json", timeout=60)
    assert check["ok"] is False and check["mismatched"] == ["model.onnx"]
    device._pushed.clear()
    device.push = lambda *a, **k: None  # a transfer that changes nothing: the copy stays corrupted
    with pytest.raises(DeviceError, match="does not match its sha256"):
        device.push_artifact(onnx["onnx-fp32"])
    device.close()


def test_ssh_unreachable_host_is_skipped_and_gate_does_not_pass(onnx, tmp_path):
    server = Sshd(tmp_path / "gone")
    device = server.device(python=DEVICE_PYTHON, workdir=str(tmp_path / "board"))
    server.stop()  # killed before the run: nothing listens on its port any more
    target = _target(tmp_path, device)
    out = tmp_path / "report.json"
    report = bench([onnx["onnx-int8"]], target, out=out)
    (entry,) = report["artifacts"]
    assert entry["status"] == "skipped" and "unavailable" in entry["reason"] and "ssh://" in entry["reason"]
    assert report["device"]["status"] == "unavailable"
    result = gate(out, target)  # every budget not judged, with the reason: exit 4, never a pass
    assert result.verdict == "NOT JUDGED" and result.count("passed") == 0 and result.exit_code == 4
    assert all("unavailable" in c.message and c.status == "not_judged" for c in result.checks)
    assert gate(out, target, allow_skipped=True).exit_code == 0


def test_ssh_missing_runtime_on_device_is_a_clear_skip(sshd, onnx, tmp_path):
    # /usr/bin/python3 here has no onnxruntime/numpy: the device's Python, not this host's, decides
    target = _target(tmp_path, sshd.device(python="/usr/bin/python3", workdir=str(tmp_path / "board")))
    probe = __import__("subprocess").run(
        ["/usr/bin/python3", "-c", "import onnxruntime"], capture_output=True
    )
    if probe.returncode == 0:
        pytest.skip("/usr/bin/python3 has onnxruntime: no Python without it to stand for a bare device")
    report = bench([onnx["onnx-int8"]], target)
    (entry,) = report["artifacts"]
    assert entry["status"] == "skipped"
    assert (
        "onnxruntime runtime is missing on device ssh://" in entry["reason"]
        and "pip install" in entry["reason"]
    )


def test_ssh_measurement_past_its_time_limit_is_an_error(sshd, onnx, tmp_path):
    device = sshd.device(python=DEVICE_PYTHON, workdir=str(tmp_path / "board"), parity=False)
    target = _target(tmp_path, device, measurement={"min_seconds": 30, "timeout_s": 3})
    report = bench([onnx["onnx-int8"]], target)
    (entry,) = report["artifacts"]
    assert entry["status"] == "error" and "ran past 3 s" in entry["reason"]


def test_ssh_interleaved_baseline_comparison_runs_on_the_device(sshd, onnx, tmp_path):
    device = sshd.device(python=DEVICE_PYTHON, workdir=str(tmp_path / "board"), parity=False)
    target = _target(tmp_path, device)
    out = tmp_path / "report.json"
    report = bench([onnx["onnx-int8"]], target, baseline_artifact=onnx["onnx-fp32"], out=out)
    (comparison,) = report["comparisons"]
    assert comparison["interleaved"] and comparison["candidate_rounds"] == comparison["baseline_rounds"] == 2
    assert comparison["result"]["verdict"] and len(comparison["baseline_samples_ms"]) >= 60
    cand = next(e for e in report["artifacts"] if e["role"] == "candidate")
    assert cand["status"] == "measured" and len(cand["latency"]["rounds"]) == 2
    assert len(list((tmp_path / "board" / "artifacts").glob("*.sha256.json"))) == 2
    regression = [c for c in gate(out, target).checks if c.budget.startswith("regression_latency")]
    assert regression and regression[0].status in ("passed", "failed", "inconclusive")
    raw = json.loads(out.read_text())
    raw["device"]["emulated"] = True
    out.write_text(json.dumps(raw))
    (emulated,) = [c for c in gate(out, target).checks if c.budget.startswith("regression_latency")]
    assert emulated.status == "skipped" and "emulation" in emulated.message


def test_ssh_connection_refused_port_names_the_address(tmp_path):
    from edgedistill.bench.devices import open_device
    from edgedistill.bench.devices.base import DeviceUnavailable

    port = free_port()
    device = open_device({"kind": "ssh", "host": "127.0.0.1", "port": port, "connect_timeout_s": 2}, tmp_path)
    with pytest.raises(DeviceUnavailable, match=f"127.0.0.1:{port}"):
        device.open()


def test_ssh_connection_lost_after_open_is_a_device_error(onnx, tmp_path):
    from edgedistill.bench.devices import open_device
    from edgedistill.bench.devices.base import DeviceError

    server = Sshd(tmp_path / "lost")
    device = open_device(
        server.device(python=DEVICE_PYTHON, workdir=str(tmp_path / "board")), tmp_path / "run"
    )
    device.open()
    server.drop()  # the board goes away mid-run: listener and the open master connection killed
    with pytest.raises(DeviceError, match="(ssh|scp of .*) failed|did not finish"):
        device.run(
            {"kind": "latency", "artifact": {"path": str(onnx["onnx-int8"])}, "options": {"threads": 1}},
            timeout_s=10,
            poll_interval_s=0.01,
            work_dir=tmp_path / "job",
        )
    device.close()
