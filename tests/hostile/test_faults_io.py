"""`edgedistill.io` under real faults: a process SIGKILLed inside an atomic write or between
`atomic_dir`'s two renames, a real full disk (tmpfs), a file-size limit (RLIMIT_FSIZE), and
SIGTERM turned into an interruption by `edgedistill.signals`."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _faults_helpers import ENV, fill, leftovers, small_disk

from edgedistill.errors import DiskFullError, EdgeDistillError
from edgedistill.io import atomic_dir, atomic_write_json, atomic_write_text, recover_dir


def _python(code: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
        **kw,
    )


def _good_dir(target: Path) -> None:
    with atomic_dir(target) as tmp:
        (tmp / "weights.bin").write_bytes(b"good" * 100)
        (tmp / "manifest.json").write_text('{"ok": true}')


def test_kill9_inside_atomic_dir_keeps_the_previous_folder_and_next_write_sweeps(tmp_path):
    target = tmp_path / "artifact"
    _good_dir(target)
    proc = _python(
        f"""
        import os, signal
        from edgedistill.io import atomic_dir
        with atomic_dir({str(target)!r}) as tmp:
            (tmp / "weights.bin").write_bytes(b"half")
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    assert proc.returncode == -signal.SIGKILL
    assert (target / "weights.bin").read_bytes() == b"good" * 100
    assert len(leftovers(tmp_path)) == 1  # the dead process's temporary folder
    _good_dir(target)  # the next write to the same target removes it
    assert leftovers(tmp_path) == []


def test_kill9_between_the_renames_puts_the_previous_folder_back(tmp_path):
    target = tmp_path / "student"
    _good_dir(target)
    proc = _python(
        f"""
        import os, signal
        import edgedistill.io as io
        real = os.replace
        calls = []
        def replace(a, b):
            real(a, b)
            calls.append(b)
            if len(calls) == 1:  # the old folder is aside, the new one not yet in place
                os.kill(os.getpid(), signal.SIGKILL)
        io.os.replace = replace
        with io.atomic_dir({str(target)!r}) as tmp:
            (tmp / "weights.bin").write_bytes(b"new")
        """
    )
    assert proc.returncode == -signal.SIGKILL
    assert not target.exists() and (tmp_path / ".student.old").is_dir()  # what the landed code left
    assert recover_dir(target) is True
    assert (target / "weights.bin").read_bytes() == b"good" * 100
    with atomic_dir(target) as tmp:  # and atomic_dir itself recovers before it writes
        (tmp / "weights.bin").write_bytes(b"newer")
    assert leftovers(tmp_path) == []


def test_kill9_inside_atomic_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "report.json"
    atomic_write_json(target, {"good": 1})
    proc = _python(
        f"""
        import os, signal
        from edgedistill.io import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            tmp.write_text('{{"half')
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    assert proc.returncode == -signal.SIGKILL
    assert target.read_text() == '{\n  "good": 1\n}\n'
    atomic_write_json(target, {"good": 2})
    assert leftovers(tmp_path) == []


def test_full_disk_is_a_typed_error_naming_path_and_free_space(tmp_path):
    with small_disk(tmp_path / "disk", "1M") as disk:
        target = disk / "report.json"
        atomic_write_json(target, {"good": 1})
        with pytest.raises(DiskFullError) as err:
            atomic_write_text(target, "x" * (2 << 20))
        message = str(err.value)
        assert str(target) in message and "no space left" in message and "MiB free" in message
        assert isinstance(err.value, EdgeDistillError) and err.value.free_bytes is not None
        assert target.read_text() == '{\n  "good": 1\n}\n'
        assert leftovers(disk) == []


def test_full_disk_inside_atomic_dir_keeps_the_previous_folder(tmp_path):
    with small_disk(tmp_path / "disk", "2M") as disk:
        target = disk / "artifact"
        _good_dir(target)
        fill(disk, 64 << 10)
        with pytest.raises(DiskFullError, match=str(target)):
            with atomic_dir(target) as tmp:
                (tmp / "weights.bin").write_bytes(b"\1" * (1 << 20))
        assert (target / "weights.bin").read_bytes() == b"good" * 100
        assert leftovers(disk) == []


def test_file_size_limit_is_a_typed_error(tmp_path):
    """RLIMIT_FSIZE (the fallback where tmpfs cannot be mounted): EFBIG once SIGXFSZ is ignored."""
    target = tmp_path / "big.txt"

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))

    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from edgedistill.io import atomic_write_text; atomic_write_text({str(target)!r}, 'x' * (1 << 20))",
        ],
        env=ENV,
        capture_output=True,
        text=True,
        preexec_fn=limit,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "DiskFullError" in proc.stderr and "file-size limit" in proc.stderr and str(target) in proc.stderr
    assert not target.exists() and leftovers(tmp_path) == []


def test_sigterm_becomes_an_interruption_only_during_a_verb(tmp_path):
    proc = _python(
        """
        import os, signal, sys
        from edgedistill.signals import Terminated, interruptible

        @interruptible
        def verb():
            os.kill(os.getpid(), signal.SIGTERM)
            return "not reached"

        try:
            verb()
        except KeyboardInterrupt as exc:
            print("interrupted", isinstance(exc, Terminated))
        print("restored", signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)
        handler = lambda s, f: print("own handler kept")
        signal.signal(signal.SIGTERM, handler)
        interruptible(lambda: os.kill(os.getpid(), signal.SIGTERM))()
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:3] == ["interrupted True", "restored True", "own handler kept"]


def test_a_process_forked_during_a_verb_dies_of_sigterm(tmp_path):
    """The shape of OpenVINO telemetry's sender: a child forked off a worker thread during a verb,
    stopped with ``terminate()``. It must die of SIGTERM (exit -15), not inherit the verb's handler
    (which would turn SIGTERM into an exception it may never get to raise: a hang at exit)."""
    proc = _python(
        """
        import multiprocessing, signal, threading, time
        from edgedistill.signals import interruptible

        def child(queue):
            queue.put(signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)
            time.sleep(60)

        def start(result):
            ctx = multiprocessing.get_context("fork")
            queue = ctx.Queue()
            p = ctx.Process(target=child, args=(queue,), daemon=True)
            p.start()
            result["default"] = queue.get(timeout=30)
            p.terminate()
            p.join(10)
            result["exitcode"] = p.exitcode

        @interruptible
        def verb():
            result = {}
            worker = threading.Thread(target=start, args=(result,))
            worker.start()
            worker.join()
            return result

        result = verb()
        print(result["default"], result["exitcode"])
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", str(-signal.SIGTERM)], proc.stdout


@pytest.mark.parametrize("writer", ["safetensors", "torch.save"])
def test_full_disk_inside_a_library_writer_is_recognised(writer, tmp_path):
    """Trainer checkpoints are written by safetensors (SafetensorError "... os error 28") and
    torch.save (RuntimeError "basic_ios::clear: iostream error", measured): both become DiskFullError."""
    import torch

    from edgedistill.io import disk_full_as_error

    state = {"w": torch.zeros(1 << 19)}  # 2 MiB
    with small_disk(tmp_path / "disk", "1M") as disk:
        with pytest.raises(DiskFullError, match="MiB free") as err:
            with disk_full_as_error(disk / "checkpoint-1"):
                if writer == "safetensors":
                    from safetensors.torch import save_file

                    save_file(state, str(disk / "model.safetensors"))
                else:
                    torch.save(state, disk / "optimizer.pt")
        assert str(disk / "checkpoint-1") in str(err.value)
