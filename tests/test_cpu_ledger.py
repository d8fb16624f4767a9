"""The CPU ledger of a resumable run: what one uninterrupted run costs, counted across kills."""

from __future__ import annotations

import json

from edgedistill.cpu_ledger import LEDGER, CpuLedger, total


def _session(setup, train, finished=False):
    return {"setup_cpu_s": setup, "train_cpu_s_to_last_save": train, "finished": finished}


def test_total_counts_one_setup_and_each_sessions_training_to_its_last_save():
    killed = _session(10.0, 100.0)
    killed_before_training = {"setup_cpu_s": None, "train_cpu_s_to_last_save": 0.0, "finished": False}
    finishing = _session(12.0, 50.0, finished=True)
    assert total([killed, killed_before_training, finishing]) == {
        "cpu_s": 160.0,
        "sessions": 2,
        "resumed": True,
        "complete": True,
    }
    assert total([_session(5.0, 20.0, finished=True)]) == {
        "cpu_s": 25.0,
        "sessions": 1,
        "resumed": False,
        "complete": True,
    }
    # the same command run again on a finished run adds nothing to its cost
    again = total([_session(5.0, 20.0, finished=True), _session(6.0, 1.0, finished=True)])
    assert again["cpu_s"] == 25.0 and again["sessions"] == 1
    assert total([])["cpu_s"] is None


def test_ledger_keeps_sessions_across_runs_and_a_fresh_run_drops_them(tmp_path):
    first = CpuLedger(tmp_path, fresh=True)
    first.training_starts()
    sum(i * i for i in range(200_000))  # some CPU
    first.saved()
    on_disk = json.loads((tmp_path / LEDGER).read_text())["sessions"]
    assert len(on_disk) == 1 and on_disk[0]["train_cpu_s_to_last_save"] >= 0 and not on_disk[0]["finished"]
    # killed here; the next session resumes and finishes
    second = CpuLedger(tmp_path, fresh=False)
    second.training_starts()
    result = second.finished()
    assert result["sessions"] == 2 and result["resumed"] and result["cpu_s"] >= 0
    assert len(json.loads((tmp_path / LEDGER).read_text())["sessions"]) == 2
    # --overwrite / a new run in the folder starts the books again
    third = CpuLedger(tmp_path, fresh=True)
    third.training_starts()
    assert third.finished()["sessions"] == 1


def test_a_rank_other_than_zero_writes_nothing(tmp_path):
    ledger = CpuLedger(tmp_path, fresh=True, write=False)
    ledger.training_starts()
    ledger.finished()
    assert not (tmp_path / LEDGER).exists()


def test_a_torn_or_foreign_ledger_file_starts_empty_books(tmp_path):
    (tmp_path / LEDGER).write_text("{not json")
    assert len(CpuLedger(tmp_path, fresh=False).sessions) == 1
    (tmp_path / LEDGER).write_text(json.dumps({"sessions": "nope"}))
    assert len(CpuLedger(tmp_path, fresh=False).sessions) == 1


def test_a_run_resumed_from_before_its_folder_had_a_ledger_is_not_complete(tmp_path):
    ledger = CpuLedger(tmp_path, fresh=False)  # resumed, and no ledger on disk
    ledger.training_starts()
    assert ledger.finished()["complete"] is False


def test_a_session_killed_in_its_setup_is_on_the_books(tmp_path):
    CpuLedger(tmp_path, fresh=True)  # killed before its training started
    resumed = CpuLedger(tmp_path, fresh=False)
    resumed.training_starts()
    assert resumed.finished() | {"cpu_s": 0} == {
        "cpu_s": 0,
        "sessions": 1,
        "resumed": False,
        "complete": True,
    }
