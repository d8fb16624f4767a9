"""Data loading: every source format, bad-row accounting, --strict, the tokenization cache, padding."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from conftest import make_sentences, sst2_dir, write_tsv
from edgedistill.compress import data as data_mod
from edgedistill.compress.config import DataConfig
from edgedistill.compress.data import (
    BadRow,
    DataReport,
    Example,
    PadCollator,
    TokenizedDataset,
    load_split,
    read_examples,
)
from edgedistill.errors import DataError

# No '"' or '\\' here: conftest.write_tsv escapes them with a backslash, which SST-2-style TSVs do not use.
ROWS = [("a wonderful and moving film", 1), ("a dull , tedious mess", 0), ("funny , warm and smart", 1)]


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Never touch ~/.cache: configs that leave cache_dir unset fall back to this env folder."""
    monkeypatch.setenv("EDGEDISTILL_CACHE", str(tmp_path / "env-cache"))


def cfg_for(tmp_path: Path, **overrides) -> DataConfig:
    return DataConfig(cache_dir=str(tmp_path / "cache"), **overrides)


def read(path, cfg, *, needs_labels=True, num_labels=2, **kwargs):
    return read_examples(str(path), cfg, needs_labels=needs_labels, num_labels=num_labels, **kwargs)


def write_bytes_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


# --------------------------------------------------------------------------- formats


def _write_csv(path: Path) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["sentence", "label"])
        writer.writerows(ROWS)
    return path


def _write_jsonl(path: Path) -> Path:
    path.write_text(
        "".join(json.dumps({"sentence": t, "label": y}) + "\n" for t, y in ROWS), encoding="utf-8"
    )
    return path


def _write_json_array(path: Path) -> Path:
    path.write_text(json.dumps([{"sentence": t, "label": y} for t, y in ROWS]), encoding="utf-8")
    return path


def _write_parquet(path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {"sentence": [t for t, _ in ROWS], "label": [y for _, y in ROWS], "extra": [0.5] * len(ROWS)}
    )
    pq.write_table(table, path)
    return path


def _write_saved_dataset(path: Path) -> Path:
    import datasets

    datasets.Dataset.from_dict(
        {"sentence": [t for t, _ in ROWS], "label": [y for _, y in ROWS]}
    ).save_to_disk(str(path))
    return path


WRITERS = {
    "data.tsv": lambda p: write_tsv(p, ROWS),
    "data.csv": _write_csv,
    "data.jsonl": _write_jsonl,
    "data.json": _write_json_array,
    "data.parquet": _write_parquet,
    "saved_dataset": _write_saved_dataset,
}


@pytest.mark.parametrize("name", list(WRITERS))
def test_each_format_round_trips(tmp_path, name):
    path = WRITERS[name](tmp_path / name)
    examples, report = read(path, cfg_for(tmp_path))
    assert examples == [Example(t, None, y) for t, y in ROWS]
    assert (report.rows_read, report.rows_kept, report.bad_rows) == (3, 3, {})
    assert report.source == str(path)


def test_json_lines_with_json_suffix(tmp_path):
    path = _write_jsonl(tmp_path / "data.json")
    examples, _ = read(path, cfg_for(tmp_path))
    assert [ex.text for ex in examples] == [t for t, _ in ROWS]


def test_csv_quoted_fields_keep_commas_and_newlines(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text('sentence,label\n"one, two",1\n"multi\nline",0\nplain,1\n', encoding="utf-8")
    examples, _ = read(path, cfg_for(tmp_path))
    assert [ex.text for ex in examples] == ["one, two", "multi\nline", "plain"]


def test_tsv_keeps_quotes_and_backslashes_literal(tmp_path):
    lines = [b"label\tsentence", b'1\t"quoted" start', b"0\tit 's \"fine", b"1\tfunny\\/gritty"]
    examples, _ = read(write_bytes_lines(tmp_path / "q.tsv", lines), cfg_for(tmp_path))
    assert [ex.text for ex in examples] == ['"quoted" start', "it 's \"fine", "funny\\/gritty"]
    assert [ex.label for ex in examples] == [1, 0, 1]


def test_datasetdict_folder_needs_a_split(tmp_path):
    import datasets

    folder = tmp_path / "dd"
    rows = {"sentence": [t for t, _ in ROWS], "label": [y for _, y in ROWS]}
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict(rows), "validation": datasets.Dataset.from_dict(rows)}
    ).save_to_disk(str(folder))
    with pytest.raises(DataError, match=r"several splits \(train, validation\).*@SPLIT"):
        read(folder, cfg_for(tmp_path))
    with pytest.raises(DataError, match="no split 'test'; available splits: train, validation"):
        read(f"{folder}@test", cfg_for(tmp_path))
    examples, _ = read(f"{folder}@validation", cfg_for(tmp_path))
    assert len(examples) == 3


def test_hub_id_is_parsed_and_loaded(tmp_path, monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return datasets.Dataset.from_dict({"sentence": ["good film"], "label": [1]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    examples, report = read("nyu-mll/glue:sst2@validation", cfg_for(tmp_path))
    assert calls == [("nyu-mll/glue", "sst2", "validation")]
    assert examples == [Example("good film", None, 1)]
    assert report.source == "nyu-mll/glue:sst2@validation"


def test_hub_failure_says_to_pass_a_local_file(tmp_path, monkeypatch):
    import datasets

    def failing_load_dataset(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", failing_load_dataset)
    with pytest.raises(DataError, match=r"could not load hub dataset 'someone/sst2'.*offline.*local"):
        read("someone/sst2", cfg_for(tmp_path))


@pytest.mark.parametrize("missing", ["missing.tsv", "nowhere/train.csv", "{tmp}/train.tsv", "{tmp}/sub"])
def test_missing_local_file_is_not_a_hub_attempt(tmp_path, monkeypatch, missing):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("must not try the hub"))
    source = missing.format(tmp=tmp_path)
    with pytest.raises(DataError, match=f"file not found: {source}"):
        read(source, cfg_for(tmp_path))


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("sentence\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"unsupported file type '\.txt'"):
        read(path, cfg_for(tmp_path))


# --------------------------------------------------------------------------- columns and bad rows


def test_missing_columns_are_named_with_recipe_keys_and_existing_columns(tmp_path):
    path = write_bytes_lines(tmp_path / "d.tsv", [b"text\tgold", b"nice\t1"])
    with pytest.raises(DataError) as err:
        read(path, cfg_for(tmp_path))
    message = str(err.value)
    assert str(path) in message
    assert "column 'sentence' not found (set data.text_column)" in message
    assert "column 'label' not found (set data.label_column)" in message
    assert "columns: text, gold" in message


def test_missing_column_in_jsonl(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "nice", "label": 1}\n', encoding="utf-8")
    with pytest.raises(
        DataError, match=r"'sentence' not found \(set data.text_column\).*columns: text, label"
    ):
        read(path, cfg_for(tmp_path))


def test_label_column_not_needed(tmp_path):
    path = write_bytes_lines(tmp_path / "d.tsv", [b"sentence", b"only text here"])
    examples, _ = read(path, cfg_for(tmp_path), needs_labels=False, num_labels=None)
    assert examples == [Example("only text here", None, None)]


BAD_TSV = [
    b"sentence\tlabel",  # line 1
    b"good one\t1",  # line 2
    b"   \t0",  # line 3: empty text
    b"too big\t7",  # line 4: out of range
    b"not a number\tpos",  # line 5
    b"no label\t",  # line 6
    b"bad \xff bytes\t1",  # line 7
    b"three\tfields\t1",  # line 8
    b"unlabelled\t-1",  # line 9: out of range
    b"also good\t0",  # line 10
]


def test_bad_rows_are_counted_by_reason_with_line_numbers(tmp_path):
    path = write_bytes_lines(tmp_path / "bad.tsv", BAD_TSV)
    examples, report = read(path, cfg_for(tmp_path))
    assert [ex.text for ex in examples] == ["good one", "also good"]
    assert report.rows_read == 9 and report.rows_kept == 2
    assert report.bad_rows == {
        "empty text": 1,
        "label out of range": 2,
        "label not an integer": 1,
        "missing label": 1,
        "undecodable": 1,
        "malformed row": 1,
    }
    assert [(bad.row, bad.reason) for bad in report.examples] == [
        (3, "empty text"),
        (4, "label out of range"),
        (5, "label not an integer"),
        (6, "missing label"),
        (7, "undecodable"),
        (8, "malformed row"),
        (9, "label out of range"),
    ]
    assert all(bad.file == str(path) for bad in report.examples)
    assert report.summary() == (
        f"{path}: 9 rows, 2 kept, 7 skipped (empty text: 1, label not an integer: 1, label out of range: 2, "
        "malformed row: 1, missing label: 1, undecodable: 1)"
    )
    as_dict = report.to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert DataReport.from_dict(as_dict) == report


def test_range_is_only_checked_when_num_labels_is_known(tmp_path):
    path = write_bytes_lines(tmp_path / "r.tsv", [b"sentence\tlabel", b"a\t7", b"b\t1.0"])
    examples, report = read(path, cfg_for(tmp_path), num_labels=None)
    assert [ex.label for ex in examples] == [7]
    assert report.bad_rows == {"label not an integer": 1}


def test_bad_rows_in_csv_and_jsonl_have_their_line_numbers(tmp_path):
    csv_path = tmp_path / "bad.csv"
    csv_path.write_bytes(b'sentence,label\n"multi\nline",1\n"",0\nbad \xfe,1\nok,1\n')
    _, report = read(csv_path, cfg_for(tmp_path))
    assert [(b.row, b.reason) for b in report.examples] == [(4, "empty text"), (5, "undecodable")]

    jsonl_path = tmp_path / "bad.jsonl"
    jsonl_path.write_bytes(b'{"sentence": "ok", "label": 1}\n{broken\n\n{"sentence": "x"}\n[1]\n')
    _, report = read(jsonl_path, cfg_for(tmp_path))
    assert [(b.row, b.reason) for b in report.examples] == [
        (2, "malformed row"),
        (4, "missing label"),
        (5, "malformed row"),
    ]


def test_only_the_first_twenty_bad_rows_are_kept_as_examples(tmp_path):
    lines = [b"sentence\tlabel", b"good\t1"] + [b"\t1"] * 30
    _, report = read(write_bytes_lines(tmp_path / "many.tsv", lines), cfg_for(tmp_path))
    assert report.bad_rows == {"empty text": 30}
    assert len(report.examples) == 20
    assert report.examples[0] == BadRow(str(tmp_path / "many.tsv"), 3, "empty text", "text is blank")


def test_strict_raises_at_the_first_bad_row(tmp_path):
    path = write_bytes_lines(tmp_path / "bad.tsv", BAD_TSV)
    with pytest.raises(DataError) as err:
        read(path, cfg_for(tmp_path, strict=True))
    message = str(err.value)
    assert f"{path}, row 3: empty text" in message
    assert "drop --strict" in message


def test_no_kept_rows_is_an_error(tmp_path):
    path = write_bytes_lines(tmp_path / "all_bad.tsv", [b"sentence\tlabel", b"x\t5", b"y\t9"])
    with pytest.raises(DataError, match=r"no usable rows.*label out of range: 2.*row 2"):
        read(path, cfg_for(tmp_path))
    header_only = write_bytes_lines(tmp_path / "header.tsv", [b"sentence\tlabel"])
    with pytest.raises(DataError, match="no data rows"):
        read(header_only, cfg_for(tmp_path))


def test_max_samples_keeps_the_first_kept_rows(tmp_path):
    path = write_bytes_lines(tmp_path / "m.tsv", [b"sentence\tlabel", b"\t1", b"a\t1", b"b\t0", b"c\t1"])
    examples, report = read(path, cfg_for(tmp_path), max_samples=2)
    assert [ex.text for ex in examples] == ["a", "b"]
    assert (report.rows_read, report.rows_kept, report.stopped_at_max_samples) == (3, 2, True)
    assert "max_samples" in report.summary()


# --------------------------------------------------------------------------- tokenization and cache


def test_load_split_items(tmp_path, tokenizer, tiny_data):
    cfg = cfg_for(tmp_path, max_length=8)
    dataset = load_split(str(tiny_data["eval"]), cfg, tokenizer, needs_labels=True, num_labels=2)
    assert isinstance(dataset, TokenizedDataset)
    assert len(dataset) == len(dataset.examples) == 64
    item = dataset[5]
    assert set(item) == {"input_ids", "attention_mask", "token_type_ids", "labels", "example_index"}
    assert item["example_index"] == 5
    assert item["labels"] == dataset.examples[5].label
    expected = tokenizer(dataset.examples[5].text, truncation=True, max_length=8)["input_ids"]
    assert item["input_ids"] == expected
    assert all(len(dataset[i]["input_ids"]) <= 8 for i in range(len(dataset)))
    assert item["attention_mask"] == [1] * len(item["input_ids"])
    assert dataset[-1]["example_index"] == 63
    with pytest.raises(IndexError):
        dataset[64]


def test_unlabelled_items_have_no_labels(tmp_path, tokenizer, tiny_data):
    dataset = load_split(
        str(tiny_data["eval"]), cfg_for(tmp_path), tokenizer, needs_labels=False, num_labels=None
    )
    assert "labels" not in dataset[0]
    assert dataset.examples[0].label is None


def test_cache_hit_then_miss_on_changed_file(tmp_path, tokenizer):
    path = write_tsv(tmp_path / "train.tsv", make_sentences(40, seed=5))
    cfg = cfg_for(tmp_path)
    first = load_split(str(path), cfg, tokenizer, needs_labels=True, num_labels=2)
    second = load_split(str(path), cfg, tokenizer, needs_labels=True, num_labels=2)
    assert (first.from_cache, second.from_cache) == (False, True)
    assert second.cache_path == first.cache_path
    assert first.cache_path.parent == tmp_path / "cache" / "tokenized"
    assert [second[i] for i in range(len(second))] == [first[i] for i in range(len(first))]
    assert second.examples == first.examples and second.report == first.report
    # Plain JSON and .npy only: nothing in the cache is unpickled.
    assert {p.suffix for p in first.cache_path.iterdir()} == {".json", ".npy"}

    # Any option that changes the output misses.
    assert not load_split(str(path), cfg, tokenizer, needs_labels=True, num_labels=3).from_cache
    assert not load_split(
        str(path), cfg_for(tmp_path, max_length=6), tokenizer, needs_labels=True, num_labels=2
    ).from_cache
    assert not load_split(
        str(path), cfg, tokenizer, needs_labels=True, num_labels=2, max_samples=5
    ).from_cache

    write_tsv(path, make_sentences(40, seed=6))
    changed = load_split(str(path), cfg, tokenizer, needs_labels=True, num_labels=2)
    assert not changed.from_cache
    assert changed.cache_path != first.cache_path


def test_cache_defaults_to_the_env_folder_and_survives_a_corrupt_entry(tmp_path, tokenizer):
    path = write_tsv(tmp_path / "train.tsv", make_sentences(10, seed=7))
    cfg = DataConfig()
    first = load_split(str(path), cfg, tokenizer, needs_labels=True, num_labels=2)
    assert first.cache_path.parent == tmp_path / "env-cache" / "tokenized"
    (first.cache_path / "examples.json").write_text("{not json", encoding="utf-8")
    again = load_split(str(path), cfg, tokenizer, needs_labels=True, num_labels=2)
    assert not again.from_cache and len(again) == 10
    assert load_split(str(path), cfg, tokenizer, needs_labels=True, num_labels=2).from_cache


def test_tokenizer_fingerprint_is_stable_across_calls(tokenizer):
    before = data_mod.tokenizer_fingerprint(tokenizer)
    tokenizer(["some text", "more"], truncation=True, max_length=4)
    assert data_mod.tokenizer_fingerprint(tokenizer) == before


def _pairs_jsonl(path: Path) -> Path:
    rows = [
        {"premise": "a wonderful and moving film", "hypothesis": "the acting is superb", "label": 1},
        {"premise": "a dull mess", "hypothesis": "the worst movie of the year , honestly", "label": 0},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_joint_pair_mode_encodes_one_sequence(tmp_path, tokenizer):
    cfg = cfg_for(tmp_path, text_column="premise", text_pair_column="hypothesis")
    dataset = load_split(
        str(_pairs_jsonl(tmp_path / "p.jsonl")), cfg, tokenizer, needs_labels=True, num_labels=2
    )
    item = dataset[0]
    assert "pair_input_ids" not in item
    assert item["input_ids"] == tokenizer("a wonderful and moving film", "the acting is superb")["input_ids"]
    assert set(item["token_type_ids"]) == {0, 1}
    assert dataset.examples[0].text_pair == "the acting is superb"


def test_separate_pair_mode_encodes_two_sequences(tmp_path, tokenizer):
    cfg = cfg_for(tmp_path, text_column="premise", text_pair_column="hypothesis")
    source = str(_pairs_jsonl(tmp_path / "p.jsonl"))
    dataset = load_split(source, cfg, tokenizer, needs_labels=True, num_labels=2, pair_mode="separate")
    item = dataset[1]
    assert set(item) == {
        "input_ids",
        "attention_mask",
        "token_type_ids",
        "pair_input_ids",
        "pair_attention_mask",
        "pair_token_type_ids",
        "labels",
        "example_index",
    }
    assert item["input_ids"] == tokenizer("a dull mess")["input_ids"]
    assert item["pair_input_ids"] == tokenizer("the worst movie of the year , honestly")["input_ids"]
    # Joint and separate encodings are cached apart.
    joint = load_split(source, cfg, tokenizer, needs_labels=True, num_labels=2, pair_mode="joint")
    assert not joint.from_cache

    batch = PadCollator(tokenizer)([dataset[0], dataset[1]])
    assert (
        batch["pair_input_ids"].shape
        == batch["pair_attention_mask"].shape
        == batch["pair_token_type_ids"].shape
    )
    assert batch["pair_input_ids"].shape[1] == max(len(dataset[i]["pair_input_ids"]) for i in range(2))


def test_pair_mode_is_ignored_without_a_pair_column(tmp_path, tokenizer, tiny_data):
    dataset = load_split(
        str(tiny_data["eval"]),
        cfg_for(tmp_path),
        tokenizer,
        needs_labels=True,
        num_labels=2,
        pair_mode="separate",
    )
    assert "pair_input_ids" not in dataset[0]


# --------------------------------------------------------------------------- batching


def test_pad_collator_pads_to_the_longest_row(tokenizer):
    items = [
        {
            "input_ids": [2, 10, 3],
            "attention_mask": [1, 1, 1],
            "token_type_ids": [0, 0, 0],
            "labels": 1,
            "example_index": 4,
        },
        {
            "input_ids": [2, 11, 12, 13, 3],
            "attention_mask": [1] * 5,
            "token_type_ids": [0] * 5,
            "labels": 0,
            "example_index": 9,
        },
    ]
    batch = PadCollator(tokenizer)(items)
    pad = tokenizer.pad_token_id
    assert all(t.dtype == torch.int64 for t in batch.values())
    assert batch["input_ids"].tolist() == [[2, 10, 3, pad, pad], [2, 11, 12, 13, 3]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1] * 5]
    assert batch["token_type_ids"].tolist() == [[0] * 5, [0] * 5]
    assert batch["labels"].tolist() == [1, 0]
    assert batch["example_index"].tolist() == [4, 9]


def test_collator_with_a_dataloader(tmp_path, tokenizer, tiny_data):
    dataset = load_split(
        str(tiny_data["eval"]), cfg_for(tmp_path), tokenizer, needs_labels=True, num_labels=2
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=16, collate_fn=PadCollator(tokenizer))
    batches = list(loader)
    assert len(batches) == 4
    first = batches[0]
    assert first["input_ids"].shape == first["attention_mask"].shape == (16, first["input_ids"].shape[1])
    assert first["attention_mask"].sum(dim=1).tolist() == [len(dataset[i]["input_ids"]) for i in range(16)]
    assert torch.cat([b["example_index"] for b in batches]).tolist() == list(range(64))


def test_collator_refuses_a_tokenizer_without_pad_token(tokenizer):
    class NoPad:
        pad_token_id = None

    with pytest.raises(DataError, match="no pad token"):
        PadCollator(NoPad())


# --------------------------------------------------------------------------- real data


@pytest.mark.skipif(
    sst2_dir() is None, reason="SST-2 not found at ../shared/data/sst2/dev.tsv (shared data missing)"
)
def test_sst2_dev(tmp_path, tokenizer):
    source = str(sst2_dir() / "dev.tsv")
    dataset = load_split(source, cfg_for(tmp_path, max_length=66), tokenizer, needs_labels=True, num_labels=2)
    assert dataset.report.rows_read == dataset.report.rows_kept == len(dataset) == 872
    assert dataset.report.bad_rows == {}
    assert {ex.label for ex in dataset.examples} == {0, 1}
    assert dataset.report.summary() == f"{source}: 872 rows, 872 kept"


def test_tiny_wordpiece_tokenizer_is_the_same_on_every_run():
    """`tokenizers`' WordPiece trainer numbers its ## pieces in hash-map order and so picked different
    merges from run to run (huggingface/tokenizers#1794); every tiny test model inherited that. Before
    the fix this test failed in each of 3 runs; four trainings must now agree token for token."""
    from conftest import NEGATIVE, POSITIVE
    from edgedistill.testing import train_bert_wordpiece

    corpus = [t for t, _ in make_sentences(400, seed=1)] + POSITIVE + NEGATIVE
    vocabs = [train_bert_wordpiece(corpus, vocab_size=400).get_vocab() for _ in range(4)]
    assert all(v == vocabs[0] for v in vocabs[1:])
    tok = train_bert_wordpiece(corpus, vocab_size=400)
    # the pieces registered to fix the order are ordinary vocabulary, not special tokens
    assert sorted(tok.all_special_tokens) == sorted(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    assert tok.decode(tok("beautifully shot , unbelievable")["input_ids"], skip_special_tokens=True) == (
        "beautifully shot, unbelievable"
    )
    assert any(t.startswith("##") for t in tok.tokenize("unbelievable"))
