"""NNCF's own console output (its stdout logger, its rich progress bars) goes to the log during a verb.

`edgedistill fit` screens OpenVINO int8 candidates with ``nncf.quantize``; its "Statistics
collection" bars and "INFO:nncf:..." lines reached the console. The export plugin first asks
whether nncf is installed (`importlib.util.find_spec`), and that look-up used to consume the
hook that quiets nncf once it is imported: the real import then ran unquieted.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from edgedistill.console import third_party_to_log
    from edgedistill.plugins import is_installed

    with third_party_to_log(Path(sys.argv[1])):
        assert is_installed("nncf")  # what an export plugin asks before it imports nncf
        import nncf
        from nncf.common.logging import nncf_logger
        from nncf.common.logging.track_progress import track

        nncf_logger.info("Compiling and loading torch extension: quantized_functions_cpu...")
        for _ in track(range(3), description="Statistics collection"):
            pass
    """
)


def test_nncf_logs_and_progress_bars_go_to_the_log_after_an_is_installed_check(tmp_path):
    pytest.importorskip("nncf")
    log = tmp_path / "out.log"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(log)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**__import__("os").environ, "COLUMNS": "120", "FORCE_COLOR": "0"},
    )
    assert proc.returncode == 0, proc.stderr
    console = proc.stdout + proc.stderr
    assert "Compiling and loading" not in console and "Statistics collection" not in console, console
    assert "Compiling and loading torch extension" in log.read_text()
