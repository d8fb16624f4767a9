"""benchmarks/lm_sst2_stages.py `write_seqkd_text`: the sequence-KD training text keeps each
sample's finish_reason, so distill ends only the responses the teacher stopped with an EOS target."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from edgedistill.compress.data import load_split
from edgedistill.compress.generate.store import SAMPLES_FILE
from edgedistill.data import DataConfig

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _stages(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # lm_sst2_stages imports its sibling `common`
    spec = importlib.util.spec_from_file_location(
        "lm_sst2_stages_under_test", BENCHMARKS / "lm_sst2_stages.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_response_cut_at_max_new_tokens_gets_no_eos(tmp_path, monkeypatch):
    from tiny_llama import train_bytelevel_bpe

    store = tmp_path / "store"
    store.mkdir()
    samples = [
        {"prompt": "the film was", "response": " good and kind", "finish_reason": "stop"},
        {"prompt": "the film was", "response": " long and then it", "finish_reason": "length"},
    ]
    (store / SAMPLES_FILE).write_text("".join(json.dumps(s) + "\n" for s in samples), encoding="utf-8")
    text = tmp_path / "train.jsonl"
    _stages(monkeypatch).write_seqkd_text(store, text)

    rows = [json.loads(line) for line in text.read_text(encoding="utf-8").splitlines()]
    assert [r["sentence"] for r in rows] == ["the film was good and kind", "the film was long and then it"]
    tok = train_bytelevel_bpe(tmp_path / "tok", vocab_size=300)
    # the data section lm_sst2's c_seqKD recipe uses: the text column, finish_reason by default
    cfg = DataConfig(text_column="sentence", label_column=None, max_length=48, cache_dir=str(tmp_path))
    data = load_split(str(text), cfg, tok, needs_labels=False, num_labels=None, causal_lm=True)
    assert [data[i]["labels"][-1] == tok.eos_token_id for i in range(len(data))] == [True, False]
