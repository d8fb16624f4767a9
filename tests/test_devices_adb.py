"""The adb runner against a FAKE `adb` (no phone exists here): command construction and both paths.

The fake records its argv and emulates ``push``/``pull`` (copies) and ``shell`` (``sh -c`` in a local
folder that stands for the phone's ``/data/local/tmp``). What it proves: the adb command lines the
runner builds, that the Python path runs the same protocol (bundle, hash check, fresh worker, RSS
polled on the "device"), that the Python-free ``llama-bench`` path parses llama-bench's JSON, and
that an unknown serial is a skip. What it cannot prove: anything about a real phone.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from devices_helpers import tiny_onnx

pytest.importorskip("onnxruntime")

from bench_helpers import write_target  # noqa: E402

from edgedistill.bench import bench, gate  # noqa: E402

SERIAL = "FAKE0123"
FAST = {"measurement": {"warmup_iterations": 2, "min_iterations": 30, "min_seconds": 0.1, "timeout_s": 120}}

FAKE_ADB = r"""#!{python}
import json, os, shutil, subprocess, sys
log = os.environ["FAKE_ADB_LOG"]
with open(log, "a") as fh:
    fh.write(json.dumps(sys.argv[1:]) + "\n")
args = sys.argv[1:]
if args[:2] != ["-s", "{serial}"]:
    sys.stderr.write("error: device '%s' not found\n" % (args[1] if len(args) > 1 else ""))
    sys.exit(1)
verb, rest = args[2], args[3:]
if verb in ("push", "pull"):
    src, dst = rest
    os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
    shutil.copyfile(src, dst)
    print("1 file pushed." if verb == "push" else "1 file pulled.")
    sys.exit(0)
if verb == "shell":
    sys.exit(subprocess.run(["sh", "-c", rest[0]]).returncode)
sys.stderr.write("fake adb: unsupported verb %s\n" % verb)
sys.exit(1)
"""

FAKE_LLAMA_BENCH = r"""#!{python}
import json, sys, time
with open("{log}", "a") as fh:
    fh.write(json.dumps(sys.argv[1:]) + "\n")
a = sys.argv[1:]
p, n, r = int(a[a.index("-p") + 1]), int(a[a.index("-n") + 1]), int(a[a.index("-r") + 1])
blob = bytearray(30_000_000)  # some resident memory for the VmHWM poll to see
time.sleep(0.3)
common = {"build_commit": "fake", "cpu_info": "fake ARM", "backends": "CPU", "n_threads": int(a[a.index("-t") + 1])}
print(json.dumps([
    {**common, "n_prompt": p, "n_gen": 0, "samples_ns": [2_000_000 + i for i in range(r)]},
    {**common, "n_prompt": 0, "n_gen": n, "samples_ns": [8_000_000 + i for i in range(r)]},
]))
"""


def _script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def fake_adb(tmp_path, monkeypatch):
    log = tmp_path / "adb-argv.jsonl"
    monkeypatch.setenv("FAKE_ADB_LOG", str(log))
    adb = _script(tmp_path / "adb", FAKE_ADB.replace("{python}", sys.executable).replace("{serial}", SERIAL))
    return adb, log


def _calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.fixture(scope="module")
def onnx(tmp_path_factory, tiny_bert_classifier):
    return tiny_onnx(tmp_path_factory, tiny_bert_classifier)


def test_adb_runner_with_fake_adb_python_path_builds_adb_commands_and_measures(fake_adb, onnx, tmp_path):
    adb, log = fake_adb
    phone = tmp_path / "phone-data-local-tmp"
    device = {
        "kind": "adb",
        "serial": SERIAL,
        "adb": str(adb),
        "python": sys.executable,
        "workdir": str(phone),
        "parity": False,
    }
    report = bench([onnx["onnx-int8"]], write_target(tmp_path, device=device, **FAST))
    (entry,) = report["artifacts"]
    assert entry["status"] == "measured", entry.get("reason")
    assert entry["device"] == "adb" and entry["memory"]["peak_rss_mb"] > 10 and entry["latency"]["n"] >= 30
    assert report["device"]["address"] == f"adb://{SERIAL}" and report["device"]["machine"]
    calls = _calls(log)
    assert all(c[:2] == ["-s", SERIAL] for c in calls)
    pushes = [c for c in calls if c[2] == "push"]
    assert [c[4] for c in pushes if c[3].endswith("bundle.zip")] == [f"{phone}/bundle.zip"]
    assert any(c[4].endswith("/model.onnx") and "/artifacts/" in c[4] for c in pushes)
    shells = [c[3] for c in calls if c[2] == "shell"]
    assert all(s.startswith(f"cd {phone} 2>/dev/null; ") for s in shells)
    assert any("edgedistill.bench.devices.remote verify" in s for s in shells)
    measure = next(s for s in shells if "edgedistill.bench.devices.remote measure" in s)
    assert f"PYTHONPATH={phone}/bundle.zip" in measure and sys.executable in measure
    assert any(c[2] == "pull" and c[3].endswith("/result.json") for c in calls)


def test_adb_runner_with_fake_adb_unknown_serial_is_skipped_not_passed(fake_adb, onnx, tmp_path):
    adb, _ = fake_adb
    device = {
        "kind": "adb",
        "serial": "NOPHONE",
        "adb": str(adb),
        "python": sys.executable,
        "workdir": str(tmp_path / "p"),
    }
    target = write_target(tmp_path, device=device, **FAST)
    report = bench([onnx["onnx-int8"]], target)
    (entry,) = report["artifacts"]
    assert (
        entry["status"] == "skipped" and "adb://NOPHONE" in entry["reason"] and "not found" in entry["reason"]
    )
    # the phone was never reached: nothing was judged, and the gate exits 4, not 0
    result = gate(report, target)
    assert result.exit_code == 4 and result.verdict == "NOT JUDGED" and result.count("passed") == 0
    assert gate(report, target, allow_skipped=True).exit_code == 0


def test_adb_runner_with_fake_adb_and_fake_llama_bench_python_free_path(
    fake_adb, tmp_path, tiny_bert_encoder
):
    pytest.importorskip("llama_cpp")  # GGUF export checks parity with llama.cpp here
    from edgedistill.export import ExportConfig, export

    adb, log = fake_adb
    export(
        tiny_bert_encoder,
        tmp_path / "enc",
        ExportConfig(formats=["gguf"], precisions=["q8_0"], parity_samples=4),
    )
    tool_log = tmp_path / "llama-bench-argv.jsonl"
    tool = _script(tmp_path / "bin" / "llama-bench" if (tmp_path / "bin").mkdir() is None else None,
                   FAKE_LLAMA_BENCH.replace("{python}", sys.executable).replace("{log}", str(tool_log)))  # fmt: skip
    phone = tmp_path / "phone"
    device = {
        "kind": "adb",
        "serial": SERIAL,
        "adb": str(adb),
        "workdir": str(phone),
        "native": {"llama-bench": str(tool)},
    }
    target = write_target(tmp_path, device=device, **FAST)
    report = bench([tmp_path / "enc" / "gguf-q8_0"], target)
    (entry,) = report["artifacts"]
    assert entry["status"] == "measured", entry.get("reason")
    (argv,) = _calls(tool_log)
    model = argv[argv.index("-m") + 1]
    assert model.startswith(f"{phone}/artifacts/") and model.endswith(".gguf")
    assert argv[argv.index("-p") + 1] == "16" and argv[argv.index("-n") + 1] == "8"
    assert (
        argv[argv.index("-t") + 1] == "1"
        and argv[argv.index("-r") + 1] == "30"
        and argv[-2:] == ["-o", "json"]
    )
    assert entry["lm"]["ttft_ms"]["p50_ms"] == pytest.approx(2.0, abs=0.01)
    assert entry["latency"]["p50_ms"] == pytest.approx(10.0, abs=0.01)
    assert entry["memory"]["peak_rss_mb"] > 25  # VmHWM polled by the sh loop on the "phone"
    shell = next(c[3] for c in _calls(log) if c[2] == "shell" and "VmHWM" in c[3])
    assert f"LD_LIBRARY_PATH={tmp_path}/bin/lib" in shell and "VmHWM" in shell
    assert report["device"]["python"] is None  # no Python on the phone was used


def test_device_examples_load_and_device_blocks_are_validated(tmp_path):
    from edgedistill.errors import ConfigError
    from edgedistill.targets import load_target

    root = Path(__file__).resolve().parents[1] / "examples" / "targets"
    assert load_target(root / "board-ssh.yaml").device.kind == "ssh"
    phone = load_target(root / "phone-adb.yaml").device
    assert phone.kind == "adb" and phone.native["llama-bench"].endswith("llama-bench")
    for bad, why in (
        ({"kind": "ssh"}, "needs host"),
        ({"kind": "adb"}, "needs serial"),
        ({"kind": "pager"}, "kind"),
    ):
        with pytest.raises(ConfigError, match=why):
            load_target(write_target(tmp_path, device=bad))
