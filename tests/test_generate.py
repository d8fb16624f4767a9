"""`edgedistill generate`: teacher samples into a resumable, deduplicated store (tiny Llama teacher)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tiny_llama import save_tiny_decoder

from edgedistill.cli import main
from edgedistill.compress.generate import (
    DUPLICATES_FILE,
    META_FILE,
    SAMPLES_FILE,
    GenerateConfig,
    GenerateError,
    generate,
    read_prompts,
    read_store,
    sample_seed,
)
from edgedistill.config import load_config
from edgedistill.errors import ConfigError

PROMPTS = ["The quick brown", "Hello, world!", "She paid", "Prices rose by"]
COLUMNS = {
    "id",
    "prompt_id",
    "sample_index",
    "prompt",
    "response",
    "seed",
    "finish_reason",
    "prompt_tokens",
    "response_tokens",
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    return save_tiny_decoder(tmp_path_factory.mktemp("gen_teacher"), arch="llama", train_steps=15)


@pytest.fixture()
def prompts_txt(tmp_path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text(PROMPTS[0] + "\n\n" + "\n".join(PROMPTS[1:]) + "\n", encoding="utf-8")  # a blank line
    return path


def _cfg(teacher: Path, prompts: Path, **changes) -> GenerateConfig:
    top = {k: changes.pop(k) for k in ("batch_size", "output_format", "chat_template") if k in changes}
    sampling = {"max_new_tokens": 6, **changes}
    return GenerateConfig(teacher={"path": str(teacher)}, prompts=str(prompts), sampling=sampling, **top)


def _keys(records: list[dict]) -> list[tuple[int, int]]:
    return [(r["prompt_id"], r["sample_index"]) for r in records]


def _duplicates(out: Path) -> list[dict]:
    path = out / DUPLICATES_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_store_has_the_expected_columns_and_counts(teacher, prompts_txt, tmp_path):
    out = tmp_path / "out"
    cfg = _cfg(teacher, prompts_txt, num_samples=2, batch_size=3, output_format="parquet")
    report = generate(cfg, out, progress=False)

    records = read_store(out)
    duplicates = _duplicates(out)
    assert records and all(set(r) == COLUMNS for r in records)
    assert len(records) + len(duplicates) == 8 == report["counts"]["samples_done"]
    assert sorted(_keys(records) + _keys(duplicates)) == [(p, s) for p in range(4) for s in range(2)]
    for r in records:
        assert r["prompt"] == PROMPTS[r["prompt_id"]]
        assert r["seed"] == sample_seed(0, r["prompt_id"], r["sample_index"])
        assert r["finish_reason"] in ("stop", "length")
        assert 1 <= r["response_tokens"] <= 6 and r["prompt_tokens"] >= 2
        assert r["finish_reason"] == "stop" or r["response_tokens"] == 6

    meta = json.loads((out / META_FILE).read_text())
    assert meta["status"] == "complete" and meta["format_version"] == 1
    assert meta["config"]["version"] == 1 and meta["config"]["sampling"]["num_samples"] == 2
    assert meta["teacher"]["fingerprint"] and meta["teacher"]["class"] == "LlamaForCausalLM"
    assert meta["prompts"]["count"] == 4
    counts = meta["counts"]
    assert counts["records_stored"] == len(records) and counts["duplicates_skipped"] == len(duplicates)
    assert sum(counts["finish_reasons"].values()) == len(records)
    assert counts["response_tokens"] == sum(r["response_tokens"] for r in records)
    run = meta["runs"][-1]  # a folder teacher runs in torch; the run says so, and how fast
    assert run["engine"] == "torch" and meta["identity"]["engine"] == "torch" and run["threads"] >= 1
    assert run["response_tokens"] == counts["response_tokens"] and run["tokens_per_second"] > 0

    import pyarrow.parquet as pq

    table = pq.read_table(out / "samples.parquet")
    assert set(table.column_names) == COLUMNS
    assert table.to_pylist() == records


def test_interrupted_run_resumes_to_the_uninterrupted_result(teacher, prompts_txt, tmp_path):
    # 8 samples in batches of 3: the stop lands inside the second batch.
    cfg = _cfg(teacher, prompts_txt, num_samples=2, batch_size=3, temperature=1.5)
    full_report = generate(cfg, tmp_path / "full", progress=False)
    expected = read_store(tmp_path / "full")

    class Killed(Exception):
        pass

    seen = []

    def stop_after_five(record: dict, stored: bool) -> None:
        seen.append(record)
        if len(seen) == 5:
            raise Killed

    out = tmp_path / "resumed"
    with pytest.raises(Killed):
        generate(cfg, out, progress=False, on_record=stop_after_five)
    assert json.loads((out / META_FILE).read_text())["status"] == "running"
    # A kill in the middle of a write: the last record is only half on disk.
    samples = out / SAMPLES_FILE
    before = len(read_store(out))
    data = samples.read_bytes()
    last_line = data[:-1].rsplit(b"\n", 1)[-1]
    samples.write_bytes(data[: len(data) - len(last_line) // 2])
    assert len(read_store(out)) == before - 1

    report = generate(cfg, out, progress=False)
    resumed = read_store(out)
    assert resumed == expected
    assert len(set(_keys(resumed))) == len(resumed)
    assert _duplicates(out) == _duplicates(tmp_path / "full")
    assert report["counts"] == full_report["counts"]
    last_run = report["runs"][-1]
    assert last_run["torn_bytes_cut"] > 0
    assert last_run["already_done"] == 4 and last_run["generated"] == 4
    assert samples.read_bytes().endswith(b"\n")


def test_greedy_duplicates_are_stored_once(teacher, prompts_txt, tmp_path):
    out = tmp_path / "out"
    cfg = _cfg(teacher, prompts_txt, num_samples=2, do_sample=False, batch_size=8)
    report = generate(cfg, out, progress=False)

    records = read_store(out)
    assert _keys(records) == [(p, 0) for p in range(4)]  # the second greedy sample repeats the first
    duplicates = _duplicates(out)
    assert _keys(duplicates) == [(p, 1) for p in range(4)]
    assert [d["duplicate_of"] for d in duplicates] == [r["id"] for r in records]
    assert report["counts"]["duplicates_skipped"] == 4 and report["counts"]["records_stored"] == 4

    again = generate(cfg, out, progress=False)  # a finished store: nothing to do, nothing added
    assert again["runs"][-1]["generated"] == 0 and read_store(out) == records

    # top_k=1 sampling is greedy decoding: checks the per-row sampler against generate's own argmax.
    top1 = _cfg(teacher, prompts_txt, num_samples=1, top_k=1, temperature=0.7, batch_size=8)
    generate(top1, tmp_path / "top1", progress=False)
    assert [r["response"] for r in read_store(tmp_path / "top1")] == [r["response"] for r in records]


def test_bad_prompts_files_fail_with_the_file_and_the_fix(tmp_path, capsys):
    missing = tmp_path / "nope.txt"
    with pytest.raises(GenerateError, match="prompts file not found: .*nope.txt"):
        read_prompts(missing)

    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(GenerateError, match="empty.txt: no prompts"):
        read_prompts(empty)

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"prompt": \n{"text": "x"}\n{"prompt": ""}\n[1]\n', encoding="utf-8")
    with pytest.raises(GenerateError) as err:
        read_prompts(bad)
    message = str(err.value)
    assert "bad.jsonl: 4 bad line(s)" in message
    for expected in (
        "line 2: invalid JSON",
        "line 3: no 'prompt' field (fields: text)",
        "line 4:",
        "line 5:",
    ):
        assert expected in message
    assert "--prompt-column" in message

    odd = tmp_path / "prompts.docx"
    odd.write_text("x", encoding="utf-8")
    with pytest.raises(GenerateError, match=r"unsupported prompts file type '\.docx'.*\.txt"):
        read_prompts(odd)

    tsv = tmp_path / "prompts.tsv"
    tsv.write_text("question\tid\nwhat is it\t1\n", encoding="utf-8")
    with pytest.raises(GenerateError, match=r"(?s)column 'prompt' not found.*--prompt-column"):
        read_prompts(tsv)
    assert read_prompts(tsv, "question") == ["what is it"]

    # The CLI: exit code 2 and one readable line, before any teacher is loaded.
    code = main(
        [
            "generate",
            "--teacher",
            str(tmp_path / "no-teacher"),
            "--prompts",
            str(bad),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2
    assert "edgedistill generate: error:" in capsys.readouterr().err


def test_a_changed_config_or_teacher_refuses_to_mix(teacher, prompts_txt, tmp_path):
    out = tmp_path / "out"
    cfg = _cfg(teacher, prompts_txt, max_new_tokens=4, batch_size=4)
    generate(cfg, out, progress=False)
    stored = read_store(out)

    hotter = _cfg(teacher, prompts_txt, max_new_tokens=4, batch_size=4, temperature=0.5)
    with pytest.raises(GenerateError, match=r"sampling\.temperature: stored 1\.0, now 0\.5") as err:
        generate(hotter, out, progress=False)
    assert "--restart" in str(err.value) and "--force" in str(err.value)

    other_prompts = tmp_path / "other.txt"
    other_prompts.write_text("Wait... what happened here?!\n", encoding="utf-8")
    with pytest.raises(GenerateError, match="prompts: the prompts differ"):
        generate(_cfg(teacher, other_prompts, max_new_tokens=4), out, progress=False)

    other_teacher = save_tiny_decoder(tmp_path / "t2", seed=7, tokenizer_dir=teacher, train_steps=0)
    with pytest.raises(GenerateError, match="teacher: other weights or tokenizer"):
        generate(_cfg(other_teacher, prompts_txt, max_new_tokens=4, batch_size=4), out, progress=False)
    assert read_store(out) == stored  # nothing was written by the refused runs

    # batch size is not part of what is generated: a resume may change it
    generate(_cfg(teacher, prompts_txt, max_new_tokens=4, batch_size=2), out, progress=False)

    forced = generate(hotter, out, force=True, progress=False)
    assert (
        forced["mixed_settings"]
        and forced["settings_history"][0]["identity"]["sampling"]["temperature"] == 1.0
    )

    restarted = generate(hotter, out, restart=True, progress=False)
    assert len(restarted["runs"]) == 1 and not restarted["mixed_settings"]
    assert restarted["config"]["sampling"]["temperature"] == 0.5


def test_chat_template_is_applied_when_asked(teacher, prompts_txt, tmp_path):
    with pytest.raises(GenerateError, match="has no chat template"):
        generate(_cfg(teacher, prompts_txt, chat_template=True), tmp_path / "a", progress=False)

    templated = tmp_path / "templated"
    shutil.copytree(teacher, templated)
    config_path = templated / "tokenizer_config.json"
    tok_config = json.loads(config_path.read_text())
    tok_config["chat_template"] = (
        "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}"
    )
    config_path.write_text(json.dumps(tok_config))
    cfg = _cfg(templated, prompts_txt, chat_template=True, max_new_tokens=3, do_sample=False)
    generate(cfg, tmp_path / "b", progress=False)
    records = read_store(tmp_path / "b")
    assert records[0]["prompt"] == "<s>user: The quick brown\nassistant:"
    assert records[0]["source_prompt"] == "The quick brown"


def test_cli_generate_and_config_validation(teacher, prompts_txt, tmp_path):
    out = tmp_path / "cli"
    args = ["generate", "--teacher", str(teacher), "--prompts", str(prompts_txt), "--out", str(out)]
    assert main([*args, "--greedy", "--max-new-tokens", "3", "--set", "batch_size=2", "--quiet"]) == 0
    meta = json.loads((out / META_FILE).read_text())
    assert meta["config"]["sampling"]["do_sample"] is False and meta["config"]["batch_size"] == 2
    assert len(read_store(out)) == 4

    with pytest.raises(ConfigError) as err:
        load_config(
            GenerateConfig, None, {"teacher.path": "t", "prompts": "p.txt", "sampling.top_p": 1.5, "oops": 1}
        )
    assert "sampling.top_p" in str(err.value) and "oops: unknown key" in str(err.value)
    with pytest.raises(ConfigError, match="system_prompt needs chat_template"):
        load_config(
            GenerateConfig, None, {"teacher.path": "t", "prompts": "p.txt", "system_prompt": "be nice"}
        )
    assert len({sample_seed(0, p, s) for p in range(50) for s in range(4)}) == 200
    assert sample_seed(3, 1, 2) == sample_seed(3, 1, 2) != sample_seed(4, 1, 2)


def test_cli_killed_mid_run_resumes_to_the_uninterrupted_result(teacher, tmp_path):
    import os
    import signal
    import sys

    from store_helpers import start_and_stop
    from tiny_llama import SAMPLE_SENTENCES

    prompts = tmp_path / "many.txt"
    prompts.write_text(
        "\n".join(s.split(",")[0][:20] for s in SAMPLE_SENTENCES[:12]) + "\n", encoding="utf-8"
    )
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "edgedistill", "generate", "--teacher", str(teacher)]
    command += ["--prompts", str(prompts), "--out", str(out), "--max-new-tokens", "32", "--batch-size", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    killed_mid_run, _ = start_and_stop([*command, "--quiet"], env, out / SAMPLES_FILE, 3, signal.SIGKILL)
    landed = len(read_store(out))
    print(f"killed mid-run: {killed_mid_run}, records landed: {landed}")

    cfg = _cfg(teacher, prompts, max_new_tokens=32, batch_size=1)
    report = generate(cfg, out, progress=False)
    generate(cfg, tmp_path / "uninterrupted", progress=False)
    assert read_store(out) == read_store(tmp_path / "uninterrupted")
    assert report["runs"][-1]["already_done"] == landed
    if killed_mid_run:
        assert 3 <= landed < 12


def test_a_damaged_meta_or_samples_without_one_are_refused(teacher, prompts_txt, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / META_FILE).write_text("[1, 2", encoding="utf-8")
    with pytest.raises(GenerateError, match=r"generate\.json: not valid JSON.*--restart"):
        generate(_cfg(teacher, prompts_txt), out, progress=False)
    (out / META_FILE).unlink()
    (out / SAMPLES_FILE).write_text("", encoding="utf-8")
    with pytest.raises(GenerateError, match=r"samples\.jsonl but no generate\.json.*--restart"):
        generate(_cfg(teacher, prompts_txt), out, progress=False)
