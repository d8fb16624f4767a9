"""A verb's console shows edgedistill's own lines; third-party output goes to a log (issue 25).

Python warnings, other libraries' loggers and native code writing to file descriptor 2 land in
the log beside the output; edgedistill's progress, messages and warnings stay on the console;
``--verbose`` shows everything on the console. Each case runs in a fresh interpreter, since
file descriptor 2 is what is being moved.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import logging, os, sys, warnings
    from pathlib import Path
    from edgedistill.console import third_party_to_log

    with third_party_to_log(Path(sys.argv[1]), verbose=sys.argv[2] == "1"):
        warnings.warn("a library deprecates something", FutureWarning)
        logging.getLogger("somelib").warning("somelib complains")
        os.write(2, b"native code prints to fd 2\\n")
        logging.getLogger("edgedistill.demo").warning("our own warning")
        print("our own progress line", file=sys.stderr)
        import torch  # attaches its own console handler while sys.stderr is the console: moved to the log

        logging.getLogger("torch.utils._pytree").warning("torch's own handler speaks")
        from tqdm import tqdm  # a library's own bar (transformers' GGUF loader has no switch for it)

        for _ in tqdm(range(3), desc="a library's tqdm bar"):
            pass
    os.write(2, b"after the verb, fd 2 is the terminal again\\n")
    """
)


def _run(tmp_path: Path, verbose: bool) -> tuple[str, str]:
    log = tmp_path / "out.log"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(log), "1" if verbose else "0"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stderr, log.read_text() if log.is_file() else ""


def test_third_party_output_goes_to_the_log_and_ours_stays_on_the_console(tmp_path):
    err, log = _run(tmp_path, verbose=False)
    assert "our own progress line" in err and "WARNING edgedistill.demo: our own warning" in err
    assert "after the verb, fd 2 is the terminal again" in err
    for noise in (
        "FutureWarning",
        "somelib complains",
        "native code prints",
        "torch's own handler",
        "tqdm bar",
    ):
        assert noise not in err, err
        assert noise in log, log
    assert "our own progress line" not in log


def test_verbose_shows_everything_on_the_console(tmp_path):
    err, log = _run(tmp_path, verbose=True)
    for line in (
        "FutureWarning",
        "somelib complains",
        "native code prints",
        "torch's own handler",
        "tqdm bar",
    ):
        assert line in err, err
    assert log == ""


def test_a_verb_on_a_tiny_model_keeps_library_warnings_off_the_console(tmp_path, tiny_bert_encoder):
    """`edgedistill export` through torch.onnx and onnxruntime: their warnings land in OUT/edgedistill.log."""
    out = tmp_path / "artifacts"
    env = {**os.environ, "PYTHONWARNINGS": "default"}  # every warning is shown once, as a user would see it
    cmd = [sys.executable, "-m", "edgedistill", "export", str(tiny_bert_encoder), "--format", "onnx"]
    cmd += ["--precision", "fp32,int8", "--parity-samples", "4", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "exported" in proc.stderr and "onnx-int8" in proc.stderr  # our summary stays
    third_party = [line for line in proc.stderr.splitlines() if "Warning" in line or "warnings.warn" in line]
    assert third_party == [], proc.stderr
    assert "_pytree" not in proc.stderr  # torch's own handler, re-created while torchao imports
    log = (out / "edgedistill.log").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifacts"]  # nothing beside the output
    assert "Warning" in log and "py.warnings" in log, log
